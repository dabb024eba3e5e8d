//! The whole disk-encryption check over replay directories.

use std::path::{Path, PathBuf};

use super::*;
use crate::host::Host;

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/checks/disk_encryption/testdata")
        .join(name)
}

async fn replay(name: &str) -> Result<DiskEncryptionFacts, CheckError> {
    collect(&Host::replay(&testdata(name)).expect("recording loads")).await
}

fn volume<'a>(facts: &'a DiskEncryptionFacts, id: &str) -> &'a Volume {
    facts
        .volumes
        .iter()
        .find(|v| v.id == id)
        .unwrap_or_else(|| panic!("no volume {id} in {:#?}", facts.volumes))
}

#[tokio::test]
async fn the_build_machine_is_an_unencrypted_vm() {
    let facts = replay("replay-linux-vm-unencrypted")
        .await
        .expect("collects");
    assert_eq!(facts.system_encrypted, Some(false));
    assert_eq!(facts.fixed_data_encrypted, Some(true), "no data volumes");
    assert_eq!(facts.swap, SwapState::Absent);
    assert_eq!(facts.volumes.len(), 1);
    assert_eq!(
        volume(&facts, "/dev/vda").encrypted,
        EncryptionState::NotEncrypted
    );
    assert!(facts.unreadable.is_empty(), "{:?}", facts.unreadable);
}

#[tokio::test]
async fn laptop_with_lvm_on_luks2_and_tpm2_and_fido2_tokens() {
    let facts = replay("replay-linux-luks2-lvm-laptop")
        .await
        .expect("collects");
    assert_eq!(facts.system_encrypted, Some(true));
    assert_eq!(facts.fixed_data_encrypted, Some(true));
    assert_eq!(facts.swap, SwapState::Encrypted);
    let root = volume(&facts, "/dev/mapper/ubuntu--vg-ubuntu--lv");
    assert_eq!(
        root,
        &Volume {
            id: "/dev/mapper/ubuntu--vg-ubuntu--lv".into(),
            mount_points: vec!["/".into()],
            role: VolumeRole::System,
            encrypted: EncryptionState::Encrypted,
            reason: "/ is on dm-crypt mapping dm_crypt-0 (luks2) on /dev/nvme0n1p3".into(),
            scheme: Some("luks2".into()),
            cipher: Some("aes-xts-plain64".into()),
            key_bits: Some(512),
            key_protectors: vec!["fido2".into(), "tpm2".into()],
            filesystem: Some("ext4".into()),
            size_bytes: Some(500_226_637_824),
            ..Volume::default()
        }
    );
    let swap = volume(&facts, "/dev/mapper/ubuntu--vg-swap");
    assert_eq!(
        (swap.role, swap.encrypted),
        (VolumeRole::Swap, EncryptionState::Encrypted)
    );
    let usb = volume(&facts, "/dev/sda1");
    assert_eq!(
        (usb.role, usb.encrypted),
        (VolumeRole::Removable, EncryptionState::NotEncrypted)
    );
    for boot in ["/dev/nvme0n1p1", "/dev/nvme0n1p2", "/dev/loop0"] {
        assert_eq!(volume(&facts, boot).role, VolumeRole::Other, "{boot}");
    }
    assert!(facts.unreadable.is_empty(), "{:?}", facts.unreadable);
}

#[tokio::test]
async fn server_with_luks1_root_luks_on_lvm_across_disks_plain_swap_and_a_plain_disk() {
    let facts = replay("replay-linux-luks1-server").await.expect("collects");
    assert_eq!(facts.system_encrypted, Some(true));
    // /var/backups is on a plain disk, and /archive only partly encrypted.
    assert_eq!(facts.fixed_data_encrypted, Some(false));
    assert_eq!(facts.swap, SwapState::Encrypted);

    let root = volume(&facts, "/dev/mapper/vg0-root");
    assert_eq!(root.scheme.as_deref(), Some("luks1"));
    assert_eq!(root.key_protectors, vec!["passphrase".to_owned()]);
    let srv = volume(&facts, "/dev/mapper/data_crypt");
    assert_eq!(srv.encrypted, EncryptionState::Encrypted);
    assert_eq!(
        (srv.scheme.as_deref(), srv.key_bits),
        (Some("luks2"), Some(256))
    );
    let swap = volume(&facts, "/dev/mapper/cryptswap");
    assert_eq!(swap.scheme.as_deref(), Some("plain_dm_crypt"));
    assert_eq!(swap.cipher.as_deref(), Some("aes-xts-plain64"));
    let backups = volume(&facts, "/dev/sdd1");
    assert_eq!(
        (backups.role, backups.encrypted),
        (VolumeRole::Data, EncryptionState::NotEncrypted)
    );
    let archive = volume(&facts, "/dev/mapper/vg2-archive");
    assert_eq!(archive.encrypted, EncryptionState::Partial);
    assert!(
        archive.reason.contains("/dev/sde") && archive.reason.contains("/dev/sdf"),
        "{}",
        archive.reason
    );
    // The header of /dev/sde1 could not be read: named, and the volume is still judged.
    assert_eq!(facts.unreadable.len(), 1, "{:?}", facts.unreadable);
    assert_eq!(facts.unreadable[0].fact, "luks_header /dev/sde1");
}

#[tokio::test]
async fn no_lsblk_is_an_error_outcome() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("host.toml"), "os_family = \"linux\"\n").expect("write");
    let error = collect(&Host::replay(dir.path()).expect("loads"))
        .await
        .expect_err("no block devices");
    assert!(error.reason.contains("lsblk"), "{error}");
}

#[test]
fn the_summary_follows_the_volumes() {
    let v = |role, encrypted| Volume {
        role,
        encrypted,
        ..Volume::default()
    };
    use EncryptionState::*;
    use VolumeRole::*;
    let facts = DiskEncryptionFacts::from_volumes(
        vec![v(System, Encrypted), v(Data, Unknown), v(Swap, Encrypted)],
        Vec::new(),
    );
    assert_eq!(
        (
            facts.system_encrypted,
            facts.fixed_data_encrypted,
            facts.swap
        ),
        (Some(true), None, SwapState::Encrypted)
    );
    let facts = DiskEncryptionFacts::from_volumes(
        vec![
            v(System, Encrypting),
            v(Data, Unknown),
            v(Data, NotEncrypted),
            v(Removable, NotEncrypted),
        ],
        Vec::new(),
    );
    assert_eq!(
        (
            facts.system_encrypted,
            facts.fixed_data_encrypted,
            facts.swap
        ),
        (Some(false), Some(false), SwapState::Absent)
    );
    let facts = DiskEncryptionFacts::from_volumes(vec![v(Swap, Unknown)], Vec::new());
    assert_eq!(
        (facts.system_encrypted, facts.swap),
        (None, SwapState::Unknown)
    );
}

#[tokio::test]
async fn what_could_not_be_read_never_yields_a_clean_summary() {
    let tmp = crate::host::copy_recording(&testdata("replay-linux-luks2-lvm-laptop"));
    let dir = tmp.path();
    // No /proc/swaps in this copy, and ZFS is installed but its module is not loaded.
    std::fs::remove_file(dir.join("files/proc/swaps")).expect("remove");
    for entry in std::fs::read_dir(dir.join("commands")).expect("commands") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.starts_with("argv = [\"zfs\"") {
            let argv = text.lines().next().expect("argv");
            std::fs::write(&path, format!("{argv}\nstatus = 1\n")).expect("write");
            std::fs::write(
                path.with_extension("stderr"),
                "The ZFS modules are not loaded.\nTry running '/sbin/modprobe zfs' as root to load them.\n",
            )
            .expect("write");
        }
    }
    let facts = collect(&Host::replay(dir).expect("loads"))
        .await
        .expect("collects");
    assert_eq!(facts.system_encrypted, Some(true));
    assert_eq!(
        facts.swap,
        SwapState::Unknown,
        "swap files could not be listed"
    );
    assert_eq!(
        facts.fixed_data_encrypted, None,
        "a ZFS dataset may be unencrypted"
    );
    let unreadable: Vec<&str> = facts.unreadable.iter().map(|u| u.fact.as_str()).collect();
    assert_eq!(unreadable, vec!["swap", "zfs"]);
}
