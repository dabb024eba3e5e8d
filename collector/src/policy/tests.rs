use super::*;

const GOOD: &str = r#"name = "test"

[[group]]
name = "servers"
hostname_patterns = ["srv-*"]

[[rule]]
id = "security-updates"
title = "Security updates within 14 days"
severity = "high"
check = "patch"
condition = "security_updates_pending"
max_pending_age = "14d"
applies_to = { os = ["linux"], groups = ["servers"] }
controls = ["iso27001-2022:A.8.8", "cis-controls-v8:7.3"]
"#;

fn error(text: &str) -> PolicyError {
    Policy::parse(text, "policy.toml").expect_err("refused")
}

#[test]
fn the_default_policy_is_valid_and_maps_every_control_the_checks_serve() {
    let policy = Policy::default_policy().expect("the shipped policy validates");
    let controls = policy.controls();
    for control in [
        "iso27001-2022:A.5.9",
        "iso27001-2022:A.8.1",
        "iso27001-2022:A.8.8",
        "iso27001-2022:A.8.13",
        "iso27001-2022:A.8.16",
        "iso27001-2022:A.8.24",
    ] {
        assert!(controls.contains(&control.to_owned()), "{control}");
    }
    assert!(
        controls.iter().any(|c| c.starts_with("cis-controls-v8:")),
        "the same rules map to a second framework"
    );
    assert_eq!(controls[0], "iso27001-2022:A.5.9", "catalogue order");
}

#[test]
fn a_valid_policy_keeps_thresholds_scopes_and_controls() {
    let policy = Policy::parse(GOOD, "policy.toml").expect("valid");
    let rule = &policy.rules[0];
    assert_eq!(
        rule.condition,
        Condition::SecurityUpdatesPending {
            max_pending_age_ms: 14 * 86_400_000
        }
    );
    assert_eq!(rule.scope.os, ["linux"]);
    assert_eq!(policy.groups_of("agt-1", "srv-db1"), ["servers"]);
    assert!(policy.groups_of("agt-1", "laptop-7").is_empty());
    assert_eq!(policy.due_days(Severity::Critical), 7);
    assert_eq!(
        Policy::parse(GOOD, "x").expect("valid").sha256,
        policy.sha256
    );
}

#[test]
fn an_unknown_key_is_refused_with_its_line() {
    let e = error(&GOOD.replace("severity = \"high\"", "severity = \"high\"\nseverty = 1"));
    assert_eq!(e.line, 11, "{e}");
    assert_eq!(e.key, "severty", "{e}");
    assert!(
        e.to_string()
            .starts_with("policy.toml, line 11: severty: unknown field"),
        "{e}"
    );
}

#[test]
fn a_rule_that_names_no_control_is_refused() {
    let e = error(&GOOD.replace(
        "controls = [\"iso27001-2022:A.8.8\", \"cis-controls-v8:7.3\"]",
        "controls = []",
    ));
    assert_eq!(e.line, 15, "{e}");
    assert!(e.key.ends_with(".controls"), "{e}");
    assert!(e.message.contains("at least one control"), "{e}");
    let missing = error(&GOOD.replace(
        "controls = [\"iso27001-2022:A.8.8\", \"cis-controls-v8:7.3\"]",
        "",
    ));
    assert!(missing.key.ends_with(".controls"), "{missing}");
    assert_eq!(missing.line, 8, "points at the rule's id: {missing}");
}

#[test]
fn an_unknown_control_or_framework_is_refused() {
    let e = error(&GOOD.replace("iso27001-2022:A.8.8", "iso27001-2022:A.8.99"));
    assert_eq!(e.line, 15);
    assert!(e.message.contains("A.8.99"), "{e}");
    let e = error(&GOOD.replace("cis-controls-v8:7.3", "soc2:CC7.1"));
    assert!(e.message.contains("unknown framework"), "{e}");
}

#[test]
fn a_bad_threshold_is_refused_with_its_key() {
    let e = error(&GOOD.replace("\"14d\"", "\"fortnight\""));
    assert_eq!(e.line, 13, "{e}");
    assert!(e.key.ends_with("max_pending_age"), "{e}");
    assert!(e.message.contains("not a duration"), "{e}");
    let e = error(&GOOD.replace("\"14d\"", "\"20years\""));
    assert!(e.message.contains("ten years"), "{e}");
    let e = error(&GOOD.replace("max_pending_age = \"14d\"", "max_silence = \"14d\""));
    assert!(e.key.ends_with("max_silence"), "{e}");
    assert!(e.message.contains("takes max_pending_age"), "{e}");
    let e = error(&GOOD.replace("max_pending_age = \"14d\"\n", ""));
    assert!(e.key.ends_with("max_pending_age"), "{e}");
    assert!(e.message.contains("is missing"), "{e}");
}

#[test]
fn a_duplicate_rule_id_is_refused() {
    let rule = &GOOD[GOOD.find("[[rule]]").expect("rule")..];
    let e = error(&format!("{GOOD}\n{rule}"));
    assert_eq!(e.line, 18, "the second rule's id: {e}");
    assert!(e.message.contains("used twice"), "{e}");
}

#[test]
fn a_condition_must_read_its_check_and_exist() {
    let e = error(&GOOD.replace("check = \"patch\"", "check = \"backup\""));
    assert!(e.message.contains("reads patch evidence"), "{e}");
    let e = error(&GOOD.replace("\"security_updates_pending\"", "\"vibes\""));
    assert!(e.message.contains("not a condition"), "{e}");
    let e = error(&GOOD.replace("\"high\"", "\"urgent\""));
    assert!(e.key.ends_with("severity"), "{e}");
}

#[test]
fn scopes_name_known_os_families_and_defined_groups() {
    let e = error(&GOOD.replace("[\"linux\"]", "[\"beos\"]"));
    assert!(e.key.ends_with("applies_to.os"), "{e}");
    let e = error(&GOOD.replace("groups = [\"servers\"]", "groups = [\"finance\"]"));
    assert!(e.message.contains("no group \"finance\""), "{e}");
    let e = error(&GOOD.replace(
        "[[group]]\nname = \"servers\"",
        "[[group]]\nname = \"servers\"\n[[group]]\nname = \"servers\"\nhosts = [\"a\"]",
    ));
    assert!(e.to_string().contains("servers"), "{e}");
}

#[test]
fn a_syntax_error_names_its_line() {
    let e = error("name = \"x\"\n[[rule]\n");
    assert_eq!(e.line, 2, "{e}");
    let e = error("name = \"x\"\n");
    assert!(e.message.contains("no rules"), "{e}");
}
