//! The `evident.v1` wire contract.
//!
//! The Rust code in `src/gen/` is generated from `evident/v1/*.proto` and checked in, so building
//! needs no `protoc` and no build script. `tests/generated_code_is_fresh.rs` regenerates it with
//! `protox` and fails when it drifts; run it with `EVIDENT_REGENERATE_PROTO=1` to rewrite it.

/// Generated types and gRPC stubs of package `evident.v1`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    include!("gen/evident.v1.rs");
}

/// The domain-separation prefix of a batch signature: the agent signs this, then the item bytes.
pub const BATCH_SIGNATURE_CONTEXT: &[u8] = b"evident.v1.batch\0";

/// The bytes a batch signature covers, for the given encoded `ItemList`.
pub fn batch_signing_input(items: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(BATCH_SIGNATURE_CONTEXT.len() + items.len());
    input.extend_from_slice(BATCH_SIGNATURE_CONTEXT);
    input.extend_from_slice(items);
    input
}
