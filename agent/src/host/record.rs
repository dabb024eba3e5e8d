//! Live observation that also writes everything it saw into a recording directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;

use super::format::{
    COMMANDS_DIR, CommandFile, FILES_DIR, FILES_INDEX, FilesIndex, HOST_FILE, HostFile,
    MissingFile, rfc3339_utc,
};
use super::live::RawOutput;
use super::{HostError, OsFamily, mirror_path};

pub(super) struct Recorder {
    dir: PathBuf,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next_command: u64,
    /// Files that could not be read, by path; the last attempt at a path wins.
    missing: BTreeMap<String, MissingFile>,
    /// Writes that failed; `finish` reports them.
    failures: Vec<String>,
}

impl Recorder {
    pub fn create(dir: &Path) -> anyhow::Result<Recorder> {
        if dir.exists() {
            let mut entries = std::fs::read_dir(dir)
                .with_context(|| format!("recording directory {} is unusable", dir.display()))?;
            if entries.next().is_some() {
                anyhow::bail!(
                    "recording directory {} is not empty; choose a new one",
                    dir.display()
                );
            }
        }
        for sub in [COMMANDS_DIR, FILES_DIR] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let host = HostFile {
            os_family: OsFamily::current(),
            recorded_at: Some(rfc3339_utc(now)),
            agent_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            note: None,
        };
        let text = toml::to_string(&host).context("encoding host.toml")?;
        std::fs::write(dir.join(HOST_FILE), text)
            .with_context(|| format!("writing {}", dir.join(HOST_FILE).display()))?;
        Ok(Recorder {
            dir: dir.to_owned(),
            state: Mutex::new(State::default()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-changed in a way that
        // matters for a recording, so carry on with it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn failed(&self, what: String) {
        tracing::warn!(dir = %self.dir.display(), failure = %what, "recording incomplete");
        self.lock().failures.push(what);
    }

    pub async fn record_command(
        &self,
        program: &str,
        args: &[&str],
        result: &Result<RawOutput, HostError>,
    ) {
        let seq = {
            let mut state = self.lock();
            state.next_command += 1;
            state.next_command
        };
        let stem = self.dir.join(COMMANDS_DIR).join(format!("{seq:04}"));
        let argv = super::recorded_argv(program, args);
        let (file, stdout, stderr) = match result {
            Ok(output) => (
                CommandFile {
                    argv,
                    status: output.status,
                    error: None,
                    message: None,
                    timeout_ms: None,
                    stream: None,
                    cap_bytes: None,
                },
                output.stdout.as_slice(),
                output.stderr.as_slice(),
            ),
            Err(error) => (CommandFile::from_error(argv, error), &[][..], &[][..]),
        };
        let text = match toml::to_string(&file) {
            Ok(text) => text,
            Err(error) => return self.failed(format!("encoding command {seq:04}: {error}")),
        };
        let writes = [
            (stem.with_extension("toml"), text.as_bytes()),
            (stem.with_extension("stdout"), stdout),
            (stem.with_extension("stderr"), stderr),
        ];
        for (path, bytes) in writes {
            // An absent output file means empty output.
            if bytes.is_empty() && path.extension().is_some_and(|e| e != "toml") {
                continue;
            }
            if let Err(error) = tokio::fs::write(&path, bytes).await {
                self.failed(format!("writing {}: {error}", path.display()));
            }
        }
    }

    pub async fn record_file(&self, path: &str, result: &Result<Vec<u8>, HostError>) {
        let Some(relative) = mirror_path(path) else {
            return self.failed(format!("file path {path:?} cannot be kept in a recording"));
        };
        let target = self.dir.join(FILES_DIR).join(relative);
        match result {
            Ok(bytes) => {
                self.lock().missing.remove(path);
                if let Some(parent) = target.parent()
                    && let Err(error) = tokio::fs::create_dir_all(parent).await
                {
                    return self.failed(format!("creating {}: {error}", parent.display()));
                }
                if let Err(error) = tokio::fs::write(&target, bytes).await {
                    self.failed(format!("writing {}: {error}", target.display()));
                }
            }
            Err(error) => {
                self.lock()
                    .missing
                    .insert(path.to_owned(), MissingFile::from_error(path, error));
                match tokio::fs::remove_file(&target).await {
                    Ok(()) => {}
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                    Err(error) => self.failed(format!("removing {}: {error}", target.display())),
                }
            }
        }
    }

    pub fn finish(&self) -> anyhow::Result<()> {
        let (index, failures) = {
            let state = self.lock();
            let index = FilesIndex {
                missing: state.missing.values().cloned().collect(),
            };
            (index, state.failures.clone())
        };
        let mut text = String::from("# Files the agent asked for but could not read.\n");
        text.push_str(&toml::to_string(&index).context("encoding files.toml")?);
        let path = self.dir.join(FILES_INDEX);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        if !failures.is_empty() {
            anyhow::bail!(
                "recording {} is incomplete: {}",
                self.dir.display(),
                failures.join("; ")
            );
        }
        Ok(())
    }
}
