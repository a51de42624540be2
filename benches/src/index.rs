//! `engram-bench index`: recall and single-thread QPS of each tier on an ANN dataset.
//!
//! 1. Build: every base vector goes into the hot tier (hnsw_rs, `--build-threads` threads).
//! 2. Hot: search every query once per ef, one thread, best of `--repeats` timings.
//! 3. Seal the hot tier into a warm segment; a *fresh process* (`engram-bench reopen`) opens
//!    the index from disk — a restart — timing the open, then searches the warm tier.
//! 4. Move the warm segment to cold; a fresh process opens it and measures resident memory
//!    before and after searching the cold tier.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use engram_index::dataset::Dataset;
use engram_index::{
    IndexConfig, Memory, Metric, SearchRequest, Tier, TierSelection, TieredIndex, VectorIndex,
    WarmResidency,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::rss;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Args, Debug, Clone)]
pub struct IndexArgs {
    /// Dataset directory (base.fvecs, query.fvecs, groundtruth.ivecs), e.g.
    /// ../shared/datasets/glove-6b-50-angular
    #[arg(long)]
    pub dataset: PathBuf,
    #[arg(long, default_value_t = 16)]
    pub m: usize,
    #[arg(long, default_value_t = 200)]
    pub ef_construction: usize,
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// Comma-separated search breadths.
    #[arg(
        long,
        default_value = "10,16,20,32,40,64,80,128,200,256",
        value_delimiter = ','
    )]
    pub ef: Vec<usize>,
    /// Tiers to measure.
    #[arg(long, default_value = "hot,warm,cold", value_delimiter = ',')]
    pub tiers: Vec<String>,
    /// Warm segment residencies to measure (each in its own fresh process): `resident`
    /// (copied into huge-page memory at open) and/or `mapped` (served from the page cache).
    #[arg(long, default_value = "resident,mapped", value_delimiter = ',')]
    pub warm_residency: Vec<String>,
    /// Cold tier breadths: candidates of the int8 scan re-ranked exactly.
    #[arg(long, default_value = "20,40,80,160", value_delimiter = ',')]
    pub cold_ef: Vec<usize>,
    /// Use only the first N queries (0 = all).
    #[arg(long, default_value_t = 0)]
    pub queries: usize,
    /// The cold tier scans its codes per query: measure it on the first N queries only.
    #[arg(long, default_value_t = 500)]
    pub cold_queries: usize,
    /// Time each ef this many times and keep the best (as the peers script does).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Threads for the build (search is always one thread). 0 = all cores.
    #[arg(long, default_value_t = 0)]
    pub build_threads: usize,
    /// Latency under load: this many threads issuing one query per call at each ef
    /// (p50 / p95 / p99 and throughput); 0 skips it.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Queries per latency measurement (cycled over the query set).
    #[arg(long, default_value_t = 2000)]
    pub latency_queries: usize,
    /// Where to build the index (default: a temporary directory, removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Write the per-ef results as a JSON list to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct ReopenArgs {
    #[arg(long)]
    pub dir: PathBuf,
    #[arg(long)]
    pub dataset: PathBuf,
    #[arg(long)]
    pub tier: String,
    #[arg(long, default_value = "resident")]
    pub warm_residency: String,
    #[arg(long)]
    pub k: usize,
    #[arg(long, value_delimiter = ',')]
    pub ef: Vec<usize>,
    #[arg(long, value_delimiter = ',')]
    pub cold_ef: Vec<usize>,
    #[arg(long)]
    pub queries: usize,
    #[arg(long)]
    pub repeats: usize,
    #[arg(long, default_value_t = 0)]
    pub concurrency: usize,
    #[arg(long, default_value_t = 2000)]
    pub latency_queries: usize,
}

/// One measured point: the JSON row format of `--json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub engine: String,
    pub tier: String,
    /// Search breadth: HNSW ef (hot, warm); candidates re-ranked exactly (cold).
    pub ef: usize,
    pub recall_at_k: f64,
    pub qps: f64,
    pub build_seconds: f64,
    pub k: usize,
    pub m: usize,
    pub ef_construction: usize,
    pub dataset: String,
    pub vectors: usize,
    /// Seconds to open the index from disk in a fresh process (warm, cold).
    pub open_seconds: Option<f64>,
    /// Resident memory of the measuring process after the searches.
    pub rss_bytes: u64,
    /// Cold: resident memory added by opening and searching the cold tier.
    pub tier_resident_bytes: Option<u64>,
    /// Size of the raw f32 vectors (n × dim × 4).
    pub raw_vector_bytes: u64,
    /// Vectors inserted per second by the build (the hot tier, `--build-threads`).
    pub ingest_vectors_per_s: f64,
    /// Resident memory the tier adds, per vector: hot = the build's growth; warm = what
    /// opening the segment added (resident: copied into memory; mapped: pages faulted in by
    /// the searches); cold = what opening and searching it added.
    pub memory_bytes_per_vector: f64,
    /// Bytes on disk per vector once this tier holds everything (the index directory).
    pub disk_bytes_per_vector: f64,
    /// Latency with `concurrency` threads, one query per call (0: not measured).
    pub concurrency: usize,
    pub qps_concurrent: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// Latency under concurrency at one setting: (qps, p50, p95, p99) in ms.
type Latency = (f64, f64, f64, f64);

/// What the `reopen` child prints (one JSON line on stdout).
#[derive(Debug, Serialize, Deserialize)]
struct ReopenReport {
    open_seconds: f64,
    rss_before_open: rss::Rss,
    rss_after_open: rss::Rss,
    rss_after_search: rss::Rss,
    /// (ef, recall, qps, latency under concurrency)
    points: Vec<(usize, f64, f64, Option<Latency>)>,
}

pub fn run(args: IndexArgs) -> Result<(), BoxError> {
    let data = Dataset::load(&args.dataset)?;
    let nq = query_count(&data, args.queries);
    let tmp;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().join("index")
        }
    };
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    eprintln!(
        "dataset {}: {} vectors × {} dims, {} queries, k={}, M={}, efConstruction={}",
        data.name,
        data.base.len(),
        data.dim,
        nq,
        args.k,
        args.m,
        args.ef_construction
    );
    let mut config = IndexConfig::new(data.dim, Metric::Cosine);
    config.hnsw.m = args.m;
    config.hnsw.ef_construction = args.ef_construction;
    config.policy.hot_max_memories = data.base.len() + 1;
    config.policy.promote_on_recall = false;
    let index = Arc::new(TieredIndex::create(&dir, config)?);

    let threads = if args.build_threads == 0 {
        num_cpus()
    } else {
        args.build_threads
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let rss_before_build = rss::now();
    let build_seconds = pool.install(|| build(&index, &data))?;
    let rss_after_build = rss::now();
    eprintln!(
        "build: {build_seconds:.1} s with {threads} threads; resident +{:.0} MiB",
        rss::mib(
            rss_after_build
                .total_bytes
                .saturating_sub(rss_before_build.total_bytes)
        )
    );

    let raw = (data.base.len() * data.dim * 4) as u64;
    let n = data.base.len().max(1) as f64;
    let hot_memory = rss_after_build
        .total_bytes
        .saturating_sub(rss_before_build.total_bytes) as f64
        / n;
    let hot_disk = crate::dir_bytes(&dir) as f64 / n;
    let conc = args.concurrency;
    let row = |tier: &str, ef: usize, recall: f64, qps: f64, lat: Option<Latency>| Row {
        engine: "engram".into(),
        tier: tier.into(),
        ef,
        recall_at_k: recall,
        qps,
        build_seconds,
        k: args.k,
        m: args.m,
        ef_construction: args.ef_construction,
        dataset: data.name.clone(),
        vectors: data.base.len(),
        open_seconds: None,
        rss_bytes: rss::now().total_bytes,
        tier_resident_bytes: None,
        raw_vector_bytes: raw,
        ingest_vectors_per_s: n / build_seconds.max(1e-9),
        memory_bytes_per_vector: hot_memory,
        disk_bytes_per_vector: hot_disk,
        concurrency: if lat.is_some() { conc } else { 0 },
        qps_concurrent: lat.map(|l| l.0),
        p50_ms: lat.map(|l| l.1),
        p95_ms: lat.map(|l| l.2),
        p99_ms: lat.map(|l| l.3),
    };
    let mut rows = Vec::new();
    let wants = |t: &str| args.tiers.iter().any(|x| x == t);
    if wants("hot") {
        for &ef in &args.ef {
            let (recall, qps) = measure(&index, &data, nq, args.k, ef, Tier::Hot, args.repeats)?;
            let lat = latency(&index, &data, args.k, ef, Tier::Hot, conc, args.latency_queries)?;
            rows.push(row("hot", ef, recall, qps, lat));
            print_row(rows.last().unwrap_or_else(|| unreachable!()));
        }
    }
    if wants("warm") || wants("cold") {
        let t = Instant::now();
        let sealed = index.seal_hot()?;
        eprintln!(
            "seal: {sealed} memories into a warm segment in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    drop(index);
    let warm_disk = crate::dir_bytes(&dir) as f64 / n;
    let child = |tier: &str, residency: &str| -> Result<ReopenReport, BoxError> {
        let out = Command::new(std::env::current_exe()?)
            .arg("reopen")
            .args([
                "--dir",
                &dir.to_string_lossy(),
                "--dataset",
                &args.dataset.to_string_lossy(),
            ])
            .args([
                "--tier",
                tier,
                "--k",
                &args.k.to_string(),
                "--ef",
                &join(&args.ef),
            ])
            .args(["--cold-ef", &join(&args.cold_ef)])
            .args([
                "--queries",
                &(if tier == "cold" {
                    nq.min(args.cold_queries.max(1))
                } else {
                    nq
                })
                .to_string(),
            ])
            .args([
                "--repeats",
                &args.repeats.to_string(),
                "--warm-residency",
                residency,
                "--concurrency",
                &conc.to_string(),
                "--latency-queries",
                &(if tier == "cold" {
                    args.latency_queries.min(args.cold_queries.max(1))
                } else {
                    args.latency_queries
                })
                .to_string(),
            ])
            .stderr(std::process::Stdio::inherit())
            .output()?;
        if !out.status.success() {
            return Err(format!("reopen --tier {tier} failed: {}", out.status).into());
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    };
    if wants("warm") {
        for residency in &args.warm_residency {
            let rep = child("warm", residency)?;
            let label = if residency == "resident" {
                "warm".to_string()
            } else {
                format!("warm-{residency}")
            };
            eprintln!(
                "{label}: reopened in a fresh process in {:.3} s (no rebuild); resident after open {:.0} MiB",
                rep.open_seconds,
                rss::mib(rep.rss_after_open.total_bytes)
            );
            // Resident: what the open copied in; mapped: the segment pages the searches
            // faulted in (file-backed).
            let added = if residency == "resident" {
                rep.rss_after_open
                    .total_bytes
                    .saturating_sub(rep.rss_before_open.total_bytes)
            } else {
                rep.rss_after_search
                    .file_bytes
                    .saturating_sub(rep.rss_before_open.file_bytes)
            };
            for (ef, recall, qps, lat) in rep.points {
                let mut r = row(&label, ef, recall, qps, lat);
                r.open_seconds = Some(rep.open_seconds);
                r.rss_bytes = rep.rss_after_search.total_bytes;
                r.memory_bytes_per_vector = added as f64 / n;
                r.disk_bytes_per_vector = warm_disk;
                rows.push(r);
                print_row(rows.last().unwrap_or_else(|| unreachable!()));
            }
        }
    }
    if wants("cold") {
        let index = TieredIndex::open(&dir)?;
        let t = Instant::now();
        index.demote_all_warm()?;
        eprintln!("demote: warm → cold in {:.1} s", t.elapsed().as_secs_f64());
        drop(index);
        let cold_disk = crate::dir_bytes(&dir) as f64 / n;
        let rep = child("cold", "mapped")?;
        let resident = rep
            .rss_after_search
            .total_bytes
            .saturating_sub(rep.rss_before_open.total_bytes);
        eprintln!(
            "cold: opened in {:.3} s; resident for the cold tier {:.1} MiB = {:.1}% of the raw f32 vectors ({:.1} MiB)",
            rep.open_seconds,
            rss::mib(resident),
            100.0 * resident as f64 / raw as f64,
            rss::mib(raw)
        );
        for (ef, recall, qps, lat) in rep.points {
            let mut r = row("cold", ef, recall, qps, lat);
            r.open_seconds = Some(rep.open_seconds);
            r.rss_bytes = rep.rss_after_search.total_bytes;
            r.tier_resident_bytes = Some(resident);
            r.memory_bytes_per_vector = resident as f64 / n;
            r.disk_bytes_per_vector = cold_disk;
            rows.push(r);
            print_row(rows.last().unwrap_or_else(|| unreachable!()));
        }
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&rows)?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// The `reopen` child: open the index from disk, then measure one tier.
pub fn reopen(args: ReopenArgs) -> Result<(), BoxError> {
    let data = Dataset::load(&args.dataset)?;
    let before = rss::now();
    let residency = match args.warm_residency.as_str() {
        "resident" => WarmResidency::Resident,
        "mapped" => WarmResidency::Mapped,
        other => return Err(format!("unknown warm residency {other:?}").into()),
    };
    let t = Instant::now();
    let index = TieredIndex::open_with(&args.dir, |c| c.warm_residency = residency)?;
    let open_seconds = t.elapsed().as_secs_f64();
    let after_open = rss::now();
    let mut points = Vec::new();
    let nq = query_count(&data, args.queries);
    match args.tier.as_str() {
        "warm" => {
            // Fault the mapped pages in once, as a serving node would have them.
            let widest = args.ef.iter().max().copied().unwrap_or(64);
            measure(&index, &data, nq, args.k, widest, Tier::Warm, 1)?;
            for &ef in &args.ef {
                let (r, q) = measure(&index, &data, nq, args.k, ef, Tier::Warm, args.repeats)?;
                let lat = latency(&index, &data, args.k, ef, Tier::Warm, args.concurrency, args.latency_queries)?;
                points.push((ef, r, q, lat));
            }
        }
        "cold" => {
            for &ef in &args.cold_ef {
                let (r, q) = measure(&index, &data, nq, args.k, ef, Tier::Cold, args.repeats)?;
                let lat = latency(&index, &data, args.k, ef, Tier::Cold, args.concurrency, args.latency_queries)?;
                points.push((ef, r, q, lat));
            }
        }
        other => return Err(format!("unknown tier {other}").into()),
    }
    let report = ReopenReport {
        open_seconds,
        rss_before_open: before,
        rss_after_open: after_open,
        rss_after_search: rss::now(),
        points,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

fn build(index: &TieredIndex, data: &Dataset) -> Result<f64, BoxError> {
    let bar = ProgressBar::new(data.base.len() as u64);
    bar.set_style(ProgressStyle::with_template(
        "build {bar:40} {pos}/{len} vectors  {per_sec}  eta {eta}",
    )?);
    let t = Instant::now();
    const BATCH: usize = 5_000;
    for (b, chunk) in data.base.chunks(BATCH).enumerate() {
        let batch: Vec<Memory> = chunk
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let row = b * BATCH + i;
                Memory::new(
                    row.to_string(),
                    format!("u{}", row % 100),
                    v.clone(),
                    row as i64,
                )
            })
            .collect();
        index.upsert_batch(batch)?;
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(t.elapsed().as_secs_f64())
}

/// Recall@k and single-thread QPS of one tier at one setting (best of `repeats` timings).
#[allow(clippy::too_many_arguments)]
fn measure(
    index: &TieredIndex,
    data: &Dataset,
    nq: usize,
    k: usize,
    ef: usize,
    tier: Tier,
    repeats: usize,
) -> Result<(f64, f64), BoxError> {
    let requests: Vec<SearchRequest> = data.queries[..nq]
        .iter()
        .map(|q| {
            SearchRequest::new(q.clone(), k)
                .with_tiers(TierSelection::only(tier))
                .with_ef(ef)
        })
        .collect();
    let mut best = f64::INFINITY;
    let mut found: Vec<Vec<u32>> = Vec::new();
    for _ in 0..repeats.max(1) {
        let mut results = Vec::with_capacity(nq);
        let t = Instant::now();
        for req in &requests {
            results.push(index.search(req)?);
        }
        best = best.min(t.elapsed().as_secs_f64());
        found = results
            .iter()
            .map(|hits| {
                hits.iter()
                    .filter_map(|h| h.id().parse::<u32>().ok())
                    .collect()
            })
            .collect();
    }
    let recall = found
        .iter()
        .enumerate()
        .map(|(q, f)| data.recall(q, f, k))
        .sum::<f64>()
        / nq as f64;
    Ok((recall, nq as f64 / best))
}

/// `threads` threads issuing one query per call (`total` queries, cycled over the query set):
/// throughput and latency percentiles. `None` when `threads` is 0.
fn latency(
    index: &TieredIndex,
    data: &Dataset,
    k: usize,
    ef: usize,
    tier: Tier,
    threads: usize,
    total: usize,
) -> Result<Option<Latency>, BoxError> {
    if threads == 0 || total == 0 || data.queries.is_empty() {
        return Ok(None);
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let t = Instant::now();
    let hists = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Result<hdrhistogram::Histogram<u64>, String> {
                    let mut h = crate::load::histogram();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= total {
                            return Ok(h);
                        }
                        let q = &data.queries[i % data.queries.len()];
                        let req = SearchRequest::new(q.clone(), k)
                            .with_tiers(TierSelection::only(tier))
                            .with_ef(ef);
                        let t0 = Instant::now();
                        index.search(&req).map_err(|e| e.to_string())?;
                        crate::load::record(&mut h, t0.elapsed());
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().map_err(|_| "a latency thread panicked".to_string())?)
            .collect::<Result<Vec<_>, String>>()
    })?;
    let secs = t.elapsed().as_secs_f64();
    let mut all = crate::load::histogram();
    for h in &hists {
        all.add(h)?;
    }
    let ms = |q: f64| all.value_at_quantile(q) as f64 / 1000.0;
    Ok(Some((total as f64 / secs, ms(0.5), ms(0.95), ms(0.99))))
}

fn print_row(r: &Row) {
    let lat = match (r.qps_concurrent, r.p99_ms) {
        (Some(q), Some(p99)) => format!("  c={} qps={q:>8.0} p99={p99:.3} ms", r.concurrency),
        _ => String::new(),
    };
    println!(
        "{:<11} ef={:<5} recall@{}={:.4}  qps={:>8.0}{lat}",
        r.tier, r.ef, r.k, r.recall_at_k, r.qps
    );
}

fn query_count(data: &Dataset, limit: usize) -> usize {
    if limit == 0 {
        data.queries.len()
    } else {
        limit.min(data.queries.len())
    }
}

fn join(v: &[usize]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
