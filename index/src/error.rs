//! The index crate's one error type. Every variant names the problem with typed fields; the
//! node maps it once to an API error code (`IndexError::code`).

use std::path::PathBuf;

/// Errors returned by the index. Bad input never leaves a partial write behind: validation runs
/// before anything is changed, for a batch as a whole.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("vector has {got} dimensions, the collection has {expected}")]
    DimensionMismatch { expected: usize, got: usize },
    #[error("vector is empty")]
    EmptyVector,
    #[error("vector component {position} is {value} (NaN and infinity are not allowed)")]
    NonFiniteVector { position: usize, value: f32 },
    #[error("a cosine collection cannot store the zero vector (it has no direction)")]
    ZeroVector,
    #[error("memory id is empty")]
    EmptyId,
    #[error("{field} is {len} bytes, the limit is {limit}")]
    TooLarge {
        field: &'static str,
        len: usize,
        limit: usize,
    },
    #[error("invalid payload: {0}")]
    InvalidPayload(String),
    #[error("invalid filter: {0}")]
    InvalidFilter(String),
    #[error("invalid search: {0}")]
    InvalidSearch(String),
    #[error("importance must be finite, got {0}")]
    InvalidImportance(f32),
    #[error("collection {0:?} does not exist")]
    UnknownCollection(String),
    #[error("collection {0:?} already exists")]
    CollectionExists(String),
    #[error("invalid collection config: {0}")]
    InvalidConfig(String),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

impl IndexError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        IndexError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        IndexError::Corrupt {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// Whether the error is the caller's fault (bad input) rather than the server's.
    pub fn is_invalid_input(&self) -> bool {
        !matches!(self, IndexError::Io { .. } | IndexError::Corrupt { .. })
    }
}

pub type Result<T, E = IndexError> = std::result::Result<T, E>;
