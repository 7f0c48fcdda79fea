//! PostgreSQL for end-to-end tests. Tests that need it run when
//! `WHOUSES_TEST_POSTGRES_URL` names a server they may create databases on
//! (`scripts/test-all.sh` starts a throwaway cluster and sets it) and say they skipped
//! otherwise. Databases are made with `psql`, which comes with the server package.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

static NEXT: AtomicU64 = AtomicU64::new(0);

/// The server tests may use, if any (printing that `test` is skipped otherwise).
pub fn server(test: &str) -> Option<String> {
    let url = std::env::var("WHOUSES_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty());
    if url.is_none() {
        eprintln!("{test}: skipped (no PostgreSQL: set WHOUSES_TEST_POSTGRES_URL)");
    }
    url
}

/// Run SQL on `url` with psql, failing the test on error.
pub fn psql(url: &str, sql: &str) {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .output()
        .expect("running psql");
    assert!(
        out.status.success(),
        "psql {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fresh database on the test server for one test; its URL, or `None` (skipped).
pub fn database(test: &str) -> Option<String> {
    let admin = server(test)?;
    let name = format!(
        "whouses_e2e_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    psql(&admin, &format!("CREATE DATABASE {name}"));
    let (base, _) = admin.rsplit_once('/').expect("the URL names a database");
    Some(format!("{base}/{name}"))
}

/// A whole cluster of this test's own (so the test may stop it): started by
/// `tests/pg/cluster.sh`, removed when dropped.
pub struct Cluster {
    dir: tempfile::TempDir,
    pub url: String,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("pg/cluster.sh")
}

fn run(cmd: &str, dir: &std::path::Path) -> String {
    let out = Command::new("bash")
        .arg(script())
        .arg(cmd)
        .arg(dir)
        .output()
        .expect("running tests/pg/cluster.sh");
    assert!(
        out.status.success(),
        "cluster.sh {cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Cluster {
    /// Start one, or `None` when PostgreSQL is not set up here (skipped).
    pub fn start(test: &str) -> Option<Cluster> {
        server(test)?;
        let dir = tempfile::Builder::new()
            .prefix("whouses-pg-")
            .tempdir()
            .expect("tempdir");
        // The server runs as the `postgres` user: it must reach its directory inside.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod the cluster's directory");
        let data = dir.path().join("c");
        let out = run("start", &data);
        let url = out
            .lines()
            .find_map(|l| l.strip_prefix("export WHOUSES_TEST_POSTGRES_URL="))
            .expect("cluster.sh prints the URL")
            .to_string();
        Some(Cluster { dir, url })
    }

    /// Stop the server, keeping its data.
    pub fn pause(&self) {
        run("pause", &self.dir.path().join("c"));
    }

    /// Start it again, on the same port.
    pub fn resume(&self) {
        run("resume", &self.dir.path().join("c"));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.dir.path().join("c"))
            .output();
    }
}
