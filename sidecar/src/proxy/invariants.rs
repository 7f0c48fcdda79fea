//! What must hold for any bytes a client or an upstream sends, checked by panicking: the
//! body of the cargo-fuzz target (`sidecar/fuzz`, run for hours) and of a property test
//! and a corpus replay in the normal test suite (run for seconds).
//!
//! * parsing a request or response head never panics, and a parsed head lies within the
//!   input and the limit;
//! * the head the relay forwards parses again, with the same framing, exactly one `Host`,
//!   no hop-by-hop field, and CRLF line ends only;
//! * the response head for the app parses again with the same status and framing;
//! * decoding a chunked body gives the same result however the input is split.

use super::chunked;
use super::head::{self, Framing, RequestRewrite, ResponseRewrite};
use super::route::{Action, ExplicitProxy, Router};

const MAX: usize = 16 * 1024;

/// Check one input. Its first byte chooses what the rest is (request head, response head,
/// chunked body), its second where to split it.
pub fn check(input: &[u8]) {
    let [kind, split, data @ ..] = input else {
        return;
    };
    match kind % 3 {
        0 => request(data),
        1 => response(data, split % 2 == 0),
        _ => chunked_split(data, usize::from(*split)),
    }
}

fn request(data: &[u8]) {
    let mut storage = head::storage();
    let Ok(Some(h)) = head::parse_request(data, MAX, &mut storage) else {
        return;
    };
    assert!(h.len <= data.len() && h.len <= MAX);
    let Ok(route) = ExplicitProxy.route(&h) else {
        return;
    };
    let Action::Forward { path, host } = route.action else {
        return;
    };
    let path = h.target.get(path).expect("the path lies within the target");
    let host = host.map(|r| h.target.get(r).expect("the host lies within the target"));
    let mut out = Vec::new();
    head::write_request(
        &mut out,
        &h,
        &RequestRewrite {
            slash: !path.starts_with('/'),
            target: path.split('#').next().unwrap_or(""),
            host,
        },
    );
    let mut storage2 = head::storage();
    // A forwarded head may have a `Host` and a `Connection` more than the received one.
    let again = match head::parse_request_with(
        &out,
        usize::MAX,
        head::MAX_FIELDS + head::ADDED_FIELDS,
        &mut storage2,
    ) {
        Ok(Some(again)) => again,
        other => panic!(
            "the forwarded head does not parse: {other:?}\n{}",
            String::from_utf8_lossy(&out)
        ),
    };
    assert_eq!(again.len, out.len());
    assert_eq!(again.framing, h.framing, "framing changed");
    assert_eq!(again.method, h.method);
    assert_eq!(again.minor, 1);
    let hosts = again
        .headers
        .iter()
        .filter(|x| x.name.eq_ignore_ascii_case("host"))
        .count();
    assert_eq!(hosts, 1, "one Host");
    for x in again.headers {
        let n = x.name.to_ascii_lowercase();
        assert!(
            !n.starts_with("proxy-") && n != "keep-alive" && n != "te" && n != "expect",
            "hop-by-hop field {n} forwarded"
        );
        if n == "connection" {
            assert!(h.upgrade && x.value == b"upgrade", "Connection forwarded");
        }
    }
}

fn response(data: &[u8], head_request: bool) {
    let mut storage = head::storage();
    let Ok(Some(h)) = head::parse_response(data, MAX, head_request, &mut storage) else {
        return;
    };
    assert!(h.len <= data.len() && h.len <= MAX);
    if head_request || (100..200).contains(&h.code) || h.code == 204 || h.code == 304 {
        assert_eq!(h.framing, Framing::None);
    }
    let mut out = Vec::new();
    head::write_response(
        &mut out,
        &h,
        &ResponseRewrite {
            dechunk: false,
            connection: Some("close"),
            upgrade: false,
        },
    );
    let mut storage2 = head::storage();
    // The app's head may have a `Connection` more than the upstream's.
    let again = match head::parse_response_with(
        &out,
        usize::MAX,
        head_request,
        head::MAX_FIELDS + head::ADDED_FIELDS,
        &mut storage2,
    ) {
        Ok(Some(again)) => again,
        other => panic!(
            "the response head for the app does not parse: {other:?}\n{}",
            String::from_utf8_lossy(&out)
        ),
    };
    assert_eq!(again.code, h.code);
    assert_eq!(again.framing, h.framing, "framing changed");
}

fn chunked_split(data: &[u8], split: usize) {
    let whole = chunked::decode_all([data], 1024);
    let at = split.min(data.len());
    let (a, b) = data.split_at(at);
    let parts = chunked::decode_all([a, b], 1024);
    let bytes = chunked::decode_all(data.chunks(1), 1024);
    match (&whole, &parts, &bytes) {
        (Ok(w), Ok(p), Ok(b1)) => {
            assert_eq!(w, p, "split at {at} changed the result");
            assert_eq!(w, b1, "byte by byte changed the result");
            assert!(w.0.len() <= w.1 && w.1 <= data.len());
        }
        (Err(w), Err(p), Err(b1)) => {
            assert_eq!(w, p);
            assert_eq!(w, b1);
        }
        _ => panic!("split at {at}: {whole:?} vs {parts:?} vs {bytes:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn corpus() -> Vec<Vec<u8>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/relay_head");
        let mut v: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .expect("the committed seed corpus")
            .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn the_seed_corpus_holds() {
        let c = corpus();
        assert!(c.len() >= 20, "{} seeds", c.len());
        for input in &c {
            check(input);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Seeds with bytes flipped, inserted and cut: a short run of the fuzz target.
        #[test]
        fn mutated_seeds_hold(seed in 0usize..1000, edits in proptest::collection::vec((any::<u16>(), any::<u8>(), 0u8..4), 0..8)) {
            let c = corpus();
            let mut input = c[seed % c.len()].clone();
            for (at, byte, op) in edits {
                let at = usize::from(at) % (input.len() + 1);
                match op {
                    0 if at < input.len() => input[at] = byte,
                    1 => input.insert(at, byte),
                    2 if at < input.len() => { input.remove(at); }
                    _ => input.truncate(at),
                }
            }
            check(&input);
        }

        #[test]
        fn random_bytes_hold(input in proptest::collection::vec(any::<u8>(), 0..512)) {
            check(&input);
        }
    }
}
