//! Signed checkpoints and proofs over the API, in the JSON the CLI prints (`checkpoint show
//! --json`, `checkpoint prove`), so what a script fetches is what an auditor keeps and checks
//! offline with `evident-collector checkpoint verify-consistency`.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::ApiError;
use super::auth::{Caller, Params, Segments};
use crate::transparency::checkpoint::CheckpointJson;
use crate::transparency::{self, ConsistencyProof, InclusionProof, TransparencyError};
use crate::web::AppState;

/// A transparency error as the caller should hear it: rows that no longer hash to what the
/// collector signed are a conflict naming the change, not a failure of the collector.
fn answer(e: TransparencyError) -> ApiError {
    match e {
        e @ TransparencyError::Diverged { .. } => ApiError::Conflict(e.to_string()),
        e @ TransparencyError::NoCheckpoint => ApiError::NotFound(e.to_string()),
        e @ TransparencyError::TooLarge { .. } => ApiError::BadRequest(e.to_string()),
        TransparencyError::NotFound(why) => ApiError::NotFound(why),
        e @ (TransparencyError::Store(_)
        | TransparencyError::Signing(_)
        | TransparencyError::BadCheckpoint { .. }) => ApiError::Internal(e.to_string()),
    }
}

/// Every checkpoint, newest first.
pub(super) async fn list(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<Json<Vec<CheckpointJson>>, ApiError> {
    let all = state
        .db(|store| Ok(transparency::list_checkpoints(store)))
        .await?
        .map_err(answer)?;
    Ok(Json(all.iter().rev().map(|c| c.to_json()).collect()))
}

pub(super) async fn latest(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<Json<CheckpointJson>, ApiError> {
    state
        .db(|store| Ok(transparency::latest_checkpoint(store)))
        .await?
        .map_err(answer)?
        .map(|c| Json(c.to_json()))
        .ok_or_else(|| answer(TransparencyError::NoCheckpoint))
}

#[derive(Debug, Deserialize)]
pub(super) struct ConsistencyQuery {
    old_size: Option<u64>,
    new_size: Option<u64>,
}

pub(super) async fn consistency(
    State(state): State<AppState>,
    _caller: Caller,
    Params(query): Params<ConsistencyQuery>,
) -> Result<Json<ConsistencyProof>, ApiError> {
    let old_size = query.old_size.ok_or_else(|| {
        ApiError::BadRequest(
            "give old_size, the tree_size of the checkpoint you kept (and new_size, default the latest checkpoint's)"
                .to_owned(),
        )
    })?;
    if query.new_size.is_some_and(|new| new < old_size) {
        return Err(ApiError::BadRequest(format!(
            "new_size is smaller than old_size {old_size}: give the older checkpoint's size as old_size"
        )));
    }
    let new_size = query.new_size;
    let proof = state
        .db(move |store| Ok(transparency::consistency_proof(store, old_size, new_size)))
        .await?
        .map_err(|e| match e {
            // The tree's own refusals (size 0, old beyond new) are the caller's to fix.
            TransparencyError::NotFound(why) => {
                ApiError::BadRequest(format!("old_size {old_size}: {why}"))
            }
            e => answer(e),
        })?;
    Ok(Json(proof))
}

/// An evidence item's inclusion proof and the checkpoint it proves against.
#[derive(Debug, Serialize)]
pub struct Inclusion {
    pub checkpoint: CheckpointJson,
    pub inclusion: InclusionProof,
}

pub(super) async fn inclusion(
    State(state): State<AppState>,
    _caller: Caller,
    Segments((agent_id, sequence)): Segments<(String, u64)>,
) -> Result<Json<Inclusion>, ApiError> {
    let (checkpoint, inclusion) = state
        .db(move |store| Ok(transparency::inclusion_proof(store, &agent_id, sequence)))
        .await?
        .map_err(|e| match e {
            TransparencyError::NotFound(why) => ApiError::NotFound(format!(
                "{why}: the collector signs a checkpoint every checkpoint_interval_secs; ask again after the next one"
            )),
            e => answer(e),
        })?;
    Ok(Json(Inclusion {
        checkpoint: checkpoint.to_json(),
        inclusion,
    }))
}
