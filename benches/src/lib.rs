//! Engram's benchmarks.
//!
//! - `engram-bench index`: builds a [`TieredIndex`](engram_index::TieredIndex) from an ANN
//!   dataset and reports, per `ef` and per tier, recall@k, single-thread QPS, latency under
//!   concurrency, build / seal / reopen times and memory and disk per vector ([`index`]).
//! - `engram-bench compare`: the index and the peers (hnswlib, FAISS, usearch, Qdrant's
//!   engine, Milvus Lite, LanceDB; `benches/peers/`) on the same data, back to back, and the
//!   ratio table ([`compare`]).
//! - `engram-bench raft`: replication on a local three-node cluster — write throughput and
//!   commit latency, idle cost of many groups, leader failover time ([`raft`]).
//! - `engram-bench cluster`: end to end through the SDK against real node processes, with a
//!   data set's vectors or the agent-memory workload ([`agent`], [`load`]) ([`cluster`]).
//! - `engram-bench scale`: the agent workload on 1, 3 and 6 local nodes ([`scale`]).
//! - `engram-bench failover`: latency over time while shard leaders are killed ([`failover`]).
//! - `engram-bench report`: `benches/RESULTS.md` and its plots from the results ([`report`]).

pub mod agent;
pub mod cluster;
pub mod compare;
pub mod failover;
pub mod index;
pub mod load;
pub mod local;
pub mod plot;
pub mod raft;
pub mod report;
pub mod rss;
pub mod scale;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "engram-bench", version, about = "Engram benchmarks")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Build an index from a dataset; report recall@k, single-thread QPS, latency under
    /// concurrency, memory and disk per vector, per ef and tier.
    Index(index::IndexArgs),
    /// Engram's index and the peer engines on the same data, back to back: the ratio table
    /// (QPS at equal recall, ingest rate, p99, memory per vector).
    Compare(compare::CompareArgs),
    /// Replication on a local 3-node cluster: throughput and commit latency, idle-group CPU,
    /// leader failover time.
    Raft(raft::RaftArgs),
    /// End to end against a cluster (started here, or `--endpoints`): ingest vectors/s, recall
    /// QPS and p50/p95/p99 latency at each concurrency, recall@10 (`--workload dataset` or
    /// `agent`).
    Cluster(cluster::ClusterArgs),
    /// The agent-memory workload on local clusters of 1, 3 and 6 nodes: the scaling curve.
    Scale(scale::ScaleArgs),
    /// Write and search latency over time while shard leaders are killed and restarted.
    Failover(failover::FailoverArgs),
    /// Write benches/RESULTS.md and its plots from a results directory.
    Report(report::ReportArgs),
    /// (internal) Reopen a built index in a fresh process and measure it.
    #[command(hide = true)]
    Reopen(index::ReopenArgs),
}

pub fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    match cli.command {
        Command::Index(args) => index::run(args),
        Command::Compare(args) => compare::run(args),
        Command::Raft(args) => raft::run(args),
        Command::Cluster(args) => cluster::run(args),
        Command::Scale(args) => scale::run(args),
        Command::Failover(args) => failover::run(args),
        Command::Report(args) => report::run(args),
        Command::Reopen(args) => index::reopen(args),
    }
}

/// A progress bar on stderr for `len` items.
pub fn progress(len: u64, what: &str) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(&format!(
        "{what} {{bar:40}} {{pos}}/{{len}} {{per_sec}} eta {{eta}}"
    )) {
        pb.set_style(style);
    }
    pb
}

/// Allocated bytes (blocks × 512) of every file under `path`.
pub fn dir_bytes(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&p) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.blocks() * 512;
            }
        }
    }
    total
}
