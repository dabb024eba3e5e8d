//! Evidence sequence numbers: agent-local, from 1, never reused. (agent id, sequence) identifies
//! an item at the collector, so reuse would make it refuse the new item.
//!
//! The last number handed out is written durably *before* the items carrying it are spooled; after
//! a crash the counter may be ahead of the spool (a skipped number), never behind it.

use std::path::PathBuf;

use anyhow::Context;

use crate::spool::Spool;
use crate::state::write_atomic;

#[derive(Debug)]
pub struct Sequencer {
    path: PathBuf,
    last: u64,
}

impl Sequencer {
    /// Resumes after the highest number in the counter file or the spool.
    pub fn open(path: PathBuf, spool: &Spool) -> anyhow::Result<Sequencer> {
        let recorded = match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().parse::<u64>().with_context(|| {
                format!(
                    "{} does not hold a sequence number; it must contain one decimal number",
                    path.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        };
        let spooled = spool.highest_sequence()?.unwrap_or(0);
        Ok(Sequencer {
            path,
            last: recorded.max(spooled),
        })
    }

    /// Reserves `count` numbers and returns the first; durable before it returns.
    pub fn reserve(&mut self, count: u64) -> anyhow::Result<u64> {
        let first = self.last + 1;
        let last = self.last + count;
        write_atomic(&self.path, format!("{last}\n").as_bytes(), false)?;
        self.last = last;
        Ok(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_survive_restarts_and_never_go_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(&dir.path().join("spool")).expect("spool");
        let path = dir.path().join("sequence");
        let mut seq = Sequencer::open(path.clone(), &spool).expect("open");
        assert_eq!(seq.reserve(3).expect("reserve"), 1);
        assert_eq!(seq.reserve(1).expect("reserve"), 4);
        let mut seq = Sequencer::open(path.clone(), &spool).expect("reopen");
        assert_eq!(seq.reserve(1).expect("reserve"), 5);
        // A spool ahead of the counter (an old or restored counter file) wins.
        spool.push(20, 22, b"x").expect("push");
        let mut seq = Sequencer::open(path.clone(), &spool).expect("reopen");
        assert_eq!(seq.reserve(1).expect("reserve"), 23);
        std::fs::write(&path, "garbage").expect("write");
        let err = Sequencer::open(path, &spool).expect_err("garbage");
        assert!(err.to_string().contains("decimal number"), "{err}");
    }
}
