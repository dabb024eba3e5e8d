use std::path::{Path, PathBuf};

use super::*;
use crate::host::Host;

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/checks/inventory/testdata")
        .join(name)
}

async fn replay(name: &str) -> Result<InventoryFacts, CheckError> {
    let host = Host::replay(&testdata(name)).expect("recording loads");
    collect(&host).await
}

fn unreadable(fact: &str, reason: &str) -> UnreadableFact {
    UnreadableFact {
        fact: fact.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Every absent fact is explained, and no present fact is.
fn assert_no_silent_gaps(facts: &InventoryFacts) {
    for fact in Fact::ALL {
        let explained = facts.unreadable.iter().any(|u| u.fact == fact.as_str());
        assert_eq!(
            facts.is_present(fact),
            !explained,
            "{}: present and explained must differ",
            fact.as_str()
        );
    }
}

fn some(text: &str) -> Option<String> {
    Some(text.to_owned())
}

#[tokio::test]
async fn replay_of_a_debian_laptop() {
    let facts = replay("replay-linux-debian12").await.expect("collects");
    assert_eq!(
        facts,
        InventoryFacts {
            hostname: some("thinkpad-jdoe"),
            os_family: OsFamily::Linux,
            os_name: some("Debian GNU/Linux"),
            os_version: some("12 (bookworm)"),
            os_build: None,
            kernel_version: some("6.1.0-13-amd64"),
            architecture: some("x86_64"),
            machine_id: some("8f1c2b7e4a9d4e0f9b3a6c5d2e1f0a9b"),
            hardware_vendor: some("LENOVO"),
            hardware_model: some("20XW00GKUS"),
            hardware_serial: None,
            boot_time_unix_ms: Some(1_700_000_000_000),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            tags: Vec::new(),
            unreadable: vec![
                unreadable("os_build", "BUILD_ID not set in /etc/os-release"),
                unreadable(
                    "hardware_serial",
                    "permission denied: /sys/class/dmi/id/product_serial"
                ),
            ],
        }
    );
    assert_no_silent_gaps(&facts);
}

#[tokio::test]
async fn replay_of_a_macbook() {
    let facts = replay("replay-macos-sonoma").await.expect("collects");
    assert_eq!(
        facts,
        InventoryFacts {
            hostname: some("Jane’s MacBook Pro"),
            os_family: OsFamily::Macos,
            os_name: some("macOS"),
            os_version: some("14.1.1"),
            os_build: some("23B81"),
            kernel_version: some("23.1.0"),
            architecture: some("arm64"),
            machine_id: some("1AB2345C-03E4-57D4-A375-1234D48DE123"),
            hardware_vendor: some("Apple Inc."),
            hardware_model: some("MacBookPro17,1"),
            hardware_serial: some("A01BC3QFQ05D"),
            boot_time_unix_ms: Some(1_700_000_000_123),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            tags: Vec::new(),
            unreadable: vec![],
        }
    );
}

#[tokio::test]
async fn replay_of_a_windows_laptop_on_any_os() {
    let facts = replay("replay-windows11").await.expect("collects");
    assert_eq!(
        facts,
        InventoryFacts {
            hostname: some("DESKTOP-7K3J2QF"),
            os_family: OsFamily::Windows,
            os_name: some("Microsoft Windows 11 Pro"),
            os_version: some("10.0.22631"),
            os_build: some("22631"),
            kernel_version: some("10.0.22631"),
            architecture: some("AMD64"),
            machine_id: some("b7e3f2a1-4c5d-4e6f-8a9b-0c1d2e3f4a5b"),
            hardware_vendor: some("Dell Inc."),
            hardware_model: some("Latitude 7440"),
            hardware_serial: some("7XK2QZ3"),
            boot_time_unix_ms: Some(1_700_032_400_500),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            tags: Vec::new(),
            unreadable: vec![],
        }
    );
}

fn write(dir: &Path, relative: &str, text: &str) {
    let path = dir.join(relative);
    std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

#[tokio::test]
async fn an_empty_recording_is_an_error_naming_what_was_missing() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "host.toml", "os_family = \"linux\"\n");
    let host = Host::replay(dir.path()).expect("loads");
    let error = collect(&host).await.expect_err("nothing readable");
    assert_eq!(
        error.reason,
        "inventory of this linux host failed: neither the hostname nor the os name could be read"
    );
    let source = error.source.expect("has the causes");
    assert!(
        source.contains(&format!(
            "hostname: not in the recording {}: /proc/sys/kernel/hostname",
            dir.path().display()
        )),
        "{source}"
    );
    assert!(source.contains("uname -m"), "{source}");
}

#[tokio::test]
async fn missing_mac_tools_make_an_error_that_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    write(d, "host.toml", "os_family = \"macos\"\n");
    for (i, argv) in [
        r#"["sw_vers"]"#,
        r#"["scutil", "--get", "ComputerName"]"#,
        r#"["hostname"]"#,
    ]
    .iter()
    .enumerate()
    {
        write(
            d,
            &format!("commands/{i}.toml"),
            &format!("argv = {argv}\nerror = \"not_found\"\n"),
        );
    }
    let error = collect(&Host::replay(d).expect("loads"))
        .await
        .expect_err("nothing readable");
    let source = error.source.expect("has the causes");
    assert!(
        source.contains("os_name: program not found: sw_vers (is it installed?)"),
        "{source}"
    );
    assert!(
        source.contains(
            "hostname: program not found: scutil (is it installed?); program not found: hostname (is it installed?)"
        ),
        "{source}"
    );
}

#[tokio::test]
async fn a_hostname_alone_is_enough_for_evidence() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    write(d, "host.toml", "os_family = \"linux\"\n");
    write(d, "files/proc/sys/kernel/hostname", "lonely\n");
    let facts = collect(&Host::replay(d).expect("loads"))
        .await
        .expect("collects");
    assert_eq!(facts.hostname.as_deref(), Some("lonely"));
    assert_eq!(facts.unreadable.len(), 10);
    assert_no_silent_gaps(&facts);
}

#[tokio::test]
async fn a_failing_powershell_leaves_every_fact_explained() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    write(d, "host.toml", "os_family = \"windows\"\n");
    let argv: Vec<String> = std::iter::once(windows::POWERSHELL)
        .chain(windows::ARGS.iter().copied())
        .map(str::to_owned)
        .collect();
    let command = toml::to_string(&toml::toml! { status = 1 }).expect("toml")
        + &format!("argv = {}\n", toml::Value::try_from(&argv).expect("toml"));
    write(d, "commands/0001.toml", &command);
    write(
        d,
        "commands/0001.stderr",
        "powershell.exe : This program is blocked by group policy.\r\n",
    );
    let error = collect(&Host::replay(d).expect("loads"))
        .await
        .expect_err("nothing readable");
    let source = error.source.expect("has the causes");
    assert!(
        source.contains(
            "exited with status 1: powershell.exe : This program is blocked by group policy."
        ),
        "{source}"
    );
    assert!(source.contains("boot_time_unix_ms: "), "{source}");
}

#[test]
fn placeholders_are_not_hardware_facts() {
    for raw in [
        "To Be Filled By O.E.M.\n",
        "Default string\n",
        "System Serial Number\n",
        "0123456789\n",
        "00000000\n",
        "Not Specified\n",
    ] {
        let reason = hardware_value(raw, "/sys/class/dmi/id/product_serial").expect_err(raw);
        assert!(reason.starts_with("placeholder value"), "{reason}");
        assert!(
            reason.ends_with("in /sys/class/dmi/id/product_serial"),
            "{reason}"
        );
    }
    let blank = hardware_value("        \n", "Win32_BIOS.SerialNumber").expect_err("blank");
    assert!(blank.starts_with("placeholder value"), "{blank}");
    assert_eq!(
        hardware_value("  PF2ABCDE \n", "x"),
        Ok("PF2ABCDE".to_owned())
    );
    assert_eq!(
        hardware_value(
            "VMware-56 4d 12 34 56 78 9a bc-de f0 12 34 56 78 9a bc",
            "x"
        ),
        Ok("VMware-56 4d 12 34 56 78 9a bc-de f0 12 34 56 78 9a bc".to_owned())
    );
}

/// Recording this machine and replaying the recording gives the very same facts.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn record_then_replay_reproduces_the_live_facts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let recording = dir.path().join("rec");
    let host = Host::recording(&recording).expect("records");
    let live = collect(&host).await;
    host.finish().expect("recording flushes");
    let replayed = collect(&Host::replay(&recording).expect("loads")).await;
    assert_eq!(replayed, live);
    let live = live.expect("this linux machine has a hostname");
    assert_eq!(live.os_family, OsFamily::Linux);
    assert_no_silent_gaps(&live);
}

/// The worked example of `docs/record-replay.md`, kept true.
#[tokio::test]
async fn the_documented_hand_written_example_replays_as_described() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    write(
        d,
        "host.toml",
        "os_family = \"linux\"\nnote = \"pasted by the customer, ticket 1234\"\n",
    );
    write(d, "files/proc/sys/kernel/hostname", "db-07\n");
    write(
        d,
        "files/etc/os-release",
        "NAME=\"Rocky Linux\"\nVERSION=\"9.3 (Blue Onyx)\"\nID=\"rocky\"\nVERSION_ID=\"9.3\"\n",
    );
    write(
        d,
        "commands/0001.toml",
        "argv = [\"uname\", \"-m\"]\nstatus = 0\n",
    );
    write(d, "commands/0001.stdout", "aarch64\n");
    write(
        d,
        "files.toml",
        "[[missing]]\npath = \"/sys/class/dmi/id/product_serial\"\nerror = \"permission_denied\"\n",
    );
    let facts = collect(&Host::replay(d).expect("loads"))
        .await
        .expect("collects");
    assert_eq!(facts.hostname.as_deref(), Some("db-07"));
    assert_eq!(facts.os_name.as_deref(), Some("Rocky Linux"));
    assert_eq!(facts.os_version.as_deref(), Some("9.3 (Blue Onyx)"));
    assert_eq!(facts.architecture.as_deref(), Some("aarch64"));
    assert!(facts.unreadable.contains(&unreadable(
        "hardware_serial",
        "permission denied: /sys/class/dmi/id/product_serial"
    )));
    assert!(facts.unreadable.contains(&unreadable(
        "kernel_version",
        &format!(
            "not in the recording {}: /proc/sys/kernel/osrelease",
            d.display()
        )
    )));
    assert_no_silent_gaps(&facts);
}
