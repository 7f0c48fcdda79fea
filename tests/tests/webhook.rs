//! Issue 6: the injection webhook on real AdmissionReview v1 documents — in-process for
//! the mutation rules (the JSON patch applied with the json-patch crate), and the real
//! `whouses-webhook` binary over HTTPS.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde_json::Value;
use whouses_tests::bins::{bin_path, free_addr, secs, Proc};
use whouses_tests::wait;
use whouses_webhook::mutate::{review, InjectConfig};

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/admission")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn cfg() -> InjectConfig {
    InjectConfig {
        sidecar_image: "registry.internal/whouses:0.1.0".into(),
        collector_url: "http://whouses-collector.whouses:7070".into(),
        ..Default::default()
    }
}

/// Review a fixture; return the response and the pod after applying its patch.
fn mutate(name: &str, namespace_selected: bool) -> (Value, Value, Value) {
    let body = fixture(name);
    let resp = review(&body, &cfg(), namespace_selected).unwrap();
    let original: Value = serde_json::from_slice(&body).unwrap();
    let mut pod = original["request"]["object"].clone();
    assert_eq!(resp["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(resp["kind"], "AdmissionReview");
    assert_eq!(resp["response"]["uid"], original["request"]["uid"]);
    assert_eq!(
        resp["response"]["allowed"], true,
        "fail open: always allowed"
    );
    if let Some(p) = resp["response"]["patch"].as_str() {
        assert_eq!(resp["response"]["patchType"], "JSONPatch");
        let bytes = base64::engine::general_purpose::STANDARD.decode(p).unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        json_patch::patch(&mut pod, &patch).expect("the patch applies to the original pod");
    }
    (resp, original["request"]["object"].clone(), pod)
}

fn env_of(c: &Value, name: &str) -> Option<String> {
    c["env"].as_array()?.iter().find(|e| e["name"] == name)?["value"]
        .as_str()
        .map(String::from)
}

#[test]
fn a_labelled_pod_gets_the_sidecar_the_proxy_env_and_java_options() {
    let (_, _, pod) = mutate("labelled-pod.json", false);
    let inits = pod["spec"]["initContainers"].as_array().unwrap();
    assert_eq!(inits.len(), 2);
    let sc = &inits[0];
    assert_eq!(
        sc["name"], "whouses-sidecar",
        "first, before the app's own init containers"
    );
    assert_eq!(sc["restartPolicy"], "Always", "a native sidecar");
    assert_eq!(sc["image"], "registry.internal/whouses:0.1.0");
    assert_eq!(env_of(sc, "WHOUSES_SERVICE").as_deref(), Some("tis-sync"));
    assert_eq!(env_of(sc, "WHOUSES_ENVIRONMENT").as_deref(), Some("prod"));
    assert_eq!(
        env_of(sc, "WHOUSES_COLLECTOR_URL").as_deref(),
        Some("http://whouses-collector.whouses:7070")
    );
    assert_eq!(sc["securityContext"]["runAsNonRoot"], true);
    assert_eq!(sc["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(inits[1]["name"], "migrate");
    assert_eq!(
        pod["metadata"]["annotations"]["whouses.io/injected"],
        "true"
    );
    assert_eq!(
        pod["metadata"]["annotations"]["whouses.io/environment"],
        "prod"
    );
    for c in pod["spec"]["containers"].as_array().unwrap() {
        assert_eq!(
            env_of(c, "HTTP_PROXY").as_deref(),
            Some("http://127.0.0.1:15001"),
            "{c}"
        );
        assert_eq!(
            env_of(c, "HTTPS_PROXY").as_deref(),
            Some("http://127.0.0.1:15001")
        );
        assert_eq!(
            env_of(c, "https_proxy").as_deref(),
            Some("http://127.0.0.1:15001")
        );
        let no_proxy = env_of(c, "NO_PROXY").unwrap();
        assert!(no_proxy.contains("127.0.0.1") && no_proxy.contains("kubernetes.default.svc"));
        assert!(
            !no_proxy
                .split(',')
                .any(|e| e.ends_with("svc.cluster.local") && e.starts_with('.')),
            "in-cluster calls must stay proxied: {no_proxy}"
        );
        let java = env_of(c, "JAVA_TOOL_OPTIONS").unwrap();
        assert!(
            java.contains("-Dhttp.proxyHost=127.0.0.1") && java.contains("-Dhttps.proxyPort=15001"),
            "{java}"
        );
    }
    let app = &pod["spec"]["containers"][0];
    assert!(
        env_of(app, "JAVA_TOOL_OPTIONS")
            .unwrap()
            .starts_with("-Xmx512m -Dhttp.proxyHost"),
        "appended, not replaced"
    );
    assert_eq!(
        env_of(app, "SPRING_PROFILES_ACTIVE").as_deref(),
        Some("prod")
    );
}

#[test]
fn a_pod_without_annotations_env_or_init_containers_is_patched_correctly() {
    let (_, _, pod) = mutate("bare-pod.json", false);
    assert_eq!(pod["spec"]["initContainers"][0]["name"], "whouses-sidecar");
    assert_eq!(
        env_of(&pod["spec"]["initContainers"][0], "WHOUSES_SERVICE").as_deref(),
        Some("orders")
    );
    assert_eq!(
        env_of(&pod["spec"]["initContainers"][0], "WHOUSES_ENVIRONMENT").as_deref(),
        Some("reference"),
        "namespace by default"
    );
    assert_eq!(
        pod["metadata"]["annotations"]["whouses.io/injected"],
        "true"
    );
    assert_eq!(
        env_of(&pod["spec"]["containers"][0], "HTTP_PROXY").as_deref(),
        Some("http://127.0.0.1:15001")
    );
}

#[test]
fn unlabelled_and_already_injected_pods_are_unchanged() {
    for name in ["unlabelled-pod.json", "injected-pod.json"] {
        let (resp, original, pod) = mutate(name, false);
        assert!(resp["response"].get("patch").is_none(), "{name}: {resp}");
        assert_eq!(original, pod, "{name}");
    }
    // Injected pods stay unchanged even through the namespace webhook (idempotent).
    let (resp, _, _) = mutate("injected-pod.json", true);
    assert!(resp["response"].get("patch").is_none());
    // The namespace webhook injects pods that did not opt out.
    let (_, _, pod) = mutate("namespace-selected-pod.json", true);
    assert_eq!(pod["spec"]["initContainers"][0]["name"], "whouses-sidecar");
}

#[test]
fn malformed_reviews_get_clean_answers() {
    // Not a pod: allowed unchanged, with a warning.
    let (resp, original, pod) = mutate("not-a-pod.json", false);
    assert_eq!(original, pod);
    assert!(resp["response"]["warnings"][0]
        .as_str()
        .unwrap()
        .contains("expected a Pod"));
    // Not a review at all: an error, not a panic.
    assert!(review(b"\xff\xfe garbage", &cfg(), false).is_err());
    assert!(review(br#"{"request": {"object": {}}}"#, &cfg(), false).is_err());
    // A review whose pod has no containers: allowed, warned.
    let mut v: Value = serde_json::from_slice(&fixture("labelled-pod.json")).unwrap();
    v["request"]["object"]["spec"] = serde_json::json!({});
    let resp = review(&serde_json::to_vec(&v).unwrap(), &cfg(), false).unwrap();
    assert_eq!(resp["response"]["allowed"], true);
    assert!(resp["response"].get("patch").is_none());
}

#[test]
fn the_webhook_binary_serves_reviews_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let (ca, ca_key) = (dir.path().join("ca.crt"), dir.path().join("ca.key"));
    // A CA (as the chart's genCA or cert-manager make) and a serving certificate it signs.
    let sh = format!(
        "set -e; cd {d}; \
         openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=whouses-ca -keyout {ck} -out {c} 2>/dev/null; \
         openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=whouses-webhook.whouses.svc -keyout {k} -out leaf.csr 2>/dev/null; \
         printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n' > ext.cnf; \
         openssl x509 -req -in leaf.csr -CA {c} -CAkey {ck} -CAcreateserial -days 1 -extfile ext.cnf -out {l} 2>/dev/null",
        d = dir.path().display(), ck = ca_key.display(), c = ca.display(), k = key.display(), l = cert.display()
    );
    let ok = Command::new("sh")
        .args(["-c", &sh])
        .stderr(Stdio::inherit())
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl failed");
    let addr = free_addr("127.0.0.1");
    let mut cmd = Command::new(bin_path("whouses-webhook"));
    cmd.args([
        "--listen",
        &addr.to_string(),
        "--sidecar-image",
        "registry.internal/whouses:0.1.0",
    ])
    .arg("--tls-cert")
    .arg(&cert)
    .arg("--tls-key")
    .arg(&key);
    let _proc = Proc::spawn("webhook", cmd);
    wait::port_open(addr, secs(20));
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap())
        .build()
        .unwrap();
    let url = format!("https://127.0.0.1:{}/mutate", addr.port());
    let resp = client
        .post(&url)
        .header("content-type", "application/json")
        .body(fixture("labelled-pod.json"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().unwrap();
    assert_eq!(v["response"]["allowed"], true);
    assert_eq!(v["response"]["patchType"], "JSONPatch");
    let resp = client.post(&url).body("{ truncated").send().unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().unwrap().contains("not JSON"));
    // Still serving after bad input.
    let resp = client
        .post(format!("{url}?namespace=true"))
        .body(fixture("unlabelled-pod.json"))
        .send()
        .unwrap();
    let v: Value = resp.json().unwrap();
    assert_eq!(
        v["response"]["patchType"], "JSONPatch",
        "namespace-selected pods are injected"
    );
    // A bad certificate path is a clear startup error.
    let out = Command::new(bin_path("whouses-webhook"))
        .args([
            "--listen",
            &free_addr("127.0.0.1").to_string(),
            "--tls-cert",
            "/nonexistent.crt",
            "--tls-key",
            "/nonexistent.key",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-cert"));
}
