//! Answering every request from a recording directory instead of the live system.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::format::{
    COMMANDS_DIR, CommandFile, FILES_DIR, FILES_INDEX, FilesIndex, HOST_FILE, HostFile, MissingFile,
};
use super::{HostError, MAX_FILE_BYTES, OsFamily, RawCommandOutput, display_argv, mirror_path};

pub(super) struct Replay {
    dir: PathBuf,
    os_family: OsFamily,
    /// By exact argv (program first).
    commands: HashMap<Vec<String>, Result<RawCommandOutput, HostError>>,
    /// Files recorded as unreadable, by exact path.
    missing: HashMap<String, MissingFile>,
}

impl Replay {
    pub fn load(dir: &Path) -> anyhow::Result<Replay> {
        let host_path = dir.join(HOST_FILE);
        let text = std::fs::read_to_string(&host_path)
            .with_context(|| format!("reading {}", host_path.display()))?;
        let host: HostFile =
            toml::from_str(&text).with_context(|| format!("parsing {}", host_path.display()))?;

        let commands = load_commands(&dir.join(COMMANDS_DIR))?;

        let index_path = dir.join(FILES_INDEX);
        let index: FilesIndex = match std::fs::read_to_string(&index_path) {
            Ok(text) => toml::from_str(&text)
                .with_context(|| format!("parsing {}", index_path.display()))?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => FilesIndex::default(),
            Err(error) => {
                return Err(error).with_context(|| format!("reading {}", index_path.display()));
            }
        };
        let mut missing = HashMap::new();
        for entry in index.missing {
            if let Some(relative) = mirror_path(&entry.path)
                && dir.join(FILES_DIR).join(relative).exists()
            {
                anyhow::bail!(
                    "{}: {} is listed as missing but also has recorded content",
                    index_path.display(),
                    entry.path
                );
            }
            missing.insert(entry.path.clone(), entry);
        }

        Ok(Replay {
            dir: dir.to_owned(),
            os_family: host.os_family,
            commands,
            missing,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn os_family(&self) -> OsFamily {
        self.os_family
    }

    pub fn run(&self, program: &str, args: &[&str]) -> Result<RawCommandOutput, HostError> {
        let key = super::recorded_argv(program, args);
        match self.commands.get(&key) {
            Some(answer) => answer.clone(),
            None => Err(HostError::NotRecorded {
                dir: self.dir.clone(),
                what: display_argv(program, args),
            }),
        }
    }

    pub async fn read_file(&self, path: &str) -> Result<Vec<u8>, HostError> {
        if let Some(missing) = self.missing.get(path) {
            return Err(missing.to_error());
        }
        let not_recorded = || HostError::NotRecorded {
            dir: self.dir.clone(),
            what: path.to_owned(),
        };
        let relative = mirror_path(path).ok_or_else(not_recorded)?;
        let target = self.dir.join(FILES_DIR).join(relative);
        match tokio::fs::read(&target).await {
            Ok(bytes) if bytes.len() > MAX_FILE_BYTES => Err(HostError::FileTooLarge {
                path: path.to_owned(),
                cap_bytes: MAX_FILE_BYTES as u64,
            }),
            Ok(bytes) => Ok(bytes),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Err(not_recorded()),
            Err(error) => Err(HostError::Io {
                what: format!("reading {} from the recording", target.display()),
                message: error.to_string(),
            }),
        }
    }
}

/// Reads every `*.toml` in `commands/`, in order of name (numerically when the names are
/// numbers), so that a later recording of the same argv replaces an earlier one.
fn load_commands(
    dir: &Path,
) -> anyhow::Result<HashMap<Vec<String>, Result<RawCommandOutput, HostError>>> {
    let mut commands = HashMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(commands),
        Err(error) => return Err(error).with_context(|| format!("reading {}", dir.display())),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        if path.extension().is_some_and(|e| e == "toml") {
            files.push(path);
        }
    }
    files.sort_by_cached_key(|path| {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        (stem.parse::<u64>().ok(), stem)
    });
    for path in files {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let file: CommandFile =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        if file.argv.is_empty() {
            anyhow::bail!("{}: argv must name a program", path.display());
        }
        let answer = match file.to_error() {
            Some(error) => Err(error),
            None => Ok(RawCommandOutput {
                status: file.status,
                stdout: read_optional(&path.with_extension("stdout"))?,
                stderr: String::from_utf8_lossy(&read_optional(&path.with_extension("stderr"))?)
                    .into_owned(),
            }),
        };
        commands.insert(file.argv, answer);
    }
    Ok(commands)
}

/// An output file's raw bytes; absent means empty.
fn read_optional(path: &Path) -> anyhow::Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(bytes),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(error) => Err(error).with_context(|| format!("reading {}", path.display())),
    }
}
