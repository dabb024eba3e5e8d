//! Exports over a real store: a host (with a name an attacker chose) that never reported fails
//! `agent_reporting`; its corrective action was opened and acknowledged.

use std::path::Path;

use serde_json::Value;

use super::csv::CsvKind;
use super::*;
use crate::actions::{Request, SYSTEM};
use crate::model::HostFacts;
use crate::store::{ActionRow, EventRow};

const DAY_MS: i64 = 86_400_000;
/// 2026-10-01T00:00:00Z.
const START_MS: i64 = 1_790_812_800_000;
const HOSTNAME: &str = "<script>alert(1)</script>";

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    action_id: i64,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_or_create(&dir.path().join("collector.db")).expect("open");
    let host = HostFacts {
        hostname: HOSTNAME.into(),
        os_family: "linux".into(),
        ..HostFacts::default()
    };
    crate::store::enrol_for_test(&store, dir.path(), &host);
    let opened_at = START_MS + DAY_MS;
    let action_id = store
        .with_actions(|tx| {
            tx.open(
                &ActionRow {
                    id: 0,
                    agent_id: "agt-1".into(),
                    hostname: HOSTNAME.into(),
                    rule_id: "agent-reporting".into(),
                    rule_title: "Every endpoint reports".into(),
                    severity: "medium".into(),
                    opened_at_ms: opened_at,
                },
                &EventRow {
                    at_ms: opened_at,
                    kind: "opened".into(),
                    state: "open".into(),
                    actor: SYSTEM.into(),
                    reason: "=HYPERLINK(\"http://evil\") no evidence arrived".into(),
                    due_at_ms: Some(opened_at + 30 * DAY_MS),
                    ..EventRow::default()
                },
            )
        })
        .expect("open an action");
    crate::actions::request(
        &store,
        action_id,
        &Request::Ack {
            owner: "bob".into(),
        },
        "alice",
        "laptop is in the repair shop",
        opened_at + 3_600_000,
    )
    .expect("ack");
    Fixture {
        _dir: dir,
        store,
        action_id,
    }
}

fn period() -> Period {
    Period::new(START_MS, START_MS + 7 * DAY_MS).expect("period")
}

fn context() -> ExportContext {
    ExportContext {
        ca_fingerprint: Some("ab".repeat(32)),
        generated_at_ms: START_MS + 3 * DAY_MS,
    }
}

fn schema(name: &str) -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/schemas/oscal")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("the vendored schema");
    let schema: Value = serde_json::from_str(&text).expect("schema JSON");
    jsonschema::draft7::new(&schema).expect("the schema compiles, patterns and all")
}

fn assert_valid(validator: &jsonschema::Validator, document: &Value) {
    let errors: Vec<String> = validator
        .iter_errors(document)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{}\n{}",
        errors.join("\n"),
        serde_json::to_string_pretty(document).unwrap_or_default()
    );
}

#[test]
fn a_period_must_end_after_it_starts() {
    let error = Period::new(10, 10).expect_err("empty").to_string();
    assert!(error.contains("not after"), "{error}");
    assert!(Period::new(10, 5).is_err());
    assert_eq!(Period::new(0, 100).expect("ok").judged_at(50), 50);
    assert_eq!(Period::new(0, 100).expect("ok").judged_at(500), 99);
}

#[test]
fn the_actions_csv_has_one_row_per_event_with_injection_guarded() {
    let f = fixture();
    let mut out = Vec::new();
    let rows = csv::write(&f.store, CsvKind::Actions, period(), &mut out).expect("export");
    assert_eq!(rows, 2, "opened and acknowledged");
    let mut reader = ::csv::Reader::from_reader(out.as_slice());
    let headers = reader.headers().expect("headers").clone();
    assert_eq!(&headers[0], "action_id");
    let records: Vec<::csv::StringRecord> =
        reader.records().collect::<Result<_, _>>().expect("parses");
    assert_eq!(&records[0][0], f.action_id.to_string());
    assert_eq!(&records[0][8], "opened");
    assert!(
        records[0][11].starts_with("'=HYPERLINK"),
        "{:?}",
        &records[0]
    );
    assert_eq!(&records[1][8], "acknowledged");
    assert_eq!(&records[1][10], "alice");
    assert_eq!(&records[1][11], "laptop is in the repair shop");
    assert_eq!(&records[1][12], "bob");
    assert_eq!(&records[1][7], "2026-10-02T01:00:00Z", "RFC 3339 in UTC");

    let mut later = Vec::new();
    let after = Period::new(START_MS + 10 * DAY_MS, START_MS + 11 * DAY_MS).expect("period");
    assert_eq!(
        csv::write(&f.store, CsvKind::Actions, after, &mut later).expect("export"),
        0,
        "no event in that period"
    );
}

#[test]
fn the_report_names_controls_and_trails_and_shows_a_hostile_hostname_as_text() {
    let f = fixture();
    let mut out = Vec::new();
    report::write_report(&f.store, period(), &context(), &mut out).expect("report");
    let html = String::from_utf8(out).expect("utf-8");
    assert!(
        !html.contains(HOSTNAME),
        "the hostname must not become markup"
    );
    assert!(html.contains("&#60;script&#62;") || html.contains("&lt;script&gt;"));
    assert!(
        html.contains("iso27001-2022:A.8.16"),
        "the agent_reporting control"
    );
    assert!(
        html.contains("laptop is in the repair shop"),
        "the ack reason"
    );
    assert!(html.contains(&"ab".repeat(32)), "the CA fingerprint");
    assert!(
        html.contains("page-break-before"),
        "a page per control in print"
    );
    assert!(
        !html.contains("src=") && !html.contains("<link"),
        "self-contained"
    );
}

#[test]
fn the_assessment_results_validate_and_reference_controls_and_evidence() {
    let f = fixture();
    let document = oscal::assessment_results(&f.store, period(), &context()).expect("export");
    assert_valid(&schema("oscal_assessment-results_schema.json"), &document);
    let ar = &document["assessment-results"];
    assert_eq!(ar["metadata"]["oscal-version"], oscal::OSCAL_VERSION);
    let result = &ar["results"][0];
    assert_eq!(result["start"], "2026-10-01T00:00:00Z");
    let controls: Vec<&str> =
        result["reviewed-controls"]["control-selections"][0]["include-controls"]
            .as_array()
            .expect("controls")
            .iter()
            .filter_map(|c| c["control-id"].as_str())
            .collect();
    assert!(controls.contains(&"iso27001-2022_A.8.8"), "{controls:?}");
    let findings = result["findings"].as_array().expect("findings");
    assert!(
        findings
            .iter()
            .any(|f| f["target"]["target-id"] == "iso27001-2022_A.8.16"
                && f["target"]["status"]["state"] == "not-satisfied"),
        "the host never reported: {findings:#?}"
    );
    let host = &result["local-definitions"]["inventory-items"][0];
    assert!(
        host["props"]
            .as_array()
            .expect("props")
            .iter()
            .any(|p| p["name"] == "hostname" && p["value"] == HOSTNAME)
    );

    let again = oscal::assessment_results(&f.store, period(), &context()).expect("export");
    assert_eq!(
        again["assessment-results"]["results"], ar["results"],
        "a re-export names everything the same way"
    );
    assert_ne!(
        again["assessment-results"]["uuid"], ar["uuid"],
        "but is a new document"
    );
}

#[test]
fn the_poam_validates_and_carries_the_open_action_with_its_trail() {
    let f = fixture();
    let document = oscal::poam(&f.store, period(), &context()).expect("export");
    assert_valid(&schema("oscal_poam_schema.json"), &document);
    let poam = &document["plan-of-action-and-milestones"];
    let risks = poam["risks"].as_array().expect("risks");
    assert_eq!(risks.len(), 1);
    assert_eq!(risks[0]["status"], "investigating", "acknowledged");
    let entries = risks[0]["risk-log"]["entries"].as_array().expect("log");
    assert_eq!(entries.len(), 2);
    assert!(
        entries[1]["description"]
            .as_str()
            .is_some_and(|d| d.contains("alice") && d.contains("repair shop")),
        "{entries:#?}"
    );
    assert_eq!(poam["poam-items"].as_array().map(Vec::len), Some(1));

    // Before the action opened, nothing was owed.
    let before = Period::new(START_MS - DAY_MS, START_MS).expect("period");
    let error = oscal::poam(&f.store, before, &context()).expect_err("nothing to plan");
    assert!(
        matches!(error, ExportError::NothingToPlan(_)),
        "OSCAL wants at least one item, and none is made up: {error}"
    );
}
