//! Stable error codes and their single mapping to gRPC status codes.

use std::collections::HashMap;
use std::fmt;

use prost::Message;

pub use crate::v1::ErrorCode;

impl ErrorCode {
    /// The one gRPC status code each Engram code travels as. Exhaustive on purpose: adding a
    /// code without deciding its status does not compile.
    pub fn grpc_code(self) -> tonic::Code {
        use tonic::Code;
        match self {
            ErrorCode::Unspecified | ErrorCode::Internal => Code::Internal,
            ErrorCode::InvalidArgument
            | ErrorCode::DimensionMismatch
            | ErrorCode::NonFiniteVector
            | ErrorCode::EmptyVector
            | ErrorCode::PayloadTooLarge
            | ErrorCode::BatchTooLarge
            | ErrorCode::InvalidFilter
            | ErrorCode::InvalidPayload => Code::InvalidArgument,
            ErrorCode::TenantNotFound | ErrorCode::CollectionNotFound => Code::NotFound,
            ErrorCode::CollectionExists => Code::AlreadyExists,
            ErrorCode::Unauthenticated => Code::Unauthenticated,
            ErrorCode::PermissionDenied => Code::PermissionDenied,
            ErrorCode::QuotaExceeded | ErrorCode::RateLimited => Code::ResourceExhausted,
            ErrorCode::NotLeader | ErrorCode::StaleEpoch | ErrorCode::ShardUnavailable => {
                Code::Unavailable
            }
            ErrorCode::DeadlineExceeded => Code::DeadlineExceeded,
            ErrorCode::PlacementImpossible => Code::FailedPrecondition,
            ErrorCode::StorageReadOnly => Code::FailedPrecondition,
        }
    }

    /// Whether a client may retry the same request (after refreshing its routing, with backoff).
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::NotLeader
                | ErrorCode::StaleEpoch
                | ErrorCode::ShardUnavailable
                | ErrorCode::DeadlineExceeded
                | ErrorCode::RateLimited
        )
    }
}

/// A typed API error: a stable code, a message naming the problem, and structured metadata
/// (the offending field, a leader hint, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub metadata: HashMap<String, String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            metadata: HashMap::new(),
        }
    }

    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Recovers the typed error from a status produced by [`From<ApiError> for tonic::Status`].
    /// A status from elsewhere (a proxy, a transport failure) maps to the nearest code.
    pub fn from_status(status: &tonic::Status) -> Self {
        if let Ok(detail) = crate::v1::ErrorDetail::decode(status.details()) {
            if let Ok(code) = ErrorCode::try_from(detail.code) {
                if code != ErrorCode::Unspecified {
                    return Self {
                        code,
                        message: detail.message,
                        metadata: detail.metadata,
                    };
                }
            }
        }
        let code = match status.code() {
            tonic::Code::InvalidArgument => ErrorCode::InvalidArgument,
            tonic::Code::NotFound => ErrorCode::CollectionNotFound,
            tonic::Code::AlreadyExists => ErrorCode::CollectionExists,
            tonic::Code::Unauthenticated => ErrorCode::Unauthenticated,
            tonic::Code::PermissionDenied => ErrorCode::PermissionDenied,
            tonic::Code::ResourceExhausted => ErrorCode::QuotaExceeded,
            tonic::Code::Unavailable => ErrorCode::ShardUnavailable,
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => ErrorCode::DeadlineExceeded,
            _ => ErrorCode::Internal,
        };
        Self::new(code, status.message().to_string())
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str_name(), self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<ApiError> for tonic::Status {
    fn from(err: ApiError) -> Self {
        let detail = crate::v1::ErrorDetail {
            code: err.code as i32,
            message: err.message.clone(),
            metadata: err.metadata,
        };
        tonic::Status::with_details(
            err.code.grpc_code(),
            err.message,
            detail.encode_to_vec().into(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trip_keeps_code_message_and_metadata() {
        let err = ApiError::new(
            ErrorCode::DimensionMismatch,
            "vector has 3 dims, collection has 50",
        )
        .with("field", "vector");
        let status: tonic::Status = err.clone().into();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(ApiError::from_status(&status), err);
    }

    #[test]
    fn foreign_status_maps_to_nearest_code() {
        let status = tonic::Status::unavailable("connection refused");
        let err = ApiError::from_status(&status);
        assert_eq!(err.code, ErrorCode::ShardUnavailable);
        assert!(err.code.is_retryable());
        assert!(!ErrorCode::DimensionMismatch.is_retryable());
    }

    #[test]
    fn codes_are_stable() {
        // Renumbering a code breaks every deployed client: these numbers are the contract.
        assert_eq!(ErrorCode::DimensionMismatch as i32, 2);
        assert_eq!(ErrorCode::CollectionNotFound as i32, 21);
        assert_eq!(ErrorCode::QuotaExceeded as i32, 40);
        assert_eq!(ErrorCode::NotLeader as i32, 50);
        assert_eq!(ErrorCode::Internal as i32, 61);
    }
}
