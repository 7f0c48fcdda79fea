//! The collector's CA as the webhook hands it to sidecars: read from `--collector-ca` for
//! each review (a rotated CA reaches the next pod) and checked as the sidecar will check
//! it — PEM certificates that rustls accepts as trust anchors — because a sidecar given a
//! CA file it refuses does not start, and then neither does the app.

use std::path::Path;

use rustls::pki_types::CertificateDer;

/// The CA for this review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CollectorCa {
    /// No `--collector-ca`: sidecars use the built-in roots (or plain http).
    NotConfigured,
    /// A valid PEM bundle.
    Pem(String),
    /// Configured, but missing or invalid now: why.
    Unavailable(String),
}

impl CollectorCa {
    /// Read and check `path` (`None`: not configured).
    pub fn load(path: Option<&Path>) -> CollectorCa {
        let Some(path) = path else {
            return CollectorCa::NotConfigured;
        };
        match std::fs::read(path) {
            Ok(bytes) => match check_pem(&bytes) {
                Ok(pem) => CollectorCa::Pem(pem),
                Err(e) => {
                    CollectorCa::Unavailable(format!("--collector-ca {}: {e}", path.display()))
                }
            },
            Err(e) => CollectorCa::Unavailable(format!(
                "cannot read --collector-ca {}: {e}",
                path.display()
            )),
        }
    }
}

/// Largest CA bundle put into a pod annotation (annotations share a 256 KiB budget).
pub const MAX_CA_BYTES: usize = 64 * 1024;

/// The bundle as text, if it holds at least one certificate and every certificate parses
/// as a trust anchor.
pub fn check_pem(bytes: &[u8]) -> Result<String, String> {
    if bytes.len() > MAX_CA_BYTES {
        return Err(format!("larger than {MAX_CA_BYTES} bytes"));
    }
    let text =
        std::str::from_utf8(bytes).map_err(|_| "not UTF-8 text (expected PEM)".to_string())?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut text.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("invalid PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM certificate found (expected -----BEGIN CERTIFICATE-----)".into());
    }
    let mut roots = rustls::RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        roots
            .add(cert)
            .map_err(|e| format!("certificate {} is not usable as a CA: {e}", i + 1))?;
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junk_is_refused_with_a_reason() {
        assert!(check_pem(b"").unwrap_err().contains("no PEM certificate"));
        assert!(check_pem(b"hello")
            .unwrap_err()
            .contains("no PEM certificate"));
        assert!(check_pem(&[0xff, 0xfe]).unwrap_err().contains("UTF-8"));
        let bad = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(check_pem(bad).unwrap_err().contains("not usable"));
        assert!(check_pem(&vec![b'a'; MAX_CA_BYTES + 1])
            .unwrap_err()
            .contains("larger"));
        assert_eq!(CollectorCa::load(None), CollectorCa::NotConfigured);
        assert!(matches!(
            CollectorCa::load(Some(Path::new("/nonexistent/ca.crt"))),
            CollectorCa::Unavailable(e) if e.contains("/nonexistent/ca.crt")
        ));
    }
}
