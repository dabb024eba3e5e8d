//! The collector's configuration file: parsed strictly, then validated into `ServeConfig`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::server::ServeConfig;

pub const DEFAULT_GRPC_LISTEN: &str = "127.0.0.1:7443";
/// The reviewers' web page (HTTPS); `off` turns it off.
pub const DEFAULT_WEB_LISTEN: &str = "127.0.0.1:8443";
pub const DEFAULT_AGENT_CERT_LIFETIME_DAYS: u64 = 90;
pub const DEFAULT_MAX_BATCH_ITEMS: usize = 1000;
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// The smallest `max_database_bytes`: below it the schema and a few batches barely fit.
pub const MIN_MAX_DATABASE_BYTES: u64 = 1024 * 1024;

/// `collector.toml` as written; every key optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub grpc_listen: Option<String>,
    /// The reviewers' web page and JSON API over HTTPS (default 127.0.0.1:8443), or "off".
    pub web_listen: Option<String>,
    pub server_names: Option<Vec<String>>,
    pub agent_certificate_lifetime_days: Option<u64>,
    pub max_batch_items: Option<usize>,
    pub max_message_bytes: Option<usize>,
    pub max_database_bytes: Option<u64>,
    /// Report streams open at once (default 20000); one more is answered `unavailable`.
    pub max_concurrent_streams: Option<usize>,
    /// Batches being stored at once (default 256); one more is answered `unavailable`.
    pub max_in_flight_batches: Option<usize>,
    /// The policy (see docs/policy.md); the built-in default when absent. Re-read on every
    /// evaluation tick and on SIGHUP; a file that does not validate is refused and the policy
    /// in force stays.
    pub policy_file: Option<PathBuf>,
    /// Seconds between evaluations of every host (default 300), for ages and silence; new
    /// evidence is judged as it arrives.
    pub evaluation_interval_secs: Option<u64>,
    /// Seconds between signed checkpoints over all evidence (default 3600); one is signed only
    /// when evidence arrived since the last (docs/transparency.md).
    pub checkpoint_interval_secs: Option<u64>,
}

/// Values given on the command line; they win over the file.
#[derive(Debug, Default)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub grpc_listen: Option<String>,
    pub web_listen: Option<String>,
    pub server_names: Vec<String>,
    pub max_database_bytes: Option<u64>,
    pub policy_file: Option<PathBuf>,
    pub evaluation_interval_secs: Option<u64>,
    pub checkpoint_interval_secs: Option<u64>,
}

/// Seconds between signed checkpoints, by default.
pub const DEFAULT_CHECKPOINT_INTERVAL_SECS: u64 = 3600;

/// Seconds between evaluations of every host, by default.
pub const DEFAULT_EVALUATION_INTERVAL_SECS: u64 = 300;

impl FileConfig {
    pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read config file {}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))
    }

    /// Merges command-line overrides and checks every value, naming the key that is wrong.
    pub fn validate(self, overrides: Overrides) -> anyhow::Result<ServeConfig> {
        let data_dir = overrides
            .data_dir
            .or(self.data_dir)
            .context("no data directory: pass --data-dir DIR or set data_dir in the config file")?;
        let listen = overrides
            .grpc_listen
            .or(self.grpc_listen)
            .unwrap_or_else(|| DEFAULT_GRPC_LISTEN.to_owned());
        let grpc_listen: SocketAddr = listen.parse().with_context(|| {
            format!(
                "grpc_listen {listen:?} is not an address: write it as IP:PORT, e.g. 0.0.0.0:7443"
            )
        })?;
        let web = overrides
            .web_listen
            .or(self.web_listen)
            .unwrap_or_else(|| DEFAULT_WEB_LISTEN.to_owned());
        let web_listen: Option<SocketAddr> = if web.trim() == "off" {
            None
        } else {
            Some(web.parse().with_context(|| {
                format!(
                    "web_listen {web:?} is not an address: write it as IP:PORT, e.g. 0.0.0.0:8443, or \"off\""
                )
            })?)
        };
        let mut server_names = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ];
        if !grpc_listen.ip().is_unspecified() {
            server_names.push(grpc_listen.ip().to_string());
        }
        for name in self
            .server_names
            .unwrap_or_default()
            .into_iter()
            .chain(overrides.server_names)
        {
            if name.trim().is_empty() {
                bail!("server_names contains an empty name");
            }
            server_names.push(name);
        }
        server_names.sort();
        server_names.dedup();
        let days = self
            .agent_certificate_lifetime_days
            .unwrap_or(DEFAULT_AGENT_CERT_LIFETIME_DAYS);
        if !(1..=825).contains(&days) {
            bail!("agent_certificate_lifetime_days is {days}: it must be between 1 and 825");
        }
        let max_batch_items = self.max_batch_items.unwrap_or(DEFAULT_MAX_BATCH_ITEMS);
        if !(1..=100_000).contains(&max_batch_items) {
            bail!("max_batch_items is {max_batch_items}: it must be between 1 and 100000");
        }
        let max_message_bytes = self.max_message_bytes.unwrap_or(DEFAULT_MAX_MESSAGE_BYTES);
        if !(64 * 1024..=64 * 1024 * 1024).contains(&max_message_bytes) {
            bail!(
                "max_message_bytes is {max_message_bytes}: it must be between 65536 and 67108864"
            );
        }
        let max_database_bytes = overrides.max_database_bytes.or(self.max_database_bytes);
        if let Some(bytes) = max_database_bytes
            && bytes < MIN_MAX_DATABASE_BYTES
        {
            bail!(
                "max_database_bytes is {bytes}: it must be at least {MIN_MAX_DATABASE_BYTES} (1 MiB), or left out for no cap"
            );
        }
        let max_concurrent_streams = self
            .max_concurrent_streams
            .unwrap_or(crate::ingest::DEFAULT_MAX_CONCURRENT_STREAMS);
        if !(1..=1_000_000).contains(&max_concurrent_streams) {
            bail!(
                "max_concurrent_streams is {max_concurrent_streams}: it must be between 1 and 1000000"
            );
        }
        let max_in_flight_batches = self
            .max_in_flight_batches
            .unwrap_or(crate::ingest::DEFAULT_MAX_IN_FLIGHT_BATCHES);
        if !(1..=100_000).contains(&max_in_flight_batches) {
            bail!(
                "max_in_flight_batches is {max_in_flight_batches}: it must be between 1 and 100000"
            );
        }
        let evaluation_interval_secs = overrides
            .evaluation_interval_secs
            .or(self.evaluation_interval_secs)
            .unwrap_or(DEFAULT_EVALUATION_INTERVAL_SECS);
        if !(1..=86_400).contains(&evaluation_interval_secs) {
            bail!(
                "evaluation_interval_secs is {evaluation_interval_secs}: it must be between 1 and 86400"
            );
        }
        let checkpoint_interval_secs = overrides
            .checkpoint_interval_secs
            .or(self.checkpoint_interval_secs)
            .unwrap_or(DEFAULT_CHECKPOINT_INTERVAL_SECS);
        if !(1..=86_400).contains(&checkpoint_interval_secs) {
            bail!(
                "checkpoint_interval_secs is {checkpoint_interval_secs}: it must be between 1 and 86400"
            );
        }
        let policy_file = overrides.policy_file.or(self.policy_file);
        Ok(ServeConfig {
            policy_file,
            evaluation_interval: Duration::from_secs(evaluation_interval_secs),
            checkpoint_interval: Duration::from_secs(checkpoint_interval_secs),
            data_dir,
            grpc_listen,
            web_listen,
            server_names,
            agent_cert_lifetime: Duration::from_secs(days * 86_400),
            max_batch_items,
            max_message_bytes,
            max_database_bytes,
            max_concurrent_streams,
            max_in_flight_batches,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<ServeConfig> {
        let file: FileConfig = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        file.validate(Overrides::default())
    }

    #[test]
    fn the_example_config_is_valid() {
        let text = include_str!("../../deploy/collector.toml");
        let config = parse(text).expect("deploy/collector.toml is valid");
        assert_eq!(config.max_batch_items, DEFAULT_MAX_BATCH_ITEMS);
        assert_eq!(config.max_database_bytes, None, "no cap by default");
        let capped = parse(&text.replace("# max_database_bytes", "max_database_bytes"))
            .expect("the commented max_database_bytes is valid once uncommented");
        assert_eq!(capped.max_database_bytes, Some(10 * 1024 * 1024 * 1024));
    }

    #[test]
    fn the_database_is_uncapped_unless_asked() {
        let config = parse("data_dir = \"/x\"").expect("valid");
        assert_eq!(config.max_database_bytes, None);
        let config = parse("data_dir = \"/x\"\nmax_database_bytes = 1048576").expect("1 MiB");
        assert_eq!(config.max_database_bytes, Some(1_048_576));
    }

    #[test]
    fn a_database_cap_under_one_mib_names_its_key() {
        let small = parse("data_dir = \"/x\"\nmax_database_bytes = 1048575").expect_err("small");
        assert!(small.to_string().contains("max_database_bytes"), "{small}");
        assert!(small.to_string().contains("1048576"), "{small}");
        let negative = parse("data_dir = \"/x\"\nmax_database_bytes = -1").expect_err("negative");
        assert!(
            negative.to_string().contains("max_database_bytes"),
            "{negative}"
        );
    }

    #[test]
    fn the_flag_wins_over_the_file() {
        let file: FileConfig =
            toml::from_str("data_dir = \"/x\"\nmax_database_bytes = 1048576").expect("toml");
        let config = file
            .validate(Overrides {
                max_database_bytes: Some(2 * 1024 * 1024),
                ..Overrides::default()
            })
            .expect("valid");
        assert_eq!(config.max_database_bytes, Some(2 * 1024 * 1024));
        let file: FileConfig =
            toml::from_str("data_dir = \"/x\"\nmax_database_bytes = 4194304").expect("toml");
        let small = file
            .validate(Overrides {
                max_database_bytes: Some(1000),
                ..Overrides::default()
            })
            .expect_err("the flag is validated too");
        assert!(small.to_string().contains("max_database_bytes"), "{small}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let unknown = parse("data_dir = \"/x\"\ngrpc_lissen = \"1\"").expect_err("unknown key");
        assert!(unknown.to_string().contains("grpc_lissen"), "{unknown}");
        let address =
            parse("data_dir = \"/x\"\ngrpc_listen = \"nowhere\"").expect_err("bad address");
        assert!(address.to_string().contains("grpc_listen"), "{address}");
        let days =
            parse("data_dir = \"/x\"\nagent_certificate_lifetime_days = 0").expect_err("zero");
        assert!(
            days.to_string().contains("agent_certificate_lifetime_days"),
            "{days}"
        );
        let missing = parse("").expect_err("no data dir");
        assert!(missing.to_string().contains("--data-dir"), "{missing}");
    }
}
