//! Readers for ANN datasets in TEXMEX format (`*.fvecs`, `*.ivecs`), used by the recall tests
//! and `engram-bench`. Each record is a little-endian `i32` dimension followed by that many
//! `f32` (fvecs) or `i32` (ivecs) values.

use std::path::{Path, PathBuf};

use crate::error::{IndexError, Result};

/// A base set, its queries and the exact neighbours of each query.
pub struct Dataset {
    pub name: String,
    pub dim: usize,
    pub base: Vec<Vec<f32>>,
    pub queries: Vec<Vec<f32>>,
    /// Row numbers in `base` of each query's nearest neighbours, nearest first.
    pub groundtruth: Vec<Vec<u32>>,
}

impl Dataset {
    /// Loads `base.fvecs`, `query.fvecs` and `groundtruth.ivecs` from a directory.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let base = read_fvecs(&dir.join("base.fvecs"))?;
        let queries = read_fvecs(&dir.join("query.fvecs"))?;
        let groundtruth = read_ivecs(&dir.join("groundtruth.ivecs"))?;
        let dim = base.first().map_or(0, Vec::len);
        if queries.iter().any(|q| q.len() != dim) || queries.len() != groundtruth.len() {
            return Err(IndexError::corrupt(
                dir,
                "queries and base / ground truth do not agree",
            ));
        }
        let name = dir
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().to_string());
        Ok(Dataset {
            name,
            dim,
            base,
            queries,
            groundtruth,
        })
    }

    /// Recall@k of `found` (row numbers) for query `q`: |found ∩ truth[..k]| / k.
    pub fn recall(&self, q: usize, found: &[u32], k: usize) -> f64 {
        let truth = &self.groundtruth[q][..k.min(self.groundtruth[q].len())];
        let hits = found.iter().take(k).filter(|r| truth.contains(r)).count();
        hits as f64 / k as f64
    }
}

/// The shared datasets directory: `$ENGRAM_DATASETS`, else `<workspace>/../shared/datasets`.
pub fn shared_datasets_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("ENGRAM_DATASETS") {
        return PathBuf::from(d);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets")
}

pub fn read_fvecs(path: &Path) -> Result<Vec<Vec<f32>>> {
    read_vecs(path, f32::from_le_bytes)
}

pub fn read_ivecs(path: &Path) -> Result<Vec<Vec<u32>>> {
    read_vecs(path, |b| i32::from_le_bytes(b).max(0) as u32)
}

fn read_vecs<T>(path: &Path, conv: impl Fn([u8; 4]) -> T) -> Result<Vec<Vec<T>>> {
    let bytes = std::fs::read(path).map_err(|e| IndexError::io(path, e))?;
    let mut out = Vec::new();
    let mut pos = 0;
    let word = |p: usize| [bytes[p], bytes[p + 1], bytes[p + 2], bytes[p + 3]];
    while pos < bytes.len() {
        if pos + 4 > bytes.len() {
            return Err(IndexError::corrupt(path, "truncated record header"));
        }
        let dim = i32::from_le_bytes(word(pos));
        if dim <= 0 || pos + 4 + dim as usize * 4 > bytes.len() {
            return Err(IndexError::corrupt(
                path,
                format!("bad record at byte {pos}"),
            ));
        }
        let dim = dim as usize;
        out.push((0..dim).map(|i| conv(word(pos + 4 + i * 4))).collect());
        pos += 4 + dim * 4;
    }
    Ok(out)
}
