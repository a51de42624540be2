//! `engram-bench failover`: write and search latency over time while the leader of a shard
//! is killed (SIGKILL) and restarted, on a local multi-zone cluster of real node processes.
//!
//! Writers (one memory per call, each writer its own users) and searchers (user-scope,
//! linearizable) run for the whole benchmark; every operation is recorded with its start
//! time, latency and outcome. Each trial picks a shard holding the tenant's data (round
//! robin), kills the node leading it, restarts it after `--down`, waits until it is ready and
//! lets the cluster settle. A trial's **write-unavailability window** is the time from the kill
//! until every write stream (one user: one shard) was acknowledged again: for each stream, the
//! first acknowledgement completing after the kill, minus the kill time; the window is the
//! largest of those. Reported: every trial, p50 and max over the trials, and a timeline plot.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use engram_client::{Client, ClientConfig, Search};
use parking_lot::Mutex;
use serde::Serialize;

use crate::agent::{tenant_name, user_name, AgentData, AgentSpec, COLLECTION};
use crate::load::{self, BoxError};
use crate::local::LocalCluster;

#[derive(Args, Debug, Clone)]
pub struct FailoverArgs {
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    #[arg(long, default_value_t = 3)]
    pub zones: usize,
    #[arg(long, default_value_t = 6)]
    pub shards: u32,
    /// Leader kills.
    #[arg(long, default_value_t = 10)]
    pub trials: usize,
    /// How long the killed node stays down, in seconds.
    #[arg(long, default_value_t = 5.0)]
    pub down: f64,
    /// Quiet time after the restarted node is ready, before the next trial, in seconds.
    #[arg(long, default_value_t = 4.0)]
    pub settle: f64,
    /// Concurrent writers (each writes for its own users).
    #[arg(long, default_value_t = 8)]
    pub writers: usize,
    #[arg(long, default_value_t = 4)]
    pub searchers: usize,
    /// Users written to (spread over the tenant's shards).
    #[arg(long, default_value_t = 48)]
    pub users: usize,
    #[arg(long, default_value_t = 384)]
    pub dim: usize,
    /// Pause between one caller's operations, in milliseconds.
    #[arg(long, default_value_t = 5)]
    pub think_ms: u64,
    /// The `engram` binary (default: next to engram-bench).
    #[arg(long)]
    pub engram_bin: Option<PathBuf>,
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The timeline plot (SVG).
    #[arg(long)]
    pub svg: Option<PathBuf>,
}

/// One recorded operation.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since the start.
    pub at_s: f64,
    pub latency_ms: f64,
    pub write: bool,
    pub ok: bool,
    /// Write stream (user index), for writes.
    pub stream: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Trial {
    pub trial: usize,
    pub killed_node: u64,
    pub shard: u64,
    pub kill_at_s: f64,
    pub restart_at_s: f64,
    pub ready_at_s: f64,
    /// Kill → every write stream acknowledged again.
    pub write_unavailable_s: f64,
    /// Kill → every search caller answered again.
    pub search_unavailable_s: f64,
    pub failed_writes: usize,
    pub failed_searches: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailoverReport {
    pub nodes: usize,
    pub zones: usize,
    pub trials: Vec<Trial>,
    pub write_unavailable_p50_s: f64,
    pub write_unavailable_max_s: f64,
    pub search_unavailable_p50_s: f64,
    pub search_unavailable_max_s: f64,
    pub samples: usize,
    /// Latency percentiles of writes and searches outside the trials' windows (steady state).
    pub steady_write: load::LatencyStats,
    pub steady_search: load::LatencyStats,
}

pub fn run(args: FailoverArgs) -> Result<(), BoxError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(args))
}

fn percentile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let i = ((s.len() as f64 - 1.0) * q).round() as usize;
    s[i.min(s.len() - 1)]
}

/// Kill → the first acknowledgement of each stream completing after it; the largest.
fn window(samples: &[Sample], kill: f64, streams: &[usize], write: bool) -> f64 {
    streams
        .iter()
        .map(|&st| {
            samples
                .iter()
                .filter(|s| s.write == write && s.stream == st && s.ok)
                .map(|s| s.at_s + s.latency_ms / 1000.0)
                .filter(|done| *done > kill)
                .fold(f64::INFINITY, f64::min)
                - kill
        })
        .fold(0.0, f64::max)
}

async fn run_async(args: FailoverArgs) -> Result<(), BoxError> {
    let data = Arc::new(AgentData::generate(
        AgentSpec {
            tenants: 1,
            users: args.users.max(1),
            memories: 2_000,
            queries: 500,
            dim: args.dim,
            zipf: 0.0,
            ..AgentSpec::default()
        },
        None,
    )?);
    let mut cluster = LocalCluster::start(
        args.nodes,
        args.zones,
        args.shards,
        args.engram_bin.clone(),
    )
    .await?;
    eprintln!(
        "started {} nodes in {} zones: {}",
        args.nodes,
        args.zones,
        cluster.endpoints().join(", ")
    );
    let client = Client::with_config(
        cluster.endpoints(),
        ClientConfig {
            timeout: Duration::from_secs(10),
            max_attempts: 100,
            ..ClientConfig::default()
        },
    )?;
    load::create_collections(&client, &data).await?;
    load::ingest(&client, &data, 200, 4, false).await?;
    let tenant = tenant_name(0);

    let start = Instant::now();
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let users = args.users.max(args.writers).max(1);
    for w in 0..args.writers.max(1) {
        let (client, data, samples, stop, tenant) =
            (client.clone(), data.clone(), samples.clone(), stop.clone(), tenant.clone());
        let think = Duration::from_millis(args.think_ms);
        let writers = args.writers.max(1);
        tasks.push(tokio::spawn(async move {
            let mine: Vec<usize> = (w..users).step_by(writers).collect();
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let u = mine[n % mine.len()];
                n += 1;
                let row = (u * 7919 + n) % data.memories.len();
                let mut m = data.input(row);
                m.0.id = format!("fo-{w}-{n}");
                m.0.user = user_name(u as u32);
                let at = start.elapsed().as_secs_f64();
                let t0 = Instant::now();
                let ok = client.upsert(&tenant, COLLECTION, m).await.is_ok();
                samples.lock().push(Sample {
                    at_s: at,
                    latency_ms: t0.elapsed().as_secs_f64() * 1000.0,
                    write: true,
                    ok,
                    stream: u,
                });
                tokio::time::sleep(think).await;
            }
        }));
    }
    for s in 0..args.searchers {
        let (client, data, samples, stop, tenant) =
            (client.clone(), data.clone(), samples.clone(), stop.clone(), tenant.clone());
        let think = Duration::from_millis(args.think_ms);
        tasks.push(tokio::spawn(async move {
            let mut n = s;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let u = (n * 31) % users;
                let q = data.queries[n % data.queries.len()].vector.clone();
                let at = start.elapsed().as_secs_f64();
                let t0 = Instant::now();
                let ok = client
                    .search(&tenant, COLLECTION, Search::user(user_name(u as u32), q, 10))
                    .await
                    .is_ok();
                samples.lock().push(Sample {
                    at_s: at,
                    latency_ms: t0.elapsed().as_secs_f64() * 1000.0,
                    write: false,
                    ok,
                    stream: s,
                });
                tokio::time::sleep(think).await;
            }
        }));
    }

    let pb = crate::progress(args.trials as u64, "failover trials");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut trials = Vec::new();
    for trial in 0..args.trials {
        let st = client.cluster_status().await?;
        let mut shards: Vec<_> = st
            .shards
            .iter()
            .filter(|s| s.memory_count > 0 && s.leader_node > 0)
            .collect();
        shards.sort_by_key(|s| s.shard_id);
        let Some(target) = shards.get(trial % shards.len().max(1)).copied() else {
            return Err("no shard with a leader holds the tenant's data".into());
        };
        let node = target.leader_node;
        let i = node as usize - 1;
        let kill_at = start.elapsed().as_secs_f64();
        cluster.cluster.kill(i);
        tokio::time::sleep(Duration::from_secs_f64(args.down)).await;
        let restart_at = start.elapsed().as_secs_f64();
        cluster.cluster.start(i)?;
        cluster
            .cluster
            .wait_node_ready(i, Duration::from_secs(60))
            .await?;
        let ready_at = start.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
        trials.push(Trial {
            trial,
            killed_node: node,
            shard: target.shard_id,
            kill_at_s: kill_at,
            restart_at_s: restart_at,
            ready_at_s: ready_at,
            write_unavailable_s: 0.0,
            search_unavailable_s: 0.0,
            failed_writes: 0,
            failed_searches: 0,
        });
        pb.inc(1);
    }
    pb.finish_and_clear();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(15), t).await;
    }
    let samples = std::mem::take(&mut *samples.lock());
    let streams: Vec<usize> = (0..users).collect();
    let searchers: Vec<usize> = (0..args.searchers).collect();
    for t in trials.iter_mut() {
        t.write_unavailable_s = window(&samples, t.kill_at_s, &streams, true);
        t.search_unavailable_s = window(&samples, t.kill_at_s, &searchers, false);
        let during = |s: &&Sample| s.at_s >= t.kill_at_s && s.at_s < t.ready_at_s && !s.ok;
        t.failed_writes = samples.iter().filter(|s| s.write).filter(during).count();
        t.failed_searches = samples.iter().filter(|s| !s.write).filter(during).count();
        eprintln!(
            "trial {}: killed node {} (leader of shard {}) at {:.1}s: writes back after {:.2} s, searches after {:.2} s",
            t.trial, t.killed_node, t.shard, t.kill_at_s, t.write_unavailable_s, t.search_unavailable_s
        );
    }
    let steady = |write: bool| {
        let mut h = load::histogram();
        let mut errors = 0;
        let mut first = f64::MAX;
        let mut last: f64 = 0.0;
        for s in samples.iter().filter(|s| s.write == write) {
            let disturbed = trials
                .iter()
                .any(|t| s.at_s >= t.kill_at_s - 1.0 && s.at_s < t.ready_at_s + 2.0);
            if disturbed {
                continue;
            }
            first = first.min(s.at_s);
            last = last.max(s.at_s);
            if s.ok {
                load::record(&mut h, Duration::from_secs_f64(s.latency_ms / 1000.0));
            } else {
                errors += 1;
            }
        }
        load::LatencyStats::of(&h, errors, (last - first).max(1e-9))
    };
    let w: Vec<f64> = trials.iter().map(|t| t.write_unavailable_s).collect();
    let s: Vec<f64> = trials.iter().map(|t| t.search_unavailable_s).collect();
    let report = FailoverReport {
        nodes: args.nodes,
        zones: args.zones,
        write_unavailable_p50_s: percentile(&w, 0.5),
        write_unavailable_max_s: w.iter().copied().fold(0.0, f64::max),
        search_unavailable_p50_s: percentile(&s, 0.5),
        search_unavailable_max_s: s.iter().copied().fold(0.0, f64::max),
        samples: samples.len(),
        steady_write: steady(true),
        steady_search: steady(false),
        trials,
    };
    eprintln!(
        "write unavailability over {} leader kills: p50 {:.2} s, max {:.2} s; searches: p50 {:.2} s, max {:.2} s",
        report.trials.len(),
        report.write_unavailable_p50_s,
        report.write_unavailable_max_s,
        report.search_unavailable_p50_s,
        report.search_unavailable_max_s
    );
    if let Some(p) = &args.svg {
        std::fs::write(p, crate::plot::failover_timeline(&samples, &report)?)?;
        eprintln!("wrote {}", p.display());
    }
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(p) = &args.json {
        std::fs::write(p, &json)?;
        eprintln!("wrote {}", p.display());
    } else {
        println!("{json}");
    }
    cluster.stop();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(at: f64, ms: f64, stream: usize, ok: bool) -> Sample {
        Sample {
            at_s: at,
            latency_ms: ms,
            write: true,
            ok,
            stream,
        }
    }

    #[test]
    fn the_window_is_the_slowest_stream_back() {
        let samples = vec![
            s(9.0, 10.0, 0, true),
            s(9.5, 10.0, 1, true),
            // Stream 0 is served 0.2 s after the kill at 10 s; stream 1 waits 2.5 s.
            s(10.1, 100.0, 0, true),
            s(10.0, 2500.0, 1, true),
            s(10.0, 500.0, 1, false),
        ];
        let w = window(&samples, 10.0, &[0, 1], true);
        assert!((w - 2.5).abs() < 1e-9, "{w}");
        // A stream never served again is infinitely unavailable, not silently skipped.
        assert!(window(&samples, 10.0, &[0, 1, 2], true).is_infinite());
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 0.5), 2.0);
    }
}
