//! From a `postgres://` URL to a connection: the URL's libpq-style TLS options
//! (`sslmode`, `sslrootcert`) turned into a rustls configuration, the rest handed to
//! tokio-postgres; every new connection gets the collector's timeouts.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::store::{redact, StoreError};

/// Connecting (TCP and TLS and authentication) gives up after this long unless the URL
/// sets `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A statement running longer than this is cancelled by the server: nothing we send
/// should take that long, and a stuck one must not hold a connection forever.
pub(super) const STATEMENT_TIMEOUT_MS: u64 = 60_000;
/// A session left inside a transaction this long (a collector frozen mid-commit) is ended
/// by the server, releasing its locks for the other replicas.
const IDLE_IN_TRANSACTION_MS: u64 = 60_000;

/// How the URL asked for TLS (libpq's `sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TlsMode {
    /// `disable`: plain TCP.
    Disable,
    /// `prefer` (libpq's default) or `allow`: TLS when the server offers it, unverified.
    Prefer,
    /// `require`: TLS or nothing; the certificate is not checked (unless `sslrootcert` is
    /// given, which libpq treats as `verify-ca`).
    Require,
    /// `verify-ca`: TLS, the certificate chains to a trusted root.
    VerifyCa,
    /// `verify-full`: TLS, trusted chain, and the certificate names the host.
    VerifyFull,
}

/// Everything needed to open connections to one database.
#[derive(Clone)]
pub(super) struct Connector {
    config: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
    /// The URL without its password, for messages.
    shown: String,
}

impl Connector {
    /// Parse `postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?sslmode=…&sslrootcert=PATH&…]`.
    pub fn from_url(url: &str) -> Result<Connector, StoreError> {
        let shown = redact(url);
        let mut parsed = url::Url::parse(url)
            .map_err(|e| StoreError::Invalid(format!("database URL {shown:?}: {e}")))?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(StoreError::UnsupportedUrl(shown));
        }
        let mut mode = TlsMode::Prefer;
        let mut root_cert: Option<String> = None;
        let mut rest: Vec<(String, String)> = Vec::new();
        for (k, v) in parsed.query_pairs() {
            match &*k {
                "sslmode" => {
                    mode = match &*v {
                        "disable" => TlsMode::Disable,
                        "allow" | "prefer" => TlsMode::Prefer,
                        "require" => TlsMode::Require,
                        "verify-ca" => TlsMode::VerifyCa,
                        "verify-full" => TlsMode::VerifyFull,
                        other => {
                            return Err(StoreError::Invalid(format!(
                                "database URL {shown:?}: sslmode={other:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                            )))
                        }
                    }
                }
                "sslrootcert" => root_cert = Some(v.into_owned()),
                _ => rest.push((k.into_owned(), v.into_owned())),
            }
        }
        if mode == TlsMode::Require && root_cert.is_some() {
            // libpq: "if a root CA file exists, require behaves like verify-ca".
            mode = TlsMode::VerifyCa;
        }
        if rest.is_empty() {
            parsed.set_query(None);
        } else {
            parsed.query_pairs_mut().clear().extend_pairs(rest);
        }
        let mut config: tokio_postgres::Config = parsed
            .as_str()
            .parse()
            .map_err(|e| StoreError::Invalid(format!("database URL {shown:?}: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("whouses-collector");
        }
        config.ssl_mode(match mode {
            TlsMode::Disable => SslMode::Disable,
            TlsMode::Prefer => SslMode::Prefer,
            _ => SslMode::Require,
        });
        let tls = match mode {
            TlsMode::Disable => None,
            m => Some(MakeRustlsConnect::new(tls_config(m, root_cert.as_deref())?)),
        };
        Ok(Connector { config, tls, shown })
    }

    /// The URL without its password.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Open a connection; its I/O runs on a task of its own until the client is dropped.
    pub async fn connect(&self) -> Result<Client, StoreError> {
        let client = match &self.tls {
            None => {
                let (client, conn) = self.config.connect(NoTls).await.map_err(|e| {
                    StoreError::Pool(format!("connecting to {}: {}", self.shown, detail(&e)))
                })?;
                tokio::spawn(async move {
                    if let Err(error) = conn.await {
                        tracing::debug!(%error, "A database connection ended.");
                    }
                });
                client
            }
            Some(tls) => {
                let (client, conn) = self.config.connect(tls.clone()).await.map_err(|e| {
                    StoreError::Pool(format!("connecting to {}: {}", self.shown, detail(&e)))
                })?;
                tokio::spawn(async move {
                    if let Err(error) = conn.await {
                        tracing::debug!(%error, "A database connection ended.");
                    }
                });
                client
            }
        };
        client
            .batch_execute(&format!(
                "SET statement_timeout = {STATEMENT_TIMEOUT_MS};
                 SET idle_in_transaction_session_timeout = {IDLE_IN_TRANSACTION_MS};
                 SET lock_timeout = {STATEMENT_TIMEOUT_MS};"
            ))
            .await
            .map_err(StoreError::pg)?;
        Ok(client)
    }
}

/// A tokio-postgres error with its cause (its `Display` alone says only "error
/// connecting to server").
fn detail(e: &tokio_postgres::Error) -> String {
    use std::error::Error as _;
    match e.source() {
        Some(s) => format!("{e}: {s}"),
        None => e.to_string(),
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls client configuration for a TLS mode.
fn tls_config(mode: TlsMode, root_cert: Option<&str>) -> Result<ClientConfig, StoreError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Invalid(format!("TLS to the database: {e}")))?;
    let config = match mode {
        TlsMode::Disable | TlsMode::Prefer | TlsMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified(provider())))
            .with_no_client_auth(),
        TlsMode::VerifyCa | TlsMode::VerifyFull => {
            let roots = Arc::new(roots(root_cert)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| StoreError::Invalid(format!("TLS to the database: {e}")))?;
            if mode == TlsMode::VerifyFull {
                builder.with_webpki_verifier(webpki).with_no_client_auth()
            } else {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyName(webpki)))
                    .with_no_client_auth()
            }
        }
    };
    Ok(config)
}

/// Trusted roots: the PEM file `sslrootcert` names, or (none, or `system`) the Mozilla
/// roots compiled in.
fn roots(root_cert: Option<&str>) -> Result<RootCertStore, StoreError> {
    let mut store = RootCertStore::empty();
    match root_cert {
        None | Some("system") => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                StoreError::Invalid(format!("sslrootcert {path:?}: cannot read it: {e}"))
            })?;
            let mut added = 0;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.map_err(|e| {
                    StoreError::Invalid(format!("sslrootcert {path:?}: not PEM: {e}"))
                })?;
                store.add(cert).map_err(|e| {
                    StoreError::Invalid(format!("sslrootcert {path:?}: bad certificate: {e}"))
                })?;
                added += 1;
            }
            if added == 0 {
                return Err(StoreError::Invalid(format!(
                    "sslrootcert {path:?} holds no PEM certificate"
                )));
            }
        }
    }
    Ok(store)
}

/// `sslmode=require`: encrypted, the server's certificate not checked (libpq's meaning;
/// use `verify-full` against a man in the middle). The handshake signature is still
/// verified, so the server holds the key of the certificate it shows.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `sslmode=verify-ca`: the chain must lead to a trusted root; the name in the
/// certificate is not compared with the host.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_their_tls_options() {
        let c = Connector::from_url("postgres://w:secret@db.example:5433/whouses?sslmode=require")
            .unwrap();
        assert_eq!(c.config.get_ssl_mode(), SslMode::Require);
        assert!(c.tls.is_some());
        assert_eq!(c.config.get_dbname(), Some("whouses"));
        assert!(!c.shown().contains("secret"), "{}", c.shown());
        let c =
            Connector::from_url("postgresql://w@h/d?sslmode=disable&application_name=x").unwrap();
        assert_eq!(c.config.get_ssl_mode(), SslMode::Disable);
        assert!(c.tls.is_none());
        assert_eq!(c.config.get_application_name(), Some("x"));
        let c = Connector::from_url("postgres://w@h/d?sslmode=verify-full").unwrap();
        assert_eq!(c.config.get_ssl_mode(), SslMode::Require);
        let c = Connector::from_url("postgres://w@h/d").unwrap();
        assert_eq!(c.config.get_ssl_mode(), SslMode::Prefer);
        assert_eq!(c.config.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
    }

    #[test]
    fn bad_urls_say_why_without_the_password() {
        let e = Connector::from_url("postgres://w:hunter2@h/d?sslmode=maybe")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("sslmode") && !e.contains("hunter2"), "{e}");
        let e = Connector::from_url(
            "postgres://w:hunter2@h/d?sslmode=verify-ca&sslrootcert=/nonexistent.pem",
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("sslrootcert") && !e.contains("hunter2"), "{e}");
        let e = Connector::from_url("postgres://w:hunter2@h/d?bogus=1")
            .err()
            .unwrap()
            .to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
