//! What injection does to a pod, as a JSON patch inside an AdmissionReview response.
//! Pure functions: the server only moves bytes. It fails open: anything it cannot
//! understand is allowed unchanged, with a warning, so a webhook problem never blocks a
//! deployment.

use base64::Engine as _;
use serde_json::{json, Value};

/// Label (on a pod or namespace) that asks for injection.
pub const INJECT_LABEL: &str = "whouses.io/inject";
/// Annotation set on injected pods (and checked, so injection happens once).
pub const INJECTED_ANNOTATION: &str = "whouses.io/injected";
/// Annotation that overrides the environment name.
pub const ENVIRONMENT_ANNOTATION: &str = "whouses.io/environment";
/// Annotation that overrides the service name.
pub const SERVICE_ANNOTATION: &str = "whouses.io/service";
pub const SIDECAR_NAME: &str = "whouses-sidecar";
pub const PROXY_PORT: u16 = 15001;
pub const ADMIN_PORT: u16 = 15020;

/// How the sidecar is injected (from the webhook's flags / the chart's values).
#[derive(Debug, Clone, clap::Args)]
pub struct InjectConfig {
    /// Sidecar image.
    #[arg(
        long,
        env = "WHOUSES_SIDECAR_IMAGE",
        default_value = "ghcr.io/whouses/whouses:latest"
    )]
    pub sidecar_image: String,
    /// Collector URL the sidecars ship to.
    #[arg(
        long,
        env = "WHOUSES_COLLECTOR_URL",
        default_value = "http://whouses-collector:7070"
    )]
    pub collector_url: String,
    /// Secret (in the pod's namespace) holding the ingest token under key `ingest-token`;
    /// optional, so pods start even where it is missing.
    #[arg(
        long,
        env = "WHOUSES_TOKEN_SECRET",
        default_value = "whouses-ingest-token"
    )]
    pub token_secret: String,
    /// Environment name when the pod has no `whouses.io/environment` annotation
    /// (default: the pod's namespace).
    #[arg(long, env = "WHOUSES_DEFAULT_ENVIRONMENT")]
    pub default_environment: Option<String>,
    /// Extra NO_PROXY entries, comma-separated (besides loopback and the Kubernetes API).
    #[arg(long, env = "WHOUSES_NO_PROXY", default_value = "")]
    pub no_proxy: String,
    /// Sidecar flush interval.
    #[arg(long, env = "WHOUSES_FLUSH_INTERVAL", default_value = "10s")]
    pub flush_interval: String,
    #[arg(long, env = "WHOUSES_SIDECAR_CPU_REQUEST", default_value = "10m")]
    pub cpu_request: String,
    #[arg(long, env = "WHOUSES_SIDECAR_MEMORY_REQUEST", default_value = "16Mi")]
    pub memory_request: String,
    #[arg(long, env = "WHOUSES_SIDECAR_MEMORY_LIMIT", default_value = "64Mi")]
    pub memory_limit: String,
}

impl Default for InjectConfig {
    fn default() -> Self {
        InjectConfig {
            sidecar_image: "ghcr.io/whouses/whouses:latest".into(),
            collector_url: "http://whouses-collector:7070".into(),
            token_secret: "whouses-ingest-token".into(),
            default_environment: None,
            no_proxy: String::new(),
            flush_interval: "10s".into(),
            cpu_request: "10m".into(),
            memory_request: "16Mi".into(),
            memory_limit: "64Mi".into(),
        }
    }
}

/// Why a review cannot be answered at all (the HTTP layer turns this into a 400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReviewError {
    #[error("not JSON: {0}")]
    Json(String),
    #[error("not an admission.k8s.io/v1 AdmissionReview with request.uid")]
    NotAReview,
}

/// Answer one AdmissionReview (the request body) with an AdmissionReview response.
/// `namespace_selected`: the request came through the namespace-label webhook, so pods
/// are injected unless they opt out with `whouses.io/inject: "false"`.
pub fn review(
    body: &[u8],
    cfg: &InjectConfig,
    namespace_selected: bool,
) -> Result<Value, ReviewError> {
    let review: Value =
        serde_json::from_slice(body).map_err(|e| ReviewError::Json(e.to_string()))?;
    let request = review.get("request").ok_or(ReviewError::NotAReview)?;
    let uid = request
        .get("uid")
        .and_then(Value::as_str)
        .ok_or(ReviewError::NotAReview)?;
    let api_version = review
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("admission.k8s.io/v1");
    let mut response = json!({ "uid": uid, "allowed": true });
    match decide(request, cfg, namespace_selected) {
        Decision::Skip => {}
        Decision::Warn(w) => {
            tracing::warn!(uid, reason = %w, "Allowed a pod without injecting.");
            response["warnings"] = json!([format!("whouses: {w}")]);
        }
        Decision::Patch { patch, warnings } => {
            let bytes = serde_json::to_vec(&patch).unwrap_or_default();
            response["patchType"] = json!("JSONPatch");
            response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(bytes));
            if !warnings.is_empty() {
                response["warnings"] = json!(warnings
                    .iter()
                    .map(|w| format!("whouses: {w}"))
                    .collect::<Vec<_>>());
            }
        }
    }
    Ok(json!({
        "apiVersion": api_version,
        "kind": "AdmissionReview",
        "response": response,
    }))
}

#[derive(Debug)]
enum Decision {
    /// Not ours to touch (not selected, or already injected).
    Skip,
    /// Allowed unchanged, with a reason.
    Warn(String),
    Patch {
        patch: Vec<Value>,
        warnings: Vec<String>,
    },
}

fn decide(request: &Value, cfg: &InjectConfig, namespace_selected: bool) -> Decision {
    let kind = request
        .pointer("/kind/kind")
        .and_then(Value::as_str)
        .unwrap_or("");
    if kind != "Pod" {
        return Decision::Warn(format!("expected a Pod, got {kind:?}"));
    }
    if request
        .get("operation")
        .and_then(Value::as_str)
        .is_some_and(|o| o != "CREATE")
    {
        return Decision::Skip;
    }
    let Some(pod) = request.get("object").filter(|o| o.is_object()) else {
        return Decision::Warn("the review carries no pod object".into());
    };
    let label = pod
        .pointer(&format!("/metadata/labels/{}", escape(INJECT_LABEL)))
        .and_then(Value::as_str);
    let wanted = match label {
        Some("true") => true,
        Some("false") => false,
        _ => namespace_selected,
    };
    if !wanted {
        return Decision::Skip;
    }
    if is_injected(pod) {
        return Decision::Skip;
    }
    let Some(containers) = pod.pointer("/spec/containers").and_then(Value::as_array) else {
        return Decision::Warn("the pod has no spec.containers".into());
    };
    let namespace = request
        .get("namespace")
        .and_then(Value::as_str)
        .or_else(|| pod.pointer("/metadata/namespace").and_then(Value::as_str))
        .unwrap_or("default");
    let service = service_name(pod);
    let environment = pod
        .pointer(&format!(
            "/metadata/annotations/{}",
            escape(ENVIRONMENT_ANNOTATION)
        ))
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| cfg.default_environment.clone())
        .unwrap_or_else(|| namespace.to_string());

    let mut patch = Vec::new();
    let mut warnings = Vec::new();
    let sidecar = sidecar_container(cfg, &service, &environment);
    if pod
        .pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .is_some()
    {
        // First, so the app's own init containers can already reach the network.
        patch.push(json!({"op": "add", "path": "/spec/initContainers/0", "value": sidecar}));
    } else {
        patch.push(json!({"op": "add", "path": "/spec/initContainers", "value": [sidecar]}));
    }
    if pod
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .is_some()
    {
        patch.push(json!({"op": "add", "path": format!("/metadata/annotations/{}", escape(INJECTED_ANNOTATION)), "value": "true"}));
    } else {
        patch.push(json!({"op": "add", "path": "/metadata/annotations", "value": {INJECTED_ANNOTATION: "true"}}));
    }
    let wanted_env = proxy_env(cfg);
    for (i, c) in containers.iter().enumerate() {
        let cname = c.get("name").and_then(Value::as_str).unwrap_or("?");
        let existing = c.get("env").and_then(Value::as_array);
        let Some(existing) = existing else {
            patch.push(json!({"op": "add", "path": format!("/spec/containers/{i}/env"), "value": wanted_env.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>()}));
            continue;
        };
        for (name, value) in &wanted_env {
            match existing.iter().position(|e| e.get("name").and_then(Value::as_str) == Some(name)) {
                None => patch.push(json!({"op": "add", "path": format!("/spec/containers/{i}/env/-"), "value": {"name": name, "value": value}})),
                Some(j) if *name == "JAVA_TOOL_OPTIONS" => match existing[j].get("value").and_then(Value::as_str) {
                    // Appended: the app's own JVM options stay.
                    Some(old) => patch.push(json!({"op": "replace", "path": format!("/spec/containers/{i}/env/{j}/value"), "value": format!("{old} {value}")})),
                    None => warnings.push(format!("container {cname}: JAVA_TOOL_OPTIONS comes from a reference; add the proxy properties yourself")),
                },
                Some(_) => warnings.push(format!("container {cname} sets {name} itself; left unchanged")),
            }
        }
    }
    Decision::Patch { patch, warnings }
}

/// Already injected: our annotation or our container is present.
fn is_injected(pod: &Value) -> bool {
    if pod
        .pointer(&format!(
            "/metadata/annotations/{}",
            escape(INJECTED_ANNOTATION)
        ))
        .is_some()
    {
        return true;
    }
    ["/spec/initContainers", "/spec/containers"]
        .iter()
        .any(|p| {
            pod.pointer(p).and_then(Value::as_array).is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.get("name").and_then(Value::as_str) == Some(SIDECAR_NAME))
            })
        })
}

/// The caller's name: an explicit annotation, the standard labels, else the workload's
/// name derived from the pod's generateName (`billing-7d9f8b6c4-` → `billing`).
pub fn service_name(pod: &Value) -> String {
    let get = |p: &str| {
        pod.pointer(p)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    if let Some(s) = get(&format!(
        "/metadata/annotations/{}",
        escape(SERVICE_ANNOTATION)
    )) {
        return sanitize(s);
    }
    for l in ["app.kubernetes.io/name", "app"] {
        if let Some(s) = get(&format!("/metadata/labels/{}", escape(l))) {
            return sanitize(s);
        }
    }
    if let Some(g) = get("/metadata/generateName") {
        let mut parts: Vec<&str> = g.trim_end_matches('-').split('-').collect();
        // Drop ReplicaSet / Job hash segments (short alphanumerics with a digit).
        while parts.len() > 1
            && parts
                .last()
                .is_some_and(|p| p.len() <= 10 && p.chars().any(|c| c.is_ascii_digit()))
        {
            parts.pop();
        }
        return sanitize(&parts.join("-"));
    }
    get("/metadata/name")
        .map(sanitize)
        .unwrap_or_else(|| "unknown".into())
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(128)
        .collect()
}

/// JSON-pointer escaping of one reference token (RFC 6901).
pub fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn no_proxy_list(cfg: &InjectConfig) -> Vec<String> {
    // Only loopback and the API server: in-cluster calls are exactly what we count.
    let mut v: Vec<String> = [
        "localhost",
        "127.0.0.1",
        "::1",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(
        cfg.no_proxy
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from),
    );
    v
}

/// The env vars set on every app container.
pub fn proxy_env(cfg: &InjectConfig) -> Vec<(&'static str, String)> {
    let proxy = format!("http://127.0.0.1:{PROXY_PORT}");
    let no_proxy = no_proxy_list(cfg).join(",");
    let java_non_proxy = no_proxy_list(cfg)
        .iter()
        .map(|h| {
            h.strip_prefix('.')
                .map(|d| format!("*.{d}"))
                .unwrap_or_else(|| h.clone())
        })
        .collect::<Vec<_>>()
        .join("|");
    let java = format!(
        "-Dhttp.proxyHost=127.0.0.1 -Dhttp.proxyPort={PROXY_PORT} -Dhttps.proxyHost=127.0.0.1 -Dhttps.proxyPort={PROXY_PORT} -Dhttp.nonProxyHosts={java_non_proxy}"
    );
    vec![
        ("HTTP_PROXY", proxy.clone()),
        ("HTTPS_PROXY", proxy.clone()),
        ("http_proxy", proxy.clone()),
        ("https_proxy", proxy),
        ("NO_PROXY", no_proxy.clone()),
        ("no_proxy", no_proxy),
        ("JAVA_TOOL_OPTIONS", java),
    ]
}

/// The sidecar as a native sidecar (an init container with `restartPolicy: Always`):
/// it starts before the app and stops after it, so the final flush sees every call.
pub fn sidecar_container(cfg: &InjectConfig, service: &str, environment: &str) -> Value {
    json!({
        "name": SIDECAR_NAME,
        "image": cfg.sidecar_image,
        "command": ["/usr/local/bin/whouses-sidecar"],
        "restartPolicy": "Always",
        "args": ["--listen", format!("127.0.0.1:{PROXY_PORT}"), "--admin-listen", format!("0.0.0.0:{ADMIN_PORT}")],
        "env": [
            {"name": "WHOUSES_SERVICE", "value": service},
            {"name": "WHOUSES_ENVIRONMENT", "value": environment},
            {"name": "WHOUSES_INSTANCE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "WHOUSES_COLLECTOR_URL", "value": cfg.collector_url},
            {"name": "WHOUSES_FLUSH_INTERVAL", "value": cfg.flush_interval},
            {"name": "WHOUSES_TOKEN", "valueFrom": {"secretKeyRef": {"name": cfg.token_secret, "key": "ingest-token", "optional": true}}},
            {"name": "WHOUSES_LOG_FORMAT", "value": "json"}
        ],
        "ports": [{"name": "whouses-admin", "containerPort": ADMIN_PORT, "protocol": "TCP"}],
        "startupProbe": {"httpGet": {"path": "/healthz", "port": ADMIN_PORT}, "periodSeconds": 1, "failureThreshold": 30},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": ADMIN_PORT}, "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": ADMIN_PORT}, "periodSeconds": 10},
        "resources": {
            "requests": {"cpu": cfg.cpu_request, "memory": cfg.memory_request},
            "limits": {"memory": cfg.memory_limit}
        },
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": 65532,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_come_from_labels_then_generate_name() {
        assert_eq!(
            service_name(&json!({"metadata": {"labels": {"app.kubernetes.io/name": "billing"}}})),
            "billing"
        );
        assert_eq!(
            service_name(&json!({"metadata": {"labels": {"app": "orders"}}})),
            "orders"
        );
        assert_eq!(
            service_name(&json!({"metadata": {"generateName": "tis-sync-7d9f8b6c4-"}})),
            "tis-sync"
        );
        assert_eq!(
            service_name(&json!({"metadata": {"generateName": "nightly-job-28475610-"}})),
            "nightly-job"
        );
        assert_eq!(service_name(&json!({"metadata": {}})), "unknown");
    }

    #[test]
    fn pointer_escaping() {
        assert_eq!(escape("whouses.io/inject"), "whouses.io~1inject");
        assert_eq!(escape("a~b"), "a~0b");
    }

    #[test]
    fn no_proxy_keeps_in_cluster_calls_proxied() {
        let env = proxy_env(&InjectConfig {
            no_proxy: "metadata.internal".into(),
            ..Default::default()
        });
        let no_proxy = &env.iter().find(|(k, _)| *k == "NO_PROXY").unwrap().1;
        assert!(
            no_proxy.contains("kubernetes.default.svc") && no_proxy.ends_with("metadata.internal")
        );
        for wide in [
            ".svc.cluster.local",
            ".cluster.local",
            "cluster.local",
            ".svc",
            "svc",
        ] {
            assert!(
                !no_proxy.split(',').any(|e| e == wide),
                "{wide} in {no_proxy}"
            );
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let cfg = InjectConfig::default();
        assert!(matches!(
            review(b"{not json", &cfg, false),
            Err(ReviewError::Json(_))
        ));
        assert_eq!(review(b"{}", &cfg, false), Err(ReviewError::NotAReview));
        assert_eq!(review(b"[]", &cfg, false), Err(ReviewError::NotAReview));
    }
}
