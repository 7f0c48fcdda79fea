//! The fuzz targets' properties in the normal suite: every committed corpus file, then a
//! few thousand random inputs (the long runs are `cargo +nightly fuzz run …`, see
//! `wire/fuzz/Cargo.toml`).

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::path::Path;

use proptest::prelude::*;
use whouses_wire::fuzzing;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        check(&data);
        n += 1;
    }
    assert!(n > 5, "the {target} corpus holds only {n} files");
}

#[test]
fn the_committed_corpora_pass() {
    replay("report", fuzzing::report);
    replay("host", fuzzing::host);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn random_authorities(s in "\\PC{0,60}") {
        fuzzing::host(s.as_bytes());
    }

    #[test]
    fn random_bytes_as_reports(b in prop::collection::vec(any::<u8>(), 0..400)) {
        fuzzing::report(&b);
    }
}
