//! What the Windows checks share: the PowerShell they run and the way its `ConvertTo-Json`
//! writes dates. Each Windows check runs one script that emits one JSON object, so that a whole
//! check is one recorded command.

use serde_json::{Map, Value};

/// Windows PowerShell 5.1, present on every supported Windows; the scripts also run on 7.
pub(crate) const POWERSHELL: &str = "powershell.exe";

/// The elements of what should be an array: an array, the `value` of PowerShell 5.1's
/// `{ "value": [...], "Count": n }`, a bare element (`ConvertTo-Json` unwraps a one-element
/// array), or none for `null`.
pub(crate) fn items(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        Value::Object(object) if is_wrapped_array(object) => {
            object.get("value").map(items).unwrap_or_default()
        }
        value => vec![value],
    }
}

/// [`items`] of an optional value: none when absent.
pub(crate) fn items_of(value: Option<&Value>) -> Vec<&Value> {
    value.map(items).unwrap_or_default()
}

fn is_wrapped_array(object: &Map<String, Value>) -> bool {
    object.len() == 2
        && object.get("value").is_some_and(Value::is_array)
        && object.contains_key("Count")
}

/// A string or number as trimmed text; blank counts as absent.
pub(crate) fn text_of(value: Option<&Value>) -> Option<String> {
    let text = match value? {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    (!text.is_empty()).then_some(text)
}

/// A number, or a string holding one; a fractional number is cut to its whole part.
pub(crate) fn integer_of(value: &Value) -> Option<i64> {
    match value {
        #[allow(clippy::cast_possible_truncation)]
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A boolean, `0`/`1`, or `"True"`/`"False"` in any case.
pub(crate) fn bool_of(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_i64().map(|n| n != 0),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// A date as the scripts write it (ISO 8601 with an offset), as Windows PowerShell 5.1's
/// `ConvertTo-Json` writes a `DateTime` (`/Date(1700000000000)/`), or the `value` of a
/// `{ value, DisplayHint, DateTime }` object. See [`parse_cim_datetime`].
pub(crate) fn date_of(value: &Value) -> Option<i64> {
    match value {
        Value::String(s) => parse_cim_datetime(s),
        Value::Object(object) => object.get("value").and_then(date_of),
        _ => None,
    }
}

/// A CIM datetime as PowerShell's `ConvertTo-Json` writes it, in milliseconds since the epoch:
/// `/Date(1700000000500)/` (PowerShell 5.1; the number is UTC milliseconds, an optional
/// `+0100` suffix only names the zone) or ISO 8601 with an offset,
/// `2023-11-14T23:13:20.5+01:00` (PowerShell 7). A time without an offset is not an instant.
pub(crate) fn parse_cim_datetime(raw: &str) -> Option<i64> {
    let raw = raw.trim();
    if let Some(inner) = raw
        .strip_prefix("/Date(")
        .and_then(|rest| rest.strip_suffix(")/"))
    {
        let end = inner
            .char_indices()
            .skip(1)
            .find(|(_, c)| *c == '+' || *c == '-')
            .map_or(inner.len(), |(i, _)| i);
        return inner[..end].parse().ok();
    }
    parse_iso8601(raw)
}

/// PowerShell 7's ISO 8601 form, e.g. `2023-11-14T23:13:20.5000000+01:00`.
fn parse_iso8601(raw: &str) -> Option<i64> {
    let parsed =
        time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(parsed.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cim_datetimes() {
        assert_eq!(
            parse_cim_datetime("/Date(1700032400500)/"),
            Some(1_700_032_400_500)
        );
        assert_eq!(
            parse_cim_datetime("/Date(1700032400500+0100)/"),
            Some(1_700_032_400_500)
        );
        assert_eq!(parse_cim_datetime("/Date(-1000)/"), Some(-1000));
        assert_eq!(
            parse_cim_datetime("2023-11-14T23:13:20.5+01:00"),
            Some(1_700_000_000_500)
        );
        assert_eq!(
            parse_cim_datetime("2023-11-14T23:13:20.5000000+01:00"),
            Some(1_700_000_000_500)
        );
        assert_eq!(
            parse_cim_datetime("2023-11-14T22:13:20Z"),
            Some(1_700_000_000_000)
        );
        assert_eq!(
            parse_cim_datetime("2023-11-14T17:13:20-05:00"),
            Some(1_700_000_000_000)
        );
        assert_eq!(parse_cim_datetime("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_cim_datetime("2024-02-29T00:00:00Z"),
            Some(1_709_164_800_000)
        );
        // No offset: not an instant.
        assert_eq!(parse_cim_datetime("2023-11-14T22:13:20"), None);
        assert_eq!(parse_cim_datetime("Tuesday, November 14, 2023"), None);
    }
}
