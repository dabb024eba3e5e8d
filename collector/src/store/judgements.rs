//! Queries for policy evaluation: the evidence a judgement reads as of a moment, the policies
//! the collector ran under, rule results as they change, and corrective actions with their
//! events. Everything here is appended, never updated.

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{Store, StoreError};

/// An enrolled agent as it stood at some moment.
#[derive(Debug, Clone)]
pub struct HostRow {
    pub agent_id: String,
    pub hostname: String,
    pub os_family: String,
    pub enrolled_at_ms: i64,
}

/// One stored item with its signed bytes, for judging.
#[derive(Debug, Clone)]
pub struct ItemRow {
    pub sequence: u64,
    pub check_kind: i64,
    pub observed_at_ms: i64,
    pub received_at_ms: i64,
    /// The item's signed bytes, or why they cannot be found in their batch.
    pub bytes: Result<Vec<u8>, String>,
}

/// A policy version as stored.
#[derive(Debug, Clone)]
pub struct PolicyRow {
    pub version: i64,
    pub sha256: Vec<u8>,
    pub name: String,
    pub source: String,
    pub text: String,
    pub activated_at_ms: i64,
}

/// A stored rule result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ResultRow {
    pub policy_version: i64,
    pub rule_id: String,
    pub agent_id: String,
    pub at_ms: i64,
    pub outcome: String,
    pub detail: String,
    pub offending: Vec<String>,
    pub evidence: Vec<u64>,
}

/// What was recorded for one (agent, rule) as of a moment, without the detail.
#[derive(Debug, Clone, Copy)]
pub struct OutcomeRef<'a> {
    pub agent_id: &'a str,
    pub rule_id: &'a str,
    /// The `rule_results` row, for its detail.
    pub result_id: i64,
    pub outcome: &'a str,
}

/// A corrective action as opened.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ActionRow {
    pub id: i64,
    pub agent_id: String,
    pub hostname: String,
    pub rule_id: String,
    pub rule_title: String,
    pub severity: String,
    pub opened_at_ms: i64,
}

/// One event of an action's life.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct EventRow {
    pub id: i64,
    pub action_id: i64,
    pub at_ms: i64,
    pub kind: String,
    pub state: String,
    pub actor: String,
    pub reason: String,
    pub owner: Option<String>,
    pub due_at_ms: Option<i64>,
    pub root_cause: Option<String>,
    pub risk_expires_at_ms: Option<i64>,
    pub policy_version: Option<i64>,
    pub evidence: Vec<u64>,
}

/// Why an event was not appended.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("no corrective action {0}: `evident-collector actions list` shows them")]
    NoSuchAction(i64),
    /// The action's state moved on since the caller looked; nothing was written.
    #[error("action {action_id} is {state} now; {what}")]
    Refused {
        action_id: i64,
        state: String,
        what: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for EventError {
    fn from(e: rusqlite::Error) -> Self {
        EventError::Store(e.into())
    }
}

fn json_sequences(text: &str) -> Vec<u64> {
    serde_json::from_str(text).unwrap_or_default()
}

fn json_strings(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

impl Store {
    /// Agents enrolled by `as_of_ms` and not revoked by then.
    pub fn hosts_as_of(&self, as_of_ms: i64) -> Result<Vec<HostRow>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT agent_id, hostname, os_family, enrolled_at_ms FROM agents
             WHERE enrolled_at_ms <= ?1 AND (revoked_at_ms IS NULL OR revoked_at_ms > ?1)
             ORDER BY hostname, agent_id",
        )?;
        let rows = stmt.query_map([as_of_ms], |r| {
            Ok(HostRow {
                agent_id: r.get(0)?,
                hostname: r.get(1)?,
                os_family: r.get(2)?,
                enrolled_at_ms: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A read snapshot for judging hosts: see `EvidenceSnapshot`.
    pub fn evidence_snapshot(&self) -> Result<EvidenceSnapshot<'_>, StoreError> {
        let conn = self.conn()?;
        conn.execute_batch("BEGIN")?;
        Ok(EvidenceSnapshot {
            conn,
            batches: std::cell::RefCell::default(),
        })
    }

    /// Records `text` as the policy in force from `now_ms`, unless it already is. Returns its
    /// version.
    pub fn activate_policy(
        &self,
        sha256: &[u8],
        name: &str,
        source: &str,
        text: &str,
        now_ms: i64,
    ) -> Result<i64, StoreError> {
        let mut conn = self.writer();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current: Option<(i64, Vec<u8>)> = tx
            .query_row(
                "SELECT version, sha256 FROM policies ORDER BY version DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((version, hash)) = current
            && hash == sha256
        {
            return Ok(version);
        }
        tx.execute(
            "INSERT INTO policies (sha256, name, source, text, activated_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![sha256, name, source, text, now_ms],
        )?;
        let version = tx.last_insert_rowid();
        tx.commit()?;
        Ok(version)
    }

    /// The policy in force at `as_of_ms` (the newest activated by then), or the newest of all.
    pub fn policy_as_of(&self, as_of_ms: Option<i64>) -> Result<Option<PolicyRow>, StoreError> {
        Ok(self
            .conn()?
            .query_row(
                "SELECT version, sha256, name, source, text, activated_at_ms FROM policies
                 WHERE ?1 IS NULL OR activated_at_ms <= ?1 ORDER BY version DESC LIMIT 1",
                [as_of_ms],
                policy_row,
            )
            .optional()?)
    }

    pub fn policies(&self) -> Result<Vec<PolicyRow>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT version, sha256, name, source, text, activated_at_ms FROM policies ORDER BY version",
        )?;
        let rows = stmt.query_map([], policy_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The newest stored result of a rule on an agent under a policy version.
    pub fn last_result(
        &self,
        policy_version: i64,
        agent_id: &str,
        rule_id: &str,
    ) -> Result<Option<ResultRow>, StoreError> {
        Ok(self
            .conn()?
            .prepare_cached(
                "SELECT policy_version, rule_id, agent_id, at_ms, outcome, detail, offending, evidence
                 FROM rule_results WHERE policy_version = ?1 AND agent_id = ?2 AND rule_id = ?3
                 ORDER BY at_ms DESC, id DESC LIMIT 1",
            )?
            .query_row(params![policy_version, agent_id, rule_id], result_row)
            .optional()?)
    }

    /// Appends results in one transaction: one durable write per evaluation pass, not per
    /// result.
    pub fn append_results(&self, results: &[ResultRow]) -> Result<(), StoreError> {
        if results.is_empty() {
            return Ok(());
        }
        let mut conn = self.writer();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Many rows per statement: each row's trigger (the heads, the trend's stale days) makes
        // SQLite keep a statement journal of every page the statement changes, and a page
        // changed by many rows of one statement is copied there once, not once per row.
        let mut chunks = results.chunks_exact(RESULTS_PER_INSERT);
        {
            let mut insert = tx.prepare_cached(&insert_results_sql(RESULTS_PER_INSERT))?;
            for chunk in &mut chunks {
                bind_results(&mut insert, chunk)?;
                insert.raw_execute()?;
            }
            let mut insert = tx.prepare_cached(&insert_results_sql(1))?;
            for result in chunks.remainder() {
                bind_results(&mut insert, std::slice::from_ref(result))?;
                insert.raw_execute()?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Results of an agent (or all) stored between two moments, oldest first.
    pub fn results_between(
        &self,
        agent_id: Option<&str>,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<ResultRow>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT policy_version, rule_id, agent_id, at_ms, outcome, detail, offending, evidence
             FROM rule_results WHERE (?1 IS NULL OR agent_id = ?1) AND at_ms BETWEEN ?2 AND ?3
             ORDER BY at_ms, id",
        )?;
        let rows = stmt.query_map(params![agent_id, from_ms, to_ms], result_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Results recorded under `policy_version` between two moments, oldest first: the
    /// overview's trend, read through `rule_results_by_version_time` rather than a scan of
    /// every version's results.
    pub fn version_results_between(
        &self,
        policy_version: i64,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<ResultRow>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT policy_version, rule_id, agent_id, at_ms, outcome, detail, offending, evidence
             FROM rule_results WHERE policy_version = ?1 AND at_ms BETWEEN ?2 AND ?3
             ORDER BY at_ms, id",
        )?;
        let rows = stmt.query_map(params![policy_version, from_ms, to_ms], result_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Calls `visit` with the outcome of every (agent, rule) as recorded under
    /// `policy_version` by `as_of_ms`: the same rows as `results_as_of` without their detail,
    /// borrowed from the row being read (a fleet has 100,000 of them; allocating each cost
    /// more than reading it). Read from `rule_result_heads` (one row per key, whatever the
    /// history), seeking the key's newest result by then only where the head is newer than
    /// `as_of_ms`; when most keys changed since, one pass over the version's results is cheaper
    /// than a seek each. Rows come by agent and rule, then the keys that needed a look back.
    pub fn outcomes_as_of(
        &self,
        policy_version: i64,
        as_of_ms: i64,
        mut visit: impl FnMut(OutcomeRef<'_>),
    ) -> Result<(), StoreError> {
        let conn = self.conn()?;
        let mut heads = conn.prepare_cached(
            "SELECT agent_id, rule_id, result_id, at_ms, outcome FROM rule_result_heads
             WHERE policy_version = ?1 ORDER BY agent_id, rule_id",
        )?;
        // Keys whose head is newer than `as_of_ms`, in (agent, rule) order.
        let mut newer: Vec<(String, String)> = Vec::new();
        let mut keys = 0;
        let mut rows = heads.query([policy_version])?;
        while let Some(row) = rows.next()? {
            keys += 1;
            let outcome = outcome_ref(row)?;
            if row.get::<_, i64>(3)? <= as_of_ms {
                visit(outcome);
            } else {
                newer.push((outcome.agent_id.to_owned(), outcome.rule_id.to_owned()));
            }
        }
        if newer.is_empty() {
            return Ok(());
        }
        if newer.len() > keys / 4 {
            // The order and tie-breaking of `results_as_of`: the first row at the newest moment.
            let mut stmt = conn.prepare_cached(
                "SELECT agent_id, rule_id, id, max(at_ms), outcome FROM rule_results
                 WHERE policy_version = ?1 AND at_ms <= ?2 GROUP BY agent_id, rule_id",
            )?;
            let mut rows = stmt.query(params![policy_version, as_of_ms])?;
            while let Some(row) = rows.next()? {
                let outcome = outcome_ref(row)?;
                let key = (outcome.agent_id, outcome.rule_id);
                if newer
                    .binary_search_by(|(a, r)| (a.as_str(), r.as_str()).cmp(&key))
                    .is_ok()
                {
                    visit(outcome);
                }
            }
            return Ok(());
        }
        let mut seek = conn.prepare_cached(
            "SELECT agent_id, rule_id, id, at_ms, outcome FROM rule_results
             WHERE policy_version = ?1 AND agent_id = ?2 AND rule_id = ?3 AND at_ms <= ?4
             ORDER BY at_ms DESC, id LIMIT 1",
        )?;
        for (agent_id, rule_id) in &newer {
            let mut rows = seek.query(params![policy_version, agent_id, rule_id, as_of_ms])?;
            // No row: nothing was recorded for the key by then.
            if let Some(row) = rows.next()? {
                visit(outcome_ref(row)?);
            }
        }
        Ok(())
    }

    /// Whether any result was recorded under `policy_version` (one index seek).
    pub fn has_results(&self, policy_version: i64) -> Result<bool, StoreError> {
        Ok(self
            .conn()?
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM rule_results WHERE policy_version = ?1)")?
            .query_row([policy_version], |r| r.get(0))?)
    }

    /// When the first result under `policy_version` was recorded.
    pub fn first_result_ms(&self, policy_version: i64) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn()?
            .prepare_cached("SELECT min(at_ms) FROM rule_results WHERE policy_version = ?1")?
            .query_row([policy_version], |r| r.get(0))?)
    }

    /// Stored results by id (the detail behind `outcomes_as_of` rows), in the order asked.
    pub fn results_by_id(&self, ids: &[i64]) -> Result<Vec<ResultRow>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT policy_version, rule_id, agent_id, at_ms, outcome, detail, offending, evidence
             FROM rule_results WHERE id = ?1",
        )?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(stmt.query_row([id], result_row)?);
        }
        Ok(out)
    }

    /// The trend's stored day counts under `policy_version` with `from_ms <= day_end_ms <=
    /// to_ms`: (day end, JSON counts), oldest first.
    pub fn trend_days(
        &self,
        policy_version: i64,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT day_end_ms, counts FROM trend_days
             WHERE policy_version = ?1 AND day_end_ms BETWEEN ?2 AND ?3 ORDER BY day_end_ms",
        )?;
        let rows = stmt.query_map(params![policy_version, from_ms, to_ms], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Stores the trend's counts at the end of a day (replacing counts made stale).
    pub fn put_trend_day(
        &self,
        policy_version: i64,
        day_end_ms: i64,
        counts: &str,
    ) -> Result<(), StoreError> {
        self.writer()
            .prepare_cached(
                "INSERT OR REPLACE INTO trend_days (policy_version, day_end_ms, counts)
                 VALUES (?1, ?2, ?3)",
            )?
            .execute(params![policy_version, day_end_ms, counts])?;
        Ok(())
    }

    /// Runs `drive` in one IMMEDIATE transaction and commits what it recorded.
    pub fn with_actions<T>(
        &self,
        drive: impl FnOnce(&ActionTx<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.writer();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let actions = ActionTx { tx };
        let out = drive(&actions)?;
        actions.tx.commit()?;
        Ok(out)
    }

    /// The newest event of the action of each (host, rule) pair, `None` where none was ever
    /// opened; read in one snapshot on a read connection, so that a pass holds the writer only
    /// for the actions that move.
    pub fn current_actions<'k>(
        &self,
        keys: impl IntoIterator<Item = (&'k str, &'k str)>,
    ) -> Result<Vec<Option<EventRow>>, StoreError> {
        let conn = self.conn()?;
        let snapshot = conn.unchecked_transaction()?;
        keys.into_iter()
            .map(|(agent_id, rule_id)| {
                Ok(action_for_in(&snapshot, agent_id, rule_id)?.map(|(_, event)| event))
            })
            .collect()
    }

    /// The state and due date of every action as of `as_of_ms` (its newest event by then), for
    /// counts. Read from `action_heads` (one narrow row per action), seeking the newest event
    /// by then only for actions whose head is newer than `as_of_ms`; when most are, one pass
    /// with a seek per action is cheaper.
    pub fn action_states(&self, as_of_ms: i64) -> Result<Vec<(String, Option<i64>)>, StoreError> {
        let conn = self.conn()?;
        let mut heads =
            conn.prepare_cached("SELECT action_id, at_ms, state, due_at_ms FROM action_heads")?;
        let mut out = Vec::new();
        let mut newer = Vec::new();
        let mut rows = heads.query([])?;
        while let Some(row) = rows.next()? {
            if row.get::<_, i64>(1)? <= as_of_ms {
                out.push((row.get(2)?, row.get(3)?));
            } else {
                newer.push(row.get::<_, i64>(0)?);
            }
        }
        if newer.len() > (out.len() + newer.len()) / 4 {
            let mut stmt = conn.prepare_cached(
                "SELECT e.state, e.due_at_ms FROM actions x JOIN action_events e ON e.id =
                     (SELECT id FROM action_events WHERE action_id = x.id AND at_ms <= ?1
                      ORDER BY id DESC LIMIT 1)
                 WHERE x.opened_at_ms <= ?1",
            )?;
            let rows = stmt.query_map([as_of_ms], |r| Ok((r.get(0)?, r.get(1)?)))?;
            return Ok(rows.collect::<Result<_, _>>()?);
        }
        let mut seek = conn.prepare_cached(
            "SELECT state, due_at_ms FROM action_events WHERE action_id = ?1 AND at_ms <= ?2
             ORDER BY id DESC LIMIT 1",
        )?;
        for action_id in newer {
            // None: the action was opened after `as_of_ms`.
            if let Some(state) = seek
                .query_row(params![action_id, as_of_ms], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?
            {
                out.push(state);
            }
        }
        Ok(out)
    }

    /// An action with all its events, oldest first.
    pub fn action(&self, id: i64) -> Result<Option<(ActionRow, Vec<EventRow>)>, StoreError> {
        let conn = self.conn()?;
        let action = conn
            .prepare_cached(&format!("{ACTION_COLUMNS} WHERE x.id = ?1"))?
            .query_row([id], action_row)
            .optional()?;
        let Some(action) = action else {
            return Ok(None);
        };
        let mut stmt =
            conn.prepare_cached(&format!("{EVENT_COLUMNS} WHERE action_id = ?1 ORDER BY id"))?;
        let events = stmt
            .query_map([id], event_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some((action, events)))
    }

    /// Every action with its events up to `as_of_ms` (all when `None`), by id.
    pub fn actions_with_events(
        &self,
        as_of_ms: Option<i64>,
    ) -> Result<Vec<(ActionRow, Vec<EventRow>)>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "{ACTION_COLUMNS} WHERE ?1 IS NULL OR x.opened_at_ms <= ?1 ORDER BY x.id"
        ))?;
        let actions = stmt
            .query_map([as_of_ms], action_row)?
            .collect::<Result<Vec<_>, _>>()?;
        let mut events_stmt = conn.prepare(&format!(
            "{EVENT_COLUMNS} WHERE ?1 IS NULL OR at_ms <= ?1 ORDER BY action_id, id"
        ))?;
        let mut events: std::collections::BTreeMap<i64, Vec<EventRow>> = Default::default();
        for event in events_stmt.query_map([as_of_ms], event_row)? {
            let event = event?;
            events.entry(event.action_id).or_default().push(event);
        }
        Ok(actions
            .into_iter()
            .map(|a| {
                let e = events.remove(&a.id).unwrap_or_default();
                (a, e)
            })
            .filter(|(_, e)| !e.is_empty())
            .collect())
    }

    /// One agent's actions with their events up to `as_of_ms`, by id: the host page's, read
    /// through the agent's entries of `actions` (UNIQUE (agent_id, rule_id)) and
    /// `action_events_by_action`, not the whole fleet's actions.
    pub fn agent_actions_with_events(
        &self,
        agent_id: &str,
        as_of_ms: i64,
    ) -> Result<Vec<(ActionRow, Vec<EventRow>)>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(&format!(
            "{ACTION_COLUMNS} WHERE x.agent_id = ?1 AND x.opened_at_ms <= ?2 ORDER BY x.id"
        ))?;
        let actions = stmt
            .query_map(params![agent_id, as_of_ms], action_row)?
            .collect::<Result<Vec<_>, _>>()?;
        let mut events_stmt = conn.prepare_cached(&format!(
            "{EVENT_COLUMNS} WHERE action_id = ?1 AND at_ms <= ?2 ORDER BY id"
        ))?;
        let mut out = Vec::with_capacity(actions.len());
        for action in actions {
            let events = events_stmt
                .query_map(params![action.id, as_of_ms], event_row)?
                .collect::<Result<Vec<_>, _>>()?;
            if !events.is_empty() {
                out.push((action, events));
            }
        }
        Ok(out)
    }

    /// Appends the event `build` makes from the action's current state (its newest event),
    /// both in one transaction, so two reviewers or the evaluator cannot interleave. `build`
    /// refuses with a reason, or returns `None` when there is nothing to record.
    pub fn append_event(
        &self,
        action_id: i64,
        build: impl FnOnce(&EventRow) -> Result<Option<EventRow>, String>,
    ) -> Result<Option<EventRow>, EventError> {
        let mut conn = self.writer();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current = tx
            .query_row(
                &format!("{EVENT_COLUMNS} WHERE action_id = ?1 ORDER BY id DESC LIMIT 1"),
                [action_id],
                event_row,
            )
            .optional()?
            .ok_or(EventError::NoSuchAction(action_id))?;
        let event = build(&current).map_err(|what| EventError::Refused {
            action_id,
            state: current.state.clone(),
            what,
        })?;
        let Some(mut event) = event else {
            return Ok(None);
        };
        insert_event(&tx, action_id, &event)?;
        event.id = tx.last_insert_rowid();
        event.action_id = action_id;
        tx.commit()?;
        Ok(Some(event))
    }
}

/// One transaction in which the evaluator moves many actions (`Store::with_actions`): one
/// durable write for a whole pass instead of one per event.
#[derive(Debug)]
pub struct ActionTx<'a> {
    tx: rusqlite::Transaction<'a>,
}

impl ActionTx<'_> {
    /// The action for a (host, rule) deviation with its newest event, if one was ever opened.
    pub fn action_for(
        &self,
        agent_id: &str,
        rule_id: &str,
    ) -> Result<Option<(ActionRow, EventRow)>, StoreError> {
        action_for_in(&self.tx, agent_id, rule_id)
    }

    /// Opens the action for a (host, rule) deviation with its first event; returns its id.
    pub fn open(&self, action: &ActionRow, event: &EventRow) -> Result<i64, StoreError> {
        open_in(&self.tx, action, event)
    }

    /// Appends an event; returns its id.
    pub fn append(&self, action_id: i64, event: &EventRow) -> Result<i64, StoreError> {
        insert_event(&self.tx, action_id, event)?;
        Ok(self.tx.last_insert_rowid())
    }
}

fn action_for_in(
    conn: &rusqlite::Connection,
    agent_id: &str,
    rule_id: &str,
) -> Result<Option<(ActionRow, EventRow)>, StoreError> {
    let action = conn
        .prepare_cached(&format!(
            "{ACTION_COLUMNS} WHERE x.agent_id = ?1 AND x.rule_id = ?2"
        ))?
        .query_row(params![agent_id, rule_id], action_row)
        .optional()?;
    let Some(action) = action else {
        return Ok(None);
    };
    let last = conn
        .prepare_cached(&format!(
            "{EVENT_COLUMNS} WHERE action_id = ?1 ORDER BY id DESC LIMIT 1"
        ))?
        .query_row([action.id], event_row)
        .optional()?;
    Ok(last.map(|last| (action, last)))
}

fn open_in(
    conn: &rusqlite::Connection,
    action: &ActionRow,
    event: &EventRow,
) -> Result<i64, StoreError> {
    conn.prepare_cached(
        "INSERT INTO actions (agent_id, rule_id, rule_title, severity, opened_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        action.agent_id,
        action.rule_id,
        action.rule_title,
        action.severity,
        action.opened_at_ms
    ])?;
    let id = conn.last_insert_rowid();
    insert_event(conn, id, event)?;
    Ok(id)
}

const ACTION_COLUMNS: &str =
    "SELECT x.id, x.agent_id, a.hostname, x.rule_id, x.rule_title, x.severity,
        x.opened_at_ms FROM actions x JOIN agents a ON a.agent_id = x.agent_id";

const EVENT_COLUMNS: &str =
    "SELECT id, action_id, at_ms, kind, state, actor, reason, owner, due_at_ms,
        root_cause, risk_expires_at_ms, policy_version, evidence FROM action_events";

fn insert_event(
    tx: &rusqlite::Connection,
    action_id: i64,
    e: &EventRow,
) -> Result<(), rusqlite::Error> {
    tx.prepare_cached(
        "INSERT INTO action_events (action_id, at_ms, kind, state, actor, reason, owner, due_at_ms,
                                    root_cause, risk_expires_at_ms, policy_version, evidence)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
        action_id,
        e.at_ms,
        e.kind,
        e.state,
        e.actor,
        e.reason,
        e.owner,
        e.due_at_ms,
        e.root_cause,
        e.risk_expires_at_ms,
        e.policy_version,
        serde_json::to_string(&e.evidence).unwrap_or_else(|_| "[]".into())
    ])?;
    Ok(())
}

/// Rows appended by one statement (8 parameters each, far below SQLite's limit).
const RESULTS_PER_INSERT: usize = 64;

fn insert_results_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO rule_results (policy_version, rule_id, agent_id, at_ms, outcome, detail, offending, evidence) VALUES ",
    );
    for row in 0..rows {
        let p = row * 8;
        if row > 0 {
            sql.push(',');
        }
        sql.push_str(&format!(
            "(?{},?{},?{},?{},?{},?{},?{},?{})",
            p + 1,
            p + 2,
            p + 3,
            p + 4,
            p + 5,
            p + 6,
            p + 7,
            p + 8
        ));
    }
    sql
}

fn bind_results(
    insert: &mut rusqlite::CachedStatement<'_>,
    results: &[ResultRow],
) -> Result<(), rusqlite::Error> {
    for (row, result) in results.iter().enumerate() {
        let p = row * 8;
        insert.raw_bind_parameter(p + 1, result.policy_version)?;
        insert.raw_bind_parameter(p + 2, &result.rule_id)?;
        insert.raw_bind_parameter(p + 3, &result.agent_id)?;
        insert.raw_bind_parameter(p + 4, result.at_ms)?;
        insert.raw_bind_parameter(p + 5, &result.outcome)?;
        insert.raw_bind_parameter(p + 6, &result.detail)?;
        insert.raw_bind_parameter(
            p + 7,
            serde_json::to_string(&result.offending).unwrap_or_else(|_| "[]".into()),
        )?;
        insert.raw_bind_parameter(
            p + 8,
            serde_json::to_string(&result.evidence).unwrap_or_else(|_| "[]".into()),
        )?;
    }
    Ok(())
}

/// One read transaction over the evidence, for judging hosts: SQLite empties a connection's
/// page cache whenever a read begins after a commit, and under ingest the writer commits
/// every few milliseconds, so reads outside a transaction start cold every statement. The
/// evaluator judges a chunk of hosts in one snapshot; a page or report that reads one item per
/// host takes one for its loop. It holds no lock the writer needs; the WAL checkpoint cannot
/// pass it, so it is kept short. Unpacked batches and dictionaries are kept for its lifetime.
pub struct EvidenceSnapshot<'s> {
    conn: super::ReadConn<'s>,
    batches: std::cell::RefCell<super::batch_blobs::BatchItems>,
}

impl Drop for EvidenceSnapshot<'_> {
    fn drop(&mut self) {
        // Ends the read before the connection goes back to the pool; a read-only transaction
        // has nothing to lose, and a failure here leaves SQLite to end it with the connection.
        let _ = self.conn.execute_batch("ROLLBACK");
    }
}

impl EvidenceSnapshot<'_> {
    /// The newest item of each of `kinds` that arrived by `as_of_ms` (`newest_arrival` gives
    /// the newest of any kind).
    pub fn newest_items(
        &self,
        agent_id: &str,
        kinds: &[i64],
        as_of_ms: i64,
    ) -> Result<Vec<ItemRow>, StoreError> {
        let conn = &*self.conn;
        let mut batches = self.batches.borrow_mut();
        let mut out = Vec::new();
        for kind in kinds {
            let row: Option<ItemColumns> = conn
                .prepare_cached(
                    // Walks the agent's sequence back from the kind's head: one row when the
                    // head had arrived by then, as it has for any moment since.
                    "SELECT sequence, check_kind, observed_at_ms, received_at_ms, batch_id, item_index
                     FROM evidence
                     WHERE agent_id = ?1 AND check_kind = ?2 AND received_at_ms <= ?3
                       AND sequence <= (SELECT sequence FROM evidence_kind_heads
                                        WHERE agent_id = ?1 AND check_kind = ?2)
                     ORDER BY sequence DESC LIMIT 1",
                )?
                .query_row(params![agent_id, kind, as_of_ms], item_columns)
                .optional()?;
            if let Some(row) = row {
                out.push(item_row(conn, &mut batches, row)?);
            }
        }
        Ok(out)
    }

    /// The newest item of any kind that arrived by `as_of_ms`, without its bytes.
    pub fn newest_arrival(
        &self,
        agent_id: &str,
        as_of_ms: i64,
    ) -> Result<Option<(u64, i64, i64)>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT sequence, observed_at_ms, received_at_ms FROM evidence
                 WHERE agent_id = ?1 AND received_at_ms <= ?2 ORDER BY sequence DESC LIMIT 1",
            )?
            .query_row(params![agent_id, as_of_ms], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?))
            })
            .optional()?)
    }

    /// Items of one kind before `below_sequence`, newest first, that arrived by `as_of_ms`,
    /// until `visit` returns false. Reads a page at a time. Pages start small and double: a walk
    /// that remembers where an earlier one ended usually stops after an item or two, and
    /// every item of a page is unpacked. The walk follows the agent's sequence (the UNIQUE
    /// (agent_id, sequence) index) and passes over the items of other kinds.
    pub fn walk_back(
        &self,
        agent_id: &str,
        kind: i64,
        below_sequence: u64,
        as_of_ms: i64,
        mut visit: impl FnMut(ItemRow) -> bool,
    ) -> Result<(), StoreError> {
        const FIRST_PAGE: i64 = 2;
        const LARGEST_PAGE: i64 = 32;
        let mut page_len = FIRST_PAGE;
        let mut below = below_sequence as i64;
        loop {
            // Borrowed for the page only: `visit` may read through this snapshot too.
            let page: Vec<ItemRow> = {
                let mut batches = self.batches.borrow_mut();
                let conn = &*self.conn;
                let mut stmt = conn.prepare_cached(
                    "SELECT sequence, check_kind, observed_at_ms, received_at_ms, batch_id, item_index
                     FROM evidence WHERE agent_id = ?1 AND check_kind = ?2 AND sequence < ?3
                                       AND received_at_ms <= ?4
                     ORDER BY sequence DESC LIMIT ?5",
                )?;
                let rows = stmt
                    .query_map(
                        params![agent_id, kind, below, as_of_ms, page_len],
                        item_columns,
                    )?
                    .collect::<Result<Vec<_>, _>>()?;
                rows.into_iter()
                    .map(|row| item_row(conn, &mut batches, row))
                    .collect::<Result<_, _>>()?
            };
            let Some(last) = page.last() else {
                return Ok(());
            };
            below = last.sequence as i64;
            let full = page.len() as i64 == page_len;
            page_len = (page_len * 2).min(LARGEST_PAGE);
            for item in page {
                if !visit(item) {
                    return Ok(());
                }
            }
            if !full {
                return Ok(());
            }
        }
    }
}

/// The columns `item_row` takes, in the order both item queries select them: sequence,
/// check_kind, observed_at_ms, received_at_ms, batch_id, item_index.
type ItemColumns = (i64, i64, i64, i64, i64, i64);

fn item_columns(r: &rusqlite::Row<'_>) -> rusqlite::Result<ItemColumns> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn item_row(
    conn: &rusqlite::Connection,
    batches: &mut super::batch_blobs::BatchItems,
    (sequence, check_kind, observed_at_ms, received_at_ms, batch_id, item_index): ItemColumns,
) -> Result<ItemRow, StoreError> {
    Ok(ItemRow {
        sequence: sequence as u64,
        check_kind,
        observed_at_ms,
        received_at_ms,
        bytes: batches.item(conn, batch_id, item_index)?,
    })
}

fn policy_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PolicyRow> {
    Ok(PolicyRow {
        version: r.get(0)?,
        sha256: r.get(1)?,
        name: r.get(2)?,
        source: r.get(3)?,
        text: r.get(4)?,
        activated_at_ms: r.get(5)?,
    })
}

/// Columns (agent_id, rule_id, result id, at_ms, outcome) of a row, borrowed.
fn outcome_ref<'r>(r: &'r rusqlite::Row<'_>) -> rusqlite::Result<OutcomeRef<'r>> {
    let text = |i: usize| -> rusqlite::Result<&'r str> {
        r.get_ref(i)?.as_str().map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
        })
    };
    Ok(OutcomeRef {
        agent_id: text(0)?,
        rule_id: text(1)?,
        result_id: r.get(2)?,
        outcome: text(4)?,
    })
}

pub(super) fn result_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ResultRow> {
    Ok(ResultRow {
        policy_version: r.get(0)?,
        rule_id: r.get(1)?,
        agent_id: r.get(2)?,
        at_ms: r.get(3)?,
        outcome: r.get(4)?,
        detail: r.get(5)?,
        offending: json_strings(&r.get::<_, String>(6)?),
        evidence: json_sequences(&r.get::<_, String>(7)?),
    })
}

fn action_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ActionRow> {
    Ok(ActionRow {
        id: r.get(0)?,
        agent_id: r.get(1)?,
        hostname: r.get(2)?,
        rule_id: r.get(3)?,
        rule_title: r.get(4)?,
        severity: r.get(5)?,
        opened_at_ms: r.get(6)?,
    })
}

fn event_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EventRow> {
    Ok(EventRow {
        id: r.get(0)?,
        action_id: r.get(1)?,
        at_ms: r.get(2)?,
        kind: r.get(3)?,
        state: r.get(4)?,
        actor: r.get(5)?,
        reason: r.get(6)?,
        owner: r.get(7)?,
        due_at_ms: r.get(8)?,
        root_cause: r.get(9)?,
        risk_expires_at_ms: r.get(10)?,
        policy_version: r.get(11)?,
        evidence: json_sequences(&r.get::<_, String>(12)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::HostFacts;

    fn result(version: i64, rule: &str, at_ms: i64, outcome: &str) -> ResultRow {
        ResultRow {
            policy_version: version,
            rule_id: rule.into(),
            agent_id: "agt-1".into(),
            at_ms,
            outcome: outcome.into(),
            detail: format!("{outcome} at {at_ms}"),
            offending: vec![],
            evidence: vec![],
        }
    }

    fn outcomes(store: &Store, version: i64, at: i64) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        store
            .outcomes_as_of(version, at, |r| {
                out.push((r.agent_id.into(), r.rule_id.into(), r.outcome.into()))
            })
            .expect("heads");
        out.sort();
        out
    }

    /// A store with one enrolled agent (`agt-1`) and a policy in force; returns its version.
    fn store_with_policy() -> (tempfile::TempDir, Store, i64) {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open_or_create(&dir.path().join("collector.db")).expect("store");
        crate::store::enrol_for_test(&store, dir.path(), &HostFacts::default());
        let version = store
            .activate_policy(b"h", "p", "test", "text", 0)
            .expect("policy");
        (dir, store, version)
    }

    #[test]
    fn outcomes_as_of_any_moment_are_the_newest_results_by_then() {
        let (_dir, store, version) = store_with_policy();
        // Appended out of time order too (a replayed history), with a tie at 40.
        let mut rows = Vec::new();
        for (i, rule) in ["a", "b", "c", "d", "e", "f", "g", "h"].iter().enumerate() {
            let i = i as i64;
            rows.push(result(version, rule, 10 + i, "pass"));
            rows.push(result(version, rule, 30 + i, "fail"));
        }
        rows.push(result(version, "a", 40, "no_evidence"));
        rows.push(result(version, "a", 40, "pass"));
        rows.push(result(version, "b", 20, "not_applicable"));
        rows.push(result(version, "c", 50, "pass"));
        store.append_results(&rows).expect("append");
        for at in [0, 9, 10, 15, 20, 25, 33, 37, 40, 45, 50, 60] {
            let through_heads = outcomes(&store, version, at);
            let scanned = store.results_as_of(version, at, None).expect("scan");
            let scanned: Vec<_> = {
                let mut v: Vec<_> = scanned
                    .into_iter()
                    .map(|r| (r.agent_id, r.rule_id, r.outcome))
                    .collect();
                v.sort();
                v
            };
            assert_eq!(through_heads, scanned, "as of {at}");
        }
        // Only the newest results changed after 45: these are seeks, not a scan.
        let at_45 = outcomes(&store, version, 45);
        assert!(at_45.contains(&("agt-1".into(), "c".into(), "fail".into())));
        assert!(at_45.contains(&("agt-1".into(), "a".into(), "no_evidence".into())));
    }

    #[test]
    fn results_appended_many_to_a_statement_are_stored_as_given_in_order() {
        let (_dir, store, version) = store_with_policy();
        // Two full statements and a remainder; later rows of a key in the same statement
        // must win its head, as they do one row at a time.
        let rows: Vec<ResultRow> = (0..2 * RESULTS_PER_INSERT + 5)
            .map(|i| ResultRow {
                offending: vec![format!("pkg-{i}")],
                evidence: vec![i as u64, 7],
                ..result(
                    version,
                    &format!("rule-{}", i % 7),
                    100 + i as i64,
                    ["pass", "fail", "no_evidence"][i % 3],
                )
            })
            .collect();
        store.append_results(&rows).expect("append");
        let stored = store.results_between(None, 0, i64::MAX).expect("read");
        assert_eq!(stored.len(), rows.len());
        for (want, got) in rows.iter().zip(&stored) {
            assert_eq!(
                (
                    &want.rule_id,
                    want.at_ms,
                    &want.outcome,
                    &want.detail,
                    &want.offending,
                    &want.evidence
                ),
                (
                    &got.rule_id,
                    got.at_ms,
                    &got.outcome,
                    &got.detail,
                    &got.offending,
                    &got.evidence
                )
            );
        }
        let heads = outcomes(&store, version, i64::MAX);
        assert_eq!(heads.len(), 7);
        for (_, rule, outcome) in &heads {
            let newest = rows.iter().rev().find(|r| &r.rule_id == rule).expect("row");
            assert_eq!(outcome, &newest.outcome, "{rule}");
        }
    }

    #[test]
    fn action_states_at_any_moment_are_each_actions_newest_event_by_then() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open_or_create(&dir.path().join("collector.db")).expect("store");
        crate::store::enrol_for_test(&store, dir.path(), &HostFacts::default());
        let event = |at_ms: i64, state: &str, due: Option<i64>| EventRow {
            at_ms,
            kind: state.into(),
            state: state.into(),
            actor: "system".into(),
            reason: format!("{state} at {at_ms}"),
            due_at_ms: due,
            ..EventRow::default()
        };
        // Six actions opened at 10, 20, ...; each moves on at its own pace, and one records
        // an event stamped before its previous one (a clock step back).
        store
            .with_actions(|tx| {
                for (i, rule) in ["a", "b", "c", "d", "e", "f"].iter().enumerate() {
                    let opened = 10 * (i as i64 + 1);
                    let action = ActionRow {
                        id: 0,
                        agent_id: "agt-1".into(),
                        hostname: "host".into(),
                        rule_id: (*rule).into(),
                        rule_title: "title".into(),
                        severity: "high".into(),
                        opened_at_ms: opened,
                    };
                    let id = tx.open(&action, &event(opened, "open", Some(opened + 100)))?;
                    for step in 1..=i as i64 {
                        let state = if step % 2 == 1 {
                            "acknowledged"
                        } else {
                            "resolved"
                        };
                        tx.append(id, &event(opened + 7 * step, state, Some(opened + step)))?;
                    }
                    if i == 3 {
                        tx.append(id, &event(opened + 1, "reopened", None))?;
                    }
                }
                Ok(())
            })
            .expect("actions");
        for at in [0, 9, 10, 15, 20, 27, 33, 40, 41, 48, 55, 60, 75, 90, 200] {
            let mut through_heads = store.action_states(at).expect("heads");
            through_heads.sort();
            let mut expected: Vec<(String, Option<i64>)> = store
                .actions_with_events(Some(at))
                .expect("events")
                .into_iter()
                .filter_map(|(_, events)| events.last().map(|e| (e.state.clone(), e.due_at_ms)))
                .collect();
            expected.sort();
            assert_eq!(through_heads, expected, "as of {at}");
        }
    }

    #[test]
    fn a_result_recorded_at_or_before_a_stored_day_makes_it_and_later_days_stale() {
        let (_dir, store, version) = store_with_policy();
        for day in [100, 200, 300] {
            store.put_trend_day(version, day, "{}").expect("put");
        }
        store
            .append_results(&[result(version, "a", 400, "pass")])
            .expect("append");
        assert_eq!(store.trend_days(version, 0, 1000).expect("days").len(), 3);
        store
            .append_results(&[result(version, "a", 200, "fail")])
            .expect("append");
        let days: Vec<i64> = store
            .trend_days(version, 0, 1000)
            .expect("days")
            .into_iter()
            .map(|(d, _)| d)
            .collect();
        assert_eq!(days, vec![100]);
    }
}
