//! Stored bytes per evidence item: many agents append hourly check cycles through the
//! collector's own store (the append path the collector runs, compression included), and the
//! database's growth is divided among the items. A patch item's own cost is the growth with
//! it in every cycle minus the growth without it.

use std::path::Path;

use anyhow::Context as _;
use evident_agent::checks::{CheckKind, Observation};
use evident_collector::store::{BatchToAppend, CertIdentity, ItemToAppend, Store};
use prost::Message as _;

/// Agents appending at once (their batches interleave, as a fleet's do) and cycles each.
const AGENTS: usize = 20;
const CYCLES: usize = 500;
const HOUR_MS: i64 = 3_600_000;

/// One row of the table: what was appended and what it cost.
#[derive(Debug, Clone)]
pub struct Row {
    pub what: &'static str,
    /// The items of one batch as signed (encoded sizes summed).
    pub encoded: usize,
    pub stored: f64,
}

#[derive(Debug, Clone)]
pub struct Figures {
    pub rows: Vec<Row>,
    /// A typical patch item in the batch it is sent in (its check cycle).
    pub typical_patch: f64,
}

pub fn measure(work: &Path, cycle: &[Observation], heavy: &Observation) -> anyhow::Result<Figures> {
    let patch = cycle
        .iter()
        .find(|o| o.check == CheckKind::Patch)
        .context("a patch item")?;
    let others: Vec<&Observation> = cycle
        .iter()
        .filter(|o| o.check != CheckKind::Patch)
        .collect();
    let typical: Vec<&Observation> = cycle.iter().collect();
    let with_heavy: Vec<&Observation> = cycle
        .iter()
        .map(|o| {
            if o.check == CheckKind::Patch {
                heavy
            } else {
                o
            }
        })
        .collect();
    let encoded = |items: &[&Observation]| -> usize {
        items
            .iter()
            .map(|o| evident_agent::convert::evidence_item(1, o).encoded_len())
            .sum()
    };
    let per_batch = |items: &[&Observation]| per_batch(work, items);
    let full = per_batch(&typical)?;
    let without_patch = per_batch(&others)?;
    let heavy_cycle = per_batch(&with_heavy)?;
    let patch_alone = per_batch(&[patch])?;
    let heavy_alone = per_batch(&[heavy])?;
    let typical_patch = full - without_patch;
    Ok(Figures {
        rows: vec![
            Row {
                what: "typical check cycle (4 items in one batch), per item",
                encoded: encoded(&typical) / typical.len(),
                stored: full / typical.len() as f64,
            },
            Row {
                what: "typical patch item, in its cycle's batch (cycle minus cycle without it)",
                encoded: encoded(&[patch]),
                stored: typical_patch,
            },
            Row {
                what: "heavy patch item, in its cycle's batch",
                encoded: encoded(&[heavy]),
                stored: heavy_cycle - without_patch,
            },
            Row {
                what: "typical patch item alone in a batch",
                encoded: encoded(&[patch]),
                stored: patch_alone,
            },
            Row {
                what: "heavy patch item alone in a batch",
                encoded: encoded(&[heavy]),
                stored: heavy_alone,
            },
        ],
        typical_patch,
    })
}

/// The database's growth per batch when `AGENTS` agents each append `CYCLES` batches of
/// `items`, one simulated hour apart.
fn per_batch(work: &Path, items: &[&Observation]) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir_in(work)?;
    let path = dir.path().join("collector.db");
    let store = Store::open_or_create(&path)?;
    let agents = enrol(&store, dir.path(), AGENTS)?;
    let before = used_bytes(&path)?;
    let start_ms = evident_collector::model::now_unix_ms() - CYCLES as i64 * HOUR_MS;
    let mut signature = vec![0u8; 71];
    for cycle in 0..CYCLES {
        let at = start_ms + cycle as i64 * HOUR_MS;
        let batches: Vec<BatchToAppend> = agents
            .iter()
            .map(|_| {
                let first = (cycle * items.len()) as u64 + 1;
                let list = evident_proto::v1::ItemList {
                    items: items
                        .iter()
                        .enumerate()
                        .map(|(i, o)| {
                            let observation = Observation {
                                observed_at_unix_ms: at,
                                ..(*o).clone()
                            };
                            evident_agent::convert::evidence_item(first + i as u64, &observation)
                        })
                        .collect(),
                };
                // An ECDSA signature is as incompressible as this, and as long.
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut signature)
                    .expect("random bytes");
                BatchToAppend {
                    items_bytes: list.encode_to_vec(),
                    signature: signature.clone(),
                    signature_algorithm: 1,
                    items: list
                        .items
                        .iter()
                        .map(|item| ItemToAppend {
                            sequence: item.sequence,
                            check: evident_collector::model::CheckKind::from_number(i64::from(
                                item.check,
                            ))
                            .expect("a check the collector knows"),
                            gap_from: None,
                            observed_at_ms: at,
                            bytes: item.encode_to_vec(),
                        })
                        .collect(),
                    agent_clock_skew_ms: Some(0),
                }
            })
            .collect();
        let group: Vec<(&CertIdentity, &BatchToAppend, i64)> = agents
            .iter()
            .zip(&batches)
            .map(|(agent, batch)| (agent, batch, at + 1_000))
            .collect();
        for result in store.append_batches(&group) {
            result.map_err(|e| anyhow::anyhow!("append: {e}"))?;
        }
    }
    drop(store);
    let after = used_bytes(&path)?;
    Ok((after - before) as f64 / (AGENTS * CYCLES) as f64)
}

/// Bytes of the database in use (pages not on the free list), after a full checkpoint.
fn used_bytes(path: &Path) -> anyhow::Result<u64> {
    let conn = rusqlite::Connection::open(path)?;
    conn.pragma_update(None, "wal_checkpoint", "TRUNCATE")?;
    let pages: i64 = conn.pragma_query_value(None, "page_count", |r| r.get(0))?;
    let page: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
    let free: i64 = conn.pragma_query_value(None, "freelist_count", |r| r.get(0))?;
    Ok(u64::try_from((pages - free) * page).unwrap_or(0))
}

/// Enrols `count` agents directly in `store` under a CA made in `dir`.
fn enrol(store: &Store, dir: &Path, count: usize) -> anyhow::Result<Vec<CertIdentity>> {
    use evident_collector::ca::{CaPaths, CertificateAuthority};
    let ca = CertificateAuthority::load_or_create(&CaPaths::new(dir))?;
    let now = evident_collector::model::now_unix_ms();
    store.create_token(b"bench", now, now + 60_000, u32::try_from(count)?)?;
    let host = evident_collector::model::HostFacts {
        hostname: "bench".into(),
        os_family: "linux".into(),
        ..Default::default()
    };
    (0..count)
        .map(|n| {
            let key = rcgen::KeyPair::generate()?;
            let csr =
                rcgen::CertificateParams::new(Vec::<String>::new())?.serialize_request(&key)?;
            // As long as the ids the collector gives out: `agt-` and 20 hex digits.
            let id = format!("agt-{n:020x}");
            let enrolled = store.enroll(b"bench", now, &host, &id, |id| {
                ca.sign_agent_csr(csr.der(), id, time::Duration::days(1))
            })?;
            let fingerprint = ring::digest::digest(&ring::digest::SHA256, &enrolled.cert.der);
            store
                .certificate_identity(fingerprint.as_ref())?
                .context("the enrolled agent's identity")
        })
        .collect()
}
