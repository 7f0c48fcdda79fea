//! The name a TLS caller dialed: the `server_name` of its ClientHello (RFC 8446 §4.1.2,
//! RFC 6066 §3), read from the bytes it sends first, which are then relayed unchanged. TLS
//! is never terminated. Pure and bounded: fuzzed in its tests with random input.

/// The most ClientHello bytes read before giving up on a name (a ClientHello with
/// post-quantum key shares is under 2 KiB; one TLS record is at most 16 KiB).
pub const MAX_HELLO_BYTES: usize = 16 * 1024 + 5;

/// What the bytes so far say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// Not complete yet: read more.
    NeedMore,
    /// A complete ClientHello; its host name, when it named one.
    Done(Option<String>),
    /// Not a TLS ClientHello (or a malformed one): relay it as opaque bytes.
    NotTls,
}

/// The handshake bytes of the leading handshake records of `buf`, and whether a
/// non-handshake record (or garbage) came first.
fn handshake_bytes(buf: &[u8]) -> Result<(Vec<u8>, bool), ()> {
    let mut out = Vec::new();
    let mut rest = buf;
    loop {
        if rest.len() < 5 {
            return Ok((out, false));
        }
        if rest[0] != 0x16 || rest[1] != 0x03 {
            return Err(());
        }
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if len == 0 || len > 16 * 1024 + 256 {
            return Err(());
        }
        if rest.len() < 5 + len {
            out.extend_from_slice(&rest[5..]);
            return Ok((out, false));
        }
        out.extend_from_slice(&rest[5..5 + len]);
        rest = &rest[5 + len..];
        if rest.is_empty() {
            return Ok((out, true));
        }
    }
}

/// A cursor over bytes that never reads past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }

    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }

    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]))
    }

    /// A vector with a length prefix of `width` bytes.
    fn vec(&mut self, width: usize) -> Option<&'a [u8]> {
        let n = match width {
            1 => self.u8()?,
            2 => self.u16()?,
            _ => self.u24()?,
        };
        self.take(n)
    }
}

/// Parse what a TLS caller sent so far.
pub fn parse(buf: &[u8]) -> Hello {
    let Ok((hs, _)) = handshake_bytes(buf) else {
        return Hello::NotTls;
    };
    if hs.len() < 4 {
        return if buf.len() >= MAX_HELLO_BYTES {
            Hello::NotTls
        } else {
            Hello::NeedMore
        };
    }
    if hs[0] != 1 {
        return Hello::NotTls;
    }
    let body_len = (usize::from(hs[1]) << 16) | (usize::from(hs[2]) << 8) | usize::from(hs[3]);
    if body_len > MAX_HELLO_BYTES {
        return Hello::NotTls;
    }
    if hs.len() < 4 + body_len {
        return if buf.len() >= MAX_HELLO_BYTES {
            Hello::NotTls
        } else {
            Hello::NeedMore
        };
    }
    match server_name(&hs[4..4 + body_len]) {
        Some(name) => Hello::Done(name),
        None => Hello::NotTls,
    }
}

/// The host name of a ClientHello body: `Some(None)` when it names none, `None` when the
/// body is malformed.
fn server_name(body: &[u8]) -> Option<Option<String>> {
    let mut r = Reader(body);
    r.take(2)?; // legacy_version
    r.take(32)?; // random
    r.vec(1)?; // legacy_session_id
    r.vec(2)?; // cipher_suites
    r.vec(1)?; // legacy_compression_methods
    if r.0.is_empty() {
        return Some(None); // no extensions
    }
    let mut exts = Reader(r.vec(2)?);
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let data = exts.vec(2)?;
        if kind != 0 {
            continue;
        }
        let mut list = Reader(Reader(data).vec(2)?);
        while !list.0.is_empty() {
            let name_type = list.u8()?;
            let name = list.vec(2)?;
            if name_type == 0 {
                let name = std::str::from_utf8(name).ok()?;
                return Some(Some(name.to_string()));
            }
        }
        return Some(None);
    }
    Some(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A ClientHello record naming `name` (or none), with some other extensions.
    pub(crate) fn client_hello(name: Option<&str>) -> Vec<u8> {
        let mut exts = Vec::new();
        // supported_versions (43): TLS 1.3.
        exts.extend_from_slice(&[0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04]);
        if let Some(n) = name {
            let n = n.as_bytes();
            let entry_len = 3 + n.len();
            exts.extend_from_slice(&0u16.to_be_bytes());
            exts.extend_from_slice(&((entry_len + 2) as u16).to_be_bytes());
            exts.extend_from_slice(&(entry_len as u16).to_be_bytes());
            exts.push(0);
            exts.extend_from_slice(&(n.len() as u16).to_be_bytes());
            exts.extend_from_slice(n);
        }
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[7u8; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01]); // one cipher suite
        body.extend_from_slice(&[0x01, 0x00]); // null compression
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(&exts);
        let mut hs = vec![1u8];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        let mut rec = vec![0x16, 0x03, 0x01];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    #[test]
    fn reads_the_server_name() {
        let hello = client_hello(Some("Old-LB.internal"));
        assert_eq!(parse(&hello), Hello::Done(Some("Old-LB.internal".into())));
        assert_eq!(parse(&client_hello(None)), Hello::Done(None));
        // Every prefix asks for more.
        for n in 0..hello.len() {
            assert_eq!(parse(&hello[..n]), Hello::NeedMore, "{n}");
        }
    }

    #[test]
    fn a_hello_split_over_two_records_is_read() {
        let hello = client_hello(Some("split.internal"));
        let hs = &hello[5..];
        let (a, b) = hs.split_at(20);
        let mut two = Vec::new();
        for part in [a, b] {
            two.extend_from_slice(&[0x16, 0x03, 0x01]);
            two.extend_from_slice(&(part.len() as u16).to_be_bytes());
            two.extend_from_slice(part);
        }
        assert_eq!(parse(&two), Hello::Done(Some("split.internal".into())));
    }

    #[test]
    fn other_bytes_are_not_tls() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n\r\n"), Hello::NotTls);
        assert_eq!(parse(&[0x16, 0x03, 0x01, 0x00, 0x00]), Hello::NotTls);
        // A handshake that is not a ClientHello (a ServerHello: type 2).
        let mut h = client_hello(Some("x"));
        h[5] = 2;
        assert_eq!(parse(&h), Hello::NotTls);
        // Lengths that lie.
        let mut h = client_hello(Some("x"));
        let n = h.len();
        h[n - 3] = 0xff; // the name's length
        assert_eq!(parse(&h), Hello::NotTls);
    }

    proptest! {
        #[test]
        fn any_input_is_answered_without_panicking(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse(&data);
            let mut tls = vec![0x16, 0x03, 0x01];
            tls.extend_from_slice(&data);
            let _ = parse(&tls);
        }

        #[test]
        fn a_corrupted_hello_is_answered_without_panicking(at in 0usize..80, byte in any::<u8>()) {
            let mut h = client_hello(Some("a.example"));
            let i = at % h.len();
            h[i] = byte;
            let _ = parse(&h);
        }
    }
}
