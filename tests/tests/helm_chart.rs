//! Issue 6: the Helm chart lints, renders for several value sets, and every rendered
//! manifest validates against the Kubernetes schemas (kubernetes-validate, offline).
//! Tools come from `tests/helm/install-tools.sh` (run by scripts/test-all.sh).

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
fn invalid_combinations_fail_with_a_message() {
    for (sets, msg) in [
        (
            vec!["collector.replicas=2"],
            "needs externalDatabase.enabled",
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
        (vec!["webhook.tls=vault"], "tls"),
        (vec!["nosuchvalue=1"], "nosuchvalue"),
    ] {
        let mut args = vec!["template", "whouses", "helm/whouses"];
        for s in &sets {
            args.push("--set");
            args.push(s);
        }
        let out = helm(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{sets:?} should fail");
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
    ] {
        assert!(deployment.contains(want), "{want} missing:\n{deployment}");
    }
}
