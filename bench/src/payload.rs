//! Realistic evidence: one check cycle of a typical Linux laptop, observed by the agent's own
//! checks from replay directories, encoded exactly as the agent sends it.

use std::path::{Path, PathBuf};

use evident_agent::checks::{self, CheckKind, Observation};
use evident_agent::host::Host;
use evident_proto::v1;
use prost::Message as _;

/// Where each check of the typical laptop is replayed from (under `agent/src/checks/`).
const TYPICAL_LAPTOP: &[(CheckKind, &str)] = &[
    (
        CheckKind::Inventory,
        "inventory/testdata/replay-linux-debian12",
    ),
    (CheckKind::Patch, "patch/testdata/replay-ubuntu2204"),
    (
        CheckKind::DiskEncryption,
        "disk_encryption/testdata/replay-linux-luks2-lvm-laptop",
    ),
    (
        CheckKind::Backup,
        "backup/testdata/replay-macos-time-machine",
    ),
];

fn checks_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/src/checks")
}

/// One cycle of a typical laptop: inventory, patch (a few pending updates), LUKS2 on LVM, one
/// backup destination.
pub async fn typical_cycle() -> anyhow::Result<Vec<Observation>> {
    let mut cycle = Vec::new();
    for (kind, dir) in TYPICAL_LAPTOP {
        let host = Host::replay(&checks_dir().join(dir))?;
        cycle.push(checks::run(*kind, &host, &mut checks::Context::default()).await);
    }
    Ok(cycle)
}

/// A heavy patch item: the Debian 12 build machine with 80 pending updates.
pub async fn heavy_patch() -> anyhow::Result<Observation> {
    let host = Host::replay(&checks_dir().join("patch/testdata/replay-debian12"))?;
    Ok(checks::run(CheckKind::Patch, &host, &mut checks::Context::default()).await)
}

/// An encoded `ItemList` of `cycles` repetitions of `cycle`, numbered from `first_sequence`.
pub fn item_list(first_sequence: u64, cycle: &[Observation], cycles: usize) -> Vec<u8> {
    let items = (0..cycles)
        .flat_map(|_| cycle.iter())
        .enumerate()
        .map(|(i, o)| evident_agent::convert::evidence_item(first_sequence + i as u64, o))
        .collect();
    v1::ItemList { items }.encode_to_vec()
}

/// The encoded size of each item of a cycle, by check.
pub fn item_sizes(cycle: &[Observation]) -> Vec<(String, usize)> {
    cycle
        .iter()
        .map(|o| {
            (
                o.check.as_str().to_owned(),
                evident_agent::convert::evidence_item(1, o).encoded_len(),
            )
        })
        .collect()
}
