//! The bearer token for the collector: fixed (`--token`), or read from `--token-file` and
//! re-read when the file changes, because Kubernetes rotates mounted Secrets in place and
//! a sidecar must not need a restart (which would cost the app its proxy) to follow.
//!
//! The file is looked at (its modification time and size) at most every
//! [`RECHECK_EVERY`]; an unreadable or empty file keeps the last good token and shows as a
//! warning in shipping health.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// How often `--token-file` is looked at: a `stat` every few seconds is free, and a
/// rotated Secret is picked up well within one default flush interval.
pub const RECHECK_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub enum Token {
    None,
    Fixed(String),
    File(TokenFile),
}

#[derive(Debug)]
pub struct TokenFile {
    path: PathBuf,
    token: String,
    /// Modification time and length when last read.
    stamp: Option<(SystemTime, u64)>,
    next_check: Instant,
    /// The current problem with the file, so each is logged once, not every check.
    problem: Option<String>,
}

impl Token {
    /// From the flags; a missing, unreadable or empty file at startup is a clear error
    /// (there is no earlier token to fall back on).
    pub fn from_config(token: Option<&str>, file: Option<&Path>) -> anyhow::Result<Token> {
        match (token, file) {
            (Some(_), Some(_)) => anyhow::bail!("give --token or --token-file, not both"),
            (Some(t), None) => {
                let t = t.trim();
                if t.is_empty() {
                    anyhow::bail!("--token is empty");
                }
                Ok(Token::Fixed(t.to_string()))
            }
            (None, Some(path)) => {
                let token = read(path).map_err(|e| anyhow::anyhow!("--token-file {e}"))?;
                Ok(Token::File(TokenFile {
                    path: path.to_path_buf(),
                    token,
                    stamp: stamp(path),
                    next_check: Instant::now() + RECHECK_EVERY,
                    problem: None,
                }))
            }
            (None, None) => Ok(Token::None),
        }
    }

    pub fn current(&self) -> Option<&str> {
        match self {
            Token::None => None,
            Token::Fixed(t) => Some(t),
            Token::File(f) => Some(&f.token),
        }
    }

    /// When the file should next be looked at (`None`: never, the token is fixed).
    pub fn next_check(&self) -> Option<Instant> {
        match self {
            Token::File(f) => Some(f.next_check),
            _ => None,
        }
    }

    /// Re-read the file if it is due and changed (or unconditionally with `force`, after
    /// the collector refused the token, still at most every [`RECHECK_EVERY`]). Returns
    /// whether the token changed.
    pub fn refresh(&mut self, now: Instant, force: bool) -> bool {
        let Token::File(f) = self else {
            return false;
        };
        if now < f.next_check {
            return false;
        }
        f.next_check = now + RECHECK_EVERY;
        let current = stamp(&f.path);
        if !force && current.is_some() && current == f.stamp {
            return false;
        }
        match read(&f.path) {
            Ok(token) => {
                f.stamp = current;
                if f.problem.take().is_some() {
                    tracing::info!(path = %f.path.display(), "The token file is readable again.");
                }
                if token != f.token {
                    f.token = token;
                    tracing::info!(path = %f.path.display(), "Token file changed; using the new token.");
                    true
                } else {
                    false
                }
            }
            Err(problem) => {
                if f.problem.as_deref() != Some(problem.as_str()) {
                    tracing::warn!(%problem, "Cannot use the token file; keeping the last good token.");
                    f.problem = Some(problem);
                }
                false
            }
        }
    }

    /// The current problem with `--token-file`, for shipping health.
    pub fn warning(&self) -> Option<String> {
        match self {
            Token::File(f) => f.problem.clone(),
            _ => None,
        }
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

fn read(path: &Path) -> Result<String, String> {
    let t = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let t = t.trim();
    if t.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_sources_are_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t");
        std::fs::write(&f, "secret\n").unwrap();
        let t = Token::from_config(None, Some(&f)).unwrap();
        assert_eq!(t.current(), Some("secret"));
        assert!(Token::from_config(Some("a"), Some(&f)).is_err());
        assert!(Token::from_config(Some("  "), None).is_err());
        assert_eq!(
            Token::from_config(Some(" a\n"), None).unwrap().current(),
            Some("a")
        );
        std::fs::write(&f, "\n").unwrap();
        assert!(Token::from_config(None, Some(&f)).is_err());
        assert!(Token::from_config(None, Some(&dir.path().join("missing"))).is_err());
        assert!(Token::from_config(None, None).unwrap().current().is_none());
    }

    #[test]
    fn a_changed_file_is_reread_and_a_broken_one_keeps_the_last_token() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t");
        std::fs::write(&f, "one").unwrap();
        let mut t = Token::from_config(None, Some(&f)).unwrap();
        let mut now = Instant::now();
        // Rotated, like a Secret: a new file renamed over the old one.
        let tmp = dir.path().join("t.new");
        std::fs::write(&tmp, "two-two").unwrap();
        std::fs::rename(&tmp, &f).unwrap();
        assert!(!t.refresh(now, false), "not looked at before it is due");
        assert_eq!(t.current(), Some("one"));
        now += RECHECK_EVERY;
        assert!(t.refresh(now, false));
        assert_eq!(t.current(), Some("two-two"));
        assert!(t.warning().is_none());

        std::fs::write(&f, "").unwrap();
        now += RECHECK_EVERY;
        assert!(!t.refresh(now, false));
        assert_eq!(
            t.current(),
            Some("two-two"),
            "empty file: last good token kept"
        );
        assert!(t.warning().unwrap().contains("empty"));

        std::fs::remove_file(&f).unwrap();
        now += RECHECK_EVERY;
        assert!(!t.refresh(now, true));
        assert_eq!(
            t.current(),
            Some("two-two"),
            "missing file: last good token kept"
        );
        assert!(t.warning().unwrap().contains("cannot read"));

        std::fs::write(&f, "three").unwrap();
        now += RECHECK_EVERY;
        assert!(t.refresh(now, false));
        assert_eq!(t.current(), Some("three"));
        assert!(t.warning().is_none());
    }
}
