//! The forward proxy: the accept loop and per-connection HTTP/1.1 server ([`server`]), the
//! request path as a tower stack ([`stack`]), and its parts.
//!
//! * [`target`] — which upstream a request is for (the key of its count).
//! * [`forward`] — absolute-form requests, sent on [`upstream`] connections.
//! * [`upstream`] — each app connection's keep-alive upstream connection, and the idle
//!   pool between app connections.
//! * [`tunnel`] — `CONNECT` tunnels.
//! * [`connect`] — dialing upstreams (`--resolve`, DNS, connect timeout).
//! * [`body`] — byte counting on streamed bodies and tunnels.

pub mod body;
pub mod connect;
pub mod error;
pub mod forward;
pub mod server;
pub mod stack;
pub mod target;
pub mod track;
pub mod tunnel;
pub mod upstream;
