//! The durable outgoing queue. Evidence is written here, fsynced, before anything is sent, and a
//! file leaves only after the collector acked every item in it. A crash at any point loses
//! nothing: at worst a batch is sent twice, and the collector stores it once.
//!
//! Each file holds one encoded `ItemList` (exactly the bytes that get signed and sent), named
//! `FIRST-LAST.items` with zero-padded sequence numbers so that name order is sequence order.
//! Files starting with `.tmp-` are unfinished writes and are removed on open.
//!
//! The spool is bounded (`max_spool_bytes`): when it is over, the oldest batches are dropped
//! and replaced by one *gap record* that says which sequences were dropped, when they were
//! observed and why, so the collector stores the loss instead of never hearing of it. A spool
//! file that cannot be read as evidence, or that the collector refuses for good, is moved to
//! `quarantine/` and replaced by a gap record the same way.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::state::{sync_dir, write_atomic};

const SUFFIX: &str = ".items";
const QUARANTINE: &str = "quarantine";

/// Evidence the agent had to drop, in the domain's terms (sent as `evident.v1.Gap`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub from_sequence: u64,
    /// The gap record itself takes this sequence number.
    pub to_sequence: u64,
    pub items_dropped: u64,
    pub first_observed_at_unix_ms: Option<i64>,
    pub last_observed_at_unix_ms: Option<i64>,
    pub reason: String,
}

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

    /// Drops the oldest batches while the spool is over `max_bytes` (never the newest one) and
    /// replaces them by one gap record. Returns the gap, if one was made.
    pub fn enforce_bound(&self, max_bytes: u64, now_ms: i64) -> anyhow::Result<Option<Gap>> {
        let pending = self.pending()?;
        let mut sizes = Vec::with_capacity(pending.len());
        for batch in &pending {
            sizes.push(
                std::fs::metadata(&batch.path)
                    .with_context(|| format!("stat {}", batch.path.display()))?
                    .len(),
            );
        }
        let mut total: u64 = sizes.iter().sum();
        let mut dropped = 0;
        while total > max_bytes && dropped + 1 < pending.len() {
            total -= sizes[dropped];
            dropped += 1;
        }
        if dropped == 0 {
            return Ok(None);
        }
        let reason =
            format!("spool over max_spool_bytes ({max_bytes}): the oldest evidence was dropped");
        self.replace_with_gap(&pending[..dropped], reason, now_ms)
            .map(Some)
    }

    /// Moves a batch that cannot be delivered to `quarantine/` and replaces it by a gap record
    /// naming `reason`.
    pub fn quarantine(
        &self,
        batch: &SpooledBatch,
        reason: &str,
        now_ms: i64,
    ) -> anyhow::Result<Gap> {
        let dir = self.dir.join(QUARANTINE);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let name = batch.path.file_name().context("spool file name")?;
        let target = dir.join(name);
        let gap = self.gap_for(
            std::slice::from_ref(batch),
            format!("{reason}; quarantined as {}", target.display()),
        )?;
        std::fs::rename(&batch.path, &target)
            .with_context(|| format!("move {} to {}", batch.path.display(), target.display()))?;
        sync_dir(&self.dir)?;
        self.push_gap(&gap, now_ms)?;
        Ok(gap)
    }

    fn replace_with_gap(
        &self,
        dropped: &[SpooledBatch],
        reason: String,
        now_ms: i64,
    ) -> anyhow::Result<Gap> {
        let gap = self.gap_for(dropped, reason)?;
        // The gap record first: a crash between the two leaves both, and the collector takes the
        // gap record for a batch it already stored as a duplicate.
        self.push_gap(&gap, now_ms)?;
        for batch in dropped {
            if batch.first_sequence == gap.to_sequence && batch.last_sequence == gap.to_sequence {
                continue; // an earlier gap record at the same sequence, just rewritten
            }
            std::fs::remove_file(&batch.path)
                .with_context(|| format!("remove {}", batch.path.display()))?;
        }
        sync_dir(&self.dir)?;
        Ok(gap)
    }

    /// The gap that accounts for `batches`, merging earlier gap records among them.
    fn gap_for(&self, batches: &[SpooledBatch], reason: String) -> anyhow::Result<Gap> {
        let (Some(first), Some(last)) = (batches.first(), batches.last()) else {
            anyhow::bail!("a gap needs at least one batch");
        };
        let mut gap = Gap {
            from_sequence: first.first_sequence,
            to_sequence: last.last_sequence,
            items_dropped: 0,
            first_observed_at_unix_ms: None,
            last_observed_at_unix_ms: None,
            reason,
        };
        for batch in batches {
            let contents = std::fs::read(&batch.path)
                .ok()
                .and_then(|bytes| crate::convert::spooled_contents(&bytes));
            match contents {
                Some(contents) => {
                    let (first, last) = (
                        contents.first_observed_at_unix_ms,
                        contents.last_observed_at_unix_ms,
                    );
                    gap.items_dropped += contents.items;
                    if let Some(from) = contents.gap_from {
                        gap.from_sequence = gap.from_sequence.min(from);
                    }
                    gap.first_observed_at_unix_ms = match (gap.first_observed_at_unix_ms, first) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    gap.last_observed_at_unix_ms = match (gap.last_observed_at_unix_ms, last) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        (a, b) => a.or(b),
                    };
                }
                // Unreadable: count by the sequences its name covers.
                None => gap.items_dropped += batch.last_sequence - batch.first_sequence + 1,
            }
        }
        Ok(gap)
    }

    fn push_gap(&self, gap: &Gap, now_ms: i64) -> anyhow::Result<()> {
        let item = crate::convert::gap_item(gap, now_ms);
        let list = evident_proto::v1::ItemList { items: vec![item] };
        self.push(
            gap.to_sequence,
            gap.to_sequence,
            &prost::Message::encode_to_vec(&list),
        )?;
        Ok(())
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

    /// An encoded ItemList of `count` inventory-less error items starting at `first`, observed
    /// at `first * 1000` ms.
    fn items(first: u64, count: u64) -> Vec<u8> {
        let items = (first..first + count)
            .map(|sequence| evident_proto::v1::EvidenceItem {
                sequence,
                check: evident_proto::v1::CheckKind::Inventory as i32,
                observed_at_unix_ms: i64::try_from(sequence * 1000).expect("small"),
                outcome: Some(evident_proto::v1::evidence_item::Outcome::Error(
                    evident_proto::v1::CheckError {
                        reason: "x".repeat(100),
                        source: String::new(),
                    },
                )),
            })
            .collect();
        prost::Message::encode_to_vec(&evident_proto::v1::ItemList { items })
    }

    #[test]
    fn over_the_bound_the_oldest_batches_become_one_gap_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path()).expect("open");
        for first in [1, 5, 9, 13] {
            spool
                .push(first, first + 3, &items(first, 4))
                .expect("push");
        }
        let size = std::fs::metadata(&spool.pending().expect("pending")[0].path)
            .expect("stat")
            .len();
        assert_eq!(spool.enforce_bound(10 * size, 1).expect("bound"), None);

        // Room for two batches: 1-4 and 5-8 go, a gap record takes sequence 8.
        let gap = spool
            .enforce_bound(2 * size, 77)
            .expect("bound")
            .expect("a gap");
        assert_eq!(
            gap,
            Gap {
                from_sequence: 1,
                to_sequence: 8,
                items_dropped: 8,
                first_observed_at_unix_ms: Some(1000),
                last_observed_at_unix_ms: Some(8000),
                reason: format!(
                    "spool over max_spool_bytes ({}): the oldest evidence was dropped",
                    2 * size
                ),
            }
        );
        let left: Vec<(u64, u64)> = spool
            .pending()
            .expect("pending")
            .iter()
            .map(|b| (b.first_sequence, b.last_sequence))
            .collect();
        assert_eq!(left, vec![(8, 8), (9, 12), (13, 16)]);

        // Squeezed again, the gap record is merged into a bigger one; the newest batch stays.
        let gap = spool.enforce_bound(1, 78).expect("bound").expect("a gap");
        assert_eq!(
            (gap.from_sequence, gap.to_sequence, gap.items_dropped),
            (1, 12, 12)
        );
        let left: Vec<(u64, u64)> = spool
            .pending()
            .expect("pending")
            .iter()
            .map(|b| (b.first_sequence, b.last_sequence))
            .collect();
        assert_eq!(left, vec![(12, 12), (13, 16)]);
    }

    #[test]
    fn a_corrupt_file_is_quarantined_and_replaced_by_a_gap_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path()).expect("open");
        let bad = spool.push(3, 5, b"\xff\xff not protobuf").expect("push");
        let gap = spool
            .quarantine(&bad, "spool file corrupt", 9)
            .expect("quarantine");
        assert_eq!(
            (gap.from_sequence, gap.to_sequence, gap.items_dropped),
            (3, 5, 3)
        );
        assert!(
            gap.reason
                .starts_with("spool file corrupt; quarantined as "),
            "{}",
            gap.reason
        );
        assert!(
            dir.path()
                .join("quarantine")
                .join(bad.path.file_name().expect("name"))
                .exists()
        );
        let left = spool.pending().expect("pending");
        assert_eq!(left.len(), 1);
        assert_eq!((left[0].first_sequence, left[0].last_sequence), (5, 5));
        let gap_item = crate::convert::spooled_contents(&spool.read(&left[0]).expect("read"))
            .expect("a gap record");
        assert_eq!((gap_item.items, gap_item.gap_from), (3, Some(3)));
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
