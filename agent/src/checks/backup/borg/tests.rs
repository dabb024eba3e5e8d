//! borg's own output, captured from a repository made on the build machine with borg 1.2.4 (a
//! UTC machine: local times equal UTC).

use super::*;

fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/checks/backup/testdata/borg")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn version() {
    assert_eq!(parse_version("borg 1.2.4\n").as_deref(), Some("1.2.4"));
    assert_eq!(parse_version("restic 0.14.0"), None);
}

#[test]
fn archives_in_the_hosts_zone() {
    let archives = parse_list(&fixture("list.json"), &LocalClock::utc()).expect("parses");
    assert_eq!(
        archives,
        vec![Archive {
            name: "lab1-2024".into(),
            start_unix_ms: 1_795_631_893_000
        }]
    );
    assert!(parse_list("{}", &LocalClock::utc()).is_err());
    assert!(parse_list("not json", &LocalClock::utc()).is_err());
}

#[test]
fn repository_size_and_archive_paths() {
    assert_eq!(
        parse_repository_size(&fixture("info-repo.json")),
        Some(7147)
    );
    assert_eq!(
        parse_archive_paths(&fixture("info-archive.json")),
        vec!["/tmp/rtest/src".to_owned()]
    );
    assert_eq!(parse_archive_paths("{}"), Vec::<String>::new());
}

#[test]
fn items_are_files_with_their_sources() {
    let items = parse_items(&fixture("items.jsonl"), &LocalClock::utc());
    let files: Vec<(&str, &str, u64)> = items
        .iter()
        .map(|c| (c.archive_path.as_str(), c.sources[0].as_str(), c.size))
        .collect();
    assert!(files.contains(&("tmp/rtest/src/file2.bin", "/tmp/rtest/src/file2.bin", 2000)));
    assert_eq!(files.len(), 4, "{files:?}");
    assert!(items.iter().all(|c| c.mtime_unix_secs.is_some()));
}
