//! Local wall-clock times in logs (`/var/log/apt/history.log`, `dnf history`, zypper's history)
//! turned into instants, using the observed host's own time zone.
//!
//! The zone is read through the [`Host`] from `/etc/localtime` (a TZif file on Linux and macOS),
//! so a replayed recording converts exactly as the live host did, daylight-saving changes
//! included. Without `/etc/localtime` the C library uses UTC, and so does this.

use jiff::civil::DateTime;
use jiff::tz::TimeZone;

use crate::host::{Host, HostError};

const LOCALTIME: &str = "/etc/localtime";

/// The observed host's time zone.
#[derive(Debug, Clone)]
pub(crate) struct LocalClock {
    zone: TimeZone,
}

impl LocalClock {
    /// The zone of `host`: `/etc/localtime`, or UTC when the host has none (as libc does). An
    /// unreadable or corrupt file is an error: guessing UTC would shift every time silently.
    pub(crate) async fn of(host: &Host) -> Result<LocalClock, String> {
        match host.read_bytes(LOCALTIME).await {
            Ok(bytes) => LocalClock::from_tzif(&bytes)
                .map_err(|reason| format!("{LOCALTIME} is not a time-zone file: {reason}")),
            Err(HostError::FileNotFound { .. }) => Ok(LocalClock::utc()),
            Err(error) => Err(format!("the host's time zone is unknown: {error}")),
        }
    }

    pub(crate) fn from_tzif(bytes: &[u8]) -> Result<LocalClock, String> {
        TimeZone::tzif("localtime", bytes)
            .map(|zone| LocalClock { zone })
            .map_err(|error| error.to_string())
    }

    pub(crate) fn utc() -> LocalClock {
        LocalClock {
            zone: TimeZone::UTC,
        }
    }

    /// Parses `text` with the `strftime`-style `format` (e.g. `%Y-%m-%d  %H:%M:%S`) as a local
    /// time of this zone. An ambiguous time (the hour repeated when clocks go back) takes the
    /// earlier instant, which at worst makes an update look an hour older than it is; a time in
    /// the gap when clocks go forward is moved past the gap.
    pub(crate) fn parse(&self, text: &str, format: &str) -> Result<i64, String> {
        let civil = DateTime::strptime(format, text.trim()).map_err(|error| {
            format!(
                "{:?} is not a time in the form {format}: {error}",
                text.trim()
            )
        })?;
        self.civil_to_unix_ms(civil)
    }

    fn civil_to_unix_ms(&self, civil: DateTime) -> Result<i64, String> {
        let instant = self
            .zone
            .to_ambiguous_timestamp(civil)
            .compatible()
            .map_err(|error| {
                format!("{civil} cannot be placed in the host's time zone: {error}")
            })?;
        Ok(instant.as_millisecond())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_times_convert_exactly() {
        let clock = LocalClock::utc();
        assert_eq!(
            clock.parse("2025-06-24  14:36:25", "%Y-%m-%d  %H:%M:%S"),
            Ok(1_750_775_785_000)
        );
    }

    #[test]
    fn a_bad_time_names_what_was_wrong() {
        let error = LocalClock::utc()
            .parse("24/06/2025", "%Y-%m-%d  %H:%M:%S")
            .expect_err("refused");
        assert!(error.contains("\"24/06/2025\""), "{error}");
        assert!(error.contains("%Y-%m-%d"), "{error}");
    }

    #[test]
    fn corrupt_zone_files_are_refused() {
        assert!(LocalClock::from_tzif(b"not a tzif file").is_err());
    }
}
