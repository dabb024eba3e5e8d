//! One rule applied to one host's evidence at one moment: a pure function of the facts, so every
//! judgement can be re-run over stored evidence for any past date.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Condition, Policy, Rule};
use crate::model::{BackupSource, CheckKind, Outcome, RunResult, format_unix_ms};

/// What the collector knows about one host at the moment judged.
#[derive(Debug, Clone, Default)]
pub struct HostView {
    pub agent_id: String,
    pub hostname: String,
    pub os_family: String,
    /// Declared by the deployment in the agent's config, reported with the inventory.
    pub tags: Vec<String>,
    pub enrolled_at_ms: i64,
    /// The newest evidence of any kind received by then.
    pub last_received: Option<Observed>,
    /// The newest item of each check received by then.
    pub latest: BTreeMap<CheckKind, Observed>,
    /// Since when each security update of the newest patch item has been pending, from the
    /// run of consecutive patch items that list it (back to the history `patch_history_from_ms`).
    pub security_pending_since: BTreeMap<(String, String), Seen>,
    /// Since when the newest patch item's required reboot has been required.
    pub reboot_required_since: Option<Seen>,
}

/// An evidence item as the judge sees it.
#[derive(Debug, Clone)]
pub struct Observed {
    pub sequence: u64,
    pub observed_at_ms: i64,
    pub received_at_ms: i64,
    pub outcome: Outcome,
}

/// How far an agent's time may lie after the item's arrival before it is not believed: clock
/// skew and the time a cycle takes.
pub const FUTURE_TOLERANCE_MS: i64 = 15 * 60_000;

impl Observed {
    /// Whether a time the agent reported could be true: not after the item arrived.
    fn credible(&self, at_ms: i64) -> bool {
        at_ms <= self.received_at_ms.saturating_add(FUTURE_TOLERANCE_MS)
    }
}

/// The key under which a pending security update is followed through time: the package as
/// installed, so a newer fix offered for the same outdated package does not restart its clock.
pub fn pending_key(update: &crate::model::PendingUpdate) -> (String, String) {
    (
        format!(
            "{}:{}",
            update.name,
            update.architecture.as_deref().unwrap_or("")
        ),
        update.installed_version.clone().unwrap_or_default(),
    )
}

/// The first item of a run that showed something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub sequence: u64,
    pub observed_at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleOutcome {
    Pass,
    Fail,
    NotApplicable,
    NoEvidence,
}

impl RuleOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleOutcome::Pass => "pass",
            RuleOutcome::Fail => "fail",
            RuleOutcome::NotApplicable => "not_applicable",
            RuleOutcome::NoEvidence => "no_evidence",
        }
    }

    pub fn parse(text: &str) -> Option<RuleOutcome> {
        [
            RuleOutcome::Pass,
            RuleOutcome::Fail,
            RuleOutcome::NotApplicable,
            RuleOutcome::NoEvidence,
        ]
        .into_iter()
        .find(|o| o.as_str() == text)
    }
}

/// A rule's verdict on a host, with what it rests on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Judgement {
    pub outcome: RuleOutcome,
    pub detail: String,
    /// The offending items by name: packages, volumes, backup sources.
    pub offending: Vec<String>,
    /// The evidence sequences of this host the verdict used.
    pub evidence: Vec<u64>,
    /// When the newest evidence used arrived; `None` when the verdict rests on its absence.
    #[serde(skip)]
    pub decided_by_received_ms: Option<i64>,
    /// When that evidence was observed (the agent's clock).
    #[serde(skip)]
    pub decided_by_observed_ms: Option<i64>,
}

impl Judgement {
    fn new(outcome: RuleOutcome, detail: impl Into<String>) -> Judgement {
        Judgement {
            outcome,
            detail: detail.into(),
            offending: Vec::new(),
            evidence: Vec::new(),
            decided_by_received_ms: None,
            decided_by_observed_ms: None,
        }
    }

    fn on(mut self, item: &Observed) -> Judgement {
        if !self.evidence.contains(&item.sequence) {
            self.evidence.push(item.sequence);
        }
        self.decided_by_received_ms = Some(
            self.decided_by_received_ms
                .map_or(item.received_at_ms, |t| t.max(item.received_at_ms)),
        );
        self.decided_by_observed_ms = Some(
            self.decided_by_observed_ms
                .map_or(item.observed_at_ms, |t| t.max(item.observed_at_ms)),
        );
        self
    }
}

/// Whether `rule` applies to `host`, and if not, why not.
pub fn in_scope(policy: &Policy, rule: &Rule, host: &HostView) -> Result<(), String> {
    let scope = &rule.scope;
    if !scope.os.is_empty() && !scope.os.contains(&host.os_family) {
        return Err(format!(
            "the rule applies to {}; this host runs {}",
            scope.os.join(", "),
            host.os_family
        ));
    }
    if !scope.tags.is_empty() && !scope.tags.iter().any(|t| host.tags.contains(t)) {
        return Err(format!(
            "the rule applies to hosts tagged {}; this host is tagged {}",
            scope.tags.join(", "),
            if host.tags.is_empty() {
                "nothing".to_owned()
            } else {
                host.tags.join(", ")
            }
        ));
    }
    if !scope.groups.is_empty() {
        let groups = policy.groups_of(&host.agent_id, &host.hostname);
        if !scope.groups.iter().any(|g| groups.contains(g)) {
            return Err(format!(
                "the rule applies to groups {}; this host is in none of them",
                scope.groups.join(", ")
            ));
        }
    }
    Ok(())
}

/// Judges `rule` on `host` as of `as_of_ms`.
pub fn judge(policy: &Policy, rule: &Rule, host: &HostView, as_of_ms: i64) -> Judgement {
    if let Err(why) = in_scope(policy, rule, host) {
        return Judgement::new(RuleOutcome::NotApplicable, why);
    }
    if let Condition::AgentReporting { max_silence_ms } = rule.condition {
        return agent_reporting(host, max_silence_ms, as_of_ms);
    }
    let Some(item) = host.latest.get(&rule.check) else {
        return Judgement::new(
            RuleOutcome::NoEvidence,
            format!("no {} evidence received yet", rule.check.as_str()),
        );
    };
    let age = as_of_ms.saturating_sub(item.received_at_ms);
    if age > policy.max_evidence_age_ms {
        return Judgement::new(
            RuleOutcome::NoEvidence,
            format!(
                "the newest {} evidence arrived {}, more than max_evidence_age ({}) ago",
                rule.check.as_str(),
                format_unix_ms(item.received_at_ms),
                age_text(policy.max_evidence_age_ms)
            ),
        )
        .on(item);
    }
    let judged = match (&item.outcome, rule.condition) {
        (Outcome::Error { reason, .. }, _) => Judgement::new(
            RuleOutcome::NoEvidence,
            format!(
                "the newest {} evidence is an error the agent reported: {reason}",
                rule.check.as_str()
            ),
        ),
        (Outcome::Patch(facts), Condition::SecurityUpdatesPending { max_pending_age_ms }) => {
            let mut late = Vec::new();
            let mut pending = 0;
            let mut evidence = Vec::new();
            for update in facts.pending.iter().filter(|u| u.security) {
                pending += 1;
                let key = pending_key(update);
                let since = host
                    .security_pending_since
                    .get(&key)
                    .copied()
                    .unwrap_or(Seen {
                        sequence: item.sequence,
                        observed_at_ms: item.observed_at_ms,
                    });
                let age = as_of_ms.saturating_sub(since.observed_at_ms);
                if age > max_pending_age_ms {
                    late.push(format!(
                        "{} {} -> {} (pending since {})",
                        update.name,
                        update.installed_version.as_deref().unwrap_or("?"),
                        update.available_version.as_deref().unwrap_or("?"),
                        format_unix_ms(since.observed_at_ms),
                    ));
                    if !evidence.contains(&since.sequence) {
                        evidence.push(since.sequence);
                    }
                }
            }
            let unclassified = facts
                .unreadable
                .iter()
                .find(|u| u.fact.contains("security"));
            let mut judgement = if let (true, Some(unreadable)) = (late.is_empty(), unclassified) {
                Judgement::new(
                    RuleOutcome::NoEvidence,
                    format!(
                        "which of {} pending update(s) are security fixes could not be read ({}: {})",
                        facts.pending_count, unreadable.fact, unreadable.reason
                    ),
                )
            } else if late.is_empty() {
                Judgement::new(
                    RuleOutcome::Pass,
                    if pending == 0 {
                        "no security update is pending".to_owned()
                    } else {
                        format!(
                            "{pending} security update(s) pending, none for longer than {}",
                            age_text(max_pending_age_ms)
                        )
                    },
                )
            } else {
                Judgement::new(
                    RuleOutcome::Fail,
                    format!(
                        "{} of {pending} pending security update(s) pending longer than {}",
                        late.len(),
                        age_text(max_pending_age_ms)
                    ),
                )
            };
            judgement.offending = late;
            judgement.evidence = evidence;
            judgement
        }
        (
            Outcome::Patch(facts),
            Condition::LastUpdate {
                max_since_update_ms,
            },
        ) => {
            if facts.pending_count == 0 {
                Judgement::new(RuleOutcome::Pass, "no update is pending")
            } else {
                match facts.last_install_unix_ms {
                    None => Judgement::new(
                        RuleOutcome::NoEvidence,
                        format!(
                            "{} update(s) pending and the last install time is unknown{}",
                            facts.pending_count,
                            unreadable_text(&facts.unreadable, "last_install")
                        ),
                    ),
                    Some(at) if !item.credible(at) => Judgement::new(
                        RuleOutcome::NoEvidence,
                        format!(
                            "the last install time {} lies after the evidence arrived: the host's clock or log is wrong",
                            format_unix_ms(at)
                        ),
                    ),
                    Some(at) if as_of_ms.saturating_sub(at) > max_since_update_ms => {
                        let mut j = Judgement::new(
                            RuleOutcome::Fail,
                            format!(
                                "{} update(s) pending; the last install was {} ({} ago, more than {})",
                                facts.pending_count,
                                format_unix_ms(at),
                                age_text(as_of_ms.saturating_sub(at)),
                                age_text(max_since_update_ms)
                            ),
                        );
                        j.offending = vec![format!("last install {}", format_unix_ms(at))];
                        j
                    }
                    Some(at) => Judgement::new(
                        RuleOutcome::Pass,
                        format!("updates were last installed {}", format_unix_ms(at)),
                    ),
                }
            }
        }
        (Outcome::Patch(facts), Condition::RebootPending { max_pending_age_ms }) => {
            match facts.reboot.required {
                None => Judgement::new(
                    RuleOutcome::NoEvidence,
                    format!(
                        "whether a reboot is required is unknown{}",
                        unreadable_text(&facts.unreadable, "reboot")
                    ),
                ),
                Some(false) => Judgement::new(RuleOutcome::Pass, "no reboot is required"),
                Some(true) => {
                    let since = facts
                        .reboot
                        .since_unix_ms
                        .map(|at| Seen {
                            sequence: item.sequence,
                            observed_at_ms: at,
                        })
                        .or(host.reboot_required_since)
                        .unwrap_or(Seen {
                            sequence: item.sequence,
                            observed_at_ms: item.observed_at_ms,
                        });
                    let age = as_of_ms.saturating_sub(since.observed_at_ms);
                    let reasons: Vec<String> = facts
                        .reboot
                        .reasons
                        .iter()
                        .map(|r| format!("{}: {}", r.source, r.detail))
                        .collect();
                    if age > max_pending_age_ms {
                        let mut j = Judgement::new(
                            RuleOutcome::Fail,
                            format!(
                                "a reboot has been required since {} ({}, more than {})",
                                format_unix_ms(since.observed_at_ms),
                                age_text(age),
                                age_text(max_pending_age_ms)
                            ),
                        );
                        j.offending = if reasons.is_empty() {
                            vec!["reboot required".to_owned()]
                        } else {
                            reasons
                        };
                        j.evidence = vec![since.sequence];
                        j
                    } else {
                        Judgement::new(
                            RuleOutcome::Pass,
                            format!(
                                "a reboot is required since {}, within {}",
                                format_unix_ms(since.observed_at_ms),
                                age_text(max_pending_age_ms)
                            ),
                        )
                    }
                }
            }
        }
        (
            Outcome::Patch(facts),
            Condition::PackageMetadata {
                max_metadata_age_ms,
            },
        ) => match facts.metadata_refreshed_unix_ms {
            None => Judgement::new(
                RuleOutcome::NoEvidence,
                format!(
                    "when package metadata was refreshed is unknown{}",
                    unreadable_text(&facts.unreadable, "metadata")
                ),
            ),
            Some(at) if !item.credible(at) => Judgement::new(
                RuleOutcome::NoEvidence,
                format!(
                    "the metadata refresh time {} lies after the evidence arrived: the host's clock is wrong",
                    format_unix_ms(at)
                ),
            ),
            Some(at) if as_of_ms.saturating_sub(at) > max_metadata_age_ms => {
                let mut j = Judgement::new(
                    RuleOutcome::Fail,
                    format!(
                        "package metadata was last refreshed {} ({} ago, more than {})",
                        format_unix_ms(at),
                        age_text(as_of_ms.saturating_sub(at)),
                        age_text(max_metadata_age_ms)
                    ),
                );
                j.offending = facts
                    .managers
                    .iter()
                    .map(|m| format!("{} metadata", m.name))
                    .collect();
                j
            }
            Some(at) => Judgement::new(
                RuleOutcome::Pass,
                format!("package metadata refreshed {}", format_unix_ms(at)),
            ),
        },
        (Outcome::DiskEncryption(facts), Condition::FixedVolumesEncrypted) => {
            let mut offending = Vec::new();
            let mut unknown = Vec::new();
            let mut fixed = 0;
            for volume in facts
                .volumes
                .iter()
                .filter(|v| v.role == "system" || v.role == "data")
            {
                fixed += 1;
                let name = if volume.mount_points.is_empty() {
                    volume.id.clone()
                } else {
                    format!("{} ({})", volume.id, volume.mount_points.join(", "))
                };
                match volume.encrypted {
                    "encrypted" if volume.protection.as_deref() == Some("off") => {
                        offending.push(format!("{name}: encrypted but protection is off"));
                    }
                    "encrypted" => {}
                    "unknown" => unknown.push(format!("{name}: {}", volume.reason)),
                    state => offending.push(format!("{name}: {state} ({})", volume.reason)),
                }
            }
            if !offending.is_empty() {
                let mut j = Judgement::new(
                    RuleOutcome::Fail,
                    format!(
                        "{} of {fixed} system or data volume(s) not fully protected",
                        offending.len()
                    ),
                );
                offending.extend(unknown);
                j.offending = offending;
                j
            } else if !unknown.is_empty() || (fixed == 0 && facts.system_encrypted.is_none()) {
                let mut j = Judgement::new(
                    RuleOutcome::NoEvidence,
                    if fixed == 0 {
                        format!(
                            "no system or data volume was seen{}",
                            unreadable_text(&facts.unreadable, "")
                        )
                    } else {
                        format!("{} volume(s) of unknown encryption", unknown.len())
                    },
                );
                j.offending = unknown;
                j
            } else {
                Judgement::new(
                    RuleOutcome::Pass,
                    format!("all {fixed} system and data volume(s) are encrypted"),
                )
            }
        }
        (Outcome::DiskEncryption(facts), Condition::SwapEncryptedOrAbsent) => match facts.swap {
            "encrypted" => Judgement::new(RuleOutcome::Pass, "swap is encrypted"),
            "absent" => Judgement::new(RuleOutcome::Pass, "there is no swap"),
            "unencrypted" => {
                let mut j = Judgement::new(RuleOutcome::Fail, "swap is not encrypted");
                j.offending = facts
                    .volumes
                    .iter()
                    .filter(|v| v.role == "swap" && v.encrypted != "encrypted")
                    .map(|v| format!("{}: {}", v.id, v.reason))
                    .collect();
                if j.offending.is_empty() {
                    j.offending.push("swap".to_owned());
                }
                j
            }
            _ => Judgement::new(
                RuleOutcome::NoEvidence,
                format!(
                    "whether swap is encrypted is unknown{}",
                    unreadable_text(&facts.unreadable, "swap")
                ),
            ),
        },
        (
            Outcome::Backup(facts),
            Condition::BackupRecent {
                max_since_success_ms,
            },
        ) => {
            if facts.sources.is_empty() {
                let mut j = Judgement::new(
                    RuleOutcome::Fail,
                    "no backup source was observed on this host",
                );
                j.offending = vec!["no backup source".to_owned()];
                j
            } else {
                let offending: Vec<String> = facts
                    .sources
                    .iter()
                    .filter_map(|s| {
                        if let Some(error) = &s.error {
                            return Some(format!(
                                "{}: {} ({})",
                                source_name(s),
                                error.kind,
                                error.message
                            ));
                        }
                        match s.last_success_unix_ms {
                            None => Some(format!("{}: never succeeded", source_name(s))),
                            Some(at) if !item.credible(at) => Some(format!(
                                "{}: last success {} lies after the evidence arrived",
                                source_name(s),
                                format_unix_ms(at)
                            )),
                            Some(at) if as_of_ms.saturating_sub(at) > max_since_success_ms => Some(
                                format!("{}: last success {}", source_name(s), format_unix_ms(at)),
                            ),
                            Some(_) => None,
                        }
                    })
                    .collect();
                sources_judgement(
                    facts.sources.len(),
                    offending,
                    &format!("succeeded within {}", age_text(max_since_success_ms)),
                )
            }
        }
        (
            Outcome::Backup(facts),
            Condition::RestoreTested {
                max_since_restore_test_ms,
            },
        ) => run_results(
            item,
            &facts.sources,
            |s| &s.restore_test,
            "restore test",
            max_since_restore_test_ms,
            as_of_ms,
        ),
        (Outcome::Backup(facts), Condition::BackupChecked { max_since_check_ms }) => run_results(
            item,
            &facts.sources,
            |s| &s.integrity_check,
            "integrity check",
            max_since_check_ms,
            as_of_ms,
        ),
        (outcome, condition) => Judgement::new(
            RuleOutcome::NoEvidence,
            format!(
                "{} evidence holds {} facts, which {condition:?} cannot judge",
                rule.check.as_str(),
                outcome_name(outcome)
            ),
        ),
    };
    judged.on(item)
}

fn agent_reporting(host: &HostView, max_silence_ms: i64, as_of_ms: i64) -> Judgement {
    match &host.last_received {
        None if as_of_ms.saturating_sub(host.enrolled_at_ms) > max_silence_ms => {
            let mut j = Judgement::new(
                RuleOutcome::Fail,
                format!(
                    "enrolled {} and never reported ({} ago, more than {})",
                    format_unix_ms(host.enrolled_at_ms),
                    age_text(as_of_ms.saturating_sub(host.enrolled_at_ms)),
                    age_text(max_silence_ms)
                ),
            );
            j.offending = vec![format!("{} never reported", host.hostname)];
            j
        }
        None => Judgement::new(
            RuleOutcome::NoEvidence,
            format!(
                "enrolled {}; no evidence yet",
                format_unix_ms(host.enrolled_at_ms)
            ),
        ),
        Some(last) => {
            let silence = as_of_ms.saturating_sub(last.received_at_ms);
            if silence > max_silence_ms {
                let mut j = Judgement::new(
                    RuleOutcome::Fail,
                    format!(
                        "silent since {} ({}, more than {})",
                        format_unix_ms(last.received_at_ms),
                        age_text(silence),
                        age_text(max_silence_ms)
                    ),
                );
                j.offending = vec![format!("{} silent", host.hostname)];
                j.evidence = vec![last.sequence];
                // The verdict rests on what did not arrive.
                j
            } else {
                Judgement::new(
                    RuleOutcome::Pass,
                    format!(
                        "last evidence arrived {}",
                        format_unix_ms(last.received_at_ms)
                    ),
                )
                .on(last)
            }
        }
    }
}

fn run_results(
    item: &Observed,
    sources: &[BackupSource],
    result: impl Fn(&BackupSource) -> &Option<RunResult>,
    what: &str,
    max_age_ms: i64,
    as_of_ms: i64,
) -> Judgement {
    // Only restic and borg are tested by the agent; other tools say nothing either way.
    let testable: Vec<&BackupSource> = sources
        .iter()
        .filter(|s| result(s).is_some() || s.tool == "restic" || s.tool == "borg")
        .collect();
    if testable.is_empty() {
        return Judgement::new(
            RuleOutcome::NotApplicable,
            format!("no backup source on this host is one the agent can {what}"),
        );
    }
    let offending: Vec<String> = testable
        .iter()
        .filter_map(|s| match result(s) {
            None => Some(format!(
                "{}: no {what} recorded{}",
                source_name(s),
                s.error
                    .as_ref()
                    .map(|e| format!(" ({}: {})", e.kind, e.message))
                    .unwrap_or_default()
            )),
            Some(run) if !run.passed => Some(format!(
                "{}: {what} failed {}: {}",
                source_name(s),
                format_unix_ms(run.at_unix_ms),
                run.detail
            )),
            Some(run) if !item.credible(run.at_unix_ms) => Some(format!(
                "{}: last {what} {} lies after the evidence arrived",
                source_name(s),
                format_unix_ms(run.at_unix_ms)
            )),
            Some(run) if as_of_ms.saturating_sub(run.at_unix_ms) > max_age_ms => Some(format!(
                "{}: last {what} {}",
                source_name(s),
                format_unix_ms(run.at_unix_ms)
            )),
            Some(_) => None,
        })
        .collect();
    sources_judgement(
        testable.len(),
        offending,
        &format!("passed a {what} within {}", age_text(max_age_ms)),
    )
}

fn sources_judgement(total: usize, offending: Vec<String>, passed: &str) -> Judgement {
    if offending.is_empty() {
        Judgement::new(
            RuleOutcome::Pass,
            format!("all {total} backup source(s) {passed}"),
        )
    } else {
        let mut j = Judgement::new(
            RuleOutcome::Fail,
            format!(
                "{} of {total} backup source(s) have not {passed}",
                offending.len()
            ),
        );
        j.offending = offending;
        j
    }
}

fn source_name(source: &BackupSource) -> String {
    format!("{} {}", source.tool, source.name)
}

fn outcome_name(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Inventory(_) => CheckKind::Inventory.as_str(),
        Outcome::Patch(_) => CheckKind::Patch.as_str(),
        Outcome::DiskEncryption(_) => CheckKind::DiskEncryption.as_str(),
        Outcome::Backup(_) => CheckKind::Backup.as_str(),
        Outcome::Gap(_) => CheckKind::Gap.as_str(),
        Outcome::Error { .. } => "error",
    }
}

/// ", unreadable: REASON" for the first unreadable fact whose name contains `fact`.
fn unreadable_text(unreadable: &[crate::model::UnreadableFact], fact: &str) -> String {
    unreadable
        .iter()
        .find(|u| u.fact.contains(fact))
        .map(|u| format!(" ({}: {})", u.fact, u.reason))
        .unwrap_or_default()
}

/// A duration for people: "3d 4h", "26h", "15m", "40s".
pub fn age_text(ms: i64) -> String {
    let secs = ms.max(0) / 1000;
    let (days, hours, minutes) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, 0) => format!("{h}h"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, 0, _) => format!("{d}d"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests;
