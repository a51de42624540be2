//! The recorded history: every operation a workload client issued, as invoke → outcome with
//! timestamps (seconds since the run started). Checkers read nothing else.

use serde::{Deserialize, Serialize};

/// What an operation touches: one memory id of one user of one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Key {
    pub tenant: String,
    pub user: String,
    pub id: String,
}

impl Key {
    pub fn new(tenant: &str, user: &str, id: &str) -> Self {
        Key {
            tenant: tenant.into(),
            user: user.into(),
            id: id.into(),
        }
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.tenant, self.user, self.id)
    }
}

/// What was asked. Every written value is unique across the whole run, so a value read names
/// the one write that produced it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum Call {
    Write { key: Key, value: u64 },
    Delete { key: Key },
    /// A strong (linearizable) read of one id.
    Read { key: Key },
    /// A strong search: user scope when `user` is set, else the whole tenant.
    Search { tenant: String, user: Option<String> },
}

impl Call {
    pub fn key(&self) -> Option<&Key> {
        match self {
            Call::Write { key, .. } | Call::Delete { key } | Call::Read { key } => Some(key),
            Call::Search { .. } => None,
        }
    }

    pub fn is_mutation(&self) -> bool {
        matches!(self, Call::Write { .. } | Call::Delete { .. })
    }
}

/// A memory as a read or search returned it: its key, the value in its payload, and the
/// tenant / user the payload claims (what the writer put there).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seen {
    pub key: Key,
    /// `None` when the payload carried no value this workload writes (a phantom by definition).
    pub value: Option<u64>,
    pub payload_tenant: String,
    pub payload_user: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The server acknowledged it.
    Ok,
    /// It certainly did not happen (a typed, non-retryable error).
    Fail,
    /// It may or may not have happened (timeout, unreachable after retries).
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// The client (workload worker) that issued it; [`FINAL`] for the post-heal verification.
    pub process: usize,
    pub call: Call,
    pub invoke: f64,
    /// When the outcome was known (for `Unknown`: when the client gave up).
    pub complete: f64,
    pub outcome: Outcome,
    /// Reads: the memory found (`None`: absent). Searches: `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<Option<Seen>>,
    /// Searches: the hits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hits: Vec<Seen>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The process id of reads made by the verification phase after the heal.
pub const FINAL: usize = usize::MAX;

impl Op {
    pub fn ok(&self) -> bool {
        self.outcome == Outcome::Ok
    }
}

/// A fault as it happened, for the report and the availability checker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRecord {
    pub kind: String,
    /// Which nodes (1-based ids) or links it touched, in words.
    pub target: String,
    pub start_s: f64,
    pub heal_s: f64,
    /// Filled in by the availability checker.
    #[serde(default)]
    pub unavailable_s: f64,
    #[serde(default)]
    pub recover_s: f64,
    /// Every shard kept a connected majority while the fault was on (one node or one zone
    /// out): writes are expected back before the heal.
    #[serde(default)]
    pub majority_kept: bool,
}
