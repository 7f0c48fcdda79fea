//! What must hold for any first bytes an app sends on a redirected connection, checked by
//! panicking: the body of the cargo-fuzz target `capture_detect` (`sidecar/fuzz`, run for
//! minutes to hours) and of a property test and a corpus replay in the normal test suite.
//!
//! * [`detect::detect`] and [`detect::undecided`] never panic;
//! * detection is bounded: at [`detect::MAX_DETECT_BYTES`] or more it always decides;
//! * the decision does not depend on how the bytes arrived: the runtime calls `detect`
//!   again as each read lands and keeps the first decision, so a decision on a prefix
//!   must be the decision on the whole input;
//! * a name read from the bytes (TLS SNI, HTTP/2 `:authority`) is already normalised (what
//!   a count key holds), and a `CONNECT` target is one visible token.

use super::detect::{self, Detection, Protocol};

/// Prefixes up to this length are all checked; beyond it every [`STRIDE`]th and the last
/// [`TAIL`] ones (each check is a `detect` of its own: checking them all made the fuzz
/// target run at ~50 inputs a second once its corpus held 500-byte inputs).
const ALL_PREFIXES: usize = 256;
const STRIDE: usize = 31;
const TAIL: usize = 16;

/// Check one input (the bytes the app sent, in order).
pub fn check(input: &[u8]) {
    let whole = detect::detect(input);
    if input.len() >= detect::MAX_DETECT_BYTES {
        assert_ne!(
            whole,
            Detection::NeedMore,
            "undecided at {} bytes",
            input.len()
        );
    }
    if let Detection::Done(p) = &whole {
        names_are_normalised(p);
    }
    let _ = detect::undecided(input);

    let end = input.len().min(detect::MAX_DETECT_BYTES + 1);
    for n in (0..end).filter(|&n| n <= ALL_PREFIXES || n % STRIDE == 0 || n + TAIL >= end) {
        if let Detection::Done(early) = detect::detect(&input[..n]) {
            assert_eq!(
                Detection::Done(early.clone()),
                whole,
                "decided {early:?} after {n} of {} bytes, but the whole input is {whole:?}",
                input.len()
            );
        }
    }
}

fn names_are_normalised(p: &Protocol) {
    let name = match p {
        Protocol::Tls { sni: Some(n) } | Protocol::H2 { authority: Some(n) } => n,
        Protocol::Connect(target) => {
            assert!(
                !target.is_empty() && target.bytes().all(|b| b.is_ascii_graphic()),
                "CONNECT target {target:?}"
            );
            return;
        }
        _ => return,
    };
    assert_eq!(
        whouses_wire::host::normalize_host(name).as_deref(),
        Ok(name.as_str()),
        "name {name:?} is not normalised"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn corpus() -> Vec<Vec<u8>> {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/capture_detect");
        let mut v: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .expect("the committed seed corpus")
            .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn the_capture_seed_corpus_holds() {
        let c = corpus();
        assert!(c.len() >= 10, "{} seeds", c.len());
        for input in &c {
            check(input);
        }
    }

    #[test]
    fn the_seeds_are_told_apart() {
        // The seeds exist to lead the fuzzer into each branch: each kind is decided as such.
        let mut kinds = std::collections::BTreeSet::new();
        for input in corpus() {
            if let Detection::Done(p) = detect::detect(&input) {
                kinds.insert(match p {
                    Protocol::Http1 => "http1",
                    Protocol::Connect(_) => "connect",
                    Protocol::Tls { sni: Some(_) } => "tls-sni",
                    Protocol::Tls { sni: None } => "tls",
                    Protocol::H2 { authority: Some(_) } => "h2-authority",
                    Protocol::H2 { authority: None } => "h2",
                    Protocol::Opaque => "opaque",
                });
            }
        }
        for k in ["http1", "connect", "tls-sni", "h2-authority", "opaque"] {
            assert!(kinds.contains(k), "no seed decided as {k}: {kinds:?}");
        }
    }

    /// Inputs that once broke an invariant (found by the fuzz target; kept as regression
    /// seeds too).
    #[test]
    fn decisions_do_not_depend_on_how_the_bytes_arrived() {
        check(b"GET /\t HTTP/1.1\r\n");
        check("GET /\u{e9} HTTP/1.1\r\n".as_bytes());
        check(b"GET /a\rb HTTP/1.1\r\n");
        check(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef / HTTP/1.1\r\n");
        let mut long = b"GET /".to_vec();
        long.extend(std::iter::repeat_n(b'a', 9 * 1024));
        long.extend_from_slice(b" HTTP/1.1\r\n");
        check(&long);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Seeds with bytes flipped, inserted and cut: a short run of the fuzz target.
        #[test]
        fn mutated_capture_seeds_hold(seed in 0usize..1000, edits in proptest::collection::vec((any::<u16>(), any::<u8>(), 0u8..4), 0..8)) {
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
        fn random_first_bytes_hold(input in proptest::collection::vec(any::<u8>(), 0..300)) {
            check(&input);
        }
    }
}
