//! `engram-bench report`: writes `benches/RESULTS.md` (and its plots) from a results
//! directory filled by `compare`, `scale`, `failover` and `cluster --workload agent`
//! (`benches/run-all.sh` runs them all, then this). Sections whose results are missing are
//! listed as not measured, never invented.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::Value;

use crate::compare::{markdown, CompareReport};
use crate::load::BoxError;

#[derive(Args, Debug, Clone)]
pub struct ReportArgs {
    /// The results directory.
    #[arg(long, default_value = "benches/results")]
    pub results: PathBuf,
    /// The Markdown report to write.
    #[arg(long, default_value = "benches/RESULTS.md")]
    pub out: PathBuf,
    /// The exact command that produced the results, quoted in the report.
    #[arg(long, default_value = "make results")]
    pub command: String,
}

fn read(p: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| format!("{:.0} GiB", kb / 1024.0 / 1024.0))
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{cores} cores ({cpu}), {mem} RAM, Linux {}", kernel.trim())
}

fn num(v: &Value, path: &[&str]) -> Option<f64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    cur.as_f64()
}

fn fmt(v: Option<f64>, prec: usize) -> String {
    v.map_or("—".into(), |x| format!("{x:.prec$}"))
}

/// Memory and disk per vector of each Engram tier (from `engram.json`).
fn tiers_table(rows: &[Value]) -> String {
    let mut s = String::from(
        "| tier | memory B/vector | disk B/vector | raw f32 B/vector | open s (fresh process) |\n|---|---:|---:|---:|---:|\n",
    );
    let mut seen = Vec::new();
    for r in rows {
        let Some(t) = r.get("tier").and_then(Value::as_str) else {
            continue;
        };
        if seen.contains(&t) {
            continue;
        }
        seen.push(t);
        let n = num(r, &["vectors"]).unwrap_or(1.0).max(1.0);
        let _ = writeln!(
            s,
            "| {t} | {} | {} | {} | {} |",
            fmt(num(r, &["memory_bytes_per_vector"]), 0),
            fmt(num(r, &["disk_bytes_per_vector"]), 0),
            fmt(num(r, &["raw_vector_bytes"]).map(|b| b / n), 0),
            fmt(num(r, &["open_seconds"]), 3)
        );
    }
    s
}

fn agent_table(name: &str, v: &Value) -> String {
    let run = v.get("run").unwrap_or(v);
    let mut s = String::new();
    let w = v.get("workload");
    let _ = writeln!(
        s,
        "**{name}** — {} tenants × {} users, {} memories, dim {} ({}), Zipf {}; ingest {} vectors/s ({} B of payload + text per memory).\n",
        fmt(w.and_then(|w| num(w, &["tenants"])), 0),
        fmt(w.and_then(|w| num(w, &["users"])), 0),
        fmt(w.and_then(|w| num(w, &["memories"])), 0),
        fmt(w.and_then(|w| num(w, &["dim"])), 0),
        v.get("source").and_then(Value::as_str).unwrap_or("?"),
        fmt(w.and_then(|w| num(w, &["zipf"])), 2),
        fmt(num(run, &["ingest", "vectors_per_s"]), 0),
        fmt(num(run, &["ingest", "payload_bytes_mean"]), 0),
    );
    s += "| recall kind | concurrency | QPS | p50 ms | p95 ms | p99 ms | recall@10 |\n|---|---:|---:|---:|---:|---:|---:|\n";
    for p in run.get("recall").and_then(Value::as_array).into_iter().flatten() {
        let c = fmt(num(p, &["concurrency"]), 0);
        let _ = writeln!(
            s,
            "| **all** | {c} | {} | {} | {} | {} | {} |",
            fmt(num(p, &["overall", "qps"]), 0),
            fmt(num(p, &["overall", "p50_ms"]), 2),
            fmt(num(p, &["overall", "p95_ms"]), 2),
            fmt(num(p, &["overall", "p99_ms"]), 2),
            fmt(num(p, &["recall_at_k"]), 4)
        );
        if let Some(kinds) = p.get("per_kind").and_then(Value::as_object) {
            for (k, kp) in kinds {
                let _ = writeln!(
                    s,
                    "| {k} | {c} | {} | {} | {} | {} | {} |",
                    fmt(num(kp, &["stats", "qps"]), 0),
                    fmt(num(kp, &["stats", "p50_ms"]), 2),
                    fmt(num(kp, &["stats", "p95_ms"]), 2),
                    fmt(num(kp, &["stats", "p99_ms"]), 2),
                    fmt(num(kp, &["recall_at_k"]), 4)
                );
            }
        }
    }
    s += "\nPer-kind rows: that kind's share of the mix (its QPS is its own completions per second of the phase).\n";
    if let Some(m) = run.get("mixed").filter(|m| !m.is_null()) {
        let _ = writeln!(
            s,
            "\nMixed phase ({} callers, {}% single-memory writes, {} s): recalls {}/s p99 {} ms; writes {}/s p50 {} ms p99 {} ms.",
            fmt(num(m, &["concurrency"]), 0),
            fmt(num(m, &["write_share"]).map(|x| x * 100.0), 0),
            fmt(num(m, &["seconds"]), 0),
            fmt(num(m, &["recalls", "qps"]), 0),
            fmt(num(m, &["recalls", "p99_ms"]), 2),
            fmt(num(m, &["writes", "qps"]), 0),
            fmt(num(m, &["writes", "p50_ms"]), 2),
            fmt(num(m, &["writes", "p99_ms"]), 2)
        );
    }
    s
}

pub fn run(args: ReportArgs) -> Result<(), BoxError> {
    let dir = &args.results;
    // Paths of the plots relative to the report.
    let rel = |file: &str| -> String {
        let base = args.out.parent().unwrap_or(Path::new("."));
        let full = dir.join(file);
        full.strip_prefix(base)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| full.display().to_string())
    };
    let mut s = String::new();
    s += "# Engram benchmark results\n\n";
    s += "Generated by `engram-bench report` from the JSON results in `";
    s += &dir.display().to_string();
    s += "`; do not edit by hand. Regenerate everything with:\n\n```sh\n";
    s += &args.command;
    s += "\n```\n\n";
    let _ = writeln!(s, "Machine: {}. Every figure below was measured on it in one run, engines back to back; the machine is shared and noisy, so read ratios, not absolute times.\n", machine());

    s += "## Engram vs the systems users would pick instead\n\n";
    match read(&dir.join("compare/compare.json"))
        .and_then(|v| serde_json::from_value::<CompareReport>(v).ok())
    {
        Some(c) => {
            s += &markdown(&c);
            let curves: Vec<(String, Vec<(f64, f64)>)> = c
                .engines
                .iter()
                .filter(|e| !e.points.is_empty())
                .map(|e| (e.name.clone(), e.points.clone()))
                .collect();
            if !curves.is_empty() {
                let svg = crate::plot::recall_qps(
                    &format!("recall@10 vs single-thread QPS on {}", c.dataset),
                    &curves,
                )?;
                std::fs::write(dir.join("recall-qps.svg"), svg)?;
                let _ = writeln!(s, "\n![recall vs QPS]({})\n", rel("recall-qps.svg"));
            }
            let lat: Vec<(String, [f64; 3])> = c
                .engines
                .iter()
                .filter_map(|e| {
                    let t = e.targets.iter().find(|t| (t.target_recall - 0.95).abs() < 1e-9)?;
                    Some((e.name.clone(), [t.p50_ms?, t.p95_ms?, t.p99_ms?]))
                })
                .collect();
            if !lat.is_empty() {
                let svg = crate::plot::latency_bars(
                    &format!(
                        "latency at recall@10 >= 0.95, {} concurrent callers, one query per call",
                        c.concurrency
                    ),
                    &lat,
                )?;
                std::fs::write(dir.join("latency.svg"), svg)?;
                let _ = writeln!(s, "![latency]({})\n", rel("latency.svg"));
            }
            s += "How each figure is measured: `benches/src/compare.rs` (and `benches/peers/peers.py` for the peers). ";
            s += "Peers' QPS is the better of one query per Python call and one batch call, which favours them; Engram's is one query per call from Rust.\n\n";
        }
        None => s += "_Not measured in this run (`engram-bench compare`)._\n\n",
    }

    s += "## Memory and disk per vector, per tier (measured)\n\n";
    match read(&dir.join("compare/engram.json")).and_then(|v| v.as_array().cloned()) {
        Some(rows) => {
            s += &tiers_table(&rows);
            s += "\nhot: resident growth of the build; warm: what opening the segment adds (resident: copied into huge-page memory; warm-mapped: pages the searches faulted in); cold: what opening and searching it adds. Disk: the index directory once that tier holds everything.\n\n";
        }
        None => s += "_Not measured in this run._\n\n",
    }

    s += "## The agent-memory workload on a cluster\n\n";
    let mut any = false;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    for f in files.iter().filter(|f| {
        f.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("cluster-agent") && n.ends_with(".json"))
    }) {
        if let Some(v) = read(f) {
            any = true;
            let name = f.file_stem().and_then(|n| n.to_str()).unwrap_or("run");
            s += &agent_table(name, &v);
            s += "\n";
        }
    }
    if !any {
        s += "_Not measured in this run (`engram-bench cluster --workload agent`)._\n\n";
    }

    s += "## Scaling: 1 → 3 → 6 nodes\n\n";
    match read(&dir.join("scale.json")) {
        Some(v) => {
            let _ = writeln!(
                s,
                "Every cluster size ran on the same {} cores: this curve shows what replication (1 copy on one node, 3 copies beyond) and routing cost on fixed hardware, not scale-out on independent machines.\n",
                fmt(num(&v, &["cores"]), 0)
            );
            s += "| nodes | ingest vectors/s | recall QPS (c=1) | recall QPS (max c) | p99 ms (max c) | mixed writes/s | write p99 ms | node RSS MiB (sum) | disk MiB (sum) |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
            for r in v.get("runs").and_then(Value::as_array).into_iter().flatten() {
                let rec = r.get("recall").and_then(Value::as_array);
                let first = rec.and_then(|a| a.first());
                let last = rec.and_then(|a| a.last());
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    fmt(num(r, &["nodes"]), 0),
                    fmt(num(r, &["ingest", "vectors_per_s"]), 0),
                    fmt(first.and_then(|p| num(p, &["overall", "qps"])), 0),
                    fmt(last.and_then(|p| num(p, &["overall", "qps"])), 0),
                    fmt(last.and_then(|p| num(p, &["overall", "p99_ms"])), 2),
                    fmt(num(r, &["mixed", "writes", "qps"]), 0),
                    fmt(num(r, &["mixed", "writes", "p99_ms"]), 2),
                    fmt(num(r, &["rss_bytes"]).map(|b| b / 1048576.0), 0),
                    fmt(num(r, &["disk_bytes"]).map(|b| b / 1048576.0), 0)
                );
            }
            if dir.join("scaling.svg").exists() {
                let _ = writeln!(s, "\n![scaling curve]({})\n", rel("scaling.svg"));
            }
        }
        None => s += "_Not measured in this run (`engram-bench scale`)._\n\n",
    }

    s += "## Failover: the leader of a shard killed\n\n";
    match read(&dir.join("failover.json")) {
        Some(v) => {
            let _ = writeln!(
                s,
                "{} nodes in {} zones; each trial SIGKILLs the node leading one of the tenant's shards and restarts it. Write unavailability (kill → every write stream acknowledged again): **p50 {} s, max {} s** over {} trials; searches back after p50 {} s, max {} s.\n",
                fmt(num(&v, &["nodes"]), 0),
                fmt(num(&v, &["zones"]), 0),
                fmt(num(&v, &["write_unavailable_p50_s"]), 2),
                fmt(num(&v, &["write_unavailable_max_s"]), 2),
                v.get("trials").and_then(Value::as_array).map_or(0, |a| a.len()),
                fmt(num(&v, &["search_unavailable_p50_s"]), 2),
                fmt(num(&v, &["search_unavailable_max_s"]), 2),
            );
            s += "| trial | killed node | shard | writes back after s | searches back after s | failed writes | failed searches |\n|---:|---:|---:|---:|---:|---:|---:|\n";
            for t in v.get("trials").and_then(Value::as_array).into_iter().flatten() {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    fmt(num(t, &["trial"]), 0),
                    fmt(num(t, &["killed_node"]), 0),
                    fmt(num(t, &["shard"]), 0),
                    fmt(num(t, &["write_unavailable_s"]), 2),
                    fmt(num(t, &["search_unavailable_s"]), 2),
                    fmt(num(t, &["failed_writes"]), 0),
                    fmt(num(t, &["failed_searches"]), 0)
                );
            }
            let _ = writeln!(
                s,
                "\nSteady state outside the trials: writes p50 {} ms, p99 {} ms; searches p50 {} ms, p99 {} ms.",
                fmt(num(&v, &["steady_write", "p50_ms"]), 2),
                fmt(num(&v, &["steady_write", "p99_ms"]), 2),
                fmt(num(&v, &["steady_search", "p50_ms"]), 2),
                fmt(num(&v, &["steady_search", "p99_ms"]), 2)
            );
            if dir.join("failover.svg").exists() {
                let _ = writeln!(s, "\n![failover timeline]({})\n", rel("failover.svg"));
            }
        }
        None => s += "_Not measured in this run (`engram-bench failover`)._\n\n",
    }
    if let Some(p) = args.out.parent() {
        std::fs::create_dir_all(p)?;
    }
    std::fs::write(&args.out, &s)?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}
