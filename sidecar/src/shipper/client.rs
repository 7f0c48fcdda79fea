//! The HTTP client that posts batches, and what each answer means for the batch.
//!
//! The client never uses a proxy from the environment: injected beside an app, the
//! sidecar's own `HTTP_PROXY` points at itself, which would count the sidecar as a caller
//! of the collector and send the final flush to its own closed listener.

use std::path::Path;
use std::time::Duration;

use whouses_wire::Report;

/// What an answer means for the batch that was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not stored; try the same batch again later (collector down, 5xx, 429, …).
    Retry,
    /// 401/403: not about this batch but about our token; retry, and it shows in health.
    Auth,
    /// 413: this batch is too large for the collector; split it if that is safe.
    TooLarge,
    /// 400/422: the collector will never take this batch; set it aside.
    Rejected,
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("collector unreachable: {message}")]
    Transport {
        message: String,
        /// The request may have reached the collector (a timeout, a reset after
        /// sending): the batch may be stored even though we saw no answer.
        maybe_delivered: bool,
        /// Writing the request failed, so the collector cannot have read all of it. A
        /// collector (or a proxy before it) that refuses a body as too large may answer
        /// 413 and close at once; the reset can reach us before the 413 does, so this
        /// is what "too large" can look like.
        write_failed: bool,
    },
    #[error("collector answered {status}: {body}")]
    Status { status: u16, body: String },
}

impl SendError {
    pub fn verdict(&self) -> Verdict {
        match self {
            SendError::Transport { .. } => Verdict::Retry,
            SendError::Status { status, .. } => match status {
                401 | 403 => Verdict::Auth,
                413 => Verdict::TooLarge,
                400 | 422 => Verdict::Rejected,
                _ => Verdict::Retry,
            },
        }
    }

    /// Whether the collector may have stored the batch although this attempt failed:
    /// no answer after the request was sent, or a 5xx, which a gateway in front of the
    /// collector (502, 504) can give after the collector stored it. The collector's own
    /// 4xx answers, and any proxy's (they refuse before forwarding), mean "not stored".
    pub fn maybe_delivered(&self) -> bool {
        match self {
            SendError::Transport {
                maybe_delivered, ..
            } => *maybe_delivered,
            SendError::Status { status, .. } => *status >= 500,
        }
    }

    pub fn write_failed(&self) -> bool {
        matches!(
            self,
            SendError::Transport {
                write_failed: true,
                ..
            }
        )
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            SendError::Status { status, .. } => Some(*status),
            SendError::Transport { .. } => None,
        }
    }
}

/// Build the client: no proxy from the environment, bounded timeouts, and the roots of
/// `--collector-ca` added to the built-in ones.
pub fn build(flush_interval: Duration, ca: Option<&Path>) -> anyhow::Result<reqwest::Client> {
    // A request may take a little longer than the interval, never so long that a hung
    // collector stalls the retries: between 2 and 15 seconds.
    let request_timeout = flush_interval.clamp(Duration::from_secs(2), Duration::from_secs(15));
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .timeout(request_timeout)
        .connect_timeout(Duration::from_secs(5))
        // A redirect would turn the POST into a GET; better a clear "answered 301".
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("whouses-sidecar/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = ca {
        let pem = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("cannot read --collector-ca {}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            anyhow::anyhow!(
                "invalid --collector-ca {}: {}",
                path.display(),
                error_chain(&e)
            )
        })?;
        if certs.is_empty() {
            anyhow::bail!(
                "invalid --collector-ca {}: no PEM certificate found (expected -----BEGIN CERTIFICATE-----)",
                path.display()
            );
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
        // An invalid certificate inside valid PEM is only found when the TLS
        // configuration is built, so name the file here too.
        return builder.build().map_err(|e| {
            anyhow::anyhow!(
                "invalid --collector-ca {}: {}",
                path.display(),
                error_chain(&e)
            )
        });
    }
    builder
        .build()
        .map_err(|e| anyhow::anyhow!("cannot build the HTTP client: {}", error_chain(&e)))
}

/// Post one batch; `Ok` only on a 2xx, which the collector sends once the batch is stored.
pub async fn post(
    client: &reqwest::Client,
    url: &reqwest::Url,
    token: Option<&str>,
    report: &Report,
    bypass: Option<&crate::bypass::Bypass>,
) -> Result<(), SendError> {
    let mut req = client.post(url.clone()).json(report);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.map_err(|e| {
        let write_failed = write_failed(&e);
        SendError::Transport {
            maybe_delivered: !e.is_connect() && !write_failed,
            write_failed,
            message: error_chain(&e),
        }
    })?;
    // The collector's address: our connections to it are never bypass.
    if let (Some(b), Some(remote)) = (bypass, resp.remote_addr()) {
        b.own_remote(remote);
    }
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let body = resp.text().await.unwrap_or_default();
    let body: String = body.trim().chars().take(300).collect();
    Err(SendError::Status {
        status: status.as_u16(),
        body,
    })
}

/// Whether writing the request to the connection failed. hyper reports every failed
/// write of a request (head or body) as "error writing a body to connection"; it fails
/// with bytes of the request still unsent, and a request the collector did not read to
/// its end cannot have been stored. A broken pipe is only ever a failed write. (hyper
/// has no public test for that error kind, hence the message.)
fn write_failed(e: &reqwest::Error) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = src {
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.to_string() == "error writing a body to connection" {
                return true;
            }
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::BrokenPipe {
                return true;
            }
        }
        src = err.source();
    }
    false
}

pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let next = inner.to_string();
        if !s.contains(&next) {
            s.push_str(": ");
            s.push_str(&next);
        }
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> SendError {
        SendError::Status {
            status: code,
            body: String::new(),
        }
    }

    #[test]
    fn verdicts() {
        assert_eq!(status(400).verdict(), Verdict::Rejected);
        assert_eq!(status(422).verdict(), Verdict::Rejected);
        assert_eq!(status(413).verdict(), Verdict::TooLarge);
        assert_eq!(status(401).verdict(), Verdict::Auth);
        assert_eq!(status(403).verdict(), Verdict::Auth);
        // A wrong URL or a rate limit is about every batch, not this one: retry.
        for code in [404, 405, 408, 429, 500, 502, 503] {
            assert_eq!(status(code).verdict(), Verdict::Retry, "{code}");
        }
        let t = SendError::Transport {
            message: "refused".into(),
            maybe_delivered: false,
            write_failed: false,
        };
        assert_eq!(t.verdict(), Verdict::Retry);
        assert!(!t.maybe_delivered());
        assert!(
            status(502).maybe_delivered(),
            "a gateway may answer after storing"
        );
        assert!(!status(413).maybe_delivered());
        assert!(!status(403).maybe_delivered());
    }

    #[test]
    fn a_bad_ca_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = build(Duration::from_secs(1), Some(&missing)).unwrap_err();
        assert!(e.to_string().contains("cannot read --collector-ca"), "{e}");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let e = build(Duration::from_secs(1), Some(&junk)).unwrap_err();
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
        let bad = dir.path().join("bad.pem");
        std::fs::write(
            &bad,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = build(Duration::from_secs(1), Some(&bad)).unwrap_err();
        assert!(e.to_string().contains("invalid --collector-ca"), "{e}");
        assert!(build(Duration::from_secs(1), None).is_ok());
    }
}
