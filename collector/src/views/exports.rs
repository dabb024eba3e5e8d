//! Exports people download (web page and API): how a download is named and how it is recorded
//! in the audit log, in one place, so both ways in leave the same trail.
//!
//! The web page calls these too: after building an export (`crate::export`) it records the
//! attempt with `audit_export(store, &who, Origin { channel: "web", .. }, "csv", ...)`, taken or
//! refused, and names the file with `file_name`.

use super::actions::Origin;
use crate::accounts::Principal;
use crate::export::{Period, rfc3339};
use crate::model::now_unix_ms;
use crate::store::{AuditEntry, Store, StoreError};

/// Records an export attempt by `who` as the audit action `export.{kind}` (e.g. `export.csv`,
/// `export.report`, `export.oscal.poam`, `export.bundle`) with the period as its target.
///
/// `period_text` is `period_text(period)` when the period parsed, or the text as given when it
/// did not; `ok` says whether the export was made (and sent); `detail` says what it held (rows,
/// items) or why it was refused. The invariant is one audit row per attempt, refused included.
pub fn audit_export(
    store: &Store,
    who: &Principal,
    origin: Origin<'_>,
    kind: &str,
    period_text: &str,
    ok: bool,
    detail: &str,
) -> Result<(), StoreError> {
    store.append_audit(&AuditEntry {
        at_ms: now_unix_ms(),
        actor: &who.name,
        role: Some(who.role.as_str()),
        channel: origin.channel,
        action: &format!("export.{kind}"),
        target: period_text,
        ok,
        detail,
        remote_addr: origin.remote_addr,
    })?;
    Ok(())
}

/// The period as the audit log shows it: `from <start> to <end>` in RFC 3339, end exclusive.
pub fn period_text(period: Period) -> String {
    format!(
        "from {} to {}",
        rfc3339(period.from_ms),
        rfc3339(period.to_ms)
    )
}

/// The period as given when it could not be read, for the audit log of a refused export.
pub fn given_period_text(from: Option<&str>, to: Option<&str>) -> String {
    format!(
        "from {:?} to {:?}",
        from.unwrap_or_default(),
        to.unwrap_or_default()
    )
}

/// A download's file name: `evident-{stem}-{first day}-{last day}.{extension}`, the days in
/// UTC, the last one being the day of the period's last millisecond.
pub fn file_name(stem: &str, period: Period, extension: &str) -> String {
    let day = |ms: i64| rfc3339(ms).chars().take(10).collect::<String>();
    format!(
        "evident-{stem}-{}-{}.{extension}",
        day(period.from_ms),
        day(period.to_ms.saturating_sub(1))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_named_by_the_days_of_its_period() {
        let period = Period::parse("2026-10-01", "2026-10-31").expect("period");
        assert_eq!(
            file_name("evidence", period, "csv"),
            "evident-evidence-2026-10-01-2026-10-31.csv"
        );
        assert_eq!(
            period_text(period),
            "from 2026-10-01T00:00:00Z to 2026-11-01T00:00:00Z"
        );
    }
}
