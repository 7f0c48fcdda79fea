//! A throwaway PKI for tests, made with the `openssl` command: a CA, and server
//! certificates it signs for loopback names.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A CA in a directory: `ca.pem` (certificate) and `ca.key`.
pub struct Ca {
    pub cert: PathBuf,
    key: PathBuf,
    dir: PathBuf,
}

/// A server certificate and its key, signed by a [`Ca`].
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("openssl is installed (scripts/test-all.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn s(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

impl Ca {
    /// A new CA named `name`, its files in `dir`.
    pub fn new(dir: &Path, name: &str) -> Ca {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            s(&key),
            "-out",
            s(&cert),
        ]);
        Ca {
            cert,
            key,
            dir: dir.to_path_buf(),
        }
    }

    /// A server certificate for `localhost` and 127.0.0.1 (plus `dns`), written to
    /// `cert`/`key` (overwritten in place, as cert-manager does).
    pub fn issue(&self, name: &str, dns: &str, cert: &Path, key: &Path) -> Leaf {
        let csr = self.dir.join(format!("{name}.csr"));
        let ext = self.dir.join(format!("{name}.ext"));
        std::fs::write(
            &ext,
            format!("subjectAltName=DNS:localhost,DNS:{dns},IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
        )
        .expect("writing the extension file");
        let new_key = self.dir.join(format!("{name}.newkey"));
        openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={dns}"),
            "-keyout",
            s(&new_key),
            "-out",
            s(&csr),
        ]);
        let new_cert = self.dir.join(format!("{name}.newcert"));
        openssl(&[
            "x509",
            "-req",
            "-in",
            s(&csr),
            "-CA",
            s(&self.cert),
            "-CAkey",
            s(&self.key),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            s(&ext),
            "-out",
            s(&new_cert),
        ]);
        // Key first, then certificate: a reader that sees the new certificate also finds
        // its key.
        std::fs::rename(&new_key, key).expect("installing the key");
        std::fs::rename(&new_cert, cert).expect("installing the certificate");
        Leaf {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        }
    }
}
