//! The sidecar's identity for a pod — service, environment, instance — derived and
//! checked exactly as the sidecar checks its `--service`, `--environment` and
//! `--instance` (`whouses_wire::report::check_name`: letters, digits, `- _ . : /`, 1–128
//! characters). A name the sidecar would refuse is found here, before the pod is patched,
//! so injection is skipped instead of adding a sidecar that cannot start.

use serde_json::Value;
use whouses_wire::report::MAX_NAME_LEN;
use whouses_wire::report::{check_name, ReportError};

use crate::mutate::{escape, ENVIRONMENT_ANNOTATION, SERVICE_ANNOTATION};

/// Who the sidecar reports as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub service: String,
    pub environment: String,
    pub instance: Instance,
}

/// The instance id: the pod's name when the sidecar can take it, else a shortened form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instance {
    /// `metadata.name` through the downward API (also the only way to learn a generated
    /// name, which the API server limits to 63 characters).
    PodName,
    /// A pod name over 128 characters, shortened deterministically (a prefix and a hash
    /// of the whole name), so the same pod always gets the same id.
    Shortened(String),
}

/// Why no identity could be derived: which name, and what the sidecar would say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameError {
    pub what: NameKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    Service,
    Environment,
    Instance,
}

/// Check one name as the sidecar does; the error is one sentence naming `what`, short
/// enough for an AdmissionReview warning (the API server truncates long ones).
pub fn check(what: &str, v: &str) -> Result<(), String> {
    check_name(what, v).map_err(|e| {
        let shown = shown(v);
        match e {
            ReportError::Field { field, reason } => format!("{field} {shown}: {reason}"),
            other => format!("{what} {shown}: {other}"),
        }
    })
}

/// A value quoted for a message: at most 40 characters, then how long it really is.
fn shown(v: &str) -> String {
    if v.chars().count() <= 40 {
        format!("{v:?}")
    } else {
        let head: String = v.chars().take(40).collect();
        format!("{head:?}… ({} characters)", v.chars().count())
    }
}

/// Derive and check the identity of a pod. `namespace` is the review's namespace.
pub fn identity(
    pod: &Value,
    request_name: Option<&str>,
    namespace: &str,
    default_environment: Option<&str>,
) -> Result<Identity, NameError> {
    let annotation = |key: &str| {
        pod.pointer(&format!("/metadata/annotations/{}", escape(key)))
            .and_then(Value::as_str)
            // An empty annotation is an unset one (often a template's empty value).
            .filter(|s| !s.is_empty())
    };
    let service = match annotation(SERVICE_ANNOTATION) {
        // An explicit name is taken as written or refused: never silently rewritten.
        Some(s) => {
            check(&format!("annotation {SERVICE_ANNOTATION}"), s).map_err(|message| NameError {
                what: NameKind::Service,
                message,
            })?;
            s.to_string()
        }
        None => {
            let s = derived_service_name(pod);
            check("service name", &s).map_err(|message| NameError {
                what: NameKind::Service,
                message,
            })?;
            s
        }
    };
    let (source, environment) = match (annotation(ENVIRONMENT_ANNOTATION), default_environment) {
        (Some(e), _) => (format!("annotation {ENVIRONMENT_ANNOTATION}"), e),
        (None, Some(e)) if !e.is_empty() => ("--default-environment".to_string(), e),
        _ => ("namespace".to_string(), namespace),
    };
    check(&source, environment).map_err(|message| NameError {
        what: NameKind::Environment,
        message,
    })?;
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .or(request_name.filter(|s| !s.is_empty()));
    let instance = match name {
        None => Instance::PodName,
        Some(n) if n.len() > MAX_NAME_LEN => {
            let short = shorten(n);
            check("shortened pod name", &short).map_err(|message| NameError {
                what: NameKind::Instance,
                message,
            })?;
            Instance::Shortened(short)
        }
        Some(n) => {
            check("pod name", n).map_err(|message| NameError {
                what: NameKind::Instance,
                message,
            })?;
            Instance::PodName
        }
    };
    Ok(Identity {
        service,
        environment: environment.to_string(),
        instance,
    })
}

/// The caller's name when no annotation gives it: the standard labels, else the
/// workload's name derived from the pod's generateName (`billing-7d9f8b6c4-` →
/// `billing`), else the pod's name. Label values and generated names only hold characters
/// the sidecar accepts; anything else is replaced by `-` and cut to 128 characters.
pub fn derived_service_name(pod: &Value) -> String {
    let get = |p: &str| {
        pod.pointer(p)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
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
    let s: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(MAX_NAME_LEN)
        .collect();
    if s.is_empty() {
        "unknown".into()
    } else {
        s
    }
}

/// A name over 128 characters as `PREFIX-HASH`: the first 111 characters (without a
/// trailing `-` or `.`) and 16 hex digits of a 64-bit FNV-1a hash of the whole name (at
/// most 128 in all). Deterministic, so a
/// pod keeps its id across sidecar restarts; the hash keeps long names that share a
/// prefix apart.
pub fn shorten(name: &str) -> String {
    shorten_within(name, MAX_NAME_LEN)
}

/// What the inbound sidecar's instance id appends to the pod's (issue 14): two sidecars
/// of one pod must not share an instance, whose batches are numbered apart.
pub const INBOUND_SUFFIX: &str = "/inbound";

/// The inbound sidecar's instance id: the pod's name with [`INBOUND_SUFFIX`] (appended in
/// the container's environment when the name comes from the downward API), shortened
/// first when the two would be too long.
pub fn inbound_instance(pod: &Value, request_name: Option<&str>) -> Instance {
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .or(request_name.filter(|s| !s.is_empty()));
    match name {
        Some(n) if n.len() + INBOUND_SUFFIX.len() > MAX_NAME_LEN => Instance::Shortened(format!(
            "{}{INBOUND_SUFFIX}",
            shorten_within(n, MAX_NAME_LEN - INBOUND_SUFFIX.len())
        )),
        _ => Instance::PodName,
    }
}

/// [`shorten`] to at most `max` characters (at least 18).
fn shorten_within(name: &str, max: usize) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let prefix: String = name.chars().take(max.saturating_sub(17)).collect();
    format!("{}-{hash:016x}", prefix.trim_end_matches(['-', '.']))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn service_names_come_from_labels_then_generate_name() {
        assert_eq!(
            derived_service_name(
                &json!({"metadata": {"labels": {"app.kubernetes.io/name": "billing"}}})
            ),
            "billing"
        );
        assert_eq!(
            derived_service_name(&json!({"metadata": {"labels": {"app": "orders"}}})),
            "orders"
        );
        assert_eq!(
            derived_service_name(&json!({"metadata": {"generateName": "tis-sync-7d9f8b6c4-"}})),
            "tis-sync"
        );
        assert_eq!(
            derived_service_name(&json!({"metadata": {"generateName": "nightly-job-28475610-"}})),
            "nightly-job"
        );
        assert_eq!(derived_service_name(&json!({"metadata": {}})), "unknown");
    }

    fn pod(annotations: Value, name: &str) -> Value {
        json!({"metadata": {"name": name, "annotations": annotations, "labels": {"app": "billing"}}})
    }

    #[test]
    fn explicit_names_are_checked_not_rewritten() {
        let id = identity(&pod(json!({}), "billing-1"), None, "payments", None).unwrap();
        assert_eq!(
            id,
            Identity {
                service: "billing".into(),
                environment: "payments".into(),
                instance: Instance::PodName
            }
        );
        let e = identity(
            &pod(json!({"whouses.io/environment": "pre prod"}), "b"),
            None,
            "payments",
            None,
        )
        .unwrap_err();
        assert_eq!(e.what, NameKind::Environment);
        assert!(
            e.message.contains("whouses.io/environment") && e.message.contains("' '"),
            "{}",
            e.message
        );
        let e = identity(
            &pod(json!({"whouses.io/service": "x".repeat(129)}), "b"),
            None,
            "payments",
            None,
        )
        .unwrap_err();
        assert_eq!(e.what, NameKind::Service);
        assert!(e.message.contains("longer than 128"), "{}", e.message);
        assert!(
            e.message.len() < 160,
            "short enough for a warning: {}",
            e.message
        );
        // Empty annotations are unset ones.
        let id = identity(
            &pod(
                json!({"whouses.io/environment": "", "whouses.io/service": ""}),
                "b",
            ),
            None,
            "payments",
            Some("prod"),
        )
        .unwrap();
        assert_eq!(
            (id.service.as_str(), id.environment.as_str()),
            ("billing", "prod")
        );
        // Allowed punctuation passes through unchanged.
        let id = identity(
            &pod(json!({"whouses.io/service": "team/billing:v2", "whouses.io/environment": "eu_west.prod"}), "b"),
            None,
            "payments",
            None,
        )
        .unwrap();
        assert_eq!(id.service, "team/billing:v2");
        assert_eq!(id.environment, "eu_west.prod");
    }

    #[test]
    fn the_inbound_instance_is_the_pods_with_a_suffix_within_the_limit() {
        let p = |name: &str| json!({"metadata": {"name": name}});
        assert_eq!(inbound_instance(&p("web-1"), None), Instance::PodName);
        assert_eq!(inbound_instance(&json!({}), None), Instance::PodName);
        let long = "x".repeat(125);
        let Instance::Shortened(s) = inbound_instance(&p(&long), None) else {
            panic!("not shortened")
        };
        assert!(
            s.len() <= MAX_NAME_LEN && s.ends_with(INBOUND_SUFFIX),
            "{s}"
        );
        assert!(check("instance", &s).is_ok());
        assert_ne!(s, shorten(&long));
    }

    #[test]
    fn long_pod_names_are_shortened_deterministically() {
        let long = format!("{}-0", "a".repeat(200));
        let id = identity(&pod(json!({}), &long), None, "ns", None).unwrap();
        let Instance::Shortened(s) = id.instance else {
            panic!("not shortened: {id:?}")
        };
        assert_eq!(s.len(), 128, "{s}");
        assert!(check("instance", &s).is_ok());
        assert_eq!(s, shorten(&long), "deterministic");
        let other = format!("{}-1", "a".repeat(200));
        assert_ne!(
            shorten(&other),
            s,
            "a shared prefix is told apart by the hash"
        );
        // A name from the request when the object has none.
        let id = identity(
            &json!({"metadata": {"labels": {"app": "x"}}}),
            Some(&long),
            "ns",
            None,
        )
        .unwrap();
        assert!(matches!(id.instance, Instance::Shortened(_)));
        // Exactly 128 is fine as it is; generated names come from the downward API.
        let id = identity(&pod(json!({}), &"b".repeat(128)), None, "ns", None).unwrap();
        assert_eq!(id.instance, Instance::PodName);
        let id = identity(
            &json!({"metadata": {"generateName": "web-5d8f-"}}),
            None,
            "ns",
            None,
        )
        .unwrap();
        assert_eq!(id.instance, Instance::PodName);
    }
}
