//! Any string as an authority: parsing never panics, and a parsed host is canonical.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    whouses_wire::fuzzing::host(data);
});
