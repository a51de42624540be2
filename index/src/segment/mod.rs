//! Sealed segments on disk: warm (mapped HNSW) and cold (int8-quantised, read on demand).

pub(crate) mod codec;
pub(crate) mod cold;
pub(crate) mod file;
pub(crate) mod warm;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{IndexError, Result};
use crate::types::Metric;

/// The INFO section of every segment (JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SegmentInfo {
    pub dimension: usize,
    pub metric: Metric,
    pub rows: usize,
    pub oldest_activity_ms: i64,
    pub newest_activity_ms: i64,
    /// Warm only: graph shape.
    #[serde(default)]
    pub m0: usize,
    #[serde(default)]
    pub m: usize,
    #[serde(default)]
    pub entry: u32,
    #[serde(default)]
    pub max_level: u8,
}

impl SegmentInfo {
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| IndexError::corrupt(path, format!("info: {e}")))
    }
}

/// Path of a segment's tombstone file.
pub(crate) fn dead_path(segment: &Path) -> PathBuf {
    segment.with_extension("dead")
}

/// Loads persisted tombstones (none if the file does not exist).
pub(crate) fn load_dead(segment: &Path, rows: usize) -> Result<Vec<u32>> {
    let p = dead_path(segment);
    match std::fs::read(&p) {
        Ok(bytes) => codec::decode_dead(&p, &bytes, rows),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(IndexError::io(p, e)),
    }
}

pub(crate) fn save_dead(segment: &Path, rows: &[u32]) -> Result<()> {
    file::write_atomic(&dead_path(segment), &codec::encode_dead(rows))
}
