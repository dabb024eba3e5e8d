//! The agent's configuration file: parsed strictly, then validated into `RunConfig`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::checks::backup::{BackupFile, Declared};
use crate::tls::{CollectorUrl, parse_fingerprint};

pub const DEFAULT_INTERVAL_SECS: u64 = 3600;
pub const DEFAULT_JITTER_SECS: u64 = 300;
pub const DEFAULT_COMMAND_TIMEOUT_SECS: u64 = 30;
pub const DEFAULT_MAX_BATCH_ITEMS: usize = 500;
/// 64 MiB: weeks of hourly cycles, even with thousands of pending updates per cycle.
pub const DEFAULT_MAX_SPOOL_BYTES: u64 = 64 * 1024 * 1024;
/// The token file's name in the state directory when `[enrollment] token_file` is not set.
pub const DEFAULT_TOKEN_FILE_NAME: &str = "enrollment-token";

/// `agent.toml` as written; every key optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub state_dir: Option<PathBuf>,
    pub interval_secs: Option<u64>,
    pub jitter_secs: Option<u64>,
    pub command_timeout_secs: Option<u64>,
    pub max_batch_items: Option<usize>,
    /// The most bytes the spool of undelivered evidence may hold; beyond, the oldest is dropped
    /// and a gap record says so.
    pub max_spool_bytes: Option<u64>,
    /// Labels for this host that the collector's policy can scope rules to, e.g. "laptop".
    pub tags: Option<Vec<String>>,
    /// The backup repositories and jobs to report on (see `checks::backup::config`).
    pub backup: Option<BackupFile>,
    /// Unattended enrolment: where to enrol when the state directory holds no identity yet.
    pub enrollment: Option<EnrollmentFile>,
}

/// `[enrollment]` as written: what `run` needs to enrol by itself on first start.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentFile {
    /// The collector, as https://HOST:PORT.
    pub collector: Option<String>,
    /// The collector CA's SHA-256 fingerprint (`evident-collector ca fingerprint`).
    pub ca_fingerprint: Option<String>,
    /// The file the deployment tool places the token in; deleted after a successful enrolment.
    pub token_file: Option<PathBuf>,
}

/// Unattended enrolment, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoEnroll {
    pub collector: CollectorUrl,
    pub ca_fingerprint: [u8; 32],
    pub token_file: PathBuf,
}

/// Everything `run` needs, validated.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub state_dir: PathBuf,
    /// Time between check cycles.
    pub interval: Duration,
    /// Up to this much is added to each interval, at random, so a fleet does not report in step.
    pub jitter: Duration,
    pub command_timeout: Duration,
    pub max_batch_items: usize,
    pub max_spool_bytes: u64,
    pub backup_sources: Vec<Declared>,
    pub tags: Vec<String>,
    /// A recorded host to observe instead of this machine (`run --replay`).
    pub replay: Option<PathBuf>,
    /// Set when the config has an `[enrollment]` section.
    pub auto_enroll: Option<AutoEnroll>,
}

impl EnrollmentFile {
    fn validate(self, state_dir: &Path) -> anyhow::Result<AutoEnroll> {
        let collector = self.collector.context(
            "enrollment.collector is missing: write the collector's address as https://HOST:PORT",
        )?;
        let collector = CollectorUrl::parse(&collector)
            .map_err(|e| anyhow::anyhow!("enrollment.collector: {e:#}"))?;
        let fingerprint = self.ca_fingerprint.context(
            "enrollment.ca_fingerprint is missing: copy it from `evident-collector ca fingerprint`",
        )?;
        let ca_fingerprint = parse_fingerprint(&fingerprint)
            .map_err(|e| anyhow::anyhow!("enrollment.ca_fingerprint: {e:#}"))?;
        let token_file = self
            .token_file
            .unwrap_or_else(|| state_dir.join(DEFAULT_TOKEN_FILE_NAME));
        if token_file.as_os_str().is_empty() || token_file.file_name().is_none() {
            bail!(
                "enrollment.token_file {:?} names no file: give the path the deployment tool writes the token to",
                token_file
            );
        }
        Ok(AutoEnroll {
            collector,
            ca_fingerprint,
            token_file,
        })
    }
}

impl FileConfig {
    pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read config file {}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))
    }

    /// The validated `[backup]` sources (none when the section is absent).
    pub fn backup_sources(&self) -> anyhow::Result<Vec<Declared>> {
        match &self.backup {
            Some(backup) => backup.validate().map_err(|e| anyhow::anyhow!(e)),
            None => Ok(Vec::new()),
        }
    }

    /// The validated `tags`: 1 to 64 letters, digits, '-', '_' or '.', at most 32 of them.
    pub fn tags(&self) -> anyhow::Result<Vec<String>> {
        let tags = self.tags.clone().unwrap_or_default();
        if tags.len() > 32 {
            bail!("tags has {} entries: at most 32 are allowed", tags.len());
        }
        for tag in &tags {
            let valid = !tag.is_empty()
                && tag.len() <= 64
                && tag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !valid {
                bail!("tags: {tag:?} is not a tag: use 1 to 64 letters, digits, '-', '_' or '.'");
            }
        }
        Ok(tags)
    }

    pub fn validate(self, state_dir: Option<PathBuf>) -> anyhow::Result<RunConfig> {
        let backup_sources = self.backup_sources()?;
        let tags = self.tags()?;
        let state_dir = state_dir.or(self.state_dir).context(
            "no state directory: pass --state-dir DIR or set state_dir in the config file",
        )?;
        let interval = self.interval_secs.unwrap_or(DEFAULT_INTERVAL_SECS);
        if !(10..=7 * 86_400).contains(&interval) {
            bail!("interval_secs is {interval}: it must be between 10 and 604800 (a week)");
        }
        let jitter = self
            .jitter_secs
            .unwrap_or(DEFAULT_JITTER_SECS.min(interval / 2));
        if jitter > interval {
            bail!("jitter_secs is {jitter}: it must not exceed interval_secs ({interval})");
        }
        let timeout = self
            .command_timeout_secs
            .unwrap_or(DEFAULT_COMMAND_TIMEOUT_SECS);
        if !(1..=3600).contains(&timeout) {
            bail!("command_timeout_secs is {timeout}: it must be between 1 and 3600");
        }
        let max_batch_items = self.max_batch_items.unwrap_or(DEFAULT_MAX_BATCH_ITEMS);
        if !(1..=10_000).contains(&max_batch_items) {
            bail!("max_batch_items is {max_batch_items}: it must be between 1 and 10000");
        }
        let max_spool_bytes = self.max_spool_bytes.unwrap_or(DEFAULT_MAX_SPOOL_BYTES);
        if max_spool_bytes < 64 * 1024 {
            bail!(
                "max_spool_bytes is {max_spool_bytes}: it must be at least 65536 (64 KiB) to hold one cycle"
            );
        }
        let auto_enroll = self
            .enrollment
            .map(|enrollment| enrollment.validate(&state_dir))
            .transpose()?;
        Ok(RunConfig {
            replay: None,
            tags,
            auto_enroll,
            max_spool_bytes,
            backup_sources,
            state_dir,
            interval: Duration::from_secs(interval),
            jitter: Duration::from_secs(jitter),
            command_timeout: Duration::from_secs(timeout),
            max_batch_items,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<RunConfig> {
        let file: FileConfig = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        file.validate(None)
    }

    #[test]
    fn the_example_config_is_valid() {
        let config = parse(include_str!("../../deploy/agent.toml")).expect("deploy/agent.toml");
        assert_eq!(config.interval, Duration::from_secs(DEFAULT_INTERVAL_SECS));
    }

    #[test]
    fn the_macos_and_windows_configs_are_valid() {
        for text in [
            include_str!("../../deploy/macos/agent.toml"),
            include_str!("../../deploy/windows/agent.toml"),
        ] {
            let config = parse(text).expect("valid");
            assert!(
                config.state_dir.to_string_lossy().ends_with("agent"),
                "{config:?}"
            );
        }
    }

    #[test]
    fn an_enrollment_section_defaults_the_token_file_into_the_state_directory() {
        let fingerprint = "ab".repeat(32);
        let config = parse(&format!(
            "state_dir = \"/var/lib/evident-agent\"\n[enrollment]\ncollector = \"https://collector.example:7443\"\nca_fingerprint = \"{fingerprint}\"\n"
        ))
        .expect("valid");
        let auto = config.auto_enroll.expect("auto enrolment");
        assert_eq!(auto.collector.to_string(), "https://collector.example:7443");
        assert_eq!(auto.ca_fingerprint, [0xab; 32]);
        assert_eq!(
            auto.token_file,
            PathBuf::from("/var/lib/evident-agent/enrollment-token")
        );
        assert!(
            parse("state_dir = \"/x\"")
                .expect("valid")
                .auto_enroll
                .is_none()
        );
    }

    #[test]
    fn a_bad_enrollment_section_names_its_key() {
        let fingerprint = "ab".repeat(32);
        for (section, key) in [
            (
                format!("ca_fingerprint = \"{fingerprint}\""),
                "enrollment.collector",
            ),
            (
                "collector = \"https://c:1\"".to_owned(),
                "enrollment.ca_fingerprint",
            ),
            (
                format!("collector = \"http://c:1\"\nca_fingerprint = \"{fingerprint}\""),
                "enrollment.collector",
            ),
            (
                "collector = \"https://c:1\"\nca_fingerprint = \"12:34\"".to_owned(),
                "enrollment.ca_fingerprint",
            ),
            (
                format!(
                    "collector = \"https://c:1\"\nca_fingerprint = \"{fingerprint}\"\ntoken = \"x\""
                ),
                "token",
            ),
        ] {
            let error =
                parse(&format!("state_dir = \"/x\"\n[enrollment]\n{section}\n")).expect_err(key);
            assert!(error.to_string().contains(key), "{key}: {error}");
        }
    }

    #[test]
    fn bad_values_name_their_key() {
        let unknown = parse("state_dir = \"/x\"\nintervall_secs = 5").expect_err("unknown");
        assert!(unknown.to_string().contains("intervall_secs"), "{unknown}");
        let short = parse("state_dir = \"/x\"\ninterval_secs = 1").expect_err("short");
        assert!(short.to_string().contains("interval_secs"), "{short}");
        let jitter =
            parse("state_dir = \"/x\"\ninterval_secs = 60\njitter_secs = 61").expect_err("jitter");
        assert!(jitter.to_string().contains("jitter_secs"), "{jitter}");
        let tag = parse("state_dir = \"/x\"\ntags = [\"a b\"]").expect_err("tag");
        assert!(tag.to_string().contains("tags"), "{tag}");
        let wrong_type = parse("state_dir = 5").expect_err("type");
        assert!(wrong_type.to_string().contains("state_dir"), "{wrong_type}");
        assert!(
            parse("")
                .expect_err("no state dir")
                .to_string()
                .contains("--state-dir")
        );
    }
}
