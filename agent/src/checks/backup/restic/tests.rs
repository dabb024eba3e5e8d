//! restic's own output, captured from a repository made on the build machine with restic 0.14.

use super::*;

fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/checks/backup/testdata/restic")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn version() {
    assert_eq!(
        parse_version(&fixture("version.txt")).as_deref(),
        Some("0.14.0")
    );
    assert_eq!(parse_version("borg 1.2.4"), None);
}

#[test]
fn snapshots() {
    let snapshots = parse_snapshots(&fixture("snapshots.json")).expect("parses");
    assert_eq!(snapshots.len(), 2);
    assert_eq!(snapshots[1].paths, vec!["/tmp/rtest/src".to_owned()]);
    assert_eq!(snapshots[1].time_unix_ms, 1_795_631_864_439);
    assert!(snapshots[1].id.starts_with("33520a64"));
    assert_eq!(parse_snapshots("[]").expect("empty"), Vec::new());
    assert_eq!(parse_snapshots("null").expect("old restic"), Vec::new());
    assert!(parse_snapshots("Fatal: wrong password").is_err());
    assert!(parse_snapshots(r#"[{"id":"x","time":"yesterday"}]"#).is_err());
}

#[test]
fn listing_maps_tree_paths_to_their_sources() {
    let (candidates, dirs) = parse_ls(&fixture("ls.jsonl"), &["/tmp/rtest/src".to_owned()]);
    assert_eq!(dirs, vec!["/src".to_owned(), "/src/sub".to_owned()]);
    let files: Vec<(&str, u64)> = candidates
        .iter()
        .map(|c| (c.archive_path.as_str(), c.size))
        .collect();
    assert_eq!(
        files,
        vec![
            ("/src/file1.bin", 1000),
            ("/src/file2.bin", 2000),
            ("/src/file3.bin", 3000),
            ("/src/sub/a.txt", 6)
        ]
    );
    assert_eq!(
        candidates[0].sources,
        vec![
            "/src/file1.bin".to_owned(),
            "/tmp/rtest/src/file1.bin".to_owned()
        ]
    );
    assert!(candidates[0].mtime_unix_secs.is_some());
}

#[test]
fn repository_size() {
    assert_eq!(
        parse_stats_size(&fixture("stats-raw-data.json")),
        Some(7138)
    );
    assert_eq!(parse_stats_size("garbage"), None);
}

#[test]
fn check_details_say_what_was_read() {
    let passed = check_detail(Some(0), "no errors were found\n", "", Some("5%"));
    assert!(
        passed.contains("5% of the pack data") && passed.contains("no errors"),
        "{passed}"
    );
    let failed = check_detail(
        Some(1),
        "",
        "pack 1a2b: not referenced in any index\nFatal: repository contains errors\n",
        None,
    );
    assert!(
        failed.contains("failed (exit 1)") && failed.contains("not referenced"),
        "{failed}"
    );
}
