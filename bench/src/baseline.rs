//! The baseline ingest is measured against: the same rows and indexes written by a bare rusqlite
//! loop in the same run (one transaction per batch, WAL, `synchronous=FULL`), without TLS,
//! gRPC, validation or signature checks.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::params;

/// Inserts `cycle_items` as batches of `cycles_per_batch` cycles, round-robin over `agents`
/// agents, for `duration`; returns items per second.
pub fn raw_insert_loop(
    dir: &Path,
    agents: usize,
    cycle_items: &[(i64, Vec<u8>)],
    item_list: &[u8],
    cycles_per_batch: usize,
    duration: Duration,
) -> anyhow::Result<f64> {
    let path = dir.join("baseline.db");
    // The collector's own schema, indexes and triggers.
    drop(evident_collector::store::Store::open_or_create(&path)?);
    let mut conn = rusqlite::Connection::open(&path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute(
        "INSERT INTO tokens (token_hash, created_at_ms, expires_at_ms, max_uses) VALUES (x'00', 0, 1, 1)",
        [],
    )?;
    let mut heads = Vec::with_capacity(agents);
    for a in 0..agents {
        let id = format!("agt-baseline-{a:06}");
        conn.execute(
            "INSERT INTO agents (agent_id, enrolled_at_ms, token_id, hostname, os_family, os_name,
                                 os_version, architecture, machine_id, agent_version)
             VALUES (?1, 0, 1, ?1, 'linux', 'Debian', '12', 'x86_64', ?1, 'bench')",
            [&id],
        )?;
        conn.execute(
            "INSERT INTO certificates (agent_id, fingerprint, der, not_before_ms, not_after_ms)
             VALUES (?1, ?2, zeroblob(400), 0, 1)",
            params![
                id,
                ring::digest::digest(&ring::digest::SHA256, id.as_bytes()).as_ref()
            ],
        )?;
        heads.push((id, a as i64 + 1, 0u64, vec![0u8; 32]));
    }
    let signature = vec![7u8; 72];
    let started = Instant::now();
    let mut items = 0u64;
    let mut round = 0usize;
    while started.elapsed() < duration {
        let (agent_id, certificate_id, last_sequence, prev_hash) = &mut heads[round % agents];
        round += 1;
        let now = evident_collector::model::now_unix_ms();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO batches (agent_id, certificate_id, received_at_ms, items, signature,
                                  signature_algorithm, agent_clock_skew_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, 1, 0)",
            params![*agent_id, *certificate_id, now, item_list, signature],
        )?;
        let batch_id = tx.last_insert_rowid();
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO evidence (agent_id, sequence, batch_id, item_index, check_kind,
                                       observed_at_ms, received_at_ms, prev_hash, hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            for index in 0..cycle_items.len() * cycles_per_batch {
                let (kind, bytes) = &cycle_items[index % cycle_items.len()];
                *last_sequence += 1;
                let hash = evident_collector::chain::item_hash(prev_hash, agent_id, bytes);
                insert.execute(params![
                    *agent_id,
                    *last_sequence as i64,
                    batch_id,
                    index as i64,
                    kind,
                    now,
                    now,
                    prev_hash.as_slice(),
                    hash.as_slice()
                ])?;
                *prev_hash = hash.to_vec();
                items += 1;
            }
        }
        // The last cycle holds each kind's newest item.
        for (position, (kind, _)) in cycle_items.iter().enumerate() {
            let sequence = *last_sequence - (cycle_items.len() - 1 - position) as u64;
            evident_collector::store::set_kind_head(&tx, agent_id, *kind, sequence, now)?;
        }
        tx.commit()?;
    }
    Ok(items as f64 / started.elapsed().as_secs_f64())
}
