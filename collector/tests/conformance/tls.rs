//! TLS to PostgreSQL by `sslmode` (rustls): `require` encrypts, `verify-ca` and
//! `verify-full` check the server's certificate against `sslrootcert`, and a certificate
//! from an unknown CA is refused with a reason. Runs when the test cluster speaks TLS
//! (`tests/pg/cluster.sh` sets `WHOUSES_TEST_POSTGRES_CA`).

use whouses_collector::store;
use whouses_wire::Timestamp;

use crate::backend::Backend;
use crate::common::{ingest, report, rows, HOUR};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tls_by_sslmode() {
    let Ok(ca) = std::env::var("WHOUSES_TEST_POSTGRES_CA") else {
        eprintln!("postgres_tls_by_sslmode: skipped (set WHOUSES_TEST_POSTGRES_CA)");
        return;
    };
    let Some(db) = Backend::Postgres.fresh("postgres_tls_by_sslmode").await else {
        return;
    };
    let with = |q: &str| format!("{}?{q}", db.url);
    let h = (Timestamp::now().0 - HOUR).div_euclid(HOUR) * HOUR;
    for (seq, url) in [
        with("sslmode=require"),
        with(&format!("sslmode=verify-ca&sslrootcert={ca}")),
        with(&format!("sslmode=verify-full&sslrootcert={ca}")),
    ]
    .into_iter()
    .enumerate()
    {
        let s = store::open(&url)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        ingest(
            s.as_ref(),
            report("tls", "tls-1", seq as u64 + 1, h, &[("db.internal", 1)]),
        )
        .await
        .unwrap();
        // The collector's connections to this database are encrypted.
        let client = db.client().await;
        let name = db.url.rsplit('/').next().unwrap().to_string();
        let encrypted: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
                 WHERE a.datname = $1 AND a.application_name = 'whouses-collector' AND s.ssl",
                &[&name],
            )
            .await
            .unwrap()
            .get(0);
        assert!(encrypted > 0, "{url}: no TLS connection");
        s.close().await;
    }
    let s = store::open(&db.url).await.unwrap();
    assert_eq!(rows(&s, None).await[0].counts.requests, 3);
    s.close().await;
    // The test CA is not among the built-in roots: verify-full without sslrootcert fails.
    let err = store::open(&with("sslmode=verify-full"))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("certificate") || err.contains("Issuer"),
        "{err}"
    );
    db.remove().await;
}
