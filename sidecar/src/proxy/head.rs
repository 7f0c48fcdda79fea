//! HTTP/1 message heads: parsed in place with `httparse`, checked against request
//! smuggling, their body framing decided (RFC 9112 §6), and rewritten into the head the
//! proxy forwards (hop-by-hop fields dropped, RFC 9110 §7.6.1). Pure functions over byte
//! slices, no I/O: fuzzed by `sidecar/fuzz` and property-tested.

use std::fmt::Write as _;
use std::mem::MaybeUninit;

/// Header fields per head (hyper's default too); more is a 431 (a 502 from an upstream).
pub const MAX_FIELDS: usize = 100;

/// Fields a forwarded head may have beyond the received one (`Host` and
/// `Connection: upgrade` on a request, `Connection` on a response).
pub const ADDED_FIELDS: usize = 2;

/// Room for a head's fields: more than [`MAX_FIELDS`] + [`ADDED_FIELDS`].
const MAX_HEADERS: usize = 128;

/// Room for a head's fields, on the caller's stack: nothing is allocated per head.
pub type Storage<'b> = [MaybeUninit<httparse::Header<'b>>; MAX_HEADERS];

pub fn storage<'b>() -> Storage<'b> {
    [MaybeUninit::uninit(); MAX_HEADERS]
}

/// How the body of a message is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// A response body that ends when the upstream closes the connection.
    UntilClose,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// Larger than the limit (431 for requests).
    #[error("the head is larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// More header fields than [`MAX_FIELDS`] (431 for requests).
    #[error("the head has more than {MAX_FIELDS} header fields")]
    TooManyFields,
    /// Not a valid HTTP/1 head, or one that could be read two ways (400).
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
}

fn malformed(what: &'static str, reason: impl Into<String>) -> HeadError {
    HeadError::Malformed {
        what,
        reason: reason.into(),
    }
}

/// A parsed request head; every slice points into the read buffer.
#[derive(Debug)]
pub struct RequestHead<'b> {
    pub method: &'b str,
    /// The request target as sent (absolute-form, authority-form, origin-form or `*`).
    pub target: &'b str,
    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    pub minor: u8,
    pub headers: &'b [httparse::Header<'b>],
    /// Bytes of the head, including its final empty line.
    pub len: usize,
    pub framing: Framing,
    /// The client wants the connection kept open after this exchange.
    pub keep_alive: bool,
    /// `Expect: 100-continue` from an HTTP/1.1 client.
    pub expect_continue: bool,
    /// An `Upgrade` request (`Upgrade` named in `Connection`), e.g. WebSocket.
    pub upgrade: bool,
}

impl RequestHead<'_> {
    /// The first value of a header field, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    pub fn is_connect(&self) -> bool {
        self.method == "CONNECT"
    }
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead<'b> {
    pub code: u16,
    /// The reason phrase as sent (empty when absent, or not UTF-8).
    pub reason: &'b str,
    pub minor: u8,
    pub headers: &'b [httparse::Header<'b>],
    pub len: usize,
    pub framing: Framing,
    /// The upstream connection can carry another request after this response.
    pub keep_alive: bool,
}

/// A line ends in CRLF; a bare LF is refused (a lenient proxy in front of a strict
/// upstream is how requests are smuggled).
fn check_line_ends(head: &[u8], what: &'static str) -> Result<(), HeadError> {
    // One SIMD search per line rather than a look at every byte (this runs on every head).
    for lf in memchr::memchr_iter(b'\n', head) {
        if lf == 0 || head[lf - 1] != b'\r' {
            return Err(malformed(what, "a line ends in a bare LF, not CRLF"));
        }
    }
    Ok(())
}

/// Comma-separated tokens of every field named `name`, trimmed.
fn tokens<'h, 'b: 'h>(
    headers: &'h [httparse::Header<'b>],
    name: &'h str,
) -> impl Iterator<Item = &'b [u8]> + 'h {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .map(trim)
        .filter(|t| !t.is_empty())
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// The options of `Connection` a head carries, read in one pass.
#[derive(Default)]
struct ConnectionOptions {
    close: bool,
    keep_alive: bool,
    upgrade: bool,
}

fn connection_options(headers: &[httparse::Header<'_>]) -> ConnectionOptions {
    let mut o = ConnectionOptions::default();
    for t in tokens(headers, "connection") {
        if t.eq_ignore_ascii_case(b"close") {
            o.close = true;
        } else if t.eq_ignore_ascii_case(b"keep-alive") {
            o.keep_alive = true;
        } else if t.eq_ignore_ascii_case(b"upgrade") {
            o.upgrade = true;
        }
    }
    o
}

/// Field names a `Connection` field lists besides its options: also never forwarded.
/// Usually none, so usually no allocation.
fn connection_named<'b>(headers: &[httparse::Header<'b>]) -> Vec<&'b [u8]> {
    tokens(headers, "connection")
        .filter(|t| {
            !(t.eq_ignore_ascii_case(b"close")
                || t.eq_ignore_ascii_case(b"keep-alive")
                || t.eq_ignore_ascii_case(b"upgrade"))
        })
        .collect()
}

/// `Content-Length`: every value (repeated fields, comma lists) the same decimal number.
fn content_length(
    headers: &[httparse::Header<'_>],
    what: &'static str,
) -> Result<Option<u64>, HeadError> {
    let mut found: Option<u64> = None;
    for t in tokens(headers, "content-length") {
        if t.is_empty() || t.len() > 19 || !t.iter().all(u8::is_ascii_digit) {
            return Err(malformed(
                what,
                format!("invalid Content-Length {:?}", String::from_utf8_lossy(t)),
            ));
        }
        let n = t
            .iter()
            .try_fold(0u64, |n, d| {
                n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
            })
            .ok_or_else(|| malformed(what, "Content-Length out of range"))?;
        match found {
            Some(m) if m != n => {
                return Err(malformed(what, "conflicting Content-Length values"));
            }
            _ => found = Some(n),
        }
    }
    // A field present with only empty values.
    if found.is_none()
        && headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("content-length"))
    {
        return Err(malformed(what, "empty Content-Length"));
    }
    Ok(found)
}

/// `Transfer-Encoding` ends in `chunked` (exactly once), or is absent.
fn chunked(
    headers: &[httparse::Header<'_>],
    what: &'static str,
) -> Result<Option<bool>, HeadError> {
    if !headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
    {
        return Ok(None);
    }
    let codings: Vec<&[u8]> = tokens(headers, "transfer-encoding").collect();
    let n_chunked = codings
        .iter()
        .filter(|c| c.eq_ignore_ascii_case(b"chunked"))
        .count();
    let last_chunked = codings
        .last()
        .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"));
    match (n_chunked, last_chunked) {
        (1, true) => Ok(Some(true)),
        (0, _) => Ok(Some(false)),
        _ => Err(malformed(
            what,
            "Transfer-Encoding must name chunked once, as the last coding",
        )),
    }
}

/// Parse a request head at the start of `buf`. `Ok(None)`: not complete yet (and within
/// `max` bytes so far).
pub fn parse_request<'b>(
    buf: &'b [u8],
    max: usize,
    storage: &'b mut Storage<'b>,
) -> Result<Option<RequestHead<'b>>, HeadError> {
    parse_request_with(buf, max, MAX_FIELDS, storage)
}

/// [`parse_request`] with another bound on the number of fields (at most 128).
pub fn parse_request_with<'b>(
    buf: &'b [u8],
    max: usize,
    max_fields: usize,
    storage: &'b mut Storage<'b>,
) -> Result<Option<RequestHead<'b>>, HeadError> {
    const WHAT: &str = "request";
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, storage) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > max {
                Err(HeadError::TooLarge { limit: max })
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyFields),
        Err(e) => return Err(malformed(WHAT, e.to_string())),
    };
    if len > max {
        return Err(HeadError::TooLarge { limit: max });
    }
    if req.headers.len() > max_fields {
        return Err(HeadError::TooManyFields);
    }
    check_line_ends(&buf[..len], WHAT)?;
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(malformed(WHAT, "incomplete request line"));
    };
    let headers: &[httparse::Header<'_>] = req.headers;
    let cl = content_length(headers, WHAT)?;
    let te = chunked(headers, WHAT)?;
    let framing = match (te, cl) {
        (Some(_), Some(_)) => return Err(malformed(
            WHAT,
            "both Content-Length and Transfer-Encoding (the upstream could read it another way)",
        )),
        (Some(true), None) => Framing::Chunked,
        (Some(false), None) => {
            return Err(malformed(WHAT, "Transfer-Encoding without chunked"));
        }
        (None, Some(0)) | (None, None) => Framing::None,
        (None, Some(n)) => Framing::Length(n),
    };
    let options = connection_options(headers);
    let keep_alive = if minor == 1 {
        !options.close
    } else {
        options.keep_alive
    };
    let expect_continue = minor == 1
        && headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("expect")
                && trim(h.value).eq_ignore_ascii_case(b"100-continue")
        });
    let upgrade = options.upgrade
        && headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("upgrade"));
    Ok(Some(RequestHead {
        method,
        target,
        minor,
        headers,
        len,
        framing,
        keep_alive,
        expect_continue,
        upgrade,
    }))
}

/// Parse a response head at the start of `buf`, for a request whose method was HEAD
/// (`head`) or not.
pub fn parse_response<'b>(
    buf: &'b [u8],
    max: usize,
    head: bool,
    storage: &'b mut Storage<'b>,
) -> Result<Option<ResponseHead<'b>>, HeadError> {
    parse_response_with(buf, max, head, MAX_FIELDS, storage)
}

/// [`parse_response`] with another bound on the number of fields (at most 128).
pub fn parse_response_with<'b>(
    buf: &'b [u8],
    max: usize,
    head: bool,
    max_fields: usize,
    storage: &'b mut Storage<'b>,
) -> Result<Option<ResponseHead<'b>>, HeadError> {
    const WHAT: &str = "response";
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, storage)
    {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > max {
                Err(HeadError::TooLarge { limit: max })
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyFields),
        Err(e) => return Err(malformed(WHAT, e.to_string())),
    };
    if resp.headers.len() > max_fields {
        return Err(HeadError::TooManyFields);
    }
    check_line_ends(&buf[..len], WHAT)?;
    let (Some(code), Some(minor)) = (resp.code, resp.version) else {
        return Err(malformed(WHAT, "incomplete status line"));
    };
    // Not sliced from the buffer: httparse skips empty lines before a status line.
    let reason = resp.reason.unwrap_or("");
    let headers: &[httparse::Header<'_>] = resp.headers;
    let framing = if head || (100..200).contains(&code) || code == 204 || code == 304 {
        Framing::None
    } else {
        match chunked(headers, WHAT)? {
            Some(true) => Framing::Chunked,
            // Another coding last: the body ends with the connection (RFC 9112 §6.3).
            Some(false) => Framing::UntilClose,
            None => match content_length(headers, WHAT)? {
                Some(0) => Framing::None,
                Some(n) => Framing::Length(n),
                None => Framing::UntilClose,
            },
        }
    };
    let options = connection_options(headers);
    let keep_alive = framing != Framing::UntilClose
        && if minor == 1 {
            !options.close
        } else {
            options.keep_alive
        };
    Ok(Some(ResponseHead {
        code,
        reason,
        minor,
        headers,
        len,
        framing,
        keep_alive,
    }))
}

/// Fields that describe one hop and are never forwarded (RFC 9110 §7.6.1), besides the
/// ones a message names in `Connection` and any `Proxy-*`.
const HOP_BY_HOP: [&str; 4] = ["connection", "keep-alive", "te", "upgrade"];

/// Fields a `Connection` token may not remove: the framing and the target.
const NEVER_NAMED: [&str; 3] = ["content-length", "transfer-encoding", "host"];

fn is_hop_by_hop(name: &str, connection: &[&[u8]], keep_upgrade: bool) -> bool {
    if keep_upgrade && name.eq_ignore_ascii_case("upgrade") {
        return false;
    }
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
        || name
            .get(..6)
            .is_some_and(|p| p.eq_ignore_ascii_case("proxy-"))
        || (!connection.is_empty()
            && connection
                .iter()
                .any(|t| t.eq_ignore_ascii_case(name.as_bytes()))
            && !NEVER_NAMED.iter().any(|n| name.eq_ignore_ascii_case(n)))
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// How the forwarded request head differs from the one received.
pub struct RequestRewrite<'a> {
    /// Put a `/` before `target` (an absolute URI with an empty path, or only a query).
    pub slash: bool,
    /// The request target to send (origin-form `/path?query` for the explicit proxy).
    pub target: &'a str,
    /// Replace every `Host` field with this one (RFC 9112 §3.2.2); `None` keeps them.
    pub host: Option<&'a str>,
}

/// Write the head to forward upstream: `METHOD target HTTP/1.1`, the app's fields in their
/// order and spelling less the hop-by-hop ones, `Host` rewritten, `Expect` answered by the
/// proxy itself, and for an upgrade `Upgrade` kept with `Connection: upgrade`.
pub fn write_request(out: &mut Vec<u8>, req: &RequestHead<'_>, rw: &RequestRewrite<'_>) {
    let connection = connection_named(req.headers);
    out.extend_from_slice(req.method.as_bytes());
    out.push(b' ');
    if rw.slash {
        out.push(b'/');
    }
    out.extend_from_slice(rw.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut host_written = false;
    if let Some(host) = rw.host {
        // First, where servers look for it.
        push_header(out, "Host", host.as_bytes());
        host_written = true;
    }
    for h in req.headers {
        if is_hop_by_hop(h.name, &connection, req.upgrade)
            || h.name.eq_ignore_ascii_case("expect")
            || (host_written && h.name.eq_ignore_ascii_case("host"))
        {
            continue;
        }
        push_header(out, h.name, h.value);
    }
    if req.upgrade {
        push_header(out, "Connection", b"upgrade");
    }
    out.extend_from_slice(b"\r\n");
}

/// How the response head sent to the app differs from the upstream's.
pub struct ResponseRewrite {
    /// The body is sent de-chunked (an HTTP/1.0 app cannot read chunked): drop
    /// `Transfer-Encoding`.
    pub dechunk: bool,
    /// A `Connection` field for the app: `close` when this connection ends after the
    /// response, `keep-alive` for an HTTP/1.0 app whose connection stays open.
    pub connection: Option<&'static str>,
    /// A `101 Switching Protocols`: keep `Upgrade`, say `Connection: upgrade`.
    pub upgrade: bool,
}

/// Write the response head for the app: `HTTP/1.1` and the upstream's status, its fields
/// less the hop-by-hop ones.
pub fn write_response(out: &mut Vec<u8>, resp: &ResponseHead<'_>, rw: &ResponseRewrite) {
    let connection = connection_named(resp.headers);
    // The code is three digits (httparse checks), so 0–999.
    let code = resp.code.min(999);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(&[
        b'0' + (code / 100) as u8,
        b'0' + (code / 10 % 10) as u8,
        b'0' + (code % 10) as u8,
        b' ',
    ]);
    out.extend_from_slice(resp.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in resp.headers {
        if is_hop_by_hop(h.name, &connection, rw.upgrade)
            || (rw.dechunk && h.name.eq_ignore_ascii_case("transfer-encoding"))
        {
            continue;
        }
        push_header(out, h.name, h.value);
    }
    if rw.upgrade {
        push_header(out, "Connection", b"upgrade");
    } else if let Some(c) = rw.connection {
        push_header(out, "Connection", c.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// A short response of the proxy's own: a status, a one-line reason as a plain-text body.
pub fn write_error(out: &mut Vec<u8>, status: u16, phrase: &str, reason: &str, close: bool) {
    let body_len = "whouses-sidecar: \n".len() + reason.len();
    let _ = write!(
        Adapter(out),
        "HTTP/1.1 {status} {phrase}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {body_len}\r\n{}\r\nwhouses-sidecar: {reason}\n",
        if close { "connection: close\r\n" } else { "" }
    );
}

/// `fmt::Write` into a byte vector.
struct Adapter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Adapter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(s: &'static str) -> Result<Option<RequestHead<'static>>, HeadError> {
        parse_request(s.as_bytes(), 65536, Box::leak(Box::new(storage())))
    }

    #[test]
    fn framing_of_requests() {
        let r = req("POST http://a/ HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
            .unwrap()
            .unwrap();
        assert_eq!(r.framing, Framing::Length(5));
        assert_eq!(r.len, 46);
        let r = req("POST http://a/ HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.framing, Framing::Chunked);
        let r = req("GET http://a/ HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.framing, Framing::Length(3));
        assert!(req("GET http://a/ HTTP/1.1\r\nHost: a\r\n")
            .unwrap()
            .is_none());
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        for bad in [
            "POST http://a/ HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST http://a/ HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n",
            "POST http://a/ HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            "POST http://a/ HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "POST http://a/ HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST http://a/ HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "POST http://a/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST http://a/ HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
            "GET http://a/ HTTP/1.1\nHost: a\n\n",
            "GET http://a/ HTTP/1.1\r\nHost : a\r\n\r\n",
        ] {
            assert!(
                matches!(req(bad), Err(HeadError::Malformed { .. })),
                "{bad:?}: {:?}",
                req(bad)
            );
        }
    }

    #[test]
    fn the_limit_is_on_the_whole_head() {
        let big = format!(
            "GET http://a/ HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(100_000)
        );
        assert_eq!(
            parse_request(big.as_bytes(), 65536, &mut storage()).unwrap_err(),
            HeadError::TooLarge { limit: 65536 }
        );
        // Incomplete and already too large.
        assert!(parse_request(&big.as_bytes()[..70_000], 65536, &mut storage()).is_err());
        // Field count: 100 pass, 101 do not.
        let fields = |n: usize| {
            let mut h = String::from("GET http://a/ HTTP/1.1\r\n");
            for i in 0..n {
                h.push_str(&format!("X-{i}: v\r\n"));
            }
            h + "\r\n"
        };
        assert!(parse_request(fields(100).as_bytes(), 65536, &mut storage()).is_ok());
        assert_eq!(
            parse_request(fields(101).as_bytes(), 65536, &mut storage()).unwrap_err(),
            HeadError::TooManyFields
        );
        assert_eq!(
            parse_request(fields(200).as_bytes(), 65536, &mut storage()).unwrap_err(),
            HeadError::TooManyFields
        );
    }

    #[test]
    fn forwarded_head_drops_hop_by_hop_and_rewrites_host() {
        let r = req("GET http://u:p@a.example/x HTTP/1.0\r\nHost: evil\r\nConnection: keep-alive, X-Hop, Content-Length\r\nX-Hop: 1\r\nProxy-Authorization: Basic x\r\nProxy-Connection: k\r\nTE: trailers\r\nUpgrade: h2c\r\nKeep-Alive: 5\r\nExpect: 100-continue\r\nX-End: 2\r\nTrailer: X-Sum\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(r.keep_alive && !r.upgrade && !r.expect_continue);
        let mut out = Vec::new();
        write_request(
            &mut out,
            &r,
            &RequestRewrite {
                slash: false,
                target: "/x",
                host: Some("a.example"),
            },
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /x HTTP/1.1\r\nHost: a.example\r\nX-End: 2\r\nTrailer: X-Sum\r\n\r\n"
        );
    }

    #[test]
    fn upgrade_requests_keep_upgrade() {
        let r = req("GET http://a/ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(r.upgrade);
        let mut out = Vec::new();
        write_request(
            &mut out,
            &r,
            &RequestRewrite {
                slash: false,
                target: "/ws",
                host: Some("a"),
            },
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\nConnection: upgrade\r\n\r\n"
        );
    }

    #[test]
    fn framing_of_responses() {
        let p = |s: &'static str, head| {
            parse_response(s.as_bytes(), 65536, head, Box::leak(Box::new(storage())))
                .unwrap()
                .unwrap()
        };
        assert_eq!(
            p("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", false).framing,
            Framing::Length(3)
        );
        assert_eq!(
            p("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true).framing,
            Framing::None
        );
        assert_eq!(
            p(
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 3\r\n\r\n",
                false
            )
            .framing,
            Framing::None
        );
        let r = p("HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!((r.framing, r.keep_alive), (Framing::UntilClose, false));
        let r = p(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
            false,
        );
        assert_eq!(r.framing, Framing::Chunked);
        let r = p(
            "HTTP/1.1 503 Busy Now\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert_eq!((r.code, r.reason, r.keep_alive), (503, "Busy Now", false));
        // Empty lines before the status line are skipped; the status is rebuilt.
        let r = p("\r\n\r\nHTTP/1.1 011 k\r\n\r\n", false);
        let mut out = Vec::new();
        write_response(
            &mut out,
            &r,
            &ResponseRewrite {
                dechunk: false,
                connection: None,
                upgrade: false,
            },
        );
        assert_eq!(out, b"HTTP/1.1 011 k\r\n\r\n");
        let r = p("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false);
        assert!(!r.keep_alive);
        assert!(parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            65536,
            false,
            &mut storage()
        )
        .is_err());
    }

    #[test]
    fn responses_lose_hop_by_hop_fields() {
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nConnection: X-A, close\r\nX-A: 1\r\nKeep-Alive: t\r\nTransfer-Encoding: chunked\r\nX-B: 2\r\n\r\n",
            65536,
            false,
            Box::leak(Box::new(storage())),
        )
        .unwrap()
        .unwrap();
        let mut out = Vec::new();
        write_response(
            &mut out,
            &r,
            &ResponseRewrite {
                dechunk: true,
                connection: Some("close"),
                upgrade: false,
            },
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nX-B: 2\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn errors_carry_their_reason() {
        let mut out = Vec::new();
        write_error(&mut out, 502, "Bad Gateway", "connecting failed", true);
        let s = String::from_utf8(out).unwrap();
        let body = s.split("\r\n\r\n").nth(1).unwrap();
        assert!(
            s.contains(&format!("content-length: {}\r\n", body.len())),
            "{s}"
        );
        assert!(s.starts_with("HTTP/1.1 502 Bad Gateway\r\n") && s.contains("connection: close"));
    }
}
