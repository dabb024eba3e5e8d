//! The agent's state directory: its key, certificates, enrolment record, sequence counter and
//! spool. Layout:
//!
//! ```text
//! DIR/enrollment.toml   agent id and collector address
//! DIR/agent.key         the agent's private key (PKCS#8 PEM, mode 0600); never sent anywhere
//! DIR/agent.pem         the certificate the collector issued for that key
//! DIR/ca.pem            the collector's CA, pinned at enrolment
//! DIR/sequence          the last evidence sequence number handed out
//! DIR/spool/            evidence waiting for the collector's ack (see spool.rs)
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use crate::tls::CollectorUrl;

#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

/// What `enrollment.toml` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrollment {
    pub agent_id: String,
    pub collector: String,
    pub enrolled_at: String,
}

/// Everything needed to report: identity and where to.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub enrollment: Enrollment,
    pub collector: CollectorUrl,
    pub ca: CertificateDer<'static>,
    pub cert: CertificateDer<'static>,
    pub key_pem: String,
}

impl Credentials {
    pub fn key_der(&self) -> anyhow::Result<PrivateKeyDer<'static>> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).context("parse agent.key")
    }
}

impl StateDir {
    pub fn new(root: &Path) -> StateDir {
        StateDir {
            root: root.to_owned(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn enrollment_file(&self) -> PathBuf {
        self.root.join("enrollment.toml")
    }
    pub fn key_file(&self) -> PathBuf {
        self.root.join("agent.key")
    }
    pub fn cert_file(&self) -> PathBuf {
        self.root.join("agent.pem")
    }
    pub fn ca_file(&self) -> PathBuf {
        self.root.join("ca.pem")
    }
    pub fn sequence_file(&self) -> PathBuf {
        self.root.join("sequence")
    }
    /// When each backup repository's integrity check and restore test last ran (JSON).
    pub fn backup_memory_file(&self) -> PathBuf {
        self.root.join("backup-memory.json")
    }

    /// Loads the backup memory; a missing file is a fresh memory, and so, with a warning, is a
    /// corrupt one (the checks then simply run again).
    pub fn load_backup_memory(&self) -> crate::checks::backup::BackupMemory {
        let path = self.backup_memory_file();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
                tracing::warn!(%error, path = %path.display(), "backup memory unreadable; integrity checks and restore tests run again");
                Default::default()
            }),
            Err(_) => Default::default(),
        }
    }

    pub fn save_backup_memory(
        &self,
        memory: &crate::checks::backup::BackupMemory,
    ) -> anyhow::Result<()> {
        write_atomic(
            &self.backup_memory_file(),
            &serde_json::to_vec_pretty(memory)?,
            false,
        )
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.root.join("spool")
    }

    /// Creates the directory (mode 0700) if needed.
    pub fn create(&self) -> anyhow::Result<()> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder
            .create(&self.root)
            .with_context(|| format!("create state directory {}", self.root.display()))
    }

    pub fn is_enrolled(&self) -> bool {
        self.enrollment_file().exists()
    }

    /// Installs a renewed key and certificate. Both are written beside the old ones first, then
    /// renamed key first; [`StateDir::credentials`] finishes a swap a crash interrupted, so the
    /// key and certificate on disk always belong together.
    pub fn install_renewed(&self, key_pem: &str, cert_pem: &str) -> anyhow::Result<()> {
        let (key_new, cert_new) = (
            self.pending(&self.key_file()),
            self.pending(&self.cert_file()),
        );
        write_atomic(&key_new, key_pem.as_bytes(), true)?;
        write_atomic(&cert_new, cert_pem.as_bytes(), false)?;
        self.finish_renewal()
    }

    fn pending(&self, path: &Path) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push(".new");
        PathBuf::from(name)
    }

    /// Completes an interrupted swap: with the new certificate written, the new pair wins; with
    /// only a new key (the crash came before its certificate), the old pair stays.
    fn finish_renewal(&self) -> anyhow::Result<()> {
        let (key_new, cert_new) = (
            self.pending(&self.key_file()),
            self.pending(&self.cert_file()),
        );
        if cert_new.exists() {
            if key_new.exists() {
                std::fs::rename(&key_new, self.key_file())
                    .with_context(|| format!("install {}", key_new.display()))?;
            }
            std::fs::rename(&cert_new, self.cert_file())
                .with_context(|| format!("install {}", cert_new.display()))?;
            sync_dir(&self.root)?;
        } else if key_new.exists() {
            std::fs::remove_file(&key_new)
                .with_context(|| format!("remove unfinished {}", key_new.display()))?;
        }
        Ok(())
    }

    /// Loads what `enroll` saved; a clear error says how to enrol when it is missing.
    pub fn credentials(&self) -> anyhow::Result<Credentials> {
        self.finish_renewal()?;
        if !self.is_enrolled() {
            bail!(
                "agent is not enrolled: no {} (run `evident-agent enroll --state-dir {} ...` first)",
                self.enrollment_file().display(),
                self.root.display()
            );
        }
        let text = read(&self.enrollment_file())?;
        let enrollment: Enrollment = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", self.enrollment_file().display()))?;
        let collector = CollectorUrl::parse(&enrollment.collector)
            .with_context(|| format!("in {}", self.enrollment_file().display()))?;
        let ca = CertificateDer::from_pem_slice(read(&self.ca_file())?.as_bytes())
            .with_context(|| format!("parse {}", self.ca_file().display()))?;
        let cert = CertificateDer::from_pem_slice(read(&self.cert_file())?.as_bytes())
            .with_context(|| format!("parse {}", self.cert_file().display()))?;
        let key_pem = read(&self.key_file())?;
        Ok(Credentials {
            enrollment,
            collector,
            ca,
            cert,
            key_pem,
        })
    }
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))
}

/// Writes a file atomically and durably: a temporary file, fsync, rename, fsync of the directory.
/// `private` makes it readable by the owner only (mode 0600) from the first byte.
pub fn write_atomic(path: &Path, contents: &[u8], private: bool) -> anyhow::Result<()> {
    let dir = path.parent().context("path has no parent directory")?;
    let name = path
        .file_name()
        .context("path has no file name")?
        .to_string_lossy();
    let tmp = dir.join(format!(".tmp-{name}"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options
        .open(&tmp)
        .with_context(|| format!("create {}", tmp.display()))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("write {}", tmp.display()))?;
    drop(file);
    std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))?;
    sync_dir(dir)
}

/// Makes a rename or unlink in `dir` durable.
pub fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("sync directory {}", dir.display()))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(state: &StateDir) -> (String, String) {
        (
            std::fs::read_to_string(state.key_file()).expect("key"),
            std::fs::read_to_string(state.cert_file()).expect("cert"),
        )
    }

    #[test]
    fn an_interrupted_renewal_leaves_a_matching_pair() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::new(dir.path());
        std::fs::write(state.key_file(), "old key").expect("write");
        std::fs::write(state.cert_file(), "old cert").expect("write");

        // Crashed after the new key only: the old pair stays.
        std::fs::write(state.pending(&state.key_file()), "new key").expect("write");
        state.finish_renewal().expect("finish");
        assert_eq!(pair(&state), ("old key".into(), "old cert".into()));
        assert!(!state.pending(&state.key_file()).exists());

        // Crashed after the key was renamed, before the certificate: the new pair completes.
        std::fs::write(state.key_file(), "new key").expect("write");
        std::fs::write(state.pending(&state.cert_file()), "new cert").expect("write");
        state.finish_renewal().expect("finish");
        assert_eq!(pair(&state), ("new key".into(), "new cert".into()));

        // A whole renewal.
        state
            .install_renewed("newer key", "newer cert")
            .expect("install");
        assert_eq!(pair(&state), ("newer key".into(), "newer cert".into()));
    }
}
