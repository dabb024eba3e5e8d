use std::path::Path;

use super::*;
use crate::host::Host;

#[test]
fn check_kinds_have_stable_names() {
    assert_eq!(
        CheckKind::ALL,
        &[
            CheckKind::Inventory,
            CheckKind::Patch,
            CheckKind::DiskEncryption,
            CheckKind::Backup
        ]
    );
    for &kind in CheckKind::ALL {
        assert_eq!(
            serde_json::to_string(&kind).expect("serialises"),
            format!("\"{}\"", kind.as_str())
        );
    }
}

#[tokio::test]
async fn run_all_reports_every_check_once() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/checks/inventory/testdata/replay-macos-sonoma");
    let host = Host::replay(&dir).expect("loads");
    let observations = run_all(&host, &mut Context::default()).await;
    assert_eq!(observations.len(), CheckKind::ALL.len());
    let inventory = &observations[0];
    assert_eq!(inventory.check, CheckKind::Inventory);
    assert!(inventory.observed_at_unix_ms > 0);
    let Outcome::Inventory(facts) = &inventory.outcome else {
        panic!("expected inventory facts, got {:?}", inventory.outcome);
    };
    assert_eq!(facts.os_name.as_deref(), Some("macOS"));

    // Evidence survives JSON unchanged.
    let json = serde_json::to_string(inventory).expect("serialises");
    assert!(json.contains("\"check\":\"inventory\""), "{json}");
    assert!(json.contains("\"outcome\":{\"inventory\":{"), "{json}");
    let back: Observation = serde_json::from_str(&json).expect("parses");
    assert_eq!(&back, inventory);
}

#[tokio::test]
async fn a_check_that_cannot_run_is_an_error_outcome() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("host.toml"), "os_family = \"windows\"\n").expect("write");
    let host = Host::replay(dir.path()).expect("loads");
    let observation = run(CheckKind::Inventory, &host, &mut Context::default()).await;
    let Outcome::Error(error) = &observation.outcome else {
        panic!("expected an error, got {:?}", observation.outcome);
    };
    assert!(error.reason.contains("windows host"), "{error}");
    assert!(
        error.to_string().contains("not in the recording"),
        "{error}"
    );
    let json = serde_json::to_value(&observation).expect("serialises");
    assert!(json["outcome"]["error"]["reason"].is_string(), "{json}");
}
