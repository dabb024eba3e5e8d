//! `checkpoint` and `bundle` commands: signed checkpoints, consistency proofs and evidence
//! bundles (docs/transparency.md).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;

use super::{DataDirArg, DayEdge, open_store, parse_moment};
use crate::bundle;
use crate::ca::{CaPaths, CertificateAuthority};
use crate::model::{format_unix_ms, now_unix_ms};
use crate::transparency::checkpoint::{CheckpointJson, SignedCheckpoint, read_ca_pem};
use crate::transparency::{self, ConsistencyProof, Created};

#[derive(Debug, Subcommand)]
pub enum CheckpointCommand {
    /// Sign a checkpoint over all evidence now (when any arrived since the latest).
    Create {
        #[command(flatten)]
        data_dir: DataDirArg,
        /// Print the checkpoint as JSON (the file an auditor keeps).
        #[arg(long)]
        json: bool,
    },
    /// List every checkpoint, oldest first.
    List {
        #[command(flatten)]
        data_dir: DataDirArg,
        #[arg(long)]
        json: bool,
    },
    /// Show one checkpoint (default: the latest); `--json` prints the file an auditor keeps.
    Show {
        #[command(flatten)]
        data_dir: DataDirArg,
        /// The checkpoint's number, as `checkpoint list` shows it.
        #[arg(value_name = "ID")]
        id: Option<i64>,
        #[arg(long)]
        json: bool,
    },
    /// Print, as JSON, the proof that the tree of OLD rows is a prefix of the tree of NEW rows.
    Prove {
        #[command(flatten)]
        data_dir: DataDirArg,
        /// The tree size of the checkpoint the auditor kept.
        #[arg(long, value_name = "N")]
        old_size: u64,
        /// The newer tree size (default: the latest checkpoint's).
        #[arg(long, value_name = "M")]
        new_size: Option<u64>,
    },
    /// Offline: check that NEW extends OLD, with nothing but the CA certificate.
    VerifyConsistency {
        /// The checkpoint kept earlier (JSON from `checkpoint show --json`).
        #[arg(long, value_name = "FILE")]
        old: PathBuf,
        /// The newer checkpoint (JSON).
        #[arg(long, value_name = "FILE")]
        new: PathBuf,
        /// The proof from `checkpoint prove`.
        #[arg(long, value_name = "FILE")]
        proof: PathBuf,
        /// The collector's CA certificate (DATA_DIR/tls/ca.pem).
        #[arg(long, value_name = "FILE")]
        ca: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Write the evidence that arrived in a period, signed, into one file.
    Export {
        #[command(flatten)]
        data_dir: DataDirArg,
        /// Start of the period: 2026-10-01 (start of that UTC day) or an RFC 3339 time.
        #[arg(long, value_name = "DATE")]
        from: String,
        /// End of the period: 2026-12-31 (end of that UTC day) or an RFC 3339 time.
        #[arg(long, value_name = "DATE")]
        to: String,
        /// The bundle file to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Offline: check a bundle with nothing but the CA certificate; exits 1 naming every item
    /// altered or missing.
    Verify {
        /// The bundle file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The collector's CA certificate (DATA_DIR/tls/ca.pem).
        #[arg(long, value_name = "FILE")]
        ca: PathBuf,
    },
}

pub fn checkpoint_command(command: CheckpointCommand) -> anyhow::Result<u8> {
    match command {
        CheckpointCommand::Create { data_dir, json } => {
            let store = open_store(&data_dir.data_dir)?;
            let ca = CertificateAuthority::load(&CaPaths::new(&data_dir.data_dir))?;
            let (checkpoint, new) =
                match transparency::create_checkpoint(&store, &ca, now_unix_ms())? {
                    Created::New(c) => (c, true),
                    Created::Unchanged(Some(c)) => (c, false),
                    Created::Unchanged(None) => {
                        anyhow::bail!("no evidence is stored yet: there is nothing to sign")
                    }
                };
            if !new {
                eprintln!(
                    "no evidence arrived since checkpoint {}: it still covers everything",
                    checkpoint.id
                );
            }
            print_checkpoint(&checkpoint, json)?;
            Ok(0)
        }
        CheckpointCommand::List { data_dir, json } => {
            let checkpoints = transparency::list_checkpoints(&open_store(&data_dir.data_dir)?)?;
            if json {
                let all: Vec<CheckpointJson> = checkpoints.iter().map(|c| c.to_json()).collect();
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else if checkpoints.is_empty() {
                println!("no checkpoint signed yet");
            } else {
                println!("{:>6}  {:<24} {:>10}  ROOT", "ID", "SIGNED", "ROWS");
                for c in &checkpoints {
                    println!(
                        "{:>6}  {:<24} {:>10}  {}",
                        c.id,
                        format_unix_ms(c.checkpoint.signed_at_ms),
                        c.checkpoint.tree_size,
                        hex::encode(c.checkpoint.root_hash)
                    );
                }
            }
            Ok(0)
        }
        CheckpointCommand::Show { data_dir, id, json } => {
            let store = open_store(&data_dir.data_dir)?;
            let checkpoint = match id {
                Some(id) => transparency::checkpoint_by_id(&store, id)?.with_context(|| {
                    format!("no checkpoint {id}: `evident-collector checkpoint list` shows them")
                })?,
                None => transparency::latest_checkpoint(&store)?
                    .ok_or(transparency::TransparencyError::NoCheckpoint)?,
            };
            print_checkpoint(&checkpoint, json)?;
            Ok(0)
        }
        CheckpointCommand::Prove {
            data_dir,
            old_size,
            new_size,
        } => {
            let store = open_store(&data_dir.data_dir)?;
            let proof = transparency::consistency_proof(&store, old_size, new_size)?;
            println!("{}", serde_json::to_string_pretty(&proof)?);
            Ok(0)
        }
        CheckpointCommand::VerifyConsistency {
            old,
            new,
            proof,
            ca,
        } => {
            let ca_der = read_ca_pem(&ca)?;
            let old = read_checkpoint(&old)?;
            let new = read_checkpoint(&new)?;
            let proof: ConsistencyProof = read_json(&proof, "a consistency proof")?;
            match transparency::verify_consistency(&old, &new, &proof, &ca_der) {
                Ok(()) => {
                    println!(
                        "ok: checkpoint {} ({} rows, {}) extends checkpoint {} ({} rows, {}): nothing it covered was rewritten or removed",
                        new.id,
                        new.checkpoint.tree_size,
                        format_unix_ms(new.checkpoint.signed_at_ms),
                        old.id,
                        old.checkpoint.tree_size,
                        format_unix_ms(old.checkpoint.signed_at_ms)
                    );
                    Ok(0)
                }
                Err(error) => {
                    println!("FAILED: {error}");
                    Ok(1)
                }
            }
        }
    }
}

fn print_checkpoint(checkpoint: &SignedCheckpoint, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&checkpoint.to_json())?);
    } else {
        let c = &checkpoint.checkpoint;
        println!("checkpoint {}", checkpoint.id);
        println!("  signed at       {}", format_unix_ms(c.signed_at_ms));
        println!("  evidence rows   {}", c.tree_size);
        println!("  root hash       {}", hex::encode(c.root_hash));
        println!("  CA fingerprint  {}", hex::encode(c.ca_fingerprint));
    }
    Ok(())
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> anyhow::Result<T> {
    let text = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    serde_json::from_slice(&text)
        .with_context(|| format!("{} is not {what} in JSON", path.display()))
}

fn read_checkpoint(path: &Path) -> anyhow::Result<SignedCheckpoint> {
    let json: CheckpointJson = read_json(
        path,
        "a checkpoint (`evident-collector checkpoint show --json` writes one)",
    )?;
    SignedCheckpoint::from_json(&json).with_context(|| format!("read {}", path.display()))
}

pub fn bundle_command(command: BundleCommand) -> anyhow::Result<u8> {
    match command {
        BundleCommand::Export {
            data_dir,
            from,
            to,
            out,
        } => {
            let from_ms = parse_moment(&from, DayEdge::Start).context("--from")?;
            let to_ms = parse_moment(&to, DayEdge::End).context("--to")?;
            let store = open_store(&data_dir.data_dir)?;
            let ca = CertificateAuthority::load(&CaPaths::new(&data_dir.data_dir))?;
            let exported =
                bundle::export::export_bundle(&store, &ca, from_ms, to_ms, &out, now_unix_ms())?;
            if exported.signed_checkpoint {
                eprintln!(
                    "signed checkpoint {} to cover the period",
                    exported.checkpoint_id
                );
            }
            println!(
                "wrote {}: {} items of {} agent(s) in {} batches, proven in checkpoint {} ({} rows), {} bytes",
                out.display(),
                exported.items,
                exported.agents,
                exported.batches,
                exported.checkpoint_id,
                exported.tree_size,
                exported.bytes
            );
            Ok(0)
        }
        BundleCommand::Verify { file, ca } => {
            let ca_der = read_ca_pem(&ca)?;
            let bytes = std::fs::read(&file).with_context(|| format!("read {}", file.display()))?;
            let report = bundle::verify::verify_bundle(&bytes, &ca_der)
                .with_context(|| format!("{}", file.display()))?;
            for finding in &report.findings {
                println!("{finding}");
            }
            let period = report.manifest.as_ref().map_or_else(String::new, |m| {
                format!(" from {} to {}", m.period.from, m.period.to)
            });
            let anchor = report.checkpoint.as_ref().map_or_else(String::new, |c| {
                format!(
                    ", proven in checkpoint {} ({} rows)",
                    c.id, c.checkpoint.tree_size
                )
            });
            let summary = format!(
                "{} items in {} batches{period}{anchor}",
                report.items, report.batches
            );
            if report.findings.is_empty() {
                println!("ok: {summary}: every signature, chain and inclusion proof verifies");
                Ok(0)
            } else {
                println!("FAILED: {summary}: {} finding(s)", report.findings.len());
                Ok(1)
            }
        }
    }
}
