//! `--spool-dir`: batches written to disk (fsync) before they are first sent, removed
//! once acknowledged, so a restart — even after `kill -9` — ships what had been cut.
//!
//! Files, one batch each, all named by `seq` (zero-padded, so a listing sorts by it):
//!
//! * `batch-<seq>.json` — a batch waiting for its acknowledgement, holding the exact
//!   report that is (re)sent: the collector's `(instance, seq)` idempotency makes a
//!   re-send after a crash between "acknowledged" and "file removed" harmless.
//! * `batch-<seq>-of-<parent>.json` — one half of batch `parent`, split after the
//!   collector answered 413. The halves are written before the parent is removed, and
//!   are only sent after that; so if the parent is still there at start, the split did
//!   not finish, nothing of it was sent, and the halves are deleted (the parent stays).
//! * `batch-<seq>.rejected` — a batch the collector refused for good (or one this
//!   version cannot send), with the reason: `{"reason", "rejected_at", "report"}`. Kept
//!   for an operator, never sent again, not counted toward the limit on waiting batches
//!   but held to the same number on their own (beyond it a rejected batch is kept only
//!   in memory, and logged).
//! * `*.corrupt` — unreadable files, set aside and reported, never deleted.
//! * `*.tmp` — a write that a crash interrupted; deleted when the spool is opened.
//!
//! Every write goes to a temporary name, is fsynced, renamed, and the directory fsynced,
//! so a crash never leaves half a batch under a real name.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use whouses_wire::{Report, Timestamp};

/// Default most batches waiting in the spool; beyond it new batches are not spooled (they
/// are still sent, and kept in memory). Only a sidecar that crash-loops for a long time
/// while the collector is down gets here: each process life spools at most a few.
pub const MAX_SPOOLED: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool directory {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("spool directory {dir} holds {limit} waiting batches already; not spooling more")]
    Full { dir: PathBuf, limit: usize },
}

fn io(path: &Path, source: std::io::Error) -> SpoolError {
    SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A batch read back from the spool.
#[derive(Debug)]
pub struct Spooled {
    pub report: Report,
    pub path: PathBuf,
}

/// A spooled batch set aside at load because this version cannot send it.
#[derive(Debug)]
pub struct SetAside {
    pub instance: String,
    pub seq: u64,
    pub reason: String,
    pub path: PathBuf,
}

#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_spooled: usize,
}

/// What a file name says.
#[derive(Debug, PartialEq, Eq)]
enum Name {
    Waiting { seq: u64, parent: Option<u64> },
    Rejected { seq: u64 },
    Temporary,
    Other,
}

fn parse_name(name: &str) -> Name {
    if name.ends_with(".tmp") {
        return Name::Temporary;
    }
    let Some(rest) = name.strip_prefix("batch-") else {
        return Name::Other;
    };
    if let Some(stem) = rest.strip_suffix(".rejected") {
        return match stem.parse() {
            Ok(seq) => Name::Rejected { seq },
            Err(_) => Name::Other,
        };
    }
    let Some(stem) = rest.strip_suffix(".json") else {
        return Name::Other;
    };
    let (seq, parent) = match stem.split_once("-of-") {
        Some((s, p)) => (s.parse().ok(), p.parse().ok().map(Some)),
        None => (stem.parse().ok(), Some(None)),
    };
    match (seq, parent) {
        (Some(seq), Some(parent)) => Name::Waiting { seq, parent },
        _ => Name::Other,
    }
}

impl Spool {
    /// Open (and create) the spool directory: checks it is writable and deletes the
    /// temporary files of writes a crash interrupted.
    pub fn open(dir: &Path, max_spooled: usize) -> Result<Spool, SpoolError> {
        fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let probe = dir.join(".write-test");
        fs::write(&probe, b"ok").map_err(|e| io(&probe, e))?;
        fs::remove_file(&probe).map_err(|e| io(&probe, e))?;
        let spool = Spool {
            dir: dir.to_path_buf(),
            max_spooled: max_spooled.max(1),
        };
        for (path, name) in spool.entries()? {
            if parse_name(&name) == Name::Temporary {
                tracing::info!(path = %path.display(), "Deleting the leftover of an interrupted spool write.");
                fs::remove_file(&path).map_err(|e| io(&path, e))?;
            }
        }
        Ok(spool)
    }

    fn entries(&self) -> Result<Vec<(PathBuf, String)>, SpoolError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(|e| io(&self.dir, e))? {
            let entry = entry.map_err(|e| io(&self.dir, e))?;
            out.push((
                entry.path(),
                entry.file_name().to_string_lossy().into_owned(),
            ));
        }
        Ok(out)
    }

    fn path_for(&self, seq: u64, parent: Option<u64>) -> PathBuf {
        match parent {
            None => self.dir.join(format!("batch-{seq:020}.json")),
            Some(p) => self.dir.join(format!("batch-{seq:020}-of-{p:020}.json")),
        }
    }

    fn rejected_path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("batch-{seq:020}.rejected"))
    }

    /// Every waiting batch, oldest `seq` first, and those set aside while loading.
    /// Unreadable files are renamed `*.corrupt`; batches this version cannot send (an
    /// old format, a field it no longer accepts) become `*.rejected` with the reason.
    pub fn load(&self) -> Result<(Vec<Spooled>, Vec<SetAside>), SpoolError> {
        let entries = self.entries()?;
        let mut waiting = Vec::new();
        let mut rejected = std::collections::HashSet::new();
        for (path, name) in entries {
            match parse_name(&name) {
                Name::Waiting { seq, parent } => waiting.push((path, seq, parent)),
                Name::Rejected { seq } => {
                    rejected.insert(seq);
                }
                Name::Temporary | Name::Other => {}
            }
        }
        let present: std::collections::HashSet<u64> = waiting.iter().map(|w| w.1).collect();
        let mut out = Vec::new();
        let mut set_aside = Vec::new();
        for (path, seq, parent) in waiting {
            if parent.is_some_and(|p| present.contains(&p)) {
                // The split of `parent` did not finish, so no half was sent: keep the
                // parent, drop the half.
                tracing::info!(path = %path.display(), "Deleting half of an unfinished split; its parent batch is still spooled.");
                self.remove(&path)?;
                continue;
            }
            if rejected.contains(&seq) {
                // Set aside before a crash, but not yet removed.
                self.remove(&path)?;
                continue;
            }
            let bytes = fs::read(&path).map_err(|e| io(&path, e))?;
            let value: serde_json::Value = match serde_json::from_slice(&bytes) {
                Ok(v) => v,
                Err(error) => {
                    let aside = path.with_extension("corrupt");
                    tracing::error!(%error, path = %path.display(), aside = %aside.display(),
                        "Spooled batch is unreadable; set aside, not sent.");
                    fs::rename(&path, &aside).map_err(|e| io(&path, e))?;
                    continue;
                }
            };
            match Report::from_json(&bytes) {
                Ok(report) => out.push(Spooled { report, path }),
                Err(error) => {
                    let reason = format!("spooled batch cannot be sent by this version: {error}");
                    let instance = value["instance"].as_str().unwrap_or("").to_string();
                    let aside = self.set_aside_value(seq, &path, value, &reason)?;
                    tracing::error!(%reason, seq, path = %aside.display(),
                        "Spooled batch set aside; later batches still ship.");
                    set_aside.push(SetAside {
                        instance,
                        seq,
                        reason,
                        path: aside,
                    });
                }
            }
        }
        out.sort_by_key(|s| s.report.seq);
        Ok((out, set_aside))
    }

    /// Batches waiting in the spool (set-aside and temporary files do not count).
    pub fn waiting(&self) -> Result<usize, SpoolError> {
        Ok(self
            .entries()?
            .iter()
            .filter(|(_, n)| matches!(parse_name(n), Name::Waiting { .. }))
            .count())
    }

    /// Durably write a batch before it is first sent; `parent` names the batch it is half
    /// of. Returns the file's path.
    pub fn write(&self, report: &Report, parent: Option<u64>) -> Result<PathBuf, SpoolError> {
        // Halves replace their parent, so a split is never refused for space.
        if parent.is_none() && self.waiting()? >= self.max_spooled {
            return Err(SpoolError::Full {
                dir: self.dir.clone(),
                limit: self.max_spooled,
            });
        }
        let path = self.path_for(report.seq, parent);
        let body = serde_json::to_vec(report).map_err(|e| io(&path, e.into()))?;
        self.write_atomically(&path, &body)?;
        Ok(path)
    }

    fn write_atomically(&self, path: &Path, body: &[u8]) -> Result<(), SpoolError> {
        let tmp = path.with_extension("tmp");
        {
            let mut f = fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
            f.write_all(body).map_err(|e| io(&tmp, e))?;
            f.sync_all().map_err(|e| io(&tmp, e))?;
        }
        fs::rename(&tmp, path).map_err(|e| io(path, e))?;
        self.sync_dir()
    }

    /// Forget a batch file (acknowledged, or replaced by its halves).
    pub fn remove(&self, path: &Path) -> Result<(), SpoolError> {
        match fs::remove_file(path) {
            Ok(()) => self.sync_dir(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(path, e)),
        }
    }

    /// Set a batch the collector refused for good aside as `batch-<seq>.rejected` with
    /// the reason, and remove its waiting file. Returns where it is kept.
    pub fn set_aside(
        &self,
        report: &Report,
        path: Option<&Path>,
        reason: &str,
    ) -> Result<PathBuf, SpoolError> {
        let value = serde_json::to_value(report).map_err(|e| io(&self.dir, e.into()))?;
        let fallback = self.path_for(report.seq, None);
        self.set_aside_value(report.seq, path.unwrap_or(&fallback), value, reason)
    }

    fn set_aside_value(
        &self,
        seq: u64,
        path: &Path,
        report: serde_json::Value,
        reason: &str,
    ) -> Result<PathBuf, SpoolError> {
        let kept = self
            .entries()?
            .iter()
            .filter(|(_, n)| matches!(parse_name(n), Name::Rejected { .. }))
            .count();
        if kept >= self.max_spooled {
            self.remove(path)?;
            return Err(SpoolError::Full {
                dir: self.dir.clone(),
                limit: self.max_spooled,
            });
        }
        let aside = self.rejected_path(seq);
        let body = serde_json::json!({
            "reason": reason,
            "rejected_at": Timestamp::now(),
            "report": report,
        });
        let bytes = serde_json::to_vec_pretty(&body).map_err(|e| io(&aside, e.into()))?;
        self.write_atomically(&aside, &bytes)?;
        self.remove(path)?;
        Ok(aside)
    }

    fn sync_dir(&self) -> Result<(), SpoolError> {
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(&self.dir, e))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use whouses_wire::REPORT_VERSION;

    fn report(seq: u64) -> Report {
        Report {
            version: REPORT_VERSION,
            service: "svc".into(),
            environment: "default".into(),
            instance: "i-1".into(),
            seq,
            started_at: Timestamp(1),
            period_start: Timestamp(1),
            period_end: Timestamp(2),
            flush_interval_ms: 10_000,
            edges: vec![],
            ..Default::default()
        }
    }

    fn seqs(spool: &Spool) -> Vec<u64> {
        spool
            .load()
            .unwrap()
            .0
            .iter()
            .map(|s| s.report.seq)
            .collect()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn names_parse() {
        assert_eq!(
            parse_name("batch-00000000000000000007.json"),
            Name::Waiting {
                seq: 7,
                parent: None
            }
        );
        assert_eq!(
            parse_name("batch-00000000000000000009-of-00000000000000000007.json"),
            Name::Waiting {
                seq: 9,
                parent: Some(7)
            }
        );
        assert_eq!(
            parse_name("batch-00000000000000000007.rejected"),
            Name::Rejected { seq: 7 }
        );
        assert_eq!(
            parse_name("batch-00000000000000000007.tmp"),
            Name::Temporary
        );
        assert_eq!(parse_name("batch-7.corrupt"), Name::Other);
        assert_eq!(parse_name("batch-x.json"), Name::Other);
        assert_eq!(parse_name("notes.txt"), Name::Other);
    }

    #[test]
    fn write_load_remove() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool"), MAX_SPOOLED).unwrap();
        let p20 = spool.write(&report(20), None).unwrap();
        let p3 = spool.write(&report(3), None).unwrap();
        assert_eq!(seqs(&spool), vec![3, 20]);
        spool.remove(&p3).unwrap();
        spool.remove(&p3).unwrap(); // idempotent
        assert_eq!(seqs(&spool), vec![20]);
        assert_eq!(spool.load().unwrap().0[0].path, p20);
    }

    #[test]
    fn corrupt_files_are_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), MAX_SPOOLED).unwrap();
        spool.write(&report(5), None).unwrap();
        fs::write(
            dir.path().join("batch-00000000000000000009.json"),
            b"{\"vers",
        )
        .unwrap();
        assert_eq!(seqs(&spool), vec![5]);
        assert!(dir
            .path()
            .join("batch-00000000000000000009.corrupt")
            .exists());
    }

    #[test]
    fn an_old_format_is_rejected_with_its_reason_and_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), MAX_SPOOLED).unwrap();
        spool.write(&report(5), None).unwrap();
        let mut old = serde_json::to_value(report(4)).unwrap();
        old["version"] = serde_json::json!(0);
        fs::write(
            dir.path().join("batch-00000000000000000004.json"),
            serde_json::to_vec(&old).unwrap(),
        )
        .unwrap();
        let (loaded, aside) = spool.load().unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].report.seq, 5);
        assert_eq!(aside.len(), 1);
        assert!(aside[0].reason.contains("version"), "{}", aside[0].reason);
        let kept: serde_json::Value =
            serde_json::from_slice(&fs::read(&aside[0].path).unwrap()).unwrap();
        assert!(kept["reason"].as_str().unwrap().contains("version"));
        assert_eq!(kept["report"]["seq"], 4);
        assert_eq!(
            names(dir.path()),
            vec![
                "batch-00000000000000000004.rejected",
                "batch-00000000000000000005.json"
            ]
        );
    }

    #[test]
    fn leftovers_do_not_count_and_temporary_files_are_cleaned_at_open() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("batch-00000000000000000001.tmp"), b"{").unwrap();
        fs::write(dir.path().join("batch-00000000000000000002.corrupt"), b"{").unwrap();
        fs::write(
            dir.path().join("batch-00000000000000000003.rejected"),
            b"{}",
        )
        .unwrap();
        let spool = Spool::open(dir.path(), 2).unwrap();
        assert!(!dir.path().join("batch-00000000000000000001.tmp").exists());
        assert_eq!(spool.waiting().unwrap(), 0);
        spool.write(&report(10), None).unwrap();
        spool.write(&report(11), None).unwrap();
        let full = spool.write(&report(12), None).unwrap_err();
        assert!(matches!(full, SpoolError::Full { limit: 2, .. }), "{full}");
        assert!(full.to_string().contains("2 waiting batches"), "{full}");
        // A half replacing its parent is never refused for space.
        spool.write(&report(13), Some(10)).unwrap();
    }

    #[test]
    fn an_unfinished_split_keeps_the_parent_and_a_finished_one_the_halves() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), MAX_SPOOLED).unwrap();
        let parent = spool.write(&report(10), None).unwrap();
        spool.write(&report(11), Some(10)).unwrap();
        // Crash before the second half and the parent's removal.
        assert_eq!(seqs(&spool), vec![10]);
        assert_eq!(names(dir.path()), vec!["batch-00000000000000000010.json"]);
        // A finished split: both halves written, then the parent removed.
        spool.write(&report(11), Some(10)).unwrap();
        spool.write(&report(12), Some(10)).unwrap();
        spool.remove(&parent).unwrap();
        assert_eq!(seqs(&spool), vec![11, 12]);
    }

    #[test]
    fn set_aside_replaces_the_waiting_file() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), MAX_SPOOLED).unwrap();
        let p = spool.write(&report(8), None).unwrap();
        let aside = spool
            .set_aside(&report(8), Some(&p), "400: invalid field")
            .unwrap();
        assert_eq!(
            names(dir.path()),
            vec!["batch-00000000000000000008.rejected"]
        );
        let kept: serde_json::Value = serde_json::from_slice(&fs::read(aside).unwrap()).unwrap();
        assert_eq!(kept["reason"], "400: invalid field");
        assert!(seqs(&spool).is_empty());
        // A crash between writing the .rejected and removing the .json: not resent.
        spool.write(&report(8), None).unwrap();
        assert!(seqs(&spool).is_empty());
    }
}
