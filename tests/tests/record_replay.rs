//! `check --record` then `check --replay` on the recording gives the same evidence.

use evident_tests::{binary, run};

fn facts(json: &str) -> serde_json::Value {
    let mut value: serde_json::Value =
        serde_json::from_str(json).expect("check --json prints JSON");
    for observation in value.as_array_mut().expect("a list of observations") {
        // The time of the observation is the only thing that may differ.
        observation
            .as_object_mut()
            .expect("observation object")
            .remove("observed_at_unix_ms");
    }
    value
}

#[test]
fn replaying_a_recording_reproduces_the_evidence() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("recording");
    let dir = dir.to_str().expect("path");
    let agent = binary("evident-agent");
    let live = run(&agent, &["check", "--json", "--record", dir]).expect_ok("check --record");
    let replayed = run(&agent, &["check", "--json", "--replay", dir]).expect_ok("check --replay");
    let live = facts(&live.stdout);
    assert_eq!(live, facts(&replayed.stdout));
    assert!(
        live[0]["outcome"]["inventory"]["hostname"].is_string(),
        "{live:#}"
    );
    assert!(std::path::Path::new(dir).join("host.toml").exists());
    assert!(
        std::path::Path::new(dir)
            .join("files/etc/os-release")
            .exists()
    );

    let text = run(&agent, &["check", "--replay", dir]).expect_ok("check text");
    assert!(
        text.stdout.contains("inventory") && text.stdout.contains("hostname"),
        "{text:?}"
    );

    let missing = run(
        &agent,
        &[
            "check",
            "--replay",
            tmp.path().join("nope").to_str().expect("p"),
        ],
    );
    assert!(!missing.ok(), "{missing:?}");
}
