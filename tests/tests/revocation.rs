//! `agent list` shows each agent's state, last contact and certificate expiry; `agent revoke`
//! makes the collector refuse an agent at once, and nothing the agent observed is lost.

use evident_tests::{Agent, Collector, ITEMS_PER_CYCLE};

fn agents(collector: &Collector) -> Vec<serde_json::Value> {
    let out = collector
        .admin(&["agent", "list", "--json"])
        .expect_ok("agent list --json");
    serde_json::from_str::<serde_json::Value>(&out.stdout)
        .expect("json")
        .as_array()
        .expect("a list")
        .clone()
}

fn find<'a>(list: &'a [serde_json::Value], id: &str) -> &'a serde_json::Value {
    list.iter()
        .find(|a| a["agent_id"] == id)
        .unwrap_or_else(|| panic!("{id} not in {list:#?}"))
}

#[test]
fn a_revoked_agent_is_refused_and_keeps_its_evidence_spooled() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(&tmp.path().join("collector"));
    let laptop = Agent::new(&tmp.path().join("laptop"));
    let laptop_id = laptop.enroll_with(&collector);
    let server = Agent::new(&tmp.path().join("server"));
    let server_id = server.enroll_with(&collector);
    laptop.run_once().expect_ok("first report");

    let list = agents(&collector);
    let entry = find(&list, &laptop_id);
    assert_eq!(entry["state"], "active");
    assert!(entry["last_contact_ms"].is_i64(), "{entry:#}");
    assert!(
        entry["certificate_not_after_ms"].as_i64().expect("expiry")
            > entry["enrolled_at_ms"].as_i64().expect("enrolled")
    );
    assert_eq!(entry["evidence_items"], ITEMS_PER_CYCLE);
    assert!(find(&list, &server_id)["last_contact_ms"].is_null());

    let revoked = collector
        .admin(&[
            "agent",
            "revoke",
            &laptop_id,
            "--reason",
            "laptop stolen, ticket 4711",
        ])
        .expect_ok("revoke");
    assert!(revoked.stdout.contains(&laptop_id), "{revoked:?}");
    let list = agents(&collector);
    let entry = find(&list, &laptop_id);
    assert_eq!(entry["state"], "revoked");
    assert_eq!(entry["revoked_reason"], "laptop stolen, ticket 4711");
    let table = collector.admin(&["agent", "list"]).expect_ok("agent list");
    assert!(
        table.stdout.contains("revoked") && table.stdout.contains("ticket 4711"),
        "{table:?}"
    );

    // The next cycle is refused; the observation stays in the laptop's spool.
    let refused = laptop.run_once();
    assert!(!refused.ok(), "{refused:?}");
    assert!(
        refused.stderr.contains(&format!(
            "agent {laptop_id} is revoked: it may not report evidence"
        )),
        "{refused:?}"
    );
    assert_eq!(collector.evidence(Some(&laptop_id)).len(), ITEMS_PER_CYCLE);
    assert_eq!(laptop.spool_files().len(), 1, "nothing observed is lost");

    // Other agents are unaffected.
    server.run_once().expect_ok("the server still reports");
    assert_eq!(collector.evidence(Some(&server_id)).len(), ITEMS_PER_CYCLE);
    collector.admin(&["verify"]).expect_ok("verify");
}

#[test]
fn revoking_needs_a_known_agent_and_a_reason() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(&tmp.path().join("collector"));
    let unknown = collector.admin(&["agent", "revoke", "agt-nobody", "--reason", "test"]);
    assert!(!unknown.ok(), "{unknown:?}");
    assert!(
        unknown.stderr.contains("no agent agt-nobody"),
        "{unknown:?}"
    );
    let agent = Agent::new(&tmp.path().join("agent"));
    let id = agent.enroll_with(&collector);
    let blank = collector.admin(&["agent", "revoke", &id, "--reason", "  "]);
    assert!(!blank.ok(), "{blank:?}");
    assert!(blank.stderr.contains("--reason is empty"), "{blank:?}");
    assert_eq!(find(&agents(&collector), &id)["state"], "active");
}
