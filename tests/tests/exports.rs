//! Exports through the real binaries: a replayed Debian host with 20 pending security updates
//! opens a corrective action, a person acknowledges it with the CLI, and then every export of
//! the period says so: the CSVs parse back with the expected rows, the audit report names the
//! failing control, the trail and the reason (and shows a hostile hostname as text), and the
//! OSCAL documents validate against NIST's published schemas (`tests/schemas/oscal/`).

use std::path::Path;

use evident_tests::{
    Agent, Collector, ITEMS_PER_CYCLE, LATE_UPDATES_POLICY, Run, debian_replay, wait_for_some,
};
use serde_json::Value;

/// What a hostile agent may claim as its hostname at enrolment.
const HOSTILE: &str = "<script>alert('pwned')</script>";
const ACK_REASON: &str = "patch window tonight";

fn csv_rows(text: &str) -> Vec<csv::StringRecord> {
    csv::Reader::from_reader(text.as_bytes())
        .records()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("the CSV parses back: {e}\n{text}"))
}

fn validate(schema_file: &str, document: &Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schemas/oscal")
        .join(schema_file);
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("vendored schema"))
            .expect("schema JSON");
    let validator = jsonschema::draft7::new(&schema).expect("NIST's schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(document)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{schema_file}:\n{}", errors.join("\n"));
}

fn json_of(run: Run, what: &str) -> Value {
    let run = run.expect_ok(what);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{what}: {e}: {}", run.stdout))
}

#[test]
fn exports_of_a_period_show_the_deviation_its_trail_and_validate_as_oscal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy_file = dir.path().join("policy.toml");
    std::fs::write(&policy_file, LATE_UPDATES_POLICY).expect("policy");
    let from = jiff::Timestamp::now().to_string();
    let collector = Collector::start_with(
        &dir.path().join("collector"),
        "127.0.0.1:0",
        &[
            "--policy",
            policy_file.to_str().expect("utf-8"),
            "--evaluation-interval-secs",
            "1",
        ],
    );
    let agent = Agent::new(&dir.path().join("agent"));
    let agent_id = agent.enroll_with(&collector);
    // The hostname is what the agent claimed at enrolment; a hostile one may claim markup.
    rusqlite::Connection::open(collector.database())
        .expect("open the database")
        .execute(
            "UPDATE agents SET hostname = ?1 WHERE agent_id = ?2",
            [HOSTILE, agent_id.as_str()],
        )
        .expect("claim a hostile hostname");

    agent
        .run_once_replaying(&debian_replay(), &[])
        .expect_ok("run with 20 pending security updates");
    let id = wait_for_some(30, "an action to open", || {
        let out = collector
            .admin(&["actions", "list", "--json"])
            .expect_ok("actions list");
        let list: Value = serde_json::from_str(&out.stdout).expect("JSON");
        list.get(0).and_then(|a| a["id"].as_u64())
    });
    collector
        .admin(&[
            "actions",
            "ack",
            &id.to_string(),
            "--actor",
            "alice",
            "--owner",
            "bob",
            "--reason",
            ACK_REASON,
        ])
        .expect_ok("ack");
    let to = (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(1)).to_string();
    let period = ["--from", from.as_str(), "--to", to.as_str()];
    let export = |args: &[&str]| {
        let mut full = vec!["export"];
        full.extend(args);
        full.extend(period);
        collector.admin(&full)
    };

    // Evidence: one row per item of the cycle, with the agent's chain hash.
    let evidence = export(&["csv", "--what", "evidence"]).expect_ok("export evidence");
    let rows = csv_rows(&evidence.stdout);
    assert_eq!(rows.len(), ITEMS_PER_CYCLE, "{}", evidence.stdout);
    assert!(rows.iter().all(|r| r[0] == *agent_id && r[1] == *HOSTILE));
    assert_eq!(
        rows.iter().map(|r| r[2].to_owned()).collect::<Vec<_>>(),
        (1..=ITEMS_PER_CYCLE)
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    );
    let patch = rows.iter().find(|r| &r[3] == "patch").expect("a patch row");
    assert!(patch[7].contains("(20 security)"), "{patch:?}");
    assert!(
        patch[5].ends_with('Z') && patch[5].contains('T'),
        "{patch:?}"
    );
    assert!(
        rows.iter().all(|r| r[8].len() == 64),
        "SHA-256 chain hashes"
    );

    // Rule results: the failing result that opened the action.
    let results = export(&["csv", "--what", "results"]).expect_ok("export results");
    let results = csv_rows(&results.stdout);
    assert!(
        results
            .iter()
            .any(|r| &r[2] == "security-updates" && &r[5] == "fail" && &r[8] == "2"),
        "{results:?}"
    );

    // Actions: opened by the collector, acknowledged by alice with her reason.
    let file = dir.path().join("actions.csv");
    export(&[
        "csv",
        "--what",
        "actions",
        "--out",
        file.to_str().expect("utf-8"),
    ])
    .expect_ok("export actions");
    let actions = csv_rows(&std::fs::read_to_string(&file).expect("written"));
    let trail: Vec<(&str, &str, &str)> = actions.iter().map(|r| (&r[8], &r[10], &r[11])).collect();
    assert_eq!(trail.len(), 2, "{actions:?}");
    assert_eq!((trail[0].0, trail[0].1), ("opened", "system"));
    assert_eq!(trail[1], ("acknowledged", "alice", ACK_REASON));

    // The audit report names the failing control, the trail and the reason, and shows the
    // hostile hostname as text.
    let report = dir.path().join("report.html");
    export(&["report", "--out", report.to_str().expect("utf-8")]).expect_ok("export report");
    let html = std::fs::read_to_string(&report).expect("written");
    assert!(html.contains("iso27001-2022:A.8.8"), "the failing control");
    assert!(html.contains("security-updates"));
    assert!(html.contains(ACK_REASON), "the ack reason");
    assert!(html.contains("acknowledged") && html.contains("opened"));
    assert!(
        html.contains(&collector.fingerprint()),
        "the collector's CA"
    );
    assert!(!html.contains(HOSTILE), "the hostname never becomes markup");
    assert!(html.contains("&#60;script&#62;") || html.contains("&lt;script&gt;"));

    // OSCAL assessment results: valid, the failing control not satisfied, its observation
    // naming the evidence by agent and sequence.
    let ar = json_of(
        export(&["oscal", "assessment-results"]),
        "export oscal assessment-results",
    );
    validate("oscal_assessment-results_schema.json", &ar);
    let result = &ar["assessment-results"]["results"][0];
    let finding = result["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| {
            f["target"]["target-id"] == "iso27001-2022_A.8.8"
                && f["props"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|p| p["value"] == "security-updates"))
        })
        .expect("a finding for A.8.8");
    assert_eq!(finding["target"]["status"]["state"], "not-satisfied");
    let observation_uuid = &finding["related-observations"][0]["observation-uuid"];
    let observation = result["observations"]
        .as_array()
        .expect("observations")
        .iter()
        .find(|o| &o["uuid"] == observation_uuid)
        .expect("the finding's observation");
    let evidence_props = observation["relevant-evidence"][0]["props"]
        .as_array()
        .expect("props")
        .clone();
    let prop = |name: &str| {
        evidence_props
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["value"].as_str())
            .map(str::to_owned)
    };
    assert_eq!(prop("agent-id").as_deref(), Some(agent_id.as_str()));
    assert_eq!(prop("sequence").as_deref(), Some("2"), "the patch item");
    assert_eq!(prop("chain-hash").as_deref(), Some(&rows[1][8]));

    // The POA&M: the open action as a risk being investigated, its log the trail.
    let poam = json_of(export(&["oscal", "poam"]), "export oscal poam");
    validate("oscal_poam_schema.json", &poam);
    let risk = &poam["plan-of-action-and-milestones"]["risks"][0];
    assert_eq!(risk["status"], "investigating");
    let log = risk["risk-log"]["entries"].as_array().expect("log");
    assert!(
        log.iter().any(|e| e["description"]
            .as_str()
            .is_some_and(|d| d.contains("alice") && d.contains(ACK_REASON))),
        "{log:#?}"
    );

    // Bad input says what to do instead.
    let unknown = export(&["csv", "--what", "everything"]);
    assert!(!unknown.ok());
    assert!(
        unknown.stderr.contains("use evidence, results or actions"),
        "{unknown:?}"
    );
    let backwards = collector.admin(&[
        "export", "csv", "--what", "evidence", "--from", &to, "--to", &from,
    ]);
    assert!(!backwards.ok());
    assert!(
        backwards.stderr.contains("give an end after the start"),
        "{backwards:?}"
    );
}
