//! Engram's benchmarks.
//!
//! - `engram-bench index`: builds a [`TieredIndex`](engram_index::TieredIndex) from an ANN
//!   dataset and reports, per `ef` and per tier, recall@k against the ground truth and
//!   single-thread QPS, plus build / seal / reopen times and resident memory ([`index`]).
//!   `benches/peers/peers.py` runs hnswlib and FAISS on the same data for a side-by-side
//!   ratio; `benches/compare-index.sh` runs both back to back.
//! - `engram-bench raft`: replication on a local three-node cluster — write throughput and
//!   commit latency, idle cost of many groups, leader failover time ([`raft`]).
//! - `engram-bench cluster`: end to end through the SDK against real node processes — ingest
//!   rate, search QPS / latency percentiles / recall@10 per concurrency, and the ratio to the
//!   in-process index ([`cluster`]).

pub mod cluster;
pub mod index;
pub mod raft;
pub mod rss;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "engram-bench", version, about = "Engram benchmarks")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Build an index from a dataset; report recall@k and single-thread QPS per ef and tier.
    Index(index::IndexArgs),
    /// Replication on a local 3-node cluster: throughput and commit latency, idle-group CPU,
    /// leader failover time.
    Raft(raft::RaftArgs),
    /// End to end against a cluster (started here, or `--endpoints`): ingest vectors/s, search
    /// QPS and p50/p95/p99 latency at each concurrency, recall@10, and the ratio to the
    /// in-process index on the same data.
    Cluster(cluster::ClusterArgs),
    /// (internal) Reopen a built index in a fresh process and measure it.
    #[command(hide = true)]
    Reopen(index::ReopenArgs),
}

pub fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    match cli.command {
        Command::Index(args) => index::run(args),
        Command::Raft(args) => raft::run(args),
        Command::Cluster(args) => cluster::run(args),
        Command::Reopen(args) => index::reopen(args),
    }
}
