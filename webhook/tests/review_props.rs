//! Property tests of `review` over generated pods: whatever the names, labels, env and
//! ports, the answer is "allowed", its patch applies to the pod, and a sidecar is only
//! ever injected with names the sidecar accepts — otherwise the pod says why it has none.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use base64::Engine as _;
use proptest::prelude::*;
use serde_json::{json, Value};
use whouses_webhook::ca::CollectorCa;
use whouses_webhook::config::InjectConfig;
use whouses_webhook::mutate::{review, Outcome};

/// Names as people write them: mostly fine, sometimes with spaces, odd characters, empty
/// or very long.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z][a-z0-9-]{0,20}",
        1 => "[a-zA-Z0-9 _./:é-]{0,30}",
        1 => "[a-z]{120,200}",
        1 => Just(String::new()),
    ]
}

fn env_entry() -> impl Strategy<Value = Value> {
    let var = prop_oneof![
        Just("HTTP_PROXY"),
        Just("https_proxy"),
        Just("NO_PROXY"),
        Just("no_proxy"),
        Just("JAVA_TOOL_OPTIONS"),
        Just("JDK_JAVA_OPTIONS"),
        Just("OTHER"),
    ];
    (var, prop::option::of("[ -~]{0,30}")).prop_map(|(n, v)| match v {
        Some(v) => json!({"name": n, "value": v}),
        None => json!({"name": n, "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}),
    })
}

fn container(i: usize) -> impl Strategy<Value = Value> {
    (
        prop::option::of(prop::collection::vec(env_entry(), 0..5)),
        any::<bool>(),
        prop::option::of(prop_oneof![
            Just(8080u16),
            Just(15001),
            Just(15020),
            Just(15021)
        ]),
    )
        .prop_map(move |(env, env_from, port)| {
            let mut c = json!({"name": format!("c{i}"), "image": "app:1"});
            if let Some(env) = env {
                c["env"] = json!(env);
            }
            if env_from {
                c["envFrom"] = json!([{"configMapRef": {"name": "cfg"}}]);
            }
            if let Some(p) = port {
                c["ports"] = json!([{"containerPort": p}]);
            }
            c
        })
}

fn pod() -> impl Strategy<Value = Value> {
    (
        prop::option::of(name()),
        prop::option::of(name()),
        prop::option::of(name()),
        prop::option::of(name()),
        prop::collection::vec(container(0), 1..3),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(pod_name, app, service, environment, containers, host_net, inits, annotations)| {
                let mut meta =
                    json!({"namespace": "payments", "labels": {"whouses.io/inject": "true"}});
                match pod_name {
                    Some(n) if !n.is_empty() => meta["name"] = json!(n),
                    _ => meta["generateName"] = json!("web-5d8f9c7b6-"),
                }
                if let Some(a) = app {
                    meta["labels"]["app"] = json!(a);
                }
                if annotations {
                    meta["annotations"] = json!({});
                    if let Some(s) = service {
                        meta["annotations"]["whouses.io/service"] = json!(s);
                    }
                    if let Some(e) = environment {
                        meta["annotations"]["whouses.io/environment"] = json!(e);
                    }
                }
                let containers: Vec<Value> = containers
                    .into_iter()
                    .enumerate()
                    .map(|(i, mut c)| {
                        c["name"] = json!(format!("c{i}"));
                        c
                    })
                    .collect();
                let mut spec = json!({"containers": containers});
                if host_net {
                    spec["hostNetwork"] = json!(true);
                }
                if inits {
                    spec["initContainers"] = json!([{"name": "init", "image": "init:1"}]);
                }
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})
            },
        )
}

fn env_value<'a>(c: &'a Value, n: &str) -> Option<&'a str> {
    c["env"].as_array()?.iter().find(|e| e["name"] == n)?["value"].as_str()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_pod_is_allowed_patched_cleanly_and_never_given_a_broken_sidecar(pod in pod()) {
        let body = serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {"uid": "u", "kind": {"kind": "Pod"}, "operation": "CREATE",
                        "namespace": "payments", "object": pod},
        })).unwrap();
        let answer = review(&body, &InjectConfig::default(), &CollectorCa::NotConfigured, false).unwrap();
        prop_assert_eq!(&answer.review["response"]["allowed"], &json!(true));
        let mut patched = pod.clone();
        if let Some(p) = answer.review["response"]["patch"].as_str() {
            let bytes = base64::engine::general_purpose::STANDARD.decode(p).unwrap();
            let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
            prop_assert!(json_patch::patch(&mut patched, &patch).is_ok(), "the patch applies");
        }
        let sidecar = patched["spec"]["initContainers"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == "whouses-sidecar"));
        match (&answer.outcome, sidecar) {
            (Outcome::Injected { .. }, Some(sc)) => {
                for (var, flag) in [("WHOUSES_SERVICE", "--service"), ("WHOUSES_ENVIRONMENT", "--environment")] {
                    let v = env_value(sc, var).unwrap();
                    prop_assert!(whouses_wire::report::check_name(flag, v).is_ok(), "{} {:?}", flag, v);
                }
                let instance = env_value(sc, "WHOUSES_INSTANCE")
                    .map(String::from)
                    .or_else(|| patched["metadata"]["name"].as_str().map(String::from));
                if let Some(i) = instance {
                    prop_assert!(whouses_wire::report::check_name("--instance", &i).is_ok(), "--instance {:?}", i);
                }
                prop_assert_eq!(&patched["metadata"]["annotations"]["whouses.io/injected"], &json!("true"));
                prop_assert!(patched["spec"].get("hostNetwork").is_none());
            }
            (Outcome::Skipped { detail, .. }, None) => {
                prop_assert_eq!(
                    patched["metadata"]["annotations"]["whouses.io/skipped"].as_str(),
                    Some(detail.as_str())
                );
                prop_assert_eq!(&patched["spec"], &pod["spec"], "nothing but the annotation");
            }
            (outcome, sc) => prop_assert!(false, "{:?} with sidecar {:?}", outcome, sc),
        }
    }
}
