//! Who owns a service: the `--owners` TOML file (a service name or glob → team and
//! contact), else the owner the service's own sidecars report (`--owner`, which the
//! webhook fills from a pod label). The file wins: it is the operator's word, and one
//! place to correct a wrong label. The owner is shown beside a service in callers, check,
//! the migration view, timelines, exports and alerts.
//!
//! ```toml
//! [services."tis-*"]
//! team = "tis"
//! contact = "#tis-oncall"
//!
//! [services.billing]
//! team = "payments"
//! ```
//!
//! An exact name beats any glob; among globs, the one with the most literal characters
//! (the most specific) wins, then the first in name order.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use serde::Deserialize;
use whouses_wire::decom::{Owner, OwnerSource};
use whouses_wire::Timestamp;

use crate::store::decom::ReportedOwner;
use crate::store::{Store, StoreError};

/// Longest team name and contact in the owners file.
const MAX_TEAM: usize = 128;
const MAX_CONTACT: usize = 256;
/// Services whose reported owner a collector remembers (so it writes only changes);
/// beyond, the memory starts again (a few more writes, never a wrong answer).
const MAX_REMEMBERED: usize = 100_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OwnersFile {
    #[serde(default)]
    services: BTreeMap<String, Entry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    team: String,
    #[serde(default)]
    contact: Option<String>,
}

/// The `--owners` file, parsed.
#[derive(Debug, Default)]
pub struct Owners {
    exact: BTreeMap<String, Entry>,
    /// Most specific first.
    globs: Vec<(glob::Pattern, Entry)>,
    /// What the collector last stored per reported `(service, environment)`.
    remembered: Mutex<HashMap<(String, String), String>>,
}

impl Owners {
    pub fn load(path: &Path) -> anyhow::Result<Owners> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read --owners {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("--owners {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Owners, String> {
        let file: OwnersFile = toml::from_str(text).map_err(|e| e.message().to_string())?;
        let mut owners = Owners::default();
        for (name, entry) in file.services {
            let at = |what: &str| format!("services.{name:?}.{what}");
            let team = entry.team.trim();
            if team.is_empty() || team.len() > MAX_TEAM {
                return Err(format!("{}: must be 1-{MAX_TEAM} characters", at("team")));
            }
            if let Some(c) = &entry.contact {
                if c.trim().is_empty() || c.len() > MAX_CONTACT {
                    return Err(format!(
                        "{}: must be 1-{MAX_CONTACT} characters",
                        at("contact")
                    ));
                }
            }
            if [team, entry.contact.as_deref().unwrap_or("")]
                .iter()
                .any(|v| v.chars().any(char::is_control))
            {
                return Err(format!("services.{name:?}: control characters"));
            }
            let entry = Entry {
                team: team.to_string(),
                contact: entry.contact.map(|c| c.trim().to_string()),
            };
            if name.contains(['*', '?', '[']) {
                let p = glob::Pattern::new(&name)
                    .map_err(|e| format!("services.{name:?}: not a valid glob: {e}"))?;
                owners.globs.push((p, entry));
            } else {
                owners.exact.insert(name, entry);
            }
        }
        // Most literal characters first; the sort is stable, so name order breaks ties.
        owners
            .globs
            .sort_by_key(|(p, _)| std::cmp::Reverse(literal_len(p.as_str())));
        Ok(owners)
    }

    /// The file's owner of `service`, if it names one.
    pub fn from_file(&self, service: &str) -> Option<Owner> {
        let e = self.exact.get(service).or_else(|| {
            self.globs
                .iter()
                .find(|(p, _)| p.matches(service))
                .map(|(_, e)| e)
        })?;
        Some(Owner {
            team: e.team.clone(),
            contact: e.contact.clone(),
            source: OwnerSource::OwnersFile,
        })
    }

    /// The owners for one answer: the file, then what sidecars reported.
    pub async fn map(&self, store: &dyn Store) -> Result<OwnerMap<'_>, StoreError> {
        let reported = store
            .decom()
            .reported_owners()
            .await?
            .into_iter()
            .map(|r| ((r.service, r.environment), r.owner))
            .collect();
        Ok(OwnerMap {
            file: self,
            reported,
        })
    }

    /// Store the owner a batch reports, unless this collector stored the same already.
    pub async fn note_reported(
        &self,
        store: &dyn Store,
        service: &str,
        environment: &str,
        owner: &str,
        now: Timestamp,
    ) {
        let key = (service.to_string(), environment.to_string());
        {
            let known = self
                .remembered
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if known.get(&key).is_some_and(|o| o == owner) {
                return;
            }
        }
        let stored = store
            .decom()
            .set_reported_owner(
                ReportedOwner {
                    service: service.to_string(),
                    environment: environment.to_string(),
                    owner: owner.to_string(),
                },
                now,
            )
            .await;
        match stored {
            Ok(()) => {
                let mut known = self
                    .remembered
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if known.len() >= MAX_REMEMBERED {
                    known.clear();
                }
                known.insert(key, owner.to_string());
            }
            Err(error) => {
                tracing::warn!(%error, service, owner, "Failed to store a service's reported owner.")
            }
        }
    }
}

impl Owners {
    /// Put each caller's owner in (`/v1/callers`).
    pub async fn fill_callers(
        &self,
        store: &dyn Store,
        callers: &mut [whouses_wire::api::Caller],
    ) -> Result<(), StoreError> {
        if callers.is_empty() {
            return Ok(());
        }
        let m = self.map(store).await?;
        for c in callers {
            c.owner = m.of(&c.service, &c.environment);
        }
        Ok(())
    }
}

/// Characters of a glob that are not wildcards: how specific it is.
fn literal_len(p: &str) -> usize {
    p.chars()
        .filter(|c| !matches!(c, '*' | '?' | '[' | ']'))
        .count()
}

/// Owners resolved for one answer.
pub struct OwnerMap<'a> {
    file: &'a Owners,
    reported: HashMap<(String, String), String>,
}

impl OwnerMap<'_> {
    /// Put each caller's owner into a `check` answer.
    pub fn fill_check(&self, r: &mut whouses_wire::api::CheckResponse) {
        for c in r.callers.iter_mut().chain(r.evidence.iter_mut()) {
            c.owner = self.of(&c.service, &c.environment);
        }
    }

    /// The owner of a service in an environment: the file's, else the reported one.
    pub fn of(&self, service: &str, environment: &str) -> Option<Owner> {
        self.file.from_file(service).or_else(|| {
            self.reported
                .get(&(service.to_string(), environment.to_string()))
                .map(|team| Owner {
                    team: team.clone(),
                    contact: None,
                    source: OwnerSource::Sidecar,
                })
        })
    }

    /// A map with no reported owners (tests, renderers).
    pub fn file_only(file: &Owners) -> OwnerMap<'_> {
        OwnerMap {
            file,
            reported: HashMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_names_beat_globs_and_specific_globs_beat_broad_ones() {
        let o = Owners::parse(
            r##"
[services."*"]
team = "platform"

[services."tis-*"]
team = "tis"
contact = "#tis-oncall"

[services."tis-sync"]
team = "sync-squad"
"##,
        )
        .unwrap();
        assert_eq!(o.from_file("tis-sync").unwrap().team, "sync-squad");
        let t = o.from_file("tis-concerns").unwrap();
        assert_eq!(t.describe(), "tis (#tis-oncall)");
        assert_eq!(t.source, OwnerSource::OwnersFile);
        assert_eq!(o.from_file("billing").unwrap().team, "platform");
    }

    #[test]
    fn the_file_wins_over_what_sidecars_report() {
        let file = Owners::parse("[services.a]\nteam = \"from-file\"").unwrap();
        let mut m = OwnerMap::file_only(&file);
        m.reported
            .insert(("a".into(), "prod".into()), "label".into());
        m.reported
            .insert(("b".into(), "prod".into()), "label-b".into());
        assert_eq!(m.of("a", "prod").unwrap().team, "from-file");
        let b = m.of("b", "prod").unwrap();
        assert_eq!(
            (b.team.as_str(), b.source),
            ("label-b", OwnerSource::Sidecar)
        );
        assert!(m.of("b", "stage").is_none());
    }

    #[test]
    fn bad_files_say_which_entry() {
        let e = Owners::parse("[services.a]\nteam = \"\"").unwrap_err();
        assert!(e.contains("services.\"a\".team"), "{e}");
        let e = Owners::parse("[services.a]\nteam = \"x\"\nemail = \"y\"").unwrap_err();
        assert!(e.contains("email"), "{e}");
        let e = Owners::parse("[services.\"[a\"]\nteam = \"x\"").unwrap_err();
        assert!(e.contains("not a valid glob"), "{e}");
    }
}
