//! What injection does to a pod, as a JSON patch inside an AdmissionReview response.
//! Pure functions: the server only moves bytes, counts outcomes and logs them.
//!
//! It fails open: the pod is always allowed. Anything the webhook cannot understand, and
//! any pod whose sidecar could not start (a name the sidecar refuses, a port it needs
//! already declared, host networking, an unusable collector CA), is admitted **without**
//! the sidecar, with an AdmissionReview warning and a `whouses.io/skipped` annotation
//! saying why — never a pod that cannot start.

use base64::Engine as _;
use serde_json::{json, Value};

use crate::ca::CollectorCa;
use crate::config::{InjectConfig, Mode};
use crate::env::{self, ProxyEnv};
use crate::names::{self, NameKind};
use crate::sidecar::{self, CA_VOLUME, COLLECTOR_CA_ANNOTATION, PORTS, PROXY_PORT, SIDECAR_NAME};

/// Label (on a pod or namespace) that asks for injection.
pub const INJECT_LABEL: &str = "whouses.io/inject";
/// Annotation set on injected pods (and checked, so injection happens once).
pub const INJECTED_ANNOTATION: &str = "whouses.io/injected";
/// Annotation that overrides the environment name.
pub const ENVIRONMENT_ANNOTATION: &str = "whouses.io/environment";
/// Annotation that overrides the service name.
pub const SERVICE_ANNOTATION: &str = "whouses.io/service";
/// Annotation set on a pod that was selected but not injected: the reason.
pub const SKIPPED_ANNOTATION: &str = "whouses.io/skipped";
/// Annotation set on an injected pod with warnings (e.g. a container left unproxied).
pub const WARNINGS_ANNOTATION: &str = "whouses.io/warnings";
/// Annotation choosing the capture mode (`explicit` or `transparent`) for one pod.
pub const MODE_ANNOTATION: &str = "whouses.io/mode";

/// Why the review cannot be answered at all (the HTTP layer turns this into a 400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReviewError {
    #[error("not JSON: {0}")]
    Json(String),
    #[error("not an admission.k8s.io/v1 AdmissionReview with request.uid")]
    NotAReview,
}

/// A pod that was wanted but is admitted without the sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SkipReason {
    NotAPod,
    NoPodObject,
    NoContainers,
    InvalidService,
    InvalidEnvironment,
    InvalidInstance,
    HostNetwork,
    NotLinux,
    PortInUse,
    NameInUse,
    CollectorCaUnavailable,
    InvalidMode,
}

impl SkipReason {
    /// Every reason, for metrics that show zeros.
    pub const ALL: [SkipReason; 12] = [
        SkipReason::NotAPod,
        SkipReason::NoPodObject,
        SkipReason::NoContainers,
        SkipReason::InvalidService,
        SkipReason::InvalidEnvironment,
        SkipReason::InvalidInstance,
        SkipReason::HostNetwork,
        SkipReason::NotLinux,
        SkipReason::PortInUse,
        SkipReason::NameInUse,
        SkipReason::CollectorCaUnavailable,
        SkipReason::InvalidMode,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            SkipReason::NotAPod => "not_a_pod",
            SkipReason::NoPodObject => "no_pod_object",
            SkipReason::NoContainers => "no_containers",
            SkipReason::InvalidService => "invalid_service",
            SkipReason::InvalidEnvironment => "invalid_environment",
            SkipReason::InvalidInstance => "invalid_instance",
            SkipReason::HostNetwork => "host_network",
            SkipReason::NotLinux => "not_linux",
            SkipReason::PortInUse => "port_in_use",
            SkipReason::NameInUse => "name_in_use",
            SkipReason::CollectorCaUnavailable => "collector_ca_unavailable",
            SkipReason::InvalidMode => "invalid_mode",
        }
    }
}

/// What happened to one review, for the server's log line and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Patched; the warnings were returned too.
    Injected {
        service: String,
        environment: String,
        warnings: Vec<String>,
    },
    /// Wanted, but admitted without the sidecar.
    Skipped { reason: SkipReason, detail: String },
    /// Not labelled (or opted out), or not a CREATE.
    NotSelected,
    /// Our annotation or container is already there.
    AlreadyInjected,
}

/// The response document and what it decided.
#[derive(Debug, Clone)]
pub struct Answer {
    pub review: Value,
    pub outcome: Outcome,
    /// The pod's namespace and name (or generateName), for logs.
    pub pod: String,
}

/// Answer one AdmissionReview (the request body) with an AdmissionReview response.
/// `namespace_selected`: the request came through the namespace-label webhook, so pods
/// are injected unless they opt out with `whouses.io/inject: "false"`. `ca`: the
/// collector's CA as read for this review.
pub fn review(
    body: &[u8],
    cfg: &InjectConfig,
    ca: &CollectorCa,
    namespace_selected: bool,
) -> Result<Answer, ReviewError> {
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
    let (outcome, patch) = decide(request, cfg, ca, namespace_selected);
    let warnings: Vec<String> = match &outcome {
        Outcome::Injected { warnings, .. } => warnings.clone(),
        Outcome::Skipped { detail, .. } => vec![format!("not injected: {detail}")],
        Outcome::NotSelected | Outcome::AlreadyInjected => Vec::new(),
    };
    if !warnings.is_empty() {
        response["warnings"] = json!(warnings
            .iter()
            .map(|w| format!("whouses: {w}"))
            .collect::<Vec<_>>());
    }
    if !patch.is_empty() {
        let bytes = serde_json::to_vec(&patch).unwrap_or_default();
        response["patchType"] = json!("JSONPatch");
        response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
    let namespace = request
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let name = request
        .pointer("/object/metadata/name")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .or_else(|| {
            request
                .get("name")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        })
        .or_else(|| {
            request
                .pointer("/object/metadata/generateName")
                .and_then(Value::as_str)
        })
        .unwrap_or("");
    Ok(Answer {
        review: json!({
            "apiVersion": api_version,
            "kind": "AdmissionReview",
            "response": response,
        }),
        outcome,
        pod: format!("{namespace}/{name}"),
    })
}

fn skip(reason: SkipReason, detail: impl Into<String>) -> Outcome {
    Outcome::Skipped {
        reason,
        detail: detail.into(),
    }
}

/// The outcome and the patch (empty: unchanged).
fn decide(
    request: &Value,
    cfg: &InjectConfig,
    ca: &CollectorCa,
    namespace_selected: bool,
) -> (Outcome, Vec<Value>) {
    let kind = request
        .pointer("/kind/kind")
        .and_then(Value::as_str)
        .unwrap_or("");
    if kind != "Pod" {
        return (
            skip(SkipReason::NotAPod, format!("expected a Pod, got {kind:?}")),
            Vec::new(),
        );
    }
    if request
        .get("operation")
        .and_then(Value::as_str)
        .is_some_and(|o| o != "CREATE")
    {
        return (Outcome::NotSelected, Vec::new());
    }
    let Some(pod) = request.get("object").filter(|o| o.is_object()) else {
        return (
            skip(SkipReason::NoPodObject, "the review carries no pod object"),
            Vec::new(),
        );
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
        return (Outcome::NotSelected, Vec::new());
    }
    if is_injected(pod) {
        return (Outcome::AlreadyInjected, Vec::new());
    }
    match plan(request, pod, cfg, ca) {
        Ok((outcome, patch)) => (outcome, patch),
        Err(outcome) => {
            let detail = match &outcome {
                Outcome::Skipped { detail, .. } => detail.clone(),
                _ => String::new(),
            };
            // Say why on the pod itself: for pods made by a controller, the warnings go to
            // the controller, and the annotation is what a person will see.
            (outcome, annotate(pod, &[(SKIPPED_ANNOTATION, detail)]))
        }
    }
}

/// The injection patch, or the reason the pod is admitted without the sidecar.
fn plan(
    request: &Value,
    pod: &Value,
    cfg: &InjectConfig,
    ca: &CollectorCa,
) -> Result<(Outcome, Vec<Value>), Outcome> {
    let Some(containers) = pod.pointer("/spec/containers").and_then(Value::as_array) else {
        return Err(skip(
            SkipReason::NoContainers,
            "the pod has no spec.containers",
        ));
    };
    if pod.pointer("/spec/hostNetwork").and_then(Value::as_bool) == Some(true) {
        return Err(skip(
            SkipReason::HostNetwork,
            format!(
                "hostNetwork pods share the node's ports; the sidecar's {PROXY_PORT} would clash"
            ),
        ));
    }
    if let Some(os) = pod
        .pointer("/spec/os/name")
        .and_then(Value::as_str)
        .filter(|os| *os != "linux")
    {
        return Err(skip(
            SkipReason::NotLinux,
            format!("spec.os.name is {os:?}; the sidecar image is Linux only"),
        ));
    }
    if let Some((container, port)) = declared_port_clash(pod) {
        return Err(skip(
            SkipReason::PortInUse,
            format!("container {container} declares port {port}, which the sidecar needs"),
        ));
    }
    let volumes = pod.pointer("/spec/volumes").and_then(Value::as_array);
    if volumes.is_some_and(|vs| {
        vs.iter()
            .any(|v| v.get("name").and_then(Value::as_str) == Some(CA_VOLUME))
    }) {
        return Err(skip(
            SkipReason::NameInUse,
            format!("the pod already has a volume named {CA_VOLUME}"),
        ));
    }
    let namespace = request
        .get("namespace")
        .and_then(Value::as_str)
        .or_else(|| pod.pointer("/metadata/namespace").and_then(Value::as_str))
        .unwrap_or("default");
    let id = names::identity(
        pod,
        request.get("name").and_then(Value::as_str),
        namespace,
        cfg.default_environment.as_deref(),
    )
    .map_err(|e| {
        let reason = match e.what {
            NameKind::Service => SkipReason::InvalidService,
            NameKind::Environment => SkipReason::InvalidEnvironment,
            NameKind::Instance => SkipReason::InvalidInstance,
        };
        skip(reason, e.message)
    })?;
    let ca_pem = match ca {
        CollectorCa::NotConfigured => None,
        CollectorCa::Pem(pem) => Some(pem.as_str()),
        CollectorCa::Unavailable(why) => {
            return Err(skip(SkipReason::CollectorCaUnavailable, why.clone()))
        }
    };

    let mode = match pod
        .pointer(&format!(
            "/metadata/annotations/{}",
            escape(MODE_ANNOTATION)
        ))
        .and_then(Value::as_str)
    {
        None => cfg.default_mode,
        Some(m) => Mode::parse(m).ok_or_else(|| {
            skip(
                SkipReason::InvalidMode,
                format!("{MODE_ANNOTATION} is {m:?}; expected \"explicit\" or \"transparent\""),
            )
        })?,
    };

    let mut patch = Vec::new();
    let mut warnings = Vec::new();
    let mut ours = Vec::new();
    if mode == Mode::Transparent {
        // First of all: the redirect is in place before anything of the pod runs.
        ours.push(sidecar::iptables_init(cfg));
    }
    ours.push(sidecar::container(cfg, &id, ca_pem.is_some(), mode));
    if pod
        .pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .is_some()
    {
        // First, so the app's own init containers can already reach the network.
        for (i, c) in ours.into_iter().enumerate() {
            patch.push(
                json!({"op": "add", "path": format!("/spec/initContainers/{i}"), "value": c}),
            );
        }
    } else {
        patch.push(json!({"op": "add", "path": "/spec/initContainers", "value": ours}));
    }
    if ca_pem.is_some() {
        if volumes.is_some() {
            patch.push(
                json!({"op": "add", "path": "/spec/volumes/-", "value": sidecar::ca_volume()}),
            );
        } else {
            patch.push(
                json!({"op": "add", "path": "/spec/volumes", "value": [sidecar::ca_volume()]}),
            );
        }
    }
    match mode {
        Mode::Explicit => {
            let want = proxy_env(cfg);
            for (i, c) in containers.iter().enumerate() {
                env::container_ops(i, c, &want, &mut patch, &mut warnings);
            }
        }
        // No proxy variables: the redirect captures every client.
        Mode::Transparent => warnings.extend(uncaptured(pod)),
    }
    let mut notes = vec![
        (INJECTED_ANNOTATION, "true".to_string()),
        (
            MODE_ANNOTATION,
            match mode {
                Mode::Explicit => "explicit",
                Mode::Transparent => "transparent",
            }
            .to_string(),
        ),
    ];
    if let Some(pem) = ca_pem {
        notes.push((COLLECTOR_CA_ANNOTATION, pem.to_string()));
    }
    if !warnings.is_empty() {
        notes.push((WARNINGS_ANNOTATION, warnings.join("; ")));
    }
    patch.extend(annotate(pod, &notes));
    Ok((
        Outcome::Injected {
            service: id.service,
            environment: id.environment,
            warnings,
        },
        patch,
    ))
}

/// Containers that run as the sidecar's uid: the redirect leaves their calls alone.
fn uncaptured(pod: &Value) -> Vec<String> {
    let pod_uid = pod
        .pointer("/spec/securityContext/runAsUser")
        .and_then(Value::as_u64);
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| {
            c.pointer("/securityContext/runAsUser")
                .and_then(Value::as_u64)
                .or(pod_uid)
                == Some(u64::from(sidecar::SIDECAR_UID))
        })
        .map(|c| {
            format!(
                "container {} runs as uid {}, the sidecar's: transparent capture leaves its calls alone (not counted)",
                c.get("name").and_then(Value::as_str).unwrap_or("?"),
                sidecar::SIDECAR_UID
            )
        })
        .collect()
}

/// Patch operations that set these annotations.
fn annotate(pod: &Value, notes: &[(&str, String)]) -> Vec<Value> {
    if pod
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .is_some()
    {
        notes
            .iter()
            .map(|(k, v)| json!({"op": "add", "path": format!("/metadata/annotations/{}", escape(k)), "value": v}))
            .collect()
    } else {
        let map: serde_json::Map<String, Value> = notes
            .iter()
            .map(|(k, v)| ((*k).to_string(), Value::String(v.clone())))
            .collect();
        let mut ops = Vec::new();
        if pod.get("metadata").and_then(Value::as_object).is_none() {
            ops.push(json!({"op": "add", "path": "/metadata", "value": {}}));
        }
        ops.push(json!({"op": "add", "path": "/metadata/annotations", "value": map}));
        ops
    }
}

/// A container (app or init) that declares one of the sidecar's ports.
fn declared_port_clash(pod: &Value) -> Option<(String, u64)> {
    for list in ["/spec/containers", "/spec/initContainers"] {
        for c in pod
            .pointer(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for p in c
                .get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let port = p.get("containerPort").and_then(Value::as_u64);
                if let Some(port) = port.filter(|p| PORTS.iter().any(|s| u64::from(*s) == *p)) {
                    let name = c.get("name").and_then(Value::as_str).unwrap_or("?");
                    return Some((name.to_string(), port));
                }
            }
        }
    }
    None
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

/// JSON-pointer escaping of one reference token (RFC 6901).
pub fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Our NO_PROXY entries: only loopback and the API server, because in-cluster calls are
/// exactly what we count.
fn no_proxy_list(cfg: &InjectConfig) -> Vec<String> {
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
    v.extend(cfg.no_proxy_entries().map(String::from));
    v
}

/// What is set on every app container (see [`crate::env`] for how it meets the app's own).
pub fn proxy_env(cfg: &InjectConfig) -> ProxyEnv {
    let proxy = format!("http://127.0.0.1:{PROXY_PORT}");
    let no_proxy = no_proxy_list(cfg);
    let java_non_proxy = no_proxy
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
    ProxyEnv {
        proxy,
        no_proxy,
        java,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let no_proxy = env.no_proxy.join(",");
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
        let ca = CollectorCa::NotConfigured;
        assert!(matches!(
            review(b"{not json", &cfg, &ca, false),
            Err(ReviewError::Json(_))
        ));
        assert_eq!(
            review(b"{}", &cfg, &ca, false).map(|a| a.outcome),
            Err(ReviewError::NotAReview)
        );
        assert_eq!(
            review(b"[]", &cfg, &ca, false).map(|a| a.outcome),
            Err(ReviewError::NotAReview)
        );
    }

    #[test]
    fn every_skip_reason_has_a_distinct_label() {
        let mut labels: Vec<_> = SkipReason::ALL.iter().map(|r| r.label()).collect();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), SkipReason::ALL.len());
    }
}
