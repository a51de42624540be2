//! `engram-bench scale`: the same agent-memory workload on local clusters of 1, 3 and 6
//! nodes (each a fresh cluster of real node processes), for the scaling curve.
//!
//! On one machine every node shares the same cores, so the curve shows what replication and
//! routing cost as the cluster grows on fixed hardware (and how much a node count helps when
//! the bottleneck is not the CPU); it is not a scale-out measurement on independent machines.
//! The report records the cores it ran on next to the figures.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use engram_client::{Client, ClientConfig};
use serde::Serialize;

use crate::agent::{AgentData, AgentSpec};
use crate::load::{self, BoxError, IngestReport, MixedPoint, RecallPoint};
use crate::local::LocalCluster;

#[derive(Args, Debug, Clone)]
pub struct ScaleArgs {
    /// Node counts, one fresh cluster each.
    #[arg(long, default_value = "1,3,6", value_delimiter = ',')]
    pub nodes: Vec<usize>,
    #[arg(long, default_value_t = 3)]
    pub zones: usize,
    /// Shared-pool shards (the same on every cluster size).
    #[arg(long, default_value_t = 6)]
    pub shards: u32,
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// The `engram` binary (default: next to engram-bench).
    #[arg(long)]
    pub engram_bin: Option<PathBuf>,
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The scaling curve (SVG).
    #[arg(long)]
    pub svg: Option<PathBuf>,
}

/// The agent-memory workload's knobs (shared by `cluster --workload agent` and `scale`).
#[derive(Args, Debug, Clone)]
pub struct WorkloadArgs {
    #[arg(long, default_value_t = 10)]
    pub tenants: usize,
    /// Users per tenant.
    #[arg(long, default_value_t = 100)]
    pub users: usize,
    #[arg(long, default_value_t = 50_000)]
    pub memories: usize,
    #[arg(long, default_value_t = 2_000)]
    pub queries: usize,
    /// 50 uses the GloVe rows of `--dataset`; other dimensions are synthetic and clustered.
    #[arg(long, default_value_t = 384)]
    pub dim: usize,
    /// Data set for dimension 50.
    #[arg(long, default_value = "../shared/datasets/glove-6b-50-angular")]
    pub dataset: PathBuf,
    #[arg(long, default_value_t = 1.1)]
    pub zipf: f64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Recall concurrencies.
    #[arg(long, default_value = "1,16", value_delimiter = ',')]
    pub concurrency: Vec<usize>,
    /// HNSW search breadth (0 = the collection's default).
    #[arg(long, default_value_t = 64)]
    pub ef: u32,
    #[arg(long, default_value_t = 200)]
    pub batch: usize,
    /// Concurrent batches while loading.
    #[arg(long, default_value_t = 8)]
    pub load_concurrency: usize,
    /// Seconds of mixed recalls + single-memory writes at the highest concurrency (0: none).
    #[arg(long, default_value_t = 20.0)]
    pub mixed_seconds: f64,
    #[arg(long, default_value_t = 0.2)]
    pub write_share: f64,
}

impl WorkloadArgs {
    pub fn generate(&self) -> Result<AgentData, BoxError> {
        let ds = if self.dim == 50 {
            Some(engram_index::dataset::Dataset::load(&self.dataset)?)
        } else {
            None
        };
        let spec = AgentSpec {
            tenants: self.tenants,
            users: self.users,
            memories: self.memories,
            queries: self.queries,
            dim: self.dim,
            zipf: self.zipf,
            seed: self.seed,
            ..AgentSpec::default()
        };
        eprintln!(
            "generating the agent workload: {} tenants x {} users, {} memories of dim {}, {} recalls (exact ground truth)...",
            spec.tenants, spec.users, spec.memories, spec.dim, spec.queries
        );
        Ok(AgentData::generate(spec, ds.as_ref())?)
    }
}

/// The workload's figures on one cluster.
#[derive(Debug, Clone, Serialize)]
pub struct AgentRun {
    pub nodes: usize,
    pub ingest: IngestReport,
    pub recall: Vec<RecallPoint>,
    pub mixed: Option<MixedPoint>,
    /// After the load and the mixed phase, summed over the nodes.
    pub rss_bytes: u64,
    pub disk_bytes: u64,
}

/// Loads the workload into the cluster at `endpoints` and measures it.
pub async fn run_workload(
    endpoints: Vec<String>,
    data: &Arc<AgentData>,
    w: &WorkloadArgs,
    nodes: usize,
    cluster: Option<&LocalCluster>,
) -> Result<AgentRun, BoxError> {
    let client = Client::with_config(
        endpoints,
        ClientConfig {
            timeout: std::time::Duration::from_secs(60),
            max_attempts: 20,
            attempt_timeout: std::time::Duration::from_secs(60),
            ..ClientConfig::default()
        },
    )?;
    load::create_collections(&client, data).await?;
    let ingest = load::ingest(&client, data, w.batch, w.load_concurrency, true).await?;
    eprintln!(
        "  ingest: {} memories in {:.1} s = {:.0} vectors/s",
        ingest.memories, ingest.seconds, ingest.vectors_per_s
    );
    // Warm-up: connections, caches, the first page faults.
    load::recall(&client, data, 4, w.queries.min(200), w.ef, false).await?;
    let mut recall = Vec::new();
    for &c in &w.concurrency {
        let p = load::recall(&client, data, c, w.queries, w.ef, false).await?;
        eprintln!(
            "  recall c={c}: {:.0} QPS, p50 {:.2} ms, p99 {:.2} ms, recall@{} {:.4}",
            p.overall.qps, p.overall.p50_ms, p.overall.p99_ms, data.spec.k, p.recall_at_k
        );
        recall.push(p);
    }
    let mixed = if w.mixed_seconds > 0.0 {
        let c = w.concurrency.iter().copied().max().unwrap_or(16);
        let m = load::mixed(&client, data, c, w.mixed_seconds, w.write_share, w.ef).await?;
        eprintln!(
            "  mixed c={c}: recalls {:.0}/s p99 {:.2} ms; writes {:.0}/s p50 {:.2} ms p99 {:.2} ms",
            m.recalls.qps, m.recalls.p99_ms, m.writes.qps, m.writes.p50_ms, m.writes.p99_ms
        );
        Some(m)
    } else {
        None
    };
    Ok(AgentRun {
        nodes,
        ingest,
        recall,
        mixed,
        rss_bytes: cluster.map(|c| c.rss_bytes()).unwrap_or(0),
        disk_bytes: cluster.map(|c| c.disk_bytes()).unwrap_or(0),
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct ScaleReport {
    pub workload: AgentSpec,
    pub source: String,
    pub cores: usize,
    pub runs: Vec<AgentRun>,
}

pub fn run(args: ScaleArgs) -> Result<(), BoxError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let data = Arc::new(args.workload.generate()?);
        let mut runs = Vec::new();
        for &n in &args.nodes {
            eprintln!("== {n} node(s) ==");
            let mut cluster = LocalCluster::start(
                n,
                args.zones.min(n),
                args.shards,
                args.engram_bin.clone(),
            )
            .await?;
            let r = run_workload(cluster.endpoints(), &data, &args.workload, n, Some(&cluster))
                .await?;
            cluster.stop();
            runs.push(r);
        }
        let report = ScaleReport {
            workload: data.spec.clone(),
            source: data.source.clone(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            runs,
        };
        if let Some(p) = &args.svg {
            std::fs::write(p, crate::plot::scaling_curve(&report)?)?;
            eprintln!("wrote {}", p.display());
        }
        let json = serde_json::to_string_pretty(&report)?;
        match &args.json {
            Some(p) => {
                std::fs::write(p, &json)?;
                eprintln!("wrote {}", p.display());
            }
            None => println!("{json}"),
        }
        Ok(())
    })
}
