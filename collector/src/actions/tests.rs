use super::*;
use crate::model::HostFacts;
use crate::policy::Policy;
use crate::policy::judge::Judgement;
use std::sync::Arc;

const HOUR: i64 = 3_600_000;
const T0: i64 = 1_790_000_000_000;

/// A store with one enrolled agent, `agt-1`, on host "web-1".
fn store_with_agent(dir: &std::path::Path) -> Store {
    let store = Store::open_or_create(&dir.join("collector.db")).expect("store");
    let host = HostFacts {
        hostname: "web-1".into(),
        os_family: "linux".into(),
        ..HostFacts::default()
    };
    crate::store::enrol_for_test(&store, dir, &host);
    store
}

fn active(store: &Store) -> ActivePolicy {
    let policy = Policy::default_policy().expect("default policy");
    let version = store
        .activate_policy(&policy.sha256, &policy.name, "default", &policy.text, T0)
        .expect("activate");
    ActivePolicy {
        version,
        policy: Arc::new(policy),
    }
}

fn verdict(outcome: RuleOutcome, received_at_ms: i64, sequence: u64) -> Judgement {
    Judgement {
        outcome,
        detail: format!("{} at {received_at_ms}", outcome.as_str()),
        offending: if outcome == RuleOutcome::Fail {
            vec!["openssl".into()]
        } else {
            vec![]
        },
        evidence: vec![sequence],
        decided_by_received_ms: Some(received_at_ms),
        decided_by_observed_ms: Some(received_at_ms),
    }
}

/// `drive` in a transaction of its own, after checking that `event_for`, from the action as
/// a read connection sees it, foretells whether `drive` records an event: every lifecycle test
/// below checks the evaluator's read-first filter in every state it walks through.
fn drive_now(
    store: &Store,
    active: &ActivePolicy,
    rule: &crate::policy::Rule,
    host: &HostView,
    judgement: &Judgement,
    now_ms: i64,
) -> Result<Option<EventRow>, StoreError> {
    let current = store
        .current_actions([(host.agent_id.as_str(), rule.id.as_str())])?
        .pop()
        .expect("one answer per key");
    let foretold = event_for(current.as_ref(), active, rule, judgement, now_ms).is_some();
    let event = store.with_actions(|tx| drive(tx, active, rule, host, judgement, now_ms))?;
    assert_eq!(
        foretold,
        event.is_some(),
        "event_for() and drive() disagree on {judgement:?} after {current:?}: {event:?}"
    );
    Ok(event)
}

fn host() -> HostView {
    HostView {
        agent_id: "agt-1".into(),
        hostname: "web-1".into(),
        ..HostView::default()
    }
}

fn state(store: &Store, id: i64) -> State {
    let (_, events) = store.action(id).expect("read").expect("action");
    State::parse(&events.last().expect("event").state).expect("state")
}

#[test]
fn the_lifecycle_runs_from_opening_to_verification_and_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_with_agent(dir.path());
    let active = active(&store);
    let rule = active
        .policy
        .rule("security-updates")
        .expect("rule")
        .clone();
    let drive_at = |j: &Judgement, now: i64| drive_now(&store, &active, &rule, &host(), j, now);

    assert!(
        drive_at(&verdict(RuleOutcome::Pass, T0, 1), T0 + 1)
            .expect("drive")
            .is_none(),
        "nothing to open while compliant"
    );
    let opened = drive_at(&verdict(RuleOutcome::Fail, T0 + HOUR, 5), T0 + HOUR + 1)
        .expect("drive")
        .expect("opened");
    let id = opened.action_id;
    assert_eq!(opened.kind, "opened");
    assert_eq!(opened.evidence, [5]);
    assert_eq!(
        opened.due_at_ms,
        Some(T0 + HOUR + 1 + 30 * 24 * HOUR),
        "high: 30 days in the default policy"
    );
    assert!(
        drive_at(&verdict(RuleOutcome::Fail, T0 + 2 * HOUR, 9), T0 + 2 * HOUR)
            .expect("drive")
            .is_none(),
        "one action per (host, rule): a repeated failure adds nothing"
    );

    let ack = request(
        &store,
        id,
        &Request::Ack {
            owner: "bob".into(),
        },
        "alice",
        "on it",
        T0 + 3 * HOUR,
    )
    .expect("ack");
    assert_eq!(ack.owner.as_deref(), Some("bob"));
    assert_eq!(ack.due_at_ms, opened.due_at_ms, "the due date carries over");
    let refused = request(
        &store,
        id,
        &Request::Ack {
            owner: "bob".into(),
        },
        "alice",
        "again",
        T0 + 3 * HOUR,
    )
    .expect_err("already acknowledged");
    let message = refused.to_string();
    assert!(message.contains("acknowledged"), "{message}");
    assert!(
        message.contains("allowed: resolve, accept-risk, comment"),
        "{message}"
    );

    request(
        &store,
        id,
        &Request::Resolve {
            root_cause: "unattended-upgrades was off".into(),
        },
        "bob",
        "upgraded openssl",
        T0 + 4 * HOUR,
    )
    .expect("resolve");
    assert!(
        drive_at(
            &verdict(RuleOutcome::Pass, T0 + 2 * HOUR, 10),
            T0 + 5 * HOUR
        )
        .expect("drive")
        .is_none(),
        "evidence that arrived before the resolution verifies nothing"
    );
    let verified = drive_at(
        &verdict(RuleOutcome::Pass, T0 + 5 * HOUR, 14),
        T0 + 5 * HOUR + 1,
    )
    .expect("drive")
    .expect("verified");
    assert_eq!(verified.state, "verified");
    assert_eq!(verified.actor, SYSTEM);
    assert_eq!(verified.evidence, [14]);
    assert!(
        verified
            .reason
            .starts_with("compliant evidence arrived after the resolution")
    );

    let reopened = drive_at(
        &verdict(RuleOutcome::Fail, T0 + 6 * HOUR, 18),
        T0 + 6 * HOUR + 1,
    )
    .expect("drive")
    .expect("reopened");
    assert_eq!(reopened.state, "reopened");
    assert!(reopened.reason.starts_with("the deviation came back"));
    assert_eq!(state(&store, id), State::Reopened);

    // Compliant evidence verifies an action no one resolved, and says so.
    let verified = drive_at(
        &verdict(RuleOutcome::Pass, T0 + 7 * HOUR, 22),
        T0 + 7 * HOUR,
    )
    .expect("drive")
    .expect("verified");
    assert!(
        verified.reason.contains("no one resolved it by hand"),
        "{verified:?}"
    );
    let (_, events) = store.action(id).expect("read").expect("action");
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "opened",
            "acknowledged",
            "resolved",
            "verified",
            "reopened",
            "verified"
        ]
    );
}

#[test]
fn late_deliveries_and_silence_do_not_undo_a_resolution_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_with_agent(dir.path());
    let active = active(&store);
    let rule = active
        .policy
        .rule("security-updates")
        .expect("rule")
        .clone();
    let id = drive_now(
        &store,
        &active,
        &rule,
        &host(),
        &verdict(RuleOutcome::Fail, T0, 1),
        T0,
    )
    .expect("drive")
    .expect("opened")
    .action_id;
    request(
        &store,
        id,
        &Request::Resolve {
            root_cause: "manual patching".into(),
        },
        "bob",
        "patched",
        T0 + 10 * HOUR,
    )
    .expect("resolve");
    // Observed before the resolution, delivered after it from the agent's spool.
    let mut late = verdict(RuleOutcome::Fail, T0 + 11 * HOUR, 7);
    late.decided_by_observed_ms = Some(T0 + 2 * HOUR);
    assert!(
        drive_now(&store, &active, &rule, &host(), &late, T0 + 11 * HOUR)
            .expect("drive")
            .is_none(),
        "a late delivery of old evidence does not reopen the resolution"
    );

    let silence = active.policy.rule("agent-reporting").expect("rule").clone();
    let mut silent = verdict(RuleOutcome::Fail, 0, 1);
    silent.decided_by_received_ms = None;
    silent.decided_by_observed_ms = None;
    let id = drive_now(&store, &active, &silence, &host(), &silent, T0)
        .expect("drive")
        .expect("opened")
        .action_id;
    request(
        &store,
        id,
        &Request::Resolve {
            root_cause: "laptop was in repair".into(),
        },
        "bob",
        "back in use",
        T0 + HOUR,
    )
    .expect("resolve");
    assert!(
        drive_now(&store, &active, &silence, &host(), &silent, T0 + 2 * HOUR)
            .expect("drive")
            .is_none(),
        "still silent, but not yet for 72 hours since the resolution"
    );
    let reopened = drive_now(&store, &active, &silence, &host(), &silent, T0 + 74 * HOUR)
        .expect("drive")
        .expect("silent for longer than the threshold since the resolution");
    assert_eq!(reopened.state, "reopened");
}

#[test]
fn an_accepted_risk_reopens_at_expiry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_with_agent(dir.path());
    let active = active(&store);
    let rule = active.policy.rule("disks-encrypted").expect("rule").clone();
    let fail = |received| verdict(RuleOutcome::Fail, received, 3);
    let id = drive_now(&store, &active, &rule, &host(), &fail(T0), T0)
        .expect("drive")
        .expect("opened")
        .action_id;
    let expires = T0 + 10 * HOUR;
    request(
        &store,
        id,
        &Request::AcceptRisk {
            expires_at_ms: expires,
        },
        "ciso",
        "replacement laptop ordered",
        T0 + HOUR,
    )
    .expect("accept");
    assert!(
        drive_now(
            &store,
            &active,
            &rule,
            &host(),
            &fail(T0 + 2 * HOUR),
            T0 + 2 * HOUR
        )
        .expect("drive")
        .is_none(),
        "still failing, but accepted"
    );
    let reopened = drive_now(
        &store,
        &active,
        &rule,
        &host(),
        &fail(T0 + 2 * HOUR),
        expires,
    )
    .expect("drive")
    .expect("reopened at expiry");
    assert_eq!(reopened.state, "reopened");
    assert!(
        reopened.reason.starts_with("the risk acceptance expired"),
        "{reopened:?}"
    );
    assert_eq!(reopened.risk_expires_at_ms, None);
    assert!(reopened.due_at_ms > Some(expires), "a new due date");
}

#[test]
fn people_must_say_who_and_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_with_agent(dir.path());
    let active = active(&store);
    let rule = active.policy.rule("backup-recent").expect("rule").clone();
    let id = drive_now(
        &store,
        &active,
        &rule,
        &host(),
        &verdict(RuleOutcome::Fail, T0, 1),
        T0,
    )
    .expect("drive")
    .expect("opened")
    .action_id;
    let comment = |actor: &str, reason: &str| {
        request(&store, id, &Request::Comment, actor, reason, T0 + 1).map_err(|e| e.to_string())
    };
    assert!(
        comment("", "x")
            .expect_err("no actor")
            .contains("the actor is empty")
    );
    assert!(
        comment("System", "x")
            .expect_err("reserved")
            .contains("reserved")
    );
    assert!(
        comment("alice", " ")
            .expect_err("no reason")
            .contains("the reason is empty")
    );
    assert_eq!(comment("alice", "looking").expect("comment").state, "open");
    let past = request(
        &store,
        id,
        &Request::AcceptRisk { expires_at_ms: T0 },
        "ciso",
        "x",
        T0 + 1,
    )
    .expect_err("past expiry");
    assert!(past.to_string().contains("not in the future"), "{past}");
    let unknown = request(&store, 99, &Request::Comment, "alice", "x", T0).expect_err("no action");
    assert!(
        unknown.to_string().contains("no corrective action 99"),
        "{unknown}"
    );
    // The trail is append-only in the database too.
    let error = rusqlite::Connection::open(dir.path().join("collector.db"))
        .expect("open")
        .execute("UPDATE action_events SET reason = 'nothing happened'", [])
        .expect_err("append-only");
    assert!(error.to_string().contains("append-only"), "{error}");
}

#[test]
fn overdue_is_judged_at_the_moment_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_with_agent(dir.path());
    let active = active(&store);
    let rule = active.policy.rule("disks-encrypted").expect("rule").clone();
    drive_now(
        &store,
        &active,
        &rule,
        &host(),
        &verdict(RuleOutcome::Fail, T0, 1),
        T0,
    )
    .expect("drive")
    .expect("opened");
    let due = T0 + 30 * 24 * HOUR;
    assert!(!list(&store, due).expect("list")[0].overdue);
    assert!(list(&store, due + 1).expect("list")[0].overdue);
    assert!(
        list(&store, T0 - 1).expect("list").is_empty(),
        "not yet opened"
    );
}
