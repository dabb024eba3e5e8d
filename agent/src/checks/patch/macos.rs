//! Placeholder, being written.

use super::PatchFacts;
use crate::checks::CheckError;
use crate::host::Host;

pub(super) async fn collect(_host: &Host) -> Result<PatchFacts, CheckError> {
    Err(CheckError::new("not written yet"))
}
