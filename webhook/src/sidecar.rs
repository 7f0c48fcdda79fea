//! The injected sidecar container and the pod-level pieces it needs.
//!
//! Ports, all in the pod's network namespace:
//! * `127.0.0.1:15001` — the proxy, for the app's containers only;
//! * `127.0.0.1:15020` — the admin port (`/stats`, `/metrics`, `/readyz` with detail):
//!   loopback, because it has no authentication and must not be reachable from other pods;
//! * `0.0.0.0:15021` — `--probe-listen`: only `/healthz` and `/readyz`, small bounded
//!   answers, for the kubelet's probes (which come from the node, not from loopback);
//! * `127.0.0.1:15053` — transparent mode: the DNS forwarder the pod's DNS is redirected to.
//!
//! With the annotation `whouses.io/inbound` (issue 14), a second sidecar,
//! [`inbound_container`], stands in front of the app: `0.0.0.0:15006` receives the
//! connections arriving at the app's listed ports (redirected by [`iptables_init`]), its
//! admin port is `127.0.0.1:15022` and its probe port `0.0.0.0:15023`.
//!
//! Transparent mode adds [`iptables_init`], the only container with privileges (NET_ADMIN
//! and NET_RAW, for the redirect); the sidecar itself runs as [`SIDECAR_UID`], the uid the
//! redirect leaves alone.
//!
//! With an https collector, the CA the sidecar must trust travels in the pod's own
//! annotation [`COLLECTOR_CA_ANNOTATION`] and is mounted as a file through the downward
//! API: nothing has to exist in the app's namespace beforehand (a missing ConfigMap would
//! leave the sidecar — and so the app — unable to start).

use serde_json::{json, Value};

use crate::config::{InjectConfig, Mode};
use crate::names::{Identity, Instance};

pub const SIDECAR_NAME: &str = "whouses-sidecar";
pub const PROXY_PORT: u16 = 15001;
pub const ADMIN_PORT: u16 = 15020;
pub const PROBE_PORT: u16 = 15021;
/// The DNS forwarder (transparent mode; UDP and TCP).
pub const DNS_PORT: u16 = 15053;
/// Ports the sidecar binds; an app container declaring one of them would make it fail.
pub const PORTS: [u16; 4] = [PROXY_PORT, ADMIN_PORT, PROBE_PORT, DNS_PORT];
/// The inbound sidecar (annotation `whouses.io/inbound`): its name and ports.
pub const INBOUND_NAME: &str = "whouses-inbound";
pub const INBOUND_PORT: u16 = 15006;
pub const INBOUND_ADMIN_PORT: u16 = 15022;
pub const INBOUND_PROBE_PORT: u16 = 15023;
/// Ports the inbound sidecar binds (checked only when it is added).
pub const INBOUND_PORTS: [u16; 3] = [INBOUND_PORT, INBOUND_ADMIN_PORT, INBOUND_PROBE_PORT];
/// The uid and gid the sidecar runs as; transparent mode never redirects its connections.
pub const SIDECAR_UID: u32 = 65532;
/// The init container that installs the iptables redirect (transparent mode).
pub const IPTABLES_INIT_NAME: &str = "whouses-iptables";
/// Pod annotation holding the collector's CA (PEM), projected into the sidecar.
pub const COLLECTOR_CA_ANNOTATION: &str = "whouses.io/collector-ca";
/// Pod label naming the team that owns the workload: the sidecar's `--owner`, read
/// through the downward API (empty, so no owner, when the pod has no such label; a
/// label's value is always a valid owner name).
pub const OWNER_LABEL: &str = "whouses.io/owner";
/// Name of the downward-API volume carrying the CA.
pub const CA_VOLUME: &str = "whouses-collector-ca";
/// Where the CA file appears in the sidecar.
pub const CA_DIR: &str = "/etc/whouses/collector-ca";

/// The sidecar as a native sidecar (an init container with `restartPolicy: Always`): it
/// starts before the app and stops after it, so the final flush sees every call.
/// `with_ca`: mount the CA volume and pass `--collector-ca`.
pub fn container(cfg: &InjectConfig, id: &Identity, with_ca: bool, mode: Mode) -> Value {
    let instance = match &id.instance {
        Instance::PodName => {
            json!({"name": "WHOUSES_INSTANCE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
        }
        Instance::Shortened(s) => json!({"name": "WHOUSES_INSTANCE", "value": s}),
    };
    let mut env = vec![
        json!({"name": "WHOUSES_SERVICE", "value": id.service}),
        json!({"name": "WHOUSES_ENVIRONMENT", "value": id.environment}),
        instance,
        json!({"name": "WHOUSES_COLLECTOR_URL", "value": cfg.collector_url}),
        json!({"name": "WHOUSES_FLUSH_INTERVAL", "value": cfg.flush_interval}),
        json!({"name": "WHOUSES_TOKEN", "valueFrom": {"secretKeyRef": {"name": cfg.token_secret, "key": "ingest-token", "optional": true}}}),
        json!({"name": "WHOUSES_LOG_FORMAT", "value": "json"}),
        json!({"name": "WHOUSES_OWNER", "valueFrom": {"fieldRef": {"fieldPath": format!("metadata.labels['{OWNER_LABEL}']")}}}),
    ];
    let mut c = json!({
        "name": SIDECAR_NAME,
        "image": cfg.sidecar_image,
        "command": ["/usr/local/bin/whouses-sidecar"],
        "restartPolicy": "Always",
        "args": [
            "--listen", format!("127.0.0.1:{PROXY_PORT}"),
            "--admin-listen", format!("127.0.0.1:{ADMIN_PORT}"),
            "--probe-listen", format!("0.0.0.0:{PROBE_PORT}"),
        ],
        "ports": [{"name": "whouses-probe", "containerPort": PROBE_PORT, "protocol": "TCP"}],
        "startupProbe": {"httpGet": {"path": "/healthz", "port": PROBE_PORT}, "periodSeconds": 1, "failureThreshold": 30},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": PROBE_PORT}, "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": PROBE_PORT}, "periodSeconds": 10},
        "resources": {
            "requests": {"cpu": cfg.cpu_request, "memory": cfg.memory_request},
            "limits": {"memory": cfg.memory_limit}
        },
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": SIDECAR_UID,
            "runAsGroup": SIDECAR_UID,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}
        }
    });
    if mode == Mode::Transparent {
        // The DNS forwarder the iptables redirect sends the pod's DNS to (its upstream is
        // the pod's own resolv.conf nameserver), to name connections without Host or SNI.
        if let Some(args) = c["args"].as_array_mut() {
            args.push(json!("--dns-listen"));
            args.push(json!(format!("127.0.0.1:{DNS_PORT}")));
        }
    }
    if with_ca {
        env.push(json!({"name": "WHOUSES_COLLECTOR_CA", "value": format!("{CA_DIR}/ca.crt")}));
        c["volumeMounts"] = json!([{"name": CA_VOLUME, "mountPath": CA_DIR, "readOnly": true}]);
    }
    c["env"] = Value::Array(env);
    c
}

/// The inbound sidecar (issue 14): `--mode inbound` in front of the app, each connection
/// the redirect sends it relayed to its original destination and counted per name dialed
/// and caller address. The same identity as the outbound sidecar, but an instance of its
/// own (`instance`: [`crate::names::inbound_instance`]), its own ports, the same
/// resources and restrictions.
pub fn inbound_container(
    cfg: &InjectConfig,
    id: &Identity,
    instance: &Instance,
    with_ca: bool,
) -> Value {
    let mut c = container(cfg, id, with_ca, Mode::Explicit);
    c["name"] = json!(INBOUND_NAME);
    c["args"] = json!([
        "--mode",
        "inbound",
        "--listen",
        format!("0.0.0.0:{INBOUND_PORT}"),
        "--admin-listen",
        format!("127.0.0.1:{INBOUND_ADMIN_PORT}"),
        "--probe-listen",
        format!("0.0.0.0:{INBOUND_PROBE_PORT}"),
    ]);
    c["ports"] = json!([{"name": "whouses-inprobe", "containerPort": INBOUND_PROBE_PORT, "protocol": "TCP"}]);
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        c[probe]["httpGet"]["port"] = json!(INBOUND_PROBE_PORT);
    }
    let instance = match instance {
        // The downward API's name, with the suffix (Kubernetes expands `$(VAR)` from an
        // earlier entry).
        Instance::PodName => vec![
            json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
            json!({"name": "WHOUSES_INSTANCE", "value": format!("$(POD_NAME){}", crate::names::INBOUND_SUFFIX)}),
        ],
        Instance::Shortened(s) => vec![json!({"name": "WHOUSES_INSTANCE", "value": s})],
    };
    if let Some(env) = c["env"].as_array_mut() {
        let at = env
            .iter()
            .position(|e| e["name"] == "WHOUSES_INSTANCE")
            .unwrap_or(0);
        env.retain(|e| e["name"] != "WHOUSES_INSTANCE");
        for (i, e) in instance.into_iter().enumerate() {
            env.insert((at + i).min(env.len()), e);
        }
    }
    c
}

/// The init container that installs the iptables redirect, with only NET_ADMIN and
/// NET_RAW, then exits: transparent mode's (`outbound`: the app's outbound TCP and DNS to
/// the sidecar) and inbound mode's (`inbound_ports`: connections arriving at those ports
/// to the inbound sidecar), in one `whouses-sidecar iptables install`. It runs before the
/// sidecars and the app's own init containers, so nothing the app does escapes the
/// capture.
pub fn iptables_init(cfg: &InjectConfig, outbound: bool, inbound_ports: &[u16]) -> Value {
    let mut args = vec!["iptables".to_string(), "install".to_string()];
    if outbound {
        args.extend(
            [
                "--proxy-uid",
                &SIDECAR_UID.to_string(),
                "--proxy-gid",
                &SIDECAR_UID.to_string(),
                "--proxy-port",
                &PROXY_PORT.to_string(),
                "--dns-port",
                &DNS_PORT.to_string(),
            ]
            .map(String::from),
        );
    }
    if !inbound_ports.is_empty() {
        let ports: Vec<String> = inbound_ports.iter().map(u16::to_string).collect();
        args.extend([
            "--inbound-ports".to_string(),
            ports.join(","),
            "--inbound-proxy-port".to_string(),
            INBOUND_PORT.to_string(),
        ]);
    }
    json!({
        "name": IPTABLES_INIT_NAME,
        "image": cfg.sidecar_image,
        "command": ["/usr/local/bin/whouses-sidecar"],
        "args": args,
        "resources": {
            "requests": {"cpu": cfg.cpu_request, "memory": cfg.memory_request},
            "limits": {"memory": cfg.memory_limit}
        },
        "securityContext": {
            // iptables needs uid 0 in the container as well as the capabilities.
            "runAsNonRoot": false,
            "runAsUser": 0,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]},
            "seccompProfile": {"type": "RuntimeDefault"}
        }
    })
}

/// The downward-API volume that turns the CA annotation into `ca.crt`.
pub fn ca_volume() -> Value {
    json!({
        "name": CA_VOLUME,
        "downwardAPI": {
            "items": [{
                "path": "ca.crt",
                "fieldRef": {"fieldPath": format!("metadata.annotations['{COLLECTOR_CA_ANNOTATION}']")}
            }]
        }
    })
}
