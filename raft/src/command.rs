//! What a shard's Raft log carries ([`ShardRequest`]) and what applying it answers
//! ([`ShardResponse`]).
//!
//! Every field that the state machine acts on is in the entry, including the leader's clock
//! (`proposed_at_ms`), so applying an entry is deterministic on every replica: the same log
//! gives the same records, the same index and the same idempotency answers everywhere.
//!
//! Entries are encoded with postcard (compact, no field names); the few values that are free
//! JSON (payloads, filters, index configs) travel as JSON text inside it.

use engram_api::ErrorCode;
use engram_index::{Filter, IndexConfig, Memory, MemoryMeta};
use serde::{Deserialize, Serialize};

/// One proposal to a shard group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardRequest {
    /// A retried request with the same key (within the idempotency window) returns the first
    /// answer and writes nothing.
    pub idempotency_key: Option<String>,
    /// Leader wall clock at proposal; used for deterministic expiry of idempotency keys.
    pub proposed_at_ms: i64,
    pub command: Command,
}

impl ShardRequest {
    pub fn new(command: Command) -> Self {
        ShardRequest {
            idempotency_key: None,
            proposed_at_ms: now_ms(),
            command,
        }
    }

    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
}

/// The state changes a shard replicates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    CreateCollection {
        name: String,
        /// `IndexConfig` as JSON.
        config_json: String,
    },
    DropCollection {
        name: String,
    },
    /// Upsert a batch (all or nothing).
    Upsert {
        collection: String,
        records: Vec<Record>,
    },
    Delete {
        collection: String,
        ids: Vec<String>,
    },
    DeleteByFilter {
        collection: String,
        /// `Filter` as JSON.
        filter_json: String,
    },
    /// A no-op write: used to measure the replication path without index cost, and by reads
    /// that need a fresh commit.
    /// Compare-and-set of one key of the group's small versioned key-value space (the
    /// placement driver keeps the cluster map here). `expect_version`: `None` = write
    /// unconditionally, `Some(0)` = only if absent, `Some(v)` = only if the key is at version
    /// `v`. The new version is the entry's log index. A mismatch is rejected with
    /// `STALE_EPOCH` and writes nothing.
    KvCas {
        key: String,
        expect_version: Option<u64>,
        value: Vec<u8>,
    },
    Noop,
}

impl Command {
    pub fn create_collection(name: impl Into<String>, config: &IndexConfig) -> Self {
        Command::CreateCollection {
            name: name.into(),
            config_json: serde_json::to_string(config).unwrap_or_default(),
        }
    }

    pub fn upsert(collection: impl Into<String>, memories: Vec<Memory>) -> Self {
        Command::Upsert {
            collection: collection.into(),
            records: memories.into_iter().map(Record::from).collect(),
        }
    }

    pub fn delete_by_filter(collection: impl Into<String>, filter: &Filter) -> Self {
        Command::DeleteByFilter {
            collection: collection.into(),
            filter_json: serde_json::to_string(filter).unwrap_or_default(),
        }
    }
}

/// A memory as stored in the shard's records and carried in the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub user: String,
    /// JSON object text, or empty for none.
    pub payload_json: String,
    pub text: Option<String>,
    pub created_at_ms: i64,
    pub last_accessed_ms: i64,
    pub importance: f32,
    pub vector: Vec<f32>,
}

impl From<Memory> for Record {
    fn from(m: Memory) -> Self {
        let payload_json = if m.meta.payload.is_null() {
            String::new()
        } else {
            m.meta.payload.to_string()
        };
        Record {
            id: m.meta.id,
            user: m.meta.user,
            payload_json,
            text: m.meta.text,
            created_at_ms: m.meta.created_at_ms,
            last_accessed_ms: m.meta.last_accessed_ms,
            importance: m.meta.importance,
            vector: m.vector,
        }
    }
}

impl Record {
    /// The index's view of this record. A payload that is not JSON is an error the caller
    /// reports (it cannot come from a validated request).
    pub fn to_memory(&self) -> Result<Memory, serde_json::Error> {
        let payload = if self.payload_json.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&self.payload_json)?
        };
        Ok(Memory {
            meta: MemoryMeta {
                id: self.id.clone(),
                user: self.user.clone(),
                payload,
                text: self.text.clone(),
                created_at_ms: self.created_at_ms,
                last_accessed_ms: self.last_accessed_ms,
                importance: self.importance,
            },
            vector: self.vector.clone(),
        })
    }
}

/// The answer to one applied entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShardResponse {
    /// Log index the entry was applied at.
    pub index: u64,
    pub outcome: Outcome,
    /// True when this answer is the remembered one for a repeated idempotency key.
    pub deduplicated: bool,
}

/// What a command did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    /// Blank and membership entries.
    #[default]
    None,
    Written {
        upserted: u64,
        deleted: u64,
    },
    /// The command was rejected as a whole; nothing was written.
    Rejected {
        code: i32,
        message: String,
    },
}

impl Outcome {
    pub fn rejected(code: ErrorCode, message: impl Into<String>) -> Self {
        Outcome::Rejected {
            code: code as i32,
            message: message.into(),
        }
    }
}

/// Milliseconds since the Unix epoch (wall clock).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
