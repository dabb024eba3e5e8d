use super::*;

fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/checks/patch/testdata/apt")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn version_comes_from_the_first_line() {
    assert_eq!(
        parse_version("apt 2.6.1 (amd64)\nSupported modules:\n"),
        Some("2.6.1".into())
    );
    assert_eq!(parse_version("something else"), None);
    assert_eq!(parse_version(""), None);
}

#[test]
fn simulation_of_this_debian_machine() {
    // Recorded on the Debian 12 build machine with stale lists: 80 upgrades, 14 of which are
    // offered by both the point release and the security archive.
    let sim = parse_simulation(&fixture("simulate-debian12.stdout")).expect("parses");
    assert_eq!(sim.upgrades.len(), 80);
    assert!(sim.kept_back.is_empty() && sim.phased.is_empty());
    let security: Vec<_> = sim.upgrades.iter().filter(|u| u.security).collect();
    assert_eq!(security.len(), 20);
    let cups = sim
        .upgrades
        .iter()
        .find(|u| u.name == "libcups2")
        .expect("listed");
    assert_eq!(
        cups,
        &PendingUpdate {
            name: "libcups2".into(),
            architecture: Some("amd64".into()),
            installed_version: Some("2.4.2-3+deb12u8".into()),
            available_version: Some("2.4.2-3+deb12u9".into()),
            security: true,
            classification_source: "apt origin".into(),
            origins: vec![
                "Debian:12.14/oldstable".into(),
                "Debian-Security:12/oldstable-security".into()
            ],
            ..PendingUpdate::default()
        }
    );
    let bash = sim
        .upgrades
        .iter()
        .find(|u| u.name == "bash")
        .expect("listed");
    assert!(!bash.security);
    assert_eq!(bash.origins, vec!["Debian:12.14/oldstable".to_owned()]);
    // Epochs are kept as apt prints them.
    let login = sim
        .upgrades
        .iter()
        .find(|u| u.name == "login")
        .expect("listed");
    assert_eq!(
        login.installed_version.as_deref(),
        Some("1:4.13+dfsg1-1+deb12u1")
    );
}

#[test]
fn held_packages_are_kept_back_and_listed_with_their_policy() {
    let sim = parse_simulation(&fixture("simulate-debian12-held.stdout")).expect("parses");
    assert_eq!(sim.kept_back, vec!["bash".to_owned(), "openssl".to_owned()]);
    assert_eq!(sim.upgrades.len(), 78);
    assert!(!sim.upgrades.iter().any(|u| u.name == "bash"));
    let policy = parse_policy(&fixture("policy-held.stdout"));
    assert_eq!(
        policy.get("openssl"),
        Some(&Policy {
            installed: Some("3.0.19-1~deb12u2".into()),
            candidate: Some("3.0.20-1~deb12u1".into()),
            candidate_origins: vec!["bookworm/main".into()],
        })
    );
    assert_eq!(policy.len(), 2);
}

#[test]
fn truncated_or_failed_simulations_are_refused() {
    let full = fixture("simulate-debian12.stdout");
    let cut = &full[..full.find("Calculating upgrade").expect("header")];
    let error = parse_simulation(cut).expect_err("no summary");
    assert!(error.contains("incomplete"), "{error}");
    assert!(parse_simulation("").is_err());
    let error = parse_simulation("Inst broken-line-without-anything\n0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.\n")
        .expect_err("bad line");
    assert!(error.contains("Inst broken-line"), "{error}");
}

#[test]
fn nothing_pending_is_an_empty_list_not_an_error() {
    let sim = parse_simulation(
        "Reading package lists...\nBuilding dependency tree...\nReading state information...\nCalculating upgrade...\n0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.\n",
    )
    .expect("parses");
    assert_eq!(sim, Simulation::default());
}

#[test]
fn new_dependencies_and_foreign_architectures() {
    let sim = parse_simulation(
        "Inst linux-image-6.1.0-21-amd64 (6.1.90-1 Debian-Security:12/stable-security [amd64])\n\
         Inst libc6:i386 [2.36-9+deb12u4] (2.36-9+deb12u7 Debian:12.5/stable [i386]) []\n\
         1 upgraded, 1 newly installed, 0 to remove and 0 not upgraded.\n",
    )
    .expect("parses");
    assert_eq!(sim.upgrades.len(), 1);
    assert_eq!(sim.upgrades[0].name, "libc6");
    assert_eq!(sim.upgrades[0].architecture.as_deref(), Some("i386"));
}

#[test]
fn five_thousand_upgrades_parse() {
    let mut text = String::from("Calculating upgrade...\n");
    for i in 0..5000 {
        text.push_str(&format!(
            "Inst pkg{i} [1.{i}-1] (1.{i}-2 Ubuntu:22.04/jammy-updates, Ubuntu:22.04/jammy-security [amd64])\n"
        ));
    }
    text.push_str("5000 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.\n");
    let sim = parse_simulation(&text).expect("parses");
    assert_eq!(sim.upgrades.len(), 5000);
    assert!(sim.upgrades.iter().all(|u| u.security));
}

#[test]
fn security_suites() {
    for origin in [
        "Debian-Security:12/bookworm-security",
        "Ubuntu:22.04/jammy-security",
        "UbuntuESMApps:22.04/jammy-apps-security",
        "bookworm-security/main",
        "jammy-security/universe",
    ] {
        assert!(is_security_suite(origin), "{origin}");
    }
    for origin in [
        "Debian:12.14/oldstable",
        "Ubuntu:22.04/jammy-updates",
        "bookworm/main",
        "security-tools:1/stable",
    ] {
        assert!(!is_security_suite(origin), "{origin}");
    }
}

#[test]
fn history_of_this_machine() {
    let runs = parse_history(&fixture("history.log"));
    assert_eq!(
        runs.first().map(|r| r.end.as_str()),
        Some("2025-06-24 14:36:25")
    );
    assert_eq!(runs[0].upgraded, 2);
    let last_upgrade = runs
        .iter()
        .rev()
        .find(|r| r.upgraded > 0)
        .expect("one upgrade");
    assert!(!last_upgrade.failed);
    assert!(runs.len() > 5, "{runs:?}");
}

#[test]
fn failed_and_cut_off_runs() {
    let runs = parse_history(
        "Start-Date: 2024-01-10  12:00:01\nUpgrade: a:amd64 (1, 2), b:amd64 (1, 2)\nError: Sub-process /usr/bin/dpkg returned an error code (1)\nEnd-Date: 2024-01-10  12:00:05\n\n\
         Start-Date: 2024-01-11  12:00:01\nUpgrade: c:amd64 (1, 2)\n",
    );
    assert_eq!(
        runs,
        vec![HistoryRun {
            end: "2024-01-10 12:00:05".into(),
            upgraded: 2,
            failed: true
        }]
    );
}

#[test]
fn gzip_rotations_decompress_and_garbage_is_an_error() {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder
        .write_all(b"Start-Date: x\nEnd-Date: 2024-01-10  12:00:05\n")
        .expect("write");
    let bytes = encoder.finish().expect("finish");
    assert!(gunzip(&bytes).expect("gunzips").contains("End-Date"));
    assert!(gunzip(b"not gzip").is_err());
}

#[test]
fn unattended_upgrades_configuration() {
    let off = parse_automatic_updates(&fixture("apt-config-dump-default.stdout"), false);
    assert!(!off.install_enabled);
    assert_eq!(
        off.settings,
        vec!["unattended-upgrades package not installed".to_owned()]
    );
    let on = parse_automatic_updates(&fixture("apt-config-dump-unattended.stdout"), true);
    assert_eq!(
        on,
        AutomaticUpdates {
            mechanism: "unattended-upgrades".into(),
            install_enabled: true,
            settings: vec![
                "unattended-upgrades package installed".into(),
                "APT::Periodic::Update-Package-Lists \"1\"".into(),
                "APT::Periodic::Unattended-Upgrade \"1\"".into(),
            ],
        }
    );
    // Configured but the package is missing: nothing installs updates.
    assert!(
        !parse_automatic_updates(&fixture("apt-config-dump-unattended.stdout"), false)
            .install_enabled
    );
    // APT::Periodic::Enable "0" switches every periodic job off.
    let disabled = parse_automatic_updates(
        "APT::Periodic::Enable \"0\";\nAPT::Periodic::Unattended-Upgrade \"1\";\n",
        true,
    );
    assert!(!disabled.install_enabled);
}

#[test]
fn file_times_and_metadata_age() {
    let times = parse_file_times(&fixture("find-times-debian12.stdout"));
    assert_eq!(
        times.get("/var/log/apt/history.log"),
        Some(&1_790_052_689_000)
    );
    // The newest of the Release files and partial/: the last `apt update` on this machine.
    assert_eq!(metadata_refreshed(&times), Ok(1_779_295_758_000));
    assert!(metadata_refreshed(&BTreeMap::new()).is_err());
}

#[test]
fn kernel_versions_order_numerically() {
    use std::cmp::Ordering::*;
    assert_eq!(
        compare_versions("6.1.0-21-amd64", "6.1.0-18-amd64"),
        Greater
    );
    assert_eq!(compare_versions("6.1.0-9-amd64", "6.1.0-10-amd64"), Less);
    assert_eq!(
        compare_versions("5.15.0-101-generic", "5.15.0-101-generic"),
        Equal
    );
    assert_eq!(
        newest_kernel(&["6.1.0-9-amd64", "6.1.0-18-amd64", "6.1.0-10-amd64"]),
        Some("6.1.0-18-amd64")
    );
}

#[test]
fn repository_credentials_in_policy_urls_never_reach_the_evidence() {
    let policy = parse_policy(
        "acme-agent:\n  Installed: 1.0\n  Candidate: 1.1\n  Version table:\n     1.1 500\n        500 https://deploy:s3cr3t-t0ken@apt.example.com/debian bookworm-security/main amd64 Packages\n *** 1.0 100\n        100 /var/lib/dpkg/status\n",
    );
    let acme = policy.get("acme-agent").expect("parsed");
    assert_eq!(
        acme.candidate_origins,
        vec!["bookworm-security/main".to_owned()]
    );
    assert!(!format!("{policy:?}").contains("s3cr3t"));
}
