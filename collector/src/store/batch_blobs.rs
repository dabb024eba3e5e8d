//! How a batch's signed bytes are kept. A host reports much the same evidence every cycle, so each
//! batch is stored as a zstd frame compressed against a dictionary: the start of an earlier batch
//! of the same agent, kept once in `batch_dictionaries`. An hourly repeat then takes tens of
//! bytes instead of kilobytes. Reading gives back exactly the bytes the agent signed, and the
//! signature is checked against those: a changed frame or dictionary reads back as bytes that do
//! not verify (or as no bytes at all), never as silently different evidence.
//!
//! Rows stored before migration 0007 have no dictionary and keep their bytes as they came.

use std::collections::HashMap;
use std::rc::Rc;

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;

/// The longest dictionary: the first this many bytes of the batch it is taken from. zstd finds
/// repeats anywhere in it, and one cycle of a host's evidence is a few kilobytes.
const DICTIONARY_MAX_BYTES: usize = 32 * 1024;
/// A batch at least this long that compresses to more than a quarter of its size against the
/// agent's dictionary (the host changed a lot) becomes the agent's next dictionary.
const RENEW_MIN_BYTES: usize = 512;
const LEVEL: i32 = 3;
/// No stored batch unpacks to more than this (the collector's message limit is far below it):
/// a damaged frame cannot make a reader allocate without bound.
const UNPACKED_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// A batch as it goes into `batches.items`, with the dictionary it was compressed against.
#[derive(Debug)]
pub(super) struct Packed {
    pub blob: Vec<u8>,
    pub dictionary_id: i64,
}

/// The writer's unpacked dictionaries by id, so that packing a batch does not read and unpack
/// its agent's dictionary again (a tenth of the writer's CPU at the maximum ingest rate).
/// `pack` puts every dictionary it inserts here under its new id, so an id that a rolled-back
/// transaction gave out and a later insert reuses maps to the later dictionary's bytes.
#[derive(Debug, Default)]
pub(super) struct PackCache {
    unpacked: HashMap<i64, Vec<u8>>,
}

impl PackCache {
    /// At most this many are kept (a few MiB at typical sizes, 32 MiB at most).
    const KEPT: usize = 1024;

    fn put(&mut self, id: i64, dictionary: Vec<u8>) {
        if self.unpacked.len() >= Self::KEPT {
            self.unpacked.clear();
        }
        self.unpacked.insert(id, dictionary);
    }

    /// Dictionary `id` of `agent_id`, unpacked, from here or from the database.
    fn get(&mut self, conn: &Connection, agent_id: &str, id: i64) -> Result<&[u8], StoreError> {
        if !self.unpacked.contains_key(&id) {
            let content: Vec<u8> = conn
                .prepare_cached("SELECT content FROM batch_dictionaries WHERE id = ?1")?
                .query_row([id], |r| r.get(0))?;
            let dictionary = decompress(&content, &[]).map_err(|e| {
                StoreError::Corrupt(format!("dictionary {id} of agent {agent_id}: {e}"))
            })?;
            self.put(id, dictionary);
        }
        Ok(self.unpacked.get(&id).map_or(&[], Vec::as_slice))
    }
}

/// Compresses `items` (an ItemList as signed) against `agent_id`'s newest dictionary, making a
/// new one from `items` first when there is none yet or when `items` differs too much from it.
/// Runs inside the append transaction, so a dictionary is stored exactly when its first batch is.
pub(super) fn pack(
    conn: &Connection,
    cache: &mut PackCache,
    agent_id: &str,
    items: &[u8],
    now_ms: i64,
) -> Result<Packed, StoreError> {
    let newest: Option<i64> = conn
        .prepare_cached(
            "SELECT id FROM batch_dictionaries WHERE agent_id = ?1 ORDER BY id DESC LIMIT 1",
        )?
        .query_row([agent_id], |r| r.get(0))
        .optional()?;
    if let Some(id) = newest {
        let blob = compress(items, cache.get(conn, agent_id, id)?)?;
        let renew = items.len() >= RENEW_MIN_BYTES && blob.len() * 4 > items.len();
        if !renew {
            return Ok(Packed {
                blob,
                dictionary_id: id,
            });
        }
    }
    let dictionary = &items[..items.len().min(DICTIONARY_MAX_BYTES)];
    conn.prepare_cached(
        "INSERT INTO batch_dictionaries (agent_id, created_at_ms, content) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![agent_id, now_ms, compress(dictionary, &[])?])?;
    let dictionary_id = conn.last_insert_rowid();
    cache.put(dictionary_id, dictionary.to_vec());
    Ok(Packed {
        blob: compress(items, dictionary)?,
        dictionary_id,
    })
}

/// Reads dictionaries for one reader, keeping those it has unpacked (batches of one agent
/// share a few).
#[derive(Debug, Default)]
pub(super) struct Dictionaries {
    unpacked: HashMap<i64, Rc<Vec<u8>>>,
}

impl Dictionaries {
    /// At most this many unpacked dictionaries are kept (a few MiB).
    const KEPT: usize = 512;

    /// The signed bytes of batch `batch_id` (see `unpack`); `None` when there is no such batch.
    pub(super) fn signed_items(
        &mut self,
        conn: &Connection,
        batch_id: i64,
    ) -> Result<Option<Result<Vec<u8>, String>>, StoreError> {
        stored(conn, batch_id)?
            .map(|(blob, dictionary)| self.unpack(conn, blob, dictionary))
            .transpose()
    }

    /// The bytes the agent signed, from `blob` as stored in `batches.items` with its
    /// `items_dictionary`; `Err` says why they cannot be read back (the row was changed).
    pub(super) fn unpack(
        &mut self,
        conn: &Connection,
        blob: Vec<u8>,
        dictionary_id: Option<i64>,
    ) -> Result<Result<Vec<u8>, String>, StoreError> {
        let Some(id) = dictionary_id else {
            return Ok(Ok(blob));
        };
        let dictionary = match self.unpacked.get(&id) {
            Some(dictionary) => Rc::clone(dictionary),
            None => {
                let content: Option<Vec<u8>> = conn
                    .prepare_cached("SELECT content FROM batch_dictionaries WHERE id = ?1")?
                    .query_row([id], |r| r.get(0))
                    .optional()?;
                let Some(content) = content else {
                    return Ok(Err(format!("its dictionary {id} is missing")));
                };
                let dictionary = match decompress(&content, &[]) {
                    Ok(dictionary) => Rc::new(dictionary),
                    Err(e) => return Ok(Err(format!("its dictionary {id} does not unpack: {e}"))),
                };
                if self.unpacked.len() >= Self::KEPT {
                    self.unpacked.clear();
                }
                self.unpacked.insert(id, Rc::clone(&dictionary));
                dictionary
            }
        };
        Ok(decompress(&blob, &dictionary)
            .map_err(|e| format!("its stored bytes do not unpack: {e}")))
    }
}

/// The signed bytes of batch `batch_id` (see `Dictionaries::unpack`); `None` when there is no
/// such batch.
pub(super) fn signed_items(
    conn: &Connection,
    batch_id: i64,
) -> Result<Option<Result<Vec<u8>, String>>, StoreError> {
    Dictionaries::default().signed_items(conn, batch_id)
}

/// A batch's stored blob and the dictionary it was packed against (none before 0007).
type StoredBlob = (Vec<u8>, Option<i64>);

/// Batch `batch_id`'s stored blob.
fn stored(conn: &Connection, batch_id: i64) -> Result<Option<StoredBlob>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT items, items_dictionary FROM batches WHERE id = ?1")?
        .query_row([batch_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

/// Items of stored batches for one reader: a host's newest items mostly share a batch (its
/// last cycle), so the batch it read last is kept split, and dictionaries are kept unpacked.
#[derive(Debug, Default)]
pub(super) struct BatchItems {
    dictionaries: Dictionaries,
    /// The batch read last: its id and its items, or why they cannot be read.
    last: Option<(i64, SplitBatch)>,
}

type SplitBatch = Result<Vec<Vec<u8>>, String>;

impl BatchItems {
    /// Item `index` of batch `batch_id` as signed, or why it cannot be read.
    pub(super) fn item(
        &mut self,
        conn: &Connection,
        batch_id: i64,
        index: i64,
    ) -> Result<Result<Vec<u8>, String>, StoreError> {
        if self.last.as_ref().map(|(id, _)| *id) != Some(batch_id) {
            let items = match stored(conn, batch_id)? {
                None => Err(format!("batch {batch_id}: it is missing")),
                Some((blob, dictionary)) => self
                    .dictionaries
                    .unpack(conn, blob, dictionary)?
                    .map_err(|e| format!("batch {batch_id}: {e}"))
                    .and_then(|batch| {
                        crate::convert::split_item_list(&batch)
                            .map_err(|e| format!("batch {batch_id} does not split into items: {e}"))
                    }),
            };
            self.last = Some((batch_id, items));
        }
        let items = &self.last.as_ref().expect("just filled").1;
        Ok(match items {
            Ok(items) => usize::try_from(index)
                .ok()
                .and_then(|i| items.get(i))
                .cloned()
                .ok_or_else(|| format!("batch {batch_id} has no item {index}")),
            Err(e) => Err(e.clone()),
        })
    }
}

// One compression and one decompression context per thread, reused: creating one costs more
// than the work (a quarter of the evaluator's time went to `ZSTD_createDCtx`). The dictionary
// is loaded as raw content for every frame, which is what a frame packed against a prefix
// needs; loading an empty one clears it.
thread_local! {
    static CCTX: std::cell::RefCell<zstd_safe::CCtx<'static>> =
        std::cell::RefCell::new(zstd_safe::CCtx::create());
    static DCTX: std::cell::RefCell<zstd_safe::DCtx<'static>> =
        std::cell::RefCell::new(zstd_safe::DCtx::create());
}

fn compress(data: &[u8], dictionary: &[u8]) -> Result<Vec<u8>, StoreError> {
    let failed = |code| {
        StoreError::Corrupt(format!(
            "zstd compression failed: {}",
            zstd_safe::get_error_name(code)
        ))
    };
    CCTX.with_borrow_mut(|cctx| {
        cctx.set_parameter(zstd_safe::CParameter::CompressionLevel(LEVEL))
            .map_err(failed)?;
        cctx.load_dictionary(dictionary).map_err(failed)?;
        let mut out = Vec::with_capacity(zstd_safe::compress_bound(data.len()));
        cctx.compress2(&mut out, data).map_err(failed)?;
        Ok(out)
    })
}

fn decompress(frame: &[u8], dictionary: &[u8]) -> Result<Vec<u8>, String> {
    let size = match zstd_safe::get_frame_content_size(frame) {
        Ok(Some(size)) if size <= UNPACKED_MAX_BYTES => size as usize,
        Ok(Some(size)) => return Err(format!("it claims {size} bytes")),
        Ok(None) => return Err("its frame does not say its size".into()),
        Err(_) => return Err("it is not a zstd frame".into()),
    };
    let error = |code| zstd_safe::get_error_name(code).to_owned();
    DCTX.with_borrow_mut(|dctx| {
        // A frame that failed half-way leaves the context mid-frame: start clean.
        dctx.reset(zstd_safe::ResetDirective::SessionOnly)
            .map_err(error)?;
        dctx.load_dictionary(dictionary).map_err(error)?;
        let mut out = Vec::with_capacity(size);
        dctx.decompress(&mut out, frame).map_err(error)?;
        if out.len() != size {
            return Err(format!("it unpacked to {} bytes, not {size}", out.len()));
        }
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, super::super::Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = super::super::Store::open_or_create(&dir.path().join("c.db")).expect("open");
        super::super::enrol_for_test(&store, dir.path(), &crate::model::HostFacts::default());
        (dir, store)
    }

    fn cycle(pending: usize) -> Vec<u8> {
        let mut bytes = b"\x0a\x10inventory-header".to_vec();
        for i in 0..pending {
            bytes.extend_from_slice(format!("package-{i} 1.2.{i}-deb12u1 security;").as_bytes());
        }
        bytes
    }

    #[test]
    fn repeats_take_a_few_bytes_and_read_back_exactly() {
        let (_dir, store) = store();
        let conn = store.writer();
        let first = pack(&conn, &mut PackCache::default(), "agt-1", &cycle(60), 1).expect("pack");
        let again = pack(&conn, &mut PackCache::default(), "agt-1", &cycle(60), 2).expect("pack");
        assert_eq!(first.dictionary_id, again.dictionary_id);
        assert!(again.blob.len() < 40, "{} bytes", again.blob.len());
        let mut dictionaries = Dictionaries::default();
        for packed in [first, again] {
            let back = dictionaries
                .unpack(&conn, packed.blob, Some(packed.dictionary_id))
                .expect("read");
            assert_eq!(back.as_deref(), Ok(cycle(60).as_slice()));
        }
    }

    #[test]
    fn an_id_given_out_again_after_a_rollback_packs_against_the_new_dictionary() {
        let (_dir, store) = store();
        let mut conn = store.writer();
        let mut cache = PackCache::default();
        let tx = conn.transaction().expect("begin");
        let gone = pack(&tx, &mut cache, "agt-1", &cycle(60), 1).expect("pack");
        drop(tx);
        let changed: Vec<u8> = (0..600u32).flat_map(|i| (i * 7919).to_le_bytes()).collect();
        let first = pack(&conn, &mut cache, "agt-1", &changed, 2).expect("pack");
        assert_eq!(
            first.dictionary_id, gone.dictionary_id,
            "SQLite reuses the id"
        );
        // Packed against the cached dictionary: the one stored under that id now.
        let again = pack(&conn, &mut cache, "agt-1", &changed, 3).expect("pack");
        assert_eq!(again.dictionary_id, first.dictionary_id);
        let back = Dictionaries::default()
            .unpack(&conn, again.blob, Some(again.dictionary_id))
            .expect("read");
        assert_eq!(back, Ok(changed));
    }

    #[test]
    fn a_host_that_changed_gets_a_new_dictionary() {
        let (_dir, store) = store();
        let conn = store.writer();
        let first = pack(&conn, &mut PackCache::default(), "agt-1", &cycle(10), 1).expect("pack");
        let changed: Vec<u8> = (0..4000u32)
            .flat_map(|i| (i * 7919).to_le_bytes())
            .collect();
        let second = pack(&conn, &mut PackCache::default(), "agt-1", &changed, 2).expect("pack");
        assert_ne!(first.dictionary_id, second.dictionary_id);
        let back = Dictionaries::default()
            .unpack(&conn, second.blob, Some(second.dictionary_id))
            .expect("read");
        assert_eq!(back, Ok(changed));
    }

    #[test]
    fn damage_is_named_not_unpacked_into_other_bytes() {
        let (_dir, store) = store();
        let conn = store.writer();
        let packed = pack(&conn, &mut PackCache::default(), "agt-1", &cycle(30), 1).expect("pack");
        let mut blob = packed.blob.clone();
        blob.truncate(blob.len() / 2);
        let mut dictionaries = Dictionaries::default();
        let cut = dictionaries
            .unpack(&conn, blob, Some(packed.dictionary_id))
            .expect("read");
        assert!(cut.is_err(), "{cut:?}");
        let missing = dictionaries
            .unpack(&conn, packed.blob.clone(), Some(packed.dictionary_id + 1))
            .expect("read");
        assert_eq!(
            missing,
            Err(format!(
                "its dictionary {} is missing",
                packed.dictionary_id + 1
            ))
        );
        let garbage = dictionaries
            .unpack(&conn, b"not zstd".to_vec(), Some(packed.dictionary_id))
            .expect("read");
        assert_eq!(
            garbage,
            Err("its stored bytes do not unpack: it is not a zstd frame".into())
        );
        // Rows from before compression are their own bytes.
        let old = dictionaries
            .unpack(&conn, b"raw".to_vec(), None)
            .expect("read");
        assert_eq!(old, Ok(b"raw".to_vec()));
    }
}
