//! The packages as IT installs them: `scripts/package --debug` packs the debug binaries that
//! are already built (no release build in the test suite), then the `.deb` files are installed
//! on this machine with dpkg, checked (files, owners, modes, the collector's system user, the
//! binaries at their installed paths, the units), linted with lintian, and purged again. The
//! `.rpm` files are read with rpm. Needs root, lintian, rpm and systemd-analyze
//! (`scripts/install-test-deps`); the tests run as root on a throwaway machine.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use evident_tests::{Run, binary, run};

const PACKAGES: [&str; 2] = ["evident-agent", "evident-collector"];

/// Lintian tags that do not apply to packages shipped outside the Debian archive, each with
/// its reason.
const LINTIAN_SUPPRESSED: [&str; 2] = [
    // The changelog closes no Debian bug: these packages are not uploaded to Debian.
    "initial-upload-closes-no-bugs",
    // The commands document themselves with --help; there are no man pages yet.
    "no-manual-page",
];

fn sh(program: &str, args: &[&str]) -> Run {
    run(Path::new(program), args)
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// The target directory the binaries under test were built in.
fn target_dir() -> PathBuf {
    binary("evident-agent")
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/evident-agent")
        .to_owned()
}

/// Purges the packages when dropped, so that a failed assertion leaves no package behind, and
/// removes the policy-rc.d it may have placed.
struct Installed {
    policy_rc_d: Option<PathBuf>,
}

impl Drop for Installed {
    fn drop(&mut self) {
        purge();
        if let Some(path) = &self.policy_rc_d {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn purge() {
    let mut args = vec!["--purge"];
    args.extend(PACKAGES);
    sh("dpkg", &args).expect_ok("dpkg --purge");
}

fn mode_owner(path: &str) -> (u32, String, String) {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let name = |id: u32, db: &str| {
        let out = sh("getent", &[db, &id.to_string()]).expect_ok("getent");
        out.stdout.split(':').next().expect("name").to_owned()
    };
    (
        meta.permissions().mode() & 0o7777,
        name(meta.uid(), "passwd"),
        name(meta.gid(), "group"),
    )
}

fn exposure(unit: &str) -> f64 {
    let out = sh(
        "systemd-analyze",
        &["security", "--offline=true", "--no-pager", unit],
    )
    .expect_ok("systemd-analyze security");
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure level: {out:?}"));
    line.split(':')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unreadable exposure: {line}"))
}

#[test]
fn the_packages_install_lint_clean_with_hardened_units_and_purge_cleanly() {
    assert_eq!(
        sh("id", &["-u"]).stdout.trim(),
        "0",
        "the package test installs .deb files with dpkg: run the tests as root"
    );
    let packaged = Command::new(workspace().join("scripts/package"))
        .arg("--debug")
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .expect("run scripts/package");
    let stdout = String::from_utf8_lossy(&packaged.stdout).into_owned();
    assert!(
        packaged.status.success(),
        "scripts/package --debug failed: {stdout}{}",
        String::from_utf8_lossy(&packaged.stderr)
    );
    let files: Vec<&str> = stdout.lines().collect();
    let find = |suffix: &str| -> String {
        files
            .iter()
            .find(|f| f.ends_with(suffix))
            .unwrap_or_else(|| panic!("no *{suffix} in {files:?}"))
            .to_string()
    };
    let debs = [
        find("evident-agent_0.1.0-1_amd64.deb"),
        find("evident-collector_0.1.0-1_amd64.deb"),
    ];
    check_rpm(&find("evident-agent-0.1.0-1.x86_64.rpm"), "evident-agent");
    check_rpm(
        &find("evident-collector-0.1.0-1.x86_64.rpm"),
        "evident-collector",
    );

    // Lint before installing: no error and no warning but the ones that do not apply.
    let mut lint = vec![
        "--fail-on".to_owned(),
        "error,warning".to_owned(),
        "--suppress-tags".to_owned(),
        LINTIAN_SUPPRESSED.join(","),
    ];
    lint.extend(debs.iter().cloned());
    let lint: Vec<&str> = lint.iter().map(String::as_str).collect();
    let linted = sh("lintian", &lint);
    assert!(linted.ok(), "lintian: {linted:?}");

    // A leftover from an interrupted run goes first. Where systemd runs, the maintainer
    // scripts must not start the services on this test machine.
    purge();
    let policy = PathBuf::from("/usr/sbin/policy-rc.d");
    let policy_rc_d = (Path::new("/run/systemd/system").exists() && !policy.exists()).then(|| {
        std::fs::write(&policy, "#!/bin/sh\nexit 101\n").expect("write policy-rc.d");
        std::fs::set_permissions(&policy, std::fs::Permissions::from_mode(0o755))
            .expect("chmod policy-rc.d");
        policy.clone()
    });
    let installed = Installed { policy_rc_d };
    let mut install = vec!["--install"];
    install.extend(debs.iter().map(String::as_str));
    sh("dpkg", &install).expect_ok("dpkg --install");

    for (path, mode, owner) in [
        ("/usr/bin/evident-agent", 0o755, "root"),
        ("/usr/bin/evident-collector", 0o755, "root"),
        ("/etc/evident/agent.toml", 0o644, "root"),
        ("/etc/evident/collector.toml", 0o644, "root"),
        (
            "/usr/lib/systemd/system/evident-agent.service",
            0o644,
            "root",
        ),
        (
            "/usr/lib/systemd/system/evident-collector.service",
            0o644,
            "root",
        ),
        ("/usr/lib/sysusers.d/evident-collector.conf", 0o644, "root"),
        ("/usr/share/doc/evident-agent/copyright", 0o644, "root"),
        ("/usr/share/doc/evident-collector/copyright", 0o644, "root"),
    ] {
        assert_eq!(
            mode_owner(path),
            (mode, owner.to_owned(), owner.to_owned()),
            "{path}"
        );
    }
    for package in PACKAGES {
        let conffiles =
            sh("dpkg-query", &["-W", "-f=${Conffiles}", package]).expect_ok("dpkg-query");
        let config = format!(
            "/etc/evident/{}.toml",
            package.trim_start_matches("evident-")
        );
        assert!(
            conffiles.stdout.contains(&config),
            "{package}: {conffiles:?}"
        );
    }

    // The collector's system user: no login, its data directory as home.
    let user = sh("getent", &["passwd", "evident-collector"]).expect_ok("the system user");
    let fields: Vec<&str> = user.stdout.trim().split(':').collect();
    let uid: u32 = fields[2].parse().expect("uid");
    assert!(uid < 1000, "a system uid: {user:?}");
    assert_eq!(fields[5], "/var/lib/evident-collector");
    assert!(fields[6].ends_with("nologin"), "{user:?}");

    // The binaries run from where the packages put them, the collector's as its own user.
    let version = format!(" {}", env!("CARGO_PKG_VERSION"));
    for program in ["/usr/bin/evident-agent", "/usr/bin/evident-collector"] {
        let out = sh(program, &["--version"]).expect_ok("--version");
        assert!(out.stdout.contains(&version), "{out:?}");
        sh(program, &["--help"]).expect_ok("--help");
    }
    sh(
        "runuser",
        &[
            "-u",
            "evident-collector",
            "--",
            "/usr/bin/evident-collector",
            "--version",
        ],
    )
    .expect_ok("the collector as its user");
    // The shipped agent.toml is valid: the agent gets as far as asking to be enrolled.
    let state = tempfile::tempdir().expect("tempdir");
    let unenrolled = sh(
        "/usr/bin/evident-agent",
        &[
            "run",
            "--once",
            "--config",
            "/etc/evident/agent.toml",
            "--state-dir",
            state.path().to_str().expect("path"),
        ],
    );
    assert!(
        unenrolled.stderr.contains("agent is not enrolled")
            && unenrolled.stderr.contains("[enrollment]"),
        "{unenrolled:?}"
    );

    // The units verify with their binaries in place, and stay as hardened as README.md says.
    let verified = sh(
        "systemd-analyze",
        &[
            "verify",
            "/usr/lib/systemd/system/evident-agent.service",
            "/usr/lib/systemd/system/evident-collector.service",
        ],
    );
    assert!(
        verified.ok() && !verified.stderr.contains("evident"),
        "systemd-analyze verify: {verified:?}"
    );
    let agent = exposure("/usr/lib/systemd/system/evident-agent.service");
    let collector = exposure("/usr/lib/systemd/system/evident-collector.service");
    assert!(agent <= 2.5, "agent exposure {agent}");
    assert!(collector <= 1.5, "collector exposure {collector}");

    drop(installed);
    for gone in [
        "/usr/bin/evident-agent",
        "/etc/evident/agent.toml",
        "/etc/evident/collector.toml",
    ] {
        assert!(!Path::new(gone).exists(), "{gone} left after purge");
    }
}

/// What rpm reads from an `.rpm`: its files with modes and owners, config files, scripts.
fn check_rpm(rpm: &str, package: &str) {
    let listed = sh("rpm", &["-qlvp", rpm]).expect_ok("rpm -qlvp");
    let line = |path: &str| -> Vec<String> {
        listed
            .stdout
            .lines()
            .find(|l| l.ends_with(path))
            .unwrap_or_else(|| panic!("{path} not in {rpm}: {}", listed.stdout))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    let short = package.trim_start_matches("evident-");
    for (path, mode) in [
        (format!("/usr/bin/{package}"), "-rwxr-xr-x"),
        (format!("/etc/evident/{short}.toml"), "-rw-r--r--"),
        (
            format!("/usr/lib/systemd/system/{package}.service"),
            "-rw-r--r--",
        ),
    ] {
        let fields = line(&path);
        assert_eq!(
            (fields[0].as_str(), fields[2].as_str(), fields[3].as_str()),
            (mode, "root", "root"),
            "{path} in {rpm}"
        );
    }
    let config = sh("rpm", &["-qcp", rpm]).expect_ok("rpm -qcp");
    assert_eq!(config.stdout.trim(), format!("/etc/evident/{short}.toml"));
    let scripts = sh("rpm", &["-qp", "--scripts", rpm]).expect_ok("rpm --scripts");
    assert!(
        scripts
            .stdout
            .contains(&format!("systemctl enable --now {package}.service")),
        "{scripts:?}"
    );
    if package == "evident-collector" {
        assert!(scripts.stdout.contains("systemd-sysusers"), "{scripts:?}");
    }
}
