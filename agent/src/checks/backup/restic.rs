//! restic repositories declared in `agent.toml`.
//!
//! Reads, without taking a lock (`--no-lock`), and with the password handed over as a file
//! path (`--password-file`), never as a value:
//! - `restic snapshots --json` filtered by host and tags: count, newest time and paths;
//! - `restic stats --mode raw-data --json`: the repository's size on disk;
//! - on its own interval, `restic check` (optionally `--read-data-subset`), which locks;
//! - on its own interval, the restore test (see [`super::restore`]): a sample of files from the
//!   newest snapshot is restored with `restic dump` and compared by SHA-256 with the source
//!   files that have not changed since.

use serde::Deserialize;

use super::config::ResticSource;
use super::restore::{self, Candidate};
use super::{
    BackupMemory, BackupSource, Remembered, RunResult, SourceErrorKind, classify,
    classify_host_error,
};
use crate::checks::first_lines;
use crate::host::Host;

const TOOL: &str = "restic";
/// The restore test lists at most this many directories …
const MAX_LISTINGS: usize = 32;
/// … and stops once it has this many files to choose from.
const MAX_CANDIDATES: usize = 200;

pub(super) async fn collect(
    host: &Host,
    source: &ResticSource,
    memory: &mut BackupMemory,
    now_unix_ms: i64,
) -> BackupSource {
    let repo = &source.repository;
    let mut out = BackupSource::new(TOOL, &repo.name, &repo.location);
    out.host_filter.clone_from(&repo.host);
    out.tags.clone_from(&repo.tags);
    match host.run(TOOL, &["version"]).await {
        Ok(output) => out.tool_version = parse_version(&output.stdout),
        Err(error) => {
            out.fail(classify_host_error(&error), &error.to_string());
            return out;
        }
    }
    let password_file = source.password_file.to_string_lossy().into_owned();
    let base = [
        "--repo",
        repo.location.as_str(),
        "--password-file",
        password_file.as_str(),
    ];
    // Only the integrity check takes a lock, and only it may run long.
    let run = |args: Vec<&str>, lock: bool| {
        let mut argv: Vec<&str> = base.to_vec();
        if !lock {
            argv.push("--no-lock");
        }
        argv.extend(args);
        let argv: Vec<String> = argv.into_iter().map(str::to_owned).collect();
        async move {
            let args: Vec<&str> = argv.iter().map(String::as_str).collect();
            if lock {
                host.run_raw_within(TOOL, &args, &[], repo.check_timeout)
                    .await
            } else {
                host.run_raw(TOOL, &args, &[]).await
            }
        }
    };

    let mut snapshots_args = vec!["snapshots", "--json"];
    if let Some(filter) = &repo.host {
        snapshots_args.extend(["--host", filter.as_str()]);
    }
    let tags = repo.tags.join(",");
    if !tags.is_empty() {
        snapshots_args.extend(["--tag", tags.as_str()]);
    }
    let snapshots = match run(snapshots_args, false).await {
        Ok(output) if output.status == Some(0) => {
            parse_snapshots(&String::from_utf8_lossy(&output.stdout))
        }
        Ok(output) => {
            out.fail(
                classify(&output.stderr),
                &first_lines(output.stderr.trim(), 3),
            );
            return out;
        }
        Err(error) => {
            out.fail(classify_host_error(&error), &error.to_string());
            return out;
        }
    };
    let snapshots = match snapshots {
        Ok(snapshots) => snapshots,
        Err(reason) => {
            out.fail(SourceErrorKind::Other, &reason);
            return out;
        }
    };
    out.snapshot_count = u32::try_from(snapshots.len()).ok();
    let latest = snapshots.iter().max_by_key(|s| s.time_unix_ms).cloned();
    if let Some(latest) = &latest {
        out.last_success_unix_ms = Some(latest.time_unix_ms);
        out.paths.clone_from(&latest.paths);
    }
    if let Ok(output) = run(vec!["stats", "--mode", "raw-data", "--json"], false).await
        && output.status == Some(0)
    {
        out.repository_size_bytes = parse_stats_size(&String::from_utf8_lossy(&output.stdout));
    }

    let remembered: &mut Remembered = memory.entry(TOOL, &repo.name);
    if Remembered::due(
        remembered.integrity_check.as_ref(),
        repo.check_interval_secs,
        now_unix_ms,
    ) {
        let mut args = vec!["check"];
        if let Some(subset) = &repo.check_read_data_subset {
            args.extend(["--read-data-subset", subset.as_str()]);
        }
        let result = match run(args, true).await {
            Ok(output) => RunResult {
                at_unix_ms: now_unix_ms,
                passed: output.status == Some(0),
                detail: check_detail(
                    output.status,
                    &String::from_utf8_lossy(&output.stdout),
                    &output.stderr,
                    repo.check_read_data_subset.as_deref(),
                ),
            },
            Err(error) => RunResult {
                at_unix_ms: now_unix_ms,
                passed: false,
                detail: super::redact_message(&format!("restic check could not run: {error}")),
            },
        };
        remembered.integrity_check = Some(result);
    }
    if let Some(latest) = &latest
        && Remembered::due(
            remembered.restore_test.as_ref(),
            repo.restore_test_interval_secs,
            now_unix_ms,
        )
    {
        let result = restore_test(host, &base, latest, repo, now_unix_ms).await;
        remembered.restore_test = Some(result);
    }
    out.integrity_check.clone_from(&remembered.integrity_check);
    out.restore_test.clone_from(&remembered.restore_test);
    out
}

async fn restore_test(
    host: &Host,
    base: &[&str],
    latest: &Snapshot,
    repo: &super::Repository,
    now_unix_ms: i64,
) -> RunResult {
    let fail = |detail: String| RunResult {
        at_unix_ms: now_unix_ms,
        passed: false,
        detail: super::redact_message(&detail),
    };
    // `restic ls SNAPSHOT DIR` lists one directory, so a breadth-first walk from the root keeps
    // every listing small however big the snapshot is.
    let mut queue = std::collections::VecDeque::from(["/".to_owned()]);
    let mut candidates = Vec::new();
    let mut listings = 0;
    while let Some(dir) = queue.pop_front() {
        if listings >= MAX_LISTINGS || candidates.len() >= MAX_CANDIDATES {
            break;
        }
        listings += 1;
        let mut args: Vec<&str> = base.to_vec();
        args.extend([
            "--no-lock",
            "ls",
            "--json",
            latest.id.as_str(),
            dir.as_str(),
        ]);
        match host.run_raw(TOOL, &args, &[]).await {
            Ok(output) if output.status == Some(0) => {
                let (files, dirs) =
                    parse_ls(&String::from_utf8_lossy(&output.stdout), &latest.paths);
                candidates.extend(files);
                queue.extend(dirs.into_iter().filter(|d| *d != dir));
            }
            Ok(output) => {
                return fail(format!(
                    "restic ls {dir} failed: {}",
                    first_lines(output.stderr.trim(), 3)
                ));
            }
            Err(error) => return fail(format!("restic ls could not run: {error}")),
        }
    }
    let short_id: String = latest.id.chars().take(8).collect();
    restore::run(
        host,
        &format!("snapshot {short_id}"),
        candidates,
        repo,
        now_unix_ms,
        |path| {
            let mut argv: Vec<String> = base.iter().map(|s| (*s).to_owned()).collect();
            argv.extend(["--no-lock", "dump", latest.id.as_str(), path].map(str::to_owned));
            (TOOL.to_owned(), argv)
        },
        &[],
    )
    .await
}

/// `restic 0.14.0 compiled with go1.19.8 on linux/amd64` -> `0.14.0`.
pub(crate) fn parse_version(stdout: &str) -> Option<String> {
    let mut words = stdout.split_whitespace();
    (words.next() == Some("restic")).then_some(())?;
    words.next().map(str::to_owned)
}

/// One snapshot of `restic snapshots --json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub id: String,
    pub time_unix_ms: i64,
    pub paths: Vec<String>,
}

#[derive(Deserialize)]
struct RawSnapshot {
    id: String,
    time: String,
    #[serde(default)]
    paths: Vec<String>,
}

/// Parses `restic snapshots --json` (a JSON array; `null` when there are none in old versions).
pub(crate) fn parse_snapshots(text: &str) -> Result<Vec<Snapshot>, String> {
    let raw: Option<Vec<RawSnapshot>> = serde_json::from_str(text.trim())
        .map_err(|e| format!("restic snapshots printed no valid JSON: {e}"))?;
    raw.unwrap_or_default()
        .into_iter()
        .map(|s| {
            let time = s.time.parse::<jiff::Timestamp>().map_err(|e| {
                format!("snapshot {} has an unreadable time {:?}: {e}", s.id, s.time)
            })?;
            Ok(Snapshot {
                id: s.id,
                time_unix_ms: time.as_millisecond(),
                paths: s.paths,
            })
        })
        .collect()
}

/// `total_size` of `restic stats --mode raw-data --json`.
pub(crate) fn parse_stats_size(text: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(text.trim())
        .ok()?
        .get("total_size")?
        .as_u64()
}

/// The files (as restore-test candidates) and the directories of `restic ls --json SNAPSHOT
/// DIR` (one JSON object per line, the first being the snapshot itself). Paths in the tree are
/// relative to the common root of the backed-up paths, so the source may be the tree path
/// itself or the tree path under the parent of a snapshot path.
pub(crate) fn parse_ls(text: &str, snapshot_paths: &[String]) -> (Vec<Candidate>, Vec<String>) {
    #[derive(Deserialize)]
    struct Node {
        #[serde(rename = "type")]
        kind: Option<String>,
        path: Option<String>,
        size: Option<u64>,
        mtime: Option<String>,
        struct_type: Option<String>,
    }
    let nodes: Vec<Node> = text
        .lines()
        .filter_map(|line| serde_json::from_str::<Node>(line).ok())
        .filter(|n| n.struct_type.as_deref() == Some("node"))
        .collect();
    let dirs = nodes
        .iter()
        .filter(|n| n.kind.as_deref() == Some("dir"))
        .filter_map(|n| n.path.clone())
        .collect();
    let files = nodes
        .into_iter()
        .filter(|n| n.kind.as_deref() == Some("file"))
        .filter_map(|n| {
            let path = n.path?;
            let mut sources = vec![path.clone()];
            for root in snapshot_paths {
                if let Some((parent, _)) = root.trim_end_matches('/').rsplit_once('/')
                    && !parent.is_empty()
                {
                    sources.push(format!("{parent}{path}"));
                }
            }
            Some(Candidate {
                size: n.size?,
                mtime_unix_secs: n
                    .mtime
                    .and_then(|m| m.parse::<jiff::Timestamp>().ok())
                    .map(|t| t.as_second()),
                archive_path: path,
                sources,
            })
        })
        .collect();
    (files, dirs)
}

/// What `restic check` found, short.
fn check_detail(status: Option<i32>, stdout: &str, stderr: &str, subset: Option<&str>) -> String {
    let scope = match subset {
        Some(subset) => format!("structure and {subset} of the pack data"),
        None => "structure (no pack data read)".to_owned(),
    };
    let detail = if status == Some(0) {
        format!("restic check of the {scope}: no errors were found")
    } else {
        let said = if stderr.trim().is_empty() {
            stdout
        } else {
            stderr
        };
        format!(
            "restic check of the {scope} failed (exit {}): {}",
            status.map_or_else(|| "by signal".to_owned(), |s| s.to_string()),
            first_lines(said.trim(), 4)
        )
    };
    super::redact_message(&detail)
}

#[cfg(test)]
mod tests;
