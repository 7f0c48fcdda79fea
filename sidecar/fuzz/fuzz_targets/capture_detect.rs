//! Fuzz transparent capture's protocol detection (HTTP/1 request line, TLS ClientHello
//! SNI, HTTP/2 preface + first HEADERS): every input must keep the invariants of
//! `whouses_sidecar::capture::invariants` (no panic, bounded, the same decision however
//! the bytes arrive, names normalised).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    whouses_sidecar::capture::invariants::check(data);
});
