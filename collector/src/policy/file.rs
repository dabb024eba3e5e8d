//! The policy file as written: parsed strictly (unknown keys refused), with the position of
//! every value that validation may have to complain about.

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    pub name: Spanned<String>,
    /// Days to remediate per severity, counted from when an action opens or reopens.
    pub due_days: Option<Spanned<DueDays>>,
    /// A check's newest evidence older than this judges nothing: the rule has no evidence.
    pub max_evidence_age: Option<Spanned<String>>,
    #[serde(default, rename = "group")]
    pub groups: Vec<GroupFile>,
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DueDays {
    pub critical: u32,
    pub high: u32,
    pub medium: u32,
    pub low: u32,
}

/// A named set of hosts, by hostname or agent id, or by hostname pattern (`*` and `?`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupFile {
    pub name: Spanned<String>,
    #[serde(default)]
    pub hosts: Vec<Spanned<String>>,
    #[serde(default)]
    pub hostname_patterns: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    pub id: Spanned<String>,
    pub title: Spanned<String>,
    pub severity: Spanned<String>,
    pub check: Spanned<String>,
    pub condition: Spanned<String>,
    #[serde(default)]
    pub applies_to: Option<Spanned<AppliesToFile>>,
    pub controls: Option<Spanned<Vec<Spanned<String>>>>,
    /// Named thresholds; which one a condition needs is checked by validation.
    pub max_pending_age: Option<Spanned<String>>,
    pub max_since_update: Option<Spanned<String>>,
    pub max_metadata_age: Option<Spanned<String>>,
    pub max_since_success: Option<Spanned<String>>,
    pub max_since_restore_test: Option<Spanned<String>>,
    pub max_since_check: Option<Spanned<String>>,
    pub max_silence: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppliesToFile {
    #[serde(default)]
    pub os: Vec<Spanned<String>>,
    #[serde(default)]
    pub tags: Vec<Spanned<String>>,
    #[serde(default)]
    pub groups: Vec<Spanned<String>>,
}
