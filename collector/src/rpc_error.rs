//! The one place where domain errors become gRPC statuses.

use tonic::{Code, Status};

use crate::convert::DecodeError;
use crate::signature::SignatureError;
use crate::store::{AppendError, EnrollError, StoreError};
use crate::token::TokenFormatError;

/// Everything an RPC handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error(transparent)]
    TokenFormat(#[from] TokenFormatError),
    #[error(transparent)]
    Enroll(#[from] EnrollError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Append(#[from] AppendError),
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    InvalidBatch(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<RpcError> for Status {
    fn from(error: RpcError) -> Status {
        let code = match &error {
            RpcError::TokenFormat(_) | RpcError::Decode(_) | RpcError::InvalidBatch(_) => {
                Code::InvalidArgument
            }
            RpcError::Enroll(EnrollError::Csr(crate::ca::CsrError::Signing(_))) => Code::Internal,
            RpcError::Enroll(EnrollError::Csr(_)) => Code::InvalidArgument,
            RpcError::Enroll(EnrollError::TokenUnknown)
            | RpcError::Enroll(EnrollError::TokenExpired(_))
            | RpcError::Enroll(EnrollError::TokenUsedUp(_))
            | RpcError::PermissionDenied(_)
            | RpcError::Append(AppendError::NotActive { .. }) => Code::PermissionDenied,
            RpcError::Append(AppendError::OutOfOrder { .. })
            | RpcError::Append(AppendError::ConflictingResend { .. })
            | RpcError::Append(AppendError::UnexplainedJump { .. }) => Code::FailedPrecondition,
            RpcError::Signature(_) => Code::InvalidArgument,
            RpcError::Unauthenticated(_) => Code::Unauthenticated,
            // A busy or full database is worth a retry; the batch was not acked.
            RpcError::Enroll(EnrollError::Store(_))
            | RpcError::Append(AppendError::Store(_))
            | RpcError::Store(_) => Code::Unavailable,
            RpcError::Internal(_) => Code::Internal,
        };
        Status::new(code, error.to_string())
    }
}
