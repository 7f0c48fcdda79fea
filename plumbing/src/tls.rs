//! Server TLS from PEM files (rustls, ring), reloaded when the certificate file changes:
//! cert-manager and Kubernetes Secrets rotate certificates in place, and a server must
//! pick the new one up without a restart. A new certificate that does not load keeps the
//! previous one serving, with a warning.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use tokio_rustls::TlsAcceptor;

/// Files are checked for changes at most this often (a `stat` per connection otherwise).
const RECHECK: Duration = Duration::from_secs(2);

/// A TLS acceptor built from a certificate chain and key file, rebuilt when they change.
/// Cheap to clone; clones share the state.
#[derive(Clone)]
pub struct ReloadingTls {
    inner: Arc<Mutex<State>>,
}

struct State {
    cert: PathBuf,
    key: PathBuf,
    loaded: (Option<SystemTime>, Option<SystemTime>),
    checked: Instant,
    acceptor: TlsAcceptor,
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Build a rustls server configuration from PEM files; errors say which file and why.
pub fn load(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(cert)
            .with_context(|| format!("cannot open --tls-cert {}", cert.display()))?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .with_context(|| format!("invalid PEM in {}", cert.display()))?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in {}", cert.display());
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(key)
            .with_context(|| format!("cannot open --tls-key {}", key.display()))?,
    ))
    .with_context(|| format!("invalid PEM in {}", key.display()))?
    .with_context(|| format!("no private key in {}", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("the certificate and the key do not match")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

impl ReloadingTls {
    /// Load the files now; a bad file is a startup error.
    pub fn new(cert: PathBuf, key: PathBuf) -> anyhow::Result<ReloadingTls> {
        let acceptor = load(&cert, &key)?;
        Ok(ReloadingTls {
            inner: Arc::new(Mutex::new(State {
                loaded: (mtime(&cert), mtime(&key)),
                checked: Instant::now(),
                cert,
                key,
                acceptor,
            })),
        })
    }

    /// The acceptor for a new connection, reloaded first if the files changed.
    pub fn current(&self) -> TlsAcceptor {
        let mut s = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if s.checked.elapsed() >= RECHECK {
            s.checked = Instant::now();
            let now = (mtime(&s.cert), mtime(&s.key));
            if now != s.loaded {
                match load(&s.cert, &s.key) {
                    Ok(a) => {
                        tracing::info!(cert = %s.cert.display(), "Reloaded the TLS certificate.");
                        s.acceptor = a;
                        s.loaded = now;
                    }
                    Err(error) => tracing::warn!(
                        error = %format!("{error:#}"),
                        "Keeping the previous certificate; the new one does not load."
                    ),
                }
            }
        }
        s.acceptor.clone()
    }
}
