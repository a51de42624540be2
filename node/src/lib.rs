//! The Engram node.
//!
//! - [`node::run`]: a node process: its Raft host (engram-raft), the embedded router and the
//!   public gRPC service (engram-router), the peer port (Raft + forwarded shard operations,
//!   peer credential only), the HTTP port (/metrics, /healthz, /readyz), registration in the
//!   cluster map and the reconciler that hosts the replicas the map assigns here.
//! - [`config`]: the node's TOML config with `ENGRAM__` environment overrides.
//! - [`launch`]: local multi-process clusters (`engram up`, tests, benchmarks).
//! - [`demo`]: the sample memories `engram up --demo` loads.

pub mod config;
pub mod demo;
pub mod http;
pub mod launch;
pub mod node;
pub mod shard_server;
