//! `whouses-sidecar iptables install|uninstall|show`: the redirect of the app's outbound
//! TCP to the sidecar and of its DNS to the forwarder, in the current network namespace's
//! `nat` table, in chains of our own — as Istio's and Linkerd's init containers do it, by
//! calling the `iptables` binary (`iptables-nft` or `iptables-legacy`, whichever the
//! namespace already uses; `ip6tables` likewise for IPv6).
//!
//! ```text
//! nat OUTPUT:      -p tcp -j WHOUSES_OUTPUT
//!                  -p udp --dport 53 -j WHOUSES_DNS
//! WHOUSES_OUTPUT:  sidecar's uid/gid → RETURN; tcp/53 → WHOUSES_DNS; -o lo (loopback and
//!                  the namespace's own addresses) → RETURN; --exclude-ports,
//!                  --exclude-cidrs → RETURN; (--include-cidrs or all) → REDIRECT --proxy-port
//! WHOUSES_DNS:     sidecar's uid/gid → RETURN; udp, tcp → REDIRECT --dns-port
//! ```
//!
//! `install` is idempotent (twice = once; run again with other flags, it replaces our
//! rules); `uninstall` removes exactly what `install` added. The sidecar's own connections
//! (its uid) are never redirected, so it cannot loop, and the DNS forwarder's queries
//! upstream go out as themselves.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::{Parser, ValueEnum};
use ipnet::IpNet;

pub const OUTPUT_CHAIN: &str = "WHOUSES_OUTPUT";
pub const DNS_CHAIN: &str = "WHOUSES_DNS";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Action {
    /// Add (or replace) the rules.
    Install,
    /// Remove every rule and chain `install` added.
    Uninstall,
    /// Print our rules.
    Show,
}

/// Redirect the app's outbound TCP (and DNS) in this network namespace to the sidecar.
/// Needs CAP_NET_ADMIN (root, or an init container with NET_ADMIN and NET_RAW).
#[derive(Debug, Clone, Parser)]
#[command(name = "whouses-sidecar iptables")]
pub struct Args {
    pub action: Action,

    /// The uid the sidecar runs as: its own connections are never redirected. Required by
    /// install.
    #[arg(long, env = "WHOUSES_PROXY_UID")]
    pub proxy_uid: Option<u32>,

    /// The gid the sidecar runs as (also never redirected).
    #[arg(long, env = "WHOUSES_PROXY_GID")]
    pub proxy_gid: Option<u32>,

    /// The sidecar's proxy port (--listen): outbound TCP goes there.
    #[arg(long, env = "WHOUSES_PROXY_PORT", default_value_t = 15001)]
    pub proxy_port: u16,

    /// The DNS forwarder's port (--dns-listen): DNS (UDP and TCP 53) goes there.
    #[arg(long, env = "WHOUSES_DNS_PORT", default_value_t = 15053)]
    pub dns_port: u16,

    /// Capture DNS (false: leave DNS alone, e.g. without --dns-listen).
    #[arg(long, env = "WHOUSES_CAPTURE_DNS", default_value_t = true,
          action = clap::ArgAction::Set, value_name = "BOOL")]
    pub capture_dns: bool,

    /// Destination ports never redirected (e.g. 22), comma-separated.
    #[arg(long, env = "WHOUSES_EXCLUDE_PORTS", value_delimiter = ',')]
    pub exclude_ports: Vec<u16>,

    /// Destination networks never redirected, comma-separated.
    #[arg(long, env = "WHOUSES_EXCLUDE_CIDRS", value_delimiter = ',')]
    pub exclude_cidrs: Vec<IpNet>,

    /// Only these destination networks are redirected (default: all), comma-separated.
    #[arg(long, env = "WHOUSES_INCLUDE_CIDRS", value_delimiter = ',')]
    pub include_cidrs: Vec<IpNet>,

    /// IPv6 too, with ip6tables: auto = when an ip6tables binary is present and the
    /// namespace has a global IPv6 address. The sidecar then also listens on [::1] (it does when --listen
    /// is 127.0.0.1:PORT).
    #[arg(long, env = "WHOUSES_IPV6", value_enum, default_value = "auto")]
    pub ipv6: Ipv6,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Ipv6 {
    Auto,
    True,
    False,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn base(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    fn contains(self, net: &IpNet) -> bool {
        matches!(
            (self, net),
            (Family::V4, IpNet::V4(_)) | (Family::V6, IpNet::V6(_))
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no {0} binary found (looked for {0}-nft, {0}-legacy and {0} in PATH, /usr/sbin and \
         /sbin); install the iptables package (Debian: apt-get install iptables)"
    )]
    NoBinary(&'static str),
    #[error(
        "`{command}` was refused: {stderr}. whouses-sidecar iptables needs CAP_NET_ADMIN in \
         this network namespace: run it as root, or as a Kubernetes init container with \
         capabilities NET_ADMIN and NET_RAW"
    )]
    Permission { command: String, stderr: String },
    #[error("`{command}` failed: {stderr}")]
    Failed { command: String, stderr: String },
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
}

/// The rules of one family, in order: (chain, rule arguments).
pub fn plan(args: &Args, family: Family) -> Result<Plan, Error> {
    let uid = args.proxy_uid.ok_or_else(|| {
        Error::Usage("install needs --proxy-uid (the uid the sidecar runs as)".into())
    })?;
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<String>>();
    let mut owner = vec![s(&[
        "-m",
        "owner",
        "--uid-owner",
        &uid.to_string(),
        "-j",
        "RETURN",
    ])];
    if let Some(gid) = args.proxy_gid {
        owner.push(s(&[
            "-m",
            "owner",
            "--gid-owner",
            &gid.to_string(),
            "-j",
            "RETURN",
        ]));
    }
    let mut output = owner.clone();
    if args.capture_dns {
        output.push(s(&["-p", "tcp", "--dport", "53", "-j", DNS_CHAIN]));
    }
    output.push(s(&["-o", "lo", "-j", "RETURN"]));
    let mut ports: Vec<u16> = args.exclude_ports.clone();
    ports.sort_unstable();
    ports.dedup();
    // multiport takes at most 15 ports per rule.
    for chunk in ports.chunks(15) {
        let list: Vec<String> = chunk.iter().map(u16::to_string).collect();
        output.push(s(&[
            "-p",
            "tcp",
            "-m",
            "multiport",
            "--dports",
            &list.join(","),
            "-j",
            "RETURN",
        ]));
    }
    for net in args.exclude_cidrs.iter().filter(|n| family.contains(n)) {
        output.push(s(&["-d", &net.to_string(), "-j", "RETURN"]));
    }
    let to_port = args.proxy_port.to_string();
    let include: Vec<&IpNet> = args
        .include_cidrs
        .iter()
        .filter(|n| family.contains(n))
        .collect();
    if args.include_cidrs.is_empty() {
        output.push(s(&["-p", "tcp", "-j", "REDIRECT", "--to-ports", &to_port]));
    } else {
        for net in include {
            output.push(s(&[
                "-d",
                &net.to_string(),
                "-p",
                "tcp",
                "-j",
                "REDIRECT",
                "--to-ports",
                &to_port,
            ]));
        }
    }
    let mut chains = vec![(OUTPUT_CHAIN, output)];
    let mut jumps = vec![s(&["-p", "tcp", "-j", OUTPUT_CHAIN])];
    if args.capture_dns {
        let dns_port = args.dns_port.to_string();
        let mut dns = owner;
        dns.push(s(&["-p", "udp", "-j", "REDIRECT", "--to-ports", &dns_port]));
        dns.push(s(&["-p", "tcp", "-j", "REDIRECT", "--to-ports", &dns_port]));
        chains.push((DNS_CHAIN, dns));
        jumps.push(s(&["-p", "udp", "--dport", "53", "-j", DNS_CHAIN]));
    }
    Ok(Plan { chains, jumps })
}

/// What `install` puts in place for one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Our chains and their rules, in order.
    pub chains: Vec<(&'static str, Vec<Vec<String>>)>,
    /// Rules in `nat OUTPUT` that jump to them.
    pub jumps: Vec<Vec<String>>,
}

/// The jumps `install` may have added (with DNS capture on), for `uninstall`.
fn every_jump() -> Vec<Vec<String>> {
    vec![
        ["-p", "tcp", "-j", OUTPUT_CHAIN].map(String::from).to_vec(),
        ["-p", "udp", "--dport", "53", "-j", DNS_CHAIN]
            .map(String::from)
            .to_vec(),
    ]
}

/// One `iptables`-like binary, run with the xtables lock wait.
#[derive(Debug, Clone)]
pub struct Tool {
    pub path: PathBuf,
}

impl Tool {
    fn command_line(&self, args: &[String]) -> String {
        let name = self.path.file_name().map_or_else(
            || self.path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        format!("{name} {}", args.join(" "))
    }

    /// Run with `args`; `Ok(true)` on success, `Ok(false)` when it exited 1 (a check that
    /// did not match, a chain that does not exist), an error otherwise or when refused.
    fn run(&self, args: &[String]) -> Result<(bool, String), Error> {
        let mut full = vec!["-w".to_string(), "5".to_string()];
        full.extend_from_slice(args);
        let command = self.command_line(&full);
        let out = Command::new(&self.path)
            .args(&full)
            .output()
            .map_err(|source| Error::Spawn {
                command: command.clone(),
                source,
            })?;
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if out.status.success() {
            return Ok((true, String::from_utf8_lossy(&out.stdout).into_owned()));
        }
        let refused = [
            "Permission denied",
            "Operation not permitted",
            "you must be root",
        ]
        .iter()
        .any(|m| stderr.contains(m));
        if refused {
            return Err(Error::Permission { command, stderr });
        }
        Ok((false, stderr))
    }

    /// Run and require success.
    fn must(&self, args: &[String]) -> Result<String, Error> {
        match self.run(args)? {
            (true, out) => Ok(out),
            (false, stderr) => Err(Error::Failed {
                command: self.command_line(args),
                stderr,
            }),
        }
    }

    fn nat(args: &[&str]) -> Vec<String> {
        std::iter::once("-t")
            .chain(std::iter::once("nat"))
            .chain(args.iter().copied())
            .map(String::from)
            .collect()
    }

    fn chain_exists(&self, chain: &str) -> Result<bool, Error> {
        Ok(self.run(&Self::nat(&["-S", chain]))?.0)
    }

    /// The rules of ours in the nat table (`-S` lines).
    pub fn ours(&self) -> Result<Vec<String>, Error> {
        let out = self.must(&Self::nat(&["-S"]))?;
        Ok(out
            .lines()
            .filter(|l| l.contains(OUTPUT_CHAIN) || l.contains(DNS_CHAIN))
            .map(str::to_string)
            .collect())
    }

    pub fn install(&self, plan: &Plan) -> Result<(), Error> {
        // Every chain first (WHOUSES_OUTPUT jumps to WHOUSES_DNS), then their rules.
        for (chain, _) in &plan.chains {
            if self.chain_exists(chain)? {
                self.must(&Self::nat(&["-F", chain]))?;
            } else {
                self.must(&Self::nat(&["-N", chain]))?;
            }
        }
        for (chain, rules) in &plan.chains {
            for rule in rules {
                let mut a = Self::nat(&["-A", chain]);
                a.extend(rule.iter().cloned());
                self.must(&a)?;
            }
        }
        // A chain of an earlier install that this one does not use (DNS capture off).
        let used: Vec<&str> = plan.chains.iter().map(|(c, _)| *c).collect();
        for jump in every_jump() {
            let target = jump.last().map(String::as_str).unwrap_or("");
            if !used.contains(&target) {
                self.delete_jump(&jump)?;
            }
        }
        for chain in [OUTPUT_CHAIN, DNS_CHAIN] {
            if !used.contains(&chain) && self.chain_exists(chain)? {
                self.must(&Self::nat(&["-F", chain]))?;
                self.must(&Self::nat(&["-X", chain]))?;
            }
        }
        for jump in &plan.jumps {
            let mut check = Self::nat(&["-C", "OUTPUT"]);
            check.extend(jump.iter().cloned());
            if !self.run(&check)?.0 {
                let mut add = Self::nat(&["-A", "OUTPUT"]);
                add.extend(jump.iter().cloned());
                self.must(&add)?;
            }
        }
        Ok(())
    }

    fn delete_jump(&self, jump: &[String]) -> Result<(), Error> {
        // Every copy (an older install may have added one twice); bounded.
        for _ in 0..64 {
            let mut del = Self::nat(&["-D", "OUTPUT"]);
            del.extend(jump.iter().cloned());
            if !self.run(&del)?.0 {
                break;
            }
        }
        Ok(())
    }

    pub fn uninstall(&self) -> Result<(), Error> {
        for jump in every_jump() {
            self.delete_jump(&jump)?;
        }
        let present: Vec<&str> = [OUTPUT_CHAIN, DNS_CHAIN]
            .into_iter()
            .filter(|c| self.chain_exists(c).unwrap_or(false))
            .collect();
        // Flush all first: WHOUSES_OUTPUT refers to WHOUSES_DNS.
        for chain in &present {
            self.must(&Self::nat(&["-F", chain]))?;
        }
        for chain in &present {
            self.must(&Self::nat(&["-X", chain]))?;
        }
        self.drop_empty_table()
    }

    /// With nf_tables, the `nat` table that our install created stays behind, empty, once
    /// our chains are gone; delete it when nothing is left in it (only the built-in chains
    /// with their ACCEPT policies: no rule and no chain of anyone's), so the ruleset is
    /// exactly as before. Needs the `nft` command; without it the empty table stays.
    fn drop_empty_table(&self) -> Result<(), Error> {
        let (ok, version) = self.run(&["-V".to_string()])?;
        if !ok || !version.contains("nf_tables") {
            return Ok(());
        }
        let listed = self.must(&Self::nat(&["-S"]))?;
        let empty = listed.lines().all(|l| {
            ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"]
                .iter()
                .any(|c| l == format!("-P {c} ACCEPT"))
        });
        let Some(nft) = find("nft") else {
            return Ok(());
        };
        if empty {
            let family = if self.path.to_string_lossy().contains("ip6tables") {
                "ip6"
            } else {
                "ip"
            };
            let out = Command::new(&nft)
                .args(["delete", "table", family, "nat"])
                .output()
                .map_err(|source| Error::Spawn {
                    command: format!("nft delete table {family} nat"),
                    source,
                })?;
            if !out.status.success() {
                return Err(Error::Failed {
                    command: format!("nft delete table {family} nat"),
                    stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                });
            }
        }
        Ok(())
    }
}

/// An executable named `name` in PATH, /usr/sbin or /sbin.
fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Rules (`-A` lines) a backend holds in this namespace, from its `-save` command.
fn rule_count(save: &Path) -> usize {
    Command::new(save)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.starts_with("-A"))
                .count()
        })
        .unwrap_or(0)
}

/// The binary of the backend this namespace uses: the one holding rules already (as the
/// Kubernetes iptables wrapper decides), else the system's default `iptables`.
pub fn choose(family: Family) -> Result<Tool, Error> {
    let base = family.base();
    let nft = find(&format!("{base}-nft"));
    let legacy = find(&format!("{base}-legacy"));
    let plain = find(base);
    let path = match (nft, legacy) {
        (Some(nft), Some(legacy)) => {
            let n = find(&format!("{base}-nft-save")).map_or(0, |p| rule_count(&p));
            let l = find(&format!("{base}-legacy-save")).map_or(0, |p| rule_count(&p));
            match l.cmp(&n) {
                std::cmp::Ordering::Greater => legacy,
                std::cmp::Ordering::Less => nft,
                std::cmp::Ordering::Equal => plain.unwrap_or(nft),
            }
        }
        (Some(one), None) | (None, Some(one)) => one,
        (None, None) => plain.ok_or(Error::NoBinary(base))?,
    };
    Ok(Tool { path })
}

/// Whether this namespace has IPv6 beyond loopback and link-local addresses (the scope
/// column of /proc/net/if_inet6: 00 is global).
fn has_ipv6() -> bool {
    std::fs::read_to_string("/proc/net/if_inet6")
        .is_ok_and(|s| s.lines().any(|l| l.split_whitespace().nth(3) == Some("00")))
}

/// The families to act on, with their binaries.
fn tools(args: &Args) -> Result<Vec<(Family, Tool)>, Error> {
    let mut out = vec![(Family::V4, choose(Family::V4)?)];
    match args.ipv6 {
        Ipv6::False => {}
        Ipv6::True => out.push((Family::V6, choose(Family::V6)?)),
        Ipv6::Auto => {
            if has_ipv6() {
                if let Ok(t) = choose(Family::V6) {
                    out.push((Family::V6, t));
                }
            }
        }
    }
    Ok(out)
}

/// Checks before touching anything, all at once.
fn validate(args: &Args) -> Result<(), Error> {
    let mut errors = Vec::new();
    if args.action == Action::Install {
        if args.proxy_uid.is_none() {
            errors.push("install needs --proxy-uid (the uid the sidecar runs as)".to_string());
        }
        if args.proxy_uid == Some(0) {
            errors.push(
                "--proxy-uid 0 would exempt every root process from capture; run the sidecar \
                 as a uid of its own"
                    .to_string(),
            );
        }
        if args.proxy_port == 0 || (args.capture_dns && args.dns_port == 0) {
            errors.push("--proxy-port and --dns-port must not be 0".to_string());
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Usage(errors.join("; ")))
    }
}

/// Run the subcommand; prints what it did (or the rules) on stdout.
pub fn run(args: &Args) -> Result<String, Error> {
    validate(args)?;
    let mut out = String::new();
    for (family, tool) in tools(args)? {
        let name = tool.path.display();
        match args.action {
            Action::Install => {
                tool.install(&plan(args, family)?)?;
                out.push_str(&format!(
                    "Installed the {} redirect with {name}.\n",
                    family.name()
                ));
            }
            Action::Uninstall => {
                tool.uninstall()?;
                out.push_str(&format!(
                    "Removed the {} redirect with {name}.\n",
                    family.name()
                ));
            }
            Action::Show => {
                let ours = tool.ours()?;
                out.push_str(&format!("# {} ({name}), nat table\n", family.name()));
                if ours.is_empty() {
                    out.push_str("# not installed\n");
                }
                for l in ours {
                    out.push_str(&l);
                    out.push('\n');
                }
            }
        }
    }
    Ok(out)
}

/// `whouses-sidecar iptables …` (`args` includes the program name and `iptables`).
pub fn main(args: Vec<OsString>) -> ExitCode {
    let args = match Args::try_parse_from(args.into_iter().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match run(&args) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e @ Error::Usage(_)) => {
            eprintln!("whouses-sidecar iptables: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("whouses-sidecar iptables: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        Args::try_parse_from(
            ["iptables", "install", "--proxy-uid", "1337"]
                .iter()
                .chain(extra)
                .copied(),
        )
        .unwrap()
    }

    fn lines(p: &Plan) -> Vec<String> {
        let mut v: Vec<String> = p
            .jumps
            .iter()
            .map(|j| format!("-A OUTPUT {}", j.join(" ")))
            .collect();
        for (c, rules) in &p.chains {
            v.extend(rules.iter().map(|r| format!("-A {c} {}", r.join(" "))));
        }
        v
    }

    #[test]
    fn the_default_plan_redirects_tcp_and_dns_except_the_sidecar_and_loopback() {
        let p = plan(&args(&["--proxy-gid", "1337"]), Family::V4).unwrap();
        assert_eq!(
            lines(&p),
            [
                "-A OUTPUT -p tcp -j WHOUSES_OUTPUT",
                "-A OUTPUT -p udp --dport 53 -j WHOUSES_DNS",
                "-A WHOUSES_OUTPUT -m owner --uid-owner 1337 -j RETURN",
                "-A WHOUSES_OUTPUT -m owner --gid-owner 1337 -j RETURN",
                "-A WHOUSES_OUTPUT -p tcp --dport 53 -j WHOUSES_DNS",
                "-A WHOUSES_OUTPUT -o lo -j RETURN",
                "-A WHOUSES_OUTPUT -p tcp -j REDIRECT --to-ports 15001",
                "-A WHOUSES_DNS -m owner --uid-owner 1337 -j RETURN",
                "-A WHOUSES_DNS -m owner --gid-owner 1337 -j RETURN",
                "-A WHOUSES_DNS -p udp -j REDIRECT --to-ports 15053",
                "-A WHOUSES_DNS -p tcp -j REDIRECT --to-ports 15053",
            ]
        );
    }

    #[test]
    fn exclusions_and_inclusions_apply_per_family() {
        let a = args(&[
            "--exclude-ports",
            "22,5432",
            "--exclude-cidrs",
            "10.0.0.0/8,fd00::/8",
            "--include-cidrs",
            "198.18.0.0/15",
            "--capture-dns",
            "false",
        ]);
        let v4 = lines(&plan(&a, Family::V4).unwrap());
        assert!(
            v4.contains(&"-A WHOUSES_OUTPUT -p tcp -m multiport --dports 22,5432 -j RETURN".into())
        );
        assert!(v4.contains(&"-A WHOUSES_OUTPUT -d 10.0.0.0/8 -j RETURN".into()));
        assert!(v4.contains(
            &"-A WHOUSES_OUTPUT -d 198.18.0.0/15 -p tcp -j REDIRECT --to-ports 15001".into()
        ));
        assert!(!v4.iter().any(|l| l.contains("fd00") || l.contains("DNS")));
        let v6 = lines(&plan(&a, Family::V6).unwrap());
        assert!(v6.contains(&"-A WHOUSES_OUTPUT -d fd00::/8 -j RETURN".into()));
        // No IPv6 network included: nothing of IPv6 is redirected.
        assert!(!v6.iter().any(|l| l.contains("REDIRECT")));
    }

    #[test]
    fn bad_invocations_are_refused_before_touching_anything() {
        let a = Args::try_parse_from(["iptables", "install"]).unwrap();
        assert!(validate(&a)
            .unwrap_err()
            .to_string()
            .contains("--proxy-uid"));
        assert!(validate(&args(&[])).is_ok());
        let root = Args::try_parse_from(["iptables", "install", "--proxy-uid", "0"]).unwrap();
        assert!(validate(&root).unwrap_err().to_string().contains("uid 0"));
        assert!(Args::try_parse_from(["iptables", "reinstall"]).is_err());
        assert!(Args::try_parse_from(["iptables", "show", "--exclude-ports", "x"]).is_err());
        let u = Args::try_parse_from(["iptables", "uninstall"]).unwrap();
        assert!(validate(&u).is_ok());
    }
}
