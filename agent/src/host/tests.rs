use std::path::Path;
use std::time::Duration;

use super::format::rfc3339_utc;
use super::*;

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn host_is_send_and_sync() {
    assert_send_sync::<Host>();
}

#[test]
fn os_family_names() {
    assert_eq!(OsFamily::Linux.as_str(), "linux");
    assert_eq!(OsFamily::Macos.as_str(), "macos");
    assert_eq!(OsFamily::Windows.as_str(), "windows");
    assert_eq!(
        serde_json::to_string(&OsFamily::Macos).expect("serialises"),
        "\"macos\""
    );
    if cfg!(target_os = "linux") {
        assert_eq!(OsFamily::current(), OsFamily::Linux);
        assert_eq!(Host::live().os_family(), OsFamily::Linux);
    }
}

#[test]
fn argv_display_quotes_only_what_needs_it() {
    assert_eq!(display_argv("uname", &["-m"]), "uname -m");
    assert_eq!(
        display_argv("scutil", &["--get", "Computer Name", ""]),
        r#"scutil --get "Computer Name" """#
    );
}

#[test]
fn paths_mirror_into_the_recording() {
    let mirror = |p: &str| mirror_path(p).map(|p| p.to_string_lossy().replace('\\', "/"));
    assert_eq!(mirror("/etc/os-release").as_deref(), Some("etc/os-release"));
    assert_eq!(
        mirror(r"C:\Windows\System32\drivers\etc\hosts").as_deref(),
        Some("C/Windows/System32/drivers/etc/hosts")
    );
    assert_eq!(
        mirror("/etc//./machine-id").as_deref(),
        Some("etc/machine-id")
    );
    assert_eq!(mirror("/etc/../root/.ssh/id_rsa"), None);
    assert_eq!(mirror("/"), None);
}

#[test]
fn recorded_at_is_rfc3339() {
    assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339_utc(1_700_000_000), "2023-11-14T22:13:20Z");
    assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
}

#[cfg(unix)]
#[tokio::test]
async fn live_run_captures_status_and_both_streams_in_the_c_locale() {
    let host = Host::live();
    let output = host
        .run(
            "sh",
            &[
                "-c",
                "printf 'out %s' \"$LC_ALL$LANG\"; printf err >&2; exit 3",
            ],
        )
        .await
        .expect("sh runs");
    assert_eq!(
        output,
        CommandOutput {
            status: Some(3),
            stdout: "out CC".to_owned(),
            stderr: "err".to_owned(),
        }
    );
    assert!(!output.success());
}

#[cfg(unix)]
#[tokio::test]
async fn live_run_gives_the_child_an_empty_stdin() {
    let output = Host::live().run("cat", &[]).await.expect("cat runs");
    assert_eq!(output.stdout, "");
    assert!(output.success());
}

#[tokio::test]
async fn a_missing_program_is_named() {
    let error = Host::live()
        .run("evident-no-such-program", &["--version"])
        .await
        .expect_err("not installed");
    assert_eq!(
        error,
        HostError::ProgramNotFound {
            program: "evident-no-such-program".to_owned()
        }
    );
    assert_eq!(
        error.to_string(),
        "program not found: evident-no-such-program (is it installed?)"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn a_slow_program_times_out() {
    let host = Host::live().with_command_timeout(Duration::from_millis(200));
    let error = host.run("sleep", &["30"]).await.expect_err("too slow");
    assert_eq!(
        error,
        HostError::TimedOut {
            argv: "sleep 30".to_owned(),
            timeout_ms: 200
        }
    );
    assert_eq!(error.to_string(), "`sleep 30` timed out after 200 ms");
}

#[cfg(unix)]
#[tokio::test]
async fn output_beyond_the_cap_is_an_error_and_never_blocks_the_child() {
    let host = Host::live().with_max_stream_bytes(10);
    // 1 MiB is far more than a pipe buffer: the child would hang if we stopped reading.
    let error = host
        .run("head", &["-c", "1048576", "/dev/zero"])
        .await
        .expect_err("too much output");
    assert_eq!(
        error,
        HostError::OutputTooLarge {
            argv: "head -c 1048576 /dev/zero".to_owned(),
            stream: "stdout".to_owned(),
            cap_bytes: 10
        }
    );
    let fits = host.run("printf", &["0123456789"]).await.expect("fits");
    assert_eq!(fits.stdout, "0123456789");
}

#[tokio::test]
async fn live_file_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.txt");
    std::fs::write(&path, b"hello \xff world\n").expect("write");
    let path = path.to_str().expect("utf-8 temp path");
    let host = Host::live();
    assert_eq!(
        host.read_file(path).await.expect("reads"),
        "hello \u{fffd} world\n"
    );
    let missing = dir.path().join("missing");
    let missing = missing.to_str().expect("utf-8 temp path");
    assert_eq!(
        host.read_file(missing).await,
        Err(HostError::FileNotFound {
            path: missing.to_owned()
        })
    );
    assert_eq!(
        live::read_file(path, 4).await,
        Err(HostError::FileTooLarge {
            path: path.to_owned(),
            cap_bytes: 4
        })
    );
}

#[cfg(unix)]
#[tokio::test]
async fn a_recording_replays_the_same_answers() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let file = scratch.path().join("data.txt");
    std::fs::write(&file, "recorded content\n").expect("write");
    let file = file.to_str().expect("utf-8 temp path").to_owned();
    let gone = scratch.path().join("gone.txt");
    let gone = gone.to_str().expect("utf-8 temp path").to_owned();
    let dir = scratch.path().join("rec");

    let recording = Host::recording(&dir)
        .expect("recording starts")
        .with_command_timeout(Duration::from_millis(200));
    let commands: Vec<(&str, Vec<&str>)> = vec![
        ("sh", vec!["-c", "echo out; echo err >&2; exit 4"]),
        ("sh", vec!["-c", "true"]),
        ("evident-no-such-program", vec![]),
        ("sleep", vec!["30"]),
    ];
    let mut live_answers = Vec::new();
    for (program, args) in &commands {
        live_answers.push(recording.run(program, args).await);
    }
    let live_file = recording.read_file(&file).await;
    let live_gone = recording.read_file(&gone).await;
    recording.finish().expect("recording flushes");

    assert!(dir.join("host.toml").is_file());
    assert!(dir.join("files.toml").is_file());
    // Empty output leaves no file.
    assert!(dir.join("commands/0001.stdout").is_file());
    assert!(!dir.join("commands/0002.stdout").exists());

    let replay = Host::replay(&dir).expect("replay loads");
    assert_eq!(replay.os_family(), OsFamily::current());
    for ((program, args), live) in commands.iter().zip(&live_answers) {
        assert_eq!(&replay.run(program, args).await, live, "{program} {args:?}");
    }
    assert_eq!(live_answers[0].as_ref().expect("ran").status, Some(4));
    assert_eq!(replay.read_file(&file).await, live_file);
    assert_eq!(replay.read_file(&gone).await, live_gone);
    assert!(matches!(live_gone, Err(HostError::FileNotFound { .. })));

    let error = replay
        .run("sh", &["-c", "echo never"])
        .await
        .expect_err("not recorded");
    assert_eq!(
        error.to_string(),
        format!(
            "not in the recording {}: sh -c \"echo never\"",
            dir.display()
        )
    );
    let error = replay
        .read_file("/etc/never-read")
        .await
        .expect_err("not recorded");
    assert_eq!(
        error.to_string(),
        format!("not in the recording {}: /etc/never-read", dir.display())
    );
    assert_eq!(replay.finish().ok(), Some(()));
}

#[test]
fn recording_refuses_a_directory_that_is_not_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("something"), "").expect("write");
    let error = Host::recording(dir.path()).expect_err("not empty");
    assert!(error.to_string().contains("is not empty"), "{error}");
    // An existing empty directory is fine.
    let empty = tempfile::tempdir().expect("tempdir");
    Host::recording(empty.path()).expect("empty directory records");
}

fn write(dir: &Path, relative: &str, text: &str) {
    let path = dir.join(relative);
    std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

#[tokio::test]
async fn a_hand_written_recording_replays_and_the_last_duplicate_wins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    write(dir, "host.toml", "os_family = \"windows\"\n");
    write(
        dir,
        "commands/0001.toml",
        "argv = [\"hostname\"]\nstatus = 0\n",
    );
    write(dir, "commands/0001.stdout", "OLD\r\n");
    write(
        dir,
        "commands/0002.toml",
        "argv = [\"hostname\"]\nstatus = 0\n",
    );
    write(dir, "commands/0002.stdout", "NEW\r\n");
    // Numeric order, not text order: 10 comes after 9.
    write(dir, "commands/9.toml", "argv = [\"whoami\"]\nstatus = 1\n");
    write(
        dir,
        "commands/10.toml",
        "argv = [\"whoami\"]\nerror = \"not_found\"\n",
    );
    write(
        dir,
        "commands/0003.toml",
        "argv = [\"slow\"]\nerror = \"timed_out\"\ntimeout_ms = 30000\n",
    );
    write(dir, "commands/0004.toml", "argv = [\"killed\"]\n");
    write(
        dir,
        "files/C/Windows/win.ini",
        "; for 16-bit app support\r\n",
    );
    write(
        dir,
        "files.toml",
        "[[missing]]\npath = 'C:\\pagefile.sys'\nerror = \"permission_denied\"\n",
    );

    let host = Host::replay(dir).expect("loads");
    assert_eq!(host.os_family(), OsFamily::Windows);
    assert_eq!(
        host.run("hostname", &[]).await.expect("recorded").stdout,
        "NEW\r\n"
    );
    assert_eq!(
        host.run("whoami", &[]).await,
        Err(HostError::ProgramNotFound {
            program: "whoami".to_owned()
        })
    );
    assert_eq!(
        host.run("slow", &[])
            .await
            .expect_err("timed out")
            .to_string(),
        "`slow` timed out after 30 s"
    );
    let killed = host.run("killed", &[]).await.expect("recorded");
    assert_eq!((killed.status, killed.stdout.as_str()), (None, ""));
    assert_eq!(
        host.read_file(r"C:\Windows\win.ini")
            .await
            .expect("recorded"),
        "; for 16-bit app support\r\n"
    );
    assert_eq!(
        host.read_file(r"C:\pagefile.sys").await,
        Err(HostError::PermissionDenied {
            path: r"C:\pagefile.sys".to_owned()
        })
    );
    // Matching is exact: extra arguments are another command.
    assert!(matches!(
        host.run("hostname", &["-f"]).await,
        Err(HostError::NotRecorded { .. })
    ));
}

#[test]
fn a_broken_recording_is_refused_with_the_file_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let error = Host::replay(dir).expect_err("no host.toml");
    assert!(format!("{error:#}").contains("host.toml"), "{error:#}");

    write(dir, "host.toml", "os_family = \"beos\"\n");
    let error = Host::replay(dir).expect_err("unknown family");
    assert!(format!("{error:#}").contains("parsing"), "{error:#}");

    write(dir, "host.toml", "os_family = \"linux\"\n");
    write(
        dir,
        "commands/0001.toml",
        "argv = [\"uname\"]\nstauts = 0\n",
    );
    let error = Host::replay(dir).expect_err("typo in a key");
    assert!(format!("{error:#}").contains("0001.toml"), "{error:#}");

    write(dir, "commands/0001.toml", "argv = []\n");
    let error = Host::replay(dir).expect_err("empty argv");
    assert!(format!("{error:#}").contains("argv"), "{error:#}");

    std::fs::remove_file(dir.join("commands/0001.toml")).expect("remove");
    write(dir, "files/etc/hostname", "x\n");
    write(
        dir,
        "files.toml",
        "[[missing]]\npath = \"/etc/hostname\"\nerror = \"not_found\"\n",
    );
    let error = Host::replay(dir).expect_err("contradiction");
    assert!(
        format!("{error:#}").contains("also has recorded content"),
        "{error:#}"
    );
}

#[test]
fn passwords_in_urls_are_never_shown_logged_or_recorded() {
    assert_eq!(
        redact_url("rest:https://backup:S3cret@nas:8000/host"),
        "rest:https://backup@nas:8000/host"
    );
    assert_eq!(redact_url("https://h/x?token=abc"), "https://h/x");
    assert_eq!(redact_url("--tag"), "--tag");
    let shown = display_argv(
        "restic",
        &["--repo", "rest:https://u:S3cret@nas/x", "snapshots"],
    );
    assert!(!shown.contains("S3cret"), "{shown}");
    assert_eq!(
        recorded_argv("restic", &["--repo", "rest:https://u:S3cret@nas/x"]),
        vec!["restic", "--repo", "rest:https://u@nas/x"]
    );
}

#[tokio::test]
async fn a_recording_keeps_no_url_password_and_still_replays() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("rec");
    let recording = Host::recording(&dir).expect("recording");
    let args = ["https://user:S3cret@example.invalid/repo"];
    let live = recording.run("echo", &args).await.expect("echo runs");
    recording.finish().expect("finish");
    let mut everything = String::new();
    for entry in std::fs::read_dir(dir.join("commands")).expect("commands") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            everything.push_str(&std::fs::read_to_string(path).expect("read"));
        }
    }
    assert!(!everything.contains("S3cret"), "{everything}");
    let replay = Host::replay(&dir).expect("replay");
    assert_eq!(replay.run("echo", &args).await.expect("replays"), live);
}
