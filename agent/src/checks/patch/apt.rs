//! Placeholder, being written: Debian and Ubuntu (apt).

use super::{PackageManager, PatchFacts};
use crate::checks::CheckError;
use crate::host::Host;

/// The version from `apt-get --version`: `apt 2.6.1 (amd64)` -> `2.6.1`.
pub(super) fn parse_version(stdout: &str) -> Option<String> {
    stdout.split_whitespace().nth(1).map(str::to_owned)
}

pub(super) async fn collect(_host: &Host, version: Option<String>) -> Result<PatchFacts, CheckError> {
    let _ = PackageManager { name: "apt".into(), version };
    Err(CheckError::new("not written yet"))
}
