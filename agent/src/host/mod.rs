//! The one layer that runs programs and reads system files (DESIGN principle 6).
//!
//! Every check observes the endpoint through a [`Host`]. A host is either live (it runs programs
//! and reads files of this machine), live and recording (it also saves everything it saw into a
//! directory), or replaying (it answers every request from such a directory instead of the live
//! system). A recording of a Windows laptop therefore replays on a Linux CI runner, and a
//! customer's odd server becomes a test case. The directory layout is documented in
//! `docs/record-replay.md`.
//!
//! **Invariant:** no code outside this module spawns a process or reads a system file for a
//! check; checks only parse what a `Host` hands them.

mod format;
mod live;
mod record;
mod replay;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How long a live command may run before it is killed.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// The most bytes kept of one output stream (stdout or stderr) of a command.
pub const MAX_STREAM_BYTES: usize = 8 * 1024 * 1024;
/// The most bytes read of one file.
pub const MAX_FILE_BYTES: usize = 16 * 1024 * 1024;

/// The operating-system family of an observed host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OsFamily {
    /// Any Linux distribution.
    Linux,
    /// Apple macOS.
    Macos,
    /// Microsoft Windows.
    Windows,
}

impl OsFamily {
    /// The lowercase name used in recordings and evidence: `linux`, `macos` or `windows`.
    pub fn as_str(self) -> &'static str {
        match self {
            OsFamily::Linux => "linux",
            OsFamily::Macos => "macos",
            OsFamily::Windows => "windows",
        }
    }

    /// The family this agent was compiled for. Any other Unix counts as Linux: it has the same
    /// files and commands to try, and a fact it lacks is reported as unreadable.
    pub fn current() -> OsFamily {
        if cfg!(target_os = "macos") {
            OsFamily::Macos
        } else if cfg!(target_os = "windows") {
            OsFamily::Windows
        } else {
            OsFamily::Linux
        }
    }
}

impl std::fmt::Display for OsFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a finished program left behind. Output is decoded as lossy UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// The exit code; `None` when the program was ended by a signal.
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CommandOutput {
    /// Whether the program exited with status 0.
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }
}

/// What a finished program left behind, with standard output as raw bytes (a restored file,
/// say). Standard error is decoded as lossy UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawCommandOutput {
    /// The exit code; `None` when the program was ended by a signal.
    pub status: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl RawCommandOutput {
    fn into_text(self) -> CommandOutput {
        CommandOutput {
            status: self.status,
            stdout: String::from_utf8_lossy(&self.stdout).into_owned(),
            stderr: self.stderr,
        }
    }
}

/// Why a host could not answer a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("program not found: {program} (is it installed?)")]
    ProgramNotFound { program: String },
    #[error("`{argv}` timed out after {}", display_duration_ms(*timeout_ms))]
    TimedOut { argv: String, timeout_ms: u64 },
    #[error("`{argv}` wrote more than {cap_bytes} bytes to {stream}")]
    OutputTooLarge {
        argv: String,
        stream: String,
        cap_bytes: u64,
    },
    #[error("file not found: {path}")]
    FileNotFound { path: String },
    #[error("permission denied: {path}")]
    PermissionDenied { path: String },
    #[error("file larger than {cap_bytes} bytes: {path}")]
    FileTooLarge { path: String, cap_bytes: u64 },
    /// Any other input/output error, with what was being done.
    #[error("{what}: {message}")]
    Io { what: String, message: String },
    #[error("not in the recording {}: {what}", dir.display())]
    NotRecorded { dir: PathBuf, what: String },
}

fn display_duration_ms(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{ms} ms")
    }
}

/// Renders an argv for messages: `uname -m`, with arguments that contain spaces quoted.
pub(crate) fn display_argv(program: &str, args: &[&str]) -> String {
    let mut out = String::from(program);
    for arg in args {
        let arg = redact_url(arg);
        let arg = arg.as_str();
        out.push(' ');
        if arg.is_empty() || arg.contains(char::is_whitespace) || arg.contains('"') {
            out.push_str(&format!("{arg:?}"));
        } else {
            out.push_str(arg);
        }
    }
    out
}

/// A URL without its secrets: the password of its user information
/// (`https://user:pass@host` -> `https://user@host`) and its query, where some backends put
/// keys. Anything else is returned as it is. Arguments are shown, logged and recorded through
/// this, so that a repository URL on a command line never carries its password further.
pub fn redact_url(text: &str) -> String {
    let Some(scheme_end) = text.find("://") else {
        return text.to_owned();
    };
    let mut out = text.to_owned();
    let rest_start = scheme_end + 3;
    let authority_end = out[rest_start..]
        .find('/')
        .map_or(out.len(), |i| rest_start + i);
    if let Some(at) = out[rest_start..authority_end].rfind('@') {
        let userinfo = &out[rest_start..rest_start + at];
        let user = userinfo.split(':').next().unwrap_or_default().to_owned();
        out.replace_range(rest_start..rest_start + at, &user);
    }
    if let Some(query) = out.find('?') {
        out.truncate(query);
    }
    out
}

/// The argv as it is recorded and matched in a replay: URLs redacted by [`redact_url`].
pub(crate) fn recorded_argv(program: &str, args: &[&str]) -> Vec<String> {
    std::iter::once(program)
        .chain(args.iter().copied())
        .map(redact_url)
        .collect()
}

enum Mode {
    Live,
    Recording(record::Recorder),
    Replay(replay::Replay),
}

/// The observed endpoint: live, live and recording, or a replayed recording.
///
/// `Host` is `Send + Sync` and all its methods take `&self`; the recorder's state sits behind a
/// mutex that is never held across an `.await`.
pub struct Host {
    mode: Mode,
    command_timeout: Duration,
    max_stream_bytes: usize,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match &self.mode {
            Mode::Live => "live".to_owned(),
            Mode::Recording(r) => format!("recording to {}", r.dir().display()),
            Mode::Replay(r) => format!("replaying {}", r.dir().display()),
        };
        f.debug_struct("Host")
            .field("mode", &mode)
            .field("os_family", &self.os_family())
            .field("command_timeout", &self.command_timeout)
            .finish()
    }
}

impl Host {
    fn with_mode(mode: Mode) -> Host {
        Host {
            mode,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            max_stream_bytes: MAX_STREAM_BYTES,
        }
    }

    /// This machine, observed directly.
    pub fn live() -> Host {
        Host::with_mode(Mode::Live)
    }

    /// Live, and saves every command and file it sees into `dir` (created if missing; must be
    /// empty or absent). Call [`Host::finish`] when done to write the index files.
    pub fn recording(dir: &Path) -> anyhow::Result<Host> {
        Ok(Host::with_mode(Mode::Recording(record::Recorder::create(
            dir,
        )?)))
    }

    /// Answers every command and file from a recording instead of the live system.
    pub fn replay(dir: &Path) -> anyhow::Result<Host> {
        Ok(Host::with_mode(Mode::Replay(replay::Replay::load(dir)?)))
    }

    /// How long a live command may run before it is killed (default 30 s).
    pub fn with_command_timeout(mut self, timeout: Duration) -> Host {
        self.command_timeout = timeout;
        self
    }

    /// The most bytes kept of each output stream of a live command (default 8 MiB); a command
    /// that writes more fails with [`HostError::OutputTooLarge`].
    pub fn with_max_stream_bytes(mut self, cap: usize) -> Host {
        self.max_stream_bytes = cap;
        self
    }

    /// The OS of the host being observed: the live one, or the recorded one when replaying.
    pub fn os_family(&self) -> OsFamily {
        match &self.mode {
            Mode::Live | Mode::Recording(_) => OsFamily::current(),
            Mode::Replay(replay) => replay.os_family(),
        }
    }

    /// Runs `program` with `args` (environment `LC_ALL=C LANG=C`, stdin empty) and waits for it.
    /// A non-zero exit is not an error: the caller sees it in [`CommandOutput::status`].
    pub async fn run(&self, program: &str, args: &[&str]) -> Result<CommandOutput, HostError> {
        self.run_raw(program, args, &[])
            .await
            .map(RawCommandOutput::into_text)
    }

    /// Like [`Host::run`], with standard output as raw bytes and `env` added to the program's
    /// environment. The environment is never recorded and is not part of a replay's match, so
    /// it must hold settings, never secrets themselves: a password *file's path*, not the
    /// password.
    pub async fn run_raw(
        &self,
        program: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<RawCommandOutput, HostError> {
        self.run_raw_within(program, args, env, self.command_timeout)
            .await
    }

    /// Like [`Host::run_raw`] with its own timeout, for the few programs that are expected to
    /// run long (a repository's integrity check).
    pub async fn run_raw_within(
        &self,
        program: &str,
        args: &[&str],
        env: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<RawCommandOutput, HostError> {
        tracing::debug!(argv = %display_argv(program, args), "run");
        let live = || live::run(program, args, env, timeout, self.max_stream_bytes);
        match &self.mode {
            Mode::Live => live().await.map(live::RawOutput::into_raw),
            Mode::Recording(recorder) => {
                let result = live().await;
                recorder.record_command(program, args, &result).await;
                result.map(live::RawOutput::into_raw)
            }
            Mode::Replay(replay) => replay.run(program, args),
        }
    }

    /// Reads a whole text file (lossy UTF-8), at most [`MAX_FILE_BYTES`].
    pub async fn read_file(&self, path: &str) -> Result<String, HostError> {
        self.read_bytes(path)
            .await
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Reads a whole file as raw bytes (a compressed log, a time-zone file), at most
    /// [`MAX_FILE_BYTES`].
    pub async fn read_bytes(&self, path: &str) -> Result<Vec<u8>, HostError> {
        tracing::debug!(path, "read file");
        match &self.mode {
            Mode::Live => live::read_file(path, MAX_FILE_BYTES).await,
            Mode::Recording(recorder) => {
                let result = live::read_file(path, MAX_FILE_BYTES).await;
                recorder.record_file(path, &result).await;
                result
            }
            Mode::Replay(replay) => replay.read_file(path).await,
        }
    }

    /// Flushes the recording (writes its index files) and reports any write that failed while
    /// recording; a no-op when live or replaying.
    pub fn finish(&self) -> anyhow::Result<()> {
        match &self.mode {
            Mode::Recording(recorder) => recorder.finish(),
            Mode::Live | Mode::Replay(_) => Ok(()),
        }
    }
}

/// Where a file of the observed host is kept inside a recording's `files/` directory:
/// `/etc/os-release` -> `etc/os-release`, `C:\Windows\x.ini` -> `C/Windows/x.ini`.
///
/// Separators `/` and `\` both split; empty and `.` components are dropped; a drive letter loses
/// its colon. A path with a `..` component, or with nothing left, has no place in a recording.
pub(crate) fn mirror_path(path: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for (i, component) in path.split(['/', '\\']).enumerate() {
        let component = match component {
            "" | "." => continue,
            ".." => return None,
            c if i == 0 && c.len() == 2 && c.ends_with(':') => &c[..1],
            c => c,
        };
        if component.contains(':') && cfg!(windows) {
            return None;
        }
        out.push(component);
    }
    if out.as_os_str().is_empty() {
        None
    } else {
        Some(out)
    }
}

/// A copy of a recording in a temporary directory, so that a test can change one answer.
#[cfg(test)]
pub(crate) fn copy_recording(from: &Path) -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("mkdir");
        for entry in std::fs::read_dir(from).expect("read dir") {
            let entry = entry.expect("entry");
            let target = to.join(entry.file_name());
            if entry.file_type().expect("type").is_dir() {
                copy(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), target).expect("copy");
            }
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    copy(from, dir.path());
    dir
}

#[cfg(test)]
mod tests;
