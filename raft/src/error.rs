//! Errors of the replication layer, and the one mapping from index errors to API codes.

use engram_api::ErrorCode;
use engram_index::IndexError;

use crate::types::{GroupId, NodeId, PeerNode};

/// What a caller of [`crate::RaftHost`] can get back.
#[derive(Debug, thiserror::Error)]
pub enum RaftError {
    #[error("group {0} is not hosted on this node")]
    GroupNotHosted(GroupId),
    #[error("group {0} already exists on this node")]
    GroupExists(GroupId),
    #[error("this node is not the leader of group {group}; leader is {leader:?}")]
    NotLeader {
        group: GroupId,
        leader: Option<(NodeId, PeerNode)>,
    },
    #[error("group {group} rejected the write: {message}")]
    Rejected {
        group: GroupId,
        code: ErrorCode,
        message: String,
    },
    #[error("group {group}: membership change refused: {message}")]
    Membership { group: GroupId, message: String },
    #[error("group {group} is shutting down or failed: {message}")]
    Unavailable { group: GroupId, message: String },
    #[error("deadline exceeded after {0:?}")]
    Timeout(std::time::Duration),
    #[error("storage: {0}")]
    Storage(String),
    #[error("index: {0}")]
    Index(#[from] IndexError),
}

impl RaftError {
    /// The stable API code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            RaftError::GroupNotHosted(_) => ErrorCode::ShardUnavailable,
            RaftError::GroupExists(_) => ErrorCode::InvalidArgument,
            RaftError::NotLeader { .. } => ErrorCode::NotLeader,
            RaftError::Rejected { code, .. } => *code,
            RaftError::Membership { .. } => ErrorCode::PlacementImpossible,
            RaftError::Unavailable { .. } => ErrorCode::ShardUnavailable,
            RaftError::Timeout(_) => ErrorCode::DeadlineExceeded,
            RaftError::Storage(_) => ErrorCode::Internal,
            RaftError::Index(e) => index_error_code(e),
        }
    }
}

/// Index error → API error code (the only place this mapping lives).
pub fn index_error_code(e: &IndexError) -> ErrorCode {
    match e {
        IndexError::DimensionMismatch { .. } => ErrorCode::DimensionMismatch,
        IndexError::EmptyVector => ErrorCode::EmptyVector,
        IndexError::NonFiniteVector { .. } => ErrorCode::NonFiniteVector,
        IndexError::ZeroVector => ErrorCode::InvalidArgument,
        IndexError::EmptyId => ErrorCode::InvalidArgument,
        IndexError::TooLarge { .. } => ErrorCode::PayloadTooLarge,
        IndexError::InvalidPayload(_) => ErrorCode::InvalidPayload,
        IndexError::InvalidFilter(_) => ErrorCode::InvalidFilter,
        IndexError::InvalidSearch(_) => ErrorCode::InvalidArgument,
        IndexError::InvalidImportance(_) => ErrorCode::InvalidArgument,
        IndexError::UnknownCollection(_) => ErrorCode::CollectionNotFound,
        IndexError::CollectionExists(_) => ErrorCode::CollectionExists,
        IndexError::InvalidConfig(_) => ErrorCode::InvalidArgument,
        IndexError::Io { .. } | IndexError::Corrupt { .. } => ErrorCode::Internal,
    }
}
