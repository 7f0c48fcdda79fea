//! The properties the fuzz targets (`wire/fuzz`) check, as plain functions, so the
//! normal test suite can replay the committed corpora through exactly the same checks.
//! Each panics when a property fails (that is how a fuzzer sees a finding).

use crate::host::{normalize_host, HostPort};
use crate::report::Report;

/// Decoding a report body never panics; a valid report survives a round trip.
pub fn report(data: &[u8]) {
    if let Ok(r) = Report::from_json(data) {
        let again = serde_json::to_vec(&r).expect("a decoded report encodes");
        let back = Report::from_json(&again).expect("a re-encoded report decodes");
        assert_eq!(back, r, "round trip changed the report");
        for e in &r.edges {
            assert!(e.counts.first_seen <= e.counts.last_seen);
            for (_, v) in e.counts.fields() {
                assert!(v <= crate::MAX_COUNT);
            }
        }
    }
}

/// Parsing an authority never panics; a parsed host is already normal, and its printed
/// form parses back to itself.
pub fn host(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    for default in [None, Some(80)] {
        if let Ok(hp) = HostPort::parse(s, default) {
            assert_eq!(
                normalize_host(&hp.host).as_deref(),
                Ok(hp.host.as_str()),
                "{s:?}: the parsed host is not canonical"
            );
            assert_eq!(
                HostPort::parse(&hp.to_string(), None).as_ref(),
                Ok(&hp),
                "{s:?}: printing and parsing again changed it"
            );
        }
    }
}
