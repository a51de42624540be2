//! Engram's replication layer: every shard is a Raft group (openraft) of replicas on
//! different nodes; a node hosts replicas of many shards on **one RocksDB**.
//!
//! - [`types`]: the one `declare_raft_types!` ([`TypeConfig`]) and aliases.
//! - [`command`]: what the log carries ([`ShardRequest`]) and what applying answers.
//! - [`storage`]: the node's RocksDB with group-committed, fsynced log appends
//!   ([`storage::log::LogStore`]), the per-shard state machine
//!   ([`storage::sm::ShardStateMachine`]: records + index, applied index in the same batch,
//!   idempotency window) and snapshot files.
//! - [`network`] / [`server`]: the peer gRPC transport (one connection per node pair, batched
//!   messages, streamed snapshots with deadlines, peer-token guarded).
//! - [`host`]: [`RaftHost`], the node's multi-Raft runtime (groups, writes, reads,
//!   membership changes; `host::quorum`: peer reachability and CheckQuorum).
//!
//! - [`local`]: a cluster of hosts in one process on loopback, for tests and benchmarks.
//!
//! See `docs/adr/0004-multi-raft.md` for the choices and their measurements.

// openraft's `StorageError` (the error type its storage traits require) is large; boxing it
// in our helpers would only move the allocation.
#![allow(clippy::result_large_err)]

pub mod command;
pub mod error;
pub mod host;
mod liveness;
pub mod local;
pub mod network;
pub mod server;
pub mod storage;
pub mod types;

pub use command::{Command, Outcome, Record, ShardRequest, ShardResponse};
pub use error::{index_error_code, RaftError};
pub use host::{Group, HostConfig, RaftHost, RaftTiming, Staleness, WriteAck};
pub use network::TransportConfig;
pub use storage::{Durability, NodeStore};
pub use types::{GroupId, NodeId, PeerNode, TypeConfig};
