//! What a router sends to the node serving a shard (over `engram.peer.v1.Shards`, or by a
//! direct call when that node is itself), postcard-encoded.

use engram_api::{ApiError, ErrorCode};
use engram_index::{Memory, MemoryMeta, Tier, TierSelection};
use engram_raft::{GroupId, NodeId, RaftError, Record, ShardRequest};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ShardOp {
    /// Propose a command (the leader only).
    Write(ShardRequest),
    Search {
        collection: String,
        query: WireQuery,
        read: ReadMode,
    },
    Get {
        collection: String,
        /// Only this user's memories are returned (others count as missing).
        user: String,
        ids: Vec<String>,
        read: ReadMode,
        include_vectors: bool,
    },
    /// Leader, term, indexes and size of the local replica.
    Status,
    /// The cluster map as this replica of the metadata group has applied it, if its version
    /// is above `newer_than` (a router polling its cache gets `MapUnchanged` otherwise).
    ReadMap { read: ReadMode, newer_than: u64 },
    /// Liveness probe of the node (the group id is ignored).
    Ping,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadMode {
    /// Through the leader, after a read-index round (linearizable).
    Strong,
    /// This replica, if it heard from its leader within `max_staleness_ms`.
    Bounded { max_staleness_ms: u64 },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireQuery {
    pub vector: Vec<f32>,
    pub k: u32,
    /// `engram_index::Filter` as JSON (payload values are JSON).
    pub filter_json: String,
    pub tiers: TierSelection,
    pub ef: Option<u32>,
    pub include_vectors: bool,
}

/// A memory as a shard returns it: the stored record and the tier it was found in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireMemory {
    pub record: Record,
    pub tier: Option<Tier>,
}

impl WireMemory {
    pub fn from_meta(meta: &MemoryMeta, vector: Vec<f32>, tier: Option<Tier>) -> Self {
        let record = Record::from(Memory {
            meta: meta.clone(),
            vector,
        });
        WireMemory { record, tier }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireHit {
    pub memory: WireMemory,
    pub score: f32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireStatus {
    pub leader: Option<NodeId>,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub voters: Vec<NodeId>,
    pub memory_count: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ShardReply {
    Written {
        index: u64,
        upserted: u64,
        deleted: u64,
        deduplicated: bool,
    },
    Hits {
        hits: Vec<WireHit>,
        /// How far behind its leader the serving replica may be (0 for strong reads).
        staleness_ms: u64,
    },
    Memories {
        found: Vec<WireMemory>,
        missing: Vec<String>,
    },
    Status(WireStatus),
    /// (version, encoded map); `None` before the cluster is bootstrapped.
    Map(Option<(u64, Vec<u8>)>),
    /// The map is still at the version the caller has.
    MapUnchanged,
    Pong,
}

/// An error crossing the wire: the stable code, the message, and a leader hint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireError {
    pub code: i32,
    pub message: String,
    pub leader: Option<NodeId>,
}

impl WireError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        WireError {
            code: code as i32,
            message: message.into(),
            leader: None,
        }
    }

    pub fn code(&self) -> ErrorCode {
        ErrorCode::try_from(self.code).unwrap_or(ErrorCode::Internal)
    }

    /// Transport failures (the node could not be reached or did not answer in time).
    pub fn unreachable(node: NodeId, message: impl std::fmt::Display) -> Self {
        WireError::new(
            ErrorCode::ShardUnavailable,
            format!("node {node} unreachable: {message}"),
        )
    }

    pub fn into_api(self, gid: GroupId) -> ApiError {
        let code = self.code();
        let mut e = ApiError::new(code, self.message).with("shard", gid.to_string());
        if let Some(l) = self.leader {
            e = e.with("leader", l.to_string());
        }
        e
    }
}

impl From<RaftError> for WireError {
    fn from(e: RaftError) -> Self {
        let leader = match &e {
            RaftError::NotLeader { leader, .. } => leader.as_ref().map(|(id, _)| *id),
            _ => None,
        };
        WireError {
            code: e.code() as i32,
            message: e.to_string(),
            leader,
        }
    }
}

pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).unwrap_or_default()
}

pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, WireError> {
    postcard::from_bytes(bytes).map_err(|e| {
        WireError::new(
            ErrorCode::Internal,
            format!("undecodable shard message (mixed versions?): {e}"),
        )
    })
}
