//! What can go wrong on the request path, and the status and short reason the app gets.

use http::StatusCode;

use super::connect::ConnectError;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request cannot be proxied as sent (origin-form, bad authority, …): 400.
    #[error("{0}")]
    BadRequest(String),
    /// The upstream could not be reached (DNS, refused, unreachable): 502.
    #[error("{0}")]
    Unreachable(String),
    /// Connecting to the upstream took longer than `--connect-timeout`: 504.
    #[error("{0}")]
    Timeout(String),
    /// The upstream was reached but the exchange failed: 502.
    #[error("upstream {target}: {reason}")]
    Upstream { target: String, reason: String },
    /// The sidecar is at `--max-connections`: 503.
    #[error("{0}")]
    Overloaded(String),
}

impl From<ConnectError> for ProxyError {
    fn from(e: ConnectError) -> Self {
        match e {
            ConnectError::Timeout { .. } => ProxyError::Timeout(e.to_string()),
            _ => ProxyError::Unreachable(e.to_string()),
        }
    }
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Unreachable(_) | ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Whether this counts as an error on the target's key (a failed call), rather than
    /// a request that never named a usable target.
    pub fn is_upstream(&self) -> bool {
        !matches!(self, ProxyError::BadRequest(_))
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
