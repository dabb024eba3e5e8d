//! Placeholder, being written.

use super::BackupFacts;
use crate::host::Host;

pub(super) async fn collect(_host: &Host, _facts: &mut BackupFacts) {}
