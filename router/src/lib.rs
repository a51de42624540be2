//! Engram's query router and placement driver.
//!
//! - [`map`]: the cluster map kept in the metadata Raft group (nodes and zones, shards and
//!   their replicas, tenants, collections) and cached by every router.
//! - [`hashing`]: tenant sharding, (tenant, user) → shard by rendezvous hashing over XXH3.
//! - [`placement`]: replicas in distinct zones, leaders spread.
//! - [`router`]: leader routing with retries within a deadline, nearest-replica reads,
//!   tenant fan-out.
//! - [`pd`]: placement-driver operations (register nodes, create and drop collections).
//! - [`service`]: the public gRPC service on top of all that.
//! - [`transport`], [`wire`]: how shard operations reach the node that serves them.

pub mod convert;
pub mod hashing;
pub mod map;
pub mod pd;
pub mod placement;
pub mod router;
pub mod service;
pub mod transport;
pub mod wire;

pub use map::{ClusterMap, Settings, META_GROUP};
pub use router::{Limits, Router, RouterConfig};
pub use service::EngramService;
pub use transport::{RemoteTransport, ShardTransport};
