//! SQLite storage: the schema, its migrations and every query. Nothing outside this module writes
//! SQL, so a PostgreSQL backend can later stand behind the same methods.
//!
//! One connection writes, behind a mutex; reads take pooled read-only connections (see `Store`).
//! Callers on the async runtime reach them through `spawn_blocking`. WAL with
//! `synchronous=FULL` makes a committed transaction durable, which is what an ack promises.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use rusqlite_migration::{M, Migrations};

use crate::ca::{CsrError, IssuedAgentCert};
use crate::chain;
use crate::model::{CheckKind, HostFacts};

mod batch_blobs;
mod checkpoints;
pub use checkpoints::{CheckpointRow, LeafRow, NewCheckpoint, PeriodRow};
mod exports;
mod judgements;
mod reviewers;
pub use exports::{EvidenceRef, ExportEvidence, ExportResult};
pub use judgements::{
    ActionRow, ActionTx, EventError, EventRow, EvidenceSnapshot, HostRow, ItemRow, OutcomeRef,
    PolicyRow, ResultRow,
};
pub use reviewers::{AuditEntry, AuditRow, ChainPosition, SessionRow, UserRow};

const MIGRATIONS: &[M<'static>] = &[
    M::up(include_str!("migrations/0001_evidence_pipe.sql")),
    M::up(include_str!("migrations/0002_agent_revocation.sql")),
    M::up(include_str!("migrations/0003_clock_skew.sql")),
    M::up(include_str!("migrations/0004_policy_and_actions.sql")),
    M::up(include_str!("migrations/0005_checkpoints.sql")),
    M::up(include_str!("migrations/0006_reviewers.sql")),
    M::up(include_str!("migrations/0007_batch_compression.sql")),
    M::up(include_str!("migrations/0008_fleet_summary.sql")),
    M::up(include_str!("migrations/0009_action_heads.sql")),
    M::up(include_str!("migrations/0010_evidence_kind_heads.sql")),
];

/// (agent, check kind) -> (sequence, received_at_ms) of that kind's newest item.
pub type KindHeads = BTreeMap<(String, i64), (u64, i64)>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(rusqlite::Error),
    /// SQLITE_FULL: the database reached `max_database_bytes` or the disk is full. The
    /// transaction rolled back.
    #[error(
        "collector storage is full ({0}): nothing was stored; free disk space on the collector or raise max_database_bytes"
    )]
    Full(rusqlite::Error),
    #[error("database migration failed: {0}")]
    Migration(#[from] rusqlite_migration::Error),
    #[error(
        "no collector database at {0}: start the collector once with `evident-collector serve --data-dir DIR` to create it"
    )]
    Missing(PathBuf),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    /// A write that lost a race with another process (e.g. two checkpoints signed at once).
    #[error("{0}")]
    Conflict(String),
    /// The transaction that held this batch together with others failed: nothing was stored.
    #[error("database error: {0}")]
    GroupCommit(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        match error.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => StoreError::Full(error),
            _ => StoreError::Sqlite(error),
        }
    }
}

/// The size cap in force on a store's connection (see `Store::limit_size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeLimit {
    pub page_size: u64,
    /// The most pages the database may grow to.
    pub max_pages: u64,
    /// Pages in use when the cap was set.
    pub used_pages: u64,
}

impl SizeLimit {
    pub fn max_bytes(&self) -> u64 {
        self.max_pages * self.page_size
    }

    pub fn used_bytes(&self) -> u64 {
        self.used_pages * self.page_size
    }
}

/// Why an enrolment was refused.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error(
        "enrolment token is not known to this collector: check it, or create one with `evident-collector token create`"
    )]
    TokenUnknown,
    #[error(
        "enrolment token expired at {0}: create a new one with `evident-collector token create`"
    )]
    TokenExpired(String),
    #[error(
        "enrolment token was already used ({0} of {0} uses): create a new one with `evident-collector token create`"
    )]
    TokenUsedUp(i64),
    #[error(transparent)]
    Csr(#[from] CsrError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for EnrollError {
    fn from(e: rusqlite::Error) -> Self {
        EnrollError::Store(e.into())
    }
}

/// Why a batch could not be appended. Nothing of the batch is stored in any of these cases.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error(
        "sequence {sequence} arrived after sequence {last_stored} and was never stored: the agent's sequence went backwards"
    )]
    OutOfOrder { sequence: u64, last_stored: u64 },
    #[error(
        "sequence {sequence} is already stored with different content: sequences must never be reused"
    )]
    ConflictingResend { sequence: u64 },
    #[error(
        "sequence {sequence} follows {last_stored}: {missing} missing and no gap record accounts for them"
    )]
    UnexplainedJump {
        sequence: u64,
        last_stored: u64,
        missing: String,
    },
    #[error("agent {agent_id} is {state}: it may not report evidence")]
    NotActive { agent_id: String, state: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for AppendError {
    fn from(e: rusqlite::Error) -> Self {
        AppendError::Store(e.into())
    }
}

/// An agent enrolled by redeeming a token.
#[derive(Debug, Clone)]
pub struct Enrolled {
    pub agent_id: String,
    pub cert: IssuedAgentCert,
}

/// Who is behind a client certificate the collector issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertIdentity {
    pub agent_id: String,
    pub certificate_id: i64,
    pub agent_state: String,
}

/// One item of a batch that passed validation and signature checks.
#[derive(Debug, Clone)]
pub struct ItemToAppend {
    pub sequence: u64,
    pub check: CheckKind,
    /// For a gap record: the first sequence it accounts for.
    pub gap_from: Option<u64>,
    pub observed_at_ms: i64,
    pub bytes: Vec<u8>,
}

/// A batch ready to append: the signed bytes as received and its items in sequence order.
#[derive(Debug, Clone)]
pub struct BatchToAppend {
    pub items_bytes: Vec<u8>,
    pub signature: Vec<u8>,
    pub signature_algorithm: i32,
    pub items: Vec<ItemToAppend>,
    /// The agent's clock minus the collector's at receipt, when the agent sent its time.
    pub agent_clock_skew_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub stored: u64,
    pub duplicates: u64,
}

/// An evidence row as stored, with the bytes of its item taken from its batch.
#[derive(Debug, Clone)]
pub struct StoredEvidence {
    pub agent_id: String,
    pub sequence: u64,
    pub batch_id: i64,
    pub item_index: usize,
    pub check_kind: i64,
    pub observed_at_ms: i64,
    pub received_at_ms: i64,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
    /// The agent's clock minus the collector's when its batch arrived.
    pub agent_clock_skew_ms: Option<i64>,
}

/// An enrolled agent, for `agent list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AgentRow {
    pub agent_id: String,
    pub hostname: String,
    pub os_family: String,
    pub os_name: String,
    /// `active` or `revoked`.
    pub state: String,
    pub enrolled_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
    pub revoked_reason: Option<String>,
    /// When its newest batch arrived; `None` before its first report.
    pub last_contact_ms: Option<i64>,
    pub certificate_not_after_ms: Option<i64>,
    pub evidence_items: i64,
}

/// A stored batch, for verification and display.
#[derive(Debug, Clone)]
pub struct StoredBatch {
    pub id: i64,
    pub agent_id: String,
    pub certificate_der: Vec<u8>,
    /// The ItemList exactly as the agent signed it; empty when `unreadable`.
    pub items: Vec<u8>,
    /// Why the stored bytes cannot be read back (the row or its dictionary was changed).
    pub unreadable: Option<String>,
    pub signature: Vec<u8>,
    pub signature_algorithm: i32,
}

/// One connection writes, behind a mutex; reads go to a small pool of read-only connections,
/// so that a long read (a web page over the whole fleet, an export, a bundle) never holds up
/// the writer and the acks waiting on it. WAL gives each read a consistent snapshot of what
/// had committed when it started.
#[derive(Debug)]
pub struct Store {
    writer: Mutex<Connection>,
    /// Locked only by the append path, while it holds `writer`.
    pack_cache: Mutex<batch_blobs::PackCache>,
    readers: Mutex<Vec<Connection>>,
    path: PathBuf,
    /// Dropped with the store, which stops the checkpointing thread when there is one.
    checkpointer: Mutex<Option<std::sync::mpsc::Sender<()>>>,
}

/// A pooled read-only connection, returned to the pool when dropped.
#[derive(Debug)]
struct ReadConn<'a> {
    conn: Option<Connection>,
    pool: &'a Mutex<Vec<Connection>>,
}

impl std::ops::Deref for ReadConn<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for ReadConn<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        self.conn.as_mut().expect("present until dropped")
    }
}

impl Drop for ReadConn<'_> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        // A connection left inside a transaction (a panic mid-read) is not reused.
        if pool.len() < Store::IDLE_READERS && conn.is_autocommit() {
            pool.push(conn);
        }
    }
}

/// The page size of a new database. Every batch dirties a few leaves scattered by agent (agent
/// and sequence; the agent's kind heads; batches by agent; until migration 0010 also agent,
/// check and sequence for each check), and each dirty page is written whole to the WAL at
/// commit and again to the database at checkpoint. 2 KiB halves those bytes against SQLite's
/// default 4 KiB. At 1,000 agents the checkpoint's burst of writes, which the writer's syncs
/// queue behind, set the p99 of acks at half rate: 137, 144 and 60 ms at 4 KiB; 46 and 51 ms
/// at 2 KiB; 52 and 72 ms at 1 KiB, whose trees are deeper. A database created before keeps
/// its page size (only VACUUM changes it).
const NEW_DATABASE_PAGE_SIZE: i64 = 2048;

impl Store {
    /// Read connections kept open between reads (each keeps its page cache).
    const IDLE_READERS: usize = 3;

    /// Opens the database, creating it and applying migrations as needed.
    pub fn open_or_create(path: &Path) -> Result<Store, StoreError> {
        let mut conn = Connection::open(path)?;
        // Only takes effect on a database not yet written (SQLite ignores it on any other).
        conn.pragma_update(None, "page_size", NEW_DATABASE_PAGE_SIZE)?;
        configure(&conn)?;
        Migrations::from_slice(MIGRATIONS).to_latest(&mut conn)?;
        Ok(Store {
            writer: Mutex::new(conn),
            pack_cache: Mutex::default(),
            readers: Mutex::new(Vec::new()),
            path: path.to_owned(),
            checkpointer: Mutex::new(None),
        })
    }

    /// Moves WAL checkpoints off the writer: a thread of its own copies committed pages into
    /// the database every `CHECKPOINT_EVERY` (PASSIVE: it never waits for or blocks the
    /// writer), and the writer stops checkpointing when a commit crosses the WAL threshold,
    /// which held every batch of that group (and its ack) behind a copy of up to 40 MiB.
    ///
    /// SQLite starts the WAL over only when a write begins with every frame copied, which
    /// a writer that never pauses does not do: under a steady flood the WAL grows until the
    /// load pauses (2 GB in a 20 s benchmark at the maximum rate). Forcing a restart
    /// (`RESTART`) holds the writer for a copy and a sync of the database, and the acks of
    /// that moment rose by 100-200 ms, so the collector does not force one.
    pub fn checkpoint_in_background(&self) -> std::io::Result<()> {
        const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
        let mut slot = self
            .checkpointer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if slot.is_some() {
            return Ok(());
        }
        let conn = Connection::open(&self.path)
            .and_then(|conn| configure(&conn).map(|()| conn))
            .map_err(std::io::Error::other)?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("evident-checkpoint".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_EVERY)
                {
                    let started = std::time::Instant::now();
                    match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                        Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
                    }) {
                        Ok((wal_frames, copied)) => tracing::debug!(
                            wal_frames,
                            copied,
                            ms = started.elapsed().as_secs_f64() * 1e3,
                            "WAL checkpoint"
                        ),
                        Err(error) => tracing::warn!(%error, "WAL checkpoint failed; retrying"),
                    }
                }
            })?;
        self.writer()
            .pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(std::io::Error::other)?;
        *slot = Some(stop);
        Ok(())
    }

    /// Opens an existing database (for the CLI's reading and admin commands).
    pub fn open_existing(path: &Path) -> Result<Store, StoreError> {
        if !path.exists() {
            return Err(StoreError::Missing(path.to_owned()));
        }
        Self::open_or_create(path)
    }

    /// Caps the database at `max_bytes`, rounded down to whole pages, with `PRAGMA
    /// max_page_count` on this store's one connection (the cap is not stored in the file, so
    /// admin commands are not bound by it). A write that would grow the database beyond it
    /// fails with SQLITE_FULL (`StoreError::Full`) and its transaction rolls back. SQLite does
    /// not lower the limit below the pages already in use: a database already over the cap
    /// takes nothing new until the cap is raised.
    pub fn limit_size(&self, max_bytes: u64) -> Result<SizeLimit, StoreError> {
        let conn = self.writer();
        let page_size: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
        let page_size = u64::try_from(page_size)
            .ok()
            .filter(|size| *size > 0)
            .ok_or_else(|| StoreError::Corrupt(format!("page size {page_size}")))?;
        let wanted = i64::try_from((max_bytes / page_size).max(1)).unwrap_or(i64::MAX);
        let max_pages: i64 =
            conn.pragma_update_and_check(None, "max_page_count", wanted, |r| r.get(0))?;
        let used_pages: i64 = conn.pragma_query_value(None, "page_count", |r| r.get(0))?;
        Ok(SizeLimit {
            page_size,
            max_pages: u64::try_from(max_pages).unwrap_or(0),
            used_pages: u64::try_from(used_pages).unwrap_or(0),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The one connection that writes.
    fn writer(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a transaction half-done (it rolls back on
        // drop), so a poisoned lock is still safe to use.
        self.writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A read-only connection from the pool (opened when none is idle). A write through it
    /// fails: `PRAGMA query_only`.
    fn conn(&self) -> Result<ReadConn<'_>, StoreError> {
        let idle = self
            .readers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
        let conn = match idle {
            Some(conn) => conn,
            None => open_reader(&self.path)?,
        };
        Ok(ReadConn {
            conn: Some(conn),
            pool: &self.readers,
        })
    }

    pub fn create_token(
        &self,
        token_hash: &[u8],
        now_ms: i64,
        expires_at_ms: i64,
        max_uses: u32,
    ) -> Result<i64, StoreError> {
        let conn = self.writer();
        conn.execute(
            "INSERT INTO tokens (token_hash, created_at_ms, expires_at_ms, max_uses) VALUES (?1, ?2, ?3, ?4)",
            params![token_hash, now_ms, expires_at_ms, max_uses],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// Redeems one use of a token and records a new agent with the certificate `issue` makes for
    /// it, all in one transaction: a refused CSR leaves the token unused.
    pub fn enroll(
        &self,
        token_hash: &[u8],
        now_ms: i64,
        host: &HostFacts,
        new_agent_id: &str,
        issue: impl FnOnce(&str) -> Result<IssuedAgentCert, CsrError>,
    ) -> Result<Enrolled, EnrollError> {
        let mut conn = self.writer();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let token: Option<(i64, i64, i64, i64)> = tx
            .query_row(
                "SELECT id, expires_at_ms, max_uses, uses FROM tokens WHERE token_hash = ?1",
                [token_hash],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let (token_id, expires_at_ms, max_uses, uses) = token.ok_or(EnrollError::TokenUnknown)?;
        if now_ms >= expires_at_ms {
            return Err(EnrollError::TokenExpired(crate::model::format_unix_ms(
                expires_at_ms,
            )));
        }
        if uses >= max_uses {
            return Err(EnrollError::TokenUsedUp(max_uses));
        }
        let cert = issue(new_agent_id)?;
        tx.execute(
            "UPDATE tokens SET uses = uses + 1 WHERE id = ?1",
            [token_id],
        )?;
        tx.execute(
            "INSERT INTO agents (agent_id, enrolled_at_ms, token_id, hostname, os_family, os_name,
                                 os_version, architecture, machine_id, agent_version)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                new_agent_id,
                now_ms,
                token_id,
                host.hostname,
                host.os_family,
                host.os_name,
                host.os_version,
                host.architecture,
                host.machine_id,
                host.agent_version
            ],
        )?;
        tx.execute(
            "INSERT INTO certificates (agent_id, fingerprint, der, not_before_ms, not_after_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                new_agent_id,
                ring::digest::digest(&ring::digest::SHA256, &cert.der).as_ref(),
                cert.der.as_ref(),
                offset_to_ms(cert.not_before),
                offset_to_ms(cert.not_after)
            ],
        )?;
        tx.commit()?;
        Ok(Enrolled {
            agent_id: new_agent_id.to_owned(),
            cert,
        })
    }

    /// Records a renewed certificate of an active agent; its earlier certificates stay, so
    /// the batches they signed still verify.
    pub fn add_certificate(
        &self,
        agent_id: &str,
        cert: &IssuedAgentCert,
    ) -> Result<(), StoreError> {
        self.writer().execute(
            "INSERT INTO certificates (agent_id, fingerprint, der, not_before_ms, not_after_ms)
             SELECT ?1, ?2, ?3, ?4, ?5 FROM agents WHERE agent_id = ?1 AND state = 'active'",
            params![
                agent_id,
                ring::digest::digest(&ring::digest::SHA256, &cert.der).as_ref(),
                cert.der.as_ref(),
                offset_to_ms(cert.not_before),
                offset_to_ms(cert.not_after)
            ],
        )?;
        Ok(())
    }

    /// Looks up the agent behind a certificate by the SHA-256 of its DER.
    pub fn certificate_identity(
        &self,
        fingerprint: &[u8],
    ) -> Result<Option<CertIdentity>, StoreError> {
        let conn = self.conn()?;
        Ok(conn
            .query_row(
                "SELECT c.agent_id, c.id, a.state FROM certificates c
                 JOIN agents a ON a.agent_id = c.agent_id WHERE c.fingerprint = ?1",
                [fingerprint],
                |r| {
                    Ok(CertIdentity {
                        agent_id: r.get(0)?,
                        certificate_id: r.get(1)?,
                        agent_state: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    /// Appends a batch in one transaction: new items extend the agent's hash chain, items already
    /// stored with identical bytes are counted as duplicates, anything else refuses the batch.
    pub fn append_batch(
        &self,
        identity: &CertIdentity,
        batch: &BatchToAppend,
        now_ms: i64,
    ) -> Result<Appended, AppendError> {
        self.append_batches(&[(identity, batch, now_ms)])
            .pop()
            .unwrap_or_else(|| Err(StoreError::Corrupt("no result for the batch".into()).into()))
    }

    /// Appends several batches in one transaction (group commit: one durable write for all);
    /// a refused batch leaves the others untouched. Returns one result per batch, in order;
    /// when the commit fails, every batch gets its error and nothing is stored.
    ///
    /// A batch is checked before anything of it is written, so a refusal writes nothing and
    /// needs no savepoint (a savepoint per batch copied every page it touched to the statement
    /// journal: a sixth of the writer's time, by perf). Only when a write itself fails
    /// part-way (the database is full) is the group rolled back and appended again with a
    /// savepoint per batch, so that one batch's partial rows never stay behind.
    pub fn append_batches(
        &self,
        batches: &[(&CertIdentity, &BatchToAppend, i64)],
    ) -> Vec<Result<Appended, AppendError>> {
        let mut conn = self.writer();
        let mut cache = self
            .pack_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        append_group(&mut conn, &mut cache, batches, false).unwrap_or_else(|WrittenPartWay| {
            append_group(&mut conn, &mut cache, batches, true)
                .unwrap_or_else(|WrittenPartWay| unreachable!("a savepoint takes a batch back"))
        })
    }

    /// Agent ids in a stable order.
    /// Every enrolled agent with its state, last contact and certificate expiry, by id.
    pub fn agents(&self) -> Result<Vec<AgentRow>, StoreError> {
        self.agents_where(None)
    }

    fn agents_where(&self, agent_id: Option<&str>) -> Result<Vec<AgentRow>, StoreError> {
        let conn = self.conn()?;
        let mut statement = conn.prepare_cached(
            "SELECT a.agent_id, a.hostname, a.os_family, a.os_name, a.state, a.enrolled_at_ms,
                    a.revoked_at_ms, a.revoked_reason,
                    (SELECT MAX(received_at_ms) FROM batches b WHERE b.agent_id = a.agent_id),
                    (SELECT MAX(not_after_ms) FROM certificates c WHERE c.agent_id = a.agent_id),
                    (SELECT COUNT(*) FROM evidence e WHERE e.agent_id = a.agent_id)
             FROM agents a WHERE ?1 IS NULL OR a.agent_id = ?1 ORDER BY a.agent_id",
        )?;
        let rows = statement.query_map([agent_id], |r| {
            Ok(AgentRow {
                agent_id: r.get(0)?,
                hostname: r.get(1)?,
                os_family: r.get(2)?,
                os_name: r.get(3)?,
                state: r.get(4)?,
                enrolled_at_ms: r.get(5)?,
                revoked_at_ms: r.get(6)?,
                revoked_reason: r.get(7)?,
                last_contact_ms: r.get(8)?,
                certificate_not_after_ms: r.get(9)?,
                evidence_items: r.get(10)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Revokes an agent: from now on its streams and batches are refused. Returns `false` when
    /// there is no such agent; revoking a revoked agent keeps the first time and reason.
    pub fn revoke_agent(
        &self,
        agent_id: &str,
        reason: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let conn = self.writer();
        let known: bool = conn
            .query_row(
                "SELECT 1 FROM agents WHERE agent_id = ?1",
                [agent_id],
                |_| Ok(true),
            )
            .optional()?
            .unwrap_or(false);
        if known {
            conn.execute(
                "UPDATE agents SET state = 'revoked', revoked_at_ms = ?2, revoked_reason = ?3
                 WHERE agent_id = ?1 AND state <> 'revoked'",
                params![agent_id, now_ms, reason],
            )?;
        }
        Ok(known)
    }

    pub fn agent_ids(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare("SELECT agent_id FROM agents ORDER BY agent_id")?;
        let ids = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(ids)
    }

    /// Every agent's head of each check kind (`evidence_kind_heads`).
    pub fn kind_heads(&self) -> Result<KindHeads, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT agent_id, check_kind, sequence, received_at_ms FROM evidence_kind_heads",
        )?;
        let heads = stmt
            .query_map([], |r| {
                Ok((
                    (r.get(0)?, r.get(1)?),
                    (r.get::<_, i64>(2)? as u64, r.get(3)?),
                ))
            })?
            .collect::<Result<_, _>>()?;
        Ok(heads)
    }

    /// Calls `visit` for each evidence row of an agent in sequence order (or of all agents,
    /// grouped by agent), stopping early when it returns false. `visit` reads batches through
    /// the `BatchReader` it is given, on the same connection and snapshot.
    pub fn for_each_evidence(
        &self,
        agent_id: Option<&str>,
        mut visit: impl FnMut(StoredEvidence, &BatchReader<'_>) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let conn = self.conn()?;
        let reader = BatchReader::new(&conn);
        let mut stmt = conn.prepare(&format!(
            "SELECT {} FROM evidence e JOIN batches b ON b.id = e.batch_id
             WHERE (?1 IS NULL OR e.agent_id = ?1) ORDER BY e.agent_id, e.sequence",
            reviewers::EVIDENCE_COLUMNS
        ))?;
        let mut rows = stmt.query([agent_id])?;
        while let Some(r) = rows.next()? {
            if !visit(reviewers::evidence_row(r)?, &reader)? {
                break;
            }
        }
        Ok(())
    }

    pub fn batch(&self, id: i64) -> Result<Option<StoredBatch>, StoreError> {
        BatchReader::new(&*self.conn()?).batch(id)
    }

    /// Calls `visit` for every stored batch in the order they were received.
    pub fn for_each_batch(
        &self,
        mut visit: impl FnMut(StoredBatch) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let conn = self.conn()?;
        let mut dictionaries = batch_blobs::Dictionaries::default();
        let mut stmt = conn.prepare(&format!(
            "SELECT {BATCH_COLUMNS} FROM batches b JOIN certificates c ON c.id = b.certificate_id
             ORDER BY b.id"
        ))?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            visit(stored_batch(&conn, &mut dictionaries, r)?)?;
        }
        Ok(())
    }
}

/// What checking a batch found: where the agent's chain stands and which items are new.
struct AppendPlan {
    head: Option<(u64, Vec<u8>)>,
    first_new: usize,
    duplicates: u64,
}

/// Checks one batch against what is stored, writing nothing: the agent must be active, resent
/// items must equal what is stored, and new sequences must continue without an unexplained
/// hole.
fn check_append(
    conn: &Connection,
    identity: &CertIdentity,
    batch: &BatchToAppend,
) -> Result<AppendPlan, AppendError> {
    let agent_id = identity.agent_id.as_str();
    // Checked in the transaction that appends, so a revocation takes effect on the next
    // batch even of a stream that was opened before it.
    // Statements are cached: parsing them again for every batch cost more than running them.
    let state: String = conn
        .prepare_cached("SELECT state FROM agents WHERE agent_id = ?1")?
        .query_row([agent_id], |r| r.get(0))?;
    if state != "active" {
        return Err(AppendError::NotActive {
            agent_id: agent_id.to_owned(),
            state,
        });
    }
    let head: Option<(u64, Vec<u8>)> = conn
        .prepare_cached(
            "SELECT sequence, hash FROM evidence WHERE agent_id = ?1 ORDER BY sequence DESC LIMIT 1",
        )?
        .query_row([agent_id], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))
        .optional()?;
    let mut duplicates = 0;
    let mut first_new = batch.items.len();
    let mut cached_batch: Option<(i64, Vec<Vec<u8>>)> = None;
    for (index, item) in batch.items.iter().enumerate() {
        let last_stored = match &head {
            Some((last, _)) if item.sequence <= *last => *last,
            _ => {
                first_new = index;
                break;
            }
        };
        if item.gap_from.is_some() {
            // A gap record for items that did arrive (their ack was lost before the agent
            // dropped them): nothing is missing, so there is nothing to record.
            duplicates += 1;
            continue;
        }
        let existing: Option<(i64, i64)> = conn
            .prepare_cached(
                "SELECT batch_id, item_index FROM evidence WHERE agent_id = ?1 AND sequence = ?2",
            )?
            .query_row(params![agent_id, item.sequence as i64], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        let (batch_id, item_index) = existing.ok_or(AppendError::OutOfOrder {
            sequence: item.sequence,
            last_stored,
        })?;
        if cached_batch.as_ref().map(|(id, _)| *id) != Some(batch_id) {
            let bytes = batch_blobs::signed_items(conn, batch_id)?
                .ok_or_else(|| StoreError::Corrupt(format!("batch {batch_id} is missing")))?
                .map_err(|e| StoreError::Corrupt(format!("batch {batch_id}: {e}")))?;
            let items = crate::convert::split_item_list(&bytes)
                .map_err(|e| StoreError::Corrupt(format!("batch {batch_id}: {e}")))?;
            cached_batch = Some((batch_id, items));
        }
        let stored = cached_batch
            .as_ref()
            .and_then(|(_, items)| items.get(item_index as usize));
        if stored != Some(&item.bytes) {
            return Err(AppendError::ConflictingResend {
                sequence: item.sequence,
            });
        }
        duplicates += 1;
    }
    // Sequences continue without holes; a hole is allowed only before a gap record, which
    // says that everything up to its own sequence that did not arrive was dropped, and why.
    let mut expected = head.as_ref().map_or(1, |(last, _)| last + 1);
    for item in &batch.items[first_new..] {
        let explained = item.gap_from.is_some();
        if item.sequence != expected && !explained {
            return Err(AppendError::UnexplainedJump {
                sequence: item.sequence,
                last_stored: expected - 1,
                missing: if item.sequence == expected + 1 {
                    format!("sequence {expected} is")
                } else {
                    format!("sequences {expected}..={} are", item.sequence - 1)
                },
            });
        }
        expected = item.sequence + 1;
    }
    Ok(AppendPlan {
        head,
        first_new,
        duplicates,
    })
}

/// Writes a checked batch's new items, extending the agent's hash chain.
fn write_append(
    conn: &Connection,
    cache: &mut batch_blobs::PackCache,
    identity: &CertIdentity,
    batch: &BatchToAppend,
    plan: &AppendPlan,
    now_ms: i64,
) -> Result<Appended, StoreError> {
    let agent_id = identity.agent_id.as_str();
    let new_items = &batch.items[plan.first_new..];
    if !new_items.is_empty() {
        let packed = batch_blobs::pack(conn, cache, agent_id, &batch.items_bytes, now_ms)?;
        conn.prepare_cached(
            "INSERT INTO batches (agent_id, certificate_id, received_at_ms, items, items_dictionary,
                                  signature, signature_algorithm, agent_clock_skew_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![
            agent_id,
            identity.certificate_id,
            now_ms,
            packed.blob,
            packed.dictionary_id,
            batch.signature,
            batch.signature_algorithm,
            batch.agent_clock_skew_ms
        ])?;
        let batch_id = conn.last_insert_rowid();
        let mut prev_hash = plan
            .head
            .as_ref()
            .map_or(chain::GENESIS.to_vec(), |(_, hash)| hash.clone());
        let mut insert = conn.prepare_cached(
            "INSERT INTO evidence (agent_id, sequence, batch_id, item_index, check_kind,
                                       observed_at_ms, received_at_ms, prev_hash, hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        for (offset, item) in new_items.iter().enumerate() {
            let hash = chain::item_hash(&prev_hash, agent_id, &item.bytes);
            insert.execute(params![
                agent_id,
                item.sequence as i64,
                batch_id,
                (plan.first_new + offset) as i64,
                item.check.number(),
                item.observed_at_ms,
                now_ms,
                prev_hash,
                hash.as_slice()
            ])?;
            prev_hash = hash.to_vec();
        }
        // Items come in sequence order, so the last of each kind is its new head.
        let mut kinds = Vec::with_capacity(4);
        for item in new_items.iter().rev() {
            let kind = item.check.number();
            if !kinds.contains(&kind) {
                kinds.push(kind);
                set_kind_head(conn, agent_id, kind, item.sequence, now_ms)?;
            }
        }
    }
    Ok(Appended {
        stored: new_items.len() as u64,
        duplicates: plan.duplicates,
    })
}

/// Moves an agent's head of one check kind (`evidence_kind_heads`) forward to `sequence`. Public
/// for the bench's raw insert loop, which must write the same rows.
pub fn set_kind_head(
    conn: &Connection,
    agent_id: &str,
    kind: i64,
    sequence: u64,
    received_at_ms: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO evidence_kind_heads (agent_id, check_kind, sequence, received_at_ms)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (agent_id, check_kind) DO UPDATE
             SET sequence = excluded.sequence, received_at_ms = excluded.received_at_ms
             WHERE excluded.sequence > evidence_kind_heads.sequence",
    )?
    .execute(params![agent_id, kind, sequence as i64, received_at_ms])?;
    Ok(())
}

/// A batch's write failed after some of its rows were written, outside a savepoint: the
/// group must be rolled back (dropping its transaction does) and appended with savepoints.
struct WrittenPartWay;

/// One group commit (`Store::append_batches`), each batch in a savepoint of its own when
/// `savepoints`; without them, a write failing part-way ends the group with `WrittenPartWay`.
fn append_group(
    conn: &mut Connection,
    cache: &mut batch_blobs::PackCache,
    batches: &[(&CertIdentity, &BatchToAppend, i64)],
    savepoints: bool,
) -> Result<Vec<Result<Appended, AppendError>>, WrittenPartWay> {
    let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(error) => return Ok(all_failed(batches.len(), &error.into())),
    };
    let mut results = Vec::with_capacity(batches.len());
    for (identity, batch, now_ms) in batches {
        let result = if savepoints {
            match tx.savepoint() {
                Ok(savepoint) => {
                    let result = check_append(&savepoint, identity, batch).and_then(|plan| {
                        Ok(write_append(
                            &savepoint, cache, identity, batch, &plan, *now_ms,
                        )?)
                    });
                    match result {
                        Ok(appended) => savepoint.commit().map(|()| appended).map_err(Into::into),
                        // Dropping the savepoint rolls this batch back.
                        Err(error) => Err(error),
                    }
                }
                Err(error) => Err(error.into()),
            }
        } else {
            match check_append(&tx, identity, batch) {
                // A refused batch wrote nothing.
                Err(refused) => Err(refused),
                Ok(plan) => Ok(write_append(&tx, cache, identity, batch, &plan, *now_ms)
                    .map_err(|_| WrittenPartWay)?),
            }
        };
        // Some errors (SQLITE_FULL among them) make SQLite roll back the whole transaction:
        // then nothing of the group is stored, whatever earlier batches were told, and every
        // batch gets that error.
        if result.is_err() && tx.is_autocommit() {
            return Ok(all_failed(batches.len(), &group_error(result)));
        }
        results.push(result);
    }
    Ok(match tx.commit() {
        Ok(()) => results,
        Err(error) => all_failed(batches.len(), &error.into()),
    })
}

/// Every batch of a group gets `error`: nothing of the group was stored.
fn all_failed(count: usize, error: &StoreError) -> Vec<Result<Appended, AppendError>> {
    (0..count)
        .map(|_| Err(AppendError::Store(same_error(error))))
        .collect()
}

/// The error that ended a group's transaction.
fn group_error(result: Result<Appended, AppendError>) -> StoreError {
    match result {
        Err(AppendError::Store(error)) => error,
        Err(other) => StoreError::GroupCommit(other.to_string()),
        Ok(_) => StoreError::GroupCommit("the transaction ended".into()),
    }
}

/// Enrols agent `agt-1` on `host` directly in `store`, under a CA made in `dir` (for tests
/// that need an agent row and its certificate identity).
#[cfg(test)]
pub(crate) fn enrol_for_test(store: &Store, dir: &Path, host: &HostFacts) -> CertIdentity {
    let mut enrolled = enrol_fleet_for_test(store, dir, std::slice::from_ref(host));
    enrolled.pop().expect("one agent")
}

/// Enrols one agent per host, `agt-1`, `agt-2`, ... (for tests).
#[cfg(test)]
pub(crate) fn enrol_fleet_for_test(
    store: &Store,
    dir: &Path,
    hosts: &[HostFacts],
) -> Vec<CertIdentity> {
    let ca =
        crate::ca::CertificateAuthority::load_or_create(&crate::ca::CaPaths::new(dir)).expect("ca");
    let key = rcgen::KeyPair::generate().expect("key");
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .expect("params")
        .serialize_request(&key)
        .expect("csr");
    let uses = u32::try_from(hosts.len()).expect("a test fleet");
    store.create_token(b"t", 0, i64::MAX, uses).expect("token");
    hosts
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let enrolled = store
                .enroll(b"t", 1, host, &format!("agt-{}", i + 1), |id| {
                    ca.sign_agent_csr(csr.der(), id, time::Duration::days(1))
                })
                .expect("enrol");
            let fingerprint = ring::digest::digest(&ring::digest::SHA256, &enrolled.cert.der);
            store
                .certificate_identity(fingerprint.as_ref())
                .expect("read")
                .expect("identity")
        })
        .collect()
}

/// Reads batches on a connection already held (see `Store::for_each_evidence`).
#[derive(Debug)]
pub struct BatchReader<'a> {
    conn: &'a Connection,
    dictionaries: std::cell::RefCell<batch_blobs::Dictionaries>,
}

impl<'a> BatchReader<'a> {
    fn new(conn: &'a Connection) -> Self {
        BatchReader {
            conn,
            dictionaries: Default::default(),
        }
    }

    pub fn batch(&self, id: i64) -> Result<Option<StoredBatch>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {BATCH_COLUMNS} FROM batches b JOIN certificates c ON c.id = b.certificate_id
             WHERE b.id = ?1"
        ))?;
        let mut rows = stmt.query([id])?;
        match rows.next()? {
            Some(r) => Ok(Some(stored_batch(
                self.conn,
                &mut self.dictionaries.borrow_mut(),
                r,
            )?)),
            None => Ok(None),
        }
    }
}

const BATCH_COLUMNS: &str = "b.id, b.agent_id, c.der, b.items, b.items_dictionary, b.signature,
     b.signature_algorithm";

fn stored_batch(
    conn: &Connection,
    dictionaries: &mut batch_blobs::Dictionaries,
    r: &rusqlite::Row<'_>,
) -> Result<StoredBatch, StoreError> {
    let (items, unreadable) = match dictionaries.unpack(conn, r.get(3)?, r.get(4)?)? {
        Ok(items) => (items, None),
        Err(why) => (Vec::new(), Some(why)),
    };
    Ok(StoredBatch {
        id: r.get(0)?,
        agent_id: r.get(1)?,
        certificate_der: r.get(2)?,
        items,
        unreadable,
        signature: r.get(5)?,
        signature_algorithm: r.get(6)?,
    })
}

/// The same store error for each batch of a failed group commit.
fn same_error(error: &StoreError) -> StoreError {
    match error {
        StoreError::Full(e) => StoreError::Full(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            Some(e.to_string()),
        )),
        other => StoreError::GroupCommit(other.to_string()),
    }
}

fn open_reader(path: &Path) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.pragma_update(None, "query_only", true)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    plan_once(&conn)?;
    // 64 MiB of page cache each (filled only as pages are read): a fleet-wide page touches
    // an index leaf per host (last contacts of 10,000 hosts: 40 MB), and with less every
    // request read them all from the operating system again (91 ms against 26 ms warm).
    conn.pragma_update(None, "cache_size", -65_536)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

fn configure(conn: &Connection) -> Result<(), rusqlite::Error> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // 32 MiB of page cache (the default is 2 MiB): index pages of a large fleet stay in memory.
    conn.pragma_update(None, "cache_size", -32_768)?;
    // Checkpoint the WAL every ~40 MiB instead of every 4 MiB: pages written again and again
    // (index interior pages, chain heads) are copied into the database once per checkpoint.
    conn.pragma_update(None, "wal_autocheckpoint", 10_000)?;
    // A statement that writes through a trigger (rule results, action events) keeps a
    // statement journal inside a larger transaction; in memory, not in a temporary file.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    plan_once(conn)
}

/// Statements are planned once, whatever is bound to them, and stay in a cache big enough for
/// every statement a connection runs. Without the planner stability guarantee SQLite plans
/// `LIMIT ?` again for every new value bound, so a cached statement was compiled anew on every
/// use (a quarter of judging a host walked back through its history, by perf).
fn plan_once(conn: &Connection) -> Result<(), rusqlite::Error> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

fn offset_to_ms(t: time::OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_valid() {
        assert!(Migrations::from_slice(MIGRATIONS).validate().is_ok());
    }

    #[test]
    fn a_new_database_gets_small_pages_and_an_existing_one_keeps_its_own() {
        let dir = tempfile::tempdir().expect("tempdir");
        let page_size = |store: &Store| -> i64 {
            store
                .writer()
                .pragma_query_value(None, "page_size", |r| r.get(0))
                .expect("page size")
        };
        let new = Store::open_or_create(&dir.path().join("new.db")).expect("create");
        assert_eq!(page_size(&new), NEW_DATABASE_PAGE_SIZE);
        new.create_token(&[1; 32], 0, 1, 1).expect("write");
        drop(new);
        assert_eq!(
            page_size(&Store::open_or_create(&dir.path().join("new.db")).expect("reopen")),
            NEW_DATABASE_PAGE_SIZE
        );

        // A database written by an older collector, with SQLite's default pages and a table.
        let old_path = dir.path().join("old.db");
        let old = Connection::open(&old_path).expect("old");
        old.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE before_us (x INTEGER);")
            .expect("old schema");
        drop(old);
        let store = Store::open_or_create(&old_path).expect("migrate the old database");
        assert_eq!(page_size(&store), 4096, "kept: only VACUUM could change it");
        store
            .create_token(&[2; 32], 0, 1, 1)
            .expect("write after migrating");
    }

    #[test]
    fn a_full_database_refuses_the_write_names_the_cause_and_keeps_working() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open_or_create(&dir.path().join("collector.db")).expect("open");
        let limit = store.limit_size(1024 * 1024).expect("cap");
        assert_eq!(limit.max_bytes(), 1024 * 1024);
        assert!(limit.used_pages < limit.max_pages);
        // Ballast up to 32 KiB below the cap, so that a few tokens fill the rest.
        store
            .writer()
            .execute_batch(&format!(
                "CREATE TABLE ballast (b BLOB); INSERT INTO ballast VALUES (zeroblob({}))",
                limit.max_bytes() - limit.used_bytes() - 32 * 1024
            ))
            .expect("ballast");
        let hash = |i: u32| ring::digest::digest(&ring::digest::SHA256, &i.to_be_bytes());
        let mut stored = 0;
        let error = loop {
            match store.create_token(hash(stored).as_ref(), 0, 1, 1) {
                Ok(_) => stored += 1,
                Err(error) => break error,
            }
            assert!(stored < 100_000, "the cap never took effect");
        };
        assert!(matches!(error, StoreError::Full(_)), "{error:?}");
        let message = error.to_string();
        assert!(message.contains("storage is full"), "{message}");
        assert!(message.contains("max_database_bytes"), "{message}");
        let count: u32 = store
            .conn()
            .expect("read connection")
            .query_row("SELECT COUNT(*) FROM tokens", [], |r| r.get(0))
            .expect("reads still work");
        assert_eq!(count, stored, "the refused write left nothing behind");
        let check: String = store
            .conn()
            .expect("read connection")
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("integrity check");
        assert_eq!(check, "ok");

        // Space returns: a larger cap lets writes through again.
        store.limit_size(2 * 1024 * 1024).expect("raise the cap");
        store
            .create_token(hash(stored).as_ref(), 0, 1, 1)
            .expect("a write fits again");
    }

    fn batch(sequences: &[u64]) -> BatchToAppend {
        batch_of_kinds(sequences, &vec![CheckKind::Inventory; sequences.len()])
    }

    fn batch_of_kinds(sequences: &[u64], kinds: &[CheckKind]) -> BatchToAppend {
        BatchToAppend {
            items_bytes: sequences.iter().flat_map(|s| s.to_be_bytes()).collect(),
            signature: vec![1],
            signature_algorithm: 1,
            items: sequences
                .iter()
                .zip(kinds)
                .map(|(&sequence, &check)| ItemToAppend {
                    sequence,
                    check,
                    gap_from: None,
                    observed_at_ms: 1,
                    bytes: sequence.to_be_bytes().to_vec(),
                })
                .collect(),
            agent_clock_skew_ms: None,
        }
    }

    /// (sequence, kind, received at) of every item appended: 12 batches arriving at 100, 200,
    /// ...; patch and disk encryption in each, the inventory in every third, the backup only
    /// in the first two, so the heads of the kinds lie far apart.
    fn append_kinds_apart(store: &Store, identity: &CertIdentity) -> Vec<(u64, i64, i64)> {
        let mut appended = Vec::new();
        let mut next = 1;
        for round in 0..12 {
            let mut kinds = vec![CheckKind::Patch, CheckKind::DiskEncryption];
            if round % 3 == 0 {
                kinds.insert(0, CheckKind::Inventory);
            }
            if round < 2 {
                kinds.push(CheckKind::Backup);
            }
            let received_at = 100 * (round + 1);
            let sequences: Vec<u64> = (next..next + kinds.len() as u64).collect();
            store
                .append_batch(identity, &batch_of_kinds(&sequences, &kinds), received_at)
                .expect("append");
            for (sequence, kind) in sequences.iter().zip(&kinds) {
                appended.push((*sequence, kind.number(), received_at));
            }
            next += kinds.len() as u64;
        }
        appended
    }

    const ALL_KINDS: [CheckKind; 5] = [
        CheckKind::Inventory,
        CheckKind::Patch,
        CheckKind::DiskEncryption,
        CheckKind::Backup,
        CheckKind::Gap,
    ];

    /// The newest item of each kind, per agent, as the appended list says.
    fn newest_of_each_kind(appended: &[(u64, i64, i64)]) -> BTreeMap<i64, (u64, i64)> {
        let mut newest = BTreeMap::new();
        for &(sequence, kind, received_at) in appended {
            newest.insert(kind, (sequence, received_at));
        }
        newest
    }

    #[test]
    fn the_newest_item_of_each_kind_by_any_moment_is_found_from_its_head() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open_or_create(&dir.path().join("collector.db")).expect("open");
        let identity = enrol_for_test(&store, dir.path(), &HostFacts::default());
        let appended = append_kinds_apart(&store, &identity);
        let kinds = ALL_KINDS.map(CheckKind::number);
        for as_of in [0, 99, 100, 150, 200, 250, 400, 1100, 1199, 1200, i64::MAX] {
            let found: Vec<(u64, i64)> = store
                .evidence_snapshot()
                .expect("snapshot")
                .newest_items(&identity.agent_id, &kinds, as_of)
                .expect("newest items")
                .iter()
                .map(|item| (item.sequence, item.check_kind))
                .collect();
            let expected: Vec<(u64, i64)> = kinds
                .iter()
                .filter_map(|&kind| {
                    appended
                        .iter()
                        .rfind(|&&(_, k, at)| k == kind && at <= as_of)
                        .map(|&(sequence, _, _)| (sequence, kind))
                })
                .collect();
            assert_eq!(found, expected, "as of {as_of}");
        }
        // A walk of one kind passes over the others, by any moment.
        for (kind, below, as_of) in [
            (CheckKind::Patch, 100, i64::MAX),
            (CheckKind::Inventory, 100, i64::MAX),
            (CheckKind::Backup, 100, i64::MAX),
            (CheckKind::Patch, 100, 600),
            (CheckKind::Inventory, 12, 150),
        ] {
            let mut seen = Vec::new();
            let snapshot = store.evidence_snapshot().expect("snapshot");
            snapshot
                .walk_back(&identity.agent_id, kind.number(), below, as_of, |item| {
                    seen.push(item.sequence);
                    // A visit may read through the same snapshot.
                    snapshot
                        .newest_items(&identity.agent_id, &[kind.number()], as_of)
                        .expect("a read inside the walk");
                    true
                })
                .expect("walk");
            let expected: Vec<u64> = appended
                .iter()
                .rev()
                .filter(|&&(s, k, at)| k == kind.number() && s < below && at <= as_of)
                .map(|&(sequence, _, _)| sequence)
                .collect();
            assert_eq!(seen, expected, "{kind:?} below {below} as of {as_of}");
        }
        let heads: BTreeMap<i64, (u64, i64)> = store
            .kind_heads()
            .expect("heads")
            .into_iter()
            .map(|((agent, kind), head)| {
                assert_eq!(agent, identity.agent_id);
                (kind, head)
            })
            .collect();
        assert_eq!(heads, newest_of_each_kind(&appended));
    }

    #[test]
    fn the_kind_heads_migration_fills_them_from_the_evidence_stored_before() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("collector.db");
        let store = Store::open_or_create(&path).expect("open");
        let identity = enrol_for_test(&store, dir.path(), &HostFacts::default());
        let appended = append_kinds_apart(&store, &identity);
        // Back to the schema before migration 0010, as an older collector left it.
        store
            .writer()
            .execute_batch(
                "DROP TABLE evidence_kind_heads;
                 CREATE INDEX evidence_by_kind ON evidence (agent_id, check_kind, sequence);
                 PRAGMA user_version = 9;",
            )
            .expect("downgrade");
        drop(store);
        let store = Store::open_or_create(&path).expect("migrate");
        let heads: BTreeMap<i64, (u64, i64)> = store
            .kind_heads()
            .expect("heads")
            .into_iter()
            .map(|((_, kind), head)| (kind, head))
            .collect();
        assert_eq!(heads, newest_of_each_kind(&appended));
        let index: Option<String> = store
            .writer()
            .query_row(
                "SELECT name FROM sqlite_schema WHERE name = 'evidence_by_kind'",
                [],
                |r| r.get(0),
            )
            .optional()
            .expect("schema");
        assert_eq!(index, None, "the index the heads replace is gone");
    }

    #[test]
    fn a_walk_back_visits_every_earlier_item_newest_first_across_growing_pages() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open_or_create(&dir.path().join("collector.db")).expect("open");
        let identity = enrol_for_test(&store, dir.path(), &HostFacts::default());
        for first in (1..=40).step_by(5) {
            let sequences: Vec<u64> = (first..first + 5).collect();
            store
                .append_batch(&identity, &batch(&sequences), 10)
                .expect("append");
        }
        let walk = |below: u64, stop_after: usize| {
            let mut seen = Vec::new();
            store
                .evidence_snapshot()
                .expect("snapshot")
                .walk_back(
                    &identity.agent_id,
                    CheckKind::Inventory.number(),
                    below,
                    i64::MAX,
                    |item| {
                        seen.push(item.sequence);
                        seen.len() < stop_after
                    },
                )
                .expect("walk");
            seen
        };
        // Pages of 2, 4, 8, 16 and 32 items: every boundary is crossed.
        assert_eq!(walk(41, usize::MAX), (1..=40).rev().collect::<Vec<u64>>());
        assert_eq!(walk(20, usize::MAX), (1..=19).rev().collect::<Vec<u64>>());
        assert_eq!(walk(41, 3), vec![40, 39, 38]);
        assert_eq!(walk(1, usize::MAX), Vec::<u64>::new());
    }

    #[test]
    fn a_long_read_does_not_hold_up_the_writer_and_cannot_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open_or_create(&dir.path().join("collector.db")).expect("open");
        let identity = enrol_for_test(&store, dir.path(), &HostFacts::default());
        let count = |conn: &Connection| -> i64 {
            conn.query_row("SELECT COUNT(*) FROM evidence", [], |r| r.get(0))
                .expect("count")
        };
        let reader = store.conn().expect("read connection");
        reader.execute_batch("BEGIN").expect("begin");
        assert_eq!(count(&reader), 0);
        // With one connection for both, this would wait for the read to end: here, forever.
        store
            .append_batch(&identity, &batch(&[1, 2]), 10)
            .expect("append while a read is open");
        assert_eq!(count(&reader), 0, "the read keeps its snapshot");
        reader.execute_batch("COMMIT").expect("end the read");
        assert_eq!(count(&reader), 2, "a new read sees the commit");
        let refused = reader.execute("DELETE FROM tokens", []);
        assert!(refused.is_err(), "{refused:?}");
    }

    #[test]
    fn a_group_commit_refuses_one_batch_and_keeps_the_others() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open_or_create(&dir.path().join("collector.db")).expect("open");
        let identity = enrol_for_test(&store, dir.path(), &HostFacts::default());
        let (first, jump, next) = (batch(&[1, 2]), batch(&[5]), batch(&[3]));
        let results = store.append_batches(&[
            (&identity, &first, 10),
            (&identity, &jump, 10),
            (&identity, &next, 10),
        ]);
        assert_eq!(results.len(), 3);
        assert_eq!(results[0].as_ref().expect("first").stored, 2);
        assert!(
            matches!(
                results[1],
                Err(AppendError::UnexplainedJump { sequence: 5, .. })
            ),
            "{:?}",
            results[1]
        );
        assert_eq!(
            results[2]
                .as_ref()
                .expect("a later batch sees the earlier one")
                .stored,
            1
        );
        let mut sequences = Vec::new();
        store
            .for_each_evidence(Some("agt-1"), |row, _| {
                sequences.push(row.sequence);
                Ok(true)
            })
            .expect("read");
        assert_eq!(
            sequences,
            [1, 2, 3],
            "the refused batch left nothing behind"
        );
    }

    #[test]
    fn a_write_that_fails_part_way_leaves_nothing_of_its_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open_or_create(&dir.path().join("collector.db")).expect("open");
        let identity = enrol_for_test(&store, dir.path(), &HostFacts::default());
        store
            .append_batch(&identity, &batch(&[1]), 10)
            .expect("a first batch makes the agent's dictionary");
        let limit = store.limit_size(2 * 1024 * 1024).expect("cap");
        store
            .writer()
            .execute_batch(&format!(
                "CREATE TABLE ballast (b BLOB); INSERT INTO ballast VALUES (zeroblob({}))",
                limit.max_bytes() - limit.used_bytes() - 64 * 1024
            ))
            .expect("ballast");
        // 256 KiB that no dictionary compresses cannot fit in the 64 KiB left: its batch row
        // fails after the batch before it was written in the same transaction.
        let mut big = batch(&[3]);
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        big.items_bytes = (0..256 * 1024)
            .map(|_| {
                // xorshift64: bytes without repeats for zstd to find.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 32) as u8
            })
            .collect();
        let (first, next) = (batch(&[2]), batch(&[3]));
        let group = [
            (&identity, &first, 20),
            (&identity, &big, 20),
            (&identity, &next, 20),
        ];
        // SQLITE_FULL rolls the whole transaction back: every batch of the group is told.
        for result in store.append_batches(&group) {
            assert!(
                matches!(result, Err(AppendError::Store(StoreError::Full(_)))),
                "{result:?}"
            );
        }
        let count = |table: &str| -> i64 {
            store
                .conn()
                .expect("read connection")
                .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
                .expect("count")
        };
        assert_eq!(count("batches"), 1, "no row of the group stayed behind");
        assert_eq!(count("evidence"), 1);
        let check: String = store
            .conn()
            .expect("read connection")
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("integrity check");
        assert_eq!(check, "ok");

        // Without the oversized batch the same group goes through.
        let results = store.append_batches(&[group[0], group[2]]);
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(count("evidence"), 3);
    }

    #[test]
    fn a_write_refused_part_way_takes_back_only_its_own_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open_or_create(&dir.path().join("collector.db")).expect("open");
        let identity = enrol_for_test(&store, dir.path(), &HostFacts::default());
        store
            .append_batch(&identity, &batch(&[1]), 10)
            .expect("first batch");
        // A statement-level refusal in the middle of a batch's rows (the transaction goes on):
        // its batch row and first item are already written when its second item is refused.
        store
            .writer()
            .execute_batch(
                "CREATE TEMP TRIGGER refuse BEFORE INSERT ON main.evidence
                 WHEN NEW.observed_at_ms = 99 BEGIN SELECT RAISE(ABORT, 'refused here'); END",
            )
            .expect("trigger");
        let mut bad = batch(&[3, 4]);
        bad.items[1].observed_at_ms = 99;
        let (first, next) = (batch(&[2]), batch(&[3]));
        let results = store.append_batches(&[
            (&identity, &first, 20),
            (&identity, &bad, 20),
            (&identity, &next, 20),
        ]);
        assert_eq!(results[0].as_ref().expect("first").stored, 1);
        assert!(results[1].is_err(), "{:?}", results[1]);
        assert_eq!(results[2].as_ref().expect("next").stored, 1);
        let orphans: i64 = store
            .conn()
            .expect("read connection")
            .query_row(
                "SELECT COUNT(*) FROM batches b
                 WHERE NOT EXISTS (SELECT 1 FROM evidence e WHERE e.batch_id = b.id)",
                [],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(orphans, 0, "the refused batch's row was taken back");
        let mut sequences = Vec::new();
        store
            .for_each_evidence(Some("agt-1"), |row, _| {
                sequences.push(row.sequence);
                Ok(true)
            })
            .expect("read");
        assert_eq!(sequences, [1, 2, 3]);
    }

    #[test]
    fn the_cap_is_never_below_what_is_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open_or_create(&dir.path().join("collector.db")).expect("open");
        let limit = store.limit_size(1).expect("cap");
        assert_eq!(limit.max_pages, limit.used_pages, "{limit:?}");
    }
}
