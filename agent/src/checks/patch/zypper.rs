//! Placeholder, being written: SUSE (zypper).

use super::{PackageManager, PatchFacts};
use crate::checks::CheckError;
use crate::host::Host;

/// The version from `zypper --version`: `zypper 1.14.68` -> `1.14.68`.
pub(super) fn parse_version(stdout: &str) -> Option<String> {
    stdout.split_whitespace().nth(1).map(str::to_owned)
}

pub(super) async fn collect(_host: &Host, version: Option<String>) -> Result<PatchFacts, CheckError> {
    let _ = PackageManager { name: "zypper".into(), version };
    Err(CheckError::new("not written yet"))
}
