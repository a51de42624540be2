//! Engram's per-shard vector index: one [`TieredIndex`] per collection per shard.
//!
//! - [`VectorIndex`]: the contract (upsert / delete / get / filtered top-k search), with
//!   [`BruteForce`], the exact oracle every other implementation is tested against.
//! - [`TieredIndex`]: recent memories in a **hot** in-memory HNSW (Engram's native graph, or
//!   hnsw_rs); sealed **warm** segments (immutable HNSW files, loaded or memory-mapped, that
//!   reopen without a rebuild); **cold**
//!   segments (int8-quantised, on disk, scanned on demand and re-ranked exactly). Aging between
//!   them runs in [`TieredIndex::maintain`] / [`MaintenanceWorker`].
//! - [`Collections`]: a shard's collections by name.
//! - [`Filter`]: user scope, payload conditions, created-at range.
//! - [`distance`]: metric conventions and SIMD kernels.
//!
//! Nothing outside this crate sees hnsw_rs: it is one of the two hot-tier engines
//! ([`HotEngine`]); see `docs/adr/0003-hnsw-engine.md` for the measurements behind the default.

pub mod collections;
pub mod config;
pub mod dataset;
pub mod distance;
pub mod error;
pub mod filter;
pub mod oracle;
pub mod tiered;
pub mod traits;
pub mod types;

mod deadset;
mod graph;
mod hot;
mod segment;
mod topk;

pub use collections::Collections;
pub use config::{HnswParams, HotEngine, IndexConfig, Limits, TierPolicy, WarmResidency};
pub use error::{IndexError, Result};
pub use filter::{Condition, Filter, Op};
pub use oracle::BruteForce;
pub use tiered::{MaintenanceReport, MaintenanceWorker, TierStats, TieredIndex};
pub use traits::VectorIndex;
pub use types::{Hit, Memory, MemoryMeta, Metric, SearchRequest, Tier, TierSelection};
