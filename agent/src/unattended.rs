//! Unattended enrolment for mass deployment: when `run` starts with no identity in its state
//! directory and the config has an `[enrollment]` section, the agent enrols by itself with a
//! token that the deployment tool placed in a file (or in `EVIDENT_ENROLLMENT_TOKEN`).
//!
//! - Every failure is retried with full-jitter exponential backoff, the token re-read each time,
//!   so the deployment tool can replace a bad one and a collector that is down is waited for.
//! - The token file is deleted only after the key, certificate and enrolment record are on disk
//!   (each written and fsynced by `enroll`), so a crash never loses both.
//! - The token is never logged: errors name the file or the variable it came from.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use anyhow::Context;
use tracing::{info, warn};

use crate::config::AutoEnroll;
use crate::enroll::{EnrollArgs, EnrollError};
use crate::host::Host;
use crate::state::{Enrollment, StateDir, sync_dir};

/// Carries the token instead of the token file, e.g. for container or MDM deployments.
pub const TOKEN_ENV: &str = "EVIDENT_ENROLLMENT_TOKEN";

/// Where a token was read from, for messages that must not show the token itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    Env,
    File(PathBuf),
}

impl std::fmt::Display for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::Env => write!(f, "the environment variable {TOKEN_ENV}"),
            TokenSource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error(
        "no enrolment token: place the token printed by `evident-collector token create` in {}, or set {TOKEN_ENV}",
        .0.display()
    )]
    Missing(PathBuf),
    #[error("cannot read the enrolment token file {}: {reason}", .file.display())]
    Unreadable { file: PathBuf, reason: String },
    #[error(
        "the enrolment token in {0} is malformed: expected `evt_` followed by 64 hex digits, as printed by `evident-collector token create`"
    )]
    Malformed(TokenSource),
}

/// `EVIDENT_ENROLLMENT_TOKEN`, unless unset or blank.
fn token_from_env() -> Option<String> {
    std::env::var(TOKEN_ENV)
        .ok()
        .filter(|value| !value.trim().is_empty())
}

/// The token for this attempt: `from_env` (the environment variable) when given, else the
/// token file.
pub fn read_token(
    token_file: &Path,
    from_env: Option<String>,
) -> Result<(String, TokenSource), TokenError> {
    let (text, source) = match from_env {
        Some(value) => (value, TokenSource::Env),
        None => match std::fs::read_to_string(token_file) {
            Ok(text) if text.trim().is_empty() => {
                return Err(TokenError::Missing(token_file.to_owned()));
            }
            Ok(text) => (text, TokenSource::File(token_file.to_owned())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(TokenError::Missing(token_file.to_owned()));
            }
            Err(error) => {
                return Err(TokenError::Unreadable {
                    file: token_file.to_owned(),
                    reason: error.to_string(),
                });
            }
        },
    };
    let token = text.trim();
    let well_formed = token
        .strip_prefix("evt_")
        .is_some_and(|secret| secret.len() == 64 && secret.bytes().all(|b| b.is_ascii_hexdigit()));
    if !well_formed {
        return Err(TokenError::Malformed(source));
    }
    Ok((token.to_owned(), source))
}

/// What an operator should do about a failed attempt; the agent retries either way.
fn what_to_do(error: &anyhow::Error, auto: &AutoEnroll) -> String {
    let replace = match token_from_env() {
        Some(_) => format!("set {TOKEN_ENV} to a new token"),
        None => format!("write a new token to {}", auto.token_file.display()),
    };
    if let Some(token) = error.downcast_ref::<TokenError>() {
        return match token {
            TokenError::Missing(_) | TokenError::Malformed(_) => {
                format!("{replace} (from `evident-collector token create` on the collector)")
            }
            TokenError::Unreadable { .. } => "make the token file readable by the agent".to_owned(),
        };
    }
    match error.downcast_ref::<EnrollError>() {
        Some(EnrollError::TokenRefused(_)) => format!(
            "{replace}: create one on the collector with `evident-collector token create --uses N --ttl 7d`"
        ),
        Some(EnrollError::Refused(_)) => {
            "see the collector's log; the collector may be busy or its storage full".to_owned()
        }
        None => format!(
            "check that the collector is reachable at {} and that enrollment.ca_fingerprint is its CA's",
            auto.collector
        ),
    }
}

/// One attempt: read the token, enrol, then delete the token file.
async fn attempt(state: &StateDir, auto: &AutoEnroll, host: &Host) -> anyhow::Result<Enrollment> {
    let (token, source) = read_token(&auto.token_file, token_from_env())?;
    let facts = crate::checks::inventory::collect(host).await.ok();
    let enrollment = crate::enroll::enroll(
        EnrollArgs {
            collector: auto.collector.clone(),
            token,
            ca_fingerprint: auto.ca_fingerprint,
            state: state.clone(),
        },
        crate::convert::host_facts(facts.as_ref()),
    )
    .await?;
    info!(agent = %enrollment.agent_id, token_source = %source, "enrolled unattended");
    // `enroll` wrote and fsynced the key, the certificate and the record: the token can go.
    discard_token_file(&auto.token_file);
    Ok(enrollment)
}

/// Deletes the token file (durably) if it is there; a failure is logged, since a token left
/// behind may still enrol other machines until it expires or is used up.
pub fn discard_token_file(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {
            let synced = path.parent().map(sync_dir).transpose();
            if let Err(error) = synced {
                warn!(error = %format!("{error:#}"), path = %path.display(), "token file deleted, but the deletion may not be durable");
            } else {
                info!(path = %path.display(), "enrolment token file deleted");
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => warn!(
            %error,
            path = %path.display(),
            "could not delete the enrolment token file: delete it by hand"
        ),
    }
}

/// Enrols, retrying every failure with full-jitter exponential backoff until it succeeds.
/// Returns `None` when `shutdown` completes first. With `once`, a failure is returned instead.
pub async fn enroll_until_done<F: Future<Output = ()>>(
    state: &StateDir,
    auto: &AutoEnroll,
    host: &Host,
    once: bool,
    mut shutdown: Pin<&mut F>,
) -> anyhow::Result<Option<Enrollment>> {
    info!(collector = %auto.collector, token_file = %auto.token_file.display(), "not enrolled yet: enrolling unattended");
    let mut failures: u32 = 0;
    loop {
        let result = tokio::select! {
            () = shutdown.as_mut() => return Ok(None),
            result = attempt(state, auto, host) => result,
        };
        let error = match result {
            Ok(enrollment) => return Ok(Some(enrollment)),
            Err(error) => error,
        };
        let what_to_do = what_to_do(&error, auto);
        if once {
            return Err(error)
                .with_context(|| format!("unattended enrolment failed: {what_to_do}"));
        }
        failures = failures.saturating_add(1);
        let delay = crate::run::backoff(failures);
        warn!(
            error = %format!("{error:#}"),
            what_to_do = %what_to_do,
            retry_in_ms = delay.as_millis() as u64,
            "unattended enrolment failed; retrying"
        );
        tokio::select! {
            () = shutdown.as_mut() => return Ok(None),
            () = tokio::time::sleep(delay) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_file(contents: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("enrollment-token");
        std::fs::write(&path, contents).expect("write");
        (dir, path)
    }

    #[test]
    fn a_token_file_is_read_trimmed() {
        let token = format!("evt_{}", "a1".repeat(32));
        let (_dir, path) = token_file(&format!("{token}\n"));
        assert_eq!(
            read_token(&path, None),
            Ok((token.clone(), TokenSource::File(path.clone())))
        );
    }

    #[test]
    fn the_environment_variable_wins_over_the_file() {
        let (_dir, path) = token_file("not even a token");
        let token = format!("evt_{}", "b2".repeat(32));
        assert_eq!(
            read_token(&path, Some(format!(" {token} "))),
            Ok((token, TokenSource::Env))
        );
    }

    #[test]
    fn a_missing_empty_or_malformed_token_names_the_file_but_not_the_token() {
        let (_dir, path) = token_file("  \n");
        assert_eq!(
            read_token(&path, None),
            Err(TokenError::Missing(path.clone()))
        );
        std::fs::remove_file(&path).expect("remove");
        let missing = read_token(&path, None).expect_err("missing");
        assert!(
            missing.to_string().contains(&path.display().to_string()),
            "{missing}"
        );

        let secret = "secret-looking-typo";
        std::fs::write(&path, secret).expect("write");
        let malformed = read_token(&path, None).expect_err("malformed");
        assert_eq!(
            malformed,
            TokenError::Malformed(TokenSource::File(path.clone()))
        );
        assert!(!malformed.to_string().contains(secret), "{malformed}");
    }

    #[test]
    fn discarding_a_token_file_that_is_gone_is_quiet() {
        let (_dir, path) = token_file("evt_x");
        discard_token_file(&path);
        assert!(!path.exists());
        discard_token_file(&path);
    }
}
