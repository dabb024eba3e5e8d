//! OSCAL (NIST's Open Security Controls Assessment Language) in JSON: the assessment results
//! of a period, and a plan of action and milestones (POA&M) for the corrective actions still
//! open at its end. Both validate against NIST's published schemas of `OSCAL_VERSION`
//! (`tests/schemas/oscal/`).
//!
//! Mapping:
//! - a result per period (`start`, `end`); the hosts are inventory items in its local
//!   definitions and the subjects of its observations;
//! - an observation per host and rule judged at the end of the period, its relevant evidence
//!   naming agent, sequence and chain hash of each item the verdict rests on;
//! - a finding per control and rule, `satisfied` when every in-scope host passes;
//! - in the POA&M, a risk and a POA&M item per open corrective action, the action's events as
//!   the risk log (time, actor, reason).
//!
//! Control ids are OSCAL tokens: `iso27001-2022:A.8.8` becomes `iso27001-2022_A.8.8`, and a
//! prop `control` in our namespace keeps the reference as the policy writes it.
//!
//! UUIDs are v5, derived from stable ids (agent id, rule id, action and event ids, the period)
//! under a namespace of the collector's CA fingerprint, so a re-export of the same period names
//! the same things the same way. Only the documents' own UUIDs are v4: OSCAL asks for a new
//! one for every revision of a document.

use serde_json::{Value, json};
use uuid::Uuid;

use super::{ExportContext, ExportError, Period, PeriodFacts, rfc3339};
use crate::actions::{ActionView, State};
use crate::model::{CheckKind, format_unix_ms};
use crate::policy::judge::RuleOutcome;
use crate::store::Store;

/// The OSCAL release whose schemas the documents are written to.
pub const OSCAL_VERSION: &str = "1.2.3";
/// The namespace of the props OSCAL does not define.
pub const NS: &str = "https://example.invalid/evident/ns/oscal";

/// The assessment results of `period`, as an OSCAL document.
pub fn assessment_results(
    store: &Store,
    period: Period,
    context: &ExportContext,
) -> Result<Value, ExportError> {
    let facts = PeriodFacts::gather(store, period, context.generated_at_ms)?;
    let ids = Ids::new(context);
    let end_ms = facts.judged_at_ms;

    let mut inventory = Vec::new();
    let mut observations = Vec::new();
    for h in &facts.hosts {
        inventory.push(inventory_item(&ids, &h.host.agent_id, &h.host.hostname));
        for (rule_id, j) in &h.judgements {
            if j.outcome == RuleOutcome::NotApplicable {
                continue;
            }
            let evidence = j
                .evidence
                .iter()
                .map(|seq| relevant_evidence(store, &h.host.agent_id, *seq))
                .collect::<Result<Vec<_>, _>>()?;
            let mut observation = json!({
                "uuid": ids.observation(&h.host.agent_id, rule_id, period),
                "title": line(&format!("{rule_id} on {}", h.host.hostname)),
                "description": text(&format!("{}: {}", j.outcome.as_str(), j.detail)),
                "props": [prop("rule-id", rule_id), prop("outcome", j.outcome.as_str())],
                "methods": ["TEST"],
                "types": ["finding"],
                "subjects": [{
                    "subject-uuid": ids.host(&h.host.agent_id),
                    "type": "inventory-item",
                    "title": line(&h.host.hostname),
                }],
                "collected": rfc3339(j.decided_by_received_ms.unwrap_or(end_ms)),
            });
            if !evidence.is_empty() {
                observation["relevant-evidence"] = Value::Array(evidence);
            }
            if !j.offending.is_empty() {
                observation["remarks"] = Value::String(text(&j.offending.join("\n\n")));
            }
            observations.push(observation);
        }
    }

    let mut findings = Vec::new();
    let mut reviewed = Vec::new();
    for c in &facts.status.controls {
        reviewed.push(json!({ "control-id": control_token(&c.control) }));
        for r in &c.rules {
            if r.status == RuleOutcome::NotApplicable {
                continue;
            }
            let satisfied = r.status == RuleOutcome::Pass;
            let related: Vec<Value> = facts
                .hosts
                .iter()
                .filter(|h| {
                    h.judgements
                        .iter()
                        .any(|(id, j)| id == &r.rule_id && j.outcome != RuleOutcome::NotApplicable)
                })
                .map(|h| {
                    json!({ "observation-uuid": ids.observation(&h.host.agent_id, &r.rule_id, period) })
                })
                .collect();
            let mut finding = json!({
                "uuid": ids.derive(&["finding", &c.control, &r.rule_id, &period_key(period)]),
                "title": line(&format!("{} {}: {}", c.control, r.rule_id, r.title)),
                "description": text(&format!(
                    "{} of {} host(s) in scope pass rule {} ({}) as of {}: {}.",
                    r.hosts_passing,
                    r.hosts_in_scope,
                    r.rule_id,
                    r.severity,
                    rfc3339(end_ms),
                    r.status.as_str()
                )),
                "props": [
                    prop("control", &c.control),
                    prop("rule-id", &r.rule_id),
                    prop("severity", r.severity),
                ],
                "target": {
                    "type": "objective-id",
                    "target-id": control_token(&c.control),
                    "title": line(&format!("{} {}", c.control, c.title)),
                    "status": {
                        "state": if satisfied { "satisfied" } else { "not-satisfied" },
                        "reason": if satisfied { "pass" } else if r.status == RuleOutcome::Fail { "fail" } else { "other" },
                    },
                },
            });
            if !related.is_empty() {
                finding["related-observations"] = Value::Array(related);
            }
            findings.push(finding);
        }
    }

    let policies: Vec<Value> = facts
        .policies
        .iter()
        .map(|p| {
            json!({
                "uuid": ids.derive(&["policy", &hex::encode(&p.sha256)]),
                "title": line(&format!("Policy {:?}, version {}", p.name, p.version)),
                "description": text(&format!(
                    "The policy text in force from {} (SHA-256 {}); `evident-collector policy show --version {}` prints it.",
                    format_unix_ms(p.activated_at_ms),
                    hex::encode(&p.sha256),
                    p.version
                )),
                "props": [prop("policy-version", &p.version.to_string())],
            })
        })
        .collect();
    // OSCAL wants an assessment plan to import. The collector's plan is its policy: the
    // import points at the version in force at the end of the period, in the back matter.
    let plan_uuid = match facts.policies.last() {
        Some(p) => ids.derive(&["policy", &hex::encode(&p.sha256)]),
        None => ids.derive(&["policy", "built-in default"]),
    };
    let mut resources = policies;
    if facts.policies.is_empty() {
        resources.push(json!({
            "uuid": plan_uuid,
            "title": "The collector's built-in default policy",
            "description": "No policy version was recorded: `evident-collector policy default` prints the one judged under.",
        }));
    }

    let result = json!({
        "uuid": ids.derive(&["result", &period_key(period)]),
        "title": line(&format!("Endpoint evidence judged under policy {:?}", facts.in_force.policy.name)),
        "description": text(&format!(
            "Rules of the policy judged on every enrolled host from the evidence that had arrived by {}; {} host(s).",
            rfc3339(end_ms),
            facts.hosts.len()
        )),
        "start": rfc3339(period.from_ms),
        "end": rfc3339(end_ms),
        "local-definitions": if inventory.is_empty() { json!({ "remarks": "No host was enrolled." }) } else { json!({ "inventory-items": inventory }) },
        "reviewed-controls": {
            "control-selections": [ if reviewed.is_empty() { json!({ "include-all": {} }) } else { json!({ "include-controls": reviewed }) } ],
        },
    });
    let mut result = result;
    if !observations.is_empty() {
        result["observations"] = Value::Array(observations);
    }
    if !findings.is_empty() {
        result["findings"] = Value::Array(findings);
    }

    Ok(json!({
        "assessment-results": {
            "uuid": Uuid::new_v4().to_string(),
            "metadata": metadata(
                &format!("Assessment results {} to {}", rfc3339(period.from_ms), rfc3339(period.to_ms)),
                context,
                &facts,
            ),
            "import-ap": {
                "href": format!("#{plan_uuid}"),
                "remarks": "The assessment plan is the collector's policy: its rules, thresholds and the controls each rule evidences.",
            },
            "results": [result],
            "back-matter": { "resources": resources },
        }
    }))
}

/// The plan of action and milestones for the corrective actions still open (not verified) at
/// the end of `period`, as an OSCAL document; `ExportError::NothingToPlan` when none is.
pub fn poam(store: &Store, period: Period, context: &ExportContext) -> Result<Value, ExportError> {
    let facts = PeriodFacts::gather(store, period, context.generated_at_ms)?;
    let ids = Ids::new(context);
    let open: Vec<&ActionView> = facts.open_actions().collect();
    if open.is_empty() {
        return Err(ExportError::NothingToPlan(rfc3339(facts.judged_at_ms)));
    }

    let mut inventory = Vec::new();
    let mut seen_hosts = std::collections::BTreeSet::new();
    let mut observations = Vec::new();
    let mut risks = Vec::new();
    let mut items = Vec::new();
    for view in &open {
        let a = &view.action;
        if seen_hosts.insert(a.agent_id.as_str()) {
            inventory.push(inventory_item(&ids, &a.agent_id, &a.hostname));
        }
        let action_id = a.id.to_string();
        let observation_uuid = ids.derive(&["action-observation", &action_id]);
        let risk_uuid = ids.derive(&["risk", &action_id]);
        let opened = view.events.first();
        let latest = view.events.last();
        let evidence_seqs = view
            .events
            .iter()
            .rev()
            .find(|e| !e.evidence.is_empty())
            .map(|e| e.evidence.clone())
            .unwrap_or_default();
        let evidence = evidence_seqs
            .iter()
            .map(|seq| relevant_evidence(store, &a.agent_id, *seq))
            .collect::<Result<Vec<_>, _>>()?;
        let mut observation = json!({
            "uuid": observation_uuid,
            "title": line(&format!("{} deviates on {}", a.rule_id, a.hostname)),
            "description": text(&opened.map_or_else(|| a.rule_title.clone(), |e| e.reason.clone())),
            "props": [prop("rule-id", &a.rule_id)],
            "methods": ["TEST"],
            "types": ["finding"],
            "subjects": [{ "subject-uuid": ids.host(&a.agent_id), "type": "inventory-item", "title": line(&a.hostname) }],
            "collected": rfc3339(opened.map_or(a.opened_at_ms, |e| e.at_ms)),
        });
        if !evidence.is_empty() {
            observation["relevant-evidence"] = Value::Array(evidence);
        }
        observations.push(observation);

        let entries: Vec<Value> = view
            .events
            .iter()
            .map(|e| {
                let mut description = format!("{} by {}: {}", e.kind, e.actor, e.reason);
                if let Some(owner) = e.owner.as_deref().filter(|_| e.kind == "acknowledged") {
                    description.push_str(&format!("\n\nOwner: {owner}"));
                }
                if let Some(cause) = e.root_cause.as_deref().filter(|_| e.kind == "resolved") {
                    description.push_str(&format!("\n\nRoot cause: {cause}"));
                }
                if let Some(until) = e.risk_expires_at_ms.filter(|_| e.kind == "risk_accepted") {
                    description.push_str(&format!("\n\nAccepted until {}", rfc3339(until)));
                }
                json!({
                    "uuid": ids.derive(&["action-event", &e.id.to_string()]),
                    "title": line(&format!("{} by {}", e.kind, e.actor)),
                    "description": text(&description),
                    "start": rfc3339(e.at_ms),
                    "props": [prop("actor", &e.actor), prop("action-state", &e.state)],
                    "status-change": risk_status(State::parse(&e.state)),
                })
            })
            .collect();
        let deadline = match view.state {
            State::RiskAccepted => view.risk_expires_at_ms,
            _ => view.due_at_ms,
        };
        let mut risk = json!({
            "uuid": risk_uuid,
            "title": line(&format!("{} on {}", a.rule_title, a.hostname)),
            "description": text(&format!(
                "Corrective action {} for rule {} ({} severity) on host {} (agent {}), opened {}.",
                a.id, a.rule_id, a.severity, a.hostname, a.agent_id, rfc3339(a.opened_at_ms)
            )),
            "statement": text(&latest.map_or_else(|| a.rule_title.clone(), |e| e.reason.clone())),
            "props": [prop("severity", &a.severity), prop("action-id", &action_id), prop("action-state", view.state.as_str())],
            "status": risk_status(Some(view.state)),
            "related-observations": [{ "observation-uuid": observation_uuid }],
            "risk-log": { "entries": entries },
        });
        if let Some(deadline) = deadline {
            risk["deadline"] = Value::String(rfc3339(deadline));
        }
        if let Some(owner) = &view.owner {
            let resolved = view
                .events
                .iter()
                .rev()
                .find(|e| e.kind == "resolved")
                .filter(|_| view.state == State::Resolved);
            risk["remediations"] = json!([{
                "uuid": ids.derive(&["remediation", &action_id]),
                "lifecycle": if resolved.is_some() { "completed" } else { "planned" },
                "title": line(&format!("Remediation owned by {owner}")),
                "description": text(&resolved.map_or_else(
                    || format!("{owner} remediates; due {}.", view.due_at_ms.map_or("-".into(), rfc3339)),
                    |e| format!("Resolved by {}: {} (awaiting compliant evidence to verify it).", e.actor, e.reason),
                )),
            }]);
        }
        risks.push(risk);

        items.push(json!({
            "uuid": ids.derive(&["poam-item", &action_id]),
            "title": line(&format!("{}: {} on {}", a.rule_id, a.rule_title, a.hostname)),
            "description": text(&format!(
                "Corrective action {}, {}{}; due {}.",
                a.id,
                view.state.as_str(),
                if view.overdue { ", overdue" } else { "" },
                view.due_at_ms.map_or("-".into(), rfc3339)
            )),
            "props": [prop("action-id", &action_id), prop("rule-id", &a.rule_id), prop("severity", &a.severity)],
            "related-observations": [{ "observation-uuid": observation_uuid }],
            "related-risks": [{ "risk-uuid": risk_uuid }],
        }));
    }

    let mut document = json!({
        "uuid": Uuid::new_v4().to_string(),
        "metadata": metadata(
            &format!("Plan of action and milestones as of {}", rfc3339(facts.judged_at_ms)),
            context,
            &facts,
        ),
        "system-id": {
            "identifier-type": "https://ietf.org/rfc/rfc4122",
            "id": ids.namespace.to_string(),
        },
        "poam-items": items,
    });
    if !inventory.is_empty() {
        document["local-definitions"] = json!({ "inventory-items": inventory });
    }
    if !observations.is_empty() {
        document["observations"] = Value::Array(observations);
    }
    if !risks.is_empty() {
        document["risks"] = Value::Array(risks);
    }
    Ok(json!({ "plan-of-action-and-milestones": document }))
}

/// OSCAL's risk status for an action's state: `open` until someone owns it, `investigating`
/// once acknowledged, `remediating` once resolved (until evidence verifies it), and an
/// accepted risk is an approved deviation.
fn risk_status(state: Option<State>) -> &'static str {
    match state {
        Some(State::Open | State::Reopened) | None => "open",
        Some(State::Acknowledged) => "investigating",
        Some(State::Resolved) => "remediating",
        Some(State::RiskAccepted) => "deviation-approved",
        Some(State::Verified) => "closed",
    }
}

fn metadata(title: &str, context: &ExportContext, facts: &PeriodFacts) -> Value {
    let mut props = vec![prop("judged-at", &rfc3339(facts.judged_at_ms))];
    if let Some(fp) = &context.ca_fingerprint {
        props.push(prop("collector-ca-sha256", fp));
    }
    for p in &facts.policies {
        props.push(prop("policy-version", &p.version.to_string()));
    }
    json!({
        "title": line(title),
        "last-modified": rfc3339(context.generated_at_ms),
        "version": rfc3339(context.generated_at_ms),
        "oscal-version": OSCAL_VERSION,
        "props": props,
    })
}

fn inventory_item(ids: &Ids, agent_id: &str, hostname: &str) -> Value {
    json!({
        "uuid": ids.host(agent_id),
        "description": text(&format!("Endpoint {hostname} (evident agent {agent_id})")),
        "props": [prop("asset-id", agent_id), prop("hostname", hostname)],
    })
}

/// An evidence item named by agent and sequence, with its chain hash.
fn relevant_evidence(store: &Store, agent_id: &str, sequence: u64) -> Result<Value, ExportError> {
    let found = store.evidence_ref(agent_id, sequence)?;
    let mut props = vec![
        prop("agent-id", agent_id),
        prop("sequence", &sequence.to_string()),
    ];
    let description = match &found {
        Some(e) => {
            let check = CheckKind::from_number(e.check_kind).map_or("unknown", |k| k.as_str());
            props.push(prop("check", check));
            props.push(prop("chain-hash", &hex::encode(&e.hash)));
            format!(
                "Evidence item {sequence} of agent {agent_id}: {check}, observed {}, received {}, chain hash {}.",
                format_unix_ms(e.observed_at_ms),
                format_unix_ms(e.received_at_ms),
                hex::encode(&e.hash)
            )
        }
        None => format!("Evidence item {sequence} of agent {agent_id} (not stored)."),
    };
    Ok(json!({ "description": text(&description), "props": props }))
}

/// A prop in our namespace. OSCAL's string values may not start or end with white space or
/// be empty.
fn prop(name: &str, value: &str) -> Value {
    json!({ "name": name, "ns": NS, "value": line(value) })
}

/// `framework:control` as an OSCAL token (a letter or `_` first; letters, digits, `.`, `-`,
/// `_`).
pub fn control_token(control: &str) -> String {
    let mut token: String = control
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !token.starts_with(|c: char| c.is_alphabetic() || c == '_') {
        token.insert(0, '_');
    }
    token
}

/// One line of text as OSCAL's string and markup-line types take it: no line breaks, no
/// white space at either end, never empty. Agents and people write what they like.
fn line(text: &str) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.is_empty() {
        "-".into()
    } else {
        joined
    }
}

/// Multi-line text (markup-multiline): kept, but never empty.
fn text(text: &str) -> String {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        "-".into()
    } else {
        trimmed.to_owned()
    }
}

fn period_key(period: Period) -> String {
    format!("{}..{}", period.from_ms, period.to_ms)
}

/// Stable UUIDs under the collector's namespace.
struct Ids {
    namespace: Uuid,
}

impl Ids {
    fn new(context: &ExportContext) -> Ids {
        let collector = context
            .ca_fingerprint
            .as_deref()
            .unwrap_or("unknown collector");
        Ids {
            namespace: Uuid::new_v5(
                &Uuid::NAMESPACE_URL,
                format!("{NS}/collector/{collector}").as_bytes(),
            ),
        }
    }

    fn derive(&self, parts: &[&str]) -> String {
        // NUL cannot occur in the parts (ids and numbers), so the joined name is unambiguous.
        Uuid::new_v5(&self.namespace, parts.join("\0").as_bytes()).to_string()
    }

    fn host(&self, agent_id: &str) -> String {
        self.derive(&["host", agent_id])
    }

    fn observation(&self, agent_id: &str, rule_id: &str, period: Period) -> String {
        self.derive(&["observation", agent_id, rule_id, &period_key(period)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_references_become_oscal_tokens() {
        assert_eq!(control_token("iso27001-2022:A.8.8"), "iso27001-2022_A.8.8");
        assert_eq!(control_token("cis-controls-v8:7.3"), "cis-controls-v8_7.3");
        assert_eq!(
            control_token("9.1"),
            "_9.1",
            "a token starts with a letter or _"
        );
        assert_eq!(control_token("a b/c"), "a_b_c");
    }

    #[test]
    fn text_from_agents_and_people_fits_oscal_strings() {
        assert_eq!(line("  web\n01\t"), "web 01");
        assert_eq!(line(" \n "), "-");
        assert_eq!(text("\n two\n\nlines \n"), "two\n\nlines");
        assert_eq!(text(""), "-");
        let p = prop("hostname", " <script>alert(1)</script> ");
        assert_eq!(p["value"], "<script>alert(1)</script>");
        assert_eq!(p["ns"], NS);
    }

    #[test]
    fn uuids_are_stable_per_collector_and_valid_v5() {
        let context = |fp: &str| ExportContext {
            ca_fingerprint: Some(fp.into()),
            generated_at_ms: 0,
        };
        let a = Ids::new(&context("aa"));
        let b = Ids::new(&context("bb"));
        assert_eq!(a.host("agt-1"), Ids::new(&context("aa")).host("agt-1"));
        assert_ne!(a.host("agt-1"), a.host("agt-2"));
        assert_ne!(
            a.host("agt-1"),
            b.host("agt-1"),
            "another collector, other names"
        );
        let uuid = Uuid::parse_str(&a.host("agt-1")).expect("a uuid");
        assert_eq!(uuid.get_version_num(), 5);
    }

    #[test]
    fn risk_status_follows_the_action() {
        assert_eq!(risk_status(Some(State::Open)), "open");
        assert_eq!(risk_status(Some(State::Reopened)), "open");
        assert_eq!(risk_status(Some(State::Acknowledged)), "investigating");
        assert_eq!(risk_status(Some(State::Resolved)), "remediating");
        assert_eq!(risk_status(Some(State::RiskAccepted)), "deviation-approved");
        assert_eq!(risk_status(Some(State::Verified)), "closed");
    }
}
