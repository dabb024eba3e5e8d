//! The checks: each observes one kind of fact through a [`Host`] and reports it as an
//! [`Observation`]. Agents observe, the collector judges (DESIGN principle 1): an outcome holds
//! facts, never "compliant".
//!
//! **Invariant:** a check that cannot run yields [`Outcome::Error`] with the reason; it never
//! panics and never makes the other checks fail.

pub mod backup;
pub mod disk_encryption;
pub mod inventory;
pub mod patch;
mod powershell;

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tracing::Instrument as _;

use crate::host::Host;

/// The checks this agent knows, a closed set (STYLE 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// Host identity and platform facts (ISO 27001:2022 A.5.9).
    Inventory,
    /// Pending and security updates, last install, automatic updates, pending reboot (A.8.8).
    Patch,
    /// Encryption of every volume, and of the system, data and swap as a whole (A.8.24, A.8.1).
    DiskEncryption,
    /// Backup recency, snapshot counts, integrity checks and restore tests (A.8.13).
    Backup,
}

impl CheckKind {
    /// Every check, in the order `run_all` runs them.
    pub const ALL: &'static [CheckKind] = &[
        CheckKind::Inventory,
        CheckKind::Patch,
        CheckKind::DiskEncryption,
        CheckKind::Backup,
    ];

    /// The snake_case name used in evidence, logs and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Inventory => "inventory",
            CheckKind::Patch => "patch",
            CheckKind::DiskEncryption => "disk_encryption",
            CheckKind::Backup => "backup",
        }
    }
}

impl std::fmt::Display for CheckKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One run of one check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub check: CheckKind,
    /// When the check finished, in milliseconds since the Unix epoch (the agent's clock).
    pub observed_at_unix_ms: i64,
    pub outcome: Outcome,
}

/// What a check found, or why it could not find anything.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
// One outcome is made per check run and moved a handful of times; boxing the facts would only
// make every match and constructor noisier.
#[allow(clippy::large_enum_variant)]
pub enum Outcome {
    Inventory(inventory::InventoryFacts),
    Patch(patch::PatchFacts),
    DiskEncryption(disk_encryption::DiskEncryptionFacts),
    Backup(backup::BackupFacts),
    Error(CheckError),
}

/// A fact a check tried to read and could not: an absent fact is never silent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnreadableFact {
    /// The fact's field name, e.g. `hardware_serial` or `last_install`.
    pub fact: String,
    /// Why, e.g. `permission denied: /sys/class/dmi/id/product_serial`.
    pub reason: String,
}

/// Why a check could not run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckError {
    /// What went wrong, for a person: e.g. `neither the hostname nor the OS name could be read`.
    pub reason: String,
    /// The underlying errors, if any: e.g. `hostname: file not found: /proc/sys/kernel/hostname`.
    pub source: Option<String>,
}

impl CheckError {
    pub fn new(reason: impl Into<String>) -> CheckError {
        CheckError {
            reason: reason.into(),
            source: None,
        }
    }

    pub fn with_source(mut self, source: impl Into<String>) -> CheckError {
        self.source = Some(source.into());
        self
    }
}

impl std::fmt::Display for CheckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Some(source) => write!(f, "{}: {source}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

/// What checks need besides the host: what the agent was told (backup sources) and what it
/// remembers between cycles (when integrity checks and restore tests last ran).
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// Labels from the agent's config, reported with the inventory.
    pub tags: Vec<String>,
    pub backup_sources: Vec<backup::Declared>,
    pub backup_memory: backup::BackupMemory,
}

/// Runs every check once against `host`; a check that cannot run yields [`Outcome::Error`],
/// never a panic.
pub async fn run_all(host: &Host, context: &mut Context) -> Vec<Observation> {
    let mut observations = Vec::with_capacity(CheckKind::ALL.len());
    for &kind in CheckKind::ALL {
        observations.push(run(kind, host, context).await);
    }
    observations
}

/// Runs one check against `host`.
pub async fn run(kind: CheckKind, host: &Host, context: &mut Context) -> Observation {
    let span = tracing::info_span!("check", check = %kind, os = %host.os_family());
    let outcome = async {
        let outcome = match kind {
            CheckKind::Inventory => inventory::collect(host).await.map(|mut facts| {
                facts.tags = context.tags.clone();
                Outcome::Inventory(facts)
            }),
            CheckKind::Patch => patch::collect(host).await.map(Outcome::Patch),
            CheckKind::DiskEncryption => disk_encryption::collect(host)
                .await
                .map(Outcome::DiskEncryption),
            CheckKind::Backup => {
                backup::collect(host, &context.backup_sources, &mut context.backup_memory)
                    .await
                    .map(Outcome::Backup)
            }
        };
        match outcome {
            Ok(outcome) => outcome,
            Err(error) => {
                tracing::warn!(%error, "check failed");
                Outcome::Error(error)
            }
        }
    }
    .instrument(span)
    .await;
    Observation {
        check: kind,
        observed_at_unix_ms: now_unix_ms(),
        outcome,
    }
}

/// Runs a command and returns its output when it exited with one of `ok_statuses`, or the
/// reason it gave none (missing program, timeout, other status with its stderr).
pub(crate) async fn run_expecting(
    host: &Host,
    program: &str,
    args: &[&str],
    ok_statuses: &[i32],
) -> Result<crate::host::CommandOutput, String> {
    let output = host
        .run(program, args)
        .await
        .map_err(|error| error.to_string())?;
    if output.status.is_some_and(|s| ok_statuses.contains(&s)) {
        return Ok(output);
    }
    let status = output
        .status
        .map_or_else(|| "a signal".to_owned(), |code| format!("status {code}"));
    let argv = crate::host::display_argv(program, args);
    let stderr = output.stderr.trim();
    if stderr.is_empty() {
        Err(format!("`{argv}` exited with {status}"))
    } else {
        Err(format!(
            "`{argv}` exited with {status}: {}",
            first_lines(stderr, 5)
        ))
    }
}

/// The first `n` lines of `text`, for error messages that must stay short.
pub(crate) fn first_lines(text: &str, n: usize) -> String {
    let mut lines: Vec<&str> = text.lines().take(n + 1).collect();
    if lines.len() > n {
        lines.truncate(n);
        lines.push("…");
    }
    lines.join(" / ")
}

/// Milliseconds since the Unix epoch, now (the agent's clock).
pub(crate) fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
