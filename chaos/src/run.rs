//! One chaos run: start a cluster, run the workload, inject faults on a seeded schedule,
//! heal, wait for recovery, verify, check, report.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use engram_node::launch::{ClusterSpec, ProcessCluster};
use engram_router::Settings;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use crate::checker;
use crate::history::FaultRecord;
use crate::nemesis::{wait_recovered, FaultKind, Nemesis};
use crate::net::Net;
use crate::report::{timeline_svg, Report};
use crate::workload::{self, Recorder, Shared, WorkloadConfig};

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub seed: u64,
    /// How long faults are injected (the workload runs a little longer: until recovery).
    pub duration: Duration,
    pub faults: Vec<FaultKind>,
    pub nodes: usize,
    pub zones: usize,
    /// Shards of the shared pool.
    pub shards: u32,
    pub workload: WorkloadConfig,
    /// How long a fault lasts (drawn uniformly in this range).
    pub hold: (Duration, Duration),
    /// Quiet time between faults.
    pub quiet: (Duration, Duration),
    /// Where the cluster's data and logs go (a temp dir when `None`; kept on failure).
    pub dir: Option<PathBuf>,
    /// The `engram` binary.
    pub binary: PathBuf,
    pub json: Option<PathBuf>,
    pub svg: Option<PathBuf>,
    /// Write the full recorded history (JSON) here.
    pub history: Option<PathBuf>,
    /// Steps the linearizability search may take per key before giving up.
    pub max_lin_steps: u64,
}

impl RunConfig {
    pub fn new(seed: u64, binary: PathBuf) -> Self {
        RunConfig {
            seed,
            duration: Duration::from_secs(120),
            faults: FaultKind::group("all").unwrap_or_default(),
            nodes: 6,
            zones: 3,
            shards: 6,
            workload: WorkloadConfig::default(),
            hold: (Duration::from_secs(3), Duration::from_secs(8)),
            quiet: (Duration::from_secs(2), Duration::from_secs(5)),
            dir: None,
            binary,
            json: None,
            svg: None,
            history: None,
            max_lin_steps: 20_000_000,
        }
    }
}

fn between(rng: &mut StdRng, (a, b): (Duration, Duration)) -> Duration {
    if b <= a {
        return a;
    }
    Duration::from_secs_f64(rng.random_range(a.as_secs_f64()..b.as_secs_f64()))
}

/// Runs the whole thing. `Err` only when the run could not take place at all (the cluster
/// never started); a run that found problems returns a report with `ok: false`.
pub async fn run(cfg: RunConfig) -> Result<Report, String> {
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let dir = cfg.dir.clone().unwrap_or_else(|| tmp.path().join("cluster"));
    if dir.exists() {
        return Err(format!(
            "{} exists: a chaos run starts from an empty directory",
            dir.display()
        ));
    }
    // Every node on its own loopback address (127.A.B.10 + i), so nftables can cut links.
    let mut spec = ClusterSpec::new(&dir, &cfg.binary);
    spec.nodes = cfg.nodes;
    spec.zones = cfg.zones;
    spec.settings = Settings {
        shared_shards: cfg.shards,
        ..Settings::default()
    };
    let (a, b) = (rand::random_range(1..=254u8), rand::random_range(0..=254u8));
    spec.host = format!("127.{a}.{b}.10");
    spec.distinct_hosts = true;
    spec.base_port = 20_000 + rand::random_range(0..40u16) * 250;
    let hosts: Vec<Ipv4Addr> = (1..=cfg.nodes)
        .map(|i| spec.node_host(i).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?
        .iter()
        .map(|h| h.parse().map_err(|e| format!("{h}: {e}")))
        .collect::<Result<_, _>>()?;
    let net = if cfg.faults.iter().any(|f| f.needs_network()) {
        Some(Net::new(hosts).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let mut nemesis = Nemesis::new(net, cfg.zones);

    let mut cluster = ProcessCluster::configure(spec).map_err(|e| e.to_string())?;
    cluster.start_all().map_err(|e| e.to_string())?;
    cluster
        .wait_ready(Duration::from_secs(120))
        .await
        .map_err(|e| format!("cluster did not start: {e}"))?;
    let endpoints = cluster.endpoints();
    let admin = workload::client(&endpoints, 0, Duration::from_secs(10)).map_err(|e| e.to_string())?;
    workload::setup(&admin, &cfg.workload, Instant::now() + Duration::from_secs(60)).await?;
    tracing::info!(dir = %dir.display(), nodes = cfg.nodes, zones = cfg.zones, "cluster ready; workload starting");

    let start = Instant::now();
    let rec = Recorder::new(start);
    let shared = Shared::new(cfg.workload.clone(), rec.clone());
    let mut workers = Vec::new();
    for w in 0..cfg.workload.workers {
        let client = workload::client(&endpoints, w, cfg.workload.call_timeout)
            .map_err(|e| e.to_string())?;
        workers.push(tokio::spawn(workload::worker(
            shared.clone(),
            client,
            w,
            cfg.seed,
        )));
    }

    let mut faults: Vec<FaultRecord> = Vec::new();
    let mut incidents: Vec<String> = Vec::new();
    // The schedule: quiet, fault, hold, heal, wait for recovery; until the duration is up.
    tokio::time::sleep(between(&mut rng, cfg.quiet)).await;
    while start.elapsed() + cfg.hold.0 < cfg.duration && !cfg.faults.is_empty() {
        let Some(&kind) = cfg.faults.choose(&mut rng) else {
            break;
        };
        let hold = between(&mut rng, cfg.hold);
        let t0 = rec.now();
        let target = match nemesis.inject(kind, &mut cluster, &admin, &mut rng).await {
            Ok(t) => t,
            Err(e) => {
                incidents.push(format!("{} at {t0:.1}s: {e}", kind.name()));
                let _ = nemesis.heal(&mut cluster);
                break;
            }
        };
        tracing::info!(at = format!("{t0:.1}s"), fault = kind.name(), %target, "fault");
        if kind != FaultKind::Rolling {
            tokio::time::sleep(hold).await;
        }
        let heal = rec.now();
        if let Err(e) = nemesis.heal(&mut cluster) {
            incidents.push(format!("healing {} at {heal:.1}s: {e}", kind.name()));
        }
        tracing::info!(at = format!("{heal:.1}s"), fault = kind.name(), "healed");
        faults.push(FaultRecord {
            kind: kind.name().into(),
            target,
            start_s: t0,
            heal_s: heal,
            unavailable_s: 0.0,
            recover_s: 0.0,
            majority_kept: kind.keeps_majorities(),
        });
        if let Err(e) = wait_recovered(&mut cluster, Duration::from_secs(60)).await {
            incidents.push(format!(
                "not recovered 60 s after healing {} at {heal:.1}s: {e}",
                kind.name()
            ));
            break;
        }
        tokio::time::sleep(between(&mut rng, cfg.quiet)).await;
    }
    // Whatever is left: heal, recover, and keep the workload running a little while so the
    // history shows the cluster serving again.
    let _ = nemesis.heal(&mut cluster);
    if let Err(e) = wait_recovered(&mut cluster, Duration::from_secs(60)).await {
        incidents.push(format!("not recovered at the end: {e}"));
    }
    let remaining = cfg.duration.saturating_sub(start.elapsed());
    tokio::time::sleep(remaining.max(Duration::from_secs(2))).await;
    shared.stop.store(true, Ordering::Relaxed);
    let limit = cfg.workload.call_timeout + Duration::from_secs(5);
    for w in workers {
        if tokio::time::timeout(limit, w).await.is_err() {
            incidents.push("a workload client did not stop".into());
        }
    }
    let duration_s = rec.now();
    let progress = rec.len();
    tracing::info!(ops = progress, acked = rec.acked(), "workload stopped; verifying");

    let mut history = rec.take();
    let probes = workload::verify(
        &history,
        &endpoints,
        &cfg.workload,
        &rec,
        Instant::now() + Duration::from_secs(120),
    )
    .await;
    history.extend(rec.take());
    let findings = checker::check_all(&history, &probes, cfg.max_lin_steps);
    checker::availability(&history, &mut faults);
    let kinds = {
        let mut k: Vec<String> = cfg.faults.iter().map(|f| f.name().to_string()).collect();
        k.dedup();
        k
    };
    let report = Report::new(
        cfg.seed,
        duration_s,
        (cfg.nodes, cfg.zones),
        kinds,
        &history,
        faults,
        findings,
        incidents,
    );
    if let Some(p) = &cfg.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(p, text).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    if let Some(p) = &cfg.svg {
        std::fs::write(p, timeline_svg(&history, &report.faults, cfg.seed))
            .map_err(|e| format!("{}: {e}", p.display()))?;
    }
    if let Some(p) = &cfg.history {
        let text = serde_json::to_string(&history).map_err(|e| e.to_string())?;
        std::fs::write(p, text).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    cluster.stop_all(Duration::from_secs(10));
    if !report.ok && cfg.dir.is_none() {
        // Keep the evidence: node logs and the full history.
        let keep = tmp.keep();
        let hist = keep.join("history.json");
        let _ = std::fs::write(
            &hist,
            serde_json::to_string(&history).unwrap_or_default(),
        );
        tracing::warn!(dir = %keep.display(), "run failed: logs and history kept");
    }
    Ok(report)
}
