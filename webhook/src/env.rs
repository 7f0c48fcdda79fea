//! The proxy variables of one app container, as JSON patch operations, respecting what the
//! app already sets:
//!
//! * **The app sets a proxy itself** (`HTTP_PROXY`, `HTTPS_PROXY` or their lower-case
//!   forms in `env`): the container is left alone, with a warning. Its proxy may be an
//!   egress proxy it cannot work without; the sidecar dials directly and cannot chain to
//!   it, so routing through the sidecar could break the app. Its calls are not counted.
//! * **`NO_PROXY` in `env`**: merged — the app's entries first, then ours (loopback and
//!   the API server) — into both spellings. From a reference (`valueFrom`) the webhook
//!   cannot read it: left alone, with a warning saying what to add.
//! * **`JAVA_TOOL_OPTIONS`**: a literal is appended to (the app's JVM options stay), unless
//!   it already names a proxy (left alone, warned). When it may come from somewhere the
//!   webhook cannot see — a reference, or an `envFrom` source — setting it would hide the
//!   app's own JVM options (heap size, agents), so the proxy properties go into
//!   `JDK_JAVA_OPTIONS` instead, which the `java` launcher (JDK 9+) reads in addition.
//! * **`envFrom`** (ConfigMap/Secret): the webhook cannot see those values. The proxy
//!   variables are set explicitly (a container's `env` wins over its `envFrom`), so the
//!   app's calls are counted, with a warning naming the sources: if one of them set a
//!   proxy, the injected one now takes its place.

use serde_json::{json, Value};

/// Proxy variables: if the app sets any of these, its container is left alone.
const PROXY_VARS: [&str; 4] = ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"];
const NO_PROXY_VARS: [&str; 2] = ["NO_PROXY", "no_proxy"];

/// What injection sets, computed once per review.
#[derive(Debug, Clone)]
pub struct ProxyEnv {
    /// `http://127.0.0.1:15001`.
    pub proxy: String,
    /// Our NO_PROXY entries (loopback, the API server, `--no-proxy`).
    pub no_proxy: Vec<String>,
    /// `-Dhttp.proxyHost=… -Dhttp.nonProxyHosts=…`.
    pub java: String,
}

/// The patch operations and warnings for container `index` of `/spec/containers`.
pub fn container_ops(
    index: usize,
    container: &Value,
    want: &ProxyEnv,
    ops: &mut Vec<Value>,
    warnings: &mut Vec<String>,
) {
    let name = container.get("name").and_then(Value::as_str).unwrap_or("?");
    let env: &[Value] = container
        .get("env")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let find = |var: &str| {
        env.iter()
            .position(|e| e.get("name").and_then(Value::as_str) == Some(var))
            .map(|j| (j, env[j].get("value").and_then(Value::as_str)))
    };
    if let Some(var) = PROXY_VARS.iter().find(|v| find(v).is_some()) {
        warnings.push(format!(
            "container {name} sets {var} itself: left unchanged, its calls are not counted"
        ));
        return;
    }
    let env_from = env_from_sources(container);
    if !env_from.is_empty() {
        warnings.push(format!(
            "container {name}: envFrom ({}) may set HTTP_PROXY/NO_PROXY; the injected values take precedence",
            env_from.join(", ")
        ));
    }

    let base = format!("/spec/containers/{index}/env");
    let mut adds: Vec<(String, String)> = Vec::new();
    let replace = |ops: &mut Vec<Value>, j: usize, value: String| {
        ops.push(json!({"op": "replace", "path": format!("{base}/{j}/value"), "value": value}));
    };
    for var in PROXY_VARS {
        adds.push((var.to_string(), want.proxy.clone()));
    }

    // NO_PROXY: merged with the app's literal entries; a reference is left alone.
    let existing: Vec<(&str, usize, Option<&str>)> = NO_PROXY_VARS
        .iter()
        .filter_map(|v| find(v).map(|(j, val)| (*v, j, val)))
        .collect();
    if let Some((var, _, _)) = existing.iter().find(|(_, _, val)| val.is_none()) {
        warnings.push(format!(
            "container {name}: {var} comes from a reference; add {} to it yourself",
            want.no_proxy.join(",")
        ));
    } else {
        let mut merged: Vec<String> = Vec::new();
        for (_, _, val) in &existing {
            for entry in val.unwrap_or("").split(',').map(str::trim) {
                if !entry.is_empty() && !merged.iter().any(|m| m == entry) {
                    merged.push(entry.to_string());
                }
            }
        }
        for entry in &want.no_proxy {
            if !merged.contains(entry) {
                merged.push(entry.clone());
            }
        }
        let merged = merged.join(",");
        for var in NO_PROXY_VARS {
            match existing.iter().find(|(v, _, _)| *v == var) {
                Some((_, j, _)) => replace(ops, *j, merged.clone()),
                None => adds.push((var.to_string(), merged.clone())),
            }
        }
    }

    // JVM proxy properties.
    let names_proxy = |s: &str| s.contains("-Dhttp.proxyHost") || s.contains("-Dhttps.proxyHost");
    match find("JAVA_TOOL_OPTIONS") {
        Some((_, Some(old))) if names_proxy(old) => warnings.push(format!(
            "container {name}: JAVA_TOOL_OPTIONS names a proxy itself; left unchanged"
        )),
        Some((j, Some(old))) => replace(ops, j, format!("{old} {}", want.java).trim().to_string()),
        // A reference, or envFrom that may hold the app's JVM options: never hide them.
        Some((_, None)) => jdk_java_options(name, &find, want, ops, &mut adds, warnings, &base),
        None if !env_from.is_empty() => {
            jdk_java_options(name, &find, want, ops, &mut adds, warnings, &base)
        }
        None => adds.push(("JAVA_TOOL_OPTIONS".into(), want.java.clone())),
    }

    if env.is_empty() && container.get("env").and_then(Value::as_array).is_none() {
        ops.push(json!({
            "op": "add",
            "path": base,
            "value": adds.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
        }));
    } else {
        for (k, v) in adds {
            ops.push(
                json!({"op": "add", "path": format!("{base}/-"), "value": {"name": k, "value": v}}),
            );
        }
    }
}

/// The JVM proxy properties in `JDK_JAVA_OPTIONS`, when `JAVA_TOOL_OPTIONS` is not ours
/// to set.
fn jdk_java_options<'a>(
    name: &str,
    find: &impl Fn(&str) -> Option<(usize, Option<&'a str>)>,
    want: &ProxyEnv,
    ops: &mut Vec<Value>,
    adds: &mut Vec<(String, String)>,
    warnings: &mut Vec<String>,
    base: &str,
) {
    match find("JDK_JAVA_OPTIONS") {
        None => adds.push(("JDK_JAVA_OPTIONS".into(), want.java.clone())),
        Some((j, Some(old))) if !old.contains("-Dhttp.proxyHost") => ops.push(json!({
            "op": "replace",
            "path": format!("{base}/{j}/value"),
            "value": format!("{old} {}", want.java).trim(),
        })),
        Some(_) => warnings.push(format!(
            "container {name}: JAVA_TOOL_OPTIONS and JDK_JAVA_OPTIONS are not ours to set; JVMs need the proxy properties added by hand"
        )),
    }
}

/// `ConfigMap NAME` / `Secret NAME` for each `envFrom` entry.
fn env_from_sources(container: &Value) -> Vec<String> {
    container
        .get("envFrom")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .map(|e| {
                    let (kind, r) = if let Some(r) = e.get("configMapRef") {
                        ("ConfigMap", r)
                    } else if let Some(r) = e.get("secretRef") {
                        ("Secret", r)
                    } else {
                        ("source", e)
                    };
                    let n = r.get("name").and_then(Value::as_str).unwrap_or("?");
                    format!("{kind} {n}")
                })
                .collect()
        })
        .unwrap_or_default()
}
