//! Transparent inbound capture (issue 14): `whouses-sidecar iptables install
//! --inbound-port 8080 [--proxy-port 15006]` redirects TCP connections *arriving* at the
//! service's ports to the inbound sidecar's listener (nat `PREROUTING`, `REDIRECT`), which
//! relays each to its original destination ([`original_dst`]) — so callers and the
//! service change nothing. `iptables uninstall` removes exactly what was installed.
//!
//! The rules live in a chain of our own (`WHOUSES_INBOUND`), installed for IPv4 and, when
//! `ip6tables` works, IPv6. Only packets entering the network namespace pass
//! `PREROUTING`: the sidecar's own connection to the service (`OUTPUT`) is not
//! redirected again, and calls the pod makes to itself stay direct. Needs `NET_ADMIN` in
//! the pod's network namespace (an init container); `--dry-run` prints the commands.

use std::net::SocketAddr;
use std::process::Command;

use clap::{Parser, Subcommand};
use tokio::net::TcpStream;

/// Our chain in the nat table.
pub const CHAIN: &str = "WHOUSES_INBOUND";

/// `whouses-sidecar iptables …`
#[derive(Debug, Parser)]
#[command(
    name = "whouses-sidecar iptables",
    about = "Install or remove the transparent inbound capture's iptables rules"
)]
pub struct IptablesCli {
    #[command(subcommand)]
    pub command: IptablesCommand,
}

#[derive(Debug, Subcommand)]
pub enum IptablesCommand {
    /// Redirect connections arriving at the service's ports to the inbound sidecar.
    Install {
        /// The service's ports whose arriving connections are captured (repeatable or
        /// comma-separated).
        #[arg(long, env = "WHOUSES_INBOUND_PORT", value_delimiter = ',', required = true,
              value_parser = clap::value_parser!(u16).range(1..))]
        inbound_port: Vec<u16>,
        /// The inbound sidecar's `--listen` port.
        #[arg(long, env = "WHOUSES_PROXY_PORT", default_value_t = 15006,
              value_parser = clap::value_parser!(u16).range(1..))]
        proxy_port: u16,
        /// Print the commands instead of running them.
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove the rules `install` added.
    Uninstall {
        #[arg(long)]
        dry_run: bool,
    },
}

/// The commands that install the capture with one `iptables` program (`iptables` or
/// `ip6tables`): our chain first emptied (so a second install replaces the first), then
/// one `REDIRECT` per port, then the jump from `PREROUTING`.
pub fn install_commands(program: &str, ports: &[u16], proxy_port: u16) -> Vec<Vec<String>> {
    let mut v: Vec<Vec<String>> = uninstall_commands(program);
    let s = |x: &str| x.to_string();
    v.push(vec![s(program), s("-t"), s("nat"), s("-N"), s(CHAIN)]);
    for p in ports {
        v.push(vec![
            s(program),
            s("-t"),
            s("nat"),
            s("-A"),
            s(CHAIN),
            s("-p"),
            s("tcp"),
            s("--dport"),
            p.to_string(),
            s("-j"),
            s("REDIRECT"),
            s("--to-ports"),
            proxy_port.to_string(),
        ]);
    }
    v.push(vec![
        s(program),
        s("-t"),
        s("nat"),
        s("-A"),
        s("PREROUTING"),
        s("-p"),
        s("tcp"),
        s("-j"),
        s(CHAIN),
    ]);
    v
}

/// The commands that remove what [`install_commands`] added (each may fail harmlessly
/// when it is not there).
pub fn uninstall_commands(program: &str) -> Vec<Vec<String>> {
    let s = |x: &str| x.to_string();
    vec![
        vec![
            s(program),
            s("-t"),
            s("nat"),
            s("-D"),
            s("PREROUTING"),
            s("-p"),
            s("tcp"),
            s("-j"),
            s(CHAIN),
        ],
        vec![s(program), s("-t"), s("nat"), s("-F"), s(CHAIN)],
        vec![s(program), s("-t"), s("nat"), s("-X"), s(CHAIN)],
    ]
}

/// Run a command; its error output when it fails.
fn run(cmd: &[String]) -> Result<(), String> {
    let (program, args) = cmd.split_first().ok_or("empty command")?;
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Whether `program` can list the nat table here (installed, and allowed).
fn usable(program: &str) -> bool {
    run(&[
        program.into(),
        "-t".into(),
        "nat".into(),
        "-L".into(),
        "-n".into(),
    ])
    .is_ok()
}

/// `whouses-sidecar iptables …` with `args` (the words after `iptables`); returns the exit
/// code (0 done, 1 failed, 2 usage).
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> u8 {
    let cli = match IptablesCli::try_parse_from(
        std::iter::once(std::ffi::OsString::from("whouses-sidecar iptables")).chain(args),
    ) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let (install, dry_run) = match &cli.command {
        IptablesCommand::Install {
            inbound_port,
            proxy_port,
            dry_run,
        } => {
            if inbound_port.contains(proxy_port) {
                eprintln!(
                    "whouses-sidecar iptables: --proxy-port {proxy_port} is one of the --inbound-port ports: connections to the sidecar would be redirected to itself"
                );
                return 2;
            }
            (Some((inbound_port.clone(), *proxy_port)), *dry_run)
        }
        IptablesCommand::Uninstall { dry_run } => (None, *dry_run),
    };
    let mut programs = vec!["iptables"];
    if dry_run || usable("ip6tables") {
        programs.push("ip6tables");
    }
    let mut failed = false;
    for program in programs {
        let (cleanup, required): (Vec<Vec<String>>, Vec<Vec<String>>) = match &install {
            Some((ports, proxy)) => {
                let all = install_commands(program, ports, *proxy);
                let (a, b) = all.split_at(uninstall_commands(program).len());
                (a.to_vec(), b.to_vec())
            }
            None => (uninstall_commands(program), Vec::new()),
        };
        for cmd in cleanup.iter().chain(&required) {
            if dry_run {
                println!("{}", cmd.join(" "));
            }
        }
        if dry_run {
            continue;
        }
        // Removing what is not there fails: harmless.
        for cmd in &cleanup {
            let _ = run(cmd);
        }
        for cmd in &required {
            if let Err(e) = run(cmd) {
                eprintln!("whouses-sidecar iptables: `{}` failed: {e}", cmd.join(" "));
                failed = true;
                break;
            }
        }
        if !failed && install.is_some() {
            eprintln!("whouses-sidecar iptables: {program}: arriving TCP connections to ports {:?} go to the inbound sidecar.", install.as_ref().map(|i| &i.0));
        }
    }
    u8::from(failed)
}

/// The destination a redirected connection was addressed to before `REDIRECT` rewrote it
/// (`SO_ORIGINAL_DST`); for a connection that was not redirected, the kernel answers with
/// an error (or this listener's own address).
pub fn original_dst(stream: &TcpStream) -> std::io::Result<SocketAddr> {
    match stream.local_addr()? {
        SocketAddr::V4(_) => Ok(SocketAddr::V4(rustix::net::sockopt::ip_original_dst(
            stream,
        )?)),
        SocketAddr::V6(_) => Ok(SocketAddr::V6(rustix::net::sockopt::ipv6_original_dst(
            stream,
        )?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_redirects_each_port_through_our_chain() {
        let cmds: Vec<String> = install_commands("iptables", &[8080, 8443], 15006)
            .iter()
            .map(|c| c.join(" "))
            .collect();
        assert_eq!(
            cmds,
            vec![
                "iptables -t nat -D PREROUTING -p tcp -j WHOUSES_INBOUND",
                "iptables -t nat -F WHOUSES_INBOUND",
                "iptables -t nat -X WHOUSES_INBOUND",
                "iptables -t nat -N WHOUSES_INBOUND",
                "iptables -t nat -A WHOUSES_INBOUND -p tcp --dport 8080 -j REDIRECT --to-ports 15006",
                "iptables -t nat -A WHOUSES_INBOUND -p tcp --dport 8443 -j REDIRECT --to-ports 15006",
                "iptables -t nat -A PREROUTING -p tcp -j WHOUSES_INBOUND",
            ]
        );
    }

    #[test]
    fn the_subcommand_parses_and_refuses_a_loop() {
        let p =
            |a: &[&str]| IptablesCli::try_parse_from(std::iter::once("x").chain(a.iter().copied()));
        let c = p(&["install", "--inbound-port", "8080,9090"]).unwrap();
        let IptablesCommand::Install {
            inbound_port,
            proxy_port,
            dry_run,
        } = c.command
        else {
            panic!("not install")
        };
        assert_eq!(
            (inbound_port, proxy_port, dry_run),
            (vec![8080, 9090], 15006, false)
        );
        assert!(p(&["install"]).is_err(), "a port is required");
        assert!(p(&["install", "--inbound-port", "0"]).is_err());
        assert!(p(&["uninstall", "--dry-run"]).is_ok());
        assert_eq!(
            main(["install", "--inbound-port", "15006", "--dry-run"].map(Into::into)),
            2
        );
        assert_eq!(
            main(["install", "--inbound-port", "8080", "--dry-run"].map(Into::into)),
            0
        );
    }
}
