//! The policy: rules that judge stored evidence and the controls each rule evidences. A policy
//! file is parsed strictly and validated as a whole; a file with any error is refused with its
//! file, line and key, and the collector keeps the policy it had.
//!
//! `judge` applies one rule to one host's evidence; `catalogue` holds the frameworks (ISO/IEC
//! 27001:2022 Annex A, CIS Controls v8) that rules name.

pub mod catalogue;
mod file;
pub mod judge;

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::Path;

use serde::Serialize;
use toml::Spanned;

use crate::model::CheckKind;
pub use catalogue::Catalogue;
use file::{PolicyFile, RuleFile};

/// The policy the collector uses when none is configured.
pub const DEFAULT_POLICY: &str = include_str!("default.toml");
/// A check's newest evidence older than this judges nothing, unless the policy says otherwise.
pub const DEFAULT_MAX_EVIDENCE_AGE_MS: i64 = 7 * 86_400_000;

/// How the default policy is named in errors and in the policies table.
pub const DEFAULT_POLICY_SOURCE: &str = "(built-in default policy)";

/// A policy file that failed validation: where, which key, what is wrong.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{file}, line {line}: {key}: {message}")]
pub struct PolicyError {
    /// The file, or `DEFAULT_POLICY_SOURCE`.
    pub file: String,
    pub line: usize,
    pub key: String,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Critical,
    High,
    Medium,
    Low,
}

impl Severity {
    pub const ALL: [Severity; 4] = [
        Severity::Critical,
        Severity::High,
        Severity::Medium,
        Severity::Low,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::High => "high",
            Severity::Medium => "medium",
            Severity::Low => "low",
        }
    }

    pub fn parse(text: &str) -> Option<Severity> {
        Severity::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// What a rule tests, with its threshold in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Condition {
    /// No security update stays pending longer than `max_pending_age_ms`.
    SecurityUpdatesPending { max_pending_age_ms: i64 },
    /// With updates pending, the last successful install is at most `max_since_update_ms` old.
    LastUpdate { max_since_update_ms: i64 },
    /// A required reboot is not pending longer than `max_pending_age_ms`.
    RebootPending { max_pending_age_ms: i64 },
    /// Package metadata was refreshed within `max_metadata_age_ms`.
    PackageMetadata { max_metadata_age_ms: i64 },
    /// Every system and fixed data volume is encrypted with protection on.
    FixedVolumesEncrypted,
    /// Swap is encrypted or absent.
    SwapEncryptedOrAbsent,
    /// Every backup source succeeded within `max_since_success_ms`.
    BackupRecent { max_since_success_ms: i64 },
    /// Every source that can be restore-tested passed one within `max_since_restore_test_ms`.
    RestoreTested { max_since_restore_test_ms: i64 },
    /// Every source that can be checked passed an integrity check within `max_since_check_ms`.
    BackupChecked { max_since_check_ms: i64 },
    /// The agent's evidence arrived within `max_silence_ms`.
    AgentReporting { max_silence_ms: i64 },
}

/// The conditions by name, with the check each reads and the threshold key it needs.
const CONDITIONS: &[(&str, CheckKind, Option<&str>)] = &[
    (
        "security_updates_pending",
        CheckKind::Patch,
        Some("max_pending_age"),
    ),
    ("last_update", CheckKind::Patch, Some("max_since_update")),
    ("reboot_pending", CheckKind::Patch, Some("max_pending_age")),
    (
        "package_metadata",
        CheckKind::Patch,
        Some("max_metadata_age"),
    ),
    ("fixed_volumes_encrypted", CheckKind::DiskEncryption, None),
    ("swap_encrypted_or_absent", CheckKind::DiskEncryption, None),
    (
        "backup_recent",
        CheckKind::Backup,
        Some("max_since_success"),
    ),
    (
        "restore_tested",
        CheckKind::Backup,
        Some("max_since_restore_test"),
    ),
    ("backup_checked", CheckKind::Backup, Some("max_since_check")),
    ("agent_reporting", CheckKind::Inventory, Some("max_silence")),
];

/// Which hosts a rule judges; an empty list does not narrow.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Scope {
    pub os: Vec<String>,
    pub tags: Vec<String>,
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub id: String,
    pub title: String,
    pub severity: Severity,
    pub check: CheckKind,
    pub condition: Condition,
    pub scope: Scope,
    /// `framework:control` references, all present in the catalogue.
    pub controls: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Group {
    pub name: String,
    pub hosts: Vec<String>,
    pub hostname_patterns: Vec<String>,
}

impl Group {
    pub fn contains(&self, agent_id: &str, hostname: &str) -> bool {
        // Hostnames are compared without case: Windows reports them in capitals.
        self.hosts
            .iter()
            .any(|h| h == agent_id || h.eq_ignore_ascii_case(hostname))
            || self
                .hostname_patterns
                .iter()
                .any(|p| wildmatch::WildMatch::new_case_insensitive(p).matches(hostname))
    }
}

/// A validated policy: every rule names known controls and a threshold it can use.
#[derive(Debug, Clone, Serialize)]
pub struct Policy {
    pub name: String,
    /// SHA-256 of the file's text: the same text is the same policy.
    #[serde(skip)]
    pub sha256: [u8; 32],
    #[serde(skip)]
    pub text: String,
    /// Days to remediate, by severity.
    pub due_days: [(Severity, u32); 4],
    /// A check's newest item older than this (by arrival) is too old to judge.
    pub max_evidence_age_ms: i64,
    pub groups: Vec<Group>,
    pub rules: Vec<Rule>,
}

impl Policy {
    /// Reads and validates a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError {
            file: source.clone(),
            line: 0,
            key: "(file)".into(),
            message: format!("cannot be read: {e}"),
        })?;
        Policy::parse(&text, &source)
    }

    /// The built-in default policy.
    pub fn default_policy() -> Result<Policy, PolicyError> {
        Policy::parse(DEFAULT_POLICY, DEFAULT_POLICY_SOURCE)
    }

    /// Parses and validates policy text; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<Policy, PolicyError> {
        let at = |span: Range<usize>, key: &str, message: String| PolicyError {
            file: source.to_owned(),
            line: line_of(text, span.start),
            key: key.to_owned(),
            message,
        };
        let file: PolicyFile = toml::from_str(text).map_err(|e| {
            let message = e.message().trim().to_owned();
            // "unknown field `x`, expected …": the key is the unknown one.
            let key = message
                .strip_prefix("unknown field `")
                .and_then(|rest| rest.split_once('`'))
                .map_or("(syntax)", |(key, _)| key)
                .to_owned();
            at(e.span().unwrap_or(0..0), &key, message)
        })?;
        let catalogue = Catalogue::builtin().map_err(|e| at(0..0, "(catalogue)", e))?;
        let name = file.name.get_ref().trim().to_owned();
        if name.is_empty() {
            return Err(at(
                file.name.span(),
                "name",
                "is empty: name the policy".into(),
            ));
        }
        let due_days = match &file.due_days {
            None => [
                (Severity::Critical, 7),
                (Severity::High, 30),
                (Severity::Medium, 90),
                (Severity::Low, 180),
            ],
            Some(due) => {
                let d = due.get_ref();
                let days = [
                    (Severity::Critical, d.critical),
                    (Severity::High, d.high),
                    (Severity::Medium, d.medium),
                    (Severity::Low, d.low),
                ];
                for (severity, n) in days {
                    if !(1..=3650).contains(&n) {
                        return Err(at(
                            due.span(),
                            &format!("due_days.{}", severity.as_str()),
                            format!("is {n}: give between 1 and 3650 days"),
                        ));
                    }
                }
                days
            }
        };

        let max_evidence_age_ms = match &file.max_evidence_age {
            None => DEFAULT_MAX_EVIDENCE_AGE_MS,
            Some(value) => {
                let duration = humantime::parse_duration(value.get_ref()).map_err(|e| {
                    at(
                        value.span(),
                        "max_evidence_age",
                        format!(
                            "{:?} is not a duration ({e}): write e.g. 7d or 36h",
                            value.get_ref()
                        ),
                    )
                })?;
                if duration.as_secs() < 3600 {
                    return Err(at(
                        value.span(),
                        "max_evidence_age",
                        "is under an hour: agents report hourly, so every check would lack evidence".into(),
                    ));
                }
                i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
            }
        };
        let mut groups = Vec::new();
        let mut group_names = BTreeSet::new();
        for (index, group) in file.groups.iter().enumerate() {
            let key = format!("group[{index}]");
            let name = group.name.get_ref().trim();
            if !valid_name(name) {
                return Err(at(
                    group.name.span(),
                    &format!("{key}.name"),
                    format!("{name:?} is not a name: use letters, digits, '-', '_' and '.'"),
                ));
            }
            if !group_names.insert(name.to_owned()) {
                return Err(at(
                    group.name.span(),
                    &format!("{key}.name"),
                    format!("group {name:?} is defined twice"),
                ));
            }
            if group.hosts.is_empty() && group.hostname_patterns.is_empty() {
                return Err(at(
                    group.name.span(),
                    &key,
                    format!("group {name:?} lists no hosts and no hostname_patterns"),
                ));
            }
            groups.push(Group {
                name: name.to_owned(),
                hosts: group.hosts.iter().map(|h| h.get_ref().clone()).collect(),
                hostname_patterns: group
                    .hostname_patterns
                    .iter()
                    .map(|h| h.get_ref().clone())
                    .collect(),
            });
        }

        let mut rules = Vec::new();
        let mut ids = BTreeSet::new();
        for (index, rule) in file.rules.iter().enumerate() {
            let rule = validate_rule(rule, index, catalogue, &group_names, &at)?;
            if !ids.insert(rule.id.clone()) {
                return Err(at(
                    file.rules[index].id.span(),
                    &format!("rule[{index}].id"),
                    format!(
                        "rule id {:?} is used twice: rule ids must be unique",
                        rule.id
                    ),
                ));
            }
            rules.push(rule);
        }
        if rules.is_empty() {
            return Err(at(
                0..0,
                "rule",
                "the policy has no rules: add at least one [[rule]]".into(),
            ));
        }
        Ok(Policy {
            name,
            sha256: sha256(text),
            text: text.to_owned(),
            due_days,
            max_evidence_age_ms,
            groups,
            rules,
        })
    }

    pub fn due_days(&self, severity: Severity) -> u32 {
        self.due_days
            .iter()
            .find(|(s, _)| *s == severity)
            .map_or(30, |(_, d)| *d)
    }

    pub fn rule(&self, id: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.id == id)
    }

    /// The groups a host belongs to.
    pub fn groups_of(&self, agent_id: &str, hostname: &str) -> Vec<String> {
        self.groups
            .iter()
            .filter(|g| g.contains(agent_id, hostname))
            .map(|g| g.name.clone())
            .collect()
    }

    /// Every control some rule evidences, in catalogue order.
    pub fn controls(&self) -> Vec<String> {
        let mut controls: Vec<String> = self
            .rules
            .iter()
            .flat_map(|r| r.controls.iter().cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if let Ok(catalogue) = Catalogue::builtin() {
            controls.sort_by_key(|c| catalogue.order(c));
        }
        controls
    }
}

fn validate_rule(
    rule: &RuleFile,
    index: usize,
    catalogue: &Catalogue,
    groups: &BTreeSet<String>,
    at: &impl Fn(Range<usize>, &str, String) -> PolicyError,
) -> Result<Rule, PolicyError> {
    let key = |k: &str| format!("rule[{index}].{k}");
    let id = rule.id.get_ref().trim().to_owned();
    if !valid_name(&id) {
        return Err(at(
            rule.id.span(),
            &key("id"),
            format!("{id:?} is not an id: use letters, digits, '-', '_' and '.'"),
        ));
    }
    let key = |k: &str| format!("rule {id:?} ({}).{k}", index + 1);
    let title = rule.title.get_ref().trim().to_owned();
    if title.is_empty() {
        return Err(at(
            rule.title.span(),
            &key("title"),
            "is empty: say what the rule requires".into(),
        ));
    }
    let severity = Severity::parse(rule.severity.get_ref()).ok_or_else(|| {
        at(
            rule.severity.span(),
            &key("severity"),
            format!(
                "{:?} is not a severity: use critical, high, medium or low",
                rule.severity.get_ref()
            ),
        )
    })?;
    let check = match rule.check.get_ref().as_str() {
        "inventory" => CheckKind::Inventory,
        "patch" => CheckKind::Patch,
        "disk_encryption" => CheckKind::DiskEncryption,
        "backup" => CheckKind::Backup,
        other => {
            return Err(at(
                rule.check.span(),
                &key("check"),
                format!(
                    "{other:?} is not a check: use inventory, patch, disk_encryption or backup"
                ),
            ));
        }
    };
    let name = rule.condition.get_ref().as_str();
    let Some(&(_, reads, threshold_key)) = CONDITIONS.iter().find(|(n, _, _)| *n == name) else {
        return Err(at(
            rule.condition.span(),
            &key("condition"),
            format!(
                "{name:?} is not a condition: use one of {}",
                CONDITIONS
                    .iter()
                    .map(|(n, _, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    };
    if reads != check {
        return Err(at(
            rule.check.span(),
            &key("check"),
            format!(
                "condition {name} reads {} evidence, not {}",
                reads.as_str(),
                check.as_str()
            ),
        ));
    }
    let thresholds: [(&str, &Option<Spanned<String>>); 7] = [
        ("max_pending_age", &rule.max_pending_age),
        ("max_since_update", &rule.max_since_update),
        ("max_metadata_age", &rule.max_metadata_age),
        ("max_since_success", &rule.max_since_success),
        ("max_since_restore_test", &rule.max_since_restore_test),
        ("max_since_check", &rule.max_since_check),
        ("max_silence", &rule.max_silence),
    ];
    // A threshold the condition does not take is named before one it lacks.
    for (threshold, value) in thresholds {
        if let Some(value) = value
            && threshold_key != Some(threshold)
        {
            return Err(at(
                value.span(),
                &key(threshold),
                format!(
                    "condition {name} takes {}, not {threshold}",
                    threshold_key.unwrap_or("no threshold")
                ),
            ));
        }
    }
    let mut threshold_ms = 0;
    if let Some(threshold) = threshold_key {
        let Some((_, Some(value))) = thresholds.iter().find(|(t, _)| *t == threshold) else {
            return Err(at(
                rule.condition.span(),
                &key(threshold),
                format!(
                    "is missing: condition {name} needs {threshold}, e.g. {threshold} = \"14d\""
                ),
            ));
        };
        let duration = humantime::parse_duration(value.get_ref()).map_err(|e| {
            at(
                value.span(),
                &key(threshold),
                format!(
                    "{:?} is not a duration ({e}): write e.g. 14d, 36h or 30m",
                    value.get_ref()
                ),
            )
        })?;
        if duration.as_secs() > 10 * 365 * 86_400 {
            return Err(at(
                value.span(),
                &key(threshold),
                "is longer than ten years: no auditor would accept it".into(),
            ));
        }
        threshold_ms = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
    }
    let condition = match name {
        "security_updates_pending" => Condition::SecurityUpdatesPending {
            max_pending_age_ms: threshold_ms,
        },
        "last_update" => Condition::LastUpdate {
            max_since_update_ms: threshold_ms,
        },
        "reboot_pending" => Condition::RebootPending {
            max_pending_age_ms: threshold_ms,
        },
        "package_metadata" => Condition::PackageMetadata {
            max_metadata_age_ms: threshold_ms,
        },
        "fixed_volumes_encrypted" => Condition::FixedVolumesEncrypted,
        "swap_encrypted_or_absent" => Condition::SwapEncryptedOrAbsent,
        "backup_recent" => Condition::BackupRecent {
            max_since_success_ms: threshold_ms,
        },
        "restore_tested" => Condition::RestoreTested {
            max_since_restore_test_ms: threshold_ms,
        },
        "backup_checked" => Condition::BackupChecked {
            max_since_check_ms: threshold_ms,
        },
        _ => Condition::AgentReporting {
            max_silence_ms: threshold_ms,
        },
    };

    let listed = rule
        .controls
        .as_ref()
        .map_or(&[][..], |c| c.get_ref().as_slice());
    if listed.is_empty() {
        let span = rule.controls.as_ref().map_or(rule.id.span(), |c| c.span());
        return Err(at(
            span,
            &key("controls"),
            "names no control: every rule must evidence at least one control, e.g. controls = [\"iso27001-2022:A.8.8\"]".into(),
        ));
    }
    let mut controls = Vec::new();
    for control in listed {
        catalogue
            .control(control.get_ref())
            .map_err(|message| at(control.span(), &key("controls"), message))?;
        if !controls.contains(control.get_ref()) {
            controls.push(control.get_ref().clone());
        }
    }

    let mut scope = Scope::default();
    if let Some(applies) = &rule.applies_to {
        let applies = applies.get_ref();
        for os in &applies.os {
            if !["linux", "macos", "windows"].contains(&os.get_ref().as_str()) {
                return Err(at(
                    os.span(),
                    &key("applies_to.os"),
                    format!(
                        "{:?} is not an OS family: use linux, macos or windows",
                        os.get_ref()
                    ),
                ));
            }
            scope.os.push(os.get_ref().clone());
        }
        for tag in &applies.tags {
            if !valid_name(tag.get_ref()) {
                return Err(at(
                    tag.span(),
                    &key("applies_to.tags"),
                    format!(
                        "{:?} is not a tag: use letters, digits, '-', '_' and '.'",
                        tag.get_ref()
                    ),
                ));
            }
            scope.tags.push(tag.get_ref().clone());
        }
        for group in &applies.groups {
            if !groups.contains(group.get_ref()) {
                return Err(at(
                    group.span(),
                    &key("applies_to.groups"),
                    format!(
                        "no group {:?} is defined: add a [[group]] with that name",
                        group.get_ref()
                    ),
                ));
            }
            scope.groups.push(group.get_ref().clone());
        }
    }
    Ok(Rule {
        id,
        title,
        severity,
        check,
        condition,
        scope,
        controls,
    })
}

/// Letters, digits, '-', '_', '.'; 1 to 64 of them.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset.min(text.len()))
        .map_or(1, |before| before.matches('\n').count() + 1)
}

/// SHA-256 of a policy's text: the same text is the same policy version.
pub fn sha256(text: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

#[cfg(test)]
mod tests;
