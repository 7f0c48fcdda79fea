//! The proxy's data path: an HTTP/1.x relay of our own on `httparse` (no request/response
//! model: heads parsed in place, bodies relayed by their framing), one task per app
//! connection.
//!
//! * [`server`] — the accept loop: `--allow-from`, `--max-connections`, drain.
//! * [`relay`] — **the request path, top to bottom**: read, route, count, forward, relay.
//! * [`route`] — where a request goes and under which key it is counted (the piece that
//!   differs between the explicit, transparent and inbound modes).
//! * [`head`] — request and response heads: parsing, smuggling checks, rewriting.
//! * [`chunked`] — the chunked coding, read as it streams.
//! * [`invariants`] — what must hold for any input: the fuzz target's body.
//! * [`body`] — bodies relayed by their framing, counted as they stream.
//! * [`conn`] — sockets with read buffers held only while bytes are in flight.
//! * [`upstream`] — the idle pool of upstream connections between app connections.
//! * [`tunnel`] — counted byte tunnels (`CONNECT`, `101 Switching Protocols`).
//! * [`connect`] — dialing upstreams (`--resolve`, DNS, connect timeout).
//! * [`transparent`] — the transparent mode's router (redirected connections, `Host` key,
//!   original destination); detection and opaque tunnels are in `crate::capture`.

pub mod body;
pub mod chunked;
pub mod conn;
pub mod connect;
pub mod error;
pub mod head;
pub mod invariants;
pub mod relay;
pub mod route;
pub mod server;
pub mod track;
pub mod transparent;
pub mod tunnel;
pub mod upstream;
