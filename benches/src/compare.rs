//! `engram-bench compare`: Engram's index and the peers (hnswlib, FAISS, usearch, Qdrant's
//! engine, Milvus Lite, LanceDB) on the same data with the same parameters, back to back on
//! this machine, and the ratio table.
//!
//! Engram is measured by `engram-bench index` (in a child process: its own memory figures);
//! each peer by `benches/peers/peers.py run` (one child process per engine). For every curve
//! (an Engram tier, a peer) the table gives, at each target recall@10:
//!
//! - **QPS**: one thread, interpolated on the recall–QPS Pareto frontier. Engram's is one
//!   query per call from Rust; a peer's is the better of its one-query-per-call figure and
//!   its batch call (no Python per-query overhead): the favourable reading for the peers.
//! - **p99** (and p50) with `--concurrency` threads issuing single queries, at the smallest
//!   measured breadth reaching the target.
//! - **ingest**: vectors per second loading everything and building the index (all cores).
//! - **memory** and **disk** bytes per vector (see each engine's row notes).
//!
//! Ratios are Engram / peer for QPS and ingest (above 1: Engram is faster) and peer / Engram
//! for p99 and memory (above 1: Engram is lower).

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::load::BoxError;

#[derive(Args, Debug, Clone)]
pub struct CompareArgs {
    #[arg(long, default_value = "../shared/datasets/glove-6b-50-angular")]
    pub dataset: PathBuf,
    /// Peers to run (`benches/peers/peers.py` engine names); empty: none.
    #[arg(
        long,
        default_value = "hnswlib,faiss,usearch,qdrant,milvus,lancedb",
        value_delimiter = ','
    )]
    pub engines: Vec<String>,
    /// Extra `peers.py run` arguments for one engine, `ENGINE=ARGS` (repeatable; later
    /// arguments win). The defaults keep the slow engines' runs to minutes on the 390k set:
    /// Milvus Lite's per-query cost grows with the collection (about 5 QPS at 390k vectors
    /// here), so it is measured on the first 100 queries at five breadths.
    #[arg(
        long = "engine-args",
        default_values_t = [
            "milvus=--queries 100 --repeats 1 --latency-queries 100 --ef 10,20,40,80,160".to_string(),
            "lancedb=--queries 1000 --latency-queries 500".to_string(),
        ]
    )]
    pub engine_args: Vec<String>,
    #[arg(long, default_value_t = 16)]
    pub m: usize,
    #[arg(long, default_value_t = 200)]
    pub ef_construction: usize,
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    #[arg(long, default_value = "10,16,20,32,40,64,80,128,200,256")]
    pub ef: String,
    /// Use only the first N queries everywhere (0 = all).
    #[arg(long, default_value_t = 0)]
    pub queries: usize,
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    #[arg(long, default_value_t = 2000)]
    pub latency_queries: usize,
    /// Target recalls of the table.
    #[arg(long, default_value = "0.90,0.95,0.99", value_delimiter = ',')]
    pub recall: Vec<f64>,
    /// Engram tiers to measure (`engram-bench index --tiers`).
    #[arg(long, default_value = "hot,warm,cold")]
    pub tiers: String,
    /// Results directory (engram.json, peers-*.json, compare.json, compare.md).
    #[arg(long, default_value = "bench-results/compare")]
    pub out: PathBuf,
    /// Reuse the results already in `--out` instead of measuring again (only the table).
    #[arg(long)]
    pub reuse: bool,
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// The peers' driver (default: benches/peers/peers.py of this source tree).
    #[arg(long)]
    pub peers_script: Option<PathBuf>,
}

/// One engine (or Engram tier) at one target recall.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetPoint {
    pub target_recall: f64,
    /// Single-thread QPS at the target (None: not reached).
    pub qps: Option<f64>,
    /// The smallest breadth reaching the target, and its latency under concurrency.
    pub ef: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EngineSummary {
    pub name: String,
    pub engram: bool,
    pub version: String,
    pub points: Vec<(f64, f64)>,
    pub targets: Vec<TargetPoint>,
    pub best_recall: f64,
    pub ingest_vectors_per_s: Option<f64>,
    pub memory_bytes_per_vector: Option<f64>,
    pub disk_bytes_per_vector: Option<f64>,
    pub queries: Option<u64>,
    pub notes: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ratio {
    pub engram: String,
    pub peer: String,
    pub target_recall: f64,
    /// Engram QPS / peer QPS.
    pub qps: Option<f64>,
    /// Engram ingest / peer ingest.
    pub ingest: Option<f64>,
    /// Peer p99 / Engram p99.
    pub p99: Option<f64>,
    /// Peer memory per vector / Engram's.
    pub memory: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompareReport {
    pub dataset: String,
    pub vectors: u64,
    pub m: usize,
    pub ef_construction: usize,
    pub k: usize,
    pub concurrency: usize,
    pub engines: Vec<EngineSummary>,
    pub ratios: Vec<Ratio>,
    pub failed: Vec<String>,
}

/// QPS at `target` recall, interpolated on the Pareto frontier of `points` (recall, qps);
/// `None` when no point reaches it.
pub fn qps_at_recall(points: &[(f64, f64)], target: f64) -> Option<f64> {
    let mut sorted = points.to_vec();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.total_cmp(&a.1)));
    let mut frontier: Vec<(f64, f64)> = Vec::new();
    for p in sorted {
        if frontier.last().is_none_or(|l| p.1 > l.1) {
            frontier.push(p);
        }
    }
    frontier.reverse(); // ascending recall, descending QPS
    let last = frontier.last()?;
    if last.0 < target {
        return None;
    }
    for w in frontier.windows(2) {
        let ((r0, q0), (r1, q1)) = (w[0], w[1]);
        if r0 < target && target <= r1 {
            return Some(q0 + (q1 - q0) * (target - r0) / (r1 - r0));
        }
    }
    Some(frontier[0].1)
}

fn f(v: &Value, k: &str) -> Option<f64> {
    v.get(k).and_then(Value::as_f64)
}

fn summarise(
    name: &str,
    engram: bool,
    rows: &[&Value],
    targets: &[f64],
    qps_of: impl Fn(&Value) -> Option<f64>,
) -> EngineSummary {
    let mut points: Vec<(f64, f64, &Value)> = rows
        .iter()
        .filter_map(|r| Some((f(r, "recall_at_k")?, qps_of(r)?, *r)))
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let pairs: Vec<(f64, f64)> = points.iter().map(|p| (p.0, p.1)).collect();
    let targets = targets
        .iter()
        .map(|&t| {
            // The cheapest measured setting reaching the target (lowest ef among them).
            let at = points
                .iter()
                .filter(|p| p.0 >= t)
                .min_by(|a, b| {
                    f(a.2, "ef")
                        .unwrap_or(f64::MAX)
                        .total_cmp(&f(b.2, "ef").unwrap_or(f64::MAX))
                })
                .map(|p| p.2);
            TargetPoint {
                target_recall: t,
                qps: qps_at_recall(&pairs, t),
                ef: at.and_then(|r| f(r, "ef")),
                p50_ms: at.and_then(|r| f(r, "p50_ms")),
                p95_ms: at.and_then(|r| f(r, "p95_ms")),
                p99_ms: at.and_then(|r| f(r, "p99_ms")),
            }
        })
        .collect();
    let first = rows.first();
    let notes = if engram {
        "one query per call (Rust)".to_string()
    } else {
        let idx = first
            .and_then(|r| r.get("index"))
            .and_then(|i| i.get("index").and_then(Value::as_str))
            .unwrap_or("");
        format!("best of one-query calls and batch calls; {idx}")
    };
    EngineSummary {
        name: name.to_string(),
        engram,
        version: first
            .and_then(|r| r.get("version").and_then(Value::as_str))
            .unwrap_or(env!("CARGO_PKG_VERSION"))
            .to_string(),
        best_recall: pairs.iter().map(|p| p.0).fold(0.0, f64::max),
        points: pairs,
        targets,
        ingest_vectors_per_s: first.and_then(|r| f(r, "ingest_vectors_per_s")),
        // The peers' index memory (anonymous memory plus their mapped data files) rather
        // than their whole RSS growth, which also counts library code loaded by the build.
        memory_bytes_per_vector: first.and_then(|r| {
            f(r, "index_memory_bytes_per_vector").or_else(|| f(r, "memory_bytes_per_vector"))
        }),
        disk_bytes_per_vector: first.and_then(|r| f(r, "disk_bytes_per_vector")),
        queries: first.and_then(|r| r.get("queries").and_then(Value::as_u64)),
        notes,
    }
}

fn read_rows(p: &Path) -> Result<Vec<Value>, BoxError> {
    let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
    Ok(serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?)
}

fn run_child(mut cmd: Command, what: &str) -> Result<(), BoxError> {
    eprintln!("== {what} ==");
    let status = cmd.status().map_err(|e| format!("{what}: {e}"))?;
    if !status.success() {
        return Err(format!("{what} failed: {status}").into());
    }
    Ok(())
}

/// Builds the summaries and ratios from the results in `out`.
pub fn table(args: &CompareArgs, failed: Vec<String>) -> Result<CompareReport, BoxError> {
    let engram_rows = read_rows(&args.out.join("engram.json"))?;
    let mut engines = Vec::new();
    let mut tiers: Vec<String> = Vec::new();
    for r in &engram_rows {
        if let Some(t) = r.get("tier").and_then(Value::as_str) {
            if !tiers.iter().any(|x| x == t) {
                tiers.push(t.to_string());
            }
        }
    }
    for t in &tiers {
        let rows: Vec<&Value> = engram_rows
            .iter()
            .filter(|r| r.get("tier").and_then(Value::as_str) == Some(t))
            .collect();
        engines.push(summarise(&format!("engram {t}"), true, &rows, &args.recall, |r| {
            f(r, "qps")
        }));
    }
    for e in &args.engines {
        let p = args.out.join(format!("peers-{e}.json"));
        if !p.exists() {
            continue;
        }
        let rows = read_rows(&p)?;
        let rows: Vec<&Value> = rows.iter().filter(|r| r.get("recall_at_k").is_some()).collect();
        if rows.is_empty() {
            continue;
        }
        engines.push(summarise(e, false, &rows, &args.recall, |r| {
            match (f(r, "qps"), f(r, "qps_batch")) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            }
        }));
    }
    let mut ratios = Vec::new();
    for en in engines.iter().filter(|e| e.engram) {
        for peer in engines.iter().filter(|e| !e.engram) {
            for (i, &t) in args.recall.iter().enumerate() {
                let (a, b) = (&en.targets[i], &peer.targets[i]);
                let div = |x: Option<f64>, y: Option<f64>| match (x, y) {
                    (Some(x), Some(y)) if y > 0.0 => Some(x / y),
                    _ => None,
                };
                ratios.push(Ratio {
                    engram: en.name.clone(),
                    peer: peer.name.clone(),
                    target_recall: t,
                    qps: div(a.qps, b.qps),
                    ingest: div(en.ingest_vectors_per_s, peer.ingest_vectors_per_s),
                    p99: div(b.p99_ms, a.p99_ms),
                    memory: div(peer.memory_bytes_per_vector, en.memory_bytes_per_vector),
                });
            }
        }
    }
    let first = engram_rows.first();
    Ok(CompareReport {
        dataset: first
            .and_then(|r| r.get("dataset").and_then(Value::as_str))
            .unwrap_or("")
            .to_string(),
        vectors: first
            .and_then(|r| r.get("vectors").and_then(Value::as_u64))
            .unwrap_or(0),
        m: args.m,
        ef_construction: args.ef_construction,
        k: args.k,
        concurrency: args.concurrency,
        engines,
        ratios,
        failed,
    })
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or("—".into(), |x| format!("{x:.prec$}"))
}

/// The tables in Markdown.
pub fn markdown(r: &CompareReport) -> String {
    let mut s = String::new();
    s += &format!(
        "Data set `{}` ({} vectors), M={}, efConstruction={}, k={}; latency with {} concurrent callers.\n\n",
        r.dataset, r.vectors, r.m, r.ef_construction, r.k, r.concurrency
    );
    s += "| engine | version | QPS @0.90 | QPS @0.95 | QPS @0.99 | ef @0.95 | p50 ms @0.95 | p99 ms @0.95 | ingest vectors/s | memory B/vector | disk B/vector | best recall |\n";
    s += "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for e in &r.engines {
        let t = |x: f64| e.targets.iter().find(|p| (p.target_recall - x).abs() < 1e-9);
        let q = |x: f64| opt(t(x).and_then(|p| p.qps), 0);
        let t95 = t(0.95);
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.4} |\n",
            e.name,
            e.version,
            q(0.90),
            q(0.95),
            q(0.99),
            opt(t95.and_then(|p| p.ef), 0),
            opt(t95.and_then(|p| p.p50_ms), 3),
            opt(t95.and_then(|p| p.p99_ms), 3),
            opt(e.ingest_vectors_per_s, 0),
            opt(e.memory_bytes_per_vector, 0),
            opt(e.disk_bytes_per_vector, 0),
            e.best_recall
        );
    }
    s += "\nRatios at recall@10 = 0.95 (QPS, ingest: Engram / peer; p99, memory: peer / Engram; above 1 = Engram better):\n\n";
    s += "| Engram tier | peer | QPS | ingest | p99 | memory |\n|---|---|---:|---:|---:|---:|\n";
    for x in r.ratios.iter().filter(|x| (x.target_recall - 0.95).abs() < 1e-9) {
        s += &format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            x.engram,
            x.peer,
            opt(x.qps, 2),
            opt(x.ingest, 2),
            opt(x.p99, 2),
            opt(x.memory, 2)
        );
    }
    if !r.failed.is_empty() {
        s += "\nNot measured: ";
        s += &r.failed.join("; ");
        s += "\n";
    }
    s
}

pub fn run(args: CompareArgs) -> Result<(), BoxError> {
    std::fs::create_dir_all(&args.out)?;
    let mut failed = Vec::new();
    if !args.reuse {
        let exe = std::env::current_exe()?;
        let mut cmd = Command::new(&exe);
        cmd.arg("index")
            .arg("--dataset")
            .arg(&args.dataset)
            .args(["--m", &args.m.to_string()])
            .args(["--ef-construction", &args.ef_construction.to_string()])
            .args(["--k", &args.k.to_string(), "--ef", &args.ef])
            .args(["--queries", &args.queries.to_string()])
            .args(["--concurrency", &args.concurrency.to_string()])
            .args(["--latency-queries", &args.latency_queries.to_string()])
            .args(["--tiers", &args.tiers])
            .arg("--json")
            .arg(args.out.join("engram.json"));
        run_child(cmd, "engram-bench index")?;
        let script = args.peers_script.clone().unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/peers.py")
        });
        for e in &args.engines {
            let extra: Vec<String> = args
                .engine_args
                .iter()
                .filter_map(|x| x.split_once('='))
                .filter(|(name, _)| name.trim() == e)
                .flat_map(|(_, a)| a.split_whitespace().map(String::from).collect::<Vec<_>>())
                .collect();
            let mut cmd = Command::new(&args.python);
            cmd.arg(&script)
                .arg("run")
                .arg("--dataset")
                .arg(&args.dataset)
                .args(["--engines", e])
                .args(["--m", &args.m.to_string()])
                .args(["--ef-construction", &args.ef_construction.to_string()])
                .args(["--k", &args.k.to_string(), "--ef", &args.ef])
                .args(["--queries", &args.queries.to_string()])
                .args(["--concurrency", &args.concurrency.to_string()])
                .args(["--latency-queries", &args.latency_queries.to_string()])
                .args(&extra)
                .arg("--json")
                .arg(args.out.join(format!("peers-{e}.json")));
            if let Err(err) = run_child(cmd, &format!("peer {e}")) {
                eprintln!("{err}");
                failed.push(format!("{e}: {err}"));
            }
        }
    }
    let report = table(&args, failed)?;
    let md = markdown(&report);
    println!("{md}");
    std::fs::write(args.out.join("compare.md"), &md)?;
    std::fs::write(
        args.out.join("compare.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    eprintln!("wrote {}", args.out.join("compare.json").display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qps_is_interpolated_on_the_frontier() {
        let pts = [(0.80, 1000.0), (0.90, 800.0), (0.96, 500.0), (0.99, 200.0)];
        assert!((qps_at_recall(&pts, 0.99).unwrap_or_default() - 200.0).abs() < 1e-6);
        let q = qps_at_recall(&pts, 0.93).unwrap_or_default();
        assert!((q - 650.0).abs() < 1e-6, "{q}");
        assert_eq!(qps_at_recall(&pts, 0.995), None);
        // A dominated point (lower recall and lower QPS) does not drag the curve down.
        let pts = [(0.90, 800.0), (0.85, 100.0), (0.96, 500.0)];
        assert!((qps_at_recall(&pts, 0.85).unwrap_or_default() - 800.0).abs() < 1e-9);
    }

    #[test]
    fn the_table_uses_the_cheapest_setting_reaching_the_target() {
        let rows: Vec<Value> = vec![
            serde_json::json!({"recall_at_k": 0.94, "qps": 900.0, "ef": 32, "p99_ms": 1.0}),
            serde_json::json!({"recall_at_k": 0.97, "qps": 600.0, "ef": 64, "p99_ms": 2.0}),
            serde_json::json!({"recall_at_k": 0.99, "qps": 300.0, "ef": 128, "p99_ms": 4.0}),
        ];
        let refs: Vec<&Value> = rows.iter().collect();
        let s = summarise("x", false, &refs, &[0.95], |r| f(r, "qps"));
        assert_eq!(s.targets[0].ef, Some(64.0));
        assert_eq!(s.targets[0].p99_ms, Some(2.0));
        assert!(s.targets[0].qps.unwrap_or_default() > 600.0);
    }
}
