//! CSV exports of a period: evidence, rule results, corrective actions with their events.
//! Rows are streamed to the writer a page at a time. Times are RFC 3339 in UTC.
//!
//! Hostnames, reasons and details come from agents and people, so every text cell that a
//! spreadsheet would read as a formula (starting with `=`, `+`, `-`, `@`, tab or carriage
//! return) gets a leading apostrophe (OWASP's advice against CSV injection).

use std::borrow::Cow;
use std::io::Write;

use super::{ExportError, Period, rfc3339};
use crate::actions::ActionView;
use crate::convert;
use crate::model::{CheckKind, Outcome, format_unix_ms};
use crate::review::{self, EvidenceRecord};
use crate::store::Store;

/// Rows read from the store at a time.
const PAGE: usize = 1_000;

/// Which CSV to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsvKind {
    /// Every evidence item that arrived in the period.
    Evidence,
    /// Every rule result stored in the period (results are stored when they change).
    Results,
    /// Corrective actions with an event in the period, one row per event.
    Actions,
}

impl CsvKind {
    pub const ALL: [CsvKind; 3] = [CsvKind::Evidence, CsvKind::Results, CsvKind::Actions];

    pub fn as_str(self) -> &'static str {
        match self {
            CsvKind::Evidence => "evidence",
            CsvKind::Results => "results",
            CsvKind::Actions => "actions",
        }
    }

    pub fn parse(text: &str) -> Result<CsvKind, ExportError> {
        CsvKind::ALL
            .into_iter()
            .find(|k| k.as_str() == text)
            .ok_or_else(|| ExportError::UnknownCsv(text.to_owned()))
    }
}

/// Writes the `kind` CSV of `period` to `out`, header first; returns the rows written.
pub fn write(
    store: &Store,
    kind: CsvKind,
    period: Period,
    out: impl Write,
) -> Result<u64, ExportError> {
    match kind {
        CsvKind::Evidence => write_evidence(store, period, out),
        CsvKind::Results => write_results(store, period, out),
        CsvKind::Actions => write_actions(store, period, out),
    }
}

/// A text cell as a spreadsheet may show it without running it.
pub fn cell(text: &str) -> Cow<'_, str> {
    match text.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => Cow::Owned(format!("'{text}")),
        _ => Cow::Borrowed(text),
    }
}

/// Evidence that arrived in the period, in arrival order.
pub fn write_evidence(store: &Store, period: Period, out: impl Write) -> Result<u64, ExportError> {
    let mut csv = ::csv::Writer::from_writer(out);
    csv.write_record([
        "agent_id",
        "hostname",
        "sequence",
        "check",
        "observed_at",
        "received_at",
        "outcome",
        "summary",
        "chain_hash",
    ])?;
    let mut rows = 0;
    let mut after = 0;
    loop {
        let page = store.evidence_page(period.from_ms, period.to_ms, after, PAGE)?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for row in page {
            let item = row
                .bytes
                .as_ref()
                .ok()
                .and_then(|bytes| convert::decode_item(0, bytes).ok());
            let outcome = match item.as_ref().map(|i| &i.outcome) {
                None => "undecodable",
                Some(Outcome::Error { .. }) => "error",
                Some(Outcome::Gap(_)) => "gap",
                Some(_) => "observed",
            };
            let check = CheckKind::from_number(row.check_kind).map_or("unknown", |c| c.as_str());
            let record = EvidenceRecord {
                agent_id: row.agent_id,
                sequence: row.sequence,
                check: CheckKind::from_number(row.check_kind),
                observed_at: format_unix_ms(row.observed_at_ms),
                received_at: format_unix_ms(row.received_at_ms),
                agent_clock_skew_ms: None,
                hash: hex::encode(&row.hash),
                prev_hash: hex::encode(&row.prev_hash),
                item,
            };
            let summary = one_line(&review::summary(&record));
            csv.write_record([
                cell(&record.agent_id).as_ref(),
                &cell(&row.hostname),
                &record.sequence.to_string(),
                check,
                &rfc3339(row.observed_at_ms),
                &rfc3339(row.received_at_ms),
                outcome,
                &cell(&summary),
                &record.hash,
            ])?;
            rows += 1;
        }
    }
    csv.flush()?;
    Ok(rows)
}

/// Rule results stored in the period, oldest first.
pub fn write_results(store: &Store, period: Period, out: impl Write) -> Result<u64, ExportError> {
    let mut csv = ::csv::Writer::from_writer(out);
    csv.write_record([
        "at",
        "policy_version",
        "rule_id",
        "agent_id",
        "hostname",
        "outcome",
        "detail",
        "offending",
        "evidence_sequences",
    ])?;
    let mut rows = 0;
    let mut after = 0;
    loop {
        let page = store.results_page(period.from_ms, period.to_ms, after, PAGE)?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for row in page {
            let r = &row.result;
            csv.write_record([
                rfc3339(r.at_ms).as_str(),
                &r.policy_version.to_string(),
                &cell(&r.rule_id),
                &cell(&r.agent_id),
                &cell(&row.hostname),
                &cell(&r.outcome),
                &cell(&one_line(&r.detail)),
                &cell(&one_line(&r.offending.join("; "))),
                &sequences(&r.evidence),
            ])?;
            rows += 1;
        }
    }
    csv.flush()?;
    Ok(rows)
}

/// Corrective actions with an event in the period: one row per such event, oldest first per
/// action, each row carrying its action's columns.
pub fn write_actions(store: &Store, period: Period, out: impl Write) -> Result<u64, ExportError> {
    let mut csv = ::csv::Writer::from_writer(out);
    csv.write_record([
        "action_id",
        "agent_id",
        "hostname",
        "rule_id",
        "rule_title",
        "severity",
        "opened_at",
        "event_at",
        "event",
        "state",
        "actor",
        "reason",
        "owner",
        "due_at",
        "root_cause",
        "risk_expires_at",
        "evidence_sequences",
    ])?;
    let mut rows = 0;
    let last_ms = period.to_ms - 1;
    // Actions are one per (host, rule): few enough to read at once, unlike evidence.
    for (action, events) in store.actions_with_events(Some(last_ms))? {
        let Some(view) = ActionView::at(action, events, last_ms) else {
            continue;
        };
        let a = &view.action;
        for e in view
            .events
            .iter()
            .filter(|e| (period.from_ms..period.to_ms).contains(&e.at_ms))
        {
            let optional_time = |ms: Option<i64>| ms.map(rfc3339).unwrap_or_default();
            csv.write_record([
                a.id.to_string().as_str(),
                &cell(&a.agent_id),
                &cell(&a.hostname),
                &cell(&a.rule_id),
                &cell(&one_line(&a.rule_title)),
                &cell(&a.severity),
                &rfc3339(a.opened_at_ms),
                &rfc3339(e.at_ms),
                &cell(&e.kind),
                &cell(&e.state),
                &cell(&one_line(&e.actor)),
                &cell(&one_line(&e.reason)),
                &cell(&one_line(e.owner.as_deref().unwrap_or_default())),
                &optional_time(e.due_at_ms),
                &cell(&one_line(e.root_cause.as_deref().unwrap_or_default())),
                &optional_time(e.risk_expires_at_ms),
                &sequences(&e.evidence),
            ])?;
            rows += 1;
        }
    }
    csv.flush()?;
    Ok(rows)
}

/// Line breaks become spaces, so that one record is one line for the tools that read CSV
/// line by line (the `csv` crate would quote them correctly, but `grep` and people would not).
fn one_line(text: &str) -> String {
    text.split(['\n', '\r']).collect::<Vec<_>>().join(" ")
}

fn sequences(sequences: &[u64]) -> String {
    sequences
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cell_that_a_spreadsheet_would_run_gets_an_apostrophe() {
        for dangerous in [
            "=HYPERLINK(\"http://x\")",
            "+1+1",
            "-2+3",
            "@SUM(A1)",
            "\tcmd",
            "\rcmd",
        ] {
            let safe = cell(dangerous);
            assert_eq!(safe, format!("'{dangerous}"), "{dangerous:?}");
        }
        for harmless in ["web-01", "", "'already", "2026-10-01T00:00:00Z", "a=b"] {
            assert_eq!(cell(harmless), harmless, "{harmless:?}");
        }
    }

    #[test]
    fn injected_cells_survive_quoting_and_read_back_as_text() {
        let mut out = Vec::new();
        {
            let mut csv = ::csv::Writer::from_writer(&mut out);
            csv.write_record([cell("=cmd|' /C calc'!A0").as_ref(), &cell("a,\"b\"\nc")])
                .expect("write");
            csv.flush().expect("flush");
        }
        let mut reader = ::csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(out.as_slice());
        let record = reader.records().next().expect("a row").expect("parses");
        assert_eq!(&record[0], "'=cmd|' /C calc'!A0");
        assert_eq!(
            &record[1], "a,\"b\"\nc",
            "quotes, commas and newlines round-trip"
        );
    }

    #[test]
    fn line_breaks_become_spaces() {
        assert_eq!(one_line("a\nb\r\nc"), "a b  c");
        assert_eq!(
            cell(&one_line("\n=1")),
            " =1",
            "a leading break is no way around"
        );
    }

    #[test]
    fn unknown_kinds_name_the_known_ones() {
        assert_eq!(CsvKind::parse("results").expect("known"), CsvKind::Results);
        let error = CsvKind::parse("evidnce").expect_err("unknown").to_string();
        assert!(error.contains("evidence, results or actions"), "{error}");
    }
}
