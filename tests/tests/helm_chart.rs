//! The Helm chart lints, renders for several value sets, and every rendered manifest
//! validates against the Kubernetes schemas (kubernetes-validate, offline). The rendered
//! documents are also read as data (YAML → JSON with the tools' Python) and checked
//! field by field; the certificate, token file and webhook settings the chart generates
//! are handed to the real collector and webhook binaries, which must accept them.
//! Tools come from `tests/helm/install-tools.sh` (run by scripts/test-all.sh).

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use base64::Engine as _;
use serde_json::{json, Value};
use whouses_plumbing::process::parse_listening;
use whouses_tests::bins::{bin_path, secs, Proc};
use whouses_tests::collector::Collector;
use whouses_tests::reports::{edge, now, report, MIN};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tool(rel: &str) -> PathBuf {
    let p = root().join(rel);
    assert!(
        p.exists(),
        "{} is missing: run tests/helm/install-tools.sh (scripts/test-all.sh does)",
        p.display()
    );
    p
}

fn helm(args: &[&str]) -> Output {
    Command::new(tool("target/tools/helm"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap()
}

/// Render with `--set` values, check that it validates, and return the YAML.
fn render(name: &str, sets: &[&str]) -> String {
    let mut args = vec![
        "template",
        "whouses",
        "helm/whouses",
        "--namespace",
        "whouses",
    ];
    for s in sets {
        args.push("--set");
        args.push(s);
    }
    let out = helm(&args);
    assert!(
        out.status.success(),
        "{name}: helm template failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).unwrap();
    validate(name, &yaml);
    yaml
}

fn validate(name: &str, yaml: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file: &Path = &dir.path().join(format!("{name}.yaml"));
    std::fs::write(file, yaml).unwrap();
    let out = Command::new(tool("target/tools/venv/bin/kubernetes-validate"))
        .args(["--strict", "-k", "1.31.0"])
        .arg(file)
        .output()
        .unwrap();
    let report =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{name}: manifests do not validate:\n{report}"
    );
    assert!(!report.contains("ERROR"), "{name}:\n{report}");
}

/// The rendered documents as JSON values (PyYAML from the tools' venv does the parsing).
fn docs(yaml: &str) -> Vec<Value> {
    let mut child = Command::new(tool("target/tools/venv/bin/python"))
        .args([
            "-c",
            "import sys, json, yaml; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d]))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the render is not YAML");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The document of this kind and name (panics with the list when absent).
fn doc<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| {
            let all: Vec<String> = docs
                .iter()
                .map(|d| format!("{}/{}", d["kind"], d["metadata"]["name"]))
                .collect();
            panic!("no {kind}/{name} in {all:?}")
        })
}

fn has(docs: &[Value], kind: &str, name: &str) -> bool {
    docs.iter()
        .any(|d| d["kind"] == kind && d["metadata"]["name"] == name)
}

/// The first container of a Deployment.
fn container<'a>(docs: &'a [Value], deployment: &str) -> &'a Value {
    &doc(docs, "Deployment", deployment)["spec"]["template"]["spec"]["containers"][0]
}

fn env<'a>(c: &'a Value, name: &str) -> Option<&'a Value> {
    c["env"].as_array()?.iter().find(|e| e["name"] == name)
}

fn env_value(c: &Value, name: &str) -> Option<String> {
    env(c, name)?["value"].as_str().map(String::from)
}

/// A key of a rendered Secret, decoded.
fn secret(docs: &[Value], name: &str, key: &str) -> String {
    let b64 = doc(docs, "Secret", name)["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("Secret {name} has no {key}"));
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
    .unwrap()
}

/// `helm template` expected to fail; returns its error output.
fn render_err(sets: &[&str]) -> String {
    let mut args = vec!["template", "whouses", "helm/whouses"];
    for s in sets {
        args.push("--set");
        args.push(s);
    }
    let out = helm(&args);
    assert!(!out.status.success(), "{sets:?} should fail");
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn kinds(yaml: &str) -> Vec<String> {
    yaml.lines()
        .filter_map(|l| l.strip_prefix("kind: "))
        .map(|k| k.trim().to_string())
        .collect()
}

#[test]
fn the_chart_lints() {
    let out = helm(&["lint", "--strict", "helm/whouses"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn defaults_render_a_collector_with_storage_tokens_probes_and_the_webhook() {
    let y = render("defaults", &[]);
    let k = kinds(&y);
    for want in [
        "ServiceAccount",
        "Secret",
        "PersistentVolumeClaim",
        "Deployment",
        "Service",
        "MutatingWebhookConfiguration",
    ] {
        assert!(k.iter().any(|x| x == want), "{want} missing from {k:?}");
    }
    assert!(y.contains("path: /healthz") && y.contains("path: /readyz"));
    assert!(
        y.contains("readOnlyRootFilesystem: true") && y.contains("allowPrivilegeEscalation: false")
    );
    assert!(y.contains("runAsNonRoot: true") && y.contains("- ALL"));
    assert!(y.contains("failurePolicy: Ignore"));
    assert!(y.contains("value: \"sqlite:///data/whouses.db\""));
    assert!(
        y.contains("caBundle: "),
        "helm-generated TLS fills the CA bundle"
    );
    // Generated tokens are real.
    assert!(y.contains("ingest-token: ") && y.contains("read-token: "));
}

#[test]
fn external_database_webhook_off_ingress_and_cert_manager_render_and_validate() {
    let y = render(
        "external-db",
        &[
            "externalDatabase.enabled=true",
            "externalDatabase.existingSecret=whouses-db",
            "collector.replicas=2",
        ],
    );
    assert!(!kinds(&y).contains(&"PersistentVolumeClaim".to_string()));
    assert!(y.contains("name: whouses-db") && y.contains("key: url"));
    assert!(!y.contains("type: Recreate"));

    let y = render("webhook-off", &["webhook.enabled=false"]);
    assert!(!kinds(&y).contains(&"MutatingWebhookConfiguration".to_string()));
    assert!(!y.contains("whouses-webhook"));

    let y = render(
        "ingress",
        &[
            "ingress.enabled=true",
            "ingress.host=whouses.example.com",
            "ingress.tlsSecret=whouses-tls",
        ],
    );
    assert!(kinds(&y).contains(&"Ingress".to_string()));
    assert!(y.contains("whouses.example.com"));

    let y = render(
        "cert-manager",
        &[
            "webhook.tls=cert-manager",
            "serviceMonitor.enabled=true",
            "collector.targets=[targets.ref]\nhosts = [\"a.internal\"]",
        ],
    );
    let k = kinds(&y);
    for want in ["Certificate", "Issuer", "ServiceMonitor", "ConfigMap"] {
        assert!(k.iter().any(|x| x == want), "{want} missing from {k:?}");
    }
    assert!(y.contains("cert-manager.io/inject-ca-from: whouses/whouses-webhook"));
}

#[test]
fn the_capture_mode_reaches_the_webhook() {
    let d = docs(&render("defaults", &[]));
    let webhook = container(&d, "whouses-webhook");
    assert_eq!(
        env_value(webhook, "WHOUSES_DEFAULT_MODE").as_deref(),
        Some("explicit")
    );
    let y = render("transparent", &["sidecar.mode=transparent"]);
    validate("transparent", &y);
    let d = docs(&y);
    let webhook = container(&d, "whouses-webhook");
    assert_eq!(
        env_value(webhook, "WHOUSES_DEFAULT_MODE").as_deref(),
        Some("transparent")
    );
}

#[test]
fn invalid_combinations_fail_with_a_message() {
    for (sets, msg) in [
        (
            vec!["collector.replicas=2"],
            "collector.replicas=2 needs externalDatabase.enabled (PostgreSQL)",
        ),
        (vec!["collector.tls.source=vault"], "source"),
        (
            vec!["collector.tls.certManagerIssuerKind=Vault"],
            "certManagerIssuerKind",
        ),
        (
            vec!["tokens.fleetIngest=false"],
            "tokens.fleetIngest=false needs tokens.namespaces",
        ),
        (
            vec!["tokens.namespaces.payments.environment=prod"],
            "service",
        ),
        (
            vec!["tokens.namespaces.Payments_NS.service=x"],
            "Payments_NS",
        ),
        (vec!["tokens.namespaces.payments.service=a b"], "service"),
        (vec!["tokens.ingest=a\\,b"], "ingest"),
        (
            vec!["webhook.defaultEnvironment=pre prod"],
            "defaultEnvironment",
        ),
        (
            vec!["externalDatabase.enabled=true"],
            "needs externalDatabase.existingSecret",
        ),
        (
            vec!["ingress.enabled=true"],
            "ingress.enabled needs ingress.host",
        ),
        (vec!["collector.logFormat=xml"], "logFormat"),
        (vec!["sidecar.mode=sniff"], "mode"),
        (vec!["webhook.tls=vault"], "tls"),
        (vec!["nosuchvalue=1"], "nosuchvalue"),
    ] {
        let err = render_err(&sets);
        assert!(err.contains(msg), "{sets:?}: {err}");
    }
}

/// The named template, as a team that adds the sidecar by hand uses it: their chart lists
/// whouses as a dependency and includes `whouses.sidecar` in its own Deployment. The
/// render must validate and carry the sidecar with the subchart's image and collector.
#[test]
fn the_named_sidecar_template_renders_in_a_parent_chart() {
    let dir = tempfile::tempdir().unwrap();
    let chart = dir.path().join("billing");
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    let whouses = root().join("helm/whouses").canonicalize().unwrap();
    std::fs::write(
        chart.join("Chart.yaml"),
        format!(
            "apiVersion: v2\nname: billing\nversion: 1.0.0\ndependencies:\n  - name: whouses\n    version: 0.1.0\n    repository: file://{}\n",
            whouses.display()
        ),
    )
    .unwrap();
    std::fs::write(
        chart.join("templates/deployment.yaml"),
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: billing
spec:
  selector:
    matchLabels: {app: billing}
  template:
    metadata:
      labels: {app: billing}
    spec:
      initContainers:
        {{- include "whouses.sidecar" (dict "root" $ "service" "billing" "environment" "prod") | nindent 8 }}
      containers:
        - name: app
          image: example/billing:1
          env:
            - {name: HTTP_PROXY, value: "http://127.0.0.1:15001"}
            - {name: HTTPS_PROXY, value: "http://127.0.0.1:15001"}
      volumes:
        - name: scratch
          emptyDir: {}
        {{- include "whouses.sidecarVolumes" (dict "root" $) | nindent 8 }}
"#,
    )
    .unwrap();
    let chart_arg = chart.to_str().unwrap();
    let out = helm(&["dependency", "update", chart_arg]);
    assert!(
        out.status.success(),
        "helm dependency update: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = helm(&[
        "template",
        "shop",
        chart_arg,
        "--namespace",
        "payments",
        "--set",
        "whouses.sidecar.flushInterval=15s",
    ]);
    assert!(
        out.status.success(),
        "helm template of a parent chart: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).unwrap();
    validate("parent-chart", &yaml);
    let deployment = yaml
        .split("\n---")
        .find(|doc| doc.contains("name: billing") && doc.contains("kind: Deployment"))
        .unwrap_or_else(|| panic!("no billing Deployment in:\n{yaml}"));
    for want in [
        "- name: whouses-sidecar",
        "image: ghcr.io/whouses/whouses:0.1.0",
        "restartPolicy: Always",
        "value: \"billing\"",
        "value: \"prod\"",
        "value: \"http://shop-whouses-collector.payments.svc:7070\"",
        "value: \"15s\"",
        // Admin (stats, metrics) on loopback; the kubelet probes its own port.
        r#"args: ["--listen", "127.0.0.1:15001", "--admin-listen", "127.0.0.1:15020", "--probe-listen", "0.0.0.0:15021"]"#,
        "httpGet: {path: /readyz, port: 15021}",
        "containerPort: 15021",
    ] {
        assert!(deployment.contains(want), "{want} missing:\n{deployment}");
    }
    assert!(!deployment.contains("0.0.0.0:15020") && !deployment.contains("WHOUSES_COLLECTOR_CA"));

    // With collector TLS: https, the CA from the collector's Secret (its ca.crt only).
    let out = helm(&[
        "template",
        "shop",
        chart_arg,
        "--namespace",
        "payments",
        "--set",
        "whouses.collector.tls.enabled=true",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).unwrap();
    validate("parent-chart-tls", &yaml);
    let all = docs(&yaml);
    let pod = &doc(&all, "Deployment", "billing")["spec"]["template"]["spec"];
    let sc = &pod["initContainers"][0];
    assert_eq!(
        env_value(sc, "WHOUSES_COLLECTOR_URL").as_deref(),
        Some("https://shop-whouses-collector.payments.svc:7070")
    );
    assert_eq!(
        env_value(sc, "WHOUSES_COLLECTOR_CA").as_deref(),
        Some("/etc/whouses/collector-ca/ca.crt")
    );
    assert_eq!(sc["volumeMounts"][0]["name"], "whouses-collector-ca");
    assert_eq!(
        pod["volumes"],
        json!([
            {"name": "scratch", "emptyDir": {}},
            {"name": "whouses-collector-ca", "secret": {
                "secretName": "shop-whouses-collector-tls",
                "items": [{"key": "ca.crt", "path": "ca.crt"}]}}
        ])
    );
    assert!(has(&all, "Secret", "shop-whouses-collector-tls"));
}

/// Collector TLS off (the default): plain http everywhere, nothing TLS-shaped rendered.
#[test]
fn without_collector_tls_everything_stays_plain_http() {
    let all = docs(&render("tls-off", &[]));
    let c = container(&all, "whouses-collector");
    assert!(env(c, "WHOUSES_TLS_CERT").is_none());
    assert_eq!(c["readinessProbe"]["httpGet"]["scheme"], "HTTP");
    assert_eq!(c["ports"][0]["name"], "http");
    assert!(!has(&all, "Secret", "whouses-collector-tls"));
    let w = container(&all, "whouses-webhook");
    assert_eq!(
        env_value(w, "WHOUSES_COLLECTOR_URL").as_deref(),
        Some("http://whouses-collector.whouses.svc:7070")
    );
    assert!(env(w, "WHOUSES_COLLECTOR_CA").is_none());
    assert!(!all.iter().any(|d| d["kind"] == "PodDisruptionBudget"));
}

/// Collector TLS generated by the chart: the collector serves its Secret over HTTPS (the
/// probes too), sidecars are pointed at https:// and the webhook gets only the CA — and
/// the generated certificate, key and CA work: the real collector serves them, a client
/// trusting the CA connects, and the webhook would accept the CA for sidecars.
#[test]
fn collector_tls_generated_by_the_chart_is_served_by_the_real_collector() {
    let all = docs(&render(
        "tls-helm",
        &[
            "collector.tls.enabled=true",
            "collector.tls.extraDnsNames={whouses.example.com}",
        ],
    ));
    let c = container(&all, "whouses-collector");
    assert_eq!(
        env_value(c, "WHOUSES_TLS_CERT").as_deref(),
        Some("/etc/whouses/tls/tls.crt")
    );
    assert_eq!(
        env_value(c, "WHOUSES_TLS_KEY").as_deref(),
        Some("/etc/whouses/tls/tls.key")
    );
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        assert_eq!(c[probe]["httpGet"]["scheme"], "HTTPS", "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], "https", "{probe}");
    }
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    let svc = doc(&all, "Service", "whouses-collector");
    assert_eq!(svc["spec"]["ports"][0]["name"], "https");
    assert_eq!(svc["spec"]["ports"][0]["appProtocol"], "https");
    let w = container(&all, "whouses-webhook");
    assert_eq!(
        env_value(w, "WHOUSES_COLLECTOR_URL").as_deref(),
        Some("https://whouses-collector.whouses.svc:7070")
    );
    assert_eq!(
        env_value(w, "WHOUSES_COLLECTOR_CA").as_deref(),
        Some("/etc/whouses/collector-ca/ca.crt")
    );
    let volumes =
        &doc(&all, "Deployment", "whouses-webhook")["spec"]["template"]["spec"]["volumes"];
    let ca_volume = volumes
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "collector-ca")
        .unwrap();
    assert_eq!(
        ca_volume["secret"],
        json!({"secretName": "whouses-collector-tls", "optional": true,
               "items": [{"key": "ca.crt", "path": "ca.crt"}]}),
        "the webhook sees the CA, never the collector's key"
    );

    // The generated files, used for real.
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, secret(&all, "whouses-collector-tls", name)).unwrap();
        p
    };
    let (crt, key, ca) = (write("tls.crt"), write("tls.key"), write("ca.crt"));
    let names = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(&crt)
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&names.stdout);
    for want in [
        "DNS:whouses-collector.whouses.svc",
        "DNS:whouses-collector.whouses.svc.cluster.local",
        "DNS:localhost",
        "DNS:whouses.example.com",
        "IP Address:127.0.0.1",
    ] {
        assert!(names.contains(want), "{want} missing: {names}");
    }
    assert!(
        whouses_webhook::ca::check_pem(&std::fs::read(&ca).unwrap()).is_ok(),
        "the webhook accepts the chart's CA for sidecars"
    );
    let collector = Collector::builder().tls(&crt, &key, &ca).spawn();
    assert!(collector.url().starts_with("https://"));
    assert_eq!(collector.get("/readyz").status(), 200);
}

/// cert-manager: a CA of the chart's own (self-signed root → CA Certificate → CA Issuer)
/// signs the serving certificate, so renewals keep the CA the sidecars trust; a named
/// issuer replaces all three.
#[test]
fn collector_tls_from_cert_manager_keeps_one_ca_across_renewals() {
    let all = docs(&render(
        "tls-cert-manager",
        &[
            "collector.tls.enabled=true",
            "collector.tls.source=cert-manager",
        ],
    ));
    assert!(doc(&all, "Issuer", "whouses-collector-selfsigned")["spec"]["selfSigned"].is_object());
    let ca = doc(&all, "Certificate", "whouses-collector-ca");
    assert_eq!(ca["spec"]["isCA"], true);
    assert_eq!(
        ca["spec"]["issuerRef"]["name"],
        "whouses-collector-selfsigned"
    );
    assert_eq!(
        doc(&all, "Issuer", "whouses-collector-ca")["spec"]["ca"]["secretName"],
        "whouses-collector-ca"
    );
    let serving = doc(&all, "Certificate", "whouses-collector");
    assert_eq!(serving["spec"]["secretName"], "whouses-collector-tls");
    assert_eq!(
        serving["spec"]["issuerRef"],
        json!({"kind": "Issuer", "name": "whouses-collector-ca"})
    );
    assert!(serving["spec"]["dnsNames"]
        .as_array()
        .unwrap()
        .contains(&json!("whouses-collector.whouses.svc")));
    assert!(
        !has(&all, "Secret", "whouses-collector-tls"),
        "cert-manager writes it"
    );

    let all = docs(&render(
        "tls-cluster-issuer",
        &[
            "collector.tls.enabled=true",
            "collector.tls.source=cert-manager",
            "collector.tls.certManagerIssuer=corp-ca",
            "collector.tls.certManagerIssuerKind=ClusterIssuer",
        ],
    ));
    assert_eq!(
        doc(&all, "Certificate", "whouses-collector")["spec"]["issuerRef"],
        json!({"kind": "ClusterIssuer", "name": "corp-ca"})
    );
    assert!(!has(&all, "Issuer", "whouses-collector-ca"));
    assert!(!has(&all, "Certificate", "whouses-collector-ca"));
}

/// Issue 15: several collector replicas only on PostgreSQL, with a PodDisruptionBudget;
/// one replica (any database) has none; SQLite with more than one fails the render.
#[test]
fn replicas_need_the_external_database_and_get_a_disruption_budget() {
    let all = docs(&render(
        "replicas-postgres",
        &[
            "externalDatabase.enabled=true",
            "externalDatabase.existingSecret=whouses-db",
            "collector.replicas=3",
            "webhook.replicas=2",
        ],
    ));
    let d = doc(&all, "Deployment", "whouses-collector");
    assert_eq!(d["spec"]["replicas"], 3);
    assert!(d["spec"].get("strategy").is_none(), "rolling, not Recreate");
    let pdb = doc(&all, "PodDisruptionBudget", "whouses-collector");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"], d["spec"]["selector"]["matchLabels"],
        "the budget covers exactly the collector's pods"
    );
    let wpdb = doc(&all, "PodDisruptionBudget", "whouses-webhook");
    assert_eq!(
        wpdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"],
        "webhook"
    );
    assert!(!all.iter().any(|d| d["kind"] == "PersistentVolumeClaim"));
    assert_eq!(
        env(container(&all, "whouses-collector"), "WHOUSES_DB").unwrap()["valueFrom"]
            ["secretKeyRef"],
        json!({"name": "whouses-db", "key": "url"})
    );

    let all = docs(&render(
        "one-replica-postgres",
        &[
            "externalDatabase.enabled=true",
            "externalDatabase.existingSecret=whouses-db",
        ],
    ));
    assert!(!all.iter().any(|d| d["kind"] == "PodDisruptionBudget"));

    let err = render_err(&["collector.replicas=2"]);
    assert!(err.contains("SQLite has a single writer"), "{err}");
}

/// Scoped ingest tokens: one Secret per namespace (where its sidecars read it), the same
/// tokens with their scopes in the collector's token file, the fleet-wide token beside
/// them unless turned off — and the real collector takes that file and enforces it.
#[test]
fn scoped_tokens_per_namespace_are_rendered_and_enforced_by_the_collector() {
    let all = docs(&render(
        "scoped-tokens",
        &[
            "tokens.namespaces.payments.service=billing-*",
            "tokens.namespaces.reference.service=tis-*",
            "tokens.namespaces.reference.environment=prod",
            "webhook.tokenSecretName=team-ingest",
        ],
    ));
    let ns_secret = |ns: &str| {
        all.iter()
            .find(|d| {
                d["kind"] == "Secret"
                    && d["metadata"]["name"] == "team-ingest"
                    && d["metadata"]["namespace"] == ns
            })
            .unwrap_or_else(|| panic!("no team-ingest Secret in {ns}"))
    };
    let token = |ns: &str| {
        let b64 = ns_secret(ns)["data"]["ingest-token"].as_str().unwrap();
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
        )
        .unwrap()
    };
    let (payments, reference) = (token("payments"), token("reference"));
    assert_eq!(payments.len(), 40);
    assert_ne!(payments, reference);
    let file = secret(&all, "whouses-ingest-tokens", "ingest-tokens");
    let lines: Vec<&str> = file.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        lines,
        [
            format!("{payments} service=billing-*"),
            format!("{reference} service=tis-* environment=prod"),
        ]
    );
    let c = container(&all, "whouses-collector");
    assert_eq!(
        env_value(c, "WHOUSES_INGEST_TOKEN_FILE").as_deref(),
        Some("/etc/whouses/ingest-tokens/ingest-tokens")
    );
    assert_eq!(
        env(c, "WHOUSES_INGEST_TOKEN").unwrap()["valueFrom"]["secretKeyRef"],
        json!({"name": "whouses-tokens", "key": "ingest-token"}),
        "the fleet-wide token is still accepted"
    );
    assert_eq!(
        env(container(&all, "whouses-webhook"), "WHOUSES_TOKEN_SECRET").unwrap()["value"],
        "team-ingest",
        "injected sidecars read the per-namespace Secret"
    );
    let fleet = secret(&all, "whouses-tokens", "ingest-token");

    // The real collector with exactly these settings.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ingest-tokens");
    std::fs::write(&path, &file).unwrap();
    let collector = Collector::builder()
        .args(&["--ingest-token-file", path.to_str().unwrap()])
        .ingest_token(&fleet)
        .spawn();
    let t = now();
    let batch = |service: &str, instance: &str| {
        report(
            service,
            instance,
            1,
            t - 10_000,
            t,
            vec![edge("tis-reference.internal", 443, 3, t - MIN)],
        )
    };
    assert_eq!(
        collector
            .post_report(&batch("billing-api", "b-1"), Some(&payments))
            .0,
        200
    );
    let (status, body) = collector.post_report(&batch("tis-sync", "t-1"), Some(&payments));
    assert_eq!(
        status, 403,
        "payments' token cannot speak for tis-sync: {body}"
    );
    assert_eq!(
        collector
            .post_report(&batch("tis-sync", "t-1"), Some(&reference))
            .0,
        200
    );
    assert_eq!(
        collector
            .post_report(&batch("orders", "o-1"), Some(&fleet))
            .0,
        200
    );

    // Fleet token off: only the scoped file.
    let all = docs(&render(
        "scoped-only",
        &[
            "tokens.namespaces.payments.service=billing-*",
            "tokens.fleetIngest=false",
        ],
    ));
    assert!(env(container(&all, "whouses-collector"), "WHOUSES_INGEST_TOKEN").is_none());
    // No namespaces: the fleet token file as before.
    let all = docs(&render("fleet-only", &[]));
    assert_eq!(
        env_value(
            container(&all, "whouses-collector"),
            "WHOUSES_INGEST_TOKEN_FILE"
        )
        .as_deref(),
        Some("/etc/whouses/tokens/ingest-token")
    );
    assert!(!has(&all, "Secret", "whouses-ingest-tokens"));
}

/// The webhook as the chart configures it — its env, its rendered certificate, the
/// collector CA — is the real `whouses-webhook`: it starts (its flags pass its own
/// checks), serves HTTPS with the chart's certificate for the names the
/// MutatingWebhookConfiguration uses, and injects sidecars pointed at the chart's
/// collector with the chart's CA.
#[test]
fn the_rendered_webhook_settings_start_the_real_webhook() {
    let all = docs(&render(
        "webhook-real",
        &[
            "collector.tls.enabled=true",
            "webhook.defaultEnvironment=prod",
            "webhook.noProxy=metadata.internal",
        ],
    ));
    let dir = tempfile::tempdir().unwrap();
    let write = |secret_name: &str, key: &str| {
        let p = dir.path().join(format!("{secret_name}-{key}"));
        std::fs::write(&p, secret(&all, secret_name, key)).unwrap();
        p
    };
    let w = container(&all, "whouses-webhook");
    let mut cmd = Command::new(bin_path("whouses-webhook"));
    cmd.env_clear().env("RUST_LOG", "info");
    for e in w["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        let value = match name {
            "WHOUSES_LISTEN" => "127.0.0.1:0".to_string(),
            "WHOUSES_TLS_CERT" => write("whouses-webhook-tls", "tls.crt")
                .display()
                .to_string(),
            "WHOUSES_TLS_KEY" => write("whouses-webhook-tls", "tls.key")
                .display()
                .to_string(),
            "WHOUSES_COLLECTOR_CA" => write("whouses-collector-tls", "ca.crt")
                .display()
                .to_string(),
            _ => e["value"]
                .as_str()
                .unwrap_or_else(|| panic!("{e}"))
                .to_string(),
        };
        cmd.env(name, value);
    }
    let mut proc = Proc::spawn("webhook", cmd);
    let line = proc.wait_line("its listening line", secs(30), |l| {
        parse_listening(l).is_some()
    });
    let listening = parse_listening(&line).unwrap();
    let port = listening.addr("webhook").unwrap().port();

    // The API server calls https://whouses-webhook.whouses.svc:443/…, trusting caBundle.
    let mwc = doc(&all, "MutatingWebhookConfiguration", "whouses-webhook");
    let ca_bundle = base64::engine::general_purpose::STANDARD
        .decode(
            mwc["webhooks"][0]["clientConfig"]["caBundle"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    assert_eq!(
        mwc["webhooks"][1]["clientConfig"]["service"]["path"],
        "/mutate/namespace"
    );
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca_bundle).unwrap())
        .resolve(
            "whouses-webhook.whouses.svc",
            std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        )
        .build()
        .unwrap();
    let body = std::fs::read(root().join("tests/fixtures/admission/bare-pod.json")).unwrap();
    let resp: Value = client
        .post(format!("https://whouses-webhook.whouses.svc:{port}/mutate"))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .unwrap()
        .json()
        .unwrap();
    let patch = base64::engine::general_purpose::STANDARD
        .decode(
            resp["response"]["patch"]
                .as_str()
                .unwrap_or_else(|| panic!("{resp}")),
        )
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    let mut pod = serde_json::from_slice::<Value>(&body).unwrap()["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch).unwrap();
    let sc = &pod["spec"]["initContainers"][0];
    assert_eq!(sc["image"], "ghcr.io/whouses/whouses:0.1.0");
    assert_eq!(
        env_value(sc, "WHOUSES_COLLECTOR_URL").as_deref(),
        Some("https://whouses-collector.whouses.svc:7070")
    );
    assert_eq!(
        env_value(sc, "WHOUSES_ENVIRONMENT").as_deref(),
        Some("prod")
    );
    assert_eq!(
        pod["metadata"]["annotations"]["whouses.io/collector-ca"].as_str(),
        Some(secret(&all, "whouses-collector-tls", "ca.crt").as_str())
    );
    assert!(env_value(&pod["spec"]["containers"][0], "NO_PROXY")
        .unwrap()
        .ends_with(",metadata.internal"));
    drop(proc);
}
