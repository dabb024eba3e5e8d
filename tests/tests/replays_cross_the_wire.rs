//! Every replay directory of every check, observed by the agent library, encoded as the agent
//! sends it and decoded as the collector stores it: no fact is lost or changed on the way.

use std::path::{Path, PathBuf};

use evident_agent::checks::{self, CheckKind};
use evident_agent::host::Host;
use prost::Message as _;

fn replay_dirs() -> Vec<PathBuf> {
    let checks = Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/src/checks");
    let mut dirs = Vec::new();
    for check in std::fs::read_dir(&checks).expect("checks") {
        let testdata = check.expect("entry").path().join("testdata");
        let Ok(entries) = std::fs::read_dir(&testdata) else {
            continue;
        };
        for entry in entries {
            let dir = entry.expect("entry").path();
            if dir
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("replay-"))
            {
                dirs.push(dir);
            }
        }
    }
    dirs.sort();
    dirs
}

#[tokio::test]
async fn every_replayed_fact_survives_the_wire() {
    let dirs = replay_dirs();
    assert!(dirs.len() >= 20, "replay directories found: {dirs:?}");
    let (mut facts_compared, mut errors_compared) = (0, 0);
    for dir in &dirs {
        let host = Host::replay(dir).expect("replay loads");
        for &kind in CheckKind::ALL {
            let observation = checks::run(kind, &host, &mut checks::Context::default()).await;
            let item = evident_agent::convert::evidence_item(7, &observation).encode_to_vec();
            let what = format!("{} {}", dir.display(), kind.as_str());
            let stored = evident_collector::convert::decode_item(0, &item)
                .unwrap_or_else(|e| panic!("{what}: the collector refuses the item: {e}"));
            assert_eq!(stored.check.as_str(), kind.as_str(), "{what}");
            assert_eq!(stored.observed_at_unix_ms, observation.observed_at_unix_ms);
            let sent = serde_json::to_value(&observation.outcome).expect("json");
            let kept = serde_json::to_value(&stored.outcome).expect("json");
            if let Some(error) = sent.get("error") {
                assert_eq!(kept["error"]["reason"], error["reason"], "{what}");
                errors_compared += 1;
                continue;
            }
            let (name, sent_facts) = sent
                .as_object()
                .and_then(|o| o.iter().next())
                .expect("an outcome");
            let kept_facts = &kept[name];
            for (key, value) in sent_facts.as_object().expect("facts") {
                assert_eq!(&kept_facts[key], value, "{what}: {key}");
            }
            facts_compared += 1;
        }
    }
    assert!(facts_compared >= 20, "{facts_compared} facts compared");
    assert!(errors_compared > 0);
}
