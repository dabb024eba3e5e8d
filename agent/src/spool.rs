//! The durable outgoing queue. Evidence is written here, fsynced, before anything is sent, and a
//! file leaves only after the collector acked every item in it. A crash at any point loses
//! nothing: at worst a batch is sent twice, and the collector stores it once.
//!
//! Each file holds one encoded `ItemList` (exactly the bytes that get signed and sent), named
//! `FIRST-LAST.items` with zero-padded sequence numbers so that name order is sequence order.
//! Files starting with `.tmp-` are unfinished writes and are removed on open.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::state::{sync_dir, write_atomic};

const SUFFIX: &str = ".items";

#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
}

/// One spooled batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledBatch {
    pub first_sequence: u64,
    pub last_sequence: u64,
    pub path: PathBuf,
}

impl Spool {
    pub fn open(dir: &Path) -> anyhow::Result<Spool> {
        std::fs::create_dir_all(dir).with_context(|| format!("create spool {}", dir.display()))?;
        for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(Spool {
            dir: dir.to_owned(),
        })
    }

    /// Durably adds a batch of items with sequences `first..=last`.
    pub fn push(&self, first: u64, last: u64, items: &[u8]) -> anyhow::Result<SpooledBatch> {
        let path = self.dir.join(format!("{first:020}-{last:020}{SUFFIX}"));
        write_atomic(&path, items, true)?;
        Ok(SpooledBatch {
            first_sequence: first,
            last_sequence: last,
            path,
        })
    }

    /// Spooled batches in sequence order.
    pub fn pending(&self) -> anyhow::Result<Vec<SpooledBatch>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)
            .with_context(|| format!("read spool {}", self.dir.display()))?
        {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some((first, last)) = parse_name(&name) {
                out.push(SpooledBatch {
                    first_sequence: first,
                    last_sequence: last,
                    path: entry.path(),
                });
            }
        }
        out.sort_by_key(|b| b.first_sequence);
        Ok(out)
    }

    pub fn read(&self, batch: &SpooledBatch) -> anyhow::Result<Vec<u8>> {
        std::fs::read(&batch.path).with_context(|| format!("read {}", batch.path.display()))
    }

    /// Drops a batch the collector acked.
    pub fn remove(&self, batch: &SpooledBatch) -> anyhow::Result<()> {
        std::fs::remove_file(&batch.path)
            .with_context(|| format!("remove {}", batch.path.display()))?;
        sync_dir(&self.dir)
    }

    /// The highest sequence number waiting here, if any.
    pub fn highest_sequence(&self) -> anyhow::Result<Option<u64>> {
        Ok(self.pending()?.iter().map(|b| b.last_sequence).max())
    }
}

fn parse_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(SUFFIX)?;
    let (first, last) = stem.split_once('-')?;
    let first = first.parse().ok()?;
    let last = last.parse().ok()?;
    (first <= last && first > 0).then_some((first, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_come_back_in_sequence_order_and_leave_when_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path()).expect("open");
        let b = spool.push(11, 12, b"second").expect("push");
        let a = spool.push(9, 10, b"first").expect("push");
        std::fs::write(dir.path().join(".tmp-junk"), b"x").expect("write");
        std::fs::write(dir.path().join("notes.txt"), b"x").expect("write");
        assert_eq!(
            spool.pending().expect("pending"),
            vec![a.clone(), b.clone()]
        );
        assert_eq!(spool.read(&a).expect("read"), b"first");
        assert_eq!(spool.highest_sequence().expect("highest"), Some(12));
        spool.remove(&a).expect("remove");
        assert_eq!(spool.pending().expect("pending"), vec![b]);
        // Reopening clears unfinished writes but keeps batches.
        let spool = Spool::open(dir.path()).expect("reopen");
        assert!(!dir.path().join(".tmp-junk").exists());
        assert_eq!(spool.pending().expect("pending").len(), 1);
    }

    #[test]
    fn spool_files_are_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path()).expect("open");
        let batch = spool.push(1, 1, b"x").expect("push");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&batch.path)
                .expect("stat")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
