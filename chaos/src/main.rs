//! `engram-chaos run`: see `chaos/README.md`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use engram_chaos::nemesis::FaultKind;
use engram_chaos::run::{run, RunConfig};

#[derive(Parser)]
#[command(name = "engram-chaos", about = "Engram's chaos suite: faults on a real local cluster, then checkers")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a local cluster, run the workload under seeded faults, check, report.
    Run(RunArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// The schedule's seed (same seed, same faults in the same order).
    #[arg(long, default_value_t = 1, conflicts_with = "seeds")]
    seed: u64,
    /// Several runs in a row: `1-10` or `3,7,9`; prints a table.
    #[arg(long)]
    seeds: Option<String>,
    /// How long faults are injected: `120s`, `2m` or seconds.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    duration: Duration,
    /// Fault groups: kill, pause, partition, zone, rolling, multi, all.
    #[arg(long, default_value = "kill,pause,partition,zone")]
    faults: String,
    #[arg(long, default_value_t = 6)]
    nodes: usize,
    #[arg(long, default_value_t = 3)]
    zones: usize,
    /// Shards of the shared pool.
    #[arg(long, default_value_t = 6)]
    shards: u32,
    /// Concurrent workload clients.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    #[arg(long, default_value_t = 4)]
    tenants: usize,
    /// Shortest and longest fault, e.g. `3s,8s`.
    #[arg(long, default_value = "3s,8s")]
    hold: String,
    /// Write the JSON report here (single seed).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the SVG timeline here (single seed).
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Write the full recorded history (JSON) here (single seed).
    #[arg(long)]
    history: Option<PathBuf>,
    /// Write seed-S.json and seed-S.svg for every seed into this directory.
    #[arg(long)]
    out: Option<PathBuf>,
    /// With `--out`: also seed-S.history.json, the full recorded history of every run.
    #[arg(long)]
    keep_histories: bool,
    /// Keep the cluster (data, configs, logs) here instead of a temp dir.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The `engram` binary (default: next to this one).
    #[arg(long)]
    binary: Option<PathBuf>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("bad duration unit in {s:?}: use ms, s, m or h")),
    };
    Ok(Duration::from_secs_f64(secs))
}

fn parse_seeds(s: &str) -> Result<Vec<u64>, String> {
    if let Some((a, b)) = s.split_once('-') {
        let a: u64 = a.trim().parse().map_err(|_| format!("bad seed range {s:?}"))?;
        let b: u64 = b.trim().parse().map_err(|_| format!("bad seed range {s:?}"))?;
        if b < a || b - a > 1000 {
            return Err(format!("bad seed range {s:?}"));
        }
        return Ok((a..=b).collect());
    }
    s.split(',')
        .map(|x| x.trim().parse().map_err(|_| format!("bad seed {x:?}")))
        .collect()
}

async fn main_run(args: RunArgs) -> Result<bool, String> {
    let binary = match args.binary {
        Some(b) => b,
        None => engram_node::launch::sibling_binary("engram").ok_or(
            "cannot find the `engram` binary next to engram-chaos: build it (`cargo build -p engram-node`) or pass --binary",
        )?,
    };
    let mut faults = Vec::new();
    for g in args.faults.split(',').filter(|g| !g.trim().is_empty()) {
        for k in FaultKind::group(g)? {
            if !faults.contains(&k) {
                faults.push(k);
            }
        }
    }
    let hold = {
        let (a, b) = args
            .hold
            .split_once(',')
            .ok_or_else(|| format!("--hold wants `min,max`, got {:?}", args.hold))?;
        (parse_duration(a)?, parse_duration(b)?)
    };
    if args.nodes < 3 || args.zones == 0 || args.zones > args.nodes {
        return Err("need at least 3 nodes and 1..=nodes zones".into());
    }
    let seeds = match &args.seeds {
        Some(s) => parse_seeds(s)?,
        None => vec![args.seed],
    };
    if let Some(o) = &args.out {
        std::fs::create_dir_all(o).map_err(|e| format!("{}: {e}", o.display()))?;
    }
    let mut rows = Vec::new();
    for &seed in &seeds {
        let mut cfg = RunConfig::new(seed, binary.clone());
        cfg.duration = args.duration;
        cfg.faults = faults.clone();
        cfg.nodes = args.nodes;
        cfg.zones = args.zones;
        cfg.shards = args.shards;
        cfg.workload.workers = args.workers;
        cfg.workload.tenants = args.tenants;
        cfg.hold = hold;
        cfg.dir = if seeds.len() == 1 { args.dir.clone() } else { args.dir.as_ref().map(|d| d.join(format!("seed-{seed}"))) };
        cfg.json = args.json.clone().filter(|_| seeds.len() == 1);
        cfg.svg = args.svg.clone().filter(|_| seeds.len() == 1);
        cfg.history = args.history.clone().filter(|_| seeds.len() == 1);
        if let Some(o) = &args.out {
            cfg.json = Some(o.join(format!("seed-{seed}.json")));
            cfg.svg = Some(o.join(format!("seed-{seed}.svg")));
            if args.keep_histories {
                cfg.history = Some(o.join(format!("seed-{seed}.history.json")));
            }
        }
        let report = run(cfg).await?;
        println!("{}", report.summary());
        rows.push(report);
    }
    if rows.len() > 1 {
        println!("| seed | duration s | ops | acked writes | lost | phantoms | linearizable | faults | max unavailable s | max recover s | verdict |");
        println!("|---:|---:|---:|---:|---:|---:|:---:|---:|---:|---:|:---:|");
        for r in &rows {
            println!(
                "| {} | {:.0} | {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {} |",
                r.seed,
                r.duration_s,
                r.ops,
                r.acked_writes,
                r.lost_writes,
                r.phantoms,
                r.linearizable,
                r.faults.len(),
                r.max_unavailable_s,
                r.max_recover_s,
                if r.ok { "PASS" } else { "FAIL" }
            );
        }
    }
    Ok(rows.iter().all(|r| r.ok))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "engram_chaos=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("engram-chaos: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.cmd {
        Cmd::Run(args) => match rt.block_on(main_run(args)) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                eprintln!("engram-chaos: {e}");
                ExitCode::from(2)
            }
        },
    }
}
