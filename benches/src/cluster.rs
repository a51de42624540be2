//! `engram-bench cluster`: end to end through the SDK against a running cluster (or one it
//! starts with `engram up`'s launcher): load an ANN dataset spread over T tenants × U users,
//! then search at each concurrency, and compare with the in-process index on the same data.
//!
//! Base vector i belongs to tenant `i % T` and user `(i / T) % U`. Query j searches tenant
//! `j % T` (tenant scope: fan-out over the tenant's shards, or user scope with `--scope user`).
//! Ground truth is exact: the dataset's own when T = 1 and the scope is the tenant, otherwise
//! a brute-force cosine scan over exactly the vectors the query may see.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use engram_client::{Client, ClientConfig, ErrorCode, MemoryInput, Search};
use engram_index::dataset::Dataset;
use engram_index::{Filter, IndexConfig, Memory, Metric, SearchRequest, TieredIndex, VectorIndex};
use engram_node::launch::{ClusterSpec, ProcessCluster};
use hdrhistogram::Histogram;
use rayon::prelude::*;
use serde::Serialize;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    /// `dataset`: the data set's vectors spread over tenants and users, recalls of its
    /// queries. `agent`: the agent-memory workload (`crate::agent`: Zipf-skewed tenants and
    /// users, payloads, filtered user recalls and tenant recalls, dimension `--dim`).
    #[arg(long, default_value = "dataset")]
    pub workload: String,
    /// Dataset directory (base.fvecs, query.fvecs, groundtruth.ivecs).
    #[arg(long, default_value = "../shared/datasets/glove-6b-50-angular")]
    pub dataset: PathBuf,
    /// Agent workload: vector dimension (50 = the data set's GloVe rows; else synthetic).
    #[arg(long, default_value_t = 384)]
    pub dim: usize,
    /// Agent workload: memories in all.
    #[arg(long, default_value_t = 50_000)]
    pub memories: usize,
    #[arg(long, default_value_t = 1.1)]
    pub zipf: f64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Agent workload: seconds of mixed recalls + writes at the highest concurrency.
    #[arg(long, default_value_t = 20.0)]
    pub mixed_seconds: f64,
    #[arg(long, default_value_t = 0.2)]
    pub write_share: f64,
    /// Public endpoints of a running cluster; none = start a local 3-zone cluster.
    #[arg(long, value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// Where the started cluster lives (default: a temporary directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The `engram` binary for the started cluster (default: next to engram-bench).
    #[arg(long)]
    pub engram_bin: Option<PathBuf>,
    #[arg(long, default_value_t = 10)]
    pub tenants: usize,
    #[arg(long, default_value_t = 100)]
    pub users: usize,
    /// Shared-pool shards of the started cluster.
    #[arg(long, default_value_t = 6)]
    pub shards: u32,
    /// Use only the first N base vectors (0 = all).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
    #[arg(long, default_value_t = 200)]
    pub batch: usize,
    /// Concurrent batches while loading.
    #[arg(long, default_value_t = 8)]
    pub load_concurrency: usize,
    #[arg(long, default_value = "1,16", value_delimiter = ',')]
    pub concurrency: Vec<usize>,
    #[arg(long, default_value_t = 2000)]
    pub queries: usize,
    #[arg(long, default_value_t = 10)]
    pub k: u32,
    /// HNSW search breadth for the cluster's searches.
    #[arg(long, default_value_t = 64)]
    pub ef: u32,
    /// `tenant` (fan-out) or `user` (one shard).
    #[arg(long, default_value = "tenant")]
    pub scope: String,
    /// Read consistencies to measure: `strong` (leaders, read index) and/or `bounded`
    /// (nearest replica).
    #[arg(long, default_value = "strong,bounded", value_delimiter = ',')]
    pub consistency: Vec<String>,
    /// Also build tenant 0's data into an in-process index and measure it single-thread.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub in_process: bool,
    /// In-process breadths to find the same recall at.
    #[arg(
        long,
        default_value = "10,16,20,32,40,64,80,128,200",
        value_delimiter = ','
    )]
    pub in_process_ef: Vec<usize>,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SearchPoint {
    pub consistency: String,
    pub concurrency: usize,
    pub search_qps: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub recall_at_10: f64,
    pub partial_results: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct InProcessPoint {
    pub ef: usize,
    pub qps: f64,
    pub recall_at_10: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub dataset: String,
    pub vectors: usize,
    pub tenants: usize,
    pub users: usize,
    pub scope: String,
    pub ef: u32,
    pub ingest_vectors_per_s: f64,
    pub ingest_seconds: f64,
    /// The first concurrency's figures, flattened (the field names).
    pub search_qps: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub recall_at_10: f64,
    pub points: Vec<SearchPoint>,
    /// Tenant 0's data in one in-process `TieredIndex` (hot tier), one thread.
    pub in_process: Vec<InProcessPoint>,
    /// Cluster QPS at concurrency 1 (strong reads) / in-process QPS at the lowest ef reaching the cluster's
    /// recall (same data seen by the query, same k).
    pub e2e_to_in_process_qps_ratio: Option<f64>,
}

fn tenant_of(i: usize, t: usize) -> usize {
    i % t
}
fn user_of(i: usize, t: usize, u: usize) -> usize {
    (i / t) % u
}

fn normalise(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter().map(|x| x / n).collect()
}

pub fn run(args: ClusterArgs) -> Result<(), BoxError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(args))
}

/// `--workload agent`: the agent-memory workload on a started (or given) cluster.
async fn run_agent(args: ClusterArgs) -> Result<(), BoxError> {
    let w = crate::scale::WorkloadArgs {
        tenants: args.tenants,
        users: args.users,
        memories: args.memories,
        queries: args.queries,
        dim: args.dim,
        dataset: args.dataset.clone(),
        zipf: args.zipf,
        seed: args.seed,
        concurrency: args.concurrency.clone(),
        ef: args.ef,
        batch: args.batch,
        load_concurrency: args.load_concurrency,
        mixed_seconds: args.mixed_seconds,
        write_share: args.write_share,
    };
    let data = Arc::new(w.generate()?);
    let mut local = None;
    let endpoints = if args.endpoints.is_empty() {
        let c = crate::local::LocalCluster::start(3, 3, args.shards, args.engram_bin.clone()).await?;
        eprintln!("started a 3-zone cluster: {}", c.endpoints().join(", "));
        let e = c.endpoints();
        local = Some(c);
        e
    } else {
        args.endpoints.clone()
    };
    let nodes = local.as_ref().map_or(endpoints.len(), |c| c.cluster.len());
    let run = crate::scale::run_workload(endpoints, &data, &w, nodes, local.as_ref()).await?;
    #[derive(Serialize)]
    struct AgentReport<'a> {
        workload: &'a crate::agent::AgentSpec,
        source: &'a str,
        run: crate::scale::AgentRun,
    }
    let json = serde_json::to_string_pretty(&AgentReport {
        workload: &data.spec,
        source: &data.source,
        run,
    })?;
    match &args.json {
        Some(p) => {
            std::fs::write(p, &json)?;
            eprintln!("wrote {}", p.display());
        }
        None => println!("{json}"),
    }
    if let Some(mut c) = local {
        c.stop();
    }
    Ok(())
}

async fn run_async(args: ClusterArgs) -> Result<(), BoxError> {
    match args.workload.as_str() {
        "agent" => return run_agent(args).await,
        "dataset" => {}
        other => return Err(format!("unknown workload {other:?}: use dataset or agent").into()),
    }
    let mut ds = Dataset::load(&args.dataset)?;
    if args.limit > 0 && args.limit < ds.base.len() {
        ds.base.truncate(args.limit);
    }
    let (t, u) = (args.tenants.max(1), args.users.max(1));
    let user_scope = args.scope == "user";
    let n = ds.base.len();
    let nq = args.queries.min(ds.queries.len());
    eprintln!(
        "dataset {}: {} vectors, dim {}, {} queries; {t} tenants x {u} users",
        ds.name, n, ds.dim, nq
    );

    // The cluster: given, or started here (kept alive until the end of the run).
    let mut _keep: Option<(ProcessCluster, Option<tempfile::TempDir>)> = None;
    let endpoints = if args.endpoints.is_empty() {
        let (dir, tmp) = match &args.dir {
            Some(d) => (d.clone(), None),
            None => {
                let tmp = tempfile::tempdir()?;
                (tmp.path().join("cluster"), Some(tmp))
            }
        };
        let bin = args
            .engram_bin
            .clone()
            .or_else(|| engram_node::launch::sibling_binary("engram"))
            .ok_or("no engram binary next to engram-bench: build it (cargo build --release --bin engram) or pass --engram-bin")?;
        let mut spec = ClusterSpec::new(dir, bin);
        spec.base_port = 27_100;
        spec.settings.shared_shards = args.shards;
        let mut c = ProcessCluster::configure(spec)?;
        c.start_all()?;
        c.wait_ready(Duration::from_secs(120)).await?;
        eprintln!("started a 3-zone cluster: {}", c.endpoints().join(", "));
        let e = c.endpoints();
        _keep = Some((c, tmp));
        e
    } else {
        args.endpoints.clone()
    };
    let client = Client::with_config(
        endpoints,
        ClientConfig {
            timeout: Duration::from_secs(60),
            max_attempts: 20,
            // Large load batches take seconds under load: one attempt may use the whole budget.
            attempt_timeout: Duration::from_secs(60),
            ..ClientConfig::default()
        },
    )?;

    // Fresh collections.
    for ti in 0..t {
        let tenant = format!("bench-{ti}");
        let _ = client.drop_collection(&tenant, "glove").await;
        match client
            .create_collection(&tenant, "glove", ds.dim as u32)
            .await
        {
            Ok(_) => {}
            Err(e) if e.code == ErrorCode::CollectionExists => {}
            Err(e) => return Err(e.into()),
        }
    }

    // Ingest: per tenant, batches of consecutive vectors, `load_concurrency` in flight.
    let started = Instant::now();
    let base = Arc::new(ds.base.clone());
    let mut jobs: Vec<(usize, Vec<usize>)> = Vec::new();
    for ti in 0..t {
        let ids: Vec<usize> = (ti..n).step_by(t).collect();
        for chunk in ids.chunks(args.batch.max(1)) {
            jobs.push((ti, chunk.to_vec()));
        }
    }
    let pb = indicatif::ProgressBar::new(n as u64);
    let sem = Arc::new(tokio::sync::Semaphore::new(args.load_concurrency.max(1)));
    let mut tasks = Vec::new();
    for (ti, ids) in jobs {
        let permit = sem.clone().acquire_owned().await?;
        let (client, base, pb) = (client.clone(), base.clone(), pb.clone());
        tasks.push(tokio::spawn(async move {
            let batch: Vec<MemoryInput> = ids
                .iter()
                .map(|&i| {
                    MemoryInput::new(
                        i.to_string(),
                        format!("user-{}", user_of(i, t, u)),
                        base[i].clone(),
                    )
                })
                .collect();
            let key = format!("bench-load-{ti}-{}", ids[0]);
            let r = client
                .upsert_batch(&format!("bench-{ti}"), "glove", batch, Some(key))
                .await;
            pb.inc(ids.len() as u64);
            drop(permit);
            r
        }));
    }
    for task in tasks {
        task.await??;
    }
    pb.finish_and_clear();
    let ingest_seconds = started.elapsed().as_secs_f64();
    let ingest = n as f64 / ingest_seconds;
    eprintln!("ingest: {n} vectors in {ingest_seconds:.1} s = {ingest:.0} vectors/s");

    // Ground truth per query: what the query may see, scanned exactly.
    let queries: Vec<(usize, Option<usize>, Vec<f32>)> = (0..nq)
        .map(|j| (j % t, user_scope.then_some(j % u), ds.queries[j].clone()))
        .collect();
    let normed: Vec<Vec<f32>> = ds.base.par_iter().map(|v| normalise(v)).collect();
    let k = args.k as usize;
    let truth: Vec<Vec<u32>> = if t == 1 && !user_scope && args.limit == 0 {
        ds.groundtruth
            .iter()
            .take(nq)
            .map(|g| g[..k.min(g.len())].to_vec())
            .collect()
    } else {
        queries
            .par_iter()
            .map(|(ti, ui, q)| {
                let q = normalise(q);
                let mut scored: Vec<(f32, u32)> = (0..n)
                    .filter(|&i| {
                        tenant_of(i, t) == *ti && ui.is_none_or(|uu| user_of(i, t, u) == uu)
                    })
                    .map(|i| {
                        (
                            normed[i].iter().zip(&q).map(|(a, b)| a * b).sum::<f32>(),
                            i as u32,
                        )
                    })
                    .collect();
                scored.sort_by(|a, b| b.0.total_cmp(&a.0));
                scored.into_iter().take(k).map(|(_, i)| i).collect()
            })
            .collect()
    };

    let make = |j: usize, consistency: &str| {
        let (ti, ui, q) = &queries[j];
        let s = match ui {
            Some(uu) => Search::user(format!("user-{uu}"), q.clone(), args.k),
            None => Search::tenant(q.clone(), args.k),
        }
        .ef(args.ef);
        let s = if consistency == "bounded" {
            s.bounded()
        } else {
            s
        };
        (format!("bench-{ti}"), s)
    };
    // Warm-up (connections, caches).
    for j in 0..nq.min(200) {
        let (tenant, s) = make(j, "strong");
        client.search(&tenant, "glove", s).await?;
    }
    let mut points = Vec::new();
    for consistency in &args.consistency {
        for &c in &args.concurrency {
            let c = c.max(1);
            let started = Instant::now();
            let mut workers = Vec::new();
            for w in 0..c {
                let client = client.clone();
                let jobs: Vec<(usize, String, Search)> = (w..nq)
                    .step_by(c)
                    .map(|j| {
                        let (t, s) = make(j, consistency);
                        (j, t, s)
                    })
                    .collect();
                workers.push(tokio::spawn(async move {
                    let mut hist =
                        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
                    let mut found = Vec::new();
                    let mut partial = 0;
                    for (j, tenant, s) in jobs {
                        let t0 = Instant::now();
                        let r = client.search(&tenant, "glove", s).await?;
                        let _ = hist.record(t0.elapsed().as_micros().max(1) as u64);
                        partial += r.partial as usize;
                        let ids: Vec<u32> = r
                            .hits
                            .iter()
                            .filter_map(|h| h.memory.as_ref()?.id.parse().ok())
                            .collect();
                        found.push((j, ids));
                    }
                    Ok::<_, engram_client::Error>((hist, found, partial))
                }));
            }
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut recall_sum = 0.0;
            let mut partial = 0;
            for w in workers {
                let (h, found, p) = w.await??;
                hist.add(&h)?;
                partial += p;
                for (j, ids) in found {
                    let want = &truth[j];
                    recall_sum += ids.iter().take(k).filter(|i| want.contains(i)).count() as f64
                        / want.len().max(1) as f64;
                }
            }
            let secs = started.elapsed().as_secs_f64();
            let p = SearchPoint {
                consistency: consistency.clone(),
                concurrency: c,
                search_qps: nq as f64 / secs,
                p50_ms: hist.value_at_quantile(0.50) as f64 / 1000.0,
                p95_ms: hist.value_at_quantile(0.95) as f64 / 1000.0,
                p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
                recall_at_10: recall_sum / nq as f64,
                partial_results: partial,
            };
            eprintln!(
            "search {consistency} c={c}: {:.0} QPS, p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, recall@{k} {:.4}",
            p.search_qps, p.p50_ms, p.p95_ms, p.p99_ms, p.recall_at_10
        );
            points.push(p);
        }
    }

    // The same data in one in-process index, one thread: what the network, routing, Raft
    // read-index and fan-out cost on top.
    let mut in_process = Vec::new();
    if args.in_process {
        let tmp = tempfile::tempdir()?;
        let ix = TieredIndex::create(
            tmp.path().join("ix"),
            IndexConfig::new(ds.dim, Metric::Cosine),
        )?;
        let mine: Vec<usize> = (0..n).filter(|&i| tenant_of(i, t) == 0).collect();
        let memories: Vec<Memory> = mine
            .iter()
            .map(|&i| {
                Memory::new(
                    format!("user-{}\u{1f}{i}", user_of(i, t, u)),
                    format!("user-{}", user_of(i, t, u)),
                    ds.base[i].clone(),
                    1,
                )
            })
            .collect();
        for chunk in memories.chunks(10_000) {
            ix.upsert_batch(chunk.to_vec())?;
        }
        let qs: Vec<usize> = (0..nq).filter(|j| queries[*j].0 == 0).collect();
        for &ef in &args.in_process_ef {
            let reqs: Vec<SearchRequest> = qs
                .iter()
                .map(|&j| {
                    let r = SearchRequest::new(queries[j].2.clone(), k).with_ef(ef);
                    match queries[j].1 {
                        Some(uu) => r.with_filter(Filter::user(format!("user-{uu}"))),
                        None => r,
                    }
                })
                .collect();
            let mut best = f64::MAX;
            let mut recall_sum = 0.0;
            for rep in 0..3 {
                let t0 = Instant::now();
                let mut rs = 0.0;
                for (qi, r) in reqs.iter().enumerate() {
                    let hits = ix.search(r)?;
                    let want = &truth[qs[qi]];
                    rs += hits
                        .iter()
                        .filter_map(|h| {
                            h.id()
                                .split_once('\u{1f}')
                                .and_then(|(_, id)| id.parse::<u32>().ok())
                        })
                        .filter(|i| want.contains(i))
                        .count() as f64
                        / want.len().max(1) as f64;
                }
                best = best.min(t0.elapsed().as_secs_f64());
                if rep == 0 {
                    recall_sum = rs;
                }
            }
            let point = InProcessPoint {
                ef,
                qps: reqs.len() as f64 / best,
                recall_at_10: recall_sum / reqs.len().max(1) as f64,
            };
            eprintln!(
                "in-process ef={ef}: {:.0} QPS, recall@{k} {:.4}",
                point.qps, point.recall_at_10
            );
            in_process.push(point);
        }
    }
    let ratio = points
        .iter()
        .find(|p| p.concurrency == 1 && p.consistency == "strong")
        .or(points.first())
        .and_then(|c1| {
            in_process
                .iter()
                .find(|p| p.recall_at_10 >= c1.recall_at_10 - 0.005)
                .map(|p| c1.search_qps / p.qps)
        });
    if let Some(r) = ratio {
        eprintln!("end-to-end QPS (c=1) / in-process QPS at the same recall: {r:.3}");
    }
    let first = points.first().cloned().ok_or("no concurrency given")?;
    let report = Report {
        dataset: ds.name.clone(),
        vectors: n,
        tenants: t,
        users: u,
        scope: args.scope.clone(),
        ef: args.ef,
        ingest_vectors_per_s: ingest,
        ingest_seconds,
        search_qps: first.search_qps,
        p50_ms: first.p50_ms,
        p95_ms: first.p95_ms,
        p99_ms: first.p99_ms,
        recall_at_10: first.recall_at_10,
        points,
        in_process,
        e2e_to_in_process_qps_ratio: ratio,
    };
    let json = serde_json::to_string_pretty(&report)?;
    println!("{json}");
    if let Some(p) = &args.json {
        std::fs::write(p, json)?;
    }
    if let Some((mut c, _)) = _keep.take() {
        c.stop_all(Duration::from_secs(10));
    }
    Ok(())
}
