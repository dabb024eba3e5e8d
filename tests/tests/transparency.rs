//! Signed checkpoints and evidence bundles through the real binaries: checkpoints appear while
//! the collector serves; an auditor's kept checkpoint is proven consistent with a later one
//! offline; removing or rewriting an agent's newest item is caught by the checkpoints although
//! `verify` cannot see a removal; a bundle of a period verifies offline, and a bundle with an
//! altered byte or a removed item names that item.

use std::io::Read;
use std::path::{Path, PathBuf};

use evident_tests::{
    Agent, Collector, ITEMS_PER_CYCLE, Run, attacker, binary, copy_dir, run, wait_for_some,
};
use rusqlite::{Connection, params};
use serde_json::Value;

/// One agent cycle over a recorded Debian host (fast, and the same on every machine).
fn cycle(agent: &Agent) {
    let replay = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../agent/src/checks/patch/testdata/replay-debian12");
    agent
        .run_once_replaying(&replay, &[])
        .expect_ok("run --once --replay");
}

fn collector_cli(args: &[&str]) -> Run {
    run(&binary("evident-collector"), args)
}

fn admin(data_dir: &Path, args: &[&str]) -> Run {
    let mut full = args.to_vec();
    full.extend(["--data-dir", data_dir.to_str().expect("utf-8 path")]);
    collector_cli(&full)
}

fn checkpoints(data_dir: &Path) -> Vec<Value> {
    let out = admin(data_dir, &["checkpoint", "list", "--json"]).expect_ok("checkpoint list");
    serde_json::from_str::<Value>(&out.stdout)
        .expect("JSON")
        .as_array()
        .expect("array")
        .clone()
}

/// Waits until the collector has signed a checkpoint over exactly `rows` rows.
fn wait_for_checkpoint(data_dir: &Path, rows: u64) -> Value {
    wait_for_some(30, &format!("a checkpoint over {rows} rows"), || {
        checkpoints(data_dir)
            .last()
            .filter(|c| c["tree_size"] == rows)
            .cloned()
    })
}

fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).expect("write");
    path.to_owned()
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// The chain hash as ARCHITECTURE.md documents it.
fn chain_hash(prev: &[u8], agent_id: &str, item: &[u8]) -> Vec<u8> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"evident.v1.chain\0");
    ctx.update(prev);
    ctx.update(&(agent_id.len() as u32).to_be_bytes());
    ctx.update(agent_id.as_bytes());
    ctx.update(item);
    ctx.finish().as_ref().to_vec()
}

#[derive(Clone, PartialEq, prost::Message)]
struct RawItemList {
    #[prost(bytes = "vec", repeated, tag = "1")]
    items: Vec<Vec<u8>>,
}

fn split_item_list(bytes: &[u8]) -> Vec<Vec<u8>> {
    <RawItemList as prost::Message>::decode(bytes)
        .expect("ItemList")
        .items
}

/// The newest sequence stored for `agent_id` in a database.
fn newest_sequence(conn: &Connection, agent_id: &str) -> i64 {
    conn.query_row(
        "SELECT MAX(sequence) FROM evidence WHERE agent_id = ?1",
        [agent_id],
        |r| r.get(0),
    )
    .expect("newest")
}

/// As an attacker with write access would: removes the agent's newest item.
fn remove_newest(data_dir: &Path, agent_id: &str) -> i64 {
    let conn = Connection::open(data_dir.join("collector.db")).expect("open db");
    conn.execute_batch("DROP TRIGGER evidence_no_delete;")
        .expect("drop trigger");
    let sequence = newest_sequence(&conn, agent_id);
    conn.execute(
        "DELETE FROM evidence WHERE agent_id = ?1 AND sequence = ?2",
        params![agent_id, sequence],
    )
    .expect("delete");
    sequence
}

/// As an attacker would: changes one byte of the agent's newest item and recomputes its chain
/// hash, so the chain alone looks intact (the item is the newest: nothing links to it).
fn rewrite_newest(data_dir: &Path, agent_id: &str) -> i64 {
    let conn = Connection::open(data_dir.join("collector.db")).expect("open db");
    conn.execute_batch("DROP TRIGGER evidence_no_update; DROP TRIGGER batches_no_update;")
        .expect("drop triggers");
    let sequence = newest_sequence(&conn, agent_id);
    let (batch_id, index, prev): (i64, i64, Vec<u8>) = conn
        .query_row(
            "SELECT batch_id, item_index, prev_hash FROM evidence WHERE agent_id = ?1 AND sequence = ?2",
            params![agent_id, sequence],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("row");
    let blob = attacker::signed_items(&conn, batch_id);
    let mut items = split_item_list(&blob);
    let item = &mut items[index as usize];
    let last = item.len() - 1;
    item[last] ^= 0x01;
    let hash = chain_hash(&prev, agent_id, item);
    let blob = prost::Message::encode_to_vec(&RawItemList { items });
    attacker::replace_items(&conn, batch_id, &blob);
    conn.execute(
        "UPDATE evidence SET hash = ?1 WHERE agent_id = ?2 AND sequence = ?3",
        params![hash, agent_id, sequence],
    )
    .expect("update row");
    sequence
}

fn verify_consistency(old: &Path, new: &Path, proof: &Path, ca: &Path) -> Run {
    collector_cli(&[
        "checkpoint",
        "verify-consistency",
        "--old",
        path_str(old),
        "--new",
        path_str(new),
        "--proof",
        path_str(proof),
        "--ca",
        path_str(ca),
    ])
}

#[test]
fn checkpoints_prove_nothing_was_rewritten_and_catch_what_was() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start_with(
        &tmp.path().join("collector"),
        "127.0.0.1:0",
        &["--checkpoint-interval-secs", "1"],
    );
    let data = collector.data_dir.clone();
    let ca = data.join("tls/ca.pem");
    let (alice, bob) = (
        Agent::new(&tmp.path().join("alice")),
        Agent::new(&tmp.path().join("bob")),
    );
    let alice_id = alice.enroll_with(&collector);
    let bob_id = bob.enroll_with(&collector);
    cycle(&alice);
    cycle(&bob);
    let first_size = 2 * ITEMS_PER_CYCLE as u64;

    // The collector signs a checkpoint by itself; the auditor keeps it.
    let first = wait_for_checkpoint(&data, first_size);
    let kept = write(
        &tmp.path().join("kept.json"),
        &admin(
            &data,
            &["checkpoint", "show", &first["id"].to_string(), "--json"],
        )
        .expect_ok("checkpoint show")
        .stdout,
    );

    // More evidence arrives; a later checkpoint is proven to extend the kept one, offline.
    cycle(&alice);
    let second_size = first_size + ITEMS_PER_CYCLE as u64;
    wait_for_checkpoint(&data, second_size);
    let latest = write(
        &tmp.path().join("latest.json"),
        &admin(&data, &["checkpoint", "show", "--json"])
            .expect_ok("checkpoint show")
            .stdout,
    );
    let proof = write(
        &tmp.path().join("proof.json"),
        &admin(
            &data,
            &["checkpoint", "prove", "--old-size", &first_size.to_string()],
        )
        .expect_ok("checkpoint prove")
        .stdout,
    );
    let ok = verify_consistency(&kept, &latest, &proof, &ca);
    assert!(ok.ok(), "{ok:#?}");
    assert!(
        ok.stdout.contains("nothing it covered was rewritten"),
        "{ok:#?}"
    );

    // A proof does not pass for a checkpoint of another collector.
    let stranger = Collector::start(&tmp.path().join("stranger"));
    let wrong_ca = stranger.data_dir.join("tls/ca.pem");
    let refused = verify_consistency(&kept, &latest, &proof, &wrong_ca);
    assert_eq!(refused.code, Some(1), "{refused:#?}");
    assert!(refused.stdout.contains("fingerprint"), "{refused:#?}");
    drop(stranger);
    let data = collector.stop();

    // 1. The attacker removes Bob's newest item. Every remaining chain and signature holds,
    //    so `verify` passes; the checkpoints do not.
    let removed = tmp.path().join("removed");
    copy_dir(&data, &removed);
    let sequence = remove_newest(&removed, &bob_id);
    let verify = admin(&removed, &["verify"]);
    assert!(
        verify.ok(),
        "verify cannot see a removed newest item: {verify:#?}"
    );
    let prove = admin(
        &removed,
        &["checkpoint", "prove", "--old-size", &first_size.to_string()],
    );
    assert_eq!(prove.code, Some(2), "{prove:#?}");
    let named =
        format!("agent {bob_id} sequence {sequence}, the newest item it covered, was removed");
    assert!(
        prove.stderr.contains("no longer matches checkpoint"),
        "{prove:#?}"
    );
    assert!(prove.stderr.contains(&named), "{prove:#?}");

    //    The attacker also holds the CA key: they drop the stored checkpoints and sign a fresh
    //    one over what is left. The auditor's kept checkpoint still exposes it.
    let conn = Connection::open(removed.join("collector.db")).expect("open db");
    conn.execute_batch("DROP TRIGGER checkpoints_no_delete; DELETE FROM checkpoints;")
        .expect("drop checkpoints");
    drop(conn);
    let forged = write(
        &tmp.path().join("forged.json"),
        &admin(&removed, &["checkpoint", "create", "--json"])
            .expect_ok("checkpoint create")
            .stdout,
    );
    let forged_proof = write(
        &tmp.path().join("forged-proof.json"),
        &admin(
            &removed,
            &["checkpoint", "prove", "--old-size", &first_size.to_string()],
        )
        .expect_ok("prove over the forged history")
        .stdout,
    );
    let caught = verify_consistency(&kept, &forged, &forged_proof, &ca);
    assert_eq!(caught.code, Some(1), "{caught:#?}");
    assert!(caught.stdout.contains("INCONSISTENT"), "{caught:#?}");
    assert!(
        caught.stdout.contains("rewritten or removed"),
        "{caught:#?}"
    );

    // 2. The attacker changes a byte of Bob's newest item and recomputes its chain hash.
    let rewritten = tmp.path().join("rewritten");
    copy_dir(&data, &rewritten);
    let sequence = rewrite_newest(&rewritten, &bob_id);
    let prove = admin(
        &rewritten,
        &["checkpoint", "prove", "--old-size", &first_size.to_string()],
    );
    assert_eq!(prove.code, Some(2), "{prove:#?}");
    assert!(
        prove.stderr.contains(&format!(
            "agent {bob_id} sequence {sequence}, the newest item it covered, was changed"
        )),
        "{prove:#?}"
    );
    let verify = admin(&rewritten, &["verify"]);
    assert_eq!(verify.code, Some(1), "{verify:#?}");
    assert!(
        verify.stdout.contains(&format!("BREAK agent {bob_id}")),
        "{verify:#?}"
    );
    assert!(
        !verify.stdout.contains(&format!("BREAK agent {alice_id}")),
        "Alice's evidence still verifies: {verify:#?}"
    );
}

/// Reads a tar into (path, bytes) in order.
fn untar(path: &Path) -> Vec<(String, Vec<u8>)> {
    let file = std::fs::File::open(path).expect("open bundle");
    let mut archive = tar::Archive::new(file);
    let mut out = Vec::new();
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let name = entry.path().expect("path").to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).expect("read");
        out.push((name, bytes));
    }
    out
}

fn retar(path: &Path, files: &[(String, Vec<u8>)]) {
    let mut builder = tar::Builder::new(std::fs::File::create(path).expect("create"));
    for (name, bytes) in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, name, bytes.as_slice())
            .expect("append");
    }
    builder.finish().expect("finish");
}

fn bundle_verify(bundle: &Path, ca: &Path) -> Run {
    collector_cli(&["bundle", "verify", path_str(bundle), "--ca", path_str(ca)])
}

#[test]
fn a_bundle_verifies_offline_and_names_an_altered_or_missing_item() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(&tmp.path().join("collector"));
    let (alice, bob) = (
        Agent::new(&tmp.path().join("alice")),
        Agent::new(&tmp.path().join("bob")),
    );
    let alice_id = alice.enroll_with(&collector);
    bob.enroll_with(&collector);
    cycle(&alice);
    cycle(&bob);
    cycle(&alice);
    let data = collector.stop();
    // The auditor has nothing but the bundle and the CA certificate.
    let ca = tmp.path().join("ca.pem");
    std::fs::copy(data.join("tls/ca.pem"), &ca).expect("copy CA");

    let today = jiff::Timestamp::now().strftime("%Y-%m-%d").to_string();
    let bundle = tmp.path().join("q4.bundle");
    let export = admin(
        &data,
        &[
            "bundle",
            "export",
            "--from",
            &today,
            "--to",
            &today,
            "--out",
            path_str(&bundle),
        ],
    )
    .expect_ok("bundle export");
    assert!(
        export
            .stdout
            .contains(&format!("{} items", 3 * ITEMS_PER_CYCLE)),
        "{export:#?}"
    );
    let good = bundle_verify(&bundle, &ca);
    assert!(good.ok(), "{good:#?}");
    assert!(good.stdout.starts_with("ok: "), "{good:#?}");
    let files = untar(&bundle);
    for secret in ["ca.key", "server.key", "PRIVATE KEY"] {
        assert!(
            files.iter().all(|(name, bytes)| !name.contains(secret)
                && !bytes.windows(secret.len()).any(|w| w == secret.as_bytes())),
            "no private key in the bundle"
        );
    }
    let items: Vec<Value> = serde_json::from_slice(
        &files
            .iter()
            .find(|(n, _)| n == "items.json")
            .expect("items.json")
            .1,
    )
    .expect("items");

    // One byte of one of Alice's items, inside its signed batch.
    let target = items
        .iter()
        .find(|i| i["agent_id"] == alice_id.as_str() && i["sequence"] == 2)
        .expect("Alice's item 2");
    let batch_path = format!("batches/{}.items", target["batch_id"]);
    let mut altered = files.clone();
    let (_, blob) = altered
        .iter_mut()
        .find(|(n, _)| *n == batch_path)
        .expect("batch");
    let item =
        split_item_list(blob)[target["item_index"].as_u64().expect("index") as usize].clone();
    let at = blob
        .windows(item.len())
        .position(|w| w == item.as_slice())
        .expect("item in batch")
        + item.len() / 2;
    blob[at] ^= 0x20;
    let altered_path = tmp.path().join("altered.bundle");
    retar(&altered_path, &altered);
    let out = bundle_verify(&altered_path, &ca);
    assert_eq!(out.code, Some(1), "{out:#?}");
    let altered_lines: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("ALTERED"))
        .collect();
    assert_eq!(
        altered_lines.len(),
        1,
        "exactly the altered item is named: {out:#?}"
    );
    assert!(
        altered_lines[0].starts_with(&format!("ALTERED agent {alice_id} sequence 2: ")),
        "{out:#?}"
    );
    assert!(!out.stdout.contains("MISSING"), "{out:#?}");

    // One of Alice's items taken out of items.json.
    let mut removed = files.clone();
    let (_, list) = removed
        .iter_mut()
        .find(|(n, _)| n == "items.json")
        .expect("items.json");
    let kept: Vec<&Value> = items
        .iter()
        .filter(|i| !(i["agent_id"] == alice_id.as_str() && i["sequence"] == 6))
        .collect();
    *list = serde_json::to_vec_pretty(&kept).expect("json");
    let removed_path = tmp.path().join("removed.bundle");
    retar(&removed_path, &removed);
    let out = bundle_verify(&removed_path, &ca);
    assert_eq!(out.code, Some(1), "{out:#?}");
    let missing: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("MISSING"))
        .collect();
    assert_eq!(missing.len(), 1, "{out:#?}");
    assert!(
        missing[0].starts_with(&format!("MISSING agent {alice_id} sequence 6: ")),
        "{out:#?}"
    );
    assert!(!out.stdout.contains("ALTERED"), "{out:#?}");

    // Not a bundle at all: a clear error, no panic.
    let junk = write(
        &tmp.path().join("junk.bundle"),
        "this is not a tar file at all",
    );
    let out = bundle_verify(&junk, &ca);
    assert_eq!(out.code, Some(2), "{out:#?}");
    assert!(out.stderr.contains("not an evidence bundle"), "{out:#?}");
    assert!(!out.stderr.contains("panicked"), "{out:#?}");
}
