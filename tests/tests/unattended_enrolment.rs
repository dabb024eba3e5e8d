//! Unattended enrolment for mass deployment: `evident-agent run` with an `[enrollment]` config
//! section enrols by itself from a token a deployment tool placed, deletes the token, and keeps
//! retrying through a collector outage or a refused token.

use std::path::Path;
use std::process::{Command, Stdio};

use evident_tests::{
    Agent, AgentDaemon, Collector, ITEMS_PER_CYCLE, Run, binary, run, unattended_config, wait_for,
};

fn write_token(path: &Path, token: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("create token directory");
    std::fs::write(path, format!("{token}\n")).expect("write token file");
}

fn agent_ids(collector: &Collector) -> Vec<String> {
    let listed = collector
        .admin(&["agent", "list", "--json"])
        .expect_ok("agent list");
    let agents: Vec<serde_json::Value> = serde_json::from_str(&listed.stdout).expect("json");
    agents
        .iter()
        .map(|a| a["agent_id"].as_str().expect("agent_id").to_owned())
        .collect()
}

/// `run --once --config FILE` with `env` added.
fn run_once(config: &Path, env: &[(&str, &str)]) -> Run {
    let output = Command::new(binary("evident-agent"))
        .args(["run", "--once", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run evident-agent");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[test]
fn a_placed_token_enrols_the_agent_which_reports_and_the_token_file_is_gone() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(&tmp.path().join("collector"));
    let token = collector.token(&[]);
    let agent = Agent::new(&tmp.path().join("agent"));
    // Where a deployment tool puts it by default: the agent's state directory.
    let token_file = agent.state_dir.join("enrollment-token");
    write_token(&token_file, &token);
    let config = unattended_config(&agent, &collector, None);

    let daemon = AgentDaemon::start(&config, &[]);
    wait_for(
        "the unattended agent's first cycle at the collector",
        || collector.evidence(None).len() == ITEMS_PER_CYCLE,
    );
    assert!(!token_file.exists(), "the used token file is deleted");
    let ids = agent_ids(&collector);
    assert_eq!(ids.len(), 1, "{ids:?}");
    let enrollment =
        std::fs::read_to_string(agent.state_dir.join("enrollment.toml")).expect("enrollment");
    assert!(enrollment.contains(&ids[0]), "{enrollment}");
    assert!(agent.spool_files().is_empty(), "everything delivered");

    let log = daemon.log();
    assert!(log.contains("enrolled unattended"), "{log}");
    assert!(daemon.terminate(), "agent exits 0 on SIGTERM");
    assert!(!log.contains(&token[4..]), "token in the agent log: {log}");
    assert!(
        !collector.log().contains(&token[4..]),
        "token in the collector log"
    );

    // A restart finds the identity and does not enrol again.
    let again = run(
        &binary("evident-agent"),
        &["run", "--once", "--config", config.to_str().expect("path")],
    )
    .expect_ok("second start");
    assert!(!again.stderr.contains("enrolling"), "{again:?}");
    assert_eq!(agent_ids(&collector), ids);
}

#[test]
fn an_agent_started_before_the_collector_keeps_trying_and_enrols_when_it_comes_up() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(&tmp.path().join("collector"));
    let token = collector.token(&[]);
    let agent = Agent::new(&tmp.path().join("agent"));
    // A token file of the deployment tool's choosing, outside the state directory.
    let token_file = tmp.path().join("etc/enrollment-token");
    write_token(&token_file, &token);
    let config = unattended_config(&agent, &collector, Some(&token_file));
    let address = collector.address.clone();
    let data_dir = collector.stop();

    let daemon = AgentDaemon::start(&config, &[]);
    wait_for("a failed enrolment attempt", || {
        daemon
            .log()
            .contains("unattended enrolment failed; retrying")
    });
    let log = daemon.log();
    assert!(
        log.contains(&format!(
            "check that the collector is reachable at https://{address}"
        )),
        "{log}"
    );
    assert!(token_file.exists(), "the token is kept until it was used");

    let collector = Collector::start_on(&data_dir, &address);
    wait_for(
        "the agent's first cycle after the collector came up",
        || collector.evidence(None).len() == ITEMS_PER_CYCLE,
    );
    assert!(!token_file.exists(), "the used token file is deleted");
    assert_eq!(agent_ids(&collector).len(), 1);
    let log = daemon.log();
    assert!(daemon.terminate(), "agent exits 0 on SIGTERM");
    assert!(!log.contains(&token[4..]), "token in the agent log: {log}");
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn a_used_up_rollout_token_is_named_and_retried_until_the_deployment_tool_replaces_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(&tmp.path().join("collector"));
    // One token for a rollout of two machines.
    let rollout = collector.token(&["--uses", "2", "--ttl", "7d"]);

    // The first machine gets the token as a file, the second through the environment.
    let first = Agent::new(&tmp.path().join("first"));
    let first_token = first.state_dir.join("enrollment-token");
    write_token(&first_token, &rollout);
    run_once(&unattended_config(&first, &collector, None), &[]).expect_ok("first machine");
    assert!(!first_token.exists());
    let second = Agent::new(&tmp.path().join("second"));
    run_once(
        &unattended_config(&second, &collector, None),
        &[("EVIDENT_ENROLLMENT_TOKEN", &rollout)],
    )
    .expect_ok("second machine");
    assert_eq!(agent_ids(&collector).len(), 2);

    // A third machine with the same token: a clear refusal, no enrolment, the file kept.
    let third = Agent::new(&tmp.path().join("third"));
    let third_token = third.state_dir.join("enrollment-token");
    write_token(&third_token, &rollout);
    let config = unattended_config(&third, &collector, None);
    let refused = run_once(&config, &[]);
    assert_eq!(refused.code, Some(2), "{refused:?}");
    assert!(
        refused.stderr.contains("already used (2 of 2 uses)")
            && refused
                .stderr
                .contains(&format!("write a new token to {}", third_token.display())),
        "{refused:?}"
    );
    assert!(!refused.stderr.contains("panicked"), "{refused:?}");
    assert!(!refused.stderr.contains(&rollout[4..]), "{refused:?}");
    assert!(third_token.exists());
    assert!(!third.state_dir.join("enrollment.toml").exists());

    // As a service it keeps retrying; once the deployment tool places a new token, it enrols.
    let daemon = AgentDaemon::start(&config, &[]);
    wait_for("a refusal naming the used-up token", || {
        daemon.log().contains("already used (2 of 2 uses)")
    });
    write_token(&third_token, &collector.token(&[]));
    wait_for("the third machine's evidence", || {
        agent_ids(&collector).len() == 3 && collector.evidence(None).len() == 3 * ITEMS_PER_CYCLE
    });
    assert!(!third_token.exists());
    assert!(daemon.terminate(), "agent exits 0 on SIGTERM");
}
