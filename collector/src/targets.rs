//! Host patterns and named targets: `host`, `host:port`, `*.suffix`, or a name from the
//! `--targets` TOML file that stands for all the addresses one service is reached by.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use whouses_wire::host::{normalize_host, split_authority};

/// One way of naming upstream hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// A host on any port.
    Host(String),
    /// A host on one port.
    HostPort(String, u16),
    /// Every host ending in `.suffix` (the suffix itself included).
    Suffix(String),
}

impl HostPattern {
    pub fn parse(s: &str) -> Result<HostPattern, String> {
        let s = s.trim();
        if let Some(suffix) = s.strip_prefix("*.") {
            let suffix = normalize_host(suffix).map_err(|e| format!("pattern {s:?}: {e}"))?;
            return Ok(HostPattern::Suffix(suffix));
        }
        let (host, port) = split_authority(s).map_err(|e| format!("host {s:?}: {e}"))?;
        let host = normalize_host(host).map_err(|e| format!("host {s:?}: {e}"))?;
        match port {
            None => Ok(HostPattern::Host(host)),
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => Ok(HostPattern::HostPort(host, p)),
                _ => Err(format!("host {s:?}: invalid port {p:?}")),
            },
        }
    }

    pub fn matches(&self, host: &str, port: u16) -> bool {
        match self {
            HostPattern::Host(h) => h == host,
            HostPattern::HostPort(h, p) => h == host && *p == port,
            HostPattern::Suffix(s) => {
                host == s
                    || (host.len() > s.len()
                        && host.ends_with(s.as_str())
                        && host.as_bytes()[host.len() - s.len() - 1] == b'.')
            }
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetsFile {
    #[serde(default)]
    targets: BTreeMap<String, TargetEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetEntry {
    hosts: Vec<String>,
}

/// Named targets from `--targets`.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    named: BTreeMap<String, Vec<HostPattern>>,
}

impl Targets {
    pub fn load(path: &Path) -> anyhow::Result<Targets> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read --targets {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("--targets {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Targets, String> {
        let file: TargetsFile = toml::from_str(text).map_err(|e| e.message().to_string())?;
        let mut named = BTreeMap::new();
        for (name, entry) in file.targets {
            if entry.hosts.is_empty() {
                return Err(format!("target {name:?} has no hosts"));
            }
            let patterns = entry
                .hosts
                .iter()
                .map(|h| HostPattern::parse(h))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("target {name:?}: {e}"))?;
            named.insert(name, patterns);
        }
        Ok(Targets { named })
    }

    /// What a query's `host` means: a target name first, else one pattern.
    pub fn resolve(&self, query: &str) -> Result<Vec<HostPattern>, String> {
        if let Some(p) = self.named.get(query) {
            return Ok(p.clone());
        }
        HostPattern::parse(query).map(|p| vec![p])
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.named.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_parse_and_match() {
        let p = HostPattern::parse("TIS-Reference.internal.").unwrap();
        assert!(p.matches("tis-reference.internal", 443));
        let p = HostPattern::parse("tis-reference.internal:8080").unwrap();
        assert!(
            p.matches("tis-reference.internal", 8080) && !p.matches("tis-reference.internal", 80)
        );
        let p = HostPattern::parse("*.svc.cluster.local").unwrap();
        assert!(p.matches("ref.ns.svc.cluster.local", 80));
        assert!(p.matches("svc.cluster.local", 80));
        assert!(!p.matches("evilsvc.cluster.local", 80));
        assert!(HostPattern::parse("a:b").is_err());
        assert!(HostPattern::parse("").is_err());
    }

    #[test]
    fn targets_file_names_several_addresses() {
        let t = Targets::parse(
            r#"[targets.reference]
hosts = ["tis-reference.internal", "10.0.3.7:8080", "*.reference.svc.cluster.local"]"#,
        )
        .unwrap();
        let r = t.resolve("reference").unwrap();
        assert_eq!(r.len(), 3);
        assert!(r.iter().any(|p| p.matches("10.0.3.7", 8080)));
        assert_eq!(t.resolve("other.host").unwrap().len(), 1);
        assert!(Targets::parse("[targets.x]\nhosts = []").is_err());
        assert!(Targets::parse("[targets.x]\nhostz = [\"a\"]").is_err());
    }
}
