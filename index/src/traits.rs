//! The index contract every implementation honours: the tiered index, and the exact
//! brute-force oracle the conformance suite checks it against.

use crate::config::IndexConfig;
use crate::error::Result;
use crate::filter::Filter;
use crate::types::{Hit, Memory, SearchRequest};

/// One collection's vectors in one shard.
///
/// Contract:
/// - Every mutating call validates all its input first; on error nothing has changed (a batch
///   is all-or-nothing at validation).
/// - `upsert` replaces a memory with the same id wholesale; within a batch the last one wins.
/// - After a call returns, its effect is visible to every later `get` / `search` on any thread.
/// - `search` returns at most `k` hits, best first, each matching the filter, never a deleted
///   or replaced memory, and never the same id twice. Results are approximate (HNSW) except
///   where the implementation says otherwise.
/// - Cosine vectors are returned normalised (they are stored that way).
pub trait VectorIndex: Send + Sync {
    fn config(&self) -> &IndexConfig;

    fn upsert_batch(&self, memories: Vec<Memory>) -> Result<()>;

    fn upsert(&self, memory: Memory) -> Result<()> {
        self.upsert_batch(vec![memory])
    }

    /// Deletes by id; `Ok(false)` when there was no such memory.
    fn delete(&self, id: &str) -> Result<bool>;

    /// Deletes every memory matching the filter; returns how many.
    fn delete_by_filter(&self, filter: &Filter) -> Result<usize>;

    fn get(&self, id: &str) -> Result<Option<Memory>>;

    fn search(&self, req: &SearchRequest) -> Result<Vec<Hit>>;

    /// Number of live memories.
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
