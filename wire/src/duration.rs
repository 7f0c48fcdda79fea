//! Durations as people write them: `500ms`, `10s`, `5m`, `7d`, `1h30m`.
//!
//! Parsing is delegated to `humantime`; this module only adds a clearer error and a
//! clap-friendly wrapper.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Parse a human duration such as `10s` or `7d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let trimmed = s.trim();
    if trimmed.is_empty() {
        return Err("empty duration (expected e.g. 500ms, 10s, 5m, 7d)".to_string());
    }
    humantime::parse_duration(trimmed)
        .map_err(|e| format!("invalid duration {s:?}: {e} (expected e.g. 500ms, 10s, 5m, 7d)"))
}

/// A duration argument (flag or query parameter) that keeps its parsed value and prints
/// back in human form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DurationArg(pub Duration);

impl FromStr for DurationArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_duration(s).map(DurationArg)
    }
}

impl fmt::Display for DurationArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl From<DurationArg> for Duration {
    fn from(d: DurationArg) -> Duration {
        d.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_contract_examples() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(
            parse_duration("400d"),
            Ok(Duration::from_secs(400 * 86_400))
        );
    }

    #[test]
    fn rejects_garbage_with_a_hint() {
        let err = parse_duration("ten seconds").unwrap_err();
        assert!(err.contains("expected e.g."), "{err}");
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-5s").is_err());
    }
}
