//! The one place the Raft generics are fixed: [`TypeConfig`] and the aliases built on it.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::command::{ShardRequest, ShardResponse};
use crate::storage::snapshot::SnapshotFile;

/// Node ids are assigned by the control plane and never reused (a wiped node rejoins under a
/// new id).
pub type NodeId = u64;

/// A shard's Raft group id (the shard id).
pub type GroupId = u64;

/// Where a node's peer service listens, and which zone it is in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerNode {
    /// `host:port` of the peer (Raft) gRPC service. Never a client endpoint.
    pub addr: String,
    pub zone: String,
}

impl PeerNode {
    pub fn new(addr: impl Into<String>, zone: impl Into<String>) -> Self {
        PeerNode {
            addr: addr.into(),
            zone: zone.into(),
        }
    }
}

impl fmt::Display for PeerNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.addr, self.zone)
    }
}

openraft::declare_raft_types!(
    /// Engram's Raft type configuration, shared by every shard group.
    pub TypeConfig:
        D = ShardRequest,
        R = ShardResponse,
        NodeId = NodeId,
        Node = PeerNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = SnapshotFile,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, PeerNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, PeerNode>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type RaftMetrics = openraft::RaftMetrics<NodeId, PeerNode>;
