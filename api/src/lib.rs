//! Engram's API contract, shared by the node, the router, the client SDK and the tools.
//!
//! - [`v1`]: the public gRPC service an agent service calls (collections, memories, search,
//!   cluster status), generated from `proto/engram/v1/*.proto`.
//! - [`peer`]: the internal node-to-node service (Raft batches, heartbeats, snapshots, shard
//!   transfer), generated from `proto/engram/peer/v1/peer.proto`. It is served on its own port
//!   with the peer credential; the public service never reaches it.
//! - [`ErrorCode`]: stable error codes with their one gRPC status mapping, and [`ApiError`],
//!   the typed error every service layer returns before it becomes a `tonic::Status`.

mod error;

pub use error::{ApiError, ErrorCode};

/// Public API (`package engram.v1`).
pub mod v1 {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("engram.v1");
}

/// Internal peer API (`package engram.peer.v1`). Never exposed to client credentials.
pub mod peer {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("engram.peer.v1");
}
