//! whouses-sidecar: a forward proxy that counts, exactly, every call per upstream host.
//!
//! Module map (the data path, top to bottom):
//! * [`counters`] — where a request is counted: atomic counters per `(host, port, scheme)`.
pub mod counters;
