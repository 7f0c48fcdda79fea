//! Millisecond timestamps that serialise as RFC 3339 (`2026-11-20T09:12:03.120Z`).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Milliseconds since the Unix epoch (UTC), within [`Timestamp::MIN`]..=[`Timestamp::MAX`]
/// when made by this module's constructors. The field is public for arithmetic in
/// queries; anything built from outside input goes through the clamping constructors,
/// and printing clamps too, so no value can make formatting fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The Unix epoch.
    pub const MIN: Timestamp = Timestamp(0);
    /// 9999-12-31T23:59:59.999Z, the last instant RFC 3339 can write.
    pub const MAX: Timestamp = Timestamp(253_402_300_799_999);

    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    pub fn from_system_time(t: SystemTime) -> Self {
        let ms = t
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis().min(Self::MAX.0 as u128) as i64)
            .unwrap_or(0);
        Timestamp(ms)
    }

    pub fn as_millis(self) -> i64 {
        self.0
    }

    /// The same instant, moved into the representable range.
    pub fn clamped(self) -> Self {
        Timestamp(self.0.clamp(Self::MIN.0, Self::MAX.0))
    }

    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.clamped().0 as u64)
    }

    /// This timestamp minus a duration, saturating at the epoch.
    pub fn saturating_sub(self, d: Duration) -> Self {
        let ms = d.as_millis().min(i64::MAX as u128) as i64;
        Timestamp(self.0.saturating_sub(ms).max(0))
    }

    /// This timestamp plus a duration, saturating at [`Timestamp::MAX`].
    pub fn saturating_add(self, d: Duration) -> Self {
        let ms = d.as_millis().min(i64::MAX as u128) as i64;
        Timestamp(self.0.saturating_add(ms).min(Self::MAX.0))
    }

    /// This timestamp minus `ms` milliseconds, saturating at the epoch.
    pub fn minus_ms(self, ms: i64) -> Self {
        Timestamp(self.0.saturating_sub(ms).max(0))
    }

    pub fn parse_rfc3339(s: &str) -> Result<Self, String> {
        humantime::parse_rfc3339_weak(s)
            .map(Self::from_system_time)
            .map_err(|e| {
                format!(
                    "invalid timestamp {s:?}: {e} (expected RFC 3339, e.g. 2026-11-20T09:12:03Z)"
                )
            })
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.clamped();
        let t = c.to_system_time();
        if c.0 % 1000 == 0 {
            write!(f, "{}", humantime::format_rfc3339_seconds(t))
        } else {
            write!(f, "{}", humantime::format_rfc3339_millis(t))
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_rfc3339() {
        for ms in [0, 1_795_000_000_000, 1_795_000_000_123] {
            let t = Timestamp(ms);
            let s = serde_json::to_string(&t).unwrap();
            let back: Timestamp = serde_json::from_str(&s).unwrap();
            assert_eq!(back, t, "{s}");
        }
        assert_eq!(
            Timestamp(1_795_000_000_000).to_string(),
            "2026-11-18T11:06:40Z"
        );
    }

    #[test]
    fn out_of_range_values_print_clamped_instead_of_panicking() {
        assert_eq!(Timestamp(i64::MAX).to_string(), "9999-12-31T23:59:59.999Z");
        assert_eq!(Timestamp(i64::MIN).to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(
            serde_json::to_string(&Timestamp(-5)).unwrap(),
            "\"1970-01-01T00:00:00Z\""
        );
        let far = Duration::from_secs(300_000_000 * 365 * 86_400);
        assert_eq!(Timestamp(5).saturating_sub(far), Timestamp(0));
        assert_eq!(Timestamp(5).saturating_add(far), Timestamp::MAX);
    }

    #[test]
    fn rejects_non_timestamps() {
        assert!(serde_json::from_str::<Timestamp>("\"yesterday\"").is_err());
        assert!(serde_json::from_str::<Timestamp>("12").is_err());
    }
}
