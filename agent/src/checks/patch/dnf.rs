//! Placeholder, being written: RHEL, Fedora, Alma, Rocky (dnf, yum fallback).

use super::{PackageManager, PatchFacts};
use crate::checks::CheckError;
use crate::host::Host;

/// Which program answers: dnf, or yum on older systems.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flavour {
    Dnf,
    Yum,
}

/// The version from `dnf --version` / `yum --version`: the first line.
pub(super) fn parse_version(stdout: &str) -> Option<String> {
    stdout.lines().next().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned)
}

pub(super) async fn collect(
    _host: &Host,
    flavour: Flavour,
    version: Option<String>,
) -> Result<PatchFacts, CheckError> {
    let _ = PackageManager { name: format!("{flavour:?}"), version };
    Err(CheckError::new("not written yet"))
}
