//! How the sidecar is injected (the webhook's flags, set by the chart's values), checked
//! as a whole at startup: a value the sidecar or the API server would refuse must stop
//! the webhook with a clear message, never reach a pod (a pod the API server rejects after
//! our patch is a blocked deployment, and a sidecar that cannot start is an app that
//! never starts).

use std::path::PathBuf;

use whouses_wire::DurationArg;

/// Injection settings.
#[derive(Debug, Clone, clap::Args)]
pub struct InjectConfig {
    /// Sidecar image.
    #[arg(
        long,
        env = "WHOUSES_SIDECAR_IMAGE",
        default_value = "ghcr.io/whouses/whouses:latest"
    )]
    pub sidecar_image: String,
    /// Collector URL the sidecars ship to (http:// or https://).
    #[arg(
        long,
        env = "WHOUSES_COLLECTOR_URL",
        default_value = "http://whouses-collector:7070"
    )]
    pub collector_url: String,
    /// PEM file with the CA certificate(s) of an https collector URL, handed to every
    /// injected sidecar (`--collector-ca`). Re-read for every pod, so a rotated CA reaches
    /// new pods; while it is missing or invalid, pods are admitted without a sidecar.
    #[arg(long, env = "WHOUSES_COLLECTOR_CA")]
    pub collector_ca: Option<PathBuf>,
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
    /// Sidecar CPU request (a Kubernetes quantity).
    #[arg(long, env = "WHOUSES_SIDECAR_CPU_REQUEST", default_value = "10m")]
    pub cpu_request: String,
    /// Sidecar memory request (a Kubernetes quantity).
    #[arg(long, env = "WHOUSES_SIDECAR_MEMORY_REQUEST", default_value = "16Mi")]
    pub memory_request: String,
    /// Sidecar memory limit (a Kubernetes quantity, at least the request).
    #[arg(long, env = "WHOUSES_SIDECAR_MEMORY_LIMIT", default_value = "64Mi")]
    pub memory_limit: String,
    /// How injected sidecars capture calls when the pod does not say (annotation
    /// `whouses.io/mode`): `explicit` (proxy variables; nothing privileged) or
    /// `transparent` (an init container with NET_ADMIN/NET_RAW installs the iptables
    /// redirect; no proxy variables, every client and protocol captured).
    #[arg(
        long,
        env = "WHOUSES_DEFAULT_MODE",
        value_enum,
        default_value = "explicit"
    )]
    pub default_mode: Mode,
}

/// How the sidecar sees the app's calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// `HTTP_PROXY`/`HTTPS_PROXY` and the JVM's proxy properties point at the sidecar.
    Explicit,
    /// iptables redirects the pod's outbound TCP and DNS to the sidecar.
    Transparent,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "explicit" => Some(Mode::Explicit),
            "transparent" => Some(Mode::Transparent),
            _ => None,
        }
    }
}

impl Default for InjectConfig {
    fn default() -> Self {
        InjectConfig {
            sidecar_image: "ghcr.io/whouses/whouses:latest".into(),
            collector_url: "http://whouses-collector:7070".into(),
            collector_ca: None,
            token_secret: "whouses-ingest-token".into(),
            default_environment: None,
            no_proxy: String::new(),
            flush_interval: "10s".into(),
            cpu_request: "10m".into(),
            memory_request: "16Mi".into(),
            memory_limit: "64Mi".into(),
            default_mode: Mode::Explicit,
        }
    }
}

impl InjectConfig {
    /// Every problem at once, each naming its flag.
    pub fn validate(&self) -> Result<(), String> {
        let mut errors = Vec::new();
        if self.sidecar_image.trim().is_empty() || self.sidecar_image.contains(char::is_whitespace)
        {
            errors.push(format!(
                "--sidecar-image {:?}: must be an image reference without spaces",
                self.sidecar_image
            ));
        }
        match url::Url::parse(&self.collector_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
            Ok(_) => errors.push(format!(
                "--collector-url {:?}: must be an http:// or https:// URL with a host",
                self.collector_url
            )),
            Err(e) => errors.push(format!("--collector-url {:?}: {e}", self.collector_url)),
        }
        if !is_dns_subdomain(&self.token_secret) {
            errors.push(format!(
                "--token-secret {:?}: must be a Secret name (lower-case letters, digits, - and ., at most 253)",
                self.token_secret
            ));
        }
        if let Some(env) = &self.default_environment {
            if let Err(e) = crate::names::check("--default-environment", env) {
                errors.push(e);
            }
        }
        for entry in self.no_proxy_entries() {
            if entry.contains(char::is_whitespace) || entry.contains('|') {
                errors.push(format!(
                    "--no-proxy entry {entry:?}: a host, domain or address without spaces or |"
                ));
            }
        }
        match self.flush_interval.parse::<DurationArg>() {
            Ok(d) if d.0 >= std::time::Duration::from_millis(100) => {}
            Ok(_) => errors.push("--flush-interval must be at least 100ms".into()),
            Err(e) => errors.push(format!("--flush-interval {:?}: {e}", self.flush_interval)),
        }
        let cpu = quantity("--cpu-request", &self.cpu_request);
        let request = quantity("--memory-request", &self.memory_request);
        let limit = quantity("--memory-limit", &self.memory_limit);
        for q in [&cpu, &request, &limit] {
            if let Err(e) = q {
                errors.push(e.clone());
            }
        }
        if let (Ok(r), Ok(l)) = (request, limit) {
            if r > l {
                errors.push(format!(
                    "--memory-request {} is above --memory-limit {} (the API server would refuse every injected pod)",
                    self.memory_request, self.memory_limit
                ));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// `--no-proxy`, split and trimmed.
    pub fn no_proxy_entries(&self) -> impl Iterator<Item = &str> {
        self.no_proxy
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    /// Whether the sidecars ship over TLS.
    pub fn collector_is_https(&self) -> bool {
        self.collector_url
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
    }
}

/// A Kubernetes resource name (RFC 1123 subdomain).
fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// A Kubernetes quantity (`10m`, `16Mi`, `0.5`, `1G`, `1e3`), as a number, so a request
/// can be compared with its limit. Errors name the flag.
pub fn quantity(flag: &str, s: &str) -> Result<f64, String> {
    let bad = || format!("{flag} {s:?}: not a Kubernetes quantity (e.g. 10m, 0.5, 16Mi, 1Gi)");
    let suffixes: [(&str, f64); 15] = [
        ("Ki", 1024f64),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("Pi", 1024f64.powi(5)),
        ("Ei", 1024f64.powi(6)),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let (number, factor) = suffixes
        .iter()
        .find_map(|(suffix, f)| s.strip_suffix(suffix).map(|n| (n, *f)))
        .unwrap_or((s, 1.0));
    // Digits with at most one point, optionally an exponent (decimal form only).
    let (mantissa, exponent) = match number.split_once(['e', 'E']) {
        Some((m, e)) if factor == 1.0 => (m, Some(e)),
        Some(_) => return Err(bad()),
        None => (number, None),
    };
    let digits_ok = !mantissa.is_empty()
        && mantissa.chars().filter(|c| *c == '.').count() <= 1
        && mantissa.chars().all(|c| c.is_ascii_digit() || c == '.')
        && mantissa.chars().any(|c| c.is_ascii_digit());
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && e.len() <= 3 && e.chars().all(|c| c.is_ascii_digit())
    });
    if !digits_ok || !exponent_ok {
        return Err(bad());
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    Ok(value * factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(InjectConfig::default().validate(), Ok(()));
    }

    #[test]
    fn every_bad_flag_is_reported_at_once() {
        let cfg = InjectConfig {
            sidecar_image: "".into(),
            collector_url: "ftp://collector".into(),
            token_secret: "Not_A_Secret".into(),
            default_environment: Some("pre prod".into()),
            no_proxy: "ok.internal, a b".into(),
            flush_interval: "10ms".into(),
            cpu_request: "ten".into(),
            memory_request: "128Mi".into(),
            memory_limit: "64Mi".into(),
            ..InjectConfig::default()
        };
        let e = cfg.validate().unwrap_err();
        for flag in [
            "--sidecar-image",
            "--collector-url",
            "--token-secret",
            "--default-environment",
            "--no-proxy",
            "--flush-interval",
            "--cpu-request",
            "above --memory-limit",
        ] {
            assert!(e.contains(flag), "{flag} missing from: {e}");
        }
    }

    #[test]
    fn quantities_parse_as_kubernetes_writes_them() {
        for (s, v) in [
            ("10m", 0.01),
            ("16Mi", 16.0 * 1024.0 * 1024.0),
            ("1", 1.0),
            ("0.5", 0.5),
            ("1G", 1e9),
            ("1e3", 1000.0),
            ("64Mi", 64.0 * 1024.0 * 1024.0),
        ] {
            assert_eq!(quantity("q", s), Ok(v), "{s}");
        }
        for s in [
            "", "Mi", "ten", "1.2.3", "-1", "1 Mi", "1MiB", "1e", "1Mie3",
        ] {
            assert!(quantity("q", s).is_err(), "{s}");
        }
    }

    #[test]
    fn https_is_recognised() {
        let cfg = InjectConfig {
            collector_url: "HTTPS://whouses-collector.whouses.svc:7070".into(),
            ..InjectConfig::default()
        };
        assert!(cfg.collector_is_https());
        assert!(!InjectConfig::default().collector_is_https());
    }
}
