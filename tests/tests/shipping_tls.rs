//! `--collector-ca`: shipping to an https collector whose certificate comes from a private
//! CA, with rustls (no OpenSSL in the sidecar). The collector's own TLS is being added in
//! parallel; until then the server here is a small Python `http.server` wrapped in `ssl`
//! that records every report, with a CA and a server certificate made by `openssl` for
//! the test. (The end-to-end test against the real collector over TLS comes with it.)

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use whouses_tests::bins::{bin_path, secs, Proc};
use whouses_tests::sidecar::{send_through, temp_dir, Sidecar};
use whouses_tests::upstream::Upstream;
use whouses_tests::wait;

const OLD: &str = "tis-reference.internal";

/// Records each POST /v1/reports as one JSON line on stdout and answers 200.
const SERVER: &str = r#"
import http.server, json, ssl, sys
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path != "/v1/reports":
            self.send_error(404)
            return
        print(json.dumps({"auth": self.headers.get("Authorization", ""),
                          "report": json.loads(body)}), flush=True)
        out = b'{"stored": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print(json.dumps({"port": server.server_address[1]}), flush=True)
server.serve_forever()
"#;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("running openssl");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

/// A CA, and a server certificate for 127.0.0.1 and localhost signed by it.
fn make_certificates(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=whouses test CA",
    ]);
    openssl(dir, &ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(dir, &csr);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

/// The TLS server: its process and port.
fn start_server(dir: &Path) -> (Proc, u16) {
    std::fs::write(dir.join("server.py"), SERVER).unwrap();
    let mut cmd = Command::new("python3");
    cmd.arg(dir.join("server.py"))
        .arg(dir.join("server.pem"))
        .arg(dir.join("server.key"));
    let mut proc = Proc::spawn("tls collector", cmd);
    let line = proc.wait_line("its port", secs(20), |l| l.starts_with("{\"port\""));
    let v: Value = serde_json::from_str(&line).unwrap();
    (proc, v["port"].as_u64().unwrap() as u16)
}

/// Requests to `host` in the recorded reports, each `(instance, seq)` once (as the
/// collector would count them); and every Authorization header seen.
fn recorded(server: &Proc, host: &str) -> (u64, Vec<String>) {
    let lines = server.stdout.lock().unwrap().clone();
    let mut batches: HashMap<(String, u64), Value> = HashMap::new();
    let mut auths = Vec::new();
    for l in lines.iter().filter(|l| l.starts_with("{\"auth\"")) {
        let v: Value = serde_json::from_str(l).unwrap();
        auths.push(v["auth"].as_str().unwrap().to_string());
        let r = v["report"].clone();
        let key = (
            r["instance"].as_str().unwrap().to_string(),
            r["seq"].as_u64().unwrap(),
        );
        batches.insert(key, r);
    }
    let requests = batches
        .values()
        .flat_map(|r| r["edges"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["host"] == host)
        .filter_map(|e| e["requests"].as_u64())
        .sum();
    (requests, auths)
}

#[test]
fn shipping_over_https_trusts_the_collector_ca_and_nothing_else() {
    let (_guard, dir) = temp_dir();
    make_certificates(&dir);
    let (server, port) = start_server(&dir);
    let url = format!("https://127.0.0.1:{port}");
    let up = Upstream::start("127.0.0.1");
    let ca = dir.join("ca.pem").display().to_string();
    let s = Sidecar::builder("secure")
        .collector(&url)
        .args(&["--flush-interval", "200ms", "--token", "s3cret"])
        .args(&["--collector-ca", &ca])
        .resolve(OLD, 80, up.addr())
        .spawn();
    assert_eq!(
        send_through(&s.proxy_url(), &format!("http://{OLD}/a"), 30, 2),
        30
    );
    wait::until_eq("the counts over TLS", secs(30), 30, || {
        recorded(&server, OLD).0
    });
    s.wait_acked(2, secs(20));
    let (requests, auths) = recorded(&server, OLD);
    assert_eq!(requests, 30);
    assert!(auths.iter().all(|a| a == "Bearer s3cret"), "{auths:?}");
    assert_eq!(s.admin_get("/shipping").0, 200);

    // Without the CA the same collector is not trusted: nothing is sent, and it shows.
    let untrusting = Sidecar::builder("untrusting")
        .collector(&url)
        .args(&["--flush-interval", "200ms"])
        .resolve(OLD, 80, up.addr())
        .spawn();
    assert_eq!(
        send_through(&untrusting.proxy_url(), &format!("http://{OLD}/b"), 3, 1),
        3
    );
    let error = wait::until("a certificate error", secs(20), || {
        untrusting.shipping()["last_error"]
            .as_str()
            .map(|e| e.to_string())
    });
    assert!(
        error.to_lowercase().contains("certificate"),
        "the error names the certificate: {error}"
    );
    wait::until("shipping unhealthy", secs(20), || {
        (untrusting.admin_get("/shipping").0 == 503).then_some(())
    });
    assert_eq!(
        recorded(&server, OLD).0,
        30,
        "nothing from the untrusting sidecar"
    );
    assert_eq!(
        untrusting.count(OLD, 80, "http", "requests"),
        3,
        "counts kept"
    );
}

#[test]
fn an_unreadable_or_invalid_ca_file_is_a_clear_startup_error() {
    let (_guard, dir) = temp_dir();
    std::fs::write(dir.join("junk.pem"), "not a certificate\n").unwrap();
    for (file, says) in [
        ("missing.pem", "cannot read --collector-ca"),
        ("junk.pem", "no PEM certificate"),
    ] {
        let mut cmd = Command::new(bin_path("whouses-sidecar"));
        cmd.args([
            "--service",
            "tls",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--collector-url",
            "https://127.0.0.1:1",
            "--collector-ca",
        ])
        .arg(dir.join(file));
        let mut p = Proc::spawn("sidecar with a bad CA", cmd);
        assert_eq!(p.wait_exit(secs(20)), Some(1), "{file}");
        // The reader threads may still be catching the last lines.
        let out = wait::until(&format!("{file}: {says:?} in the output"), secs(5), || {
            let out = p.output();
            out.contains(says).then_some(out)
        });
        assert!(!out.contains("panicked"), "{out}");
        assert!(
            !out.contains("\"listening\""),
            "it never says it is listening: {out}"
        );
    }
}
