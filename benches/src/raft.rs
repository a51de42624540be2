//! `engram-bench raft`: the replication layer on a local three-node cluster (real RocksDB per
//! node, real gRPC on loopback, production timing defaults).
//!
//! - **throughput**: acknowledged writes/s and commit latency (p50 / p99) for G groups and
//!   batches of B memories, with C concurrent writers spread over the groups.
//! - **idle**: CPU and memory of a node hosting N idle group replicas, with quiet groups
//!   (node-level heartbeats, the default) and with openraft's per-group heartbeats, side by
//!   side.
//! - **failover**: time from killing a group's leader node to the next committed write, over
//!   T trials (the node is restarted and caught up between trials).
//!
//! All three nodes run in this process, so they share its cores: throughput is what the whole
//! cluster does on this machine, and per-node CPU is the process's CPU divided by three.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engram_index::{IndexConfig, Memory, Metric};
use engram_raft::local::LocalCluster;
use engram_raft::{Command, RaftError, RaftTiming, ShardRequest};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(clap::Args, Debug)]
pub struct RaftArgs {
    /// Which measurements to run.
    #[arg(long, value_delimiter = ',', default_values = ["throughput", "idle", "failover"])]
    pub phases: Vec<String>,
    /// Group counts for the throughput runs.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 64])]
    pub groups: Vec<usize>,
    /// Memories per write for the throughput runs.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 100])]
    pub batch: Vec<usize>,
    /// Vector dimension of the written memories.
    #[arg(long, default_value_t = 128)]
    pub dim: usize,
    /// Concurrent writers in the throughput runs.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Seconds each throughput run writes for.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Group replicas per node in the idle run.
    #[arg(long, default_value_t = 1000)]
    pub idle_groups: usize,
    /// Seconds the idle CPU is measured over.
    #[arg(long, default_value_t = 20.0)]
    pub idle_seconds: f64,
    /// Leader kills in the failover run.
    #[arg(long, default_value_t = 20)]
    pub failover_trials: usize,
    /// Throughput runs propose no-op entries instead of upserts: the replication path alone
    /// (log, group commit, transport, apply bookkeeping), without records or index work.
    /// `--batch` does not apply.
    #[arg(long)]
    pub noop: bool,
    /// Where the nodes' data dirs go (default: a temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Also write the results as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct ThroughputResult {
    pub noop: bool,
    pub groups: usize,
    pub batch: usize,
    pub concurrency: usize,
    pub seconds: f64,
    pub writes: u64,
    pub writes_per_s: f64,
    pub vectors_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Log appends per WAL fsync, over all nodes (the group-commit factor).
    pub appends_per_fsync: f64,
    pub errors: u64,
}

#[derive(Debug, Serialize)]
pub struct IdleResult {
    pub quiet_groups: bool,
    pub groups_per_node: usize,
    pub seconds: f64,
    /// CPU of one node as a percentage of one core (process CPU / 3 nodes).
    pub cpu_percent_per_node: f64,
    pub rss_mib_per_node: f64,
    pub setup_seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct FailoverResult {
    pub trials: usize,
    pub p50_ms: f64,
    pub max_ms: f64,
    pub min_ms: f64,
    pub samples_ms: Vec<f64>,
    pub election_timeout_ms: (u64, u64),
}

#[derive(Debug, Default, Serialize)]
pub struct RaftReport {
    pub throughput: Vec<ThroughputResult>,
    pub idle: Vec<IdleResult>,
    pub failover: Option<FailoverResult>,
}

pub fn run(args: RaftArgs) -> Result<(), BoxError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(args))
}

async fn run_async(args: RaftArgs) -> Result<(), BoxError> {
    let root = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            tempfile::tempdir_in(d)?
        }
        None => tempfile::tempdir()?,
    };
    let mut report = RaftReport::default();
    let mut run_no = 0;
    let mut next_dir = || {
        run_no += 1;
        root.path().join(format!("run-{run_no}"))
    };
    if args.phases.iter().any(|p| p == "throughput") {
        // No-op entries carry no memories: one run per group count.
        let batches: Vec<usize> = if args.noop {
            vec![0]
        } else {
            args.batch.clone()
        };
        for &groups in &args.groups {
            for &batch in &batches {
                let r = throughput(&args, next_dir(), groups, batch).await?;
                println!(
                    "throughput  {} groups={:<3} batch={:<4} writes/s={:>9.1} vectors/s={:>10.1} p50={:>7.2} ms p99={:>7.2} ms appends/fsync={:.1}",
                    if r.noop { "noop  " } else { "upsert" }, r.groups, r.batch, r.writes_per_s, r.vectors_per_s, r.p50_ms, r.p99_ms, r.appends_per_fsync
                );
                report.throughput.push(r);
            }
        }
    }
    if args.phases.iter().any(|p| p == "idle") {
        for quiet in [true, false] {
            let r = idle(&args, next_dir(), quiet).await?;
            println!(
                "idle        groups/node={} quiet={:<5} cpu/node={:>6.2}% of a core  rss/node={:.0} MiB",
                r.groups_per_node, r.quiet_groups, r.cpu_percent_per_node, r.rss_mib_per_node
            );
            report.idle.push(r);
        }
    }
    if args.phases.iter().any(|p| p == "failover") {
        let r = failover(&args, next_dir()).await?;
        println!(
            "failover    trials={} leader kill -> next commit: p50={:.0} ms max={:.0} ms (election timeout {}-{} ms)",
            r.trials, r.p50_ms, r.max_ms, r.election_timeout_ms.0, r.election_timeout_ms.1
        );
        report.failover = Some(r);
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(())
}

fn bar(len: u64, msg: String) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:40} [{elapsed_precise}] {wide_bar} {pos}/{len}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.set_message(msg);
    pb
}

fn vector(dim: usize, seed: u64) -> Vec<f32> {
    // xorshift: cheap, deterministic, no zero vectors.
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..dim)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 10_000) as f32 / 10_000.0
        })
        .collect()
}

async fn start(dir: PathBuf, timing: RaftTiming) -> Result<LocalCluster, BoxError> {
    Ok(LocalCluster::start(dir, 3, timing).await?)
}

async fn setup_groups(
    c: &LocalCluster,
    groups: usize,
    dim: usize,
    pb: &ProgressBar,
) -> Result<(), BoxError> {
    let config = IndexConfig::new(dim, Metric::L2);
    for g in 1..=groups as u64 {
        c.create_groups([g], &[0, 1, 2]).await?;
        c.write(
            g,
            ShardRequest::new(Command::create_collection("bench", &config)),
            Duration::from_secs(30),
        )
        .await?;
        pb.inc(1);
    }
    Ok(())
}

async fn throughput(
    args: &RaftArgs,
    dir: PathBuf,
    groups: usize,
    batch: usize,
) -> Result<ThroughputResult, BoxError> {
    let c = Arc::new(start(dir, RaftTiming::default()).await?);
    let pb = bar(groups as u64, format!("setting up {groups} groups"));
    setup_groups(&c, groups, args.dim, &pb).await?;
    pb.finish_and_clear();
    let fsyncs_before: (u64, u64) = sync_totals(&c);
    let run_for = Duration::from_secs_f64(args.seconds);
    let pb = bar(
        run_for.as_secs(),
        format!("writing: {groups} groups, batch {batch}"),
    );
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..args.concurrency {
        let c = c.clone();
        let dim = args.dim;
        let noop = args.noop;
        tasks.push(tokio::spawn(async move {
            let gid = (w % groups) as u64 + 1;
            let mut hist = Histogram::<u64>::new(3).expect("histogram");
            let mut errors = 0u64;
            let mut k = 0u64;
            let mut leader = c.leader(gid, Duration::from_secs(30)).await.ok();
            while started.elapsed() < run_for {
                let memories: Vec<Memory> = (0..batch)
                    .map(|j| {
                        let n = (w as u64) << 40 | k << 12 | j as u64;
                        Memory::new(
                            format!("w{w}-{k}-{j}"),
                            format!("user-{}", w % 16),
                            vector(dim, n),
                            n as i64,
                        )
                    })
                    .collect();
                k += 1;
                let req = if noop {
                    ShardRequest::new(Command::Noop)
                } else {
                    ShardRequest::new(Command::upsert("bench", memories))
                };
                let Some(l) = leader else {
                    leader = c.leader(gid, Duration::from_secs(30)).await.ok();
                    errors += 1;
                    continue;
                };
                let t0 = Instant::now();
                match c.host(l).write(gid, req).await {
                    Ok(_) => {
                        let _ = hist.record(t0.elapsed().as_micros() as u64);
                    }
                    Err(RaftError::NotLeader { .. }) => {
                        leader = c.leader(gid, Duration::from_secs(30)).await.ok();
                        errors += 1;
                    }
                    Err(_) => errors += 1,
                }
            }
            (hist, errors)
        }));
    }
    let ticker = {
        let pb = pb.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                pb.inc(1);
            }
        })
    };
    let mut hist = Histogram::<u64>::new(3)?;
    let mut errors = 0;
    for t in tasks {
        let (h, e) = t.await?;
        hist.add(h)?;
        errors += e;
    }
    let secs = started.elapsed().as_secs_f64();
    ticker.abort();
    pb.finish_and_clear();
    let fsyncs_after = sync_totals(&c);
    let rounds = fsyncs_after.0 - fsyncs_before.0;
    let covered = fsyncs_after.1 - fsyncs_before.1;
    let writes = hist.len();
    let result = ThroughputResult {
        noop: args.noop,
        groups,
        batch,
        concurrency: args.concurrency,
        seconds: secs,
        writes,
        writes_per_s: writes as f64 / secs,
        vectors_per_s: if args.noop {
            0.0
        } else {
            (writes * batch as u64) as f64 / secs
        },
        p50_ms: hist.value_at_quantile(0.50) as f64 / 1000.0,
        p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
        max_ms: hist.max() as f64 / 1000.0,
        appends_per_fsync: if rounds > 0 {
            covered as f64 / rounds as f64
        } else {
            0.0
        },
        errors,
    };
    if let Ok(c) = Arc::try_unwrap(c) {
        c.shutdown().await;
    }
    Ok(result)
}

fn sync_totals(c: &LocalCluster) -> (u64, u64) {
    c.alive()
        .into_iter()
        .map(|i| c.host(i).store().sync_stats())
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

async fn idle(args: &RaftArgs, dir: PathBuf, quiet: bool) -> Result<IdleResult, BoxError> {
    let timing = RaftTiming {
        quiet_groups: quiet,
        ..RaftTiming::default()
    };
    let setup = Instant::now();
    let c = start(dir, timing).await?;
    let pb = bar(
        args.idle_groups as u64,
        format!("idle: {} groups, quiet={quiet}", args.idle_groups),
    );
    for g in 1..=args.idle_groups as u64 {
        c.create_groups([g], &[0, 1, 2]).await?;
        pb.inc(1);
    }
    for g in 1..=args.idle_groups as u64 {
        c.leader(g, Duration::from_secs(60)).await?;
    }
    pb.finish_and_clear();
    let setup_seconds = setup.elapsed().as_secs_f64();
    // Let elections and initial appends settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.idle_seconds)).await;
    let cpu = cpu_seconds() - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    let rss = crate::rss::now();
    let r = IdleResult {
        quiet_groups: quiet,
        groups_per_node: args.idle_groups,
        seconds: wall,
        cpu_percent_per_node: cpu / wall / 3.0 * 100.0,
        rss_mib_per_node: rss.total_bytes as f64 / 3.0 / (1 << 20) as f64,
        setup_seconds,
    };
    c.shutdown().await;
    Ok(r)
}

async fn failover(args: &RaftArgs, dir: PathBuf) -> Result<FailoverResult, BoxError> {
    let timing = RaftTiming::default();
    let election = (timing.election_min_ms, timing.election_max_ms);
    let mut c = start(dir, timing).await?;
    let pb = bar(1, "failover: setting up".into());
    setup_groups(&c, 1, args.dim, &pb).await?;
    pb.finish_and_clear();
    let gid = 1;
    let t = Duration::from_secs(60);
    let pb = bar(
        args.failover_trials as u64,
        "failover: killing leaders".into(),
    );
    let mut samples = Vec::new();
    for trial in 0..args.failover_trials {
        let req = |n: u64| {
            ShardRequest::new(Command::upsert(
                "bench",
                vec![Memory::new(
                    format!("f{trial}-{n}"),
                    "u",
                    vector(args.dim, n),
                    n as i64,
                )],
            ))
        };
        c.write(gid, req(0), t).await?;
        let leader = c.leader(gid, t).await?;
        let t0 = Instant::now();
        c.kill(leader).await;
        let ack = c.write(gid, req(1), t).await?;
        samples.push(t0.elapsed().as_secs_f64() * 1000.0);
        c.restart(leader).await?;
        c.wait_applied(gid, ack.index, &[leader], t).await?;
        pb.inc(1);
    }
    pb.finish_and_clear();
    c.shutdown().await;
    let mut sorted = samples.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    Ok(FailoverResult {
        trials: samples.len(),
        p50_ms: sorted.get(sorted.len() / 2).copied().unwrap_or(0.0),
        max_ms: sorted.last().copied().unwrap_or(0.0),
        min_ms: sorted.first().copied().unwrap_or(0.0),
        samples_ms: samples,
        election_timeout_ms: election,
    })
}
