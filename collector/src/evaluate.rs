//! Evaluation: gathers each host's evidence as of a moment into a `HostView`, judges every rule
//! of a policy on it, and (in `serve`) records the results that changed and drives corrective
//! actions. The same code answers `status --as-of`, so a past date is judged exactly as it
//! would have been then, from the evidence that had arrived by then.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tracing::{debug, info, warn};

use crate::actions;
use crate::convert;
use crate::model::{CheckKind, Outcome};
use crate::policy::judge::{self, HostView, Judgement, Observed, Seen};
use crate::policy::{Condition, Policy};
use crate::store::{EvidenceSnapshot, HostRow, ItemRow, ResultRow, Store, StoreError};

/// A policy with the version the store gave it.
#[derive(Debug, Clone)]
pub struct ActivePolicy {
    pub version: i64,
    pub policy: Arc<Policy>,
}

/// One host's judgements under one policy.
#[derive(Debug, Clone)]
pub struct HostJudgements {
    pub host: HostView,
    /// In the policy's rule order.
    pub judgements: Vec<(String, Judgement)>,
}

/// Judges every rule of `policy` on every host enrolled and not revoked at `as_of_ms` (or only
/// on `only`), from evidence that arrived by then.
pub fn evaluate(
    store: &Store,
    policy: &Policy,
    as_of_ms: i64,
    only: Option<&HashSet<String>>,
) -> Result<Vec<HostJudgements>, StoreError> {
    evaluate_with(
        store,
        policy,
        as_of_ms,
        only,
        None,
        &mut Pacer::new(Pace::Full),
    )
}

/// How a pass shares the machine with ingest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// As fast as it can: someone waits for it (start-up, SIGHUP, a new policy version, a
    /// report, the CLI).
    Full,
    /// Rests between its chunks of work (`Pacer`). Passes nobody waits for (arrivals, the
    /// timer) run beside ingest: at
    /// full speed, a flood's passes took most of a core for seconds at a time, and the writer
    /// and the TLS workers queued for the CPU behind them (ack p99 at half the maximum rate
    /// rose from about 10 to 50-100 ms during each pass).
    Background,
}

impl Pace {
    /// Results recorded in one transaction: a background pass holds the writer for
    /// milliseconds at a time, not for the whole first pass over a fleet.
    fn results_per_transaction(self) -> usize {
        match self {
            Pace::Full => usize::MAX,
            Pace::Background => 200,
        }
    }

    /// (host, rule) pairs whose actions move in one transaction.
    fn actions_per_transaction(self) -> usize {
        match self {
            Pace::Full => 1000,
            Pace::Background => 100,
        }
    }
}

/// A background pass rests this many times as long as each slice of its work took: it takes
/// at most about a fifth of one core and holds the writer at most a fifth of the time.
const REST_PER_WORK: u32 = 4;

/// How long a background pass judges before it ends its snapshot and rests: a 64-host chunk
/// of long walks took 150 ms of CPU, and acks queued behind it for up to 80 ms.
const WORK_SLICE: std::time::Duration = std::time::Duration::from_millis(10);

/// Rests a pass between its chunks of work, at its `Pace`.
struct Pacer {
    pace: Pace,
    since: std::time::Instant,
    rested: std::time::Duration,
}

impl Pacer {
    fn new(pace: Pace) -> Pacer {
        Pacer {
            pace,
            since: std::time::Instant::now(),
            rested: std::time::Duration::ZERO,
        }
    }

    /// Whether a background pass has worked a whole `WORK_SLICE` since it last rested.
    fn slice_done(&self) -> bool {
        self.pace == Pace::Background && self.since.elapsed() >= WORK_SLICE
    }

    /// Between two chunks (never inside a snapshot or a transaction): a background pass
    /// rests `REST_PER_WORK` times as long as the work since the last call took.
    fn between_chunks(&mut self) {
        if self.pace == Pace::Background {
            let rest = self.since.elapsed() * REST_PER_WORK;
            std::thread::sleep(rest);
            self.rested += rest;
        }
        self.since = std::time::Instant::now();
    }
}

/// `evaluate`, reusing and updating `runs` (for judging the present in `serve`), resting
/// between snapshots as `pacer` says.
fn evaluate_with(
    store: &Store,
    policy: &Policy,
    as_of_ms: i64,
    only: Option<&HashSet<String>>,
    runs: Option<&PatchRuns>,
    pacer: &mut Pacer,
) -> Result<Vec<HostJudgements>, StoreError> {
    let mut out = Vec::new();
    let mut snapshot = None;
    let hosts = store
        .hosts_as_of(as_of_ms)?
        .into_iter()
        .filter(|row| only.is_none_or(|only| only.contains(&row.agent_id)));
    for (judged, row) in hosts.enumerate() {
        if judged % HOSTS_PER_SNAPSHOT == 0 || pacer.slice_done() {
            // The snapshot ends before any rest: an open read would hold back the checkpoint.
            snapshot = None;
            if judged > 0 {
                pacer.between_chunks();
            }
        }
        let evidence = match &snapshot {
            Some(evidence) => evidence,
            None => snapshot.insert(store.evidence_snapshot()?),
        };
        let host = host_view(evidence, policy, row, as_of_ms, runs)?;
        let judgements = policy
            .rules
            .iter()
            .map(|rule| (rule.id.clone(), judge::judge(policy, rule, &host, as_of_ms)))
            .collect();
        out.push(HostJudgements { host, judgements });
    }
    Ok(out)
}

/// Hosts judged in one read snapshot (`EvidenceSnapshot`): enough to keep its page cache warm,
/// few enough that a snapshot lasts well under a second even when walks are long (start-up).
/// A background pass ends its snapshot sooner, at each `WORK_SLICE`.
const HOSTS_PER_SNAPSHOT: usize = 64;

/// What the collector knew of one host at `as_of_ms`.
pub fn host_view(
    evidence: &EvidenceSnapshot<'_>,
    policy: &Policy,
    row: HostRow,
    as_of_ms: i64,
    runs: Option<&PatchRuns>,
) -> Result<HostView, StoreError> {
    let kinds = [
        CheckKind::Inventory,
        CheckKind::Patch,
        CheckKind::DiskEncryption,
        CheckKind::Backup,
    ];
    let numbers: Vec<i64> = kinds.iter().map(|k| k.number()).collect();
    let mut view = HostView {
        agent_id: row.agent_id.clone(),
        hostname: row.hostname,
        os_family: row.os_family,
        tags: Vec::new(),
        enrolled_at_ms: row.enrolled_at_ms,
        ..HostView::default()
    };
    for item in evidence.newest_items(&row.agent_id, &numbers, as_of_ms)? {
        let Some(kind) = CheckKind::from_number(item.check_kind) else {
            continue;
        };
        let outcome = decode_outcome(&item);
        view.latest.insert(
            kind,
            Observed {
                sequence: item.sequence,
                observed_at_ms: item.observed_at_ms,
                received_at_ms: item.received_at_ms,
                outcome,
            },
        );
    }
    if let Some((sequence, observed_at_ms, received_at_ms)) =
        evidence.newest_arrival(&row.agent_id, as_of_ms)?
    {
        view.last_received = Some(Observed {
            sequence,
            observed_at_ms,
            received_at_ms,
            outcome: Outcome::Error {
                reason: String::new(),
                source: String::new(),
            },
        });
    }
    // Tags and OS come from the newest inventory that succeeded: a failed inventory run must
    // not take the host out of the scope of its rules.
    let mut inventory = match view.latest.get(&CheckKind::Inventory) {
        Some(Observed {
            outcome: Outcome::Inventory(facts),
            ..
        }) => Some(facts.clone()),
        Some(newest) => {
            let mut found = None;
            let mut looked = 0;
            evidence.walk_back(
                &row.agent_id,
                CheckKind::Inventory.number(),
                newest.sequence,
                as_of_ms,
                |item| {
                    looked += 1;
                    if let Outcome::Inventory(facts) = decode_outcome(&item) {
                        found = Some(facts);
                    }
                    found.is_none() && looked < INVENTORY_LOOKBACK
                },
            )?;
            found
        }
        None => None,
    };
    if let Some(inventory) = inventory.take() {
        if let Some(hostname) = inventory.hostname {
            view.hostname = hostname;
        }
        view.os_family = inventory.os_family;
        view.tags = inventory.tags;
    }
    patch_history(evidence, policy, &mut view, as_of_ms, runs)?;
    Ok(view)
}

/// How long arrivals are gathered before they are judged. A pass costs about the same per host
/// however many batches the host sent meanwhile, so under a flood a longer gather judges the
/// same hosts with less CPU taken from ingest (about a sixth of a core at 250 ms, by perf, at
/// 1,000 agents sending as fast as acks came back). Evidence comes hourly: a second is still
/// "on arrival" for a reviewer.
const ARRIVAL_GATHER: std::time::Duration = std::time::Duration::from_secs(1);

/// How many failed inventory items to look past for the newest successful one.
const INVENTORY_LOOKBACK: usize = 100;

/// The facts of a stored item, or an error outcome saying why they cannot be read.
fn decode_outcome(item: &ItemRow) -> Outcome {
    let decoded = item
        .bytes
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|bytes| convert::decode_item(0, bytes).map_err(|e| e.to_string()));
    match decoded {
        Ok(decoded) => decoded.outcome,
        Err(error) => Outcome::Error {
            reason: format!(
                "stored item {} cannot be read ({error}): run `evident-collector verify`",
                item.sequence
            ),
            source: "collector".into(),
        },
    }
}

/// Fills in since when the newest patch item's security updates and reboot have been pending,
/// walking back through consecutive patch items. The walk stops at the longest threshold that
/// needs it: an item older than that already decides the verdict.
fn patch_history(
    evidence: &EvidenceSnapshot<'_>,
    policy: &Policy,
    view: &mut HostView,
    as_of_ms: i64,
    runs: Option<&PatchRuns>,
) -> Result<(), StoreError> {
    let horizon_ms = policy
        .rules
        .iter()
        .filter_map(|r| match r.condition {
            Condition::SecurityUpdatesPending { max_pending_age_ms }
            | Condition::RebootPending { max_pending_age_ms } => Some(max_pending_age_ms),
            _ => None,
        })
        .max();
    let Some(horizon_ms) = horizon_ms else {
        return Ok(());
    };
    let Some(Observed {
        sequence: newest,
        observed_at_ms,
        outcome: Outcome::Patch(facts),
        ..
    }) = view.latest.get(&CheckKind::Patch)
    else {
        return Ok(());
    };
    let first = Seen {
        sequence: *newest,
        observed_at_ms: *observed_at_ms,
    };
    let mut since: BTreeMap<(String, String), Seen> = facts
        .pending
        .iter()
        .filter(|u| u.security)
        .map(|u| (judge::pending_key(u), first))
        .collect();
    let mut open: HashSet<(String, String)> = since.keys().cloned().collect();
    let mut reboot = (facts.reboot.required == Some(true)).then_some(first);
    let mut reboot_open = reboot.is_some();
    if open.is_empty() && !reboot_open {
        return Ok(());
    }
    // What an earlier pass found for an older newest item: the walk stops there and takes
    // over its starts, so each patch item is read once, not at every pass.
    let known = runs.and_then(|runs| runs.get(&view.agent_id));
    if let Some(known) = &known
        && known.newest == *newest
    {
        view.security_pending_since = known.since.clone();
        view.reboot_required_since = known.reboot;
        return Ok(());
    }
    let stop_before_ms = as_of_ms.saturating_sub(horizon_ms);
    evidence.walk_back(
        &view.agent_id,
        CheckKind::Patch.number(),
        *newest,
        as_of_ms,
        |item| {
            // Past the known newest item without meeting it (a gap): walk on as if unknown.
            if let Some(known) = &known
                && item.sequence == known.newest
            {
                for key in &open {
                    if let (Some(start), Some(s)) = (known.since.get(key), since.get_mut(key)) {
                        *s = *start;
                    }
                }
                if reboot_open && let Some(start) = known.reboot {
                    reboot = Some(start);
                }
                return false;
            }
            let within = item.observed_at_ms >= stop_before_ms;
            // An error item says nothing either way: the run goes on past it.
            let Outcome::Patch(facts) = decode_outcome(&item) else {
                return within;
            };
            let seen = Seen {
                sequence: item.sequence,
                observed_at_ms: item.observed_at_ms,
            };
            let listed: HashSet<(String, String)> = facts
                .pending
                .iter()
                .filter(|u| u.security)
                .map(judge::pending_key)
                .collect();
            open.retain(|key| {
                let still = listed.contains(key);
                if still && let Some(s) = since.get_mut(key) {
                    *s = seen;
                }
                still
            });
            if reboot_open {
                if facts.reboot.required == Some(true) {
                    reboot = Some(seen);
                } else {
                    reboot_open = false;
                }
            }
            (!open.is_empty() || reboot_open) && within
        },
    )?;
    if let Some(runs) = runs {
        runs.put(
            &view.agent_id,
            PatchRun {
                newest: *newest,
                since: since.clone(),
                reboot,
            },
        );
    }
    view.security_pending_since = since;
    view.reboot_required_since = reboot;
    Ok(())
}

/// Since when a host's newest patch item's security updates and reboot have been pending.
#[derive(Debug, Clone)]
pub struct PatchRun {
    newest: u64,
    since: BTreeMap<(String, String), Seen>,
    reboot: Option<Seen>,
}

/// The serve-time memory of `PatchRun`s, by agent. Only valid for judging the present under
/// one policy: `Evaluator` clears it when the policy changes.
#[derive(Debug, Default)]
pub struct PatchRuns(Mutex<HashMap<String, PatchRun>>);

impl PatchRuns {
    fn get(&self, agent_id: &str) -> Option<PatchRun> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(agent_id)
            .cloned()
    }

    fn put(&self, agent_id: &str, run: PatchRun) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(agent_id.to_owned(), run);
    }

    fn clear(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// Hosts whose evidence arrived and waits to be judged.
#[derive(Debug, Default)]
pub struct Arrivals {
    agents: Mutex<HashSet<String>>,
    notify: tokio::sync::Notify,
}

impl Arrivals {
    pub fn arrived(&self, agent_id: &str) {
        let mut agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        if agents.insert(agent_id.to_owned()) {
            self.notify.notify_one();
        }
    }

    pub async fn wait(&self) {
        self.notify.notified().await;
    }

    pub fn take(&self) -> HashSet<String> {
        std::mem::take(&mut *self.agents.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// (agent id, rule id).
type ResultKey = (String, String);
/// (outcome, offending items): what makes a result different from the last one.
type Verdict = (String, Vec<String>);

/// The serve-time evaluator: judges, records changed results, drives actions.
#[derive(Debug)]
pub struct Evaluator {
    store: Arc<Store>,
    active: Mutex<ActivePolicy>,
    /// The last recorded (outcome, offending) per (agent, rule) under the active version.
    last: Mutex<HashMap<ResultKey, Verdict>>,
    runs: PatchRuns,
}

/// What one evaluation pass did, for logs and tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct Pass {
    pub hosts: usize,
    /// How long a `Pace::Background` pass rested between its chunks of work.
    pub rested: std::time::Duration,
    pub results_recorded: usize,
    pub action_events: usize,
}

impl Evaluator {
    pub fn new(store: Arc<Store>, active: ActivePolicy) -> Evaluator {
        Evaluator {
            store,
            active: Mutex::new(active),
            last: Mutex::new(HashMap::new()),
            runs: PatchRuns::default(),
        }
    }

    pub fn active(&self) -> ActivePolicy {
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Makes `policy` the one in force (a new version unless its text is unchanged).
    pub fn activate(
        &self,
        policy: Policy,
        source: &str,
        now_ms: i64,
    ) -> Result<ActivePolicy, StoreError> {
        let version = self.store.activate_policy(
            &policy.sha256,
            &policy.name,
            source,
            &policy.text,
            now_ms,
        )?;
        let active = ActivePolicy {
            version,
            policy: Arc::new(policy),
        };
        let mut current = self.active.lock().unwrap_or_else(|p| p.into_inner());
        if current.version != version {
            self.last.lock().unwrap_or_else(|p| p.into_inner()).clear();
            // A new policy may look further back than the runs were followed.
            self.runs.clear();
        }
        *current = active.clone();
        Ok(active)
    }

    /// Judges the hosts in `only` (all when `None`) at `now_ms`.
    pub fn run(
        &self,
        only: Option<&HashSet<String>>,
        now_ms: i64,
        pace: Pace,
    ) -> Result<Pass, StoreError> {
        let started = std::time::Instant::now();
        let mut pacer = Pacer::new(pace);
        let active = self.active();
        let policy = &active.policy;
        let hosts = evaluate_with(
            &self.store,
            policy,
            now_ms,
            only,
            Some(&self.runs),
            &mut pacer,
        )?;
        let judged = started.elapsed();
        let mut pass = Pass {
            hosts: hosts.len(),
            ..Pass::default()
        };
        let mut changed = Vec::new();
        // Under a version with nothing recorded yet (a policy change) every result is new:
        // no key needs looking up.
        let recorded_before = self.store.has_results(active.version)?;
        for HostJudgements { host, judgements } in &hosts {
            for (rule_id, judgement) in judgements {
                if let Some(row) = self.changed(
                    active.version,
                    recorded_before,
                    &host.agent_id,
                    rule_id,
                    judgement,
                    now_ms,
                )? {
                    changed.push(row);
                }
            }
        }
        // Results first, so an action's event never names a result that was not kept. In
        // chunks, one transaction each, so that a pass with many (a policy change, the first
        // pass) lets ingest in between them.
        for chunk in changed.chunks(pace.results_per_transaction()) {
            pacer.between_chunks();
            self.store.append_results(chunk)?;
            pass.results_recorded += chunk.len();
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            for row in chunk {
                last.insert(
                    (row.agent_id.clone(), row.rule_id.clone()),
                    (row.outcome.clone(), row.offending.clone()),
                );
            }
        }
        // Which actions move is read without the writer: a pass over a fleet whose actions
        // stay put (most passes) then never holds up ingest. Those that move do so in chunks of
        // (host, rule) pairs, one transaction each: one durable write per chunk, and ingest
        // gets the database between chunks.
        let pairs: Vec<(&HostView, &str, &Judgement)> = hosts
            .iter()
            .flat_map(|h| {
                h.judgements
                    .iter()
                    .map(move |(rule_id, judgement)| (&h.host, rule_id.as_str(), judgement))
            })
            .collect();
        let recorded = started.elapsed();
        pacer.between_chunks();
        let current = self.store.current_actions(
            pairs
                .iter()
                .map(|(host, rule_id, _)| (host.agent_id.as_str(), *rule_id)),
        )?;
        let moving: Vec<_> = pairs
            .into_iter()
            .zip(current)
            .filter(|((_, rule_id, judgement), current)| {
                policy.rule(rule_id).is_some_and(|rule| {
                    actions::event_for(current.as_ref(), &active, rule, judgement, now_ms).is_some()
                })
            })
            .map(|(pair, _)| pair)
            .collect();
        for chunk in moving.chunks(pace.actions_per_transaction()) {
            pacer.between_chunks();
            let events = self.store.with_actions(|tx| {
                let mut events = Vec::new();
                for (host, rule_id, judgement) in chunk {
                    let Some(rule) = policy.rule(rule_id) else {
                        continue;
                    };
                    if let Some(event) = actions::drive(tx, &active, rule, host, judgement, now_ms)?
                    {
                        events.push((host.agent_id.clone(), rule_id.to_string(), event));
                    }
                }
                Ok(events)
            });
            match events {
                Ok(events) => {
                    pass.action_events += events.len();
                    for (agent, rule, event) in events {
                        info!(%agent, %rule, event = %event.kind, state = %event.state, "corrective action");
                    }
                }
                Err(error) => {
                    warn!(%error, "corrective actions not updated; retried on the next pass")
                }
            }
        }
        // The trend's ended days, now that everything judged before this pass is recorded.
        if let Err(error) =
            crate::views::trend::store_ended_days(&self.store, active.version, now_ms)
        {
            warn!(%error, "trend days not stored; counted again on the next pass");
        }
        pass.rested = pacer.rested;
        debug!(
            hosts = pass.hosts,
            results = pass.results_recorded,
            events = pass.action_events,
            judged_ms = judged.as_millis(),
            rested_ms = pacer.rested.as_millis(),
            recorded_ms = (recorded - judged).as_millis(),
            actions_ms = (started.elapsed() - recorded).as_millis(),
            "evaluated"
        );
        Ok(pass)
    }

    /// The result to record when it differs from the last one recorded (looked up in the
    /// store only if `recorded_before` under this version).
    fn changed(
        &self,
        version: i64,
        recorded_before: bool,
        agent_id: &str,
        rule_id: &str,
        judgement: &Judgement,
        now_ms: i64,
    ) -> Result<Option<ResultRow>, StoreError> {
        let key = (agent_id.to_owned(), rule_id.to_owned());
        let now = (
            judgement.outcome.as_str().to_owned(),
            judgement.offending.clone(),
        );
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if recorded_before
            && !last.contains_key(&key)
            && let Some(row) = self.store.last_result(version, agent_id, rule_id)?
        {
            last.insert(key.clone(), (row.outcome, row.offending));
        }
        if last.get(&key) == Some(&now) {
            return Ok(None);
        }
        Ok(Some(ResultRow {
            policy_version: version,
            rule_id: rule_id.to_owned(),
            agent_id: agent_id.to_owned(),
            at_ms: now_ms,
            outcome: now.0,
            detail: judgement.detail.clone(),
            offending: now.1,
            evidence: judgement.evidence.clone(),
        }))
    }
}

/// Where `serve` reads its policy from.
#[derive(Debug, Clone)]
pub enum PolicySource {
    File(std::path::PathBuf),
    BuiltIn,
}

impl PolicySource {
    pub fn name(&self) -> String {
        match self {
            PolicySource::File(path) => path.display().to_string(),
            PolicySource::BuiltIn => crate::policy::DEFAULT_POLICY_SOURCE.to_owned(),
        }
    }

    pub fn load(&self) -> Result<Policy, crate::policy::PolicyError> {
        match self {
            PolicySource::File(path) => Policy::load(path),
            PolicySource::BuiltIn => Policy::default_policy(),
        }
    }
}

/// Loads the policy `serve` starts with and records it as the version in force. A file that
/// does not validate is refused, and the collector keeps the newest policy it recorded before
/// (so a bad edit never stops ingest); only with none recorded does `serve` refuse to start.
pub fn starting_policy(
    store: &Arc<Store>,
    source: &PolicySource,
    now_ms: i64,
) -> anyhow::Result<Evaluator> {
    let policy = match source.load() {
        Ok(policy) => policy,
        Err(error) => {
            let Some(row) = store.policy_as_of(None)? else {
                anyhow::bail!(
                    "policy refused: {error}; check it with `evident-collector policy check FILE`"
                );
            };
            let kept = Policy::parse(&row.text, &row.source).map_err(|stored| {
                anyhow::anyhow!(
                    "policy refused: {error}; the version in force ({}) does not validate either: {stored}",
                    row.version
                )
            })?;
            tracing::error!(%error, kept_version = row.version, "policy file refused: keeping the policy in force");
            return Ok(Evaluator::new(
                store.clone(),
                ActivePolicy {
                    version: row.version,
                    policy: Arc::new(kept),
                },
            ));
        }
    };
    let version = store.activate_policy(
        &policy.sha256,
        &policy.name,
        &source.name(),
        &policy.text,
        now_ms,
    )?;
    info!(policy = %policy.name, version, source = %source.name(), rules = policy.rules.len(), "policy in force");
    Ok(Evaluator::new(
        store.clone(),
        ActivePolicy {
            version,
            policy: Arc::new(policy),
        },
    ))
}

/// Judges hosts as their evidence arrives and everyone every `interval` (for ages and
/// silence), re-reading the policy file on each tick and on SIGHUP. Runs until aborted.
pub async fn run_loop(
    evaluator: Arc<Evaluator>,
    arrivals: Arc<Arrivals>,
    source: PolicySource,
    interval: std::time::Duration,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut refused: Option<[u8; 32]> = None;
    // How long the last pass took, rests included: arrivals are gathered at least that long,
    // so that under a flood of batches judging is idle half of the time, on top of its pace.
    let mut last_pass = std::time::Duration::ZERO;
    let mut ticked = false;
    let passes = pass_thread();
    loop {
        #[cfg(unix)]
        let hup = async {
            match hangup.as_mut() {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let hup = std::future::pending::<()>();
        let (only, trigger) = tokio::select! {
            _ = arrivals.wait() => {
                // Gather what else arrives meanwhile, so a flood of batches is judged in
                // passes over many hosts rather than one pass per batch.
                tokio::time::sleep(ARRIVAL_GATHER.max(last_pass)).await;
                (Some(arrivals.take()), Trigger::Arrivals)
            }
            _ = ticker.tick() => {
                // The first tick is at once: the start-up pass.
                let trigger = if ticked { Trigger::Timer } else { Trigger::StartUp };
                ticked = true;
                (None, trigger)
            }
            _ = hup => {
                info!("SIGHUP: re-reading the policy");
                (None, Trigger::Hangup)
            }
        };
        let new_policy = only.is_none() && reload(&evaluator, &source, &mut refused).await;
        let pace = trigger.pace(new_policy);
        let evaluator = evaluator.clone();
        let started = std::time::Instant::now();
        let (reply, answer) = tokio::sync::oneshot::channel();
        let pass: PassJob = Box::new(move || {
            let _ = reply.send(evaluator.run(only.as_ref(), crate::model::now_unix_ms(), pace));
        });
        if let Err(std::sync::mpsc::SendError(pass)) = passes.send(pass) {
            tokio::task::spawn_blocking(pass);
        }
        let result = answer.await;
        last_pass = started.elapsed();
        match result {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => warn!(%error, "evaluation failed; it is retried on the next tick"),
            Err(_) => warn!("evaluation panicked; it is retried on the next tick"),
        }
    }
}

type PassJob = Box<dyn FnOnce() + Send>;

/// What started a pass under `serve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// Evidence arrived.
    Arrivals,
    /// The first tick, at start-up: results and actions catch up with what came meanwhile.
    StartUp,
    /// Every `evaluation_interval_secs`: time alone moves silences and pending ages.
    Timer,
    /// SIGHUP: an administrator re-read the policy and waits for its results.
    Hangup,
}

impl Trigger {
    /// Passes nobody waits for run beside ingest (`Pace::Background`); start-up, SIGHUP and a
    /// new policy version (`new_policy`, found by the pass's reload) are waited for.
    fn pace(self, new_policy: bool) -> Pace {
        match self {
            Trigger::Arrivals | Trigger::Timer if !new_policy => Pace::Background,
            Trigger::Arrivals | Trigger::Timer | Trigger::StartUp | Trigger::Hangup => Pace::Full,
        }
    }
}

/// The thread evaluation passes run on, at background priority (`priority::BACKGROUND`), so
/// that under load judging waits for ingest rather than acks waiting for judging (a lower
/// priority alone was not enough on two cores: see `Pace`). A pass that
/// panics is caught and the thread goes on; if the thread cannot be started, sending fails and
/// the caller runs the pass on the blocking pool.
fn pass_thread() -> std::sync::mpsc::Sender<PassJob> {
    let (passes, queue) = std::sync::mpsc::channel::<PassJob>();
    let started = std::thread::Builder::new()
        .name("evident-evaluate".into())
        .spawn(move || {
            crate::priority::lower_current_thread(crate::priority::below_writer(
                crate::priority::BACKGROUND,
            ));
            while let Ok(pass) = queue.recv() {
                // A panic drops the pass's reply, which the loop reports.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(pass));
            }
        });
    if let Err(error) = started {
        warn!(%error, "no evaluation thread: passes run on the blocking pool");
    }
    passes
}

/// Activates the policy file when its text changed and validates; a refused text is logged
/// once and the policy in force stays. True when a new version is now in force.
async fn reload(
    evaluator: &Arc<Evaluator>,
    source: &PolicySource,
    refused: &mut Option<[u8; 32]>,
) -> bool {
    let PolicySource::File(path) = source else {
        return false;
    };
    let Ok(text) = tokio::fs::read_to_string(path).await else {
        if refused.is_none() {
            warn!(path = %path.display(), "policy file cannot be read: keeping the policy in force");
            *refused = Some([0; 32]);
        }
        return false;
    };
    let hash = crate::policy::sha256(&text);
    if evaluator.active().policy.sha256 == hash || *refused == Some(hash) {
        return false;
    }
    match Policy::parse(&text, &source.name()) {
        Ok(policy) => {
            let name = policy.name.clone();
            let evaluator = evaluator.clone();
            let source = source.name();
            let activated = tokio::task::spawn_blocking(move || {
                evaluator.activate(policy, &source, crate::model::now_unix_ms())
            })
            .await;
            match activated {
                Ok(Ok(active)) => {
                    *refused = None;
                    info!(policy = %name, version = active.version, "policy changed: new version in force");
                    true
                }
                Ok(Err(error)) => {
                    warn!(%error, "policy not activated");
                    false
                }
                Err(error) => {
                    warn!(%error, "policy not activated");
                    false
                }
            }
        }
        Err(error) => {
            tracing::error!(%error, version = evaluator.active().version, "policy file refused: keeping the policy in force");
            *refused = Some(hash);
            false
        }
    }
}

#[cfg(test)]
mod tests;
