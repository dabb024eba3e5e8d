use super::*;

fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/checks/disk_encryption/testdata/linux")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn luks2_header_with_tpm2_and_fido2_tokens() {
    // A real dump by cryptsetup 2.6.1: keyslot 0 bound to a FIDO2 token, keyslot 3 to TPM2.
    let header = parse_luks_dump(&fixture("luksdump-luks2-tpm2-fido2.txt")).expect("parses");
    assert_eq!(
        header,
        LuksHeader {
            version: 2,
            cipher: Some("aes-xts-plain64".into()),
            key_bits: Some(512),
            protectors: vec!["fido2".into(), "tpm2".into()],
        }
    );
}

#[test]
fn luks2_header_with_a_passphrase_only() {
    let header = parse_luks_dump(&fixture("luksdump-luks2-passphrase-aes256.txt")).expect("parses");
    assert_eq!(header.version, 2);
    assert_eq!(header.key_bits, Some(256));
    assert_eq!(header.protectors, vec!["passphrase".to_owned()]);
}

#[test]
fn luks1_header() {
    let header = parse_luks_dump(&fixture("luksdump-luks1.txt")).expect("parses");
    assert_eq!(
        header,
        LuksHeader {
            version: 1,
            cipher: Some("aes-xts-plain64".into()),
            key_bits: Some(512),
            protectors: vec!["passphrase".into()],
        }
    );
}

#[test]
fn no_key_material_from_a_header_survives_parsing() {
    for name in [
        "luksdump-luks2-tpm2-fido2.txt",
        "luksdump-luks2-passphrase-aes256.txt",
        "luksdump-luks1.txt",
    ] {
        let text = fixture(name);
        let header = format!("{:?}", parse_luks_dump(&text).expect("parses"));
        // Every salt, digest and token blob is printed as hex byte pairs; none is kept.
        for line in text
            .lines()
            .filter(|l| l.contains("Salt") || l.contains("Digest:") || l.contains("digest"))
        {
            let hex = line.split(':').nth(1).unwrap_or_default().trim();
            if hex.len() > 8 {
                assert!(!header.contains(hex), "{name}: {hex} leaked into {header}");
            }
        }
        assert!(
            !header.contains("73 65 63 72 65 74"),
            "fido2 credential leaked"
        );
    }
}

#[test]
fn not_a_luks_dump() {
    let error =
        parse_luks_dump("Device /dev/sde1 is not a valid LUKS device.\n").expect_err("no version");
    assert!(error.contains("no LUKS version"), "{error}");
    assert!(parse_luks_dump("").is_err());
    assert!(parse_luks_dump("Version: banana\n").is_err());
}

#[test]
fn lsblk_of_this_vm() {
    let tree = parse_lsblk(&fixture("lsblk-vm.json")).expect("parses");
    let volumes = block_volumes(&tree, &[]);
    assert_eq!(volumes.len(), 1, "{volumes:#?}");
    let root = &volumes[0].volume;
    assert_eq!(root.id, "/dev/vda");
    assert_eq!(root.role, VolumeRole::System);
    assert_eq!(root.encrypted, EncryptionState::NotEncrypted);
    assert_eq!(volumes[0].crypt, None);
}

#[test]
fn lsblk_garbage_is_an_error_that_says_so() {
    assert!(
        parse_lsblk("")
            .expect_err("empty")
            .contains("no valid JSON")
    );
    assert!(
        parse_lsblk("{}")
            .expect_err("no list")
            .contains("blockdevices")
    );
    assert!(parse_lsblk(r#"{"blockdevices":[{"type":"disk"}]}"#).is_err());
}

#[test]
fn old_lsblk_strings_and_single_mountpoint() {
    let tree = parse_lsblk(
        r#"{"blockdevices":[{"name":"sdb","type":"disk","rm":"1","size":"1000","mountpoint":null,
            "children":[{"name":"sdb1","type":"part","fstype":"vfat","rm":"1","size":"999","mountpoint":"/media/usb"}]}]}"#,
    )
    .expect("parses");
    let usb = &tree[0].children[0];
    assert_eq!(usb.path, "/dev/sdb1");
    assert!(usb.removable);
    assert_eq!(usb.size_bytes, Some(999));
    assert_eq!(usb.mountpoints, vec!["/media/usb".to_owned()]);
    let volumes = block_volumes(&tree, &[]);
    assert_eq!(volumes[0].volume.role, VolumeRole::Removable);
}

#[test]
fn proc_swaps_partitions_files_and_escaped_spaces() {
    let swaps = parse_proc_swaps(
        "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n/swap\\040file                              file\t\t2097148\t\t0\t\t-2\n/dev/dm-1 partition 8388604 0 -3\n",
    );
    assert_eq!(
        swaps,
        vec![
            Swap {
                path: "/swap file".into(),
                kind: "file".into()
            },
            Swap {
                path: "/dev/dm-1".into(),
                kind: "partition".into()
            },
        ]
    );
    assert!(parse_proc_swaps("Filename\tType\tSize\tUsed\tPriority\n").is_empty());
}

#[test]
fn a_swap_file_is_as_encrypted_as_its_filesystem() {
    let root = Volume {
        id: "/dev/mapper/root".into(),
        mount_points: vec!["/".into()],
        role: VolumeRole::System,
        encrypted: EncryptionState::Encrypted,
        reason: "/ is on dm-crypt".into(),
        scheme: Some("luks2".into()),
        ..Volume::default()
    };
    let home = Volume {
        id: "/dev/sdb1".into(),
        mount_points: vec!["/home".into()],
        role: VolumeRole::Data,
        encrypted: EncryptionState::NotEncrypted,
        ..Volume::default()
    };
    let swaps = [
        Swap {
            path: "/swapfile".into(),
            kind: "file".into(),
        },
        Swap {
            path: "/home/swap".into(),
            kind: "file".into(),
        },
        Swap {
            path: "/dev/sda3".into(),
            kind: "partition".into(),
        },
    ];
    let files = swap_files(&swaps, &[root, home]);
    assert_eq!(files.len(), 2);
    assert_eq!(files[0].encrypted, EncryptionState::Encrypted);
    assert_eq!(files[0].scheme.as_deref(), Some("luks2"));
    assert_eq!(files[1].encrypted, EncryptionState::NotEncrypted);
    assert!(
        files[1].reason.starts_with("swap file on /home"),
        "{}",
        files[1].reason
    );
}

#[test]
fn zfs_datasets_with_and_without_native_encryption() {
    let volumes = parse_zfs_list(
        "rpool\t/\tno\toff\t-\tnone\n\
         rpool/ROOT/ubuntu\t/\tyes\taes-256-gcm\tavailable\tpassphrase\n\
         rpool/home\t/home\tyes\taes-256-gcm\tavailable\tpassphrase\n\
         bpool/BOOT/ubuntu\t/boot\tyes\toff\t-\tnone\n\
         tank/data\t/srv\tyes\toff\t-\tnone\n\
         tank/legacy\tlegacy\tyes\toff\t-\tnone\n",
    );
    let summary: Vec<(&str, VolumeRole, EncryptionState)> = volumes
        .iter()
        .map(|v| (v.id.as_str(), v.role, v.encrypted))
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "rpool/ROOT/ubuntu",
                VolumeRole::System,
                EncryptionState::Encrypted
            ),
            ("rpool/home", VolumeRole::Data, EncryptionState::Encrypted),
            (
                "bpool/BOOT/ubuntu",
                VolumeRole::Other,
                EncryptionState::NotEncrypted
            ),
            ("tank/data", VolumeRole::Data, EncryptionState::NotEncrypted),
        ]
    );
    assert_eq!(volumes[0].cipher.as_deref(), Some("aes-256-gcm"));
    assert_eq!(volumes[0].key_protectors, vec!["passphrase".to_owned()]);
}

#[test]
fn plain_dm_crypt_status() {
    assert_eq!(
        parse_cryptsetup_status(
            "/dev/mapper/cryptswap is active.\n  type:    PLAIN\n  cipher:  aes-xts-plain64\n  keysize: 512 bits\n  key location: dm-crypt\n"
        ),
        CryptStatus {
            cipher: Some("aes-xts-plain64".into()),
            key_bits: Some(512)
        }
    );
}
