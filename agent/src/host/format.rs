//! The on-disk format of a recording, shared by the recorder and the replayer.
//! `docs/record-replay.md` documents it for people; keep the two in step.

use serde::{Deserialize, Serialize};

use super::{HostError, MAX_FILE_BYTES, MAX_STREAM_BYTES, OsFamily, display_argv};

pub(super) const HOST_FILE: &str = "host.toml";
pub(super) const FILES_INDEX: &str = "files.toml";
pub(super) const COMMANDS_DIR: &str = "commands";
pub(super) const FILES_DIR: &str = "files";

/// `host.toml`: which host was recorded.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HostFile {
    pub os_family: OsFamily,
    /// When the recording was made, RFC 3339 in UTC; informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded_at: Option<String>,
    /// The agent that made the recording; informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// Free text for a person, e.g. where a hand-written recording came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `commands/NAME.toml`: one command and how it ended. Its output sits beside it in
/// `NAME.stdout` and `NAME.stderr`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CommandFile {
    /// The program and its arguments, exactly as the check asked for them.
    pub argv: Vec<String>,
    /// The exit code. Absent with no `error` means the program was ended by a signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<i32>,
    /// Set when the command did not produce output at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<CommandErrorKind>,
    /// For `error = "io"`: the operating system's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// For `error = "timed_out"`: the timeout that was exceeded, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// For `error = "output_too_large"`: `stdout` or `stderr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// For `error = "output_too_large"`: the cap that was exceeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap_bytes: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum CommandErrorKind {
    NotFound,
    TimedOut,
    OutputTooLarge,
    Io,
}

impl CommandFile {
    /// How a failed live command is written down.
    pub fn from_error(argv: Vec<String>, error: &HostError) -> CommandFile {
        let mut file = CommandFile {
            argv,
            status: None,
            error: Some(CommandErrorKind::Io),
            message: None,
            timeout_ms: None,
            stream: None,
            cap_bytes: None,
        };
        match error {
            HostError::ProgramNotFound { .. } => file.error = Some(CommandErrorKind::NotFound),
            HostError::TimedOut { timeout_ms, .. } => {
                file.error = Some(CommandErrorKind::TimedOut);
                file.timeout_ms = Some(*timeout_ms);
            }
            HostError::OutputTooLarge {
                stream, cap_bytes, ..
            } => {
                file.error = Some(CommandErrorKind::OutputTooLarge);
                file.stream = Some(stream.clone());
                file.cap_bytes = Some(*cap_bytes);
            }
            HostError::Io { message, .. } => file.message = Some(message.clone()),
            other => file.message = Some(other.to_string()),
        }
        file
    }

    /// The error a replayed command answers with, if it failed.
    pub fn to_error(&self) -> Option<HostError> {
        let program = self.argv.first().map(String::as_str).unwrap_or_default();
        let args: Vec<&str> = self.argv.iter().skip(1).map(String::as_str).collect();
        let argv = display_argv(program, &args);
        Some(match self.error? {
            CommandErrorKind::NotFound => HostError::ProgramNotFound {
                program: program.to_owned(),
            },
            CommandErrorKind::TimedOut => HostError::TimedOut {
                argv,
                timeout_ms: self.timeout_ms.unwrap_or(30_000),
            },
            CommandErrorKind::OutputTooLarge => HostError::OutputTooLarge {
                argv,
                stream: self.stream.clone().unwrap_or_else(|| "stdout".to_owned()),
                cap_bytes: self.cap_bytes.unwrap_or(MAX_STREAM_BYTES as u64),
            },
            CommandErrorKind::Io => HostError::Io {
                what: format!("running `{argv}`"),
                message: self
                    .message
                    .clone()
                    .unwrap_or_else(|| "unknown error".to_owned()),
            },
        })
    }
}

/// `files.toml`: the files that were asked for but could not be read.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FilesIndex {
    #[serde(default)]
    pub missing: Vec<MissingFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MissingFile {
    /// The path exactly as the check asked for it.
    pub path: String,
    pub error: FileErrorKind,
    /// For `error = "io"`: the operating system's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum FileErrorKind {
    NotFound,
    PermissionDenied,
    TooLarge,
    Io,
}

impl MissingFile {
    pub fn from_error(path: &str, error: &HostError) -> MissingFile {
        let (error, message) = match error {
            HostError::FileNotFound { .. } => (FileErrorKind::NotFound, None),
            HostError::PermissionDenied { .. } => (FileErrorKind::PermissionDenied, None),
            HostError::FileTooLarge { .. } => (FileErrorKind::TooLarge, None),
            HostError::Io { message, .. } => (FileErrorKind::Io, Some(message.clone())),
            other => (FileErrorKind::Io, Some(other.to_string())),
        };
        MissingFile {
            path: path.to_owned(),
            error,
            message,
        }
    }

    pub fn to_error(&self) -> HostError {
        let path = self.path.clone();
        match self.error {
            FileErrorKind::NotFound => HostError::FileNotFound { path },
            FileErrorKind::PermissionDenied => HostError::PermissionDenied { path },
            FileErrorKind::TooLarge => HostError::FileTooLarge {
                path,
                cap_bytes: MAX_FILE_BYTES as u64,
            },
            FileErrorKind::Io => HostError::Io {
                what: format!("reading {path}"),
                message: self
                    .message
                    .clone()
                    .unwrap_or_else(|| "unknown error".to_owned()),
            },
        }
    }
}

/// Formats seconds since the Unix epoch as RFC 3339 in UTC, e.g. `2026-11-23T14:19:00Z`.
pub(super) fn rfc3339_utc(unix_secs: i64) -> String {
    let days = unix_secs.div_euclid(86_400);
    let secs_of_day = unix_secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs_of_day / 3600,
        secs_of_day / 60 % 60,
        secs_of_day % 60
    )
}
