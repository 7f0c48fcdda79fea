//! Any bytes as a report body: decoding never panics, and what decodes and validates
//! re-encodes to a report that decodes to the same thing.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    whouses_wire::fuzzing::report(data);
});
