//! Who may do what: bearer tokens for ingest and for reads, checked as axum extractors
//! so no handler can forget them.
//!
//! An ingest token can be **scoped**: `TOKEN service=GLOB environment=GLOB` lets its
//! holder report only for matching services (e.g. one token per team or namespace,
//! `service=billing-*`). A batch for another service is refused with 403, so one pod
//! cannot speak for another and make a host look unused. An unscoped token speaks for any
//! service (one token for the whole fleet, as before).
//!
//! All comparisons run over every configured token in constant time.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use subtle::ConstantTimeEq;

use crate::api::{ApiError, AppState};

/// What a token may report for.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    service: Option<glob::Pattern>,
    environment: Option<glob::Pattern>,
}

impl Scope {
    /// Whether a batch from this service and environment is within the scope.
    pub fn allows(&self, service: &str, environment: &str) -> bool {
        self.service.as_ref().is_none_or(|p| p.matches(service))
            && self
                .environment
                .as_ref()
                .is_none_or(|p| p.matches(environment))
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(p) = &self.service {
            parts.push(format!("service={}", p.as_str()));
        }
        if let Some(p) = &self.environment {
            parts.push(format!("environment={}", p.as_str()));
        }
        parts.join(" ")
    }
}

#[derive(Debug, Clone)]
struct Token {
    secret: Vec<u8>,
    scope: Scope,
}

/// The tokens of one kind (ingest or read). Empty: that door is open.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    list: Vec<Token>,
}

impl Tokens {
    /// Parse token specs: `TOKEN` or `TOKEN service=GLOB environment=GLOB` (either key
    /// optional). `scoped` says whether scopes are allowed (only for ingest).
    pub fn parse<'a>(
        specs: impl IntoIterator<Item = &'a str>,
        what: &str,
        scoped: bool,
    ) -> Result<Tokens, String> {
        let mut list = Vec::new();
        for spec in specs {
            let mut words = spec.split_whitespace();
            let Some(secret) = words.next() else {
                return Err(format!(
                    "an empty {what} token was given; remove it to leave {what} open, or set a token"
                ));
            };
            let mut scope = Scope::default();
            for w in words {
                let (key, value) = w.split_once('=').ok_or_else(|| {
                    format!("{what} token scope {w:?}: expected service=GLOB or environment=GLOB")
                })?;
                if !scoped {
                    return Err(format!("{what} tokens take no scope (got {w:?})"));
                }
                let pattern = glob::Pattern::new(value)
                    .map_err(|e| format!("{what} token scope {w:?}: {e}"))?;
                match key {
                    "service" => scope.service = Some(pattern),
                    "environment" => scope.environment = Some(pattern),
                    other => {
                        return Err(format!(
                            "{what} token scope {other:?}: expected service= or environment="
                        ))
                    }
                }
            }
            list.push(Token {
                secret: secret.as_bytes().to_vec(),
                scope,
            });
        }
        Ok(Tokens { list })
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Check the request's bearer token. `Ok(None)`: no tokens configured (open).
    pub fn check(&self, headers: &HeaderMap, what: &str) -> Result<Option<Scope>, ApiError> {
        if self.list.is_empty() {
            return Ok(None);
        }
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::Unauthorized(format!(
                "missing bearer token: this collector requires a {what} token (Authorization: Bearer …)"
            )));
        };
        let presented = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .unwrap_or("");
        // Look at every token (no early exit) so timing does not tell which matched.
        let mut found: Option<&Token> = None;
        for t in &self.list {
            if bool::from(t.secret.ct_eq(presented.as_bytes())) {
                found = found.or(Some(t));
            }
        }
        match found {
            Some(t) => Ok(Some(t.scope.clone())),
            None => Err(ApiError::Forbidden(format!(
                "the {what} token is not valid"
            ))),
        }
    }
}

/// Extractor: the request carries a valid read token (or reads are open).
pub struct ReadAccess;

impl FromRequestParts<AppState> for ReadAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, ApiError> {
        s.read_tokens
            .check(&parts.headers, "read")
            .map(|_| ReadAccess)
    }
}

/// Extractor: the request carries a valid ingest token; holds what it may report for.
pub struct IngestAccess(Option<Scope>);

impl IngestAccess {
    /// Refuse a batch from a service the token may not speak for.
    pub fn allow(&self, service: &str, environment: &str) -> Result<(), ApiError> {
        match &self.0 {
            Some(scope) if !scope.allows(service, environment) => {
                Err(ApiError::Forbidden(format!(
                    "this ingest token may report only for {}, not for service {service:?} in environment {environment:?}",
                    scope.describe()
                )))
            }
            _ => Ok(()),
        }
    }
}

impl FromRequestParts<AppState> for IngestAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, ApiError> {
        match s.ingest_tokens.check(&parts.headers, "ingest") {
            Ok(scope) => Ok(IngestAccess(scope)),
            Err(e) => {
                s.metrics.reject(e.reason());
                Err(e)
            }
        }
    }
}

/// Extractor: the request carries a valid admin token (or watches are open): adding and
/// removing watches (issue 16), which make the collector send requests to the URLs they
/// name.
pub struct AdminAccess;

impl FromRequestParts<AppState> for AdminAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, ApiError> {
        s.workflow
            .admin_tokens
            .check(&parts.headers, "admin")
            .map(|_| AdminAccess)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn bearer(t: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
        );
        h
    }

    #[test]
    fn scoped_tokens_speak_only_for_their_services() {
        let t = Tokens::parse(
            ["fleet", "team-a service=billing-* environment=prod"],
            "ingest",
            true,
        )
        .unwrap();
        let fleet = t.check(&bearer("fleet"), "ingest").unwrap().unwrap();
        assert!(fleet.allows("anything", "any"));
        let a = t.check(&bearer("team-a"), "ingest").unwrap().unwrap();
        assert!(a.allows("billing-api", "prod"));
        assert!(!a.allows("billing-api", "stage"));
        assert!(!a.allows("payments", "prod"));
        assert!(matches!(
            t.check(&bearer("nope"), "ingest"),
            Err(ApiError::Forbidden(_))
        ));
        assert!(matches!(
            t.check(&HeaderMap::new(), "ingest"),
            Err(ApiError::Unauthorized(_))
        ));
    }

    #[test]
    fn bad_specs_are_refused_with_a_reason() {
        let e = Tokens::parse([""], "read", false).unwrap_err();
        assert!(e.contains("empty read token"), "{e}");
        let e = Tokens::parse(["t service=a"], "read", false).unwrap_err();
        assert!(e.contains("take no scope"), "{e}");
        let e = Tokens::parse(["t team=a"], "ingest", true).unwrap_err();
        assert!(e.contains("expected service="), "{e}");
        assert!(Tokens::parse(Vec::<&str>::new(), "read", false)
            .unwrap()
            .is_empty());
    }
}
