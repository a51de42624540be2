//! The cluster map: what the placement driver keeps in the metadata Raft group and every
//! router caches. One JSON document under one key of group 0, replaced by compare-and-set, so
//! every change is a new version (the map's epoch) and concurrent changes never interleave.

use std::collections::BTreeMap;

use engram_index::IndexConfig;
use engram_raft::{GroupId, NodeId};
use serde::{Deserialize, Serialize};

/// The metadata group (placement driver) is Raft group 0; shard groups are 1, 2, ...
pub const META_GROUP: GroupId = 0;
/// The key of the cluster map in the metadata group's key-value space.
pub const MAP_KEY: &str = "cluster_map";

/// Cluster-wide placement settings, fixed when the cluster is bootstrapped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Replicas per shard (each in a distinct zone unless `allow_same_zone`).
    pub replication_factor: u32,
    /// Shards in the shared pool every non-dedicated tenant is spread over.
    pub shared_shards: u32,
    /// How many pool shards one tenant's users are spread over (bounds tenant fan-out).
    pub tenant_spread: u32,
    /// Place several replicas of a shard in one zone when there are fewer zones than
    /// replicas. Off by default: losing that zone would lose the shard's quorum.
    pub allow_same_zone: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            replication_factor: 3,
            shared_shards: 6,
            tenant_spread: 3,
            allow_same_zone: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub zone: String,
    /// Public gRPC address (clients, routers).
    pub client_addr: String,
    /// Peer gRPC address (Raft, forwarded shard operations; peer credential only).
    pub peer_addr: String,
    /// HTTP address (/metrics, /healthz, /readyz).
    pub http_addr: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// Voters, each on a distinct node (and zone, unless relaxed).
    pub replicas: Vec<NodeId>,
    /// The replica that forms the group and is its first leader (leaders are spread).
    pub leader_hint: NodeId,
    /// `Some(tenant)` for a dedicated tenant's shard; `None` for the shared pool.
    pub dedicated_to: Option<String>,
    /// The group has formed (a leader was seen); until then its replicas may create it.
    pub ready: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TenantInfo {
    /// Shards of its own; empty = the tenant uses the shared pool.
    pub dedicated: Vec<GroupId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionInfo {
    /// Cluster-unique id; the collection is named `c{id}` inside each shard.
    pub id: u64,
    pub tenant: String,
    pub name: String,
    pub config: IndexConfig,
    /// The shards holding this collection's users (fixed at creation).
    pub shards: Vec<GroupId>,
    pub created_at_ms: i64,
    /// Created on every shard; until then writes and searches answer "not found".
    pub ready: bool,
}

impl CollectionInfo {
    /// The collection's name inside a shard's state machine.
    pub fn shard_name(&self) -> String {
        format!("c{}", self.id)
    }
}

/// The cluster map. `epoch` increases with every change.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterMap {
    pub epoch: u64,
    pub settings: Settings,
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    pub shards: BTreeMap<GroupId, ShardInfo>,
    pub shared_pool: Vec<GroupId>,
    pub tenants: BTreeMap<String, TenantInfo>,
    /// Keyed by `tenant/name` (see [`collection_key`]).
    pub collections: BTreeMap<String, CollectionInfo>,
    pub next_group: GroupId,
    pub next_collection: u64,
}

/// Map key of a tenant's collection (tenant names cannot contain `/`).
pub fn collection_key(tenant: &str, name: &str) -> String {
    format!("{tenant}/{name}")
}

impl ClusterMap {
    pub fn new(settings: Settings) -> Self {
        ClusterMap {
            settings,
            next_group: META_GROUP + 1,
            next_collection: 1,
            ..ClusterMap::default()
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    pub fn collection(&self, tenant: &str, name: &str) -> Option<&CollectionInfo> {
        self.collections.get(&collection_key(tenant, name))
    }

    pub fn tenant_collections(&self, tenant: &str) -> impl Iterator<Item = &CollectionInfo> {
        let prefix = format!("{tenant}/");
        self.collections
            .range(prefix.clone()..)
            .take_while(move |(k, _)| k.starts_with(&prefix))
            .map(|(_, c)| c)
    }

    /// Replicas hosted and first-leader counts per node (placement balances on these).
    pub fn load(&self) -> BTreeMap<NodeId, (usize, usize)> {
        let mut load: BTreeMap<NodeId, (usize, usize)> =
            self.nodes.keys().map(|&n| (n, (0, 0))).collect();
        for s in self.shards.values() {
            for r in &s.replicas {
                load.entry(*r).or_default().0 += 1;
            }
            load.entry(s.leader_hint).or_default().1 += 1;
        }
        load
    }
}
