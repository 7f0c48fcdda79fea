//! The sidecar's configuration: every flag of the interface contract, each also read from
//! `WHOUSES_<FLAG>`, parsed once by clap and checked as a whole before anything starts.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

use clap::{Parser, ValueEnum};
use ipnet::IpNet;
use whouses_wire::DurationArg;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `--mode`: which side of its service's calls the sidecar stands on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Beside the app, as its HTTP_PROXY/HTTPS_PROXY: counts the calls it makes.
    Explicit,
    /// In front of the service (a reverse proxy, or a redirected port): counts the calls
    /// made to it, per name dialed and caller address (issue 14).
    Inbound,
}

/// `--resolve HOST:PORT:ADDR`: dial `ADDR` for `HOST:PORT` instead of resolving `HOST`.
/// The count still keys on `HOST:PORT`, the name the caller asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveRule {
    pub host: String,
    pub port: u16,
    pub addr: SocketAddr,
}

impl FromStr for ResolveRule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let usage =
            || format!("{s:?}: expected HOST:PORT:ADDR (e.g. old-lb.internal:80:127.0.0.1:8080)");
        let (host, rest) = s.split_once(':').ok_or_else(usage)?;
        let (port, addr) = rest.split_once(':').ok_or_else(usage)?;
        let hp = whouses_wire::HostPort::parse(&format!("{host}:{port}"), None)
            .map_err(|e| format!("{s:?}: {e}"))?;
        let addr = match addr.parse::<SocketAddr>() {
            Ok(a) => a,
            // A bare IP keeps the port.
            Err(_) => SocketAddr::new(addr.parse::<IpAddr>().map_err(|_| usage())?, hp.port),
        };
        Ok(ResolveRule {
            host: hp.host,
            port: hp.port,
            addr,
        })
    }
}

/// Forward proxy that counts, exactly, every call per upstream host and ships the counts
/// to a whouses collector.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "whouses-sidecar",
    version,
    about,
    after_help = "Transparent capture: `whouses-sidecar iptables install --proxy-uid UID` \
                  redirects the app's outbound TCP and DNS here; `--inbound-ports PORTS` redirects \
                  the connections arriving at the service to a sidecar in --mode inbound (see \
                  `whouses-sidecar iptables --help`)."
)]
pub struct Config {
    /// The calling service's name (the "who" in "who uses X").
    #[arg(long, env = "WHOUSES_SERVICE")]
    pub service: String,

    /// Environment of this service, e.g. prod or stage.
    #[arg(long, env = "WHOUSES_ENVIRONMENT", default_value = "default")]
    pub environment: String,

    /// This sidecar instance's id; defaults to hostname-pid. Batches are numbered per
    /// instance, so two live sidecars must never share one.
    #[arg(long, env = "WHOUSES_INSTANCE")]
    pub instance: Option<String>,

    /// The team that owns this service (letters, digits, - _ . : /), sent with every
    /// batch: the collector shows it beside the service in answers and alerts unless its
    /// --owners file names one. Empty = none (the webhook fills it from a pod label that
    /// may be missing).
    #[arg(long, env = "WHOUSES_OWNER")]
    pub owner: Option<String>,

    /// Forward-proxy listener (point HTTP_PROXY/HTTPS_PROXY here).
    #[arg(long, env = "WHOUSES_LISTEN", default_value = "127.0.0.1:15001")]
    pub listen: SocketAddr,

    /// Admin listener: /healthz, /readyz, /metrics, /stats.
    #[arg(long, env = "WHOUSES_ADMIN_LISTEN", default_value = "127.0.0.1:15020")]
    pub admin_listen: SocketAddr,

    /// Collector base URL; without it the sidecar only counts (see /stats).
    #[arg(long, env = "WHOUSES_COLLECTOR_URL")]
    pub collector_url: Option<String>,

    /// Bearer token for the collector.
    #[arg(
        long,
        env = "WHOUSES_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,

    /// File holding the bearer token (e.g. a mounted Secret).
    #[arg(long, env = "WHOUSES_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// How often counts are shipped; also the heartbeat period. Bounds what a hard kill
    /// without --spool-dir can lose.
    #[arg(long, env = "WHOUSES_FLUSH_INTERVAL", default_value = "10s")]
    pub flush_interval: DurationArg,

    /// Distinct upstream keys tracked before new ones fold into "(other)"; bounds memory
    /// under a flood of random host names.
    #[arg(long, env = "WHOUSES_MAX_HOSTS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_hosts: u32,

    /// Worker threads; a sidecar shares the pod's CPU budget, so it is small by default.
    #[arg(long, env = "WHOUSES_THREADS", default_value_t = 2,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,

    /// Client networks allowed to use the proxy (default: loopback and the network
    /// namespace's own addresses, which connections redirected by `whouses-sidecar
    /// iptables` come from — so the sidecar is never an open relay). Comma-separated or
    /// repeated.
    #[arg(long, env = "WHOUSES_ALLOW_FROM", value_delimiter = ',', num_args = 1..)]
    pub allow_from: Vec<IpNet>,

    /// Directory where unshipped batches are persisted (fsync) until acknowledged.
    #[arg(long, env = "WHOUSES_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,

    /// Most batches waiting in --spool-dir; beyond it new batches are only kept in
    /// memory. Hidden: the default (10,000, days of a crash-looping pod) is right for
    /// everyone; tests set it small to fill the spool.
    #[arg(long, env = "WHOUSES_MAX_SPOOLED", hide = true,
          default_value_t = crate::shipper::spool::MAX_SPOOLED as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_spooled: u32,

    /// Largest encoded batch; a busy interval is cut into several batches under it.
    /// 512 KiB is well under the collector's 1 MiB --max-body-bytes and under the 1 MiB
    /// body limit common in ingress proxies (nginx), so a batch is never refused for size
    /// by default (about 1,500 keys of long host names per batch).
    #[arg(long, env = "WHOUSES_MAX_BATCH_BYTES", default_value_t = 512 * 1024,
          value_parser = clap::value_parser!(u32).range(16 * 1024..=64 * 1024 * 1024))]
    pub max_batch_bytes: u32,

    /// PEM bundle of CA certificates added to the built-in roots, for an https
    /// --collector-url whose certificate comes from a private CA.
    #[arg(long, env = "WHOUSES_COLLECTOR_CA")]
    pub collector_ca: Option<PathBuf>,

    /// Optional listener serving only /healthz and /readyz (e.g. 0.0.0.0:15021), so the
    /// kubelet can probe the pod IP while --admin-listen (/stats, /metrics) stays on
    /// loopback.
    #[arg(long, env = "WHOUSES_PROBE_LISTEN")]
    pub probe_listen: Option<SocketAddr>,

    /// Print the bound addresses as one JSON line on stdout once listening. Set by the
    /// binary (`main`), not a flag: an embedding program (the demo) keeps its stdout.
    #[arg(skip)]
    pub announce: bool,

    /// Log format; the level comes from RUST_LOG (default info).
    #[arg(long, env = "WHOUSES_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Maximum concurrent client connections; beyond it new connections wait in the
    /// kernel backlog.
    #[arg(long, env = "WHOUSES_MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Maximum size of a request head (request line + headers); larger gets 431.
    #[arg(long, env = "WHOUSES_MAX_HEADER_BYTES", default_value_t = 64 * 1024,
          value_parser = clap::value_parser!(u32).range(8192..=16 * 1024 * 1024))]
    pub max_header_bytes: u32,

    /// Time a client has to send a complete request head (slowloris bound).
    #[arg(long, env = "WHOUSES_HEADER_READ_TIMEOUT", default_value = "10s")]
    pub header_read_timeout: DurationArg,

    /// Idle upstream connections are closed after this long in the pool.
    #[arg(long, env = "WHOUSES_IDLE_TIMEOUT", default_value = "60s")]
    pub idle_timeout: DurationArg,

    /// Time to establish an upstream TCP connection before answering 504.
    #[arg(long, env = "WHOUSES_CONNECT_TIMEOUT", default_value = "5s")]
    pub connect_timeout: DurationArg,

    /// On SIGTERM, how long in-flight requests and tunnels may take to finish.
    #[arg(long, env = "WHOUSES_DRAIN_TIMEOUT", default_value = "10s")]
    pub drain_timeout: DurationArg,

    /// On SIGTERM, how long the final flush to the collector may take.
    #[arg(long, env = "WHOUSES_FINAL_FLUSH_TIMEOUT", default_value = "10s")]
    pub final_flush_timeout: DurationArg,

    /// Copy tunnel bytes (CONNECT, WebSocket) with splice(2) through a kernel pipe instead
    /// of through the sidecar's memory: half the CPU for bulk transfers (see
    /// docs/benchmarks.md). Two pipes (four descriptors) per tunnel; without them the copy
    /// goes through user space.
    #[arg(long, env = "WHOUSES_TUNNEL_SPLICE", default_value_t = true,
          action = clap::ArgAction::Set, value_name = "BOOL")]
    pub tunnel_splice: bool,

    /// HOST:PORT:ADDR — dial ADDR for HOST:PORT instead of resolving HOST (like curl's
    /// --resolve). The count still keys on HOST. Repeatable.
    #[arg(long, env = "WHOUSES_RESOLVE", value_delimiter = ',')]
    pub resolve: Vec<ResolveRule>,

    /// DNS forwarder (UDP and TCP) on this address: point the app's resolver here
    /// (iptables does it in transparent mode; `dnsServers` on ECS) to count which names it
    /// looks up and to name connections that carry no host name. Off when absent.
    #[arg(long, env = "WHOUSES_DNS_LISTEN")]
    pub dns_listen: Option<SocketAddr>,

    /// Where the DNS forwarder sends queries (default: the first nameserver of
    /// /etc/resolv.conf).
    #[arg(long, env = "WHOUSES_DNS_UPSTREAM")]
    pub dns_upstream: Option<SocketAddr>,

    /// Distinct names the DNS forwarder remembers (lookups of more names are counted as
    /// folded); bounds memory under a flood of random names.
    #[arg(long, env = "WHOUSES_MAX_DNS_NAMES", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_dns_names: u32,

    /// Explicit mode without iptables: every this often, list the namespace's TCP
    /// connections and report those that went around the proxy (off when absent; 1s is a
    /// good start).
    #[arg(long, env = "WHOUSES_BYPASS_SCAN_INTERVAL")]
    pub bypass_scan_interval: Option<DurationArg>,

    // Issue 14: inbound mode and the address book.
    /// explicit: the app's forward proxy, counting the calls it makes. inbound: in front
    /// of the service, counting the calls made to it (per name dialed and caller address).
    #[arg(long, env = "WHOUSES_MODE", value_enum, default_value = "explicit")]
    pub mode: Mode,

    /// Inbound: where the service listens; every connection is relayed there. Without it,
    /// each connection goes to its original destination (redirected by `whouses-sidecar
    /// iptables install --inbound-ports`).
    #[arg(long, env = "WHOUSES_UPSTREAM")]
    pub upstream: Option<SocketAddr>,

    /// Inbound: a name the service is reached by (repeatable). Declared to the collector,
    /// so that this sidecar's silence about it is evidence for `check`; the first keys
    /// connections that name nothing themselves (opaque TCP, TLS without SNI).
    #[arg(long, env = "WHOUSES_INBOUND_HOST", value_delimiter = ',')]
    pub inbound_host: Vec<String>,

    /// Inbound: auto reads the caller's first bytes (HTTP/1, TLS, HTTP/2, else opaque TCP:
    /// the transparent capture's detection, with --detect-timeout and --opaque-ports); tcp
    /// relays opaque bytes at once, for protocols where the server speaks first.
    #[arg(
        long,
        env = "WHOUSES_INBOUND_PROTOCOL",
        value_enum,
        default_value = "auto"
    )]
    pub inbound_protocol: crate::inbound::Protocol,

    /// Inbound: distinct (name, caller address) keys tracked before new callers fold into
    /// the address "(other)"; bounds memory under a flood of caller addresses.
    #[arg(long, env = "WHOUSES_MAX_PEERS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_peers: u32,

    /// An address this instance is reachable from, reported to the collector's address
    /// book (repeatable); default: the network namespace's non-loopback interface
    /// addresses. In explicit mode, upstream connections leave from the first local one of
    /// each family, so that a callee's inbound sidecar can tell services sharing a host
    /// apart.
    #[arg(long, env = "WHOUSES_ADVERTISE_ADDRESS", value_delimiter = ',')]
    pub advertise_address: Vec<IpAddr>,

    /// Transparent and inbound modes: destination ports whose connections are counted as
    /// opaque TCP at once, without waiting for the app (or caller) to speak (protocols
    /// where the server speaks first: FTP, SSH, SMTP, POP3, IMAP, submission, MySQL, NATS).
    #[arg(
        long,
        env = "WHOUSES_OPAQUE_PORTS",
        value_delimiter = ',',
        default_value = "21,22,25,110,143,587,3306,4222,33060"
    )]
    pub opaque_ports: Vec<u16>,

    /// Transparent and inbound modes: time a connection's first bytes have to tell its
    /// protocol (HTTP/1, TLS, HTTP/2) before it is counted as opaque TCP. Short, because a
    /// server-speaks-first protocol on a port not in --opaque-ports waits this long once
    /// per connection.
    #[arg(long, env = "WHOUSES_DETECT_TIMEOUT", default_value = "300ms")]
    pub detect_timeout: DurationArg,
}

impl Config {
    /// `--owner`, unless empty.
    pub fn owner_name(&self) -> Option<&str> {
        self.owner
            .as_deref()
            .map(str::trim)
            .filter(|o| !o.is_empty())
    }

    /// Checks that need more than one field, reported all at once.
    pub fn validate(&self) -> Result<(), String> {
        let mut errors = Vec::new();
        for (flag, v) in [
            ("--service", &self.service),
            ("--environment", &self.environment),
        ] {
            if let Err(e) = whouses_wire::report::check_name(flag, v) {
                errors.push(e.to_string());
            }
        }
        if let Some(i) = &self.instance {
            if let Err(e) = whouses_wire::report::check_name("--instance", i) {
                errors.push(e.to_string());
            }
        }
        if let Some(o) = self.owner_name() {
            if let Err(e) = whouses_wire::report::check_name("--owner", o) {
                errors.push(e.to_string());
            }
        }
        if self
            .bypass_scan_interval
            .is_some_and(|d| d.0 < std::time::Duration::from_millis(100))
        {
            errors.push("--bypass-scan-interval must be at least 100ms".to_string());
        }
        if self.detect_timeout.0 < std::time::Duration::from_millis(1)
            || self.detect_timeout.0 > std::time::Duration::from_secs(10)
        {
            errors.push("--detect-timeout must be between 1ms and 10s".to_string());
        }
        if self.flush_interval.0 < std::time::Duration::from_millis(100) {
            errors.push("--flush-interval must be at least 100ms".to_string());
        }
        if let Some(url) = &self.collector_url {
            if let Err(e) = crate::shipper::reports_url(url) {
                errors.push(e.to_string());
            }
        } else {
            if self.spool_dir.is_some() {
                errors.push("--spool-dir needs --collector-url (there is nothing to ship)".into());
            }
            if self.collector_ca.is_some() {
                errors.push("--collector-ca needs --collector-url".into());
            }
        }
        self.validate_inbound(&mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// Issue 14's flags: what only inbound mode takes, and the names it declares.
    fn validate_inbound(&self, errors: &mut Vec<String>) {
        if self.mode != Mode::Inbound {
            if self.upstream.is_some() {
                errors.push("--upstream needs --mode inbound".into());
            }
            if !self.inbound_host.is_empty() {
                errors.push("--inbound-host needs --mode inbound".into());
            }
            return;
        }
        for h in &self.inbound_host {
            if let Err(e) = whouses_wire::host::normalize_host(h) {
                errors.push(format!("--inbound-host {h:?}: {e}"));
            }
        }
        if self.inbound_host.len() > whouses_wire::inbound::MAX_INBOUND_HOSTS {
            errors.push(format!(
                "--inbound-host: at most {} names",
                whouses_wire::inbound::MAX_INBOUND_HOSTS
            ));
        }
        if self.upstream.is_some_and(|u| u == self.listen) {
            errors.push("--upstream is --listen itself: the sidecar would relay to itself".into());
        }
        for (flag, set) in [
            ("--dns-listen", self.dns_listen.is_some()),
            (
                "--bypass-scan-interval",
                self.bypass_scan_interval.is_some(),
            ),
            ("--resolve", !self.resolve.is_empty()),
        ] {
            if set {
                errors.push(format!(
                    "{flag} is for the app's own calls (explicit mode), not for --mode inbound"
                ));
            }
        }
    }

    /// `--inbound-host`, normalised.
    pub fn inbound_hosts(&self) -> Vec<String> {
        self.inbound_host
            .iter()
            .filter_map(|h| whouses_wire::host::normalize_host(h).ok())
            .collect()
    }

    /// `--allow-from`, defaulting to loopback only (explicit mode: never an open relay)
    /// or anyone (inbound mode: the service's callers come from anywhere, and the
    /// sidecar only ever relays to the service).
    pub fn allowed_networks(&self) -> Vec<IpNet> {
        if self.allow_from.is_empty() && self.mode == Mode::Inbound {
            return vec![
                IpNet::from_str("0.0.0.0/0").expect("literal CIDR"),
                IpNet::from_str("::/0").expect("literal CIDR"),
            ];
        }
        if self.allow_from.is_empty() {
            vec![
                IpNet::from_str("127.0.0.0/8").expect("literal CIDR"),
                IpNet::from_str("::1/128").expect("literal CIDR"),
            ]
        } else {
            self.allow_from.clone()
        }
    }

    /// Whether the namespace's own addresses are allowed too: with the default
    /// `--allow-from` (redirected connections come from them).
    pub fn allow_own_addresses(&self) -> bool {
        self.allow_from.is_empty()
    }

    /// `--instance`, defaulting to hostname-pid.
    pub fn instance_id(&self) -> String {
        self.instance.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .or_else(|| std::env::var("HOSTNAME").ok())
                .unwrap_or_else(|| "sidecar".to_string());
            format!("{host}-{}", std::process::id())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("whouses-sidecar").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = parse(&["--service", "billing"]).unwrap();
        assert_eq!(c.environment, "default");
        assert_eq!(c.owner_name(), None);
        assert_eq!(c.listen.to_string(), "127.0.0.1:15001");
        assert_eq!(c.admin_listen.to_string(), "127.0.0.1:15020");
        assert_eq!(c.flush_interval.0, std::time::Duration::from_secs(10));
        assert_eq!(c.max_hosts, 10_000);
        assert_eq!(c.threads, 2);
        assert_eq!(c.log_format, LogFormat::Text);
        assert!(c.collector_url.is_none());
        assert_eq!(c.allowed_networks().len(), 2);
        assert!(c.tunnel_splice);
        assert!(c.allow_own_addresses());
        assert!(c.opaque_ports.contains(&25) && c.opaque_ports.contains(&3306));
        assert_eq!(c.detect_timeout.0, std::time::Duration::from_millis(300));
        assert!(c.validate().is_ok());
        let c = parse(&["--service", "b", "--detect-timeout", "20s"]).unwrap();
        assert!(c.validate().unwrap_err().contains("--detect-timeout"));
        let c = parse(&["--service", "b", "--opaque-ports", "7000,7001"]).unwrap();
        assert_eq!(c.opaque_ports, vec![7000, 7001]);
        let c = parse(&["--service", "b", "--tunnel-splice", "false"]).unwrap();
        assert!(!c.tunnel_splice);
    }

    #[test]
    fn an_owner_is_checked_like_a_name_and_empty_means_none() {
        let c = parse(&["--service", "a", "--owner", "team-payments"]).unwrap();
        assert_eq!(c.owner_name(), Some("team-payments"));
        assert!(c.validate().is_ok());
        let c = parse(&["--service", "a", "--owner", ""]).unwrap();
        assert_eq!(c.owner_name(), None);
        assert!(c.validate().is_ok());
        let e = parse(&["--service", "a", "--owner", "team payments"])
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.contains("--owner"), "{e}");
    }

    #[test]
    fn service_is_required() {
        assert!(parse(&[]).is_err());
    }

    #[test]
    fn bad_values_are_rejected() {
        assert!(parse(&["--service", "a", "--flush-interval", "soon"]).is_err());
        assert!(parse(&["--service", "a", "--max-hosts", "0"]).is_err());
        assert!(parse(&["--service", "a", "--allow-from", "10.0.0.0/33"]).is_err());
        assert!(parse(&["--service", "a", "--token", "x", "--token-file", "/f"]).is_err());
        let c = parse(&["--service", "a b"]).unwrap();
        assert!(c.validate().unwrap_err().contains("--service"));
        let c = parse(&["--service", "a", "--spool-dir", "/tmp/x"]).unwrap();
        assert!(c.validate().unwrap_err().contains("--spool-dir"));
        let c = parse(&["--service", "a", "--collector-url", "ftp://x"]).unwrap();
        assert!(c.validate().is_err());
        let c = parse(&["--service", "a", "--collector-ca", "/ca.pem"]).unwrap();
        assert!(c.validate().unwrap_err().contains("--collector-ca"));
        assert!(parse(&["--service", "a", "--max-batch-bytes", "100"]).is_err());
        assert!(parse(&["--service", "a", "--max-spooled", "0"]).is_err());
        assert!(parse(&["--service", "a", "--probe-listen", "nowhere"]).is_err());
    }

    #[test]
    fn shipping_flags_have_safe_defaults() {
        let c = parse(&["--service", "a"]).unwrap();
        assert_eq!(c.max_batch_bytes, 512 * 1024);
        assert_eq!(c.max_spooled as usize, crate::shipper::spool::MAX_SPOOLED);
        assert!(c.probe_listen.is_none());
        assert!(c.collector_ca.is_none());
        assert!(!c.announce);
        let c = parse(&[
            "--service",
            "a",
            "--probe-listen",
            "0.0.0.0:15021",
            "--max-batch-bytes",
            "65536",
        ])
        .unwrap();
        assert_eq!(c.probe_listen.unwrap().to_string(), "0.0.0.0:15021");
        assert_eq!(c.max_batch_bytes, 65536);
    }

    #[test]
    fn resolve_rules_parse() {
        let r: ResolveRule = "Old-LB.internal.:80:127.0.0.1:8080".parse().unwrap();
        assert_eq!(r.host, "old-lb.internal");
        assert_eq!(r.port, 80);
        assert_eq!(r.addr.to_string(), "127.0.0.1:8080");
        let r: ResolveRule = "a.b:443:127.0.0.2".parse().unwrap();
        assert_eq!(r.addr.to_string(), "127.0.0.2:443");
        assert!("a.b:443".parse::<ResolveRule>().is_err());
        assert!("a.b:x:127.0.0.1".parse::<ResolveRule>().is_err());
        let c = parse(&[
            "--service",
            "a",
            "--resolve",
            "x:80:127.0.0.1:1,y:81:127.0.0.2:2",
        ])
        .unwrap();
        assert_eq!(c.resolve.len(), 2);
    }

    #[test]
    fn allow_from_takes_a_list() {
        let c = parse(&[
            "--service",
            "a",
            "--allow-from",
            "10.0.0.0/8,192.168.1.0/24",
        ])
        .unwrap();
        assert_eq!(c.allowed_networks().len(), 2);
    }

    #[test]
    fn inbound_mode_takes_its_own_flags() {
        let c = parse(&["--service", "a"]).unwrap();
        assert_eq!((c.mode, c.max_peers), (Mode::Explicit, 10_000));
        assert!(c.advertise_address.is_empty());
        let c = parse(&[
            "--service",
            "ref",
            "--mode",
            "inbound",
            "--upstream",
            "127.0.0.1:8080",
            "--inbound-host",
            "TIS-Reference.internal.,10.0.3.7",
            "--advertise-address",
            "10.0.0.5",
            "--max-peers",
            "50",
        ])
        .unwrap();
        assert!(c.validate().is_ok(), "{:?}", c.validate());
        assert_eq!(
            c.inbound_hosts(),
            vec!["tis-reference.internal", "10.0.3.7"]
        );
        assert_eq!(c.upstream.unwrap().to_string(), "127.0.0.1:8080");
        assert_eq!(c.max_peers, 50);
        // Callers come from anywhere in front of a service.
        assert!(c
            .allowed_networks()
            .iter()
            .any(|n| n.contains(&"203.0.113.9".parse::<IpAddr>().unwrap())));
        // Without --upstream: the original destination (transparent capture).
        let c = parse(&["--service", "ref", "--mode", "inbound"]).unwrap();
        assert!(c.validate().is_ok());
        // Every misfit named at once.
        let c = parse(&[
            "--service",
            "ref",
            "--mode",
            "inbound",
            "--inbound-host",
            "a b",
            "--resolve",
            "x:80:127.0.0.1",
            "--listen",
            "127.0.0.1:9",
            "--upstream",
            "127.0.0.1:9",
        ])
        .unwrap();
        let e = c.validate().unwrap_err();
        assert!(
            e.contains("--inbound-host")
                && e.contains("--resolve")
                && e.contains("relay to itself"),
            "{e}"
        );
        let c = parse(&["--service", "a", "--upstream", "127.0.0.1:1"]).unwrap();
        assert!(c.validate().unwrap_err().contains("--mode inbound"));
        assert!(parse(&["--service", "a", "--max-peers", "0"]).is_err());
        assert!(parse(&["--service", "a", "--mode", "sideways"]).is_err());
        assert!(parse(&["--service", "a", "--advertise-address", "not-an-ip"]).is_err());
    }
}
