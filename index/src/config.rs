//! Per-collection index configuration and the input validation every index runs first.

use serde::{Deserialize, Serialize};

use crate::error::{IndexError, Result};
use crate::types::{Memory, Metric, SearchRequest};

const DAY_MS: i64 = 24 * 3600 * 1000;

/// HNSW graph parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HnswParams {
    /// Links per node on upper layers (layer 0 keeps `2 * m`). 4..=128.
    pub m: usize,
    pub ef_construction: usize,
    /// Default search breadth when a request gives none.
    pub ef_search: usize,
}

impl Default for HnswParams {
    fn default() -> Self {
        HnswParams {
            m: 16,
            ef_construction: 200,
            ef_search: 64,
        }
    }
}

/// Which graph implementation the hot tier uses (see ADR 0003).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HotEngine {
    /// Engram's own HNSW (flat per-node lists, per-list locks). The default.
    #[default]
    Native,
    /// The hnsw_rs crate.
    HnswRs,
}

/// How a warm segment's vectors and graph are held after open (see ADR 0003).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WarmResidency {
    /// Memory-mapped from the file: pages come and go with the page cache; least memory.
    Mapped,
    /// Copied into anonymous (transparent-huge-page) memory at open: fastest search, the
    /// segment's size counts as resident memory. The default.
    #[default]
    Resident,
}

/// How memories age through the tiers (run by [`crate::TieredIndex::maintain`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TierPolicy {
    /// Seal the hot tier into a warm segment once it holds this many memories...
    pub hot_max_memories: usize,
    /// ... or once its oldest memory is older than this.
    pub hot_max_age_ms: i64,
    /// A warm segment whose newest memory is older than this moves to the cold tier.
    pub warm_max_age_ms: i64,
    /// Cap on warm memories; past it the oldest warm segments move to cold. `None` = no cap.
    pub warm_max_memories: Option<usize>,
    /// A cold memory returned by a search is promoted back to hot by the next maintenance pass.
    pub promote_on_recall: bool,
    /// A warm segment with at least this fraction of deleted rows is rebuilt without them.
    pub compact_dead_fraction: f64,
}

impl Default for TierPolicy {
    fn default() -> Self {
        TierPolicy {
            hot_max_memories: 100_000,
            hot_max_age_ms: 30 * DAY_MS,
            warm_max_age_ms: 180 * DAY_MS,
            warm_max_memories: None,
            promote_on_recall: true,
            compact_dead_fraction: 0.3,
        }
    }
}

/// Input limits. Requests past them get a typed error naming the limit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    pub max_id_bytes: usize,
    pub max_user_bytes: usize,
    pub max_payload_bytes: usize,
    pub max_text_bytes: usize,
    pub max_k: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_id_bytes: 512,
            max_user_bytes: 512,
            max_payload_bytes: 64 * 1024,
            max_text_bytes: 64 * 1024,
            max_k: 1_000,
        }
    }
}

/// Largest accepted dimension.
pub const MAX_DIMENSION: usize = 16_384;

/// Everything that shapes one collection's index in one shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexConfig {
    pub dimension: usize,
    pub metric: Metric,
    #[serde(default)]
    pub hnsw: HnswParams,
    #[serde(default)]
    pub hot_engine: HotEngine,
    #[serde(default)]
    pub warm_residency: WarmResidency,
    #[serde(default)]
    pub policy: TierPolicy,
    #[serde(default)]
    pub limits: Limits,
    /// A filtered search whose matching set is known to be at most this large, or a tier
    /// smaller than this, is answered by an exact scan instead of a graph walk.
    #[serde(default = "default_exact_scan_threshold")]
    pub exact_scan_threshold: usize,
    /// Cold tier: candidates re-ranked with full-precision vectors = `k * cold_rerank_factor`.
    #[serde(default = "default_cold_rerank_factor")]
    pub cold_rerank_factor: usize,
}

fn default_exact_scan_threshold() -> usize {
    1_000
}

fn default_cold_rerank_factor() -> usize {
    8
}

impl IndexConfig {
    pub fn new(dimension: usize, metric: Metric) -> Self {
        IndexConfig {
            dimension,
            metric,
            hnsw: HnswParams::default(),
            hot_engine: HotEngine::default(),
            warm_residency: WarmResidency::default(),
            policy: TierPolicy::default(),
            limits: Limits::default(),
            exact_scan_threshold: default_exact_scan_threshold(),
            cold_rerank_factor: default_cold_rerank_factor(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(IndexError::InvalidConfig(m));
        if self.dimension == 0 || self.dimension > MAX_DIMENSION {
            return bad(format!(
                "dimension {} is outside 1..={MAX_DIMENSION}",
                self.dimension
            ));
        }
        if !(4..=128).contains(&self.hnsw.m) {
            return bad(format!("hnsw.m {} is outside 4..=128", self.hnsw.m));
        }
        if self.hnsw.ef_construction < self.hnsw.m || self.hnsw.ef_construction > 4096 {
            return bad(format!(
                "hnsw.ef_construction {} must be in m..=4096",
                self.hnsw.ef_construction
            ));
        }
        if self.hnsw.ef_search == 0 {
            return bad("hnsw.ef_search must be > 0".into());
        }
        if self.policy.hot_max_memories == 0 {
            return bad("policy.hot_max_memories must be > 0".into());
        }
        if !(0.0..=1.0).contains(&self.policy.compact_dead_fraction) {
            return bad("policy.compact_dead_fraction must be in 0..=1".into());
        }
        if self.cold_rerank_factor == 0 {
            return bad("cold_rerank_factor must be > 0".into());
        }
        Ok(())
    }

    /// Checks a memory against the collection: dimension, finite values, sizes, payload shape.
    pub fn validate_memory(&self, m: &Memory) -> Result<()> {
        let meta = &m.meta;
        if meta.id.is_empty() {
            return Err(IndexError::EmptyId);
        }
        let limit = |field, len: usize, limit: usize| {
            if len > limit {
                Err(IndexError::TooLarge { field, len, limit })
            } else {
                Ok(())
            }
        };
        limit("id", meta.id.len(), self.limits.max_id_bytes)?;
        limit("user", meta.user.len(), self.limits.max_user_bytes)?;
        if let Some(t) = &meta.text {
            limit("text", t.len(), self.limits.max_text_bytes)?;
        }
        match &meta.payload {
            serde_json::Value::Null => {}
            serde_json::Value::Object(_) => {
                let len = serde_json::to_vec(&meta.payload)
                    .map(|v| v.len())
                    .unwrap_or(usize::MAX);
                limit("payload", len, self.limits.max_payload_bytes)?;
            }
            other => {
                return Err(IndexError::InvalidPayload(format!(
                    "payload must be a JSON object, got {}",
                    json_kind(other)
                )))
            }
        }
        if !meta.importance.is_finite() {
            return Err(IndexError::InvalidImportance(meta.importance));
        }
        self.validate_vector(&m.vector)
    }

    pub fn validate_vector(&self, v: &[f32]) -> Result<()> {
        if v.is_empty() {
            return Err(IndexError::EmptyVector);
        }
        if v.len() != self.dimension {
            return Err(IndexError::DimensionMismatch {
                expected: self.dimension,
                got: v.len(),
            });
        }
        if let Some((position, &value)) = v.iter().enumerate().find(|(_, x)| !x.is_finite()) {
            return Err(IndexError::NonFiniteVector { position, value });
        }
        if self.metric == Metric::Cosine && v.iter().all(|&x| x == 0.0) {
            return Err(IndexError::ZeroVector);
        }
        Ok(())
    }

    pub fn validate_search(&self, req: &SearchRequest) -> Result<()> {
        self.validate_vector(&req.vector)?;
        if req.k == 0 || req.k > self.limits.max_k {
            return Err(IndexError::InvalidSearch(format!(
                "k is {}, it must be in 1..={}",
                req.k, self.limits.max_k
            )));
        }
        if req.ef == Some(0) {
            return Err(IndexError::InvalidSearch("ef must be > 0".into()));
        }
        req.filter.validate()
    }

    pub(crate) fn ef_for(&self, req: &SearchRequest) -> usize {
        req.ef.unwrap_or(self.hnsw.ef_search).max(req.k)
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a bool",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}
