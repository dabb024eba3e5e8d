//! Pages over the fleet's evidence: the overview of controls, one control, the hosts list, one
//! host, one evidence item.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Html;
use serde::Deserialize;

use super::session::{Layout, Signed};
use super::{AppState, AsOf, WebError, chart, encode_query};
use crate::policy::Catalogue;
use crate::status::{ControlStatus, Finding};
use crate::views::{self, HostFilter, HostPage, evidence::EvidenceDetail, host::HostDetail};

pub(super) fn render(page: impl Template) -> Result<Html<String>, WebError> {
    page.render()
        .map(Html)
        .map_err(|e| WebError::Internal(format!("render a page: {e}")))
}

/// A control's row on the overview.
pub struct ControlRow {
    pub control: ControlStatus,
    /// `framework/control` for the link.
    pub href: String,
    pub sparkline: String,
}

#[derive(Template)]
#[template(path = "web/overview.html")]
struct OverviewPage {
    layout: Layout,
    frameworks: Vec<(String, String, bool)>,
    framework_title: String,
    policy: String,
    policy_note: Option<String>,
    hosts: usize,
    failing_hosts: usize,
    stale_hosts: usize,
    pending_actions: usize,
    overdue_actions: usize,
    controls: Vec<ControlRow>,
    chart: String,
    trend_from: String,
    trend_to: String,
}

#[derive(Deserialize)]
pub struct OverviewQuery {
    framework: Option<String>,
}

pub async fn overview(
    State(state): State<AppState>,
    signed: Signed,
    as_of: AsOf,
    Query(query): Query<OverviewQuery>,
) -> Result<Html<String>, WebError> {
    let at = as_of.ms;
    let (fleet, trend, (pending_actions, overdue_actions)) = state
        .db(move |store| {
            let fleet = views::fleet(store, at, views::Detail::Counts)?;
            let in_force = crate::status::policy_in_force(store, at)?;
            let trend =
                views::trend::trend(store, &in_force, at, views::TREND_DAYS, &fleet.recorded)?;
            let actions = views::action_counts(store, at)?;
            Ok((fleet, trend, actions))
        })
        .await?;
    let catalogue = Catalogue::builtin().map_err(WebError::Internal)?;
    let chosen = query
        .framework
        .filter(|f| catalogue.frameworks().iter().any(|fw| &fw.id == f))
        .unwrap_or_else(|| "iso27001-2022".to_owned());
    let frameworks = catalogue
        .frameworks()
        .iter()
        .map(|f| (f.id.clone(), f.title.clone(), f.id == chosen))
        .collect();
    let framework_title = catalogue
        .frameworks()
        .iter()
        .find(|f| f.id == chosen)
        .map(|f| f.title.clone())
        .unwrap_or_default();
    let sparklines: std::collections::HashMap<&str, &Vec<Option<f64>>> = trend
        .controls
        .iter()
        .map(|(c, points)| (c.as_str(), points))
        .collect();
    let controls = fleet
        .status
        .controls
        .iter()
        .filter(|c| c.control.starts_with(&format!("{chosen}:")))
        .map(|c| ControlRow {
            href: c.control.replacen(':', "/", 1),
            sparkline: sparklines
                .get(c.control.as_str())
                .map(|points| chart::line(points, 120, 22, false))
                .unwrap_or_default(),
            control: c.clone(),
        })
        .collect();
    render(OverviewPage {
        layout: Layout::new(&signed, &as_of, "/", "overview"),
        frameworks,
        framework_title,
        policy: match fleet.status.policy_version {
            Some(v) => format!("{} (version {v})", fleet.status.policy_name),
            None => fleet.status.policy_name.clone(),
        },
        policy_note: fleet.status.policy_note.clone(),
        hosts: fleet.hosts.len(),
        failing_hosts: fleet
            .hosts
            .iter()
            .filter(|h| h.status == crate::policy::judge::RuleOutcome::Fail)
            .count(),
        stale_hosts: fleet.hosts.iter().filter(|h| h.stale).count(),
        pending_actions,
        overdue_actions,
        controls,
        chart: chart::line(&trend.fleet, 640, 160, true),
        trend_from: trend.days.first().cloned().unwrap_or_default(),
        trend_to: trend.days.last().cloned().unwrap_or_default(),
    })
}

/// Findings shown per rule on a control's page; the hosts list has the rest.
const FINDINGS_SHOWN: usize = 200;

#[derive(Template)]
#[template(path = "web/control.html")]
struct ControlPage {
    layout: Layout,
    control: ControlStatus,
    shown: Vec<(String, Vec<Finding>, usize)>,
}

pub async fn control(
    State(state): State<AppState>,
    signed: Signed,
    as_of: AsOf,
    Path((framework, control)): Path<(String, String)>,
) -> Result<Html<String>, WebError> {
    let at = as_of.ms;
    let reference = format!("{framework}:{control}");
    let fleet = state
        .db(move |store| Ok(views::fleet(store, at, views::Detail::Findings)?))
        .await?;
    let Some(found) = fleet
        .status
        .controls
        .into_iter()
        .find(|c| c.control == reference)
    else {
        return Err(WebError::NotFound(format!(
            "no rule of the policy in force then evidences control {reference}"
        )));
    };
    let shown = found
        .rules
        .iter()
        .map(|r| {
            let more = r.findings.len().saturating_sub(FINDINGS_SHOWN);
            (
                r.rule_id.clone(),
                r.findings.iter().take(FINDINGS_SHOWN).cloned().collect(),
                more,
            )
        })
        .collect();
    render(ControlPage {
        layout: Layout::new(
            &signed,
            &as_of,
            format!("/controls/{framework}/{control}"),
            "overview",
        ),
        control: found,
        shown,
    })
}

#[derive(Template)]
#[template(path = "web/hosts.html")]
struct HostsPage {
    layout: Layout,
    filter: HostFilter,
    page: HostPage,
    /// The filter as a query string, for the pager's links.
    filter_query: String,
}

impl HostsPage {
    fn selected(&self, field: &Option<String>, value: &str) -> bool {
        field.as_deref() == Some(value)
    }
}

pub async fn hosts(
    State(state): State<AppState>,
    signed: Signed,
    as_of: AsOf,
    Query(filter): Query<HostFilter>,
) -> Result<Html<String>, WebError> {
    let at = as_of.ms;
    let wanted = filter.clone();
    let page = state
        .db(move |store| {
            let fleet = views::fleet(store, at, views::Detail::Counts)?;
            Ok(views::host_page(store, &fleet, &wanted, at)?)
        })
        .await?;
    let mut filter_query = String::new();
    for (key, value) in [
        ("q", &filter.q),
        ("os", &filter.os),
        ("status", &filter.status),
        ("tag", &filter.tag),
    ] {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
            filter_query.push_str(&format!("{key}={}&", encode_query(v)));
        }
    }
    render(HostsPage {
        layout: Layout::new(&signed, &as_of, "/hosts", "hosts"),
        filter,
        page,
        filter_query,
    })
}

#[derive(Template)]
#[template(path = "web/host.html")]
struct HostPageView {
    layout: Layout,
    host: HostDetail,
    inventory_json: String,
}

#[derive(Deserialize)]
pub struct TimelineQuery {
    before: Option<u64>,
}

pub async fn host(
    State(state): State<AppState>,
    signed: Signed,
    as_of: AsOf,
    Path(agent_id): Path<String>,
    Query(query): Query<TimelineQuery>,
) -> Result<Html<String>, WebError> {
    let at = as_of.ms;
    let id = agent_id.clone();
    let host = state
        .db(move |store| Ok(views::host::host(store, &id, at, query.before)?))
        .await?
        .ok_or_else(|| WebError::NotFound(format!("no agent {agent_id} is enrolled")))?;
    let inventory_json = host
        .inventory
        .as_ref()
        .and_then(|i| serde_json::to_string_pretty(&i.outcome).ok())
        .unwrap_or_default();
    render(HostPageView {
        layout: Layout::new(
            &signed,
            &as_of,
            format!("/hosts/{}", host.agent.agent_id),
            "hosts",
        ),
        host,
        inventory_json,
    })
}

#[derive(Template)]
#[template(path = "web/evidence.html")]
struct EvidencePage {
    layout: Layout,
    item: EvidenceDetail,
    facts: String,
}

pub async fn evidence(
    State(state): State<AppState>,
    signed: Signed,
    as_of: AsOf,
    Path((agent_id, sequence)): Path<(String, u64)>,
) -> Result<Html<String>, WebError> {
    let (id, at) = (agent_id.clone(), as_of.ms);
    let item = state
        .db(move |store| Ok(views::evidence::evidence(store, &id, sequence, at)?))
        .await?
        .ok_or_else(|| {
            WebError::NotFound(format!(
                "agent {agent_id} has no evidence item {sequence} (as of {})",
                as_of.label()
            ))
        })?;
    render(EvidencePage {
        layout: Layout::new(
            &signed,
            &as_of,
            format!("/evidence/{agent_id}/{sequence}"),
            "hosts",
        ),
        facts: item.facts_json(),
        item,
    })
}
