//! The overview's trend: the share of in-scope (host, rule) results passing at the end of each
//! of the last days, per control and for the whole fleet, from the results recorded under the
//! policy version in force.
//!
//! A day's point is a function of the results recorded by its end, which never change once the
//! day is over (results are recorded as they are judged, at the time of judging). So the
//! evaluator counts each ended UTC day once and stores the counts (`trend_days`); the page reads
//! those and counts only the moment asked for, which `views::fleet` has already read. A day
//! without stored counts (the evaluator has not run since) is counted from the results here.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use tracing::warn;

use crate::model::format_unix_ms;
use crate::policy::judge::RuleOutcome;
use crate::status::{PolicyInForce, StatusError};
use crate::store::{Store, StoreError};

/// Days of history the overview's trend shows.
pub const TREND_DAYS: usize = 30;

const DAY_MS: i64 = 86_400_000;

/// Per rule id: (results passing, results in scope).
pub type Counts = BTreeMap<String, (i64, i64)>;

#[derive(Debug, Clone, Serialize)]
pub struct Trend {
    /// The end of each day (UTC midnight), oldest first; the last point is the moment asked
    /// for.
    pub days: Vec<String>,
    /// Per day, `None` before anything was recorded.
    pub fleet: Vec<Option<f64>>,
    pub controls: Vec<(String, Vec<Option<f64>>)>,
}

/// Counts results per rule: a pass is in scope and passing, a failure or missing evidence in
/// scope only, not applicable neither.
pub fn count(counts: &mut Counts, rule_id: &str, outcome: RuleOutcome) {
    // Looked up by `&str` first: a rule's key is allocated once, not once per host.
    let entry = match counts.get_mut(rule_id) {
        Some(entry) => entry,
        None => counts.entry(rule_id.to_owned()).or_default(),
    };
    tally(entry, outcome);
}

/// Adds one result to a rule's (passing, in scope).
pub fn tally(entry: &mut (i64, i64), outcome: RuleOutcome) {
    let (p, t) = match outcome {
        RuleOutcome::Pass => (1, 1),
        RuleOutcome::Fail | RuleOutcome::NoEvidence => (0, 1),
        RuleOutcome::NotApplicable => (0, 0),
    };
    entry.0 += p;
    entry.1 += t;
}

/// The ends of the `days` points up to `as_of_ms`: the UTC midnights before it, then itself.
fn day_ends(as_of_ms: i64, days: usize) -> Vec<i64> {
    let last_midnight = (as_of_ms - 1).div_euclid(DAY_MS) * DAY_MS;
    (1..days)
        .rev()
        .map(|back| last_midnight - (back as i64 - 1) * DAY_MS)
        .chain([as_of_ms])
        .collect()
}

/// The counts at `at_ms`, from the results (nothing before the version's first result).
fn counts_at(store: &Store, version: i64, at_ms: i64) -> Result<Counts, StoreError> {
    if store
        .first_result_ms(version)?
        .is_none_or(|first| first > at_ms)
    {
        return Ok(Counts::new());
    }
    let mut counts = Counts::new();
    store.outcomes_as_of(version, at_ms, |r| {
        if let Some(outcome) = RuleOutcome::parse(r.outcome) {
            count(&mut counts, r.rule_id, outcome);
        }
    })?;
    Ok(counts)
}

/// The trend up to `as_of_ms`, whose own counts (`Fleet::recorded`) the caller has.
pub fn trend(
    store: &Store,
    in_force: &PolicyInForce,
    as_of_ms: i64,
    days: usize,
    present: &Counts,
) -> Result<Trend, StatusError> {
    let ends = day_ends(as_of_ms, days);
    let controls = in_force.policy.controls();
    let mut out = Trend {
        days: ends.iter().map(|ms| format_unix_ms(*ms)).collect(),
        fleet: Vec::with_capacity(days),
        controls: controls.iter().map(|c| (c.clone(), Vec::new())).collect(),
    };
    let Some(version) = in_force.version else {
        out.fleet = vec![None; ends.len()];
        for (_, points) in &mut out.controls {
            *points = vec![None; ends.len()];
        }
        return Ok(out);
    };
    let (past, _) = ends.split_at(ends.len() - 1);
    let mut stored: HashMap<i64, Counts> = HashMap::new();
    if let (Some(first), Some(last)) = (past.first(), past.last()) {
        for (day_end_ms, text) in store.trend_days(version, *first, *last)? {
            match serde_json::from_str(&text) {
                Ok(counts) => {
                    stored.insert(day_end_ms, counts);
                }
                Err(error) => {
                    warn!(%error, day_end_ms, "stored trend counts unreadable: counted again")
                }
            }
        }
    }
    let rules_of: Vec<Vec<&String>> = controls
        .iter()
        .map(|control| {
            in_force
                .policy
                .rules
                .iter()
                .filter(|r| r.controls.contains(control))
                .map(|r| &r.id)
                .collect()
        })
        .collect();
    for end in &ends {
        let counted;
        let counts = if *end == as_of_ms {
            present
        } else if let Some(counts) = stored.get(end) {
            counts
        } else {
            counted = counts_at(store, version, *end)?;
            &counted
        };
        let rate = |rules: &mut dyn Iterator<Item = &String>| {
            let (p, t) = rules
                .filter_map(|r| counts.get(r))
                .fold((0, 0), |(p, t), (rp, rt)| (p + rp, t + rt));
            (t > 0).then(|| p as f64 / t as f64)
        };
        out.fleet.push(rate(&mut counts.keys()));
        for ((_, points), rules) in out.controls.iter_mut().zip(&rules_of) {
            points.push(rate(&mut rules.iter().copied()));
        }
    }
    Ok(out)
}

/// Counts and stores every ended day of the last `TREND_DAYS` under `version` not stored yet.
/// The evaluator calls it after recording a pass judged at `now_ms`: every result of a day
/// that ended before `now_ms` is recorded by then.
pub fn store_ended_days(store: &Store, version: i64, now_ms: i64) -> Result<usize, StoreError> {
    let ends = day_ends(now_ms, TREND_DAYS);
    let past = &ends[..ends.len() - 1];
    let (Some(first), Some(last)) = (past.first(), past.last()) else {
        return Ok(0);
    };
    let have: std::collections::HashSet<i64> = store
        .trend_days(version, *first, *last)?
        .into_iter()
        .map(|(day, _)| day)
        .collect();
    let mut stored = 0;
    for end in past.iter().filter(|end| !have.contains(end)) {
        let counts = counts_at(store, version, *end)?;
        let text = serde_json::to_string(&counts).unwrap_or_else(|_| "{}".into());
        store.put_trend_day(version, *end, &text)?;
        stored += 1;
    }
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_points_are_the_midnights_before_the_moment_then_the_moment() {
        let noon = 20_000 * DAY_MS + DAY_MS / 2;
        assert_eq!(
            day_ends(noon, 3),
            vec![19_999 * DAY_MS, 20_000 * DAY_MS, noon]
        );
        let midnight = 20_000 * DAY_MS;
        assert_eq!(
            day_ends(midnight, 3),
            vec![19_998 * DAY_MS, 19_999 * DAY_MS, midnight]
        );
    }
}
