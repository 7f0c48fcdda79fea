//! Issue 18: the differential test of the sidecar's HTTP/1 data path. One corpus of
//! requests and scripted upstream responses (chunked, trailers, 100-continue, HEAD,
//! 204/304, close-delimited, huge headers, pipelining, malformed) goes through the real
//! sidecar; what the upstream received, what the client received and what was counted
//! are compared with golden files in `tests/fixtures/relay/`.
//!
//! The golden files were first recorded from the hyper-based path (commit "golden files
//! from the hyper path"), so `git log -p tests/fixtures/relay` shows every case where the
//! relay behaves differently, each with the reason in its commit. The comparison is on
//! the messages as HTTP defines them: header names lower-cased and sorted by name (the
//! order of repeated fields kept), `Date` left out, chunked bodies decoded into data and
//! trailers (chunk boundaries are a hop's choice) — and the framing named, so a change of
//! framing still shows.
//!
//! `WHOUSES_RECORD_GOLDEN=1 cargo nextest run -p whouses-tests --test relay_differential`
//! rewrites the golden files from the current binary.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use whouses_tests::sidecar::Sidecar;

/// One case: what the client sends, and what the scripted upstream answers.
struct Case {
    name: &'static str,
    /// The request bytes; `{H}` is replaced by the case's host (`NAME.diff.test`).
    request: String,
    /// For `Expect: 100-continue`: the body, sent only after the `100 Continue`.
    after_continue: Option<&'static str>,
    /// The upstream's answer to each request of the case (in order).
    responses: Vec<Vec<u8>>,
    /// Close the upstream connection after the last response (close-delimited bodies).
    close_after: bool,
    /// Responses the client waits for (pipelining sends two requests).
    expect_responses: usize,
    head: bool,
}

fn case(name: &'static str, request: &str, response: &str) -> Case {
    Case {
        name,
        request: request.to_string(),
        after_continue: None,
        responses: vec![response.as_bytes().to_vec()],
        close_after: false,
        expect_responses: 1,
        head: false,
    }
}

const OK: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n";

fn corpus() -> Vec<Case> {
    let big_body = "b".repeat(1_000_000);
    let big_req_headers: String = (0..30)
        .map(|i| format!("X-Big-{i}: {}\r\n", "v".repeat(1000)))
        .collect();
    let mut v = vec![
        case(
            "get-simple",
            "GET http://{H}/case/get-simple?q=1 HTTP/1.1\r\nHost: {H}\r\nUser-Agent: diff/1\r\nAccept: */*\r\n\r\n",
            OK,
        ),
        case(
            "post-content-length",
            "POST http://{H}/case/post-content-length HTTP/1.1\r\nHost: {H}\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world",
            OK,
        ),
        case(
            "post-chunked-trailers",
            "POST http://{H}/case/post-chunked-trailers HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: abc\r\n\r\n",
            OK,
        ),
        case(
            "response-chunked-trailers",
            "GET http://{H}/case/response-chunked-trailers HTTP/1.1\r\nHost: {H}\r\nTE: trailers\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n3\r\nabc\r\nA;name=value\r\n0123456789\r\n0\r\nX-Sum: 13\r\n\r\n",
        ),
        case(
            "response-chunked-large",
            "GET http://{H}/case/response-chunked-large HTTP/1.1\r\nHost: {H}\r\n\r\n",
            &format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{}0\r\n\r\n",
                "2000\r\n".to_string() + &"c".repeat(0x2000) + "\r\n"
            ),
        ),
        case(
            "head",
            "HEAD http://{H}/case/head HTTP/1.1\r\nHost: {H}\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nContent-Type: text/html\r\n\r\n",
        ),
        case(
            "status-204",
            "DELETE http://{H}/case/status-204 HTTP/1.1\r\nHost: {H}\r\n\r\n",
            "HTTP/1.1 204 No Content\r\nX-Deleted: yes\r\n\r\n",
        ),
        case(
            "status-304",
            "GET http://{H}/case/status-304 HTTP/1.1\r\nHost: {H}\r\nIf-None-Match: \"v1\"\r\n\r\n",
            "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 999\r\n\r\n",
        ),
        case(
            "status-503",
            "GET http://{H}/case/status-503 HTTP/1.1\r\nHost: {H}\r\n\r\n",
            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\n\r\nbusy\n",
        ),
        case(
            "upstream-connection-close",
            "GET http://{H}/case/upstream-connection-close HTTP/1.1\r\nHost: {H}\r\n\r\n",
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbye",
        ),
        case(
            "hop-by-hop",
            "GET http://{H}/case/hop-by-hop HTTP/1.1\r\nHost: {H}\r\nConnection: keep-alive, X-Hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\nProxy-Authorization: Basic dTpw\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nX-End: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nConnection: X-Resp-Hop\r\nX-Resp-Hop: 1\r\nKeep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nX-Kept: yes\r\nContent-Length: 3\r\n\r\nok\n",
        ),
        case(
            "host-mismatch",
            "GET http://{H}/case/host-mismatch HTTP/1.1\r\nHost: other-vhost.example\r\n\r\n",
            OK,
        ),
        case(
            "userinfo",
            "GET http://user:pw@{H}/case/userinfo HTTP/1.1\r\n\r\n",
            OK,
        ),
        case(
            "empty-port",
            "GET http://{H}:/case/empty-port HTTP/1.1\r\nHost: {H}:\r\n\r\n",
            OK,
        ),
        case(
            "http10-client",
            "GET http://{H}/case/http10-client HTTP/1.0\r\nHost: {H}\r\n\r\n",
            OK,
        ),
        case(
            "http10-chunked-response",
            "GET http://{H}/case/http10-chunked-response HTTP/1.0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\ndata\r\n0\r\n\r\n",
        ),
        case(
            "huge-headers",
            &format!(
                "GET http://{{H}}/case/huge-headers HTTP/1.1\r\nHost: {{H}}\r\n{big_req_headers}\r\n"
            ),
            &format!(
                "HTTP/1.1 200 OK\r\nX-Huge: {}\r\nContent-Length: 3\r\n\r\nok\n",
                "h".repeat(20_000)
            ),
        ),
        case(
            "large-body",
            &format!(
                "PUT http://{{H}}/case/large-body HTTP/1.1\r\nHost: {{H}}\r\nContent-Length: {}\r\n\r\n{big_body}",
                big_body.len()
            ),
            &format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{big_body}",
                big_body.len()
            ),
        ),
        case("origin-form", "GET /case/origin-form HTTP/1.1\r\nHost: {H}\r\n\r\n", OK),
        case("https-url", "GET https://{H}/case/https-url HTTP/1.1\r\nHost: {H}\r\n\r\n", OK),
        case(
            "conflicting-content-length",
            "POST http://{H}/case/conflicting-content-length HTTP/1.1\r\nHost: {H}\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            OK,
        ),
        case(
            "content-length-and-chunked",
            "POST http://{H}/case/content-length-and-chunked HTTP/1.1\r\nHost: {H}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            OK,
        ),
        case(
            "obs-fold",
            "GET http://{H}/case/obs-fold HTTP/1.1\r\nHost: {H}\r\nX-Folded: a\r\n b\r\n\r\n",
            OK,
        ),
        case(
            "bare-lf",
            "GET http://{H}/case/bare-lf HTTP/1.1\nHost: {H}\n\n",
            OK,
        ),
        case(
            "invalid-chunk-size",
            "POST http://{H}/case/invalid-chunk-size HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
            OK,
        ),
        case(
            "chunk-size-overflow",
            "POST http://{H}/case/chunk-size-overflow HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\nhello\r\n0\r\n\r\n",
            OK,
        ),
        case(
            "space-before-colon",
            "GET http://{H}/case/space-before-colon HTTP/1.1\r\nHost : {H}\r\n\r\n",
            OK,
        ),
    ];
    v.push(Case {
        name: "expect-100-continue",
        request: "PUT http://{H}/case/expect-100-continue HTTP/1.1\r\nHost: {H}\r\nExpect: 100-continue\r\nContent-Length: 7\r\n\r\n".into(),
        after_continue: Some("payload"),
        responses: vec![OK.as_bytes().to_vec()],
        close_after: false,
        expect_responses: 1,
        head: false,
    });
    v.push(Case {
        name: "close-delimited",
        request: "GET http://{H}/case/close-delimited HTTP/1.1\r\nHost: {H}\r\n\r\n".into(),
        after_continue: None,
        responses: vec![
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end\n".to_vec(),
        ],
        close_after: true,
        expect_responses: 1,
        head: false,
    });
    v.push(Case {
        name: "pipelined",
        request: "GET http://{H}/case/pipelined/1 HTTP/1.1\r\nHost: {H}\r\n\r\nGET http://{H}/case/pipelined/2 HTTP/1.1\r\nHost: {H}\r\n\r\n".into(),
        after_continue: None,
        responses: vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nfirst\n".to_vec(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nsecond\n".to_vec(),
        ],
        close_after: false,
        expect_responses: 2,
        head: false,
    });
    v.iter_mut()
        .filter(|c| c.name == "head")
        .for_each(|c| c.head = true);
    v
}

// ---- a minimal HTTP/1 message reader for the test's own two ends ----------------------

#[derive(Debug, Default)]
struct Msg {
    start: String,
    headers: Vec<(String, String)>,
    framing: String,
    body: Vec<u8>,
    trailers: Vec<(String, String)>,
}

enum Parsed {
    /// A complete message and the bytes it used.
    Done(Msg, usize),
    /// More bytes are needed (at EOF: the message is incomplete or close-delimited).
    Partial,
    Bad(String),
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parse one message from `buf`. `response_to_head`: a response without a body. `eof`:
/// no more bytes will come (ends a close-delimited body).
fn parse(buf: &[u8], is_response: bool, response_to_head: bool, eof: bool) -> Parsed {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return Parsed::Partial;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let mut lines = head.split("\r\n");
    let start = lines.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    for l in lines {
        match l.split_once(':') {
            Some((n, v)) => headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string())),
            None => return Parsed::Bad(format!("header line without colon: {l:?}")),
        }
    }
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mut msg = Msg {
        start: start.clone(),
        headers: headers.clone(),
        ..Msg::default()
    };
    let body = &buf[end + 4..];
    let status: u16 = if is_response {
        start
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    } else {
        0
    };
    if is_response && (response_to_head || status == 204 || status == 304 || status < 200) {
        msg.framing = "none".into();
        return Parsed::Done(msg, end + 4);
    }
    let chunked =
        get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        msg.framing = "chunked".into();
        let mut at = 0;
        loop {
            let Some(le) = find(&body[at..], b"\r\n") else {
                return Parsed::Partial;
            };
            let line = String::from_utf8_lossy(&body[at..at + le]).to_string();
            let size_text = line.split(';').next().unwrap_or("").trim();
            let Ok(size) = usize::from_str_radix(size_text, 16) else {
                return Parsed::Bad(format!("chunk size {line:?}"));
            };
            at += le + 2;
            if size == 0 {
                // Trailers until an empty line.
                loop {
                    let Some(le) = find(&body[at..], b"\r\n") else {
                        return Parsed::Partial;
                    };
                    let line = String::from_utf8_lossy(&body[at..at + le]).to_string();
                    at += le + 2;
                    if line.is_empty() {
                        return Parsed::Done(msg, end + 4 + at);
                    }
                    if let Some((n, v)) = line.split_once(':') {
                        msg.trailers
                            .push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
                    }
                }
            }
            if body.len() < at + size + 2 {
                return Parsed::Partial;
            }
            msg.body.extend_from_slice(&body[at..at + size]);
            at += size + 2;
        }
    }
    if let Some(cl) = get("content-length") {
        let Ok(n) = cl.parse::<usize>() else {
            return Parsed::Bad(format!("content-length {cl:?}"));
        };
        msg.framing = format!("length {n}");
        if body.len() < n {
            return Parsed::Partial;
        }
        msg.body = body[..n].to_vec();
        return Parsed::Done(msg, end + 4 + n);
    }
    if is_response {
        if !eof {
            return Parsed::Partial;
        }
        msg.framing = "until close".into();
        msg.body = body.to_vec();
        return Parsed::Done(msg, buf.len());
    }
    msg.framing = "none".into();
    Parsed::Done(msg, end + 4)
}

fn render_body(b: &[u8]) -> String {
    if b.len() > 256 {
        // Large bodies: length and a checksum (FNV-1a).
        let h = b.iter().fold(0xcbf29ce484222325u64, |h, &x| {
            (h ^ x as u64).wrapping_mul(0x100000001b3)
        });
        return format!("{} bytes, fnv1a {h:016x}", b.len());
    }
    let mut s = String::new();
    for &c in b {
        if c == b'\n' {
            s.push_str("\\n");
        } else if (0x20..0x7f).contains(&c) && c != b'\\' {
            s.push(c as char);
        } else {
            let _ = write!(s, "\\x{c:02x}");
        }
    }
    format!("{:?}", s)
}

fn render(m: &Msg, host: &str) -> String {
    let mut headers = m.headers.clone();
    headers.retain(|(n, _)| n != "date");
    headers.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = format!("{}\n", m.start.replace(host, "{H}"));
    for (n, v) in headers {
        let v = if v.len() > 200 {
            format!("{}… ({} bytes)", &v[..20], v.len())
        } else {
            v.replace(host, "{H}")
        };
        let _ = writeln!(out, "  {n}: {v}");
    }
    let _ = writeln!(out, "  [framing: {}]", m.framing);
    let _ = writeln!(out, "  [body: {}]", render_body(&m.body));
    for (n, v) in &m.trailers {
        let _ = writeln!(out, "  [trailer] {n}: {v}");
    }
    out
}

/// Render a byte stream as its messages; what cannot be parsed is shown raw.
fn render_stream(mut buf: &[u8], is_response: bool, head: bool, host: &str) -> String {
    let mut out = String::new();
    while !buf.is_empty() {
        match parse(buf, is_response, head, true) {
            Parsed::Done(m, used) => {
                // A 100 Continue is part of the stream too.
                out.push_str(&render(&m, host));
                buf = &buf[used..];
            }
            Parsed::Partial => {
                let _ = writeln!(
                    out,
                    "[incomplete: {}]",
                    render_body(buf).replace(host, "{H}")
                );
                break;
            }
            Parsed::Bad(why) => {
                let _ = writeln!(
                    out,
                    "[unparsable ({why}): {}]",
                    render_body(buf).replace(host, "{H}")
                );
                break;
            }
        }
    }
    if out.is_empty() {
        out.push_str("[nothing]\n");
    }
    out
}

// ---- the scripted upstream -----------------------------------------------------------

/// The raw bytes of one upstream connection.
type ConnLog = Arc<Mutex<Vec<u8>>>;
/// Each case's name, its responses, and whether to close after the last.
type Answers = Arc<Vec<(&'static str, Vec<Vec<u8>>, bool)>>;

/// Answers each request whose path starts `/case/NAME` with that case's next response;
/// records the raw bytes of every connection.
struct Script {
    addr: SocketAddr,
    /// Raw bytes received, one entry per connection, since the last `take`.
    received: Arc<Mutex<Vec<ConnLog>>>,
}

fn start_upstream(cases: &[Case]) -> Script {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let received: Arc<Mutex<Vec<ConnLog>>> = Arc::default();
    let answers: Answers = Arc::new(
        cases
            .iter()
            .map(|c| (c.name, c.responses.clone(), c.close_after))
            .collect(),
    );
    let rec = received.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let log = Arc::new(Mutex::new(Vec::new()));
            rec.lock().unwrap().push(log.clone());
            let answers = answers.clone();
            std::thread::spawn(move || {
                conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut buf = Vec::new();
                let mut served: std::collections::HashMap<&str, usize> = Default::default();
                let mut chunk = [0u8; 65536];
                loop {
                    // Answer every complete request in the buffer.
                    while let Parsed::Done(m, used) = parse(&buf, false, false, false) {
                        buf.drain(..used);
                        let path = m.start.split(' ').nth(1).unwrap_or("").to_string();
                        let Some((name, responses, close)) = answers.iter().find(|(n, _, _)| {
                            path.strip_prefix("/case/").is_some_and(|p| {
                                p == *n
                                    || p.starts_with(&format!("{n}/"))
                                    || p.starts_with(&format!("{n}?"))
                            })
                        }) else {
                            let _ = conn
                                .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
                            continue;
                        };
                        let i = served.entry(name).or_default();
                        let resp = responses
                            .get(*i)
                            .or(responses.last())
                            .cloned()
                            .unwrap_or_default();
                        *i += 1;
                        let _ = conn.write_all(&resp);
                        if *close && *i >= responses.len() {
                            let _ = conn.shutdown(std::net::Shutdown::Both);
                            return;
                        }
                    }
                    match conn.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            log.lock().unwrap().extend_from_slice(&chunk[..n]);
                            buf.extend_from_slice(&chunk[..n]);
                        }
                    }
                }
            });
        }
    });
    Script { addr, received }
}

impl Script {
    /// Everything received since the last call, connection by connection.
    fn take(&self) -> Vec<Vec<u8>> {
        let mut r = self.received.lock().unwrap();
        let out = r.iter().map(|c| c.lock().unwrap().clone()).collect();
        // Keep connections open across cases (pooled), but forget what they said.
        for c in r.iter() {
            c.lock().unwrap().clear();
        }
        r.retain(|c| Arc::strong_count(c) > 1);
        out
    }
}

// ---- the client ----------------------------------------------------------------------

fn run_client(proxy: SocketAddr, c: &Case, host: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s.write_all(c.request.replace("{H}", host).as_bytes())
        .unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut continued = c.after_continue.is_none();
    let mut chunk = [0u8; 65536];
    loop {
        if !continued && find(&got, b"\r\n\r\n").is_some() {
            // The interim response arrived: send the body.
            s.write_all(c.after_continue.unwrap_or("").as_bytes())
                .unwrap();
            continued = true;
        }
        let eof = match s.read(&mut chunk) {
            Ok(0) => true,
            Ok(n) => {
                got.extend_from_slice(&chunk[..n]);
                false
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
            Err(_) => true,
        };
        if eof || Instant::now() > deadline {
            return got;
        }
        // Done when the expected number of final responses is complete.
        let mut rest = &got[..];
        let mut finals = 0;
        while let Parsed::Done(m, used) = parse(rest, true, c.head, false) {
            rest = &rest[used..];
            if !m.start.contains(" 100 ") {
                finals += 1;
            }
        }
        if finals >= c.expect_responses && rest.is_empty() {
            return got;
        }
    }
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/relay")
}

#[test]
fn the_relay_matches_the_recorded_behaviour_of_every_corpus_case() {
    let cases = corpus();
    let up = start_upstream(&cases);
    let mut b = Sidecar::builder("diff").args(&["--max-header-bytes", "65536"]);
    for c in &cases {
        b = b.resolve(&format!("{}.diff.test", c.name), 80, up.addr);
    }
    let s = b.spawn();
    let record = std::env::var_os("WHOUSES_RECORD_GOLDEN").is_some();
    let mut mismatches = Vec::new();
    for c in &cases {
        let host = format!("{}.diff.test", c.name);
        let client = run_client(s.proxy, c, &host);
        // Let the proxy finish with the upstream (closing a broken connection).
        std::thread::sleep(Duration::from_millis(150));
        let upstream = up.take();
        let mut out = format!("# case {}\n\n## the upstream received\n", c.name);
        let mut any = false;
        for conn in upstream.iter().filter(|b| !b.is_empty()) {
            any = true;
            out.push_str(&render_stream(conn, false, false, &host));
        }
        if !any {
            out.push_str("[nothing]\n");
        }
        out.push_str("\n## the client received\n");
        out.push_str(&render_stream(&client, true, c.head, &host));
        out.push_str("\n## counted\n");
        match s.edge(&host, 80, "http") {
            Some(e) => {
                let _ = writeln!(
                    out,
                    "requests {} errors {} connections {} bytes_sent {} bytes_received {}",
                    e["requests"],
                    e["errors"],
                    e["connections"],
                    e["bytes_sent"],
                    e["bytes_received"]
                );
            }
            None => out.push_str("nothing\n"),
        }
        let path = golden_dir().join(format!("{}.txt", c.name));
        if record {
            std::fs::create_dir_all(golden_dir()).unwrap();
            std::fs::write(&path, &out).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        if want != out {
            mismatches.push(format!(
                "--- {} (golden)\n{want}\n+++ {} (now)\n{out}",
                path.display(),
                c.name
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} cases differ from their golden files:\n{}",
        mismatches.len(),
        cases.len(),
        mismatches.join("\n")
    );
}
