//! The injection webhook on real AdmissionReview v1 documents — in-process for the
//! mutation rules (each patch applied to the original pod with the json-patch crate, as
//! the API server does), the injected sidecar started as the real `whouses-sidecar` with
//! the args and env of the patch, and the real `whouses-webhook` binary over HTTPS: both
//! paths the chart registers, `/metrics`, and certificate rotation under a running server.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use whouses_plumbing::process::{parse_listening, Listening};
use whouses_tests::bins::{bin_path, secs, Proc};
use whouses_tests::certs::Ca;
use whouses_tests::wait;
use whouses_webhook::ca::CollectorCa;
use whouses_webhook::config::InjectConfig;
use whouses_webhook::mutate::{review, Outcome, SkipReason};

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

/// What one review did: the response, the original pod, the pod after the patch.
struct Mutated {
    resp: Value,
    outcome: Outcome,
    original: Value,
    pod: Value,
}

impl Mutated {
    fn sidecar(&self) -> &Value {
        let inits = self.pod["spec"]["initContainers"].as_array().unwrap();
        inits
            .iter()
            .find(|c| c["name"] == "whouses-sidecar")
            .unwrap_or_else(|| panic!("no sidecar in {}", self.pod))
    }

    fn has_sidecar(&self) -> bool {
        self.pod["spec"]["initContainers"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["name"] == "whouses-sidecar"))
    }

    fn container(&self, name: &str) -> &Value {
        self.pod["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap()
    }

    fn warnings(&self) -> Vec<String> {
        self.resp["response"]["warnings"]
            .as_array()
            .map(|w| w.iter().map(|s| s.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    }
}

/// Review a document with `cfg` and `ca`; check the envelope; apply the patch.
fn mutate_doc(body: &[u8], cfg: &InjectConfig, ca: &CollectorCa, ns: bool) -> Mutated {
    let answer = review(body, cfg, ca, ns).unwrap();
    let resp = answer.review;
    let original: Value = serde_json::from_slice(body).unwrap();
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
    Mutated {
        resp,
        outcome: answer.outcome,
        original: original["request"]["object"].clone(),
        pod,
    }
}

fn mutate(name: &str, namespace_selected: bool) -> Mutated {
    mutate_doc(
        &fixture(name),
        &cfg(),
        &CollectorCa::NotConfigured,
        namespace_selected,
    )
}

fn env_of(c: &Value, name: &str) -> Option<String> {
    c["env"].as_array()?.iter().find(|e| e["name"] == name)?["value"]
        .as_str()
        .map(String::from)
}

fn env_entry<'a>(c: &'a Value, name: &str) -> Option<&'a Value> {
    c["env"].as_array()?.iter().find(|e| e["name"] == name)
}

#[test]
fn a_labelled_pod_gets_the_sidecar_the_proxy_env_and_java_options() {
    let m = mutate("labelled-pod.json", false);
    let inits = m.pod["spec"]["initContainers"].as_array().unwrap();
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
    assert_eq!(
        env_entry(sc, "WHOUSES_INSTANCE").unwrap()["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(sc["securityContext"]["runAsNonRoot"], true);
    assert_eq!(sc["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(inits[1]["name"], "migrate");
    assert_eq!(
        m.pod["metadata"]["annotations"]["whouses.io/injected"],
        "true"
    );
    assert_eq!(
        m.pod["metadata"]["annotations"]["whouses.io/environment"],
        "prod"
    );
    assert!(m.pod["metadata"]["annotations"]
        .get("whouses.io/warnings")
        .is_none());
    assert!(matches!(m.outcome, Outcome::Injected { ref warnings, .. } if warnings.is_empty()));
    for c in m.pod["spec"]["containers"].as_array().unwrap() {
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
        assert_eq!(env_of(c, "no_proxy"), Some(no_proxy.clone()));
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
    let app = m.container("app");
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

/// Issue 12 item 9: the admin port (stats, metrics, no auth) stays on loopback; the
/// kubelet probes a separate port that serves only /healthz and /readyz.
#[test]
fn the_admin_port_is_loopback_and_probes_have_their_own_port() {
    let m = mutate("labelled-pod.json", false);
    let sc = m.sidecar();
    let args: Vec<&str> = sc["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        args,
        [
            "--listen",
            "127.0.0.1:15001",
            "--admin-listen",
            "127.0.0.1:15020",
            "--probe-listen",
            "0.0.0.0:15021"
        ]
    );
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        assert_eq!(sc[probe]["httpGet"]["port"], 15021, "{probe}");
    }
    assert_eq!(sc["startupProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(sc["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(
        sc["ports"],
        json!([{"name": "whouses-probe", "containerPort": 15021, "protocol": "TCP"}]),
        "only the probe port is declared"
    );
    assert_eq!(sc["resources"]["limits"]["memory"], "64Mi");
}

/// Issue 19 item 7: the sidecar's token comes from the Secret the chart names, optional so
/// pods start where it is missing.
#[test]
fn the_token_secret_reference_is_in_the_patch() {
    let cfg = InjectConfig {
        token_secret: "team-payments-ingest".into(),
        ..cfg()
    };
    let m = mutate_doc(
        &fixture("bare-pod.json"),
        &cfg,
        &CollectorCa::NotConfigured,
        false,
    );
    let token = env_entry(m.sidecar(), "WHOUSES_TOKEN").unwrap();
    assert_eq!(
        token,
        &json!({"name": "WHOUSES_TOKEN", "valueFrom": {"secretKeyRef": {
            "name": "team-payments-ingest", "key": "ingest-token", "optional": true}}})
    );
    assert!(token.get("value").is_none(), "never the token itself");
    // The owner comes from the pod's whouses.io/owner label (empty when it has none).
    assert_eq!(
        env_entry(m.sidecar(), "WHOUSES_OWNER").unwrap(),
        &json!({"name": "WHOUSES_OWNER", "valueFrom": {"fieldRef": {
            "fieldPath": "metadata.labels['whouses.io/owner']"}}})
    );
}

#[test]
fn a_pod_without_annotations_env_or_init_containers_is_patched_correctly() {
    let m = mutate("bare-pod.json", false);
    assert_eq!(
        m.pod["spec"]["initContainers"][0]["name"],
        "whouses-sidecar"
    );
    assert_eq!(
        env_of(m.sidecar(), "WHOUSES_SERVICE").as_deref(),
        Some("orders")
    );
    assert_eq!(
        env_of(m.sidecar(), "WHOUSES_ENVIRONMENT").as_deref(),
        Some("reference"),
        "namespace by default"
    );
    assert_eq!(
        m.pod["metadata"]["annotations"]["whouses.io/injected"],
        "true"
    );
    assert_eq!(
        env_of(&m.pod["spec"]["containers"][0], "HTTP_PROXY").as_deref(),
        Some("http://127.0.0.1:15001")
    );
}

#[test]
fn unlabelled_and_already_injected_pods_are_unchanged() {
    for (name, outcome) in [
        ("unlabelled-pod.json", Outcome::NotSelected),
        ("injected-pod.json", Outcome::AlreadyInjected),
    ] {
        let m = mutate(name, false);
        assert!(
            m.resp["response"].get("patch").is_none(),
            "{name}: {}",
            m.resp
        );
        assert_eq!(m.original, m.pod, "{name}");
        assert_eq!(m.outcome, outcome, "{name}");
    }
    // Injected pods stay unchanged even through the namespace webhook (idempotent).
    let m = mutate("injected-pod.json", true);
    assert!(m.resp["response"].get("patch").is_none());
    // The namespace webhook injects pods that did not opt out.
    let m = mutate("namespace-selected-pod.json", true);
    assert_eq!(
        m.pod["spec"]["initContainers"][0]["name"],
        "whouses-sidecar"
    );
}

#[test]
fn malformed_reviews_get_clean_answers() {
    // Not a pod: allowed unchanged, with a warning.
    let m = mutate("not-a-pod.json", false);
    assert_eq!(m.original, m.pod);
    assert!(
        m.warnings()[0].contains("expected a Pod"),
        "{:?}",
        m.warnings()
    );
    let ca = CollectorCa::NotConfigured;
    // Not a review at all: an error, not a panic.
    assert!(review(b"\xff\xfe garbage", &cfg(), &ca, false).is_err());
    assert!(review(br#"{"request": {"object": {}}}"#, &cfg(), &ca, false).is_err());
    // A review whose pod has no containers: allowed, warned, no sidecar.
    let mut v: Value = serde_json::from_slice(&fixture("labelled-pod.json")).unwrap();
    v["request"]["object"]["spec"] = json!({});
    let m = mutate_doc(&serde_json::to_vec(&v).unwrap(), &cfg(), &ca, false);
    assert!(!m.has_sidecar());
    assert!(matches!(
        m.outcome,
        Outcome::Skipped {
            reason: SkipReason::NoContainers,
            ..
        }
    ));
}

/// Issue 12 item 10: a pod whose sidecar could not start is admitted without it — with an
/// AdmissionReview warning, the reason on the pod, and an outcome for the metric — never
/// with a sidecar that keeps the app from starting.
#[test]
fn pods_whose_sidecar_could_not_start_are_admitted_without_it() {
    for (fixture_name, reason, says) in [
        (
            "environment-with-space.json",
            SkipReason::InvalidEnvironment,
            "annotation whouses.io/environment \"pre prod\": invalid character ' '",
        ),
        (
            "long-service-annotation.json",
            SkipReason::InvalidService,
            "longer than 128 characters",
        ),
        (
            "host-network-pod.json",
            SkipReason::HostNetwork,
            "hostNetwork",
        ),
        (
            "port-clash-pod.json",
            SkipReason::PortInUse,
            "container envoy declares port 15001",
        ),
    ] {
        let m = mutate(fixture_name, false);
        assert!(!m.has_sidecar(), "{fixture_name}: {}", m.pod);
        match &m.outcome {
            Outcome::Skipped { reason: r, detail } => {
                assert_eq!(*r, reason, "{fixture_name}");
                assert!(detail.contains(says), "{fixture_name}: {detail}");
            }
            other => panic!("{fixture_name}: {other:?}"),
        }
        let w = m.warnings();
        assert_eq!(w.len(), 1, "{fixture_name}: {w:?}");
        assert!(
            w[0].len() <= 256,
            "{fixture_name}: the API server truncates longer warnings: {w:?}"
        );
        assert!(
            w[0].starts_with("whouses: not injected: ") && w[0].contains(says),
            "{fixture_name}: {w:?}"
        );
        let skipped = m.pod["metadata"]["annotations"]["whouses.io/skipped"]
            .as_str()
            .unwrap_or_else(|| panic!("{fixture_name}: no reason on the pod: {}", m.pod));
        assert!(skipped.contains(says), "{fixture_name}: {skipped}");
        // Nothing else changed: the app containers keep their env.
        assert_eq!(
            m.pod["spec"], m.original["spec"],
            "{fixture_name}: only the annotation is added"
        );
        assert!(m.pod["metadata"]["annotations"]
            .get("whouses.io/injected")
            .is_none());
    }
}

/// A pod name the sidecar would refuse as `--instance` (over 128 characters) is shortened
/// deterministically instead; a shorter name comes from the downward API as before.
#[test]
fn a_long_pod_name_gets_a_shortened_instance_id() {
    let m = mutate("long-pod-name.json", false);
    let name = m.original["metadata"]["name"].as_str().unwrap();
    assert!(name.len() > 128);
    let instance = env_of(m.sidecar(), "WHOUSES_INSTANCE").unwrap();
    assert!((112..=128).contains(&instance.len()), "{instance}");
    assert!(name.starts_with(&instance[..100]), "a readable prefix");
    assert!(whouses_wire::report::check_name("--instance", &instance).is_ok());
    let again = mutate("long-pod-name.json", false);
    assert_eq!(
        env_of(again.sidecar(), "WHOUSES_INSTANCE").unwrap(),
        instance,
        "deterministic"
    );
}

/// Issue 12 item 11: what the app sets itself is respected — its own proxy is kept (and
/// that container is not counted), NO_PROXY is merged, JVM options are never hidden, and
/// envFrom sources the webhook cannot read are named in a warning.
#[test]
fn the_apps_own_proxy_settings_are_respected() {
    let m = mutate("proxy-env-pod.json", false);
    assert!(m.has_sidecar());
    let proxy = Some("http://127.0.0.1:15001".to_string());

    // envFrom + a literal NO_PROXY: proxies set explicitly (env wins over envFrom),
    // NO_PROXY merged into both spellings, JVM properties in JDK_JAVA_OPTIONS so a
    // JAVA_TOOL_OPTIONS from the ConfigMap keeps its effect.
    let app = m.container("app");
    for v in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
        assert_eq!(env_of(app, v), proxy, "{v}");
    }
    let no_proxy = env_of(app, "NO_PROXY").unwrap();
    assert!(
        no_proxy.starts_with("internal.example.com,localhost,127.0.0.1,::1,kubernetes.default.svc"),
        "the app's entries first, ours added once: {no_proxy}"
    );
    assert_eq!(no_proxy.matches("localhost").count(), 1, "{no_proxy}");
    assert_eq!(env_of(app, "no_proxy"), Some(no_proxy.clone()));
    assert!(
        env_entry(app, "JAVA_TOOL_OPTIONS").is_none(),
        "never hides envFrom's"
    );
    assert!(env_of(app, "JDK_JAVA_OPTIONS")
        .unwrap()
        .starts_with("-Dhttp.proxyHost=127.0.0.1"));
    assert_eq!(
        app["envFrom"],
        m.original["spec"]["containers"][0]["envFrom"]
    );

    // Its own egress proxy: left exactly as it was.
    assert_eq!(
        m.container("egress"),
        &m.original["spec"]["containers"][1],
        "a container with its own proxy is untouched"
    );

    // JAVA_TOOL_OPTIONS and no_proxy from references: neither touched; JDK_JAVA_OPTIONS
    // carries the JVM properties; NO_PROXY is not added beside the app's no_proxy.
    let jvm = m.container("jvm");
    assert_eq!(env_of(jvm, "HTTP_PROXY"), proxy);
    assert_eq!(
        env_entry(jvm, "JAVA_TOOL_OPTIONS").unwrap(),
        &m.original["spec"]["containers"][2]["env"][0]
    );
    assert_eq!(
        env_entry(jvm, "no_proxy").unwrap(),
        &m.original["spec"]["containers"][2]["env"][1]
    );
    assert!(env_entry(jvm, "NO_PROXY").is_none());
    assert!(env_of(jvm, "JDK_JAVA_OPTIONS").is_some());

    // JVM options that name a proxy already: left alone.
    let legacy = m.container("java-with-own-props");
    assert_eq!(
        env_of(legacy, "JAVA_TOOL_OPTIONS").as_deref(),
        Some("-Dhttps.proxyHost=corp-proxy.example.com -Dhttps.proxyPort=3128")
    );
    assert_eq!(env_of(legacy, "HTTP_PROXY"), proxy);

    let w = m.warnings();
    let has = |needle: &str| w.iter().any(|x| x.contains(needle));
    assert!(
        has("container app: envFrom (ConfigMap billing-config, Secret billing-secrets) may set HTTP_PROXY/NO_PROXY"),
        "{w:?}"
    );
    assert!(has("container egress sets HTTPS_PROXY itself"), "{w:?}");
    assert!(
        has("container jvm: no_proxy comes from a reference"),
        "{w:?}"
    );
    assert!(
        has("container java-with-own-props: JAVA_TOOL_OPTIONS names a proxy itself"),
        "{w:?}"
    );
    assert!(w.iter().all(|x| x.starts_with("whouses: ")));
    let on_pod = m.pod["metadata"]["annotations"]["whouses.io/warnings"]
        .as_str()
        .unwrap();
    assert!(on_pod.contains("container egress sets HTTPS_PROXY itself"));
}

/// Collector TLS: the CA reaches the sidecar through the pod's own annotation and a
/// downward-API volume (nothing needs to exist in the app's namespace); a CA that cannot
/// be used means no sidecar rather than a sidecar that refuses to start.
#[test]
fn an_https_collector_gets_its_ca_through_the_pod() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "whouses-collector-ca");
    let pem = std::fs::read_to_string(&ca.cert).unwrap();
    let cfg = InjectConfig {
        collector_url: "https://whouses-collector.whouses.svc:7070".into(),
        collector_ca: Some(ca.cert.clone()),
        ..cfg()
    };
    let loaded = CollectorCa::load(cfg.collector_ca.as_deref());
    assert_eq!(loaded, CollectorCa::Pem(pem.clone()));
    let m = mutate_doc(&fixture("labelled-pod.json"), &cfg, &loaded, false);
    let sc = m.sidecar();
    assert_eq!(
        env_of(sc, "WHOUSES_COLLECTOR_URL").as_deref(),
        Some("https://whouses-collector.whouses.svc:7070")
    );
    assert_eq!(
        env_of(sc, "WHOUSES_COLLECTOR_CA").as_deref(),
        Some("/etc/whouses/collector-ca/ca.crt")
    );
    assert_eq!(
        sc["volumeMounts"],
        json!([{"name": "whouses-collector-ca", "mountPath": "/etc/whouses/collector-ca", "readOnly": true}])
    );
    assert_eq!(
        m.pod["metadata"]["annotations"]["whouses.io/collector-ca"],
        pem.as_str()
    );
    let volumes = m.pod["spec"]["volumes"].as_array().unwrap();
    assert_eq!(
        volumes,
        &vec![
            json!({"name": "whouses-collector-ca", "downwardAPI": {"items": [{
            "path": "ca.crt",
            "fieldRef": {"fieldPath": "metadata.annotations['whouses.io/collector-ca']"}}]}})
        ]
    );

    // A pod that has volumes already gets ours appended.
    let mut v: Value = serde_json::from_slice(&fixture("labelled-pod.json")).unwrap();
    v["request"]["object"]["spec"]["volumes"] = json!([{"name": "data", "emptyDir": {}}]);
    let m = mutate_doc(&serde_json::to_vec(&v).unwrap(), &cfg, &loaded, false);
    let names: Vec<&str> = m.pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["data", "whouses-collector-ca"]);

    // Missing or junk: admitted without the sidecar, saying why.
    std::fs::write(dir.path().join("junk.crt"), "not a certificate\n").unwrap();
    for path in [dir.path().join("missing.crt"), dir.path().join("junk.crt")] {
        let unusable = CollectorCa::load(Some(&path));
        let m = mutate_doc(&fixture("labelled-pod.json"), &cfg, &unusable, false);
        assert!(!m.has_sidecar());
        assert!(
            matches!(&m.outcome, Outcome::Skipped { reason: SkipReason::CollectorCaUnavailable, detail } if detail.contains(path.to_str().unwrap())),
            "{:?}",
            m.outcome
        );
    }
}

/// The sidecar of a patch, started as the real binary with the patch's args and env (the
/// downward API and the optional Secret resolved as the kubelet would; ports moved to 0
/// so the test does not need 15001/15020/15021 free; the CA file written from the pod's
/// annotation). Returns its listening line.
fn start_injected(m: &Mutated, dir: &Path) -> (Proc, Value) {
    start_container(m, m.sidecar(), dir)
}

/// [`start_injected`] for any of the injected containers (`sc`).
fn start_container(m: &Mutated, sc: &Value, dir: &Path) -> (Proc, Value) {
    let args: Vec<String> = sc["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let a = a.as_str().unwrap();
            match a.rsplit_once(':') {
                Some((ip, port)) if port.parse::<u16>().is_ok() => format!("{ip}:0"),
                _ => a.to_string(),
            }
        })
        .collect();
    let mut cmd = Command::new(bin_path("whouses-sidecar"));
    cmd.args(&args).env_clear().env("RUST_LOG", "info");
    let pod_name = m.pod["metadata"]["name"]
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| {
            format!(
                "{}x7k2q",
                m.pod["metadata"]["generateName"].as_str().unwrap()
            )
        });
    let mut set: Vec<(String, String)> = Vec::new();
    for e in sc["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        let value = if let Some(v) = e["value"].as_str() {
            // Kubernetes expands `$(VAR)` from earlier entries.
            set.iter()
                .fold(v.to_string(), |v, (k, x)| v.replace(&format!("$({k})"), x))
        } else if e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name" {
            pod_name.clone()
        } else if let Some(label) = e["valueFrom"]["fieldRef"]["fieldPath"]
            .as_str()
            .and_then(|p| p.strip_prefix("metadata.labels['"))
            .and_then(|p| p.strip_suffix("']"))
        {
            // The downward API: the label's value, empty when the pod has none.
            m.pod["metadata"]["labels"][label]
                .as_str()
                .unwrap_or("")
                .to_string()
        } else if e["valueFrom"]["secretKeyRef"]["optional"] == true {
            continue; // The Secret does not exist here.
        } else {
            panic!("unexpected env entry {e}");
        };
        cmd.env(name, &value);
        set.push((name.to_string(), value));
    }
    if let Some(pem) = m.pod["metadata"]["annotations"]["whouses.io/collector-ca"].as_str() {
        let path = dir.join("ca.crt");
        std::fs::write(&path, pem).unwrap();
        cmd.env("WHOUSES_COLLECTOR_CA", &path);
    }
    let mut proc = Proc::spawn(&format!("injected sidecar {args:?}"), cmd);
    let listening = listening(&mut proc);
    (proc, listening.line)
}

/// The process's listening line (it binds port 0 and says where); panics with its output
/// if it exits first.
fn listening(proc: &mut Proc) -> Listening {
    let line = proc.wait_line("its listening line", secs(30), |l| {
        parse_listening(l).is_some()
    });
    let listening = parse_listening(&line).unwrap();
    assert_eq!(listening.line["pid"].as_u64(), Some(u64::from(proc.pid())));
    listening
}

/// The patch is what the real sidecar accepts: started with the injected args and env, it
/// listens for admin on loopback and for probes on all addresses, answers the probes on
/// the probe port only, and takes the long-name instance id and the CA from the pod.
#[test]
fn the_injected_sidecar_starts_with_the_patch_it_was_given() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "collector-ca");
    let cfg = InjectConfig {
        collector_url: "https://whouses-collector.whouses.svc:7070".into(),
        collector_ca: Some(ca.cert.clone()),
        ..cfg()
    };
    let loaded = CollectorCa::load(cfg.collector_ca.as_deref());
    for name in [
        "labelled-pod.json",
        "long-pod-name.json",
        "proxy-env-pod.json",
    ] {
        let m = mutate_doc(&fixture(name), &cfg, &loaded, false);
        let (proc, line) = start_injected(&m, dir.path());
        let addr = |k: &str| -> std::net::SocketAddr {
            line["listening"][k]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: no {k} in {line}"))
                .parse()
                .unwrap()
        };
        assert!(addr("admin").ip().is_loopback(), "{name}: {line}");
        assert!(addr("proxy").ip().is_loopback(), "{name}: {line}");
        assert!(addr("probe").ip().is_unspecified(), "{name}: {line}");
        let http = whouses_tests::sidecar::client();
        let probe = addr("probe").port();
        let get = |path: &str| {
            http.get(format!("http://127.0.0.1:{probe}{path}"))
                .send()
                .unwrap()
                .status()
                .as_u16()
        };
        wait::until_eq(
            &format!("{name}: /readyz on the probe port"),
            secs(20),
            200,
            || get("/readyz"),
        );
        assert_eq!(get("/healthz"), 200);
        assert_eq!(
            get("/stats"),
            404,
            "{name}: the probe port serves probes only"
        );
        let expected = env_of(m.sidecar(), "WHOUSES_INSTANCE").unwrap_or_else(|| {
            m.pod["metadata"]["generateName"]
                .as_str()
                .unwrap()
                .to_string()
                + "x7k2q"
        });
        assert_eq!(line["instance"], expected.as_str(), "{name}");
        drop(proc);
    }
}

/// The real binary: port 0, its listening line, its pid.
struct Webhook {
    proc: Proc,
    url: String,
}

fn spawn_webhook(args: &[&str], cert: &Path, key: &Path) -> Webhook {
    let mut cmd = Command::new(bin_path("whouses-webhook"));
    cmd.args(["--listen", "127.0.0.1:0"])
        .args(args)
        .arg("--tls-cert")
        .arg(cert)
        .arg("--tls-key")
        .arg(key)
        .env("RUST_LOG", "info");
    let mut proc = Proc::spawn("webhook", cmd);
    let addr = listening(&mut proc).addr("webhook").unwrap();
    Webhook {
        proc,
        url: format!("https://127.0.0.1:{}", addr.port()),
    }
}

/// A client that trusts only `ca` and opens a new connection (a new handshake) per request.
fn trusting(ca: &Path) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap())
        .build()
        .unwrap()
}

fn post_review(client: &reqwest::blocking::Client, url: &str, body: Vec<u8>) -> Value {
    let resp = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200, "{url}");
    resp.json().unwrap()
}

fn patched(body: &[u8], review: &Value) -> Value {
    let original: Value = serde_json::from_slice(body).unwrap();
    let mut pod = original["request"]["object"].clone();
    if let Some(p) = review["response"]["patch"].as_str() {
        let bytes = base64::engine::general_purpose::STANDARD.decode(p).unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        json_patch::patch(&mut pod, &patch).unwrap();
    }
    pod
}

/// Issue 19 item 7: both paths the chart registers, end to end over HTTPS, and the
/// outcomes on `/metrics`.
#[test]
fn the_webhook_binary_serves_both_registered_paths_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "whouses-webhook-ca");
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    ca.issue("leaf", "whouses-webhook.whouses.svc", &cert, &key);
    let wh = spawn_webhook(
        &[
            "--sidecar-image",
            "registry.internal/whouses:0.1.0",
            "--token-secret",
            "team-ingest",
        ],
        &cert,
        &key,
    );
    let client = trusting(&ca.cert);

    // /mutate: the pod-label webhook.
    let body = fixture("labelled-pod.json");
    let v = post_review(&client, &format!("{}/mutate", wh.url), body.clone());
    assert_eq!(v["response"]["allowed"], true);
    let pod = patched(&body, &v);
    let sc = &pod["spec"]["initContainers"][0];
    assert_eq!(sc["name"], "whouses-sidecar");
    assert_eq!(
        env_entry(sc, "WHOUSES_TOKEN").unwrap()["valueFrom"]["secretKeyRef"]["name"],
        "team-ingest"
    );

    // /mutate/namespace: the namespace-label webhook injects pods that did not opt out…
    let ns_url = format!("{}/mutate/namespace", wh.url);
    let body = fixture("namespace-selected-pod.json");
    let pod = patched(&body, &post_review(&client, &ns_url, body.clone()));
    assert_eq!(pod["spec"]["initContainers"][0]["name"], "whouses-sidecar");
    assert_eq!(
        env_of(&pod["spec"]["containers"][0], "HTTP_PROXY").as_deref(),
        Some("http://127.0.0.1:15001")
    );
    // …leaves alone those that did…
    let mut opted_out: Value = serde_json::from_slice(&body).unwrap();
    opted_out["request"]["object"]["metadata"]["labels"]["whouses.io/inject"] = json!("false");
    let v = post_review(&client, &ns_url, serde_json::to_vec(&opted_out).unwrap());
    assert!(v["response"].get("patch").is_none(), "{v}");
    // …and skips, with a warning, a pod whose sidecar could not start.
    let v = post_review(&client, &ns_url, fixture("environment-with-space.json"));
    assert!(v["response"]["warnings"][0]
        .as_str()
        .unwrap()
        .contains("not injected"));

    // Bad input: a clean 400, and still serving after it.
    let resp = client
        .post(format!("{}/mutate", wh.url))
        .body("{ truncated")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().unwrap().contains("not JSON"));

    let metrics = client
        .get(format!("{}/metrics", wh.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for line in [
        "whouses_webhook_injected_total 2",
        "whouses_webhook_reviews_total{result=\"not_selected\"} 1",
        "whouses_webhook_reviews_total{result=\"malformed\"} 1",
        "whouses_webhook_skipped_total{reason=\"invalid_environment\"} 1",
        "whouses_webhook_skipped_total{reason=\"port_in_use\"} 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing:\n{metrics}"
        );
    }
    // One log line per review, with the reason.
    wait::until("the skip's log line", secs(10), || {
        wh.proc
            .output()
            .lines()
            .any(|l| {
                l.contains("Admitted a pod without the sidecar.")
                    && l.contains("invalid_environment")
            })
            .then_some(())
    });
}

/// Bad flags stop the webhook with every problem named (exit 2), before it serves a pod.
#[test]
fn bad_flags_are_startup_errors() {
    let out = Command::new(bin_path("whouses-webhook"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            "/nonexistent.crt",
            "--tls-key",
            "/nonexistent.key",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-cert"));

    let out = Command::new(bin_path("whouses-webhook"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            "/nonexistent.crt",
            "--tls-key",
            "/nonexistent.key",
            "--default-environment",
            "pre prod",
            "--memory-request",
            "128Mi",
            "--memory-limit",
            "64Mi",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--default-environment") && err.contains("above --memory-limit"),
        "{err}"
    );
}

/// Issue 19 item 7: the certificate is replaced under a running webhook the way a
/// Kubernetes Secret volume replaces it (a new timestamped directory, then the `..data`
/// symlink swapped atomically); the next handshake presents the new certificate.
#[test]
fn a_rotated_certificate_is_presented_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    std::fs::create_dir(&pki).unwrap();
    let old_ca = Ca::new(&pki, "old-ca");
    let new_ca = Ca::new(&pki, "new-ca");
    // The volume: tls.crt -> ..data/tls.crt, ..data -> ..v1.
    let vol = dir.path().join("tls");
    std::fs::create_dir_all(vol.join("..v1")).unwrap();
    old_ca.issue(
        "v1",
        "whouses-webhook.whouses.svc",
        &vol.join("..v1/tls.crt"),
        &vol.join("..v1/tls.key"),
    );
    std::os::unix::fs::symlink("..v1", vol.join("..data")).unwrap();
    for f in ["tls.crt", "tls.key"] {
        std::os::unix::fs::symlink(format!("..data/{f}"), vol.join(f)).unwrap();
    }
    let wh = spawn_webhook(&[], &vol.join("tls.crt"), &vol.join("tls.key"));
    let (old, new) = (trusting(&old_ca.cert), trusting(&new_ca.cert));
    let healthz = format!("{}/healthz", wh.url);
    assert_eq!(old.get(&healthz).send().unwrap().status(), 200);
    assert!(
        new.get(&healthz).send().is_err(),
        "not yet trusted by the new CA"
    );

    // The kubelet's update: write ..v2, point a temporary link at it, rename it over ..data.
    std::fs::create_dir(vol.join("..v2")).unwrap();
    new_ca.issue(
        "v2",
        "whouses-webhook.whouses.svc",
        &vol.join("..v2/tls.crt"),
        &vol.join("..v2/tls.key"),
    );
    std::os::unix::fs::symlink("..v2", vol.join("..data_tmp")).unwrap();
    std::fs::rename(vol.join("..data_tmp"), vol.join("..data")).unwrap();
    std::fs::remove_dir_all(vol.join("..v1")).unwrap();

    wait::until("a handshake with the new certificate", secs(20), || {
        new.get(&healthz)
            .send()
            .ok()
            .filter(|r| r.status() == 200)
            .map(|_| ())
    });
    assert!(
        old.get(&healthz).send().is_err(),
        "the old certificate is gone"
    );
    // Reviews keep working over the new certificate.
    let v = post_review(
        &new,
        &format!("{}/mutate", wh.url),
        fixture("labelled-pod.json"),
    );
    assert_eq!(v["response"]["patchType"], "JSONPatch");
    assert!(
        wh.proc.output().contains("Reloaded the TLS certificate."),
        "{}",
        wh.proc.output()
    );
}

#[test]
fn transparent_mode_adds_the_iptables_init_container_and_no_proxy_variables() {
    let m = mutate("transparent-pod.json", false);
    assert!(
        matches!(m.outcome, Outcome::Injected { .. }),
        "{:?}",
        m.outcome
    );
    let inits = m.pod["spec"]["initContainers"].as_array().unwrap();
    let names: Vec<&str> = inits.iter().map(|c| c["name"].as_str().unwrap()).collect();
    // The redirect first, then the sidecar, then the app's own init containers (already
    // captured).
    assert_eq!(names, ["whouses-iptables", "whouses-sidecar", "migrate"]);

    let init = &inits[0];
    assert_eq!(init["image"], "registry.internal/whouses:0.1.0");
    assert_eq!(
        init["args"],
        json!([
            "iptables",
            "install",
            "--proxy-uid",
            "65532",
            "--proxy-gid",
            "65532",
            "--proxy-port",
            "15001",
            "--dns-port",
            "15053"
        ])
    );
    let sc = &init["securityContext"];
    assert_eq!(sc["capabilities"]["add"], json!(["NET_ADMIN", "NET_RAW"]));
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert!(init.get("restartPolicy").is_none(), "runs once, then exits");

    // The sidecar runs as the uid the redirect leaves alone, with the DNS forwarder.
    let sidecar = m.sidecar();
    assert_eq!(sidecar["securityContext"]["runAsUser"], 65532);
    assert_eq!(sidecar["securityContext"]["runAsGroup"], 65532);
    assert_eq!(
        sidecar["securityContext"]["capabilities"]["drop"],
        json!(["ALL"])
    );
    let args: Vec<&str> = sidecar["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        args.windows(2)
            .any(|w| w == ["--dns-listen", "127.0.0.1:15053"]),
        "{args:?}"
    );

    // No proxy variables; the app's own environment untouched.
    for name in ["app", "log-shipper", "batch"] {
        let c = m.container(name);
        for var in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "NO_PROXY"] {
            assert!(env_of(c, var).is_none(), "{name} got {var}");
        }
    }
    assert_eq!(
        env_of(m.container("app"), "JAVA_TOOL_OPTIONS").as_deref(),
        Some("-Xmx512m")
    );
    assert_eq!(
        m.pod["metadata"]["annotations"]["whouses.io/mode"],
        "transparent"
    );
    // A container running as the sidecar's uid is not captured: said, not hidden.
    let w = m.warnings();
    assert!(
        w.iter().any(|w| w.contains("batch") && w.contains("65532")),
        "{w:?}"
    );
}

#[test]
fn the_mode_comes_from_the_annotation_else_the_default() {
    // The chart's default: transparent for every pod that does not say.
    let cfg = InjectConfig {
        default_mode: whouses_webhook::config::Mode::Transparent,
        ..cfg()
    };
    let m = mutate_doc(
        &fixture("labelled-pod.json"),
        &cfg,
        &CollectorCa::NotConfigured,
        false,
    );
    assert_eq!(
        m.pod["spec"]["initContainers"][0]["name"],
        "whouses-iptables"
    );
    assert!(env_of(m.container("app"), "HTTP_PROXY").is_none());

    // A pod that asks for explicit mode gets it, whatever the default.
    let mut doc: Value = serde_json::from_slice(&fixture("transparent-pod.json")).unwrap();
    doc["request"]["object"]["metadata"]["annotations"]["whouses.io/mode"] = json!("explicit");
    let m = mutate_doc(
        &serde_json::to_vec(&doc).unwrap(),
        &cfg,
        &CollectorCa::NotConfigured,
        false,
    );
    assert_eq!(
        m.pod["spec"]["initContainers"][0]["name"],
        "whouses-sidecar"
    );
    assert!(env_of(m.container("app"), "HTTP_PROXY").is_some());
    assert_eq!(
        m.pod["metadata"]["annotations"]["whouses.io/mode"],
        "explicit"
    );

    // An unknown mode: admitted without the sidecar, with the reason (fail open).
    doc["request"]["object"]["metadata"]["annotations"]["whouses.io/mode"] = json!("sniff");
    let m = mutate_doc(
        &serde_json::to_vec(&doc).unwrap(),
        &cfg,
        &CollectorCa::NotConfigured,
        false,
    );
    assert_skipped(&m, SkipReason::InvalidMode, "sniff");
}

/// Admitted without the sidecar, for `reason`, the pod's annotation saying `says`.
fn assert_skipped(m: &Mutated, reason: SkipReason, says: &str) {
    assert!(
        matches!(&m.outcome, Outcome::Skipped { reason: r, .. } if *r == reason),
        "{reason:?} expected: {:?}",
        m.outcome
    );
    assert!(!m.has_sidecar());
    let skipped = m.pod["metadata"]["annotations"]["whouses.io/skipped"]
        .as_str()
        .unwrap();
    assert!(skipped.contains(says), "{skipped}");
}

/// Issue 14: `whouses.io/inbound: "PORTS"` puts an inbound sidecar in front of those
/// ports: the iptables init container redirects the connections arriving at them (with
/// transparent mode's outbound redirect when the pod has both, in one install), and the
/// inbound sidecar — an instance of its own, its own ports — starts with the args it was
/// given. Kubelet probes on an inbound port are named; a bad annotation skips injection
/// with the reason.
#[test]
fn the_inbound_annotation_puts_an_inbound_sidecar_in_front_of_the_ports() {
    let mut doc: Value = serde_json::from_slice(&fixture("transparent-pod.json")).unwrap();
    let object = &mut doc["request"]["object"];
    object["metadata"]["annotations"]["whouses.io/inbound"] = json!("8080, 8443");
    object["spec"]["containers"][0]["ports"] = json!([{"name": "http", "containerPort": 8080}]);
    object["spec"]["containers"][0]["readinessProbe"] =
        json!({"httpGet": {"path": "/ready", "port": "http"}});
    let body = serde_json::to_vec(&doc).unwrap();
    let m = mutate_doc(&body, &cfg(), &CollectorCa::NotConfigured, false);
    assert!(
        matches!(m.outcome, Outcome::Injected { .. }),
        "{:?}",
        m.outcome
    );
    let inits = m.pod["spec"]["initContainers"].as_array().unwrap();
    let names: Vec<&str> = inits.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "whouses-iptables",
            "whouses-sidecar",
            "whouses-inbound",
            "migrate"
        ]
    );
    // One install: the outbound redirect (transparent mode) and the inbound one.
    assert_eq!(
        inits[0]["args"],
        json!([
            "iptables",
            "install",
            "--proxy-uid",
            "65532",
            "--proxy-gid",
            "65532",
            "--proxy-port",
            "15001",
            "--dns-port",
            "15053",
            "--inbound-ports",
            "8080,8443",
            "--inbound-proxy-port",
            "15006"
        ])
    );
    let inbound = &inits[2];
    assert_eq!(
        inbound["args"],
        json!([
            "--mode",
            "inbound",
            "--listen",
            "0.0.0.0:15006",
            "--admin-listen",
            "127.0.0.1:15022",
            "--probe-listen",
            "0.0.0.0:15023"
        ])
    );
    assert_eq!(inbound["restartPolicy"], "Always");
    assert_eq!(inbound["readinessProbe"]["httpGet"]["port"], 15023);
    assert_eq!(inbound["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        inbound["securityContext"]["capabilities"]["drop"],
        json!(["ALL"])
    );
    assert_eq!(
        env_of(inbound, "WHOUSES_SERVICE"),
        env_of(m.sidecar(), "WHOUSES_SERVICE")
    );
    assert_eq!(
        env_of(inbound, "WHOUSES_INSTANCE").as_deref(),
        Some("$(POD_NAME)/inbound"),
        "an instance of its own: two sidecars never share batch numbers"
    );
    let w = m.warnings();
    assert!(
        w.iter()
            .any(|w| w.contains("app's readinessProbe calls port 8080")),
        "{w:?}"
    );

    // The real sidecar takes the inbound container's args and env.
    let dir = tempfile::tempdir().unwrap();
    let (proc, line) = start_container(&m, inbound, dir.path());
    assert_eq!(
        line["instance"], "tis-sync-7d9f8b6c4-x7k2q/inbound",
        "{line}"
    );
    drop(proc);

    // Explicit mode: the init container installs the inbound redirect only.
    doc["request"]["object"]["metadata"]["annotations"]["whouses.io/mode"] = json!("explicit");
    let m = mutate_doc(
        &serde_json::to_vec(&doc).unwrap(),
        &cfg(),
        &CollectorCa::NotConfigured,
        false,
    );
    let inits = m.pod["spec"]["initContainers"].as_array().unwrap();
    assert_eq!(
        inits[0]["args"],
        json!([
            "iptables",
            "install",
            "--inbound-ports",
            "8080,8443",
            "--inbound-proxy-port",
            "15006"
        ])
    );
    assert!(env_of(m.container("app"), "HTTP_PROXY").is_some());

    // Not ports, or a sidecar's own: admitted without the sidecars, with the reason.
    for bad in ["http", "0", "8080,15006", ""] {
        doc["request"]["object"]["metadata"]["annotations"]["whouses.io/inbound"] = json!(bad);
        let m = mutate_doc(
            &serde_json::to_vec(&doc).unwrap(),
            &cfg(),
            &CollectorCa::NotConfigured,
            false,
        );
        assert_skipped(&m, SkipReason::InvalidInbound, "whouses.io/inbound");
    }
}
