use super::*;
use crate::model::HostFacts;

const T0: i64 = 1_790_000_000_000;

/// A store with `hosts` agents enrolled long ago that never reported: every rule of every host
/// is judged and recorded, and each host's reporting rule fails and opens an action.
fn fleet(dir: &std::path::Path, hosts: usize) -> Arc<Store> {
    let store = Store::open_or_create(&dir.join("collector.db")).expect("store");
    let hosts: Vec<HostFacts> = (0..hosts)
        .map(|i| HostFacts {
            hostname: format!("host-{i}"),
            os_family: "linux".into(),
            ..HostFacts::default()
        })
        .collect();
    crate::store::enrol_fleet_for_test(&store, dir, &hosts);
    Arc::new(store)
}

fn evaluator(store: &Arc<Store>) -> Evaluator {
    let policy = Policy::default_policy().expect("default policy");
    let version = store
        .activate_policy(&policy.sha256, &policy.name, "default", &policy.text, T0)
        .expect("activate");
    Evaluator::new(
        store.clone(),
        ActivePolicy {
            version,
            policy: Arc::new(policy),
        },
    )
}

/// What a pass left in the store: results and action events, without row ids.
fn recorded(store: &Store) -> (Vec<(String, String, String, String)>, usize) {
    let mut results: Vec<_> = store
        .results_between(None, 0, i64::MAX)
        .expect("results")
        .into_iter()
        .map(|r: ResultRow| (r.agent_id, r.rule_id, r.outcome, r.detail))
        .collect();
    results.sort();
    let events = store
        .current_actions(results.iter().map(|(a, r, _, _)| (a.as_str(), r.as_str())))
        .expect("actions")
        .into_iter()
        .flatten()
        .count();
    (results, events)
}

#[test]
fn a_background_pass_rests_between_chunks_and_records_what_a_full_pass_records() {
    const HOSTS: usize = 120;
    let full_dir = tempfile::tempdir().expect("tempdir");
    let full_store = fleet(full_dir.path(), HOSTS);
    let full = evaluator(&full_store)
        .run(None, T0 + 1, Pace::Full)
        .expect("full pass");
    let background_dir = tempfile::tempdir().expect("tempdir");
    let background_store = fleet(background_dir.path(), HOSTS);
    let background = evaluator(&background_store)
        .run(None, T0 + 1, Pace::Background)
        .expect("background pass");

    let rules = Policy::default_policy().expect("policy").rules.len();
    assert_eq!(full.hosts, HOSTS);
    assert_eq!(full.results_recorded, HOSTS * rules);
    assert!(
        full.results_recorded > Pace::Background.results_per_transaction(),
        "the test must make the background pass record in several transactions"
    );
    assert_eq!(
        full.rested,
        std::time::Duration::ZERO,
        "a full pass never rests"
    );
    assert!(
        background.rested > std::time::Duration::ZERO,
        "{background:?}"
    );
    assert_eq!(background.results_recorded, full.results_recorded);
    assert_eq!(background.action_events, full.action_events);
    let (full_results, full_actions) = recorded(&full_store);
    let (background_results, background_actions) = recorded(&background_store);
    assert_eq!(full_results.len(), HOSTS * rules);
    assert_eq!(background_results, full_results);
    assert_eq!(background_actions, full_actions);
}

#[test]
fn only_passes_nobody_waits_for_run_in_the_background() {
    assert_eq!(Trigger::Arrivals.pace(false), Pace::Background);
    assert_eq!(Trigger::Timer.pace(false), Pace::Background);
    assert_eq!(
        Trigger::Timer.pace(true),
        Pace::Full,
        "a new policy version is waited for"
    );
    assert_eq!(Trigger::StartUp.pace(false), Pace::Full);
    assert_eq!(Trigger::Hangup.pace(false), Pace::Full);
    assert_eq!(Trigger::Hangup.pace(true), Pace::Full);
}
