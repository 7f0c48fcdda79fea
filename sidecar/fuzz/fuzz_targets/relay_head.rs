//! Fuzz the relay's head parsing, rewriting and chunked framing: every input must keep
//! the invariants of `whouses_sidecar::proxy::invariants` (no panic, forwarded heads that
//! parse again with the same framing, split-invariant chunked decoding).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    whouses_sidecar::proxy::invariants::check(data);
});
