//! What an attacker with write access to the collector's database does to a batch, written
//! from the documented storage format (migration 0007) rather than with the collector's own
//! code: read the bytes the agent signed, and put changed bytes back.

use rusqlite::{Connection, OptionalExtension, params};

/// The ItemList batch `batch_id` holds, as the agent signed it.
pub fn signed_items(conn: &Connection, batch_id: i64) -> Vec<u8> {
    let (blob, dictionary): (Vec<u8>, Option<i64>) = conn
        .query_row(
            "SELECT items, items_dictionary FROM batches WHERE id = ?1",
            [batch_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("batch row");
    let Some(dictionary) = dictionary else {
        return blob;
    };
    let content: Vec<u8> = conn
        .query_row(
            "SELECT content FROM batch_dictionaries WHERE id = ?1",
            [dictionary],
            |r| r.get(0),
        )
        .optional()
        .expect("dictionary row")
        .expect("the batch's dictionary");
    unpack(&blob, &unpack(&content, &[]))
}

/// Stores `items` as batch `batch_id`'s bytes, uncompressed (as rows from before compression
/// are), after dropping the append-only trigger that would refuse it.
pub fn replace_items(conn: &Connection, batch_id: i64, items: &[u8]) {
    conn.execute_batch("DROP TRIGGER IF EXISTS batches_no_update;")
        .expect("drop trigger");
    conn.execute(
        "UPDATE batches SET items = ?1, items_dictionary = NULL WHERE id = ?2",
        params![items, batch_id],
    )
    .expect("update batch");
}

fn unpack(frame: &[u8], prefix: &[u8]) -> Vec<u8> {
    let size = zstd_safe::get_frame_content_size(frame)
        .expect("a zstd frame")
        .expect("its size");
    let mut dctx = zstd_safe::DCtx::create();
    if !prefix.is_empty() {
        dctx.ref_prefix(prefix).expect("prefix");
    }
    let mut out = Vec::with_capacity(size as usize);
    dctx.decompress(&mut out, frame).expect("decompress");
    out
}
