//! Public API messages ⇄ the index's model, with the validation every request gets before
//! anything is written: a typed error naming the problem, never a half-applied write.

use engram_api::v1;
use engram_api::{ApiError, ErrorCode};
use engram_index::{
    Filter, IndexConfig, Memory, MemoryMeta, Metric, Op, Tier, TierPolicy, TierSelection,
};
use engram_raft::index_error_code;
use serde_json::Value;

use crate::router::Limits;
use crate::wire::{WireHit, WireMemory};

pub fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidArgument, message)
}

fn index_err(e: engram_index::IndexError) -> ApiError {
    ApiError::new(index_error_code(&e), e.to_string())
}

/// Tenant names: 1–128 of `[A-Za-z0-9_.-]`.
pub fn validate_tenant(tenant: &str) -> Result<(), ApiError> {
    let ok = !tenant.is_empty()
        && tenant.len() <= 128
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidArgument,
            format!("tenant {tenant:?} must be 1-128 characters of A-Z a-z 0-9 _ - ."),
        )
        .with("field", "tenant"))
    }
}

pub fn validate_collection_name(name: &str) -> Result<(), ApiError> {
    engram_index::collections::validate_collection_name(name)
        .map_err(|e| invalid(e.to_string()).with("field", "collection"))
}

/// Separates user and id in a memory's id inside a shard: ids are scoped to their user.
const ID_SEP: char = '\u{1f}';

/// The id a memory has inside its shard (user-scoped).
pub fn internal_id(user: &str, id: &str) -> String {
    format!("{user}{ID_SEP}{id}")
}

/// The caller's id of a memory from its shard id.
pub fn external_id(internal: &str) -> &str {
    internal
        .split_once(ID_SEP)
        .map(|(_, id)| id)
        .unwrap_or(internal)
}

pub fn validate_key(what: &str, v: &str, limits: &Limits) -> Result<(), ApiError> {
    if v.is_empty() {
        return Err(invalid(format!("{what} must not be empty")).with("field", what));
    }
    if v.chars().any(char::is_control) {
        return Err(
            invalid(format!("{what} {v:?} contains control characters")).with("field", what)
        );
    }
    if v.len() > limits.max_id_bytes {
        return Err(invalid(format!(
            "{what} is {} bytes; the limit is {}",
            v.len(),
            limits.max_id_bytes
        ))
        .with("field", what));
    }
    Ok(())
}

pub fn metric_from(m: i32) -> Result<Metric, ApiError> {
    match v1::Metric::try_from(m) {
        Ok(v1::Metric::Unspecified) | Ok(v1::Metric::Cosine) => Ok(Metric::Cosine),
        Ok(v1::Metric::Dot) => Ok(Metric::Dot),
        Ok(v1::Metric::L2) => Ok(Metric::L2),
        Err(_) => Err(invalid(format!("unknown metric {m}")).with("field", "metric")),
    }
}

pub fn metric_to(m: Metric) -> v1::Metric {
    match m {
        Metric::Cosine => v1::Metric::Cosine,
        Metric::Dot => v1::Metric::Dot,
        Metric::L2 => v1::Metric::L2,
    }
}

pub fn tier_to(t: Option<Tier>) -> v1::Tier {
    match t {
        Some(Tier::Hot) => v1::Tier::Hot,
        Some(Tier::Warm) => v1::Tier::Warm,
        Some(Tier::Cold) => v1::Tier::Cold,
        None => v1::Tier::Unspecified,
    }
}

/// The index configuration of a new collection.
pub fn collection_config(
    req: &v1::CreateCollectionRequest,
    limits: &Limits,
) -> Result<IndexConfig, ApiError> {
    if req.dimension == 0 || req.dimension > limits.max_dimension {
        return Err(invalid(format!(
            "dimension {} is out of range 1..={}",
            req.dimension, limits.max_dimension
        ))
        .with("field", "dimension"));
    }
    let mut config = IndexConfig::new(req.dimension as usize, metric_from(req.metric)?);
    if let Some(p) = &req.tier_policy {
        let d = TierPolicy::default();
        let secs = |s: u64, default: i64| {
            if s == 0 {
                default
            } else {
                (s as i64).saturating_mul(1000)
            }
        };
        config.policy = TierPolicy {
            hot_max_memories: if p.hot_max_memories == 0 {
                d.hot_max_memories
            } else {
                p.hot_max_memories as usize
            },
            hot_max_age_ms: secs(p.hot_max_age_seconds, d.hot_max_age_ms),
            warm_max_age_ms: secs(p.warm_max_age_seconds, d.warm_max_age_ms),
            promote_on_recall: p.promote_on_recall,
            ..d
        };
    }
    config.limits.max_payload_bytes = limits.max_payload_bytes;
    config.validate().map_err(index_err)?;
    Ok(config)
}

pub fn collection_to(c: &crate::map::CollectionInfo) -> v1::Collection {
    let p = &c.config.policy;
    v1::Collection {
        tenant: c.tenant.clone(),
        name: c.name.clone(),
        dimension: c.config.dimension as u32,
        metric: metric_to(c.config.metric) as i32,
        shards: c.shards.len() as u32,
        tier_policy: Some(v1::TierPolicy {
            hot_max_memories: p.hot_max_memories as u64,
            hot_max_age_seconds: (p.hot_max_age_ms / 1000) as u64,
            warm_max_age_seconds: (p.warm_max_age_ms / 1000) as u64,
            promote_on_recall: p.promote_on_recall,
        }),
        memory_count: 0,
        created_at_ms: c.created_at_ms,
    }
}

fn parse_payload(json: &str, limits: &Limits) -> Result<Value, ApiError> {
    if json.len() > limits.max_payload_bytes {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "payload is {} bytes; the limit is {}",
                json.len(),
                limits.max_payload_bytes
            ),
        )
        .with("field", "payload_json"));
    }
    if json.trim().is_empty() {
        return Ok(Value::Null);
    }
    match serde_json::from_str::<Value>(json) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(ApiError::new(
            ErrorCode::InvalidPayload,
            "payload_json must be a JSON object",
        )
        .with("field", "payload_json")),
        Err(e) => Err(ApiError::new(
            ErrorCode::InvalidPayload,
            format!("payload_json is not valid JSON: {e}"),
        )
        .with("field", "payload_json")),
    }
}

/// A memory to write, validated against its collection.
pub fn memory_from(
    m: &v1::Memory,
    config: &IndexConfig,
    limits: &Limits,
    now_ms: i64,
) -> Result<Memory, ApiError> {
    validate_key("id", &m.id, limits)?;
    validate_key("user", &m.user, limits)?;
    if let Some(t) = &m.text {
        if t.len() > limits.max_text_bytes {
            return Err(ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "memory {:?}: text is {} bytes; the limit is {}",
                    m.id,
                    t.len(),
                    limits.max_text_bytes
                ),
            )
            .with("field", "text"));
        }
    }
    let payload = parse_payload(&m.payload_json, limits).map_err(|e| ApiError {
        message: format!("memory {:?}: {}", m.id, e.message),
        ..e
    })?;
    let created = if m.created_at_ms == 0 {
        now_ms
    } else {
        m.created_at_ms
    };
    let memory = Memory {
        meta: MemoryMeta {
            id: internal_id(&m.user, &m.id),
            user: m.user.clone(),
            payload,
            text: m.text.clone(),
            created_at_ms: created,
            last_accessed_ms: m.last_accessed_ms.max(created),
            importance: m.importance,
        },
        vector: m.vector.clone(),
    };
    config.validate_memory(&memory).map_err(|e| {
        let e = index_err(e);
        ApiError {
            message: format!("memory {:?}: {}", m.id, e.message),
            ..e
        }
    })?;
    Ok(memory)
}

pub fn memory_to(w: WireMemory, include_vector: bool, include_payload: bool) -> v1::Memory {
    let r = w.record;
    v1::Memory {
        id: external_id(&r.id).to_string(),
        user: r.user,
        vector: if include_vector { r.vector } else { Vec::new() },
        payload_json: if include_payload {
            r.payload_json
        } else {
            String::new()
        },
        text: r.text,
        created_at_ms: r.created_at_ms,
        last_accessed_ms: r.last_accessed_ms,
        importance: r.importance,
        tier: tier_to(w.tier) as i32,
    }
}

pub fn hit_to(h: WireHit, include_vector: bool, include_payload: bool) -> v1::ScoredMemory {
    v1::ScoredMemory {
        memory: Some(memory_to(h.memory, include_vector, include_payload)),
        score: h.score,
    }
}

fn json_scalar(s: &str, field: &str) -> Result<Value, ApiError> {
    match serde_json::from_str::<Value>(s) {
        Ok(v) if v.is_string() || v.is_number() || v.is_boolean() => Ok(v),
        Ok(_) => Err(ApiError::new(
            ErrorCode::InvalidFilter,
            format!("condition on {field:?}: values must be JSON strings, numbers or booleans"),
        )),
        Err(e) => Err(ApiError::new(
            ErrorCode::InvalidFilter,
            format!("condition on {field:?}: {s:?} is not JSON ({e}); quote strings, e.g. \"\\\"work\\\"\""),
        )),
    }
}

/// A filter from the API (user scope is added by the caller).
pub fn filter_from(f: Option<&v1::Filter>) -> Result<Filter, ApiError> {
    let mut out = Filter::default();
    let Some(f) = f else {
        return Ok(out);
    };
    for c in &f.must {
        let op = match &c.op {
            Some(v1::condition::Op::EqualsJson(s)) => Op::Eq(json_scalar(s, &c.field)?),
            Some(v1::condition::Op::Range(r)) => Op::Range {
                gte: r.gte,
                lte: r.lte,
            },
            Some(v1::condition::Op::In(set)) => Op::In(
                set.values_json
                    .iter()
                    .map(|s| json_scalar(s, &c.field))
                    .collect::<Result<_, _>>()?,
            ),
            None => {
                return Err(ApiError::new(
                    ErrorCode::InvalidFilter,
                    format!("condition on {:?} has no operator", c.field),
                ))
            }
        };
        out = out.and(c.field.clone(), op);
    }
    out = out.created_between(
        (f.created_after_ms != 0).then_some(f.created_after_ms),
        (f.created_before_ms != 0).then_some(f.created_before_ms),
    );
    out.validate()
        .map_err(|e| ApiError::new(ErrorCode::InvalidFilter, e.to_string()))?;
    Ok(out)
}

pub fn tiers_from(tiers: &[i32]) -> Result<TierSelection, ApiError> {
    if tiers.is_empty() {
        return Ok(TierSelection::Auto);
    }
    let (mut hot, mut warm, mut cold) = (false, false, false);
    for &t in tiers {
        match v1::Tier::try_from(t) {
            Ok(v1::Tier::Hot) => hot = true,
            Ok(v1::Tier::Warm) => warm = true,
            Ok(v1::Tier::Cold) => cold = true,
            _ => return Err(invalid(format!("unknown tier {t}")).with("field", "tiers")),
        }
    }
    Ok(TierSelection::Only { hot, warm, cold })
}
