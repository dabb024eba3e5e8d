//! The per-agent hash chain over evidence items.
//!
//! hash(item) = SHA-256( "evident.v1.chain" 0x00
//!                       || prev_hash (32 bytes; all zero for an agent's first item)
//!                       || len(agent_id) as u32 big-endian || agent_id (UTF-8)
//!                       || the item's bytes exactly as they stand in the signed batch )
//!
//! The item bytes carry the sequence, check kind, observation time and payload, so the hash
//! commits to all of them. Anyone who can write the database can recompute this chain; what they
//! cannot recompute is the agent's batch signature, which `verify` checks too.

pub const GENESIS: [u8; 32] = [0; 32];
const CONTEXT: &[u8] = b"evident.v1.chain\0";

pub fn item_hash(prev_hash: &[u8], agent_id: &str, item_bytes: &[u8]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(CONTEXT);
    ctx.update(prev_hash);
    let id_len = u32::try_from(agent_id.len()).unwrap_or(u32::MAX);
    ctx.update(&id_len.to_be_bytes());
    ctx.update(agent_id.as_bytes());
    ctx.update(item_bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_every_input() {
        let base = item_hash(&GENESIS, "agt-1", b"item");
        assert_ne!(base, item_hash(&[1; 32], "agt-1", b"item"));
        assert_ne!(base, item_hash(&GENESIS, "agt-2", b"item"));
        assert_ne!(base, item_hash(&GENESIS, "agt-1", b"itex"));
        // The length prefix keeps the agent id and item bytes apart.
        assert_ne!(
            item_hash(&GENESIS, "ab", b"c"),
            item_hash(&GENESIS, "a", b"bc")
        );
        assert_eq!(base, item_hash(&GENESIS, "agt-1", b"item"));
    }
}
