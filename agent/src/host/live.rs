//! Running programs and reading files of this machine.

use std::io::ErrorKind;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::{HostError, RawCommandOutput, display_argv};

/// A finished program's output, before it is decoded as text.
pub(super) struct RawOutput {
    pub status: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl RawOutput {
    pub fn into_raw(self) -> RawCommandOutput {
        RawCommandOutput {
            status: self.status,
            stdout: self.stdout,
            stderr: String::from_utf8_lossy(&self.stderr).into_owned(),
        }
    }
}

pub(super) async fn run(
    program: &str,
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
    cap: usize,
) -> Result<RawOutput, HostError> {
    let argv = || display_argv(program, args);
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .env("LANG", "C")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| match error.kind() {
            ErrorKind::NotFound => HostError::ProgramNotFound {
                program: program.to_owned(),
            },
            _ => HostError::Io {
                what: format!("starting `{}`", argv()),
                message: error.to_string(),
            },
        })?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();

    let finished = async {
        let (stdout, stderr, status) = tokio::join!(
            read_capped(stdout, cap),
            read_capped(stderr, cap),
            child.wait()
        );
        (stdout, stderr, status)
    };
    let outcome = tokio::time::timeout(timeout, finished).await;
    let Ok((stdout, stderr, status)) = outcome else {
        // kill_on_drop also kills it, but say so explicitly; tokio reaps it in the background.
        let _ = child.start_kill();
        return Err(HostError::TimedOut {
            argv: argv(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        });
    };
    let io_error = |stream: &str, error: std::io::Error| HostError::Io {
        what: format!("reading {stream} of `{}`", argv()),
        message: error.to_string(),
    };
    let status = status.map_err(|error| HostError::Io {
        what: format!("waiting for `{}`", argv()),
        message: error.to_string(),
    })?;
    let (stdout, stdout_overflow) = stdout.map_err(|e| io_error("stdout", e))?;
    let (stderr, stderr_overflow) = stderr.map_err(|e| io_error("stderr", e))?;
    for (overflow, stream) in [(stdout_overflow, "stdout"), (stderr_overflow, "stderr")] {
        if overflow {
            return Err(HostError::OutputTooLarge {
                argv: argv(),
                stream: stream.to_owned(),
                cap_bytes: cap as u64,
            });
        }
    }
    Ok(RawOutput {
        status: status.code(),
        stdout,
        stderr,
    })
}

/// Reads a stream to its end, keeping at most `cap` bytes and discarding the rest (so the
/// child never blocks on a full pipe). Returns the kept bytes and whether any were discarded.
async fn read_capped(
    stream: Option<impl AsyncRead + Unpin>,
    cap: usize,
) -> std::io::Result<(Vec<u8>, bool)> {
    let mut kept = Vec::new();
    let mut overflow = false;
    let Some(mut stream) = stream else {
        return Ok((kept, overflow));
    };
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok((kept, overflow));
        }
        let room = cap.saturating_sub(kept.len());
        if n > room {
            overflow = true;
        }
        kept.extend_from_slice(&chunk[..n.min(room)]);
    }
}

pub(super) async fn read_file(path: &str, cap: usize) -> Result<Vec<u8>, HostError> {
    let map = |error: std::io::Error| match error.kind() {
        ErrorKind::NotFound => HostError::FileNotFound {
            path: path.to_owned(),
        },
        ErrorKind::PermissionDenied => HostError::PermissionDenied {
            path: path.to_owned(),
        },
        _ => HostError::Io {
            what: format!("reading {path}"),
            message: error.to_string(),
        },
    };
    let file = tokio::fs::File::open(path).await.map_err(map)?;
    // Files under /proc and /sys report a size of 0, so read up to the cap rather than trusting
    // the metadata.
    let mut bytes = Vec::new();
    let limit = u64::try_from(cap).unwrap_or(u64::MAX).saturating_add(1);
    file.take(limit)
        .read_to_end(&mut bytes)
        .await
        .map_err(map)?;
    if bytes.len() > cap {
        return Err(HostError::FileTooLarge {
            path: path.to_owned(),
            cap_bytes: cap as u64,
        });
    }
    Ok(bytes)
}
