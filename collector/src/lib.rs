//! whouses-collector: receives counts from every sidecar, stores them, answers "who uses X?".
pub mod webhook;
