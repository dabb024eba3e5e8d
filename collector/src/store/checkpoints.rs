//! Queries for signed checkpoints (`transparency`) and evidence bundles (`bundle`): the leaves
//! of the Merkle tree (evidence rows in id order), the append-only checkpoint table, and the
//! evidence that arrived in a period.

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{Store, StoreError};

/// A stored checkpoint with what the next one builds on.
#[derive(Debug, Clone)]
pub struct CheckpointRow {
    pub id: i64,
    pub tree_size: u64,
    pub root_hash: Vec<u8>,
    pub signed_at_ms: i64,
    pub ca_fingerprint: Vec<u8>,
    pub signature: Vec<u8>,
    /// Evidence id, agent and sequence of the newest row the tree covers.
    pub last_leaf_id: i64,
    pub last_leaf_agent_id: String,
    pub last_leaf_sequence: u64,
    /// Leaf hash of that row when the checkpoint was signed.
    pub last_leaf_hash: Vec<u8>,
    /// Right-edge subtree hashes, 32 bytes each, largest first.
    pub frontier: Vec<u8>,
}

/// A checkpoint to append (its id is given by the store).
#[derive(Debug, Clone)]
pub struct NewCheckpoint {
    pub tree_size: u64,
    pub root_hash: Vec<u8>,
    pub signed_at_ms: i64,
    pub ca_fingerprint: Vec<u8>,
    pub signature: Vec<u8>,
    pub last_leaf_id: i64,
    pub last_leaf_agent_id: String,
    pub last_leaf_sequence: u64,
    pub last_leaf_hash: Vec<u8>,
    pub frontier: Vec<u8>,
}

/// One leaf of the tree: an evidence row's identity and chain hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafRow {
    pub evidence_id: i64,
    pub agent_id: String,
    pub sequence: u64,
    pub hash: Vec<u8>,
}

/// An evidence row that arrived in a period, with where its item lies.
#[derive(Debug, Clone)]
pub struct PeriodRow {
    pub evidence_id: i64,
    pub agent_id: String,
    pub sequence: u64,
    pub batch_id: i64,
    pub item_index: usize,
    pub received_at_ms: i64,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

const CHECKPOINT_COLUMNS: &str =
    "id, tree_size, root_hash, signed_at_ms, ca_fingerprint, signature,
     last_leaf_id, last_leaf_agent_id, last_leaf_sequence, last_leaf_hash, frontier";

fn checkpoint_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CheckpointRow> {
    Ok(CheckpointRow {
        id: r.get(0)?,
        tree_size: r.get::<_, i64>(1)? as u64,
        root_hash: r.get(2)?,
        signed_at_ms: r.get(3)?,
        ca_fingerprint: r.get(4)?,
        signature: r.get(5)?,
        last_leaf_id: r.get(6)?,
        last_leaf_agent_id: r.get(7)?,
        last_leaf_sequence: r.get::<_, i64>(8)? as u64,
        last_leaf_hash: r.get(9)?,
        frontier: r.get(10)?,
    })
}

fn leaf_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LeafRow> {
    Ok(LeafRow {
        evidence_id: r.get(0)?,
        agent_id: r.get(1)?,
        sequence: r.get::<_, i64>(2)? as u64,
        hash: r.get(3)?,
    })
}

impl Store {
    /// Every checkpoint, oldest first.
    pub fn checkpoints(&self) -> Result<Vec<CheckpointRow>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM checkpoints ORDER BY id"
        ))?;
        let rows = stmt.query_map([], checkpoint_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn latest_checkpoint(&self) -> Result<Option<CheckpointRow>, StoreError> {
        Ok(self
            .conn()?
            .query_row(
                &format!("SELECT {CHECKPOINT_COLUMNS} FROM checkpoints ORDER BY id DESC LIMIT 1"),
                [],
                checkpoint_row,
            )
            .optional()?)
    }

    pub fn checkpoint_by_id(&self, id: i64) -> Result<Option<CheckpointRow>, StoreError> {
        Ok(self
            .conn()?
            .query_row(
                &format!("SELECT {CHECKPOINT_COLUMNS} FROM checkpoints WHERE id = ?1"),
                [id],
                checkpoint_row,
            )
            .optional()?)
    }

    /// Appends a checkpoint built on `previous` (the id of the newest checkpoint when it was
    /// built, `None` for the first). Refused when another was appended meanwhile, so that two
    /// processes signing at once cannot append two heads of the same size.
    pub fn append_checkpoint(
        &self,
        previous: Option<i64>,
        new: &NewCheckpoint,
    ) -> Result<i64, StoreError> {
        let mut conn = self.writer();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let latest: Option<(i64, i64)> = tx
            .query_row(
                "SELECT id, tree_size FROM checkpoints ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if latest.map(|(id, _)| id) != previous {
            return Err(StoreError::Conflict(
                "another checkpoint was signed meanwhile: try again".into(),
            ));
        }
        if let Some((id, size)) = latest
            && size as u64 >= new.tree_size
        {
            return Err(StoreError::Conflict(format!(
                "checkpoint {id} already covers {size} rows: a new one must cover more than {}",
                new.tree_size
            )));
        }
        tx.execute(
            "INSERT INTO checkpoints (tree_size, root_hash, signed_at_ms, ca_fingerprint,
                                      signature, last_leaf_id, last_leaf_agent_id,
                                      last_leaf_sequence, last_leaf_hash, frontier)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                new.tree_size as i64,
                new.root_hash,
                new.signed_at_ms,
                new.ca_fingerprint,
                new.signature,
                new.last_leaf_id,
                new.last_leaf_agent_id,
                new.last_leaf_sequence as i64,
                new.last_leaf_hash,
                new.frontier
            ],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(id)
    }

    /// Calls `visit` for each evidence row with an id above `after_id`, in id order, up to
    /// `limit` rows (all when `None`).
    pub fn for_each_leaf(
        &self,
        after_id: i64,
        limit: Option<u64>,
        mut visit: impl FnMut(LeafRow) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT id, agent_id, sequence, hash FROM evidence WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?;
        let limit = limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
        let mut rows = stmt.query(params![after_id, limit])?;
        while let Some(r) = rows.next()? {
            visit(leaf_row(r)?)?;
        }
        Ok(())
    }

    /// The evidence row with this id, as a leaf.
    pub fn leaf_by_id(&self, evidence_id: i64) -> Result<Option<LeafRow>, StoreError> {
        Ok(self
            .conn()?
            .query_row(
                "SELECT id, agent_id, sequence, hash FROM evidence WHERE id = ?1",
                [evidence_id],
                leaf_row,
            )
            .optional()?)
    }

    /// Evidence that arrived between `from_ms` and `to_ms` (inclusive), by agent and sequence.
    pub fn evidence_received_between(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<PeriodRow>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT id, agent_id, sequence, batch_id, item_index, received_at_ms, prev_hash, hash
             FROM evidence WHERE received_at_ms BETWEEN ?1 AND ?2 ORDER BY agent_id, sequence",
        )?;
        let rows = stmt.query_map(params![from_ms, to_ms], |r| {
            Ok(PeriodRow {
                evidence_id: r.get(0)?,
                agent_id: r.get(1)?,
                sequence: r.get::<_, i64>(2)? as u64,
                batch_id: r.get(3)?,
                item_index: r.get::<_, i64>(4)? as usize,
                received_at_ms: r.get(5)?,
                prev_hash: r.get(6)?,
                hash: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
