//! The restore test restic and borg share: a few files of the newest snapshot are restored and
//! compared by SHA-256.
//!
//! Files are restored to memory (`restic dump`, `borg extract --stdout`) rather than to a
//! temporary directory: nothing is written to the endpoint, nothing can be left behind, and
//! the commands record and replay like any other. Both tools verify every chunk they read
//! against its own hash, so a corrupt pack or segment fails the restore. Where a restored file's
//! source is still on this host with the size and modification time it had when it was backed
//! up, the restored bytes must also hash like the source file.

use ring::digest::{SHA256, digest};

use super::{Repository, RunResult};
use crate::checks::first_lines;
use crate::host::Host;

/// A file of a snapshot that could be restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Candidate {
    /// The path as the tool names it inside the snapshot or archive.
    pub archive_path: String,
    pub size: u64,
    /// The modification time recorded in the backup, in seconds.
    pub mtime_unix_secs: Option<i64>,
    /// Where the file may live on this host.
    pub sources: Vec<String>,
}

/// Picks up to `count` files of 1 to `max_bytes` bytes, spread evenly over the snapshot in
/// path order, so that consecutive runs with the same snapshot test the same files.
pub(crate) fn pick(mut candidates: Vec<Candidate>, count: u32, max_bytes: u64) -> Vec<Candidate> {
    candidates.retain(|c| c.size > 0 && c.size <= max_bytes);
    candidates.sort_by(|a, b| a.archive_path.cmp(&b.archive_path));
    let count = usize::try_from(count)
        .unwrap_or(usize::MAX)
        .min(candidates.len());
    if count == 0 {
        return Vec::new();
    }
    let step = candidates.len() / count;
    (0..count)
        .filter_map(|i| candidates.get(i * step).cloned())
        .collect()
}

/// `find … -maxdepth 0 -printf '%s %T@ %p\n'`: path -> (size, whole seconds of mtime).
pub(crate) fn parse_sizes_and_times(
    stdout: &str,
) -> std::collections::BTreeMap<String, (u64, i64)> {
    stdout
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ' ');
            let size = parts.next()?.parse().ok()?;
            let secs: f64 = parts.next()?.parse().ok()?;
            #[allow(clippy::cast_possible_truncation)]
            let secs = secs.floor() as i64;
            Some((parts.next()?.to_owned(), (size, secs)))
        })
        .collect()
}

/// Restores the picked files of `what` (e.g. `snapshot 33520a64`) with the command
/// `dump(archive_path)` returns, and judges them.
pub(super) async fn run(
    host: &Host,
    what: &str,
    candidates: Vec<Candidate>,
    repo: &Repository,
    now_unix_ms: i64,
    dump: impl Fn(&str) -> (String, Vec<String>),
    env: &[(&str, &str)],
) -> RunResult {
    let result = |passed: bool, detail: String| RunResult {
        at_unix_ms: now_unix_ms,
        passed,
        detail: super::redact_message(&detail),
    };
    let picked = pick(
        candidates,
        repo.restore_test_files,
        repo.restore_test_max_bytes,
    );
    if picked.is_empty() {
        return result(
            false,
            format!(
                "nothing to restore: {what} has no file of 1 to {} bytes (raise restore_test_max_bytes)",
                repo.restore_test_max_bytes
            ),
        );
    }
    let mut find_args: Vec<&str> = picked
        .iter()
        .flat_map(|c| c.sources.iter().map(String::as_str))
        .collect();
    find_args.extend(["-maxdepth", "0", "-printf", "%s %T@ %p\\n"]);
    let on_host = match host.run("find", &find_args).await {
        Ok(output) => parse_sizes_and_times(&output.stdout),
        Err(_) => Default::default(),
    };
    let (mut bytes, mut by_hash) = (0u64, 0usize);
    for candidate in &picked {
        let (program, argv) = dump(&candidate.archive_path);
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        let output = match host.run_raw(&program, &args, env).await {
            Ok(output) => output,
            Err(error) => {
                return result(
                    false,
                    format!("restoring {} failed: {error}", candidate.archive_path),
                );
            }
        };
        if output.status != Some(0) {
            return result(
                false,
                format!(
                    "restoring {} from {what} failed (exit {}): {}",
                    candidate.archive_path,
                    output
                        .status
                        .map_or_else(|| "by signal".to_owned(), |s| s.to_string()),
                    first_lines(output.stderr.trim(), 3)
                ),
            );
        }
        let restored = u64::try_from(output.stdout.len()).unwrap_or(u64::MAX);
        if restored != candidate.size {
            return result(
                false,
                format!(
                    "restoring {} from {what} gave {restored} bytes, the backup lists {}",
                    candidate.archive_path, candidate.size
                ),
            );
        }
        bytes += restored;
        let unchanged = candidate.sources.iter().find(|path| {
            on_host.get(path.as_str()).is_some_and(|&(size, secs)| {
                size == candidate.size && Some(secs) == candidate.mtime_unix_secs
            })
        });
        if let Some(source) = unchanged
            && let Ok(original) = host.read_bytes(source).await
        {
            if digest(&SHA256, &original).as_ref() != digest(&SHA256, &output.stdout).as_ref() {
                return result(
                    false,
                    format!(
                        "restored {} differs by SHA-256 from {source}, which has not changed since the backup",
                        candidate.archive_path
                    ),
                );
            }
            by_hash += 1;
        }
    }
    result(
        true,
        format!(
            "{} files ({bytes} bytes) restored from {what}; {by_hash} matched their unchanged source by SHA-256, {} were checked by size (source changed or not on this host)",
            picked.len(),
            picked.len() - by_hash
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(path: &str, size: u64) -> Candidate {
        Candidate {
            archive_path: path.to_owned(),
            size,
            mtime_unix_secs: None,
            sources: vec![path.to_owned()],
        }
    }

    #[test]
    fn picks_small_files_spread_over_the_snapshot() {
        let all: Vec<Candidate> = (0..10).map(|i| candidate(&format!("/f{i}"), 10)).collect();
        let mut with_big = all.clone();
        with_big.push(candidate("/big", 1_000_000));
        with_big.push(candidate("/empty", 0));
        let picked: Vec<String> = pick(with_big, 3, 100)
            .into_iter()
            .map(|c| c.archive_path)
            .collect();
        assert_eq!(picked, vec!["/f0", "/f3", "/f6"]);
        assert!(pick(vec![candidate("/big", 1000)], 3, 100).is_empty());
        assert_eq!(pick(all, 50, 100).len(), 10);
    }

    #[test]
    fn sizes_and_times_from_find() {
        let map =
            parse_sizes_and_times("1000 1764095861.3857821180 /tmp/a b\n12 17.9 /x\nnonsense\n");
        assert_eq!(map.get("/tmp/a b"), Some(&(1000, 1_764_095_861)));
        assert_eq!(map.get("/x"), Some(&(12, 17)));
        assert_eq!(map.len(), 2);
    }
}
