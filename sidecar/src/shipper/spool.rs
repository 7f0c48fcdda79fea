//! `--spool-dir`: batches written to disk (fsync) before they are first sent, removed
//! once acknowledged, so a restart — even after `kill -9` — ships what had been cut.
//!
//! One file per batch, `batch-<seq>.json`, holding the exact report that is (re)sent:
//! the collector's `(instance, seq)` idempotency makes a re-send after a crash between
//! "acknowledged" and "file removed" harmless. Files are written to a temporary name,
//! fsynced, renamed, and the directory fsynced, so a crash never leaves half a batch
//! under a real name. Unreadable files are renamed `*.corrupt` and reported, never
//! deleted.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use whouses_wire::Report;

/// Most batch files kept; beyond it the oldest stay on disk but new batches are not
/// spooled (they are still sent). Only a sidecar that crash-loops for a long time while
/// the collector is down can get here: each process life spools at most a few batches.
pub const MAX_SPOOLED: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool directory {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("spool directory {0} holds {MAX_SPOOLED} batches already; not spooling more")]
    Full(PathBuf),
}

fn io(path: &Path, source: std::io::Error) -> SpoolError {
    SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
}

impl Spool {
    /// Open (and create) the spool directory; checks it is writable.
    pub fn open(dir: &Path) -> Result<Spool, SpoolError> {
        fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let probe = dir.join(".write-test");
        fs::write(&probe, b"ok").map_err(|e| io(&probe, e))?;
        fs::remove_file(&probe).map_err(|e| io(&probe, e))?;
        Ok(Spool {
            dir: dir.to_path_buf(),
        })
    }

    fn path_for(&self, seq: u64) -> PathBuf {
        // Zero-padded so a plain directory listing sorts by seq.
        self.dir.join(format!("batch-{seq:020}.json"))
    }

    /// Every spooled batch, oldest `seq` first. Unreadable files are set aside.
    pub fn load(&self) -> Result<Vec<Report>, SpoolError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(|e| io(&self.dir, e))? {
            let entry = entry.map_err(|e| io(&self.dir, e))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if !(name.starts_with("batch-") && name.ends_with(".json")) {
                continue;
            }
            let parsed = fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| Report::from_json(&b).map_err(|e| e.to_string()));
            match parsed {
                Ok(r) => out.push(r),
                Err(error) => {
                    let aside = path.with_extension("corrupt");
                    tracing::error!(%error, path = %path.display(), aside = %aside.display(),
                        "Spooled batch is unreadable; set aside, not sent.");
                    let _ = fs::rename(&path, &aside);
                }
            }
        }
        out.sort_by_key(|r| r.seq);
        Ok(out)
    }

    /// Durably write a batch before it is first sent.
    pub fn write(&self, report: &Report) -> Result<(), SpoolError> {
        let count = fs::read_dir(&self.dir)
            .map_err(|e| io(&self.dir, e))?
            .filter(|e| {
                e.as_ref()
                    .map(|e| e.file_name().to_string_lossy().starts_with("batch-"))
                    .unwrap_or(false)
            })
            .count();
        if count >= MAX_SPOOLED {
            return Err(SpoolError::Full(self.dir.clone()));
        }
        let path = self.path_for(report.seq);
        let tmp = path.with_extension("tmp");
        let body = serde_json::to_vec(report).map_err(|e| io(&tmp, e.into()))?;
        {
            let mut f = fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
            f.write_all(&body).map_err(|e| io(&tmp, e))?;
            f.sync_all().map_err(|e| io(&tmp, e))?;
        }
        fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
        self.sync_dir()
    }

    /// Forget a batch once the collector acknowledged it.
    pub fn remove(&self, seq: u64) -> Result<(), SpoolError> {
        let path = self.path_for(seq);
        match fs::remove_file(&path) {
            Ok(()) => self.sync_dir(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&path, e)),
        }
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
    use whouses_wire::{Timestamp, REPORT_VERSION};

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
        }
    }

    #[test]
    fn write_load_remove() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool")).unwrap();
        spool.write(&report(20)).unwrap();
        spool.write(&report(3)).unwrap();
        let loaded: Vec<u64> = spool.load().unwrap().iter().map(|r| r.seq).collect();
        assert_eq!(loaded, vec![3, 20]);
        spool.remove(3).unwrap();
        spool.remove(3).unwrap(); // idempotent
        let loaded: Vec<u64> = spool.load().unwrap().iter().map(|r| r.seq).collect();
        assert_eq!(loaded, vec![20]);
    }

    #[test]
    fn corrupt_files_are_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        spool.write(&report(5)).unwrap();
        fs::write(
            dir.path().join("batch-00000000000000000009.json"),
            b"{\"vers",
        )
        .unwrap();
        let loaded = spool.load().unwrap();
        assert_eq!(loaded.len(), 1);
        assert!(dir
            .path()
            .join("batch-00000000000000000009.corrupt")
            .exists());
    }
}
