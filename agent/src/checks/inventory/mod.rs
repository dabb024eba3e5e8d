//! The inventory check: host identity and platform facts (ISO/IEC 27001:2022 A.5.9).
//!
//! Every fact comes through [`Host`], so a replayed recording reproduces the facts exactly;
//! nothing here asks the live system directly (no `std::env::consts`, no `gethostname`). Each
//! source is parsed by a pure function in the platform module, tested on real output in
//! `testdata/`.
//!
//! A fact that cannot be read is `None` **and** listed in [`InventoryFacts::unreadable`] with the
//! reason; an absent fact is never silent. The check as a whole fails only when neither the
//! hostname nor the OS name could be read: such a report identifies neither the machine nor
//! its platform, so it is no inventory evidence, and the reasons are better shown as an error.

mod linux;
mod macos;
mod windows;

use serde::{Deserialize, Serialize};

use super::CheckError;
pub use super::UnreadableFact;
use crate::host::{Host, OsFamily, display_argv};

/// What the inventory check observed about a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryFacts {
    /// The host's name: the kernel hostname on Linux, the computer name on macOS, the DNS host
    /// name on Windows.
    pub hostname: Option<String>,
    pub os_family: OsFamily,
    /// e.g. `Debian GNU/Linux`, `macOS`, `Microsoft Windows 11 Pro`.
    pub os_name: Option<String>,
    /// e.g. `12 (bookworm)`, `14.1.1`, `10.0.22631`.
    pub os_version: Option<String>,
    /// e.g. `23B81` (macOS), `22631` (Windows), os-release `BUILD_ID` (Linux, rarely set).
    pub os_build: Option<String>,
    pub kernel_version: Option<String>,
    /// As the OS names it: `x86_64`, `aarch64`, `arm64`, `AMD64`.
    pub architecture: Option<String>,
    /// A stable per-installation id: `/etc/machine-id`, `IOPlatformUUID`, `MachineGuid`.
    pub machine_id: Option<String>,
    pub hardware_vendor: Option<String>,
    pub hardware_model: Option<String>,
    pub hardware_serial: Option<String>,
    pub boot_time_unix_ms: Option<i64>,
    /// The version of the agent that made the observation.
    pub agent_version: String,
    /// Facts it tried to read and could not, with the reason (an absent fact is never silent).
    pub unreadable: Vec<UnreadableFact>,
    /// Labels from the agent's config (`tags`): declared by the deployment, not observed.
    pub tags: Vec<String>,
}

/// The facts, by field name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fact {
    Hostname,
    OsName,
    OsVersion,
    OsBuild,
    KernelVersion,
    Architecture,
    MachineId,
    HardwareVendor,
    HardwareModel,
    HardwareSerial,
    BootTime,
}

impl Fact {
    pub(crate) const ALL: [Fact; 11] = [
        Fact::Hostname,
        Fact::OsName,
        Fact::OsVersion,
        Fact::OsBuild,
        Fact::KernelVersion,
        Fact::Architecture,
        Fact::MachineId,
        Fact::HardwareVendor,
        Fact::HardwareModel,
        Fact::HardwareSerial,
        Fact::BootTime,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Fact::Hostname => "hostname",
            Fact::OsName => "os_name",
            Fact::OsVersion => "os_version",
            Fact::OsBuild => "os_build",
            Fact::KernelVersion => "kernel_version",
            Fact::Architecture => "architecture",
            Fact::MachineId => "machine_id",
            Fact::HardwareVendor => "hardware_vendor",
            Fact::HardwareModel => "hardware_model",
            Fact::HardwareSerial => "hardware_serial",
            Fact::BootTime => "boot_time_unix_ms",
        }
    }
}

impl InventoryFacts {
    /// No facts yet, for a host of `os_family`.
    pub fn empty(os_family: OsFamily) -> InventoryFacts {
        InventoryFacts {
            hostname: None,
            os_family,
            os_name: None,
            os_version: None,
            os_build: None,
            kernel_version: None,
            architecture: None,
            machine_id: None,
            hardware_vendor: None,
            hardware_model: None,
            hardware_serial: None,
            boot_time_unix_ms: None,
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            unreadable: Vec::new(),
            tags: Vec::new(),
        }
    }

    fn text_slot(&mut self, fact: Fact) -> Option<&mut Option<String>> {
        Some(match fact {
            Fact::Hostname => &mut self.hostname,
            Fact::OsName => &mut self.os_name,
            Fact::OsVersion => &mut self.os_version,
            Fact::OsBuild => &mut self.os_build,
            Fact::KernelVersion => &mut self.kernel_version,
            Fact::Architecture => &mut self.architecture,
            Fact::MachineId => &mut self.machine_id,
            Fact::HardwareVendor => &mut self.hardware_vendor,
            Fact::HardwareModel => &mut self.hardware_model,
            Fact::HardwareSerial => &mut self.hardware_serial,
            Fact::BootTime => return None,
        })
    }

    fn is_present(&self, fact: Fact) -> bool {
        match fact {
            Fact::BootTime => self.boot_time_unix_ms.is_some(),
            Fact::Hostname => self.hostname.is_some(),
            Fact::OsName => self.os_name.is_some(),
            Fact::OsVersion => self.os_version.is_some(),
            Fact::OsBuild => self.os_build.is_some(),
            Fact::KernelVersion => self.kernel_version.is_some(),
            Fact::Architecture => self.architecture.is_some(),
            Fact::MachineId => self.machine_id.is_some(),
            Fact::HardwareVendor => self.hardware_vendor.is_some(),
            Fact::HardwareModel => self.hardware_model.is_some(),
            Fact::HardwareSerial => self.hardware_serial.is_some(),
        }
    }

    /// Sets a text fact, or records why it could not be read.
    pub(crate) fn set(&mut self, fact: Fact, value: Result<String, String>) {
        match value {
            Ok(value) => {
                if let Some(slot) = self.text_slot(fact) {
                    *slot = Some(value);
                }
            }
            Err(reason) => self.unreadable(fact, reason),
        }
    }

    /// Sets the boot time, or records why it could not be read.
    pub(crate) fn set_boot_time(&mut self, value: Result<i64, String>) {
        match value {
            Ok(ms) => self.boot_time_unix_ms = Some(ms),
            Err(reason) => self.unreadable(Fact::BootTime, reason),
        }
    }

    pub(crate) fn unreadable(&mut self, fact: Fact, reason: impl Into<String>) {
        self.unreadable.push(UnreadableFact {
            fact: fact.as_str().to_owned(),
            reason: reason.into(),
        });
    }

    /// Lists every absent fact that no source explained, so that none is silent.
    fn explain_gaps(&mut self) {
        for fact in Fact::ALL {
            let explained = self.unreadable.iter().any(|u| u.fact == fact.as_str());
            if !self.is_present(fact) && !explained {
                self.unreadable(fact, "no source reported it");
            }
        }
    }
}

/// Collects the inventory of `host`, dispatching on the observed host's OS family (not on the
/// agent's own platform), so that any recording replays on any OS.
pub async fn collect(host: &Host) -> Result<InventoryFacts, CheckError> {
    let os_family = host.os_family();
    let mut facts = InventoryFacts::empty(os_family);
    match os_family {
        OsFamily::Linux => linux::collect(host, &mut facts).await,
        OsFamily::Macos => macos::collect(host, &mut facts).await,
        OsFamily::Windows => windows::collect(host, &mut facts).await,
    }
    facts.explain_gaps();
    if facts.hostname.is_none() && facts.os_name.is_none() {
        let source = facts
            .unreadable
            .iter()
            .map(|u| format!("{}: {}", u.fact, u.reason))
            .collect::<Vec<_>>()
            .join("; ");
        return Err(CheckError::new(format!(
            "inventory of this {os_family} host failed: neither the hostname nor the os name could be read"
        ))
        .with_source(source));
    }
    Ok(facts)
}

/// Runs a command and returns its stdout, or the reason it gave none.
async fn command_stdout(host: &Host, program: &str, args: &[&str]) -> Result<String, String> {
    let output = host
        .run(program, args)
        .await
        .map_err(|error| error.to_string())?;
    if output.success() {
        return Ok(output.stdout);
    }
    let status = output
        .status
        .map_or_else(|| "a signal".to_owned(), |code| format!("status {code}"));
    let stderr = output.stderr.trim();
    let argv = display_argv(program, args);
    if stderr.is_empty() {
        Err(format!("`{argv}` exited with {status}"))
    } else {
        Err(format!("`{argv}` exited with {status}: {stderr}"))
    }
}

/// A one-line value such as a hostname or `uname -m`: trimmed, `None` when blank.
pub fn parse_line(text: &str) -> Option<String> {
    let value = text.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

/// Runs a command whose whole stdout is one value.
async fn command_line(host: &Host, program: &str, args: &[&str]) -> Result<String, String> {
    let stdout = command_stdout(host, program, args).await?;
    parse_line(&stdout).ok_or_else(|| format!("`{}` printed nothing", display_argv(program, args)))
}

/// Values that firmware vendors leave in place of a real vendor, model or serial number.
const PLACEHOLDERS: &[&str] = &[
    "to be filled by o.e.m.",
    "to be filled by oem",
    "default string",
    "system serial number",
    "system product name",
    "system manufacturer",
    "system version",
    "chassis serial number",
    "base board serial number",
    "serial number",
    "not specified",
    "not applicable",
    "not available",
    "none",
    "n/a",
    "oem",
    "o.e.m.",
    "unknown",
    "invalid",
    "0123456789",
    "123456789",
];

/// A hardware value (vendor, model, serial) from firmware: trimmed, with placeholders such as
/// `To Be Filled By O.E.M.` treated as absent. `source` names where it came from, for the reason.
pub fn hardware_value(raw: &str, source: &str) -> Result<String, String> {
    let value = raw.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    if value.is_empty() {
        return Err(format!("placeholder value {raw:?} (blank) in {source}"));
    }
    let lower = value.to_ascii_lowercase();
    if PLACEHOLDERS.contains(&lower.as_str()) || value.chars().all(|c| c == '0') {
        return Err(format!("placeholder value {value:?} in {source}"));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests;
