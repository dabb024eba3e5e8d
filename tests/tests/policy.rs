//! Policy and corrective actions through real processes with replayed hosts: a host whose
//! security updates stay pending longer than the policy allows opens an action; it is
//! acknowledged, resolved and verified by the next compliant evidence; a regression reopens
//! it; an accepted risk reopens at expiry; the status of a past moment is what was true then;
//! a bad policy file is refused while the collector runs on under the policy it had.

use std::path::{Path, PathBuf};

use evident_tests::{Agent, Collector, copy_dir, wait_for_some};
use serde_json::Value;

const POLICY: &str = r#"name = "end-to-end policy"

[due_days]
critical = 1
high = 2
medium = 3
low = 4

[[rule]]
id = "security-updates"
title = "Security updates are installed within 2 seconds"
severity = "high"
check = "patch"
condition = "security_updates_pending"
max_pending_age = "2s"
controls = ["iso27001-2022:A.8.8", "cis-controls-v8:7.3"]

[[rule]]
id = "agent-reporting"
title = "Every endpoint reports within an hour"
severity = "medium"
check = "inventory"
condition = "agent_reporting"
max_silence = "1h"
controls = ["iso27001-2022:A.5.9", "iso27001-2022:A.8.16"]

[[rule]]
id = "server-disks"
title = "Server disks are encrypted"
severity = "critical"
check = "disk_encryption"
condition = "fixed_volumes_encrypted"
applies_to = { tags = ["server"] }
controls = ["iso27001-2022:A.8.24"]
"#;

/// The line of `POLICY` that holds `text`.
fn line_of(text: &str) -> usize {
    POLICY
        .lines()
        .position(|l| l.contains(text))
        .expect("in the policy")
        + 1
}

fn debian_replay() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/src/checks/patch/testdata/replay-debian12")
}

/// The recorded Debian host after `apt-get dist-upgrade`: nothing pending.
fn patched_replay(dir: &Path) -> PathBuf {
    let patched = dir.join("replay-debian12-patched");
    copy_dir(&debian_replay(), &patched);
    let simulation = patched.join("commands/0003.stdout");
    let argv = std::fs::read_to_string(patched.join("commands/0003.toml")).expect("argv");
    assert!(argv.contains("dist-upgrade"), "{argv}");
    std::fs::write(
        simulation,
        "Reading package lists...\nBuilding dependency tree...\nReading state information...\n\
         Calculating upgrade...\n0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.\n",
    )
    .expect("write");
    patched
}

fn json(collector: &Collector, args: &[&str]) -> Value {
    let out = collector.admin(args).expect_ok(&args.join(" "));
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", out.stdout))
}

fn actions(collector: &Collector) -> Vec<Value> {
    json(collector, &["actions", "list", "--json"])
        .as_array()
        .expect("array")
        .clone()
}

fn action(collector: &Collector, id: u64) -> Value {
    json(collector, &["actions", "show", &id.to_string(), "--json"])
}

/// Waits until action `id` reaches `state` and returns it.
fn wait_for_state(collector: &Collector, id: u64, state: &str) -> Value {
    wait_for_some(30, &format!("action {id} to be {state}"), || {
        let a = action(collector, id);
        (a["state"] == state).then_some(a)
    })
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now().to_string()
}

/// (rule id, outcome, evidence) of one host's finding.
type Finding = (String, String, Value);

/// Per control: status and, per rule, the hosts with findings and the evidence they rest on.
fn verdicts(status: &Value) -> Vec<(String, String, Vec<Finding>)> {
    status["controls"]
        .as_array()
        .expect("controls")
        .iter()
        .map(|c| {
            let findings = c["rules"]
                .as_array()
                .expect("rules")
                .iter()
                .flat_map(|r| {
                    r["findings"].as_array().expect("findings").iter().map(|f| {
                        (
                            r["rule_id"].as_str().expect("id").to_owned(),
                            f["outcome"].as_str().expect("outcome").to_owned(),
                            f["evidence"].clone(),
                        )
                    })
                })
                .collect();
            (
                c["control"].as_str().expect("control").to_owned(),
                c["status"].as_str().expect("status").to_owned(),
                findings,
            )
        })
        .collect()
}

fn control<'a>(status: &'a Value, id: &str) -> &'a Value {
    status["controls"]
        .as_array()
        .expect("controls")
        .iter()
        .find(|c| c["control"] == id)
        .unwrap_or_else(|| panic!("{id} in {status}"))
}

#[test]
fn a_deviation_is_opened_acknowledged_resolved_verified_reopened_and_risk_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy_file = dir.path().join("policy.toml");
    std::fs::write(&policy_file, POLICY).expect("policy");
    let before_enrolment = now_rfc3339();
    let mut collector = Collector::start_with(
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
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, "tags = [\"laptop\"]\n").expect("agent config");
    let config = config.to_str().expect("utf-8");
    let patched = patched_replay(dir.path());

    // Twenty security updates pending: judged on arrival (pending for no time yet), then the
    // timer finds them pending longer than 2 s and opens one action for (host, rule).
    agent
        .run_once_replaying(&debian_replay(), &["--config", config])
        .expect_ok("run with pending security updates");
    let opened = wait_for_some(30, "an action to open", || {
        let list = actions(&collector);
        (!list.is_empty()).then_some(list)
    });
    assert_eq!(opened.len(), 1, "{opened:#?}");
    let id = opened[0]["id"].as_u64().expect("id");
    assert_eq!(opened[0]["rule_id"], "security-updates");
    assert_eq!(opened[0]["agent_id"], agent_id.as_str());
    assert_eq!(opened[0]["severity"], "high");
    assert_eq!(opened[0]["state"], "open");
    let trail = action(&collector, id);
    let first = &trail["events"][0];
    assert_eq!(first["kind"], "opened");
    assert_eq!(first["actor"], "system");
    assert_eq!(
        first["evidence"],
        serde_json::json!([2]),
        "the patch item of the first cycle"
    );
    assert!(
        first["reason"]
            .as_str()
            .expect("reason")
            .contains("pending longer than 2s"),
        "{first}"
    );
    assert_eq!(
        trail["due_at_ms"].as_i64().expect("due") - first["at_ms"].as_i64().expect("at"),
        2 * 86_400_000,
        "high severity: due in 2 days under this policy"
    );
    let at_open = now_rfc3339();
    let status_at_open = json(&collector, &["status", "--json"]);
    let a88 = control(&status_at_open, "iso27001-2022:A.8.8");
    assert_eq!(a88["status"], "fail");
    let finding = &a88["rules"][0]["findings"][0];
    let offending = finding["offending"].as_array().expect("offending");
    assert_eq!(offending.len(), 20, "each late package by name: {finding}");
    assert!(
        offending.iter().all(|o| o
            .as_str()
            .is_some_and(|o| o.contains(" -> ") && o.contains("pending since"))),
        "{offending:?}"
    );
    assert_eq!(
        control(&status_at_open, "cis-controls-v8:7.3")["status"],
        "fail",
        "the same rule in a second framework"
    );
    assert_eq!(
        control(&status_at_open, "iso27001-2022:A.8.16")["status"],
        "pass"
    );
    assert_eq!(
        control(&status_at_open, "iso27001-2022:A.8.24")["status"],
        "not_applicable",
        "the disk rule is for hosts tagged server; this one is tagged laptop"
    );

    // People: acknowledge, then a second ack is refused naming what is allowed.
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
            "patch window tonight",
        ])
        .expect_ok("ack");
    let again = collector.admin(&[
        "actions",
        "ack",
        &id.to_string(),
        "--actor",
        "alice",
        "--owner",
        "bob",
        "--reason",
        "again",
    ]);
    assert!(!again.ok());
    assert!(
        again
            .stderr
            .contains("allowed: resolve, accept-risk, comment"),
        "{again:?}"
    );
    collector
        .admin(&[
            "actions",
            "resolve",
            &id.to_string(),
            "--actor",
            "bob",
            "--reason",
            "ran apt-get dist-upgrade",
            "--root-cause",
            "unattended-upgrades was not installed",
        ])
        .expect_ok("resolve");

    // The next compliant evidence verifies the resolution, naming that evidence.
    agent
        .run_once_replaying(&patched, &["--config", config])
        .expect_ok("run after patching");
    let verified = wait_for_state(&collector, id, "verified");
    let event = verified["events"]
        .as_array()
        .expect("events")
        .last()
        .expect("event")
        .clone();
    assert_eq!(event["actor"], "system");
    assert_eq!(
        event["evidence"],
        serde_json::json!([6]),
        "the patch item of the second cycle"
    );
    assert!(
        event["reason"]
            .as_str()
            .expect("reason")
            .starts_with("compliant evidence arrived after the resolution"),
        "{event}"
    );
    let at_verified = now_rfc3339();
    let status_at_verified = json(&collector, &["status", "--json"]);
    assert_eq!(
        control(&status_at_verified, "iso27001-2022:A.8.8")["status"],
        "pass"
    );

    // A regression reopens the same action.
    agent
        .run_once_replaying(&debian_replay(), &["--config", config])
        .expect_ok("run with the updates pending again");
    let reopened = wait_for_state(&collector, id, "reopened");
    let event = reopened["events"]
        .as_array()
        .expect("events")
        .last()
        .expect("event")
        .clone();
    assert!(
        event["reason"]
            .as_str()
            .expect("reason")
            .starts_with("the deviation came back"),
        "{event}"
    );
    assert_eq!(
        actions(&collector).len(),
        1,
        "still one action for (host, rule)"
    );

    // An accepted risk reopens at its expiry.
    let expires = (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3)).to_string();
    collector
        .admin(&[
            "actions",
            "accept-risk",
            &id.to_string(),
            "--actor",
            "ciso",
            "--reason",
            "kiosk image frozen until the vendor ships",
            "--expires",
            &expires,
        ])
        .expect_ok("accept risk");
    assert_eq!(action(&collector, id)["state"], "risk_accepted");
    let expired = wait_for_state(&collector, id, "reopened");
    let event = expired["events"]
        .as_array()
        .expect("events")
        .last()
        .expect("event")
        .clone();
    assert!(
        event["reason"]
            .as_str()
            .expect("reason")
            .starts_with("the risk acceptance expired"),
        "{event}"
    );
    let kinds: Vec<&str> = expired["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(
        kinds,
        [
            "opened",
            "acknowledged",
            "resolved",
            "verified",
            "reopened",
            "risk_accepted",
            "reopened"
        ]
    );

    // Status as of a past moment is what was true then, from stored evidence only.
    for (when, then) in [
        (&at_open, &status_at_open),
        (&at_verified, &status_at_verified),
    ] {
        let past = json(&collector, &["status", "--as-of", when, "--json"]);
        assert_eq!(verdicts(&past), verdicts(then), "as of {when}");
    }
    let empty = json(
        &collector,
        &["status", "--as-of", &before_enrolment, "--json"],
    );
    assert_eq!(empty["hosts"], 0, "no host was enrolled then");
    let later = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(2)).to_string();
    let silent = json(&collector, &["status", "--as-of", &later, "--json"]);
    let a516 = control(&silent, "iso27001-2022:A.8.16");
    assert_eq!(
        a516["status"], "fail",
        "an agent silent for two hours fails, it does not vanish"
    );
    assert!(
        a516["rules"][0]["findings"][0]["detail"]
            .as_str()
            .expect("detail")
            .starts_with("silent since"),
        "{a516}"
    );
    let listed_then = json(
        &collector,
        &["actions", "list", "--as-of", &at_open, "--json"],
    );
    assert_eq!(
        listed_then[0]["state"], "open",
        "the action as it stood then"
    );

    // KPIs: one deviation remediated, one high action open.
    let today = jiff::Timestamp::now().strftime("%Y-%m-%d").to_string();
    let kpi = json(
        &collector,
        &["report", "kpi", "--from", &today, "--to", &today, "--json"],
    );
    assert_eq!(kpi["remediation"]["verified"], 1, "{kpi}");
    assert!(kpi["remediation"]["p90_hours"].as_f64().is_some(), "{kpi}");
    assert_eq!(kpi["actions"]["high"]["open"], 1, "{kpi}");
    assert_eq!(kpi["freshness"]["hosts"], 1, "{kpi}");

    // A bad policy file is refused with its line and key; the collector keeps running under
    // the policy it had.
    std::fs::write(
        &policy_file,
        POLICY.replace("max_silence = \"1h\"", "max_silense = \"1h\""),
    )
    .expect("write");
    collector.signal("HUP");
    let refused = wait_for_some(30, "the bad policy to be refused", || {
        let log = collector.log();
        log.lines()
            .find(|l| l.contains("policy file refused"))
            .map(str::to_owned)
    });
    let line = line_of("max_silence");
    assert!(refused.contains(&format!("line {line}")), "{refused}");
    assert!(refused.contains("max_silense"), "{refused}");
    assert!(collector.is_running());
    let versions = collector
        .admin(&["policy", "list"])
        .expect_ok("policy list")
        .stdout;
    assert_eq!(versions.lines().count(), 1, "{versions}");
    agent
        .run_once_replaying(&patched, &["--config", config])
        .expect_ok("evidence is still taken");

    // A good change is a new version; results judged under the old one remain.
    std::fs::write(&policy_file, POLICY.replace("\"2s\"", "\"14d\"")).expect("write");
    collector.signal("HUP");
    wait_for_some(30, "policy version 2", || {
        let out = collector
            .admin(&["policy", "list"])
            .expect_ok("policy list")
            .stdout;
        (out.lines().count() == 2).then_some(())
    });
    let db = rusqlite::Connection::open(collector.database()).expect("open database");
    let versions: Vec<(i64, i64)> = wait_for_some(30, "results under version 2", || {
        let mut stmt = db
            .prepare("SELECT policy_version, COUNT(*) FROM rule_results GROUP BY policy_version ORDER BY policy_version")
            .expect("query");
        let rows: Vec<(i64, i64)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("read");
        (rows.len() == 2).then_some(rows)
    });
    assert_eq!(versions[0].0, 1);
    assert!(
        versions[0].1 >= 6,
        "results under version 1 remain: {versions:?}"
    );
    let history = json(
        &collector,
        &["results", "list", "--agent", &agent_id, "--json"],
    );
    let security: Vec<(i64, &str)> = history
        .as_array()
        .expect("results")
        .iter()
        .filter(|r| r["rule_id"] == "security-updates")
        .map(|r| {
            (
                r["policy_version"].as_i64().expect("version"),
                r["outcome"].as_str().expect("outcome"),
            )
        })
        .collect();
    assert_eq!(
        &security[..4],
        [(1, "pass"), (1, "fail"), (1, "pass"), (1, "fail")],
        "judged on arrival, late by the timer, patched, regressed: {security:?}"
    );
    assert!(
        collector.admin(&["verify"]).ok(),
        "evidence chains still verify"
    );

    // A restart with a broken file keeps the policy in force rather than stopping ingest.
    std::fs::write(&policy_file, "name = \"broken\"\n[[rule]]\n").expect("write");
    let address = collector.address.clone();
    let data_dir = collector.stop();
    let policy = policy_file.to_str().expect("utf-8");
    let mut restarted = Collector::start_with(&data_dir, &address, &["--policy", policy]);
    assert!(restarted.is_running());
    assert!(
        restarted.log().contains("keeping the policy in force"),
        "{}",
        restarted.log()
    );
    agent
        .run_once_replaying(&patched, &["--config", config])
        .expect_ok("evidence is still taken after the restart");
}

#[test]
fn policy_check_names_the_file_line_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        POLICY.replace("\"iso27001-2022:A.5.9\", ", "\"iso27001-2022:A.5.99\", "),
    )
    .expect("write");
    let collector = evident_tests::binary("evident-collector");
    let out = evident_tests::run(
        &collector,
        &["policy", "check", bad.to_str().expect("utf-8")],
    );
    assert!(!out.ok());
    let line = line_of("iso27001-2022:A.5.9");
    assert!(
        out.stderr.contains(&format!("bad.toml, line {line}")),
        "{out:?}"
    );
    assert!(out.stderr.contains("controls"), "{out:?}");
    assert!(out.stderr.contains("A.5.99"), "{out:?}");

    let good = dir.path().join("good.toml");
    std::fs::write(&good, POLICY).expect("write");
    let out = evident_tests::run(
        &collector,
        &["policy", "check", good.to_str().expect("utf-8")],
    );
    assert!(out.ok(), "{out:?}");
    assert!(out.stdout.contains("3 rule(s)"), "{out:?}");
    let default = evident_tests::run(&collector, &["policy", "default"]).expect_ok("default");
    let shipped = dir.path().join("default.toml");
    std::fs::write(&shipped, default.stdout).expect("write");
    evident_tests::run(
        &collector,
        &["policy", "check", shipped.to_str().expect("utf-8")],
    )
    .expect_ok("the default policy checks");

    // serve refuses to start on a bad policy rather than judging by a broken one.
    let out = evident_tests::run(
        &collector,
        &[
            "serve",
            "--data-dir",
            dir.path().join("c").to_str().expect("utf-8"),
            "--grpc-listen",
            "127.0.0.1:0",
            "--policy",
            bad.to_str().expect("utf-8"),
        ],
    );
    assert!(!out.ok());
    assert!(out.stderr.contains("policy refused"), "{out:?}");
}
