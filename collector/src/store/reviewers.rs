//! Queries for the people who read the evidence: accounts, sessions, API tokens, the audit log,
//! and the read paths of the web page and JSON API (recorded results as of a moment, a host's
//! timeline, one evidence item with its neighbours).

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{ResultRow, Store, StoreError, StoredBatch, StoredEvidence};

/// A local account. `password_hash` is an argon2id PHC string.
#[derive(Debug, Clone)]
pub struct UserRow {
    pub id: i64,
    pub name: String,
    pub role: String,
    pub password_hash: String,
    pub created_at_ms: i64,
    pub disabled_at_ms: Option<i64>,
}

/// A session found by its cookie, with its user.
#[derive(Debug, Clone)]
pub struct SessionRow {
    pub user: UserRow,
    pub csrf_token: String,
    pub created_at_ms: i64,
    pub last_seen_ms: i64,
    pub expires_at_ms: i64,
}

/// One line of the audit log.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRow {
    pub id: i64,
    pub at_ms: i64,
    pub actor: String,
    pub role: Option<String>,
    pub channel: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub detail: String,
    pub remote_addr: Option<String>,
}

/// An entry to append to the audit log.
#[derive(Debug, Clone)]
pub struct AuditEntry<'a> {
    pub at_ms: i64,
    pub actor: &'a str,
    pub role: Option<&'a str>,
    pub channel: &'a str,
    pub action: &'a str,
    pub target: &'a str,
    pub ok: bool,
    pub detail: &'a str,
    pub remote_addr: Option<&'a str>,
}

/// An evidence row and its neighbours in the agent's chain.
#[derive(Debug, Clone)]
pub struct ChainPosition {
    pub item: StoredEvidence,
    pub batch: StoredBatch,
    /// The hash of the item before it as stored (`None` for sequence 1 or a missing row).
    pub stored_previous_hash: Option<Vec<u8>>,
    pub previous_sequence: Option<u64>,
    pub next_sequence: Option<u64>,
    /// The agent's newest sequence.
    pub newest_sequence: u64,
}

const USER_COLUMNS: &str =
    "u.id, u.name, u.role, u.password_hash, u.created_at_ms, u.disabled_at_ms";

fn user_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UserRow> {
    Ok(UserRow {
        id: r.get(0)?,
        name: r.get(1)?,
        role: r.get(2)?,
        password_hash: r.get(3)?,
        created_at_ms: r.get(4)?,
        disabled_at_ms: r.get(5)?,
    })
}

pub(super) fn evidence_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredEvidence> {
    Ok(StoredEvidence {
        agent_id: r.get(0)?,
        sequence: r.get::<_, i64>(1)? as u64,
        batch_id: r.get(2)?,
        item_index: r.get::<_, i64>(3)? as usize,
        check_kind: r.get(4)?,
        observed_at_ms: r.get(5)?,
        received_at_ms: r.get(6)?,
        prev_hash: r.get(7)?,
        hash: r.get(8)?,
        agent_clock_skew_ms: r.get(9)?,
    })
}

/// The columns `evidence_row` reads, in its order.
pub(super) const EVIDENCE_COLUMNS: &str =
    "e.agent_id, e.sequence, e.batch_id, e.item_index, e.check_kind,
     e.observed_at_ms, e.received_at_ms, e.prev_hash, e.hash, b.agent_clock_skew_ms";

impl Store {
    /// Adds an account; `None` when the name is taken.
    pub fn add_user(
        &self,
        name: &str,
        role: &str,
        password_hash: &str,
        now_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        let conn = self.writer();
        let inserted = conn.execute(
            "INSERT INTO users (name, role, password_hash, created_at_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (name) DO NOTHING",
            params![name, role, password_hash, now_ms],
        )?;
        Ok((inserted == 1).then(|| conn.last_insert_rowid()))
    }

    pub fn user_by_name(&self, name: &str) -> Result<Option<UserRow>, StoreError> {
        Ok(self
            .conn()?
            .prepare_cached(&format!(
                "SELECT {USER_COLUMNS} FROM users u WHERE u.name = ?1"
            ))?
            .query_row([name], user_row)
            .optional()?)
    }

    pub fn users(&self) -> Result<Vec<UserRow>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {USER_COLUMNS} FROM users u ORDER BY u.name"
        ))?;
        let rows = stmt.query_map([], user_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Disables an account and ends its sessions and tokens. `false` when there is no such user.
    pub fn disable_user(&self, name: &str, now_ms: i64) -> Result<bool, StoreError> {
        let mut conn = self.writer();
        let tx = conn.transaction()?;
        let changed = tx.execute(
            "UPDATE users SET disabled_at_ms = coalesce(disabled_at_ms, ?2) WHERE name = ?1",
            params![name, now_ms],
        )?;
        tx.execute(
            "DELETE FROM sessions WHERE user_id IN (SELECT id FROM users WHERE name = ?1)",
            [name],
        )?;
        tx.execute(
            "DELETE FROM api_tokens WHERE user_id IN (SELECT id FROM users WHERE name = ?1)",
            [name],
        )?;
        tx.commit()?;
        Ok(changed == 1)
    }

    pub fn create_session(
        &self,
        token_sha256: &[u8],
        user_id: i64,
        csrf_token: &str,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<(), StoreError> {
        let conn = self.writer();
        // Expired sessions go when new ones come, so the table stays as small as the users.
        conn.execute("DELETE FROM sessions WHERE expires_at_ms <= ?1", [now_ms])?;
        conn.execute(
            "INSERT INTO sessions (token_sha256, user_id, csrf_token, created_at_ms, last_seen_ms, expires_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
            params![token_sha256, user_id, csrf_token, now_ms, expires_at_ms],
        )?;
        Ok(())
    }

    /// The session with this cookie hash, whatever its age (the caller judges expiry).
    pub fn session(&self, token_sha256: &[u8]) -> Result<Option<SessionRow>, StoreError> {
        Ok(self
            .conn()?
            .prepare_cached(&format!(
                "SELECT {USER_COLUMNS}, s.csrf_token, s.created_at_ms, s.last_seen_ms, s.expires_at_ms
                 FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_sha256 = ?1"
            ))?
            .query_row([token_sha256], |r| {
                Ok(SessionRow {
                    user: user_row(r)?,
                    csrf_token: r.get(6)?,
                    created_at_ms: r.get(7)?,
                    last_seen_ms: r.get(8)?,
                    expires_at_ms: r.get(9)?,
                })
            })
            .optional()?)
    }

    pub fn touch_session(&self, token_sha256: &[u8], now_ms: i64) -> Result<(), StoreError> {
        self.writer()
            .prepare_cached("UPDATE sessions SET last_seen_ms = ?2 WHERE token_sha256 = ?1")?
            .execute(params![token_sha256, now_ms])?;
        Ok(())
    }

    pub fn delete_session(&self, token_sha256: &[u8]) -> Result<(), StoreError> {
        self.writer().execute(
            "DELETE FROM sessions WHERE token_sha256 = ?1",
            [token_sha256],
        )?;
        Ok(())
    }

    pub fn add_api_token(
        &self,
        token_sha256: &[u8],
        user_id: i64,
        label: &str,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<(), StoreError> {
        self.writer().execute(
            "INSERT INTO api_tokens (token_sha256, user_id, label, created_at_ms, expires_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![token_sha256, user_id, label, now_ms, expires_at_ms],
        )?;
        Ok(())
    }

    /// The enabled user an unexpired API token belongs to.
    pub fn api_token_user(
        &self,
        token_sha256: &[u8],
        now_ms: i64,
    ) -> Result<Option<UserRow>, StoreError> {
        Ok(self
            .conn()?
            .prepare_cached(&format!(
                "SELECT {USER_COLUMNS} FROM api_tokens t JOIN users u ON u.id = t.user_id
                 WHERE t.token_sha256 = ?1 AND t.expires_at_ms > ?2 AND u.disabled_at_ms IS NULL"
            ))?
            .query_row(params![token_sha256, now_ms], user_row)
            .optional()?)
    }

    pub fn append_audit(&self, entry: &AuditEntry<'_>) -> Result<i64, StoreError> {
        let conn = self.writer();
        conn.prepare_cached(
            "INSERT INTO audit_log (at_ms, actor, role, channel, action, target, outcome, detail, remote_addr)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            entry.at_ms,
            entry.actor,
            entry.role,
            entry.channel,
            entry.action,
            entry.target,
            if entry.ok { "ok" } else { "refused" },
            entry.detail,
            entry.remote_addr,
        ])?;
        Ok(conn.last_insert_rowid())
    }

    /// Audit entries up to `as_of_ms`, newest first, a page at a time, with the total.
    pub fn audit_log(
        &self,
        as_of_ms: i64,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<AuditRow>, u64), StoreError> {
        let conn = self.conn()?;
        let total: i64 = conn.query_row(
            "SELECT count(*) FROM audit_log WHERE at_ms <= ?1",
            [as_of_ms],
            |r| r.get(0),
        )?;
        let mut stmt = conn.prepare_cached(
            "SELECT id, at_ms, actor, role, channel, action, target, outcome, detail, remote_addr
             FROM audit_log WHERE at_ms <= ?1 ORDER BY at_ms DESC, id DESC LIMIT ?2 OFFSET ?3",
        )?;
        let rows = stmt.query_map(params![as_of_ms, limit as i64, offset as i64], |r| {
            Ok(AuditRow {
                id: r.get(0)?,
                at_ms: r.get(1)?,
                actor: r.get(2)?,
                role: r.get(3)?,
                channel: r.get(4)?,
                action: r.get(5)?,
                target: r.get(6)?,
                outcome: r.get(7)?,
                detail: r.get(8)?,
                remote_addr: r.get(9)?,
            })
        })?;
        Ok((rows.collect::<Result<_, _>>()?, total as u64))
    }

    /// The newest result of every (agent, rule) recorded under `policy_version` by `as_of_ms`.
    /// This is what the collector's own evaluations concluded then, read from an index rather
    /// than judged again, so a fleet-wide page stays fast.
    pub fn results_as_of(
        &self,
        policy_version: i64,
        as_of_ms: i64,
        agent_id: Option<&str>,
    ) -> Result<Vec<ResultRow>, StoreError> {
        let conn = self.conn()?;
        // SQLite takes the bare columns of an aggregate query from the row holding the max.
        let mut stmt = conn.prepare_cached(
            "SELECT policy_version, rule_id, agent_id, max(at_ms), outcome, detail, offending, evidence
             FROM rule_results
             WHERE policy_version = ?1 AND at_ms <= ?2 AND (?3 IS NULL OR agent_id = ?3)
             GROUP BY agent_id, rule_id",
        )?;
        let rows = stmt.query_map(
            params![policy_version, as_of_ms, agent_id],
            super::judgements::result_row,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// When each agent's newest batch arrived by `as_of_ms` (agents without one are absent).
    ///
    /// One seek per agent into `batches_by_agent (agent_id, received_at_ms)`: a GROUP BY over
    /// `batches` read every batch the fleet ever sent (2.5 million index entries at 10,000
    /// hosts and 10 million items, about 0.5 s); this reads one entry per agent.
    pub fn last_contacts(&self, as_of_ms: i64) -> Result<Vec<(String, i64)>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT a.agent_id,
                    (SELECT max(b.received_at_ms) FROM batches b
                     WHERE b.agent_id = a.agent_id AND b.received_at_ms <= ?1)
             FROM agents a",
        )?;
        let rows = stmt.query_map([as_of_ms], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            if let (agent, Some(at)) = row? {
                out.push((agent, at));
            }
        }
        Ok(out)
    }

    /// One agent as `agent list` shows it.
    pub fn agent(&self, agent_id: &str) -> Result<Option<super::AgentRow>, StoreError> {
        Ok(self.agents_where(Some(agent_id))?.into_iter().next())
    }

    /// An agent's items that arrived by `as_of_ms`, newest first, below `before_sequence`.
    pub fn timeline(
        &self,
        agent_id: &str,
        as_of_ms: i64,
        before_sequence: Option<u64>,
        limit: u64,
    ) -> Result<Vec<StoredEvidence>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {EVIDENCE_COLUMNS} FROM evidence e JOIN batches b ON b.id = e.batch_id
             WHERE e.agent_id = ?1 AND e.received_at_ms <= ?2 AND e.sequence < ?3
             ORDER BY e.sequence DESC LIMIT ?4"
        ))?;
        let before = before_sequence.map_or(i64::MAX, |s| s as i64);
        let rows = stmt.query_map(
            params![agent_id, as_of_ms, before, limit as i64],
            evidence_row,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One item with its batch and its neighbours, for the evidence page.
    pub fn chain_position(
        &self,
        agent_id: &str,
        sequence: u64,
    ) -> Result<Option<ChainPosition>, StoreError> {
        let conn = self.conn()?;
        let Some(item) = conn
            .prepare_cached(&format!(
                "SELECT {EVIDENCE_COLUMNS} FROM evidence e JOIN batches b ON b.id = e.batch_id
                 WHERE e.agent_id = ?1 AND e.sequence = ?2"
            ))?
            .query_row(params![agent_id, sequence as i64], evidence_row)
            .optional()?
        else {
            return Ok(None);
        };
        let batch = super::BatchReader::new(&conn)
            .batch(item.batch_id)?
            .ok_or_else(|| StoreError::Corrupt(format!("batch {} is missing", item.batch_id)))?;
        let previous: Option<(i64, Vec<u8>)> = conn
            .prepare_cached(
                "SELECT sequence, hash FROM evidence WHERE agent_id = ?1 AND sequence < ?2
                 ORDER BY sequence DESC LIMIT 1",
            )?
            .query_row(params![agent_id, sequence as i64], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        let next: Option<i64> = conn
            .prepare_cached(
                "SELECT sequence FROM evidence WHERE agent_id = ?1 AND sequence > ?2
                 ORDER BY sequence LIMIT 1",
            )?
            .query_row(params![agent_id, sequence as i64], |r| r.get(0))
            .optional()?;
        let newest: i64 = conn
            .prepare_cached("SELECT max(sequence) FROM evidence WHERE agent_id = ?1")?
            .query_row([agent_id], |r| r.get(0))?;
        Ok(Some(ChainPosition {
            item,
            batch,
            previous_sequence: previous.as_ref().map(|(s, _)| *s as u64),
            stored_previous_hash: previous.map(|(_, h)| h),
            next_sequence: next.map(|s| s as u64),
            newest_sequence: newest as u64,
        }))
    }
}
