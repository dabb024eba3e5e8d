//! Any other backup job (a Veeam agent, rsnapshot, a script) run by a systemd unit declared in
//! `agent.toml`: the unit's last run and how it ended are the evidence.
//!
//! `systemctl show --timestamp=unix` (systemd 248 and later) gives the last start and exit as
//! instants; the last *successful* run is known only when the last run succeeded.

use super::config::SystemdUnitSource;
use super::{BackupSource, SourceErrorKind};
use crate::checks::first_lines;
use crate::host::{Host, HostError};

const PROPERTIES: &str =
    "--property=Id,LoadState,Result,ExecMainStatus,ExecMainStartTimestamp,ExecMainExitTimestamp";

pub(super) async fn collect(host: &Host, source: &SystemdUnitSource) -> BackupSource {
    let mut out = BackupSource::new("systemd_unit", &source.name, &source.unit);
    let args = ["show", "--timestamp=unix", PROPERTIES, source.unit.as_str()];
    match host.run("systemctl", &args).await {
        Ok(output) if output.success() => {
            if let Err((kind, message)) = apply(&output.stdout, &mut out) {
                out.fail(kind, &message);
            }
        }
        Ok(output) => out.fail(
            SourceErrorKind::Other,
            &format!(
                "systemctl show failed: {}",
                first_lines(output.stderr.trim(), 2)
            ),
        ),
        Err(error @ HostError::ProgramNotFound { .. }) => {
            out.fail(SourceErrorKind::NotInstalled, &error.to_string());
        }
        Err(error @ HostError::TimedOut { .. }) => {
            out.fail(SourceErrorKind::Timeout, &error.to_string());
        }
        Err(error) => out.fail(SourceErrorKind::Other, &error.to_string()),
    }
    out
}

/// Reads `systemctl show` output (`Key=value` lines) into `source`.
pub(crate) fn apply(
    stdout: &str,
    source: &mut BackupSource,
) -> Result<(), (SourceErrorKind, String)> {
    let get = |key: &str| {
        stdout.lines().find_map(|line| {
            line.strip_prefix(key)
                .and_then(|rest| rest.strip_prefix('='))
                .map(str::trim)
                .filter(|v| !v.is_empty())
        })
    };
    let unit = get("Id").unwrap_or("the unit");
    match get("LoadState") {
        Some("loaded") => {}
        Some(state) => {
            return Err((
                SourceErrorKind::Config,
                format!("{unit} is {state}: check the unit name in backup.systemd_unit"),
            ));
        }
        None => {
            return Err((
                SourceErrorKind::Other,
                "systemctl show printed no LoadState".to_owned(),
            ));
        }
    }
    let instant = |key: &str| -> Option<i64> {
        let secs: i64 = get(key)?.strip_prefix('@')?.parse().ok()?;
        (secs > 0).then(|| secs.saturating_mul(1000))
    };
    let started = instant("ExecMainStartTimestamp");
    let exited = instant("ExecMainExitTimestamp");
    if started.is_none() {
        // Never run since boot: systemd keeps no older runs.
        return Ok(());
    }
    source.last_attempt_unix_ms = started;
    let result = get("Result").unwrap_or("unknown");
    let status = get("ExecMainStatus").unwrap_or("?");
    let running = exited.is_none_or(|e| started.is_some_and(|s| e < s));
    source.last_attempt_result = Some(if running {
        "running".to_owned()
    } else if result == "success" && status == "0" {
        "success".to_owned()
    } else {
        format!("{result}, exit status {status}")
    });
    if source.last_attempt_result.as_deref() == Some("success") {
        source.last_success_unix_ms = exited;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> BackupSource {
        BackupSource::new("systemd_unit", "veeam", "veeamjob.service")
    }

    #[test]
    fn a_successful_oneshot_run() {
        let mut s = source();
        apply(
            "Id=veeamjob.service\nLoadState=loaded\nResult=success\nExecMainStatus=0\nExecMainStartTimestamp=@1704880800\nExecMainExitTimestamp=@1704881405\n",
            &mut s,
        )
        .expect("applies");
        assert_eq!(s.last_attempt_unix_ms, Some(1_704_880_800_000));
        assert_eq!(s.last_success_unix_ms, Some(1_704_881_405_000));
        assert_eq!(s.last_attempt_result.as_deref(), Some("success"));
    }

    #[test]
    fn a_failed_run_is_no_success() {
        let mut s = source();
        apply(
            "Id=veeamjob.service\nLoadState=loaded\nResult=exit-code\nExecMainStatus=3\nExecMainStartTimestamp=@1704880800\nExecMainExitTimestamp=@1704880860\n",
            &mut s,
        )
        .expect("applies");
        assert_eq!(s.last_success_unix_ms, None);
        assert_eq!(
            s.last_attempt_result.as_deref(),
            Some("exit-code, exit status 3")
        );
    }

    #[test]
    fn a_unit_that_does_not_exist_or_never_ran() {
        let mut s = source();
        let error = apply("Id=veeam.service\nLoadState=not-found\n", &mut s).expect_err("refused");
        assert_eq!(error.0, SourceErrorKind::Config);
        assert!(error.1.contains("not-found"), "{}", error.1);
        let mut s = source();
        apply(
            "Id=veeamjob.service\nLoadState=loaded\nResult=success\nExecMainStatus=0\nExecMainStartTimestamp=\nExecMainExitTimestamp=\n",
            &mut s,
        )
        .expect("applies");
        assert_eq!(
            (s.last_attempt_unix_ms, s.last_success_unix_ms),
            (None, None)
        );
    }
}
