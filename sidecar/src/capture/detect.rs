//! Protocol detection on a redirected connection: a pure function of the first bytes the
//! app sent, called again as more arrive, bounded by [`MAX_DETECT_BYTES`] (the caller
//! bounds the time). It only reads; the bytes are forwarded unchanged afterwards.
//!
//! * HTTP/1.x — a request line (`METHOD target HTTP/1.x`): the connection goes through the
//!   HTTP/1 relay and every request is counted under its `Host`. A `CONNECT` (the app
//!   speaks to a proxy of its own) is tunnelled whole, named by its target.
//! * TLS — a handshake record holding a ClientHello: its SNI (parsed with `tls-parser`;
//!   TLS is never terminated).
//! * HTTP/2 with prior knowledge — the connection preface, then the first `HEADERS` block
//!   (with its `CONTINUATION`s) decoded with HPACK (`loona-hpack`) for `:authority`.
//! * anything else — opaque TCP.

use std::borrow::Cow;

use tls_parser::{TlsExtension, TlsMessage, TlsMessageHandshake};

/// Most bytes looked at: a TLS record of the largest size (a ClientHello with
/// post-quantum key shares fits easily), or an HTTP/2 preface with a large first HEADERS.
pub const MAX_DETECT_BYTES: usize = 16 * 1024 + 5;

/// The HTTP/2 connection preface (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Longest HTTP/1 request line we wait for before calling the connection opaque.
const MAX_REQUEST_LINE: usize = 8 * 1024;

/// Longest HTTP/1 method we accept (the registered ones are at most 17 characters).
const MAX_METHOD: usize = 32;

/// What the first bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protocol {
    /// An HTTP/1.x request line.
    Http1,
    /// An HTTP/1.x `CONNECT authority` (to a proxy of the app's own).
    Connect(String),
    /// A TLS ClientHello, with its server name when it carries one.
    Tls { sni: Option<String> },
    /// An HTTP/2 preface, with the first request's `:authority` (or `host`) when decoded.
    H2 { authority: Option<String> },
    /// Not one of the above.
    Opaque,
}

/// The answer for the bytes so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detection {
    /// Undecided: more bytes are needed (and fewer than [`MAX_DETECT_BYTES`] are here).
    NeedMore,
    Done(Protocol),
}

/// Decide what `buf` (everything the app sent so far) starts with. Undecided input at
/// [`MAX_DETECT_BYTES`] or beyond is decided with what is known (never `NeedMore`).
pub fn detect(buf: &[u8]) -> Detection {
    let full = buf.len() >= MAX_DETECT_BYTES;
    let buf = &buf[..buf.len().min(MAX_DETECT_BYTES)];
    let answer = match buf.first() {
        None => Detection::NeedMore,
        Some(0x16) => tls(buf),
        Some(_) if starts_like(buf, H2_PREFACE) => h2(buf),
        Some(b) if is_tchar(*b) => http1(buf),
        Some(_) => Detection::Done(Protocol::Opaque),
    };
    match answer {
        Detection::NeedMore if full => Detection::Done(undecided(buf)),
        a => a,
    }
}

/// What a connection is when the bytes or the time ran out before a decision.
pub fn undecided(buf: &[u8]) -> Protocol {
    match buf.first() {
        Some(0x16) => Protocol::Tls { sni: None },
        Some(_) if buf.starts_with(H2_PREFACE) => Protocol::H2 { authority: None },
        _ => Protocol::Opaque,
    }
}

/// `buf` is a prefix of `full`, or starts with it.
fn starts_like(buf: &[u8], full: &[u8]) -> bool {
    let n = buf.len().min(full.len());
    buf[..n] == full[..n]
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `METHOD SP target SP HTTP/1.x CRLF`, decided on the first line alone.
fn http1(buf: &[u8]) -> Detection {
    let opaque = Detection::Done(Protocol::Opaque);
    // Every rule below gives the same answer on a prefix as on the whole line: the
    // runtime keeps the first decision, whatever the reads' sizes (checked by the fuzz
    // target, `capture::invariants`).
    let method_end = match buf.iter().position(|b| !is_tchar(*b)) {
        Some(i) => i,
        None if buf.len() <= MAX_METHOD => return Detection::NeedMore,
        None => return opaque,
    };
    if buf[method_end] != b' ' || method_end > MAX_METHOD {
        return opaque;
    }
    // After the method: a request target and a version, visible characters and spaces.
    let visible = |rest: &[u8]| {
        rest.len() <= MAX_REQUEST_LINE && rest.iter().all(|b| (0x20..0x7f).contains(b))
    };
    let Some(line_end) = memchr::memchr(b'\n', buf) else {
        let rest = &buf[method_end + 1..];
        if visible(rest.strip_suffix(b"\r").unwrap_or(rest)) {
            return Detection::NeedMore;
        }
        return opaque;
    };
    let line = &buf[..line_end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if !visible(line.get(method_end + 1..).unwrap_or_default()) {
        return opaque;
    }
    let Ok(line) = std::str::from_utf8(line) else {
        return opaque;
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return opaque;
    };
    if target.is_empty() || !matches!(version, "HTTP/1.1" | "HTTP/1.0") {
        return opaque;
    }
    if method == "CONNECT" {
        return Detection::Done(Protocol::Connect(target.to_string()));
    }
    Detection::Done(Protocol::Http1)
}

/// A TLS handshake record: the ClientHello's SNI.
fn tls(buf: &[u8]) -> Detection {
    if buf.len() < 5 {
        return Detection::NeedMore;
    }
    let record_len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
    if buf.len() < 5 + record_len {
        return if 5 + record_len > MAX_DETECT_BYTES {
            Detection::Done(Protocol::Tls { sni: None })
        } else {
            Detection::NeedMore
        };
    }
    let sni = match tls_parser::parse_tls_plaintext(&buf[..5 + record_len]) {
        Ok((_, record)) => record.msg.iter().find_map(|m| match m {
            TlsMessage::Handshake(TlsMessageHandshake::ClientHello(ch)) => {
                ch.ext.and_then(server_name)
            }
            _ => None,
        }),
        // A ClientHello split over several records, or not a ClientHello at all: TLS
        // without a name (named by DNS, like opaque TCP).
        Err(_) => None,
    };
    Detection::Done(Protocol::Tls { sni })
}

/// The `host_name` of a ClientHello's server_name extension, normalised.
fn server_name(extensions: &[u8]) -> Option<String> {
    let (_, exts) = tls_parser::parse_tls_client_hello_extensions(extensions).ok()?;
    exts.iter().find_map(|e| match e {
        TlsExtension::SNI(names) => names
            .iter()
            .filter(|(kind, _)| kind.0 == 0)
            .find_map(|(_, name)| std::str::from_utf8(name).ok())
            .and_then(|n| whouses_wire::host::normalize_host(n).ok()),
        _ => None,
    })
}

/// HTTP/2 frame types and flags we look at (RFC 9113 §6).
const FRAME_HEADERS: u8 = 0x1;
const FRAME_CONTINUATION: u8 = 0x9;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

/// The preface, then frames until the first HEADERS block is complete.
fn h2(buf: &[u8]) -> Detection {
    let Some(mut rest) = buf.strip_prefix(H2_PREFACE) else {
        return Detection::NeedMore;
    };
    let done = |authority| Detection::Done(Protocol::H2 { authority });
    let mut block: Vec<u8> = Vec::new();
    let mut in_headers = false;
    loop {
        if rest.len() < 9 {
            return Detection::NeedMore;
        }
        let len = (usize::from(rest[0]) << 16) | (usize::from(rest[1]) << 8) | usize::from(rest[2]);
        let (kind, flags) = (rest[3], rest[4]);
        if rest.len() < 9 + len {
            return if 9 + len > MAX_DETECT_BYTES {
                done(None)
            } else {
                Detection::NeedMore
            };
        }
        let payload = &rest[9..9 + len];
        rest = &rest[9 + len..];
        match (in_headers, kind) {
            (false, FRAME_HEADERS) => {
                let Some(fragment) = headers_fragment(payload, flags) else {
                    return done(None);
                };
                block.extend_from_slice(fragment);
            }
            (true, FRAME_CONTINUATION) => block.extend_from_slice(payload),
            // Anything between HEADERS and its CONTINUATIONs is a protocol error.
            (true, _) => return done(None),
            // SETTINGS, WINDOW_UPDATE, PRIORITY… before the first request.
            (false, _) => continue,
        }
        in_headers = true;
        if flags & FLAG_END_HEADERS != 0 {
            return done(authority(&block));
        }
    }
}

/// The header block fragment of a HEADERS frame, without padding and priority.
fn headers_fragment(payload: &[u8], flags: u8) -> Option<&[u8]> {
    let mut p = payload;
    let mut pad = 0usize;
    if flags & FLAG_PADDED != 0 {
        pad = usize::from(*p.first()?);
        p = p.get(1..)?;
    }
    if flags & FLAG_PRIORITY != 0 {
        p = p.get(5..)?;
    }
    p.get(..p.len().checked_sub(pad)?)
}

/// `:authority`, else `host`, of a decoded header block.
fn authority(block: &[u8]) -> Option<String> {
    let mut decoder = loona_hpack::Decoder::new();
    let (mut authority, mut host): (Option<String>, Option<String>) = (None, None);
    let mut keep = |name: Cow<[u8]>, value: Cow<[u8]>| {
        let slot = match name.as_ref() {
            b":authority" => &mut authority,
            b"host" => &mut host,
            _ => return,
        };
        if slot.is_none() {
            *slot = std::str::from_utf8(&value).ok().map(str::to_string);
        }
    };
    decoder.decode_with_cb(block, &mut keep).ok()?;
    let value = authority.or(host)?;
    whouses_wire::HostPort::parse(&value, Some(80))
        .ok()
        .map(|hp| hp.host)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello for `name` (TLS 1.2 record, minimal body), as clients send it.
    pub fn client_hello(name: Option<&str>) -> Vec<u8> {
        let mut ext = Vec::new();
        if let Some(n) = name {
            let n = n.as_bytes();
            let list_len = n.len() + 3;
            ext.extend_from_slice(&[0x00, 0x00]); // server_name
            ext.extend_from_slice(&((list_len + 2) as u16).to_be_bytes());
            ext.extend_from_slice(&(list_len as u16).to_be_bytes());
            ext.push(0); // host_name
            ext.extend_from_slice(&(n.len() as u16).to_be_bytes());
            ext.extend_from_slice(n);
        }
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[7u8; 32]); // random
        body.push(0); // session id
        body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01]); // one cipher suite
        body.extend_from_slice(&[0x01, 0x00]); // null compression
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut hs = vec![0x01];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        let mut rec = vec![0x16, 0x03, 0x01];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    fn h2_request(authority: &str) -> Vec<u8> {
        let mut enc = loona_hpack::Encoder::new();
        let block = enc.encode(vec![
            (&b":method"[..], &b"GET"[..]),
            (b":scheme", b"http"),
            (b":authority", authority.as_bytes()),
            (b":path", b"/"),
        ]);
        let mut out = H2_PREFACE.to_vec();
        out.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]); // empty SETTINGS
        let len = block.len();
        out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8]);
        out.extend_from_slice(&[FRAME_HEADERS, FLAG_END_HEADERS | 0x1, 0, 0, 0, 1]);
        out.extend_from_slice(&block);
        out
    }

    /// Every prefix of `full` is undecided (or the same decision), and the whole is `want`.
    fn decided_only_at_the_end(full: &[u8], want: Protocol) {
        for n in 0..full.len() {
            match detect(&full[..n]) {
                Detection::NeedMore => {}
                Detection::Done(p) => assert_eq!(p, want, "prefix of {n} bytes"),
            }
        }
        assert_eq!(detect(full), Detection::Done(want));
    }

    #[test]
    fn http1_requests_are_told_by_their_request_line() {
        decided_only_at_the_end(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n", Protocol::Http1);
        assert_eq!(
            detect(b"CONNECT db.internal:5432 HTTP/1.1\r\n"),
            Detection::Done(Protocol::Connect("db.internal:5432".into()))
        );
        assert_eq!(
            detect(b"GET / HTTP/2.0\r\n"),
            Detection::Done(Protocol::Opaque)
        );
        assert_eq!(detect(b"GET"), Detection::NeedMore);
        assert_eq!(detect(b"GET /\x01"), Detection::Done(Protocol::Opaque));
        // A Redis inline command, a PostgreSQL startup message.
        assert_eq!(detect(b"PING\r\n"), Detection::Done(Protocol::Opaque));
        assert_eq!(
            detect(&[0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f]),
            Detection::Done(Protocol::Opaque)
        );
    }

    #[test]
    fn tls_is_named_by_its_sni_without_terminating() {
        let ch = client_hello(Some("API.Example.com."));
        decided_only_at_the_end(
            &ch,
            Protocol::Tls {
                sni: Some("api.example.com".into()),
            },
        );
        assert_eq!(
            detect(&client_hello(None)),
            Detection::Done(Protocol::Tls { sni: None })
        );
        // A record that is not a ClientHello.
        assert_eq!(
            detect(&[0x16, 3, 1, 0, 2, 0xff, 0]),
            Detection::Done(Protocol::Tls { sni: None })
        );
        // A record larger than we look at: TLS without a name, at once.
        assert_eq!(
            detect(&[0x16, 3, 1, 0xff, 0xff, 1]),
            Detection::Done(Protocol::Tls { sni: None })
        );
    }

    #[test]
    fn h2_prior_knowledge_is_named_by_authority() {
        let req = h2_request("Grpc.Internal:50051");
        decided_only_at_the_end(
            &req,
            Protocol::H2 {
                authority: Some("grpc.internal".into()),
            },
        );
        // A HEADERS block that is not HPACK.
        let mut bad = H2_PREFACE.to_vec();
        bad.extend_from_slice(&[0, 0, 1, FRAME_HEADERS, FLAG_END_HEADERS, 0, 0, 0, 1, 0xff]);
        assert_eq!(
            detect(&bad),
            Detection::Done(Protocol::H2 { authority: None })
        );
    }

    #[test]
    fn undecided_input_is_bounded() {
        let long = vec![b'A'; MAX_DETECT_BYTES + 10];
        assert_eq!(detect(&long), Detection::Done(Protocol::Opaque));
        let mut line = b"GET /".to_vec();
        line.extend(std::iter::repeat_n(b'a', MAX_DETECT_BYTES));
        assert_eq!(detect(&line), Detection::Done(Protocol::Opaque));
        assert_eq!(undecided(&[0x16, 3]), Protocol::Tls { sni: None });
        assert_eq!(undecided(b"SSH-2.0"), Protocol::Opaque);
    }
}
