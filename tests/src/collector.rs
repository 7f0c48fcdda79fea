//! Starting a real whouses-collector for tests (in progress).
