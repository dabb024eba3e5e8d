//! What the Windows checks share: the PowerShell they run and the way its `ConvertTo-Json`
//! writes dates. Each Windows check runs one script that emits one JSON object, so that a whole
//! check is one recorded command.

/// Windows PowerShell 5.1, present on every supported Windows; the scripts also run on 7.
pub(crate) const POWERSHELL: &str = "powershell.exe";

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
