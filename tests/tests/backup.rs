//! Backup evidence end to end, with real restic and borg repositories made on this machine
//! (scripts/test installs both from Debian's packages): the agent streams the truth about them,
//! runs the integrity check and the restore test, tells a corrupt pack, a wrong password and a
//! missing repository apart, and never lets a password out.

use std::path::{Path, PathBuf};
use std::process::Command;

use evident_tests::{Agent, Collector, binary, run};

const RESTIC_PASSWORD: &str = "restic-pw-Zq83vN1x";
const BORG_PASSPHRASE: &str = "borg-pass-Kd02LmQ7";

/// Source files, two repositories with real backups of them, and their password files.
struct Lab {
    dir: tempfile::TempDir,
}

impl Lab {
    fn new() -> Lab {
        let lab = Lab {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        let src = lab.path("src");
        std::fs::create_dir_all(src.join("docs")).expect("mkdir");
        for (name, size) in [("a.bin", 1500), ("b.bin", 2500), ("docs/c.txt", 700)] {
            let bytes: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
            std::fs::write(src.join(name), bytes).expect("write source");
        }
        std::fs::write(lab.path("restic.pass"), RESTIC_PASSWORD).expect("write");
        std::fs::write(lab.path("borg.pass"), BORG_PASSPHRASE).expect("write");
        lab.restic(&["init"]);
        lab.restic(&[
            "backup",
            "--host",
            "lab1",
            "--tag",
            "daily",
            src.to_str().expect("p"),
        ]);
        lab.restic(&[
            "backup",
            "--host",
            "lab1",
            "--tag",
            "daily",
            src.to_str().expect("p"),
        ]);
        lab.restic(&["backup", "--host", "other", src.to_str().expect("p")]);
        lab.borg(&["init", "--encryption", "repokey"], None);
        lab.borg(&["create"], Some(("lab1-first", &src)));
        lab.borg(&["create"], Some(("lab1-second", &src)));
        lab
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn s(&self, name: &str) -> String {
        self.path(name).to_str().expect("utf-8").to_owned()
    }

    fn restic(&self, args: &[&str]) -> String {
        let out = Command::new("restic")
            .args([
                "--repo",
                &self.s("restic-repo"),
                "--password-file",
                &self.s("restic.pass"),
            ])
            .args(args)
            .env("RESTIC_CACHE_DIR", self.path("restic-cache"))
            .output()
            .expect("restic runs (scripts/test installs it)");
        assert!(out.status.success(), "restic {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn borg(&self, args: &[&str], archive: Option<(&str, &Path)>) {
        let repo = self.s("borg-repo");
        let mut command = Command::new("borg");
        command
            .args(args)
            .env("BORG_PASSCOMMAND", format!("cat {}", self.s("borg.pass")));
        match archive {
            Some((name, src)) => command.arg(format!("{repo}::{name}")).arg(src),
            None => command.arg(&repo),
        };
        let out = command
            .output()
            .expect("borg runs (scripts/test installs it)");
        assert!(out.status.success(), "borg {args:?}: {out:?}");
    }

    /// An agent config declaring both repositories (plus whatever `extra` adds).
    fn config(&self, extra: &str) -> PathBuf {
        let text = format!(
            "[[backup.restic]]\nname = \"lab-restic\"\nrepository = {:?}\npassword_file = {:?}\nhost = \"lab1\"\ntags = [\"daily\"]\ncheck_read_data_subset = \"100%\"\n\n\
             [[backup.borg]]\nname = \"lab-borg\"\nrepository = {:?}\npassphrase_file = {:?}\nhost = \"lab1\"\n{extra}",
            self.s("restic-repo"),
            self.s("restic.pass"),
            self.s("borg-repo"),
            self.s("borg.pass"),
        );
        let path = self.path("agent.toml");
        std::fs::write(&path, text).expect("write config");
        path
    }
}

fn source<'a>(facts: &'a serde_json::Value, tool: &str) -> &'a serde_json::Value {
    facts["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .find(|s| s["tool"] == tool)
        .unwrap_or_else(|| panic!("no {tool} source in {facts:#}"))
}

/// `evident-agent check --json --config FILE`: the backup facts.
fn check(config: &Path) -> serde_json::Value {
    let out = run(
        &binary("evident-agent"),
        &["check", "--json", "--config", config.to_str().expect("p")],
    )
    .expect_ok("check --config");
    let observations: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    observations
        .as_array()
        .expect("list")
        .iter()
        .find(|o| o["check"] == "backup")
        .map(|o| o["outcome"]["backup"].clone())
        .expect("backup observation")
}

fn all_text_under(dir: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            text.push_str(&all_text_under(&path));
        } else {
            text.push_str(&String::from_utf8_lossy(
                &std::fs::read(&path).expect("read"),
            ));
        }
    }
    text
}

#[test]
fn real_restic_and_borg_repositories_reach_the_collector_with_a_passed_restore_test() {
    let lab = Lab::new();
    let config = lab.config("");
    let tmp = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(&tmp.path().join("collector"));
    let agent = Agent::new(&tmp.path().join("agent"));
    let agent_id = agent.enroll_with(&collector);
    let state = agent.state_dir.to_str().expect("p").to_owned();
    let cycle = || {
        run(
            &binary("evident-agent"),
            &[
                "run",
                "--once",
                "--config",
                config.to_str().expect("p"),
                "--state-dir",
                &state,
            ],
        )
        .expect_ok("run --once with backups")
    };
    let first = cycle();

    // What restic itself says about the lab1/daily snapshots.
    let snapshots: serde_json::Value = serde_json::from_str(&lab.restic(&[
        "snapshots",
        "--json",
        "--host",
        "lab1",
        "--tag",
        "daily",
    ]))
    .expect("json");
    let newest = snapshots
        .as_array()
        .expect("list")
        .last()
        .expect("one")
        .clone();
    let newest_ms = newest["time"]
        .as_str()
        .expect("time")
        .parse::<jiff::Timestamp>()
        .expect("rfc3339")
        .as_millisecond();

    let evidence = collector.evidence(Some(&agent_id));
    let item = evidence
        .iter()
        .find(|e| e["check"] == "backup")
        .unwrap_or_else(|| panic!("no backup evidence in {evidence:#?}"));
    let facts = &item["item"]["outcome"]["backup"];
    let restic = source(facts, "restic");
    assert_eq!(restic["name"], "lab-restic");
    assert_eq!(restic["destination"], lab.s("restic-repo"));
    assert_eq!(restic["error"], serde_json::Value::Null, "{restic:#}");
    assert_eq!(
        restic["snapshot_count"], 2,
        "the host/tag filter leaves out the third"
    );
    assert_eq!(restic["last_success_unix_ms"], newest_ms);
    assert_eq!(restic["paths"], serde_json::json!([lab.s("src")]));
    assert!(restic["repository_size_bytes"].as_u64().expect("size") > 0);
    assert_eq!(restic["integrity_check"]["passed"], true, "{restic:#}");
    assert_eq!(restic["restore_test"]["passed"], true, "{restic:#}");
    let detail = restic["restore_test"]["detail"].as_str().expect("detail");
    assert!(
        detail.starts_with("3 files (4700 bytes) restored"),
        "{detail}"
    );
    assert!(
        detail.contains("3 matched their unchanged source by SHA-256"),
        "{detail}"
    );

    let borg = source(facts, "borg");
    assert_eq!(borg["error"], serde_json::Value::Null, "{borg:#}");
    assert_eq!(borg["snapshot_count"], 2);
    assert_eq!(borg["paths"], serde_json::json!([lab.s("src")]));
    assert!(borg["last_success_unix_ms"].as_i64().expect("time") > newest_ms - 600_000);
    assert_eq!(borg["integrity_check"]["passed"], true, "{borg:#}");
    assert_eq!(borg["restore_test"]["passed"], true, "{borg:#}");

    // The next cycle reports the same integrity check and restore test: they run on their own
    // (weekly) interval, remembered in the state directory.
    cycle();
    let evidence = collector.evidence(Some(&agent_id));
    let latest = evidence
        .iter()
        .rev()
        .find(|e| e["check"] == "backup")
        .expect("second backup item");
    let again = source(&latest["item"]["outcome"]["backup"], "restic");
    assert_eq!(again["restore_test"], restic["restore_test"]);
    assert_eq!(again["integrity_check"], restic["integrity_check"]);

    let table = collector
        .admin(&["evidence", "list"])
        .expect_ok("evidence list");
    assert!(
        table.stdout.contains("restic lab-restic: last success")
            && table.stdout.contains("restore test passed"),
        "{table:?}"
    );
    collector.admin(&["verify"]).expect_ok("verify");

    // No password anywhere: the agent's output and state (spool, memory), the collector's
    // database and log.
    let everywhere = format!(
        "{first:?}{}{}{}",
        all_text_under(&agent.state_dir),
        all_text_under(&collector.data_dir),
        collector.log()
    );
    for secret in [RESTIC_PASSWORD, BORG_PASSPHRASE] {
        assert!(!everywhere.contains(secret), "{secret} leaked");
    }
}

#[test]
fn a_corrupt_pack_fails_the_restore_test_and_the_check() {
    let lab = Lab::new();
    // Flip bytes in the middle of every data pack.
    for dir in std::fs::read_dir(lab.path("restic-repo/data")).expect("data") {
        for pack in std::fs::read_dir(dir.expect("dir").path()).expect("packs") {
            let path = pack.expect("pack").path();
            let mut bytes = std::fs::read(&path).expect("read pack");
            let middle = bytes.len() / 2;
            for byte in &mut bytes[middle.saturating_sub(8)..middle] {
                *byte ^= 0xff;
            }
            let mut permissions = std::fs::metadata(&path).expect("meta").permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            permissions.set_readonly(false);
            std::fs::set_permissions(&path, permissions).expect("chmod");
            std::fs::write(&path, bytes).expect("write pack");
        }
    }
    let facts = check(&lab.config(""));
    let restic = source(&facts, "restic");
    assert_eq!(
        restic["error"],
        serde_json::Value::Null,
        "listing still works: {restic:#}"
    );
    assert_eq!(restic["restore_test"]["passed"], false, "{restic:#}");
    let detail = restic["restore_test"]["detail"].as_str().expect("detail");
    assert!(detail.contains("failed"), "{detail}");
    assert_eq!(restic["integrity_check"]["passed"], false, "{restic:#}");
    // The untouched borg repository still passes.
    assert_eq!(source(&facts, "borg")["restore_test"]["passed"], true);
}

#[test]
fn wrong_passwords_and_missing_repositories_are_named() {
    let lab = Lab::new();
    std::fs::write(lab.path("wrong.pass"), "not-the-password").expect("write");
    let text = format!(
        "[[backup.restic]]\nname = \"wrong\"\nrepository = {:?}\npassword_file = {:?}\n\
         [[backup.restic]]\nname = \"missing\"\nrepository = {:?}\npassword_file = {:?}\n\
         [[backup.borg]]\nname = \"wrong\"\nrepository = {:?}\npassphrase_file = {:?}\n\
         [[backup.borg]]\nname = \"missing\"\nrepository = {:?}\npassphrase_file = {:?}\n",
        lab.s("restic-repo"),
        lab.s("wrong.pass"),
        lab.s("no-such-restic-repo"),
        lab.s("restic.pass"),
        lab.s("borg-repo"),
        lab.s("wrong.pass"),
        lab.s("no-such-borg-repo"),
        lab.s("borg.pass"),
    );
    let config = lab.path("errors.toml");
    std::fs::write(&config, text).expect("write");
    let facts = check(&config);
    let kinds: Vec<(String, String, String)> = facts["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .map(|s| {
            (
                s["tool"].as_str().unwrap_or_default().to_owned(),
                s["name"].as_str().unwrap_or_default().to_owned(),
                s["error"]["kind"].as_str().unwrap_or("none").to_owned(),
            )
        })
        .collect();
    let expect =
        |tool: &str, name: &str, kind: &str| (tool.to_owned(), name.to_owned(), kind.to_owned());
    assert_eq!(
        kinds,
        vec![
            expect("restic", "wrong", "wrong_password"),
            expect("restic", "missing", "repository_missing"),
            expect("borg", "wrong", "wrong_password"),
            expect("borg", "missing", "repository_missing"),
        ],
        "{facts:#}"
    );
    for source in facts["sources"].as_array().expect("sources") {
        assert_eq!(
            source["snapshot_count"],
            serde_json::Value::Null,
            "never 'no backups'"
        );
    }
}

#[test]
fn a_bad_backup_config_names_the_key_and_the_agent_does_not_start() {
    let lab = Lab::new();
    let config = lab.path("bad.toml");
    std::fs::write(
        &config,
        "[[backup.restic]]\nrepository = \"/srv/restic\"\npassword_file = \"/nonexistent/restic.pass\"\n",
    )
    .expect("write");
    let out = run(
        &binary("evident-agent"),
        &["check", "--config", config.to_str().expect("p")],
    );
    assert!(!out.ok(), "{out:?}");
    assert!(
        out.stderr
            .contains("backup.restic[0].password_file: /nonexistent/restic.pass cannot be read"),
        "{out:?}"
    );
}
