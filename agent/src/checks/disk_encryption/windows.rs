//! Placeholder, being written.

use super::DiskEncryptionFacts;
use crate::checks::CheckError;
use crate::host::Host;

pub(super) async fn collect(_host: &Host) -> Result<DiskEncryptionFacts, CheckError> {
    Err(CheckError::new("not written yet"))
}
