//! The data model the index stores and answers with.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::filter::Filter;

/// How similarity is measured in a collection. Fixed at creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Vectors are normalised once on write (and queries on search); then dot product.
    Cosine,
    /// Raw inner product (maximum inner product search).
    Dot,
    /// Euclidean distance.
    L2,
}

/// Where a memory lives inside a shard's index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Mutable in-memory HNSW: recent writes.
    Hot,
    /// Sealed, immutable, memory-mapped HNSW segments.
    Warm,
    /// int8-quantised segments on disk, not resident; exact re-rank from disk.
    Cold,
}

/// A memory's metadata: everything but the vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryMeta {
    /// External id, unique within the collection.
    pub id: String,
    /// The end user the memory belongs to.
    pub user: String,
    /// A JSON object (`Value::Object`), or `Value::Null` for none.
    pub payload: Value,
    pub text: Option<String>,
    pub created_at_ms: i64,
    pub last_accessed_ms: i64,
    pub importance: f32,
}

/// One memory: metadata plus its embedding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    #[serde(flatten)]
    pub meta: MemoryMeta,
    pub vector: Vec<f32>,
}

impl Memory {
    /// A memory with an empty payload, no text, importance 0 and both timestamps `created_at_ms`.
    pub fn new(
        id: impl Into<String>,
        user: impl Into<String>,
        vector: Vec<f32>,
        created_at_ms: i64,
    ) -> Self {
        Memory {
            meta: MemoryMeta {
                id: id.into(),
                user: user.into(),
                payload: Value::Null,
                text: None,
                created_at_ms,
                last_accessed_ms: created_at_ms,
                importance: 0.0,
            },
            vector,
        }
    }

    pub fn with_payload(mut self, payload: Value) -> Self {
        self.meta.payload = payload;
        self
    }

    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.meta.text = Some(text.into());
        self
    }

    pub fn id(&self) -> &str {
        &self.meta.id
    }
}

/// Which tiers a search reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum TierSelection {
    /// Hot and warm; cold too when fewer than `k` results pass the filters.
    #[default]
    Auto,
    /// Exactly these tiers.
    Only { hot: bool, warm: bool, cold: bool },
}

impl TierSelection {
    pub fn only(tier: Tier) -> Self {
        TierSelection::Only {
            hot: tier == Tier::Hot,
            warm: tier == Tier::Warm,
            cold: tier == Tier::Cold,
        }
    }

    pub fn all() -> Self {
        TierSelection::Only {
            hot: true,
            warm: true,
            cold: true,
        }
    }

    pub(crate) fn includes(self, tier: Tier) -> bool {
        match self {
            TierSelection::Auto => tier != Tier::Cold,
            TierSelection::Only { hot, warm, cold } => match tier {
                Tier::Hot => hot,
                Tier::Warm => warm,
                Tier::Cold => cold,
            },
        }
    }
}

/// A recall query against one shard's index of one collection.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchRequest {
    pub vector: Vec<f32>,
    pub k: usize,
    /// User scope, payload conditions and time range; `Filter::default()` = the whole index.
    pub filter: Filter,
    pub tiers: TierSelection,
    /// Search breadth; `None` = the collection's default. Raised to `k` when smaller. HNSW
    /// tiers: the candidate list of the graph walk. Cold tier: how many candidates of the
    /// quantised scan are re-ranked with full-precision vectors (default `k × cold_rerank_factor`).
    pub ef: Option<usize>,
}

impl SearchRequest {
    pub fn new(vector: Vec<f32>, k: usize) -> Self {
        SearchRequest {
            vector,
            k,
            filter: Filter::default(),
            tiers: TierSelection::Auto,
            ef: None,
        }
    }

    pub fn with_filter(mut self, filter: Filter) -> Self {
        self.filter = filter;
        self
    }

    pub fn with_tiers(mut self, tiers: TierSelection) -> Self {
        self.tiers = tiers;
        self
    }

    pub fn with_ef(mut self, ef: usize) -> Self {
        self.ef = Some(ef);
        self
    }
}

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub meta: Arc<MemoryMeta>,
    /// Higher is better for every metric: cosine similarity, dot product, or −euclidean distance.
    pub score: f32,
    pub tier: Tier,
}

impl Hit {
    pub fn id(&self) -> &str {
        &self.meta.id
    }
}

/// When a memory was last active: written or recalled. Tiering ages memories by this.
pub fn activity(meta: &MemoryMeta) -> i64 {
    meta.created_at_ms.max(meta.last_accessed_ms)
}
