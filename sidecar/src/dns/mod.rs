//! DNS: a forwarder in front of the app's resolver ([`forwarder`]), and what its lookups
//! teach ([`names`]): which names the app resolves (shipped as lookups) and which name an
//! address came from (to name opaque and bypassing connections).

pub mod forwarder;
pub mod names;

pub use names::Names;
