//! Crash-test writer: hosts a single-voter shard group in `--dir`, writes memories
//! `m<start>..` (each with idempotency key `w<i>`) and prints `ACK <i> <index> <dedup>` once
//! each is acknowledged. First it re-sends the `--retry` writes before `start` (same keys) and
//! prints `DUP <i> <index> <dedup>`: a crash must never make them apply twice.
//! Runs until `--count` writes are done or it is killed (tests SIGKILL it at random moments).

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use engram_index::{IndexConfig, Memory, Metric};
use engram_raft::{Command, HostConfig, PeerNode, RaftError, RaftHost, ShardRequest};

const GROUP: u64 = 1;
const DIM: usize = 8;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn memory(i: u64) -> Memory {
    let v: Vec<f32> = (0..DIM as u64)
        .map(|d| ((i * 7 + d * 13) % 101) as f32 / 101.0)
        .collect();
    Memory::new(format!("m{i}"), "crash", v, i as i64)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(start)) = (arg(&args, "--dir"), arg(&args, "--start")) else {
        eprintln!("usage: engram-crash-writer --dir DIR --start N [--count M] [--retry K]");
        std::process::exit(2);
    };
    let start: u64 = start.parse().expect("--start is a number");
    let count: u64 = arg(&args, "--count")
        .map(|c| c.parse().expect("--count"))
        .unwrap_or(u64::MAX);
    let retry: u64 = arg(&args, "--retry")
        .map(|c| c.parse().expect("--retry"))
        .unwrap_or(0);
    let host = RaftHost::open(HostConfig::new(1, &dir, "crash-test"))
        .await
        .expect("open host");
    if host.group(GROUP).is_none() {
        host.create_group(GROUP).await.expect("create group");
        // A single voter never dials its peers; the address is never used.
        let members = BTreeMap::from([(1, PeerNode::new("127.0.0.1:9", "z1"))]);
        host.initialize_group(GROUP, members)
            .await
            .expect("initialize");
    }
    host.wait_leader(GROUP, Duration::from_secs(30))
        .await
        .expect("leader");
    let create = ShardRequest::new(Command::create_collection(
        "mem",
        &IndexConfig::new(DIM, Metric::L2),
    ))
    .with_idempotency_key("create-mem");
    match host.write(GROUP, create).await {
        Ok(_) | Err(RaftError::Rejected { .. }) => {}
        Err(e) => panic!("create collection: {e}"),
    }
    println!("READY");
    let mut out = std::io::stdout().lock();
    for i in start.saturating_sub(retry)..start {
        let req = ShardRequest::new(Command::upsert("mem", vec![memory(i)]))
            .with_idempotency_key(format!("w{i}"));
        let ack = host.write(GROUP, req).await.expect("retry write");
        writeln!(out, "DUP {i} {} {}", ack.index, ack.deduplicated).ok();
        out.flush().ok();
    }
    for i in start..start.saturating_add(count) {
        let req = ShardRequest::new(Command::upsert("mem", vec![memory(i)]))
            .with_idempotency_key(format!("w{i}"));
        let ack = host.write(GROUP, req).await.expect("write");
        writeln!(out, "ACK {i} {} {}", ack.index, ack.deduplicated).ok();
        out.flush().ok();
    }
    host.shutdown().await;
}
