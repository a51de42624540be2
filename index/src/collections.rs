//! The collections of one shard: name → [`TieredIndex`], each in its own directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::config::IndexConfig;
use crate::error::{IndexError, Result};
use crate::tiered::TieredIndex;

/// A shard's collection indexes, opened from and created under one directory.
pub struct Collections {
    dir: PathBuf,
    indexes: RwLock<BTreeMap<String, Arc<TieredIndex>>>,
}

/// Collection names: 1–64 of `[A-Za-z0-9_-]` (they become directory names).
pub fn validate_collection_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(IndexError::InvalidConfig(format!(
            "collection name {name:?} must be 1-64 characters of A-Z a-z 0-9 _ -"
        )))
    }
}

impl Collections {
    /// Opens every collection found under `dir` (created if missing).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| IndexError::io(&dir, e))?;
        let mut indexes = BTreeMap::new();
        for e in std::fs::read_dir(&dir)
            .map_err(|e| IndexError::io(&dir, e))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().to_string();
            if e.path().join("manifest.json").exists() && validate_collection_name(&name).is_ok() {
                indexes.insert(name, Arc::new(TieredIndex::open(e.path())?));
            }
        }
        Ok(Collections {
            dir,
            indexes: RwLock::new(indexes),
        })
    }

    pub fn create(&self, name: &str, config: IndexConfig) -> Result<Arc<TieredIndex>> {
        validate_collection_name(name)?;
        let mut map = self.indexes.write();
        if map.contains_key(name) {
            return Err(IndexError::CollectionExists(name.to_string()));
        }
        let index = Arc::new(TieredIndex::create(self.dir.join(name), config)?);
        map.insert(name.to_string(), index.clone());
        Ok(index)
    }

    pub fn get(&self, name: &str) -> Result<Arc<TieredIndex>> {
        self.indexes
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| IndexError::UnknownCollection(name.to_string()))
    }

    pub fn list(&self) -> Vec<String> {
        self.indexes.read().keys().cloned().collect()
    }

    /// Drops a collection and deletes its files.
    pub fn drop_collection(&self, name: &str) -> Result<()> {
        let index = self
            .indexes
            .write()
            .remove(name)
            .ok_or_else(|| IndexError::UnknownCollection(name.to_string()))?;
        let dir = index.dir().to_path_buf();
        drop(index);
        std::fs::remove_dir_all(&dir).map_err(|e| IndexError::io(&dir, e))
    }
}
