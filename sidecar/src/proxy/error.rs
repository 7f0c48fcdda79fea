//! What can go wrong on the request path, and the status and short reason the app gets.

use super::connect::ConnectError;
use super::head::HeadError;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request cannot be proxied as sent (origin-form, bad authority, malformed): 400.
    #[error("{0}")]
    BadRequest(String),
    /// The request head is larger than `--max-header-bytes`: 431.
    #[error("{0}")]
    HeadTooLarge(String),
    /// The upstream could not be reached (DNS, refused, unreachable): 502.
    #[error("{0}")]
    Unreachable(String),
    /// Connecting to the upstream took longer than `--connect-timeout`: 504.
    #[error("{0}")]
    Timeout(String),
    /// The upstream was reached but the exchange failed: 502.
    #[error("upstream {target}: {reason}")]
    Upstream { target: String, reason: String },
}

impl From<ConnectError> for ProxyError {
    fn from(e: ConnectError) -> Self {
        match e {
            ConnectError::Timeout { .. } => ProxyError::Timeout(e.to_string()),
            _ => ProxyError::Unreachable(e.to_string()),
        }
    }
}

impl From<HeadError> for ProxyError {
    fn from(e: HeadError) -> Self {
        match e {
            HeadError::TooLarge { limit } => ProxyError::HeadTooLarge(format!(
                "the request head is larger than {limit} bytes (--max-header-bytes)"
            )),
            HeadError::TooManyFields => ProxyError::HeadTooLarge(e.to_string()),
            HeadError::Malformed { .. } => ProxyError::BadRequest(e.to_string()),
        }
    }
}

impl ProxyError {
    /// Status code and reason phrase.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            ProxyError::BadRequest(_) => (400, "Bad Request"),
            ProxyError::HeadTooLarge(_) => (431, "Request Header Fields Too Large"),
            ProxyError::Timeout(_) => (504, "Gateway Timeout"),
            ProxyError::Unreachable(_) | ProxyError::Upstream { .. } => (502, "Bad Gateway"),
        }
    }

    /// Whether this counts as an error on the target's key (a failed call), rather than
    /// a request that never named a usable target.
    pub fn is_upstream(&self) -> bool {
        !matches!(
            self,
            ProxyError::BadRequest(_) | ProxyError::HeadTooLarge(_)
        )
    }
}

/// The chain of an error's sources on one line, for reasons and logs.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    s
}
