//! `evident-collector export`: CSV, the audit report and OSCAL documents for a period.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};

use super::{DataDirArg, open_store};
use crate::ca::{CaPaths, CertificateAuthority};
use crate::export::{self, ExportContext, Period, csv::CsvKind};
use crate::model::now_unix_ms;

#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// CSV of the evidence that arrived, the rule results recorded, or the corrective-action
    /// events of a period.
    Csv {
        #[command(flatten)]
        data_dir: DataDirArg,
        /// What to export: evidence, results or actions.
        #[arg(long, value_name = "WHAT")]
        what: String,
        #[command(flatten)]
        period: PeriodArgs,
        /// Write to this file instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// The audit report of a period: one HTML file that prints to PDF, a control per page.
    Report {
        #[command(flatten)]
        data_dir: DataDirArg,
        #[command(flatten)]
        period: PeriodArgs,
        /// The HTML file to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// OSCAL JSON: the assessment results of a period, or the plan of action and milestones
    /// for the corrective actions open at its end.
    Oscal {
        #[arg(value_enum, value_name = "DOCUMENT")]
        document: OscalDocument,
        #[command(flatten)]
        data_dir: DataDirArg,
        #[command(flatten)]
        period: PeriodArgs,
        /// Write to this file instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OscalDocument {
    AssessmentResults,
    Poam,
}

#[derive(Debug, Args)]
pub struct PeriodArgs {
    /// First day (from the start of that day, UTC) or an RFC 3339 time.
    #[arg(long, value_name = "WHEN")]
    pub from: String,
    /// Last day (to the end of that day, UTC) or an RFC 3339 time (exclusive).
    #[arg(long, value_name = "WHEN")]
    pub to: String,
}

impl PeriodArgs {
    fn period(&self) -> anyhow::Result<Period> {
        Ok(Period::parse(&self.from, &self.to)?)
    }
}

pub fn export_command(command: ExportCommand) -> anyhow::Result<u8> {
    match command {
        ExportCommand::Csv {
            data_dir,
            what,
            period,
            out,
        } => {
            let kind = CsvKind::parse(what.trim()).context("--what")?;
            let period = period.period()?;
            let store = open_store(&data_dir.data_dir)?;
            let rows = write_to(out.as_deref(), |w| {
                Ok(export::csv::write(&store, kind, period, w)?)
            })?;
            if let Some(path) = &out {
                eprintln!(
                    "wrote {rows} {} row(s) to {}",
                    kind.as_str(),
                    path.display()
                );
            }
            Ok(0)
        }
        ExportCommand::Report {
            data_dir,
            period,
            out,
        } => {
            let period = period.period()?;
            let store = open_store(&data_dir.data_dir)?;
            let context = context(&data_dir.data_dir);
            write_to(Some(&out), |w| {
                Ok(export::report::write_report(&store, period, &context, w)?)
            })?;
            eprintln!("wrote the audit report to {}", out.display());
            Ok(0)
        }
        ExportCommand::Oscal {
            document,
            data_dir,
            period,
            out,
        } => {
            let period = period.period()?;
            let store = open_store(&data_dir.data_dir)?;
            let context = context(&data_dir.data_dir);
            let value = match document {
                OscalDocument::AssessmentResults => {
                    export::oscal::assessment_results(&store, period, &context)?
                }
                OscalDocument::Poam => export::oscal::poam(&store, period, &context)?,
            };
            write_to(out.as_deref(), |mut w| {
                serde_json::to_writer_pretty(&mut w, &value)?;
                w.write_all(b"\n")?;
                Ok(())
            })?;
            if let Some(path) = &out {
                eprintln!(
                    "wrote OSCAL {} to {}",
                    export::oscal::OSCAL_VERSION,
                    path.display()
                );
            }
            Ok(0)
        }
    }
}

/// The CA fingerprint is a courtesy of the header: a data directory whose CA cannot be read
/// (another user's key file) still exports, saying so.
fn context(data_dir: &Path) -> ExportContext {
    ExportContext {
        ca_fingerprint: CertificateAuthority::load(&CaPaths::new(data_dir))
            .ok()
            .map(|ca| ca.fingerprint()),
        generated_at_ms: now_unix_ms(),
    }
}

/// Runs `write` on the file `out` (removed again if writing fails, so no half export is left
/// looking whole) or on standard output.
fn write_to<T>(
    out: Option<&Path>,
    write: impl FnOnce(&mut dyn Write) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    match out {
        Some(path) => {
            let file = File::create(path).with_context(|| format!("create {}", path.display()))?;
            let mut w = BufWriter::new(file);
            let written = write(&mut w).and_then(|t| {
                w.flush()?;
                w.get_ref().sync_all()?;
                Ok(t)
            });
            if written.is_err() {
                let _ = std::fs::remove_file(path);
            }
            written.with_context(|| format!("write {}", path.display()))
        }
        None => {
            let stdout = std::io::stdout();
            let mut w = BufWriter::new(stdout.lock());
            let t = write(&mut w)?;
            w.flush()?;
            Ok(t)
        }
    }
}
