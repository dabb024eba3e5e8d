//! Changing stored evidence is caught by `verify`: a changed row by the hash chain or by its
//! signed item, and a changed item whose chain was recomputed by the agent's signature.

use std::path::Path;

use evident_tests::{Agent, Collector, ITEMS_PER_CYCLE, attacker, binary, copy_dir, run};
use rusqlite::{Connection, params};

/// The chain hash as ARCHITECTURE.md documents it, written independently of the collector.
fn chain_hash(prev: &[u8], agent_id: &str, item: &[u8]) -> Vec<u8> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"evident.v1.chain\0");
    ctx.update(prev);
    ctx.update(&(agent_id.len() as u32).to_be_bytes());
    ctx.update(agent_id.as_bytes());
    ctx.update(item);
    ctx.finish().as_ref().to_vec()
}

fn verify(data_dir: &Path) -> evident_tests::Run {
    run(
        &binary("evident-collector"),
        &["verify", "--data-dir", data_dir.to_str().expect("path")],
    )
}

/// Opens a copy of the database as an attacker would, dropping the append-only triggers.
fn open_as_attacker(data_dir: &Path) -> Connection {
    let conn = Connection::open(data_dir.join("collector.db")).expect("open db");
    conn.execute_batch("DROP TRIGGER evidence_no_update; DROP TRIGGER batches_no_update;")
        .expect("drop triggers");
    conn
}

/// The batch that holds the agent's item with `sequence`.
fn batch_of(conn: &Connection, agent_id: &str, sequence: i64) -> i64 {
    conn.query_row(
        "SELECT batch_id FROM evidence WHERE agent_id = ?1 AND sequence = ?2",
        params![agent_id, sequence],
        |r| r.get(0),
    )
    .expect("row")
}

/// Changes one byte of the hostname inside the signed item with `sequence`; returns the batch id.
fn rewrite_hostname(conn: &Connection, agent_id: &str, sequence: i64, hostname: &str) -> i64 {
    let batch_id = batch_of(conn, agent_id, sequence);
    let mut items = attacker::signed_items(conn, batch_id);
    let at = items
        .windows(hostname.len())
        .position(|w| w == hostname.as_bytes())
        .expect("hostname in the signed item");
    items[at] = if items[at] == b'X' { b'Y' } else { b'X' };
    attacker::replace_items(conn, batch_id, &items);
    batch_id
}

/// Recomputes the chain from `from_sequence` on, so that the chain alone looks intact.
fn rehash_from(conn: &Connection, agent_id: &str, from_sequence: i64) {
    let mut prev: Vec<u8> = conn
        .query_row(
            "SELECT prev_hash FROM evidence WHERE agent_id = ?1 AND sequence = ?2",
            params![agent_id, from_sequence],
            |r| r.get(0),
        )
        .expect("row");
    let rows: Vec<(i64, i64, i64)> = conn
        .prepare(
            "SELECT sequence, batch_id, item_index FROM evidence
             WHERE agent_id = ?1 AND sequence >= ?2 ORDER BY sequence",
        )
        .expect("prepare")
        .query_map(params![agent_id, from_sequence], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    for (sequence, batch_id, index) in rows {
        let items = attacker::signed_items(conn, batch_id);
        let item = split_item_list(&items).remove(index as usize);
        let hash = chain_hash(&prev, agent_id, &item);
        conn.execute(
            "UPDATE evidence SET prev_hash = ?1, hash = ?2 WHERE agent_id = ?3 AND sequence = ?4",
            params![prev, hash, agent_id, sequence],
        )
        .expect("update row");
        prev = hash;
    }
}

/// The raw bytes of each item of an encoded ItemList.
fn split_item_list(bytes: &[u8]) -> Vec<Vec<u8>> {
    #[derive(Clone, PartialEq, prost::Message)]
    struct Raw {
        #[prost(bytes = "vec", repeated, tag = "1")]
        items: Vec<Vec<u8>>,
    }
    <Raw as prost::Message>::decode(bytes)
        .expect("ItemList")
        .items
}

#[test]
fn verify_names_the_agent_and_sequence_of_every_kind_of_tampering() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(&tmp.path().join("collector"));
    let agent = Agent::new(&tmp.path().join("agent"));
    let agent_id = agent.enroll_with(&collector);
    // Each cycle stores one item per check, inventory first: the attacker edits the second
    // cycle's inventory item, which carries the hostname.
    for _ in 0..3 {
        agent.run_once().expect_ok("run --once");
    }
    let target = ITEMS_PER_CYCLE as i64 + 1;
    let hostname =
        collector.evidence(None)[ITEMS_PER_CYCLE]["item"]["outcome"]["inventory"]["hostname"]
            .as_str()
            .expect("hostname")
            .to_owned();
    let data = collector.stop();
    let intact = verify(&data);
    assert!(intact.ok(), "{intact:?}");
    let copy = |name: &str| {
        let dir = tmp.path().join(name);
        copy_dir(&data, &dir);
        dir
    };
    let expect_break = |dir: &Path, needle: &str| -> String {
        let out = verify(dir);
        assert_eq!(out.code, Some(1), "{out:?}");
        let line = format!("BREAK agent {agent_id} sequence {target}: ");
        assert!(out.stdout.contains(&line), "expected {line:?} in {out:?}");
        assert!(
            out.stdout.contains(needle),
            "expected {needle:?} in {out:?}"
        );
        out.stdout
    };

    // 1. A column of a row changed: it no longer matches the item the agent signed.
    let dir = copy("row-changed");
    open_as_attacker(&dir)
        .execute(
            "UPDATE evidence SET observed_at_ms = observed_at_ms - 86400000 WHERE sequence = ?1",
            [target],
        )
        .expect("update");
    expect_break(&dir, "observed_at_ms");

    // 2. The item itself changed, chain left alone: the stored hash no longer matches.
    let dir = copy("item-changed");
    rewrite_hostname(&open_as_attacker(&dir), &agent_id, target, &hostname);
    expect_break(&dir, "differs from the hash of its signed item");

    // 3. The item changed and every hash after it recomputed: the chain is consistent again,
    //    and only the agent's signature shows the change.
    let dir = copy("item-changed-and-rehashed");
    let conn = open_as_attacker(&dir);
    rewrite_hostname(&conn, &agent_id, target, &hostname);
    rehash_from(&conn, &agent_id, target);
    drop(conn);
    let out = expect_break(&dir, "signature does not match");
    assert!(
        !out.contains("differs from the hash"),
        "the chain itself was made consistent: {out}"
    );

    // 4. The stored (compressed) bytes themselves damaged, or pointed at another agent's
    //    dictionary: they cannot be read back, and verify says which batch, never reading
    //    them as other evidence.
    for (name, damage) in [
        (
            "frame-damaged",
            "UPDATE batches SET items = substr(items, 1, length(items) / 2) WHERE id = ?1",
        ),
        (
            "dictionary-swapped",
            "UPDATE batches SET items_dictionary = items_dictionary + 1000 WHERE id = ?1",
        ),
    ] {
        let dir = copy(name);
        let conn = open_as_attacker(&dir);
        let batch_id = batch_of(&conn, &agent_id, target);
        conn.execute_batch("PRAGMA foreign_keys = OFF;")
            .expect("pragma");
        conn.execute(damage, [batch_id]).expect("damage");
        drop(conn);
        expect_break(&dir, &format!("batch {batch_id} cannot be read back"));
    }

    // 5. A kind's head set back to an older item: evaluation would judge the host on it, so
    //    verify names the newest item the head should name.
    let dir = copy("kind-head-set-back");
    open_as_attacker(&dir)
        .execute(
            "UPDATE evidence_kind_heads SET sequence = ?1
             WHERE agent_id = ?2 AND check_kind = (SELECT check_kind FROM evidence WHERE sequence = ?1)",
            params![target, agent_id],
        )
        .expect("update");
    let out = verify(&dir);
    assert_eq!(out.code, Some(1), "{out:?}");
    let line = format!(
        "BREAK agent {agent_id} sequence {}: the head of check kind",
        target + ITEMS_PER_CYCLE as i64
    );
    assert!(out.stdout.contains(&line), "expected {line:?} in {out:?}");
    assert!(
        out.stdout.contains("evidence_kind_heads was changed"),
        "{out:?}"
    );

    // 6. A row deleted from the middle: the next row's prev_hash no longer links up.
    let dir = copy("row-deleted");
    let conn = open_as_attacker(&dir);
    conn.execute_batch("DROP TRIGGER evidence_no_delete;")
        .expect("drop trigger");
    conn.execute("DELETE FROM evidence WHERE sequence = ?1", [target])
        .expect("delete");
    drop(conn);
    let out = verify(&dir);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stdout.contains(&format!(
            "BREAK agent {agent_id} sequence {}: prev_hash",
            target + 1
        )),
        "{out:?}"
    );
}
