//! The commands about judgements: `policy`, `status`, `actions` and `report`.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use super::{DataDirArg, open_store};
use crate::actions::{self, ActionView, Request, State};
use crate::kpi;
use crate::model::{format_unix_ms, now_unix_ms};
use crate::policy::{Catalogue, Policy, Severity};
use crate::status;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy file; errors name the file, line and key.
    Check {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Every policy version the collector has run under.
    List(DataDirArg),
    /// Print the text of a policy version (default: the one in force).
    Show {
        #[command(flatten)]
        data_dir: DataDirArg,
        #[arg(long, value_name = "N")]
        version: Option<i64>,
    },
    /// Print the built-in default policy, to start your own from.
    Default,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// Judge as of this moment from the evidence that had arrived by then: a date
    /// (2026-10-01, meaning the end of that day, UTC) or an RFC 3339 time.
    #[arg(long, value_name = "WHEN")]
    pub as_of: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ActorArgs {
    /// Who takes this step (a person; "system" is the collector's own name).
    #[arg(long, value_name = "NAME")]
    pub actor: String,
    /// Why, for the record.
    #[arg(long, value_name = "TEXT")]
    pub reason: String,
}

#[derive(Debug, Subcommand)]
pub enum ActionsCommand {
    /// Corrective actions with state, owner and due date.
    List {
        #[command(flatten)]
        data_dir: DataDirArg,
        /// Only actions in this state (open, acknowledged, resolved, verified, reopened,
        /// risk_accepted).
        #[arg(long, value_name = "STATE")]
        state: Option<String>,
        /// Only actions of this severity (critical, high, medium, low).
        #[arg(long, value_name = "SEVERITY")]
        severity: Option<String>,
        /// Only overdue actions.
        #[arg(long)]
        overdue: bool,
        /// As of a past moment (see `status --as-of`).
        #[arg(long, value_name = "WHEN")]
        as_of: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// One action with its whole event trail.
    Show {
        #[command(flatten)]
        data_dir: DataDirArg,
        #[arg(value_name = "ID")]
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Acknowledge: take ownership (the due date comes from the severity).
    Ack {
        #[command(flatten)]
        data_dir: DataDirArg,
        #[arg(value_name = "ID")]
        id: i64,
        #[command(flatten)]
        by: ActorArgs,
        /// Who will remediate.
        #[arg(long, value_name = "NAME")]
        owner: String,
    },
    /// Say it is fixed: --reason says what was done. Compliant evidence then verifies it.
    Resolve {
        #[command(flatten)]
        data_dir: DataDirArg,
        #[arg(value_name = "ID")]
        id: i64,
        #[command(flatten)]
        by: ActorArgs,
        /// Why the deviation happened.
        #[arg(long, value_name = "TEXT")]
        root_cause: String,
    },
    /// Accept the risk until a date; the action reopens then. --actor is the approver.
    AcceptRisk {
        #[command(flatten)]
        data_dir: DataDirArg,
        #[arg(value_name = "ID")]
        id: i64,
        #[command(flatten)]
        by: ActorArgs,
        /// Until when: a date (end of that day, UTC), an RFC 3339 time, or a duration from
        /// now such as 90d.
        #[arg(long, value_name = "WHEN")]
        expires: String,
    },
    /// Add a comment to the trail.
    Comment {
        #[command(flatten)]
        data_dir: DataDirArg,
        #[arg(value_name = "ID")]
        id: i64,
        #[command(flatten)]
        by: ActorArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum ResultsCommand {
    /// Rule results as they changed: rule, host, outcome, evidence and policy version.
    List {
        #[command(flatten)]
        data_dir: DataDirArg,
        /// Only this agent's results.
        #[arg(long, value_name = "ID")]
        agent: Option<String>,
        /// From this day (start of day, UTC) or RFC 3339 time; default: the beginning.
        #[arg(long, value_name = "WHEN")]
        from: Option<String>,
        /// Up to this day (end of day, UTC) or RFC 3339 time; default: now.
        #[arg(long, value_name = "WHEN")]
        to: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

pub fn results_command(command: ResultsCommand) -> anyhow::Result<u8> {
    let ResultsCommand::List {
        data_dir,
        agent,
        from,
        to,
        json,
    } = command;
    let from = from
        .map(|t| parse_moment(&t, DayEdge::Start))
        .transpose()?
        .unwrap_or(i64::MIN);
    let to = to
        .map(|t| parse_moment(&t, DayEdge::End))
        .transpose()?
        .unwrap_or(i64::MAX);
    let store = open_store(&data_dir.data_dir)?;
    let results = store.results_between(agent.as_deref(), from, to)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&results)?);
        return Ok(0);
    }
    if results.is_empty() {
        println!("no rule result recorded in that period");
    }
    for r in &results {
        println!(
            "{}  v{:<3} {:<24} {:<26} {:<14} {}  [evidence {}]",
            format_unix_ms(r.at_ms),
            r.policy_version,
            r.agent_id,
            r.rule_id,
            r.outcome,
            r.detail,
            r.evidence
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
    }
    Ok(0)
}

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// KPIs for monitoring and management review over a period.
    Kpi {
        #[command(flatten)]
        data_dir: DataDirArg,
        /// First day (start of day, UTC) or RFC 3339 time.
        #[arg(long, value_name = "WHEN")]
        from: String,
        /// Last day (end of day, UTC) or RFC 3339 time.
        #[arg(long, value_name = "WHEN")]
        to: String,
        #[arg(long)]
        json: bool,
    },
}

/// Where a bare date falls within its day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DayEdge {
    Start,
    End,
}

/// A moment given on the command line: `2026-10-01` (the start or end of that UTC day) or an
/// RFC 3339 time such as `2026-10-01T12:00:00Z`.
pub fn parse_moment(text: &str, edge: DayEdge) -> anyhow::Result<i64> {
    let text = text.trim();
    let date_format = time::format_description::parse_borrowed::<2>("[year]-[month]-[day]")
        .context("date format")?;
    let at = if let Ok(date) = time::Date::parse(text, &date_format) {
        let start = date.midnight().assume_utc();
        match edge {
            DayEdge::Start => start,
            DayEdge::End => start + time::Duration::days(1) - time::Duration::milliseconds(1),
        }
    } else {
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).map_err(
            |e| {
                anyhow::anyhow!(
                    "{text:?} is not a date or time ({e}): write 2026-10-01 or 2026-10-01T12:00:00Z"
                )
            },
        )?
    };
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| anyhow::anyhow!("{text:?} is out of range"))
}

pub fn policy_command(command: PolicyCommand) -> anyhow::Result<u8> {
    match command {
        PolicyCommand::Check { file } => {
            let policy = Policy::load(&file)?;
            let catalogue = Catalogue::builtin().map_err(|e| anyhow::anyhow!(e))?;
            let controls = policy.controls();
            let frameworks: std::collections::BTreeSet<&str> = controls
                .iter()
                .filter_map(|c| catalogue.control(c).ok().map(|(f, _)| f.id.as_str()))
                .collect();
            println!(
                "ok: {:?} has {} rule(s) evidencing {} control(s) of {}",
                policy.name,
                policy.rules.len(),
                controls.len(),
                frameworks.into_iter().collect::<Vec<_>>().join(", ")
            );
            Ok(0)
        }
        PolicyCommand::List(data_dir) => {
            let policies = open_store(&data_dir.data_dir)?.policies()?;
            if policies.is_empty() {
                println!(
                    "no policy recorded yet: `evident-collector serve` records the one it runs"
                );
            }
            for p in policies {
                println!(
                    "version {:<4} {}  sha256 {}  {:?} from {}",
                    p.version,
                    format_unix_ms(p.activated_at_ms),
                    &hex::encode(&p.sha256)[..16],
                    p.name,
                    p.source
                );
            }
            Ok(0)
        }
        PolicyCommand::Show { data_dir, version } => {
            let store = open_store(&data_dir.data_dir)?;
            let policies = store.policies()?;
            let row = match version {
                Some(v) => policies.into_iter().find(|p| p.version == v),
                None => policies.into_iter().last(),
            };
            match row {
                Some(row) => {
                    print!("{}", row.text);
                    Ok(0)
                }
                None => bail!(
                    "no such policy version: `evident-collector policy list` shows the recorded ones"
                ),
            }
        }
        PolicyCommand::Default => {
            print!("{}", crate::policy::DEFAULT_POLICY);
            Ok(0)
        }
    }
}

pub fn status_command(args: StatusArgs) -> anyhow::Result<u8> {
    let store = open_store(&args.data_dir.data_dir)?;
    let as_of = match &args.as_of {
        Some(text) => parse_moment(text, DayEdge::End)?,
        None => now_unix_ms(),
    };
    let report = status::status(&store, as_of)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", status::render(&report));
    }
    Ok(0)
}

pub fn actions_command(command: ActionsCommand) -> anyhow::Result<u8> {
    match command {
        ActionsCommand::List {
            data_dir,
            state,
            severity,
            overdue,
            as_of,
            json,
        } => {
            let state = state
                .map(|s| {
                    State::parse(&s).with_context(|| {
                        format!("--state {s:?}: use open, acknowledged, resolved, verified, reopened or risk_accepted")
                    })
                })
                .transpose()?;
            let severity = severity
                .map(|s| {
                    Severity::parse(&s).with_context(|| {
                        format!("--severity {s:?}: use critical, high, medium or low")
                    })
                })
                .transpose()?;
            let as_of = match &as_of {
                Some(text) => parse_moment(text, DayEdge::End)?,
                None => now_unix_ms(),
            };
            let store = open_store(&data_dir.data_dir)?;
            let views: Vec<ActionView> = actions::list(&store, as_of)?
                .into_iter()
                .filter(|v| state.is_none_or(|s| v.state == s))
                .filter(|v| severity.is_none_or(|s| v.action.severity == s.as_str()))
                .filter(|v| !overdue || v.overdue)
                .map(|mut v| {
                    v.events.clear();
                    v
                })
                .collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&views)?);
                return Ok(0);
            }
            if views.is_empty() {
                println!("no corrective action matches");
                return Ok(0);
            }
            println!(
                "{:>4}  {:<13} {:<8} {:<20} {:<24} {:<14} {:<20}",
                "ID", "STATE", "SEVERITY", "HOST", "RULE", "OWNER", "DUE"
            );
            for v in &views {
                println!(
                    "{:>4}  {:<13} {:<8} {:<20} {:<24} {:<14} {}{}",
                    v.action.id,
                    v.state.as_str(),
                    v.action.severity,
                    v.action.hostname,
                    v.action.rule_id,
                    v.owner.as_deref().unwrap_or("-"),
                    v.due_at_ms.map_or("-".into(), format_unix_ms),
                    if v.overdue { "  OVERDUE" } else { "" }
                );
            }
            Ok(0)
        }
        ActionsCommand::Show { data_dir, id, json } => {
            let store = open_store(&data_dir.data_dir)?;
            let Some((action, events)) = store.action(id)? else {
                bail!("no corrective action {id}: `evident-collector actions list` shows them");
            };
            let view = ActionView::at(action, events, now_unix_ms())
                .with_context(|| format!("action {id} has no events"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&view)?);
                return Ok(0);
            }
            println!(
                "action {}: {} on {} ({})\nrule {}: {}\nseverity {}, state {}, owner {}, due {}{}",
                view.action.id,
                view.action.rule_id,
                view.action.hostname,
                view.action.agent_id,
                view.action.rule_id,
                view.action.rule_title,
                view.action.severity,
                view.state.as_str(),
                view.owner.as_deref().unwrap_or("-"),
                view.due_at_ms.map_or("-".into(), format_unix_ms),
                if view.overdue { " (OVERDUE)" } else { "" }
            );
            for e in &view.events {
                println!(
                    "  {}  {:<13} -> {:<13} by {}: {}",
                    format_unix_ms(e.at_ms),
                    e.kind,
                    e.state,
                    e.actor,
                    e.reason
                );
                if let Some(cause) = &e.root_cause
                    && e.kind == "resolved"
                {
                    println!("      root cause: {cause}");
                }
                if let Some(until) = e.risk_expires_at_ms
                    && e.kind == "risk_accepted"
                {
                    println!("      accepted until {}", format_unix_ms(until));
                }
                if !e.evidence.is_empty() {
                    println!(
                        "      evidence: {}",
                        e.evidence
                            .iter()
                            .map(|s| format!("{}#{s}", view.action.agent_id))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
            }
            Ok(0)
        }
        ActionsCommand::Ack {
            data_dir,
            id,
            by,
            owner,
        } => transition(&data_dir, id, &by, Request::Ack { owner }),
        ActionsCommand::Resolve {
            data_dir,
            id,
            by,
            root_cause,
        } => transition(&data_dir, id, &by, Request::Resolve { root_cause }),
        ActionsCommand::AcceptRisk {
            data_dir,
            id,
            by,
            expires,
        } => {
            let expires_at_ms = match humantime::parse_duration(expires.trim()) {
                Ok(duration) => now_unix_ms()
                    .saturating_add(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)),
                Err(_) => parse_moment(&expires, DayEdge::End).context(
                    "--expires: give a date, an RFC 3339 time or a duration such as 90d",
                )?,
            };
            transition(&data_dir, id, &by, Request::AcceptRisk { expires_at_ms })
        }
        ActionsCommand::Comment { data_dir, id, by } => {
            transition(&data_dir, id, &by, Request::Comment)
        }
    }
}

fn transition(
    data_dir: &DataDirArg,
    id: i64,
    by: &ActorArgs,
    request: Request,
) -> anyhow::Result<u8> {
    let store = open_store(&data_dir.data_dir)?;
    let event = actions::request(&store, id, &request, &by.actor, &by.reason, now_unix_ms())?;
    println!(
        "action {id}: {} by {}, now {}",
        event.kind, event.actor, event.state
    );
    Ok(0)
}

pub fn report_command(command: ReportCommand) -> anyhow::Result<u8> {
    match command {
        ReportCommand::Kpi {
            data_dir,
            from,
            to,
            json,
        } => {
            let from = parse_moment(&from, DayEdge::Start).context("--from")?;
            let to = parse_moment(&to, DayEdge::End).context("--to")?;
            let store = open_store(&data_dir.data_dir)?;
            let report = kpi::report(&store, from, to.min(now_unix_ms().max(from)))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", kpi::render(&report));
            }
            Ok(0)
        }
    }
}
