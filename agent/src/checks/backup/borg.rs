//! borg repositories declared in `agent.toml` (borg 1.1 and 1.2; borgmatic writes the same
//! repositories).
//!
//! Reads with `--bypass-lock` (nothing is written to the repository) and hands the passphrase
//! over as `BORG_PASSCOMMAND="cat FILE"`, a command naming the file, never the passphrase:
//! - `borg list --json`: archives, filtered by `host` as an archive-name prefix (`HOST-…`,
//!   borgmatic's default naming), newest start time;
//! - `borg info --json` of the repository (its size) and of the newest archive (its paths, from
//!   the command line that created it);
//! - on its own interval, `borg check` (which locks);
//! - on its own interval, the restore test: `borg extract --stdout` of a sample of files listed
//!   by `borg list --json-lines`.
//!
//! borg 1.x writes times in JSON as local time without an offset; they are read in the host's
//! zone (`/etc/localtime`).

use serde::Deserialize;

use super::config::BorgSource;
use super::restore::{self, Candidate};
use super::{
    BackupMemory, BackupSource, Remembered, RunResult, SourceErrorKind, classify,
    classify_host_error,
};
use crate::checks::first_lines;
use crate::checks::patch::LocalClock;
use crate::host::Host;

const TOOL: &str = "borg";
/// The restore test's listing goes at most this deep …
const MAX_DEPTH: u32 = 12;
/// … and stops deepening once it has this many files to choose from.
const ENOUGH_FILES: usize = 50;

pub(super) async fn collect(
    host: &Host,
    source: &BorgSource,
    memory: &mut BackupMemory,
    now_unix_ms: i64,
) -> BackupSource {
    let repo = &source.repository;
    let mut out = BackupSource::new(TOOL, &repo.name, &repo.location);
    out.host_filter.clone_from(&repo.host);
    out.tags.clone_from(&repo.tags);
    // borg cannot prompt here. The agent only reads, so an unencrypted or moved repository is
    // read rather than refused, and the passphrase is never displayed.
    let passcommand = source
        .passphrase_file
        .as_ref()
        .map(|path| format!("cat '{}'", path.to_string_lossy()));
    let mut env: Vec<(&str, &str)> = vec![
        ("BORG_RELOCATED_REPO_ACCESS_IS_OK", "yes"),
        ("BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK", "yes"),
        ("BORG_DISPLAY_PASSPHRASE", "no"),
    ];
    if let Some(command) = &passcommand {
        env.push(("BORG_PASSCOMMAND", command.as_str()));
    }
    let env = env.as_slice();
    match host.run(TOOL, &["--version"]).await {
        Ok(output) => out.tool_version = parse_version(&output.stdout),
        Err(error) => {
            out.fail(classify_host_error(&error), &error.to_string());
            return out;
        }
    }
    let clock = match LocalClock::of(host).await {
        Ok(clock) => clock,
        Err(reason) => {
            out.fail(SourceErrorKind::Other, &reason);
            return out;
        }
    };
    let location = repo.location.as_str();
    let glob = repo.host.as_ref().map(|h| format!("{h}-*"));
    let mut list_args = vec!["list", "--json", "--bypass-lock"];
    if let Some(glob) = &glob {
        list_args.extend(["--glob-archives", glob.as_str()]);
    }
    list_args.push(location);
    let archives = match host.run_raw(TOOL, &list_args, env).await {
        Ok(output) if output.status == Some(0) => {
            parse_list(&String::from_utf8_lossy(&output.stdout), &clock)
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
    let archives = match archives {
        Ok(archives) => archives,
        Err(reason) => {
            out.fail(SourceErrorKind::Other, &reason);
            return out;
        }
    };
    out.snapshot_count = u32::try_from(archives.len()).ok();
    let latest = archives.iter().max_by_key(|a| a.start_unix_ms).cloned();
    if let Ok(output) = host
        .run_raw(TOOL, &["info", "--json", "--bypass-lock", location], env)
        .await
        && output.status == Some(0)
    {
        out.repository_size_bytes = parse_repository_size(&String::from_utf8_lossy(&output.stdout));
    }
    let archive_spec = latest.as_ref().map(|a| format!("{location}::{}", a.name));
    if let (Some(latest), Some(spec)) = (&latest, &archive_spec) {
        out.last_success_unix_ms = Some(latest.start_unix_ms);
        if let Ok(output) = host
            .run_raw(TOOL, &["info", "--json", "--bypass-lock", spec], env)
            .await
            && output.status == Some(0)
        {
            out.paths = parse_archive_paths(&String::from_utf8_lossy(&output.stdout));
        }
    }

    let remembered: &mut Remembered = memory.entry(TOOL, &repo.name);
    if Remembered::due(
        remembered.integrity_check.as_ref(),
        repo.check_interval_secs,
        now_unix_ms,
    ) {
        let result = match host
            .run_raw_within(TOOL, &["check", location], env, repo.check_timeout)
            .await
        {
            Ok(output) => RunResult {
                at_unix_ms: now_unix_ms,
                passed: output.status == Some(0),
                detail: super::redact_message(&if output.status == Some(0) {
                    "borg check of the repository and archives: no problems found".to_owned()
                } else {
                    format!(
                        "borg check failed (exit {}): {}",
                        output
                            .status
                            .map_or_else(|| "by signal".to_owned(), |s| s.to_string()),
                        first_lines(output.stderr.trim(), 4)
                    )
                }),
            },
            Err(error) => RunResult {
                at_unix_ms: now_unix_ms,
                passed: false,
                detail: super::redact_message(&format!("borg check could not run: {error}")),
            },
        };
        remembered.integrity_check = Some(result);
    }
    if let (Some(latest), Some(spec)) = (&latest, &archive_spec)
        && Remembered::due(
            remembered.restore_test.as_ref(),
            repo.restore_test_interval_secs,
            now_unix_ms,
        )
    {
        let result = restore_test(host, spec, &latest.name, repo, env, &clock, now_unix_ms).await;
        remembered.restore_test = Some(result);
    }
    out.integrity_check.clone_from(&remembered.integrity_check);
    out.restore_test.clone_from(&remembered.restore_test);
    out
}

async fn restore_test(
    host: &Host,
    spec: &str,
    name: &str,
    repo: &super::Repository,
    env: &[(&str, &str)],
    clock: &LocalClock,
    now_unix_ms: i64,
) -> RunResult {
    // borg 1.x cannot list one directory, so the listing is limited by depth with a pattern and
    // deepened until it offers enough files; a level too big for the output cap ends the search
    // with what the shallower levels gave.
    let mut listing = String::new();
    for depth in 1..=MAX_DEPTH {
        let include = format!("--pattern=+ re:^([^/]+/){{0,{depth}}}[^/]+$");
        let args = [
            "list",
            "--json-lines",
            "--bypass-lock",
            include.as_str(),
            "--pattern=- re:.",
            spec,
        ];
        match host.run_raw(TOOL, &args, env).await {
            Ok(output) if output.status == Some(0) => {
                listing = String::from_utf8_lossy(&output.stdout).into_owned();
                if parse_items(&listing, clock).len() >= ENOUGH_FILES {
                    break;
                }
            }
            Ok(output) => {
                return RunResult {
                    at_unix_ms: now_unix_ms,
                    passed: false,
                    detail: super::redact_message(&format!(
                        "borg list of archive {name} failed: {}",
                        first_lines(output.stderr.trim(), 3)
                    )),
                };
            }
            Err(crate::host::HostError::OutputTooLarge { .. }) if !listing.is_empty() => break,
            Err(error) => {
                return RunResult {
                    at_unix_ms: now_unix_ms,
                    passed: false,
                    detail: super::redact_message(&format!("borg list could not run: {error}")),
                };
            }
        }
    }
    let candidates = parse_items(&listing, clock);
    restore::run(
        host,
        &format!("archive {name}"),
        candidates,
        repo,
        now_unix_ms,
        |path| {
            let argv = ["extract", "--stdout", "--bypass-lock", spec, path].map(str::to_owned);
            (TOOL.to_owned(), argv.to_vec())
        },
        env,
    )
    .await
}

/// `borg 1.2.4` -> `1.2.4`.
pub(crate) fn parse_version(stdout: &str) -> Option<String> {
    let mut words = stdout.split_whitespace();
    (words.next() == Some("borg")).then_some(())?;
    words.next().map(str::to_owned)
}

/// One archive of `borg list --json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Archive {
    pub name: String,
    pub start_unix_ms: i64,
}

const BORG_TIME: &str = "%Y-%m-%dT%H:%M:%S%.f";

/// Parses `borg list --json REPO`.
pub(crate) fn parse_list(text: &str, clock: &LocalClock) -> Result<Vec<Archive>, String> {
    #[derive(Deserialize)]
    struct List {
        archives: Vec<Raw>,
    }
    #[derive(Deserialize)]
    struct Raw {
        name: String,
        start: Option<String>,
        time: Option<String>,
    }
    let list: List = serde_json::from_str(text.trim())
        .map_err(|e| format!("borg list printed no valid JSON: {e}"))?;
    list.archives
        .into_iter()
        .map(|a| {
            let time = a.start.or(a.time).unwrap_or_default();
            let start_unix_ms = clock
                .parse(&time, BORG_TIME)
                .map_err(|e| format!("archive {}: {e}", a.name))?;
            Ok(Archive {
                name: a.name,
                start_unix_ms,
            })
        })
        .collect()
}

/// The repository's size on disk: `cache.stats.unique_csize` of `borg info --json REPO`.
pub(crate) fn parse_repository_size(text: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(text.trim())
        .ok()?
        .pointer("/cache/stats/unique_csize")?
        .as_u64()
}

/// The paths an archive was created from: the arguments after `REPO::ARCHIVE` in its
/// `command_line` that are not options (borg 1.x records no other list of paths).
pub(crate) fn parse_archive_paths(text: &str) -> Vec<String> {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(text.trim()) else {
        return Vec::new();
    };
    let Some(line) = value
        .pointer("/archives/0/command_line")
        .and_then(serde_json::Value::as_array)
    else {
        return Vec::new();
    };
    let words: Vec<&str> = line.iter().filter_map(serde_json::Value::as_str).collect();
    let Some(at) = words.iter().position(|w| w.contains("::")) else {
        return Vec::new();
    };
    words[at + 1..]
        .iter()
        .filter(|w| !w.starts_with('-'))
        .map(|w| (*w).to_owned())
        .collect()
}

/// The regular files of `borg list --json-lines REPO::ARCHIVE`. borg stores paths without the
/// leading `/`; mtimes are local times.
pub(crate) fn parse_items(text: &str, clock: &LocalClock) -> Vec<Candidate> {
    #[derive(Deserialize)]
    struct Item {
        #[serde(rename = "type")]
        kind: Option<String>,
        path: Option<String>,
        size: Option<u64>,
        mtime: Option<String>,
    }
    text.lines()
        .filter_map(|line| serde_json::from_str::<Item>(line).ok())
        .filter(|item| item.kind.as_deref() == Some("-"))
        .filter_map(|item| {
            let path = item.path?;
            Some(Candidate {
                size: item.size?,
                mtime_unix_secs: item
                    .mtime
                    .and_then(|m| clock.parse(&m, BORG_TIME).ok())
                    .map(|ms| ms.div_euclid(1000)),
                sources: vec![format!("/{}", path.trim_start_matches('/'))],
                archive_path: path,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
