//! Drives a cluster through the SDK with the agent-memory workload ([`crate::agent`]):
//! collections, ingest, recall at a concurrency, a mixed recall + write phase. Shared by
//! `engram-bench cluster --workload agent` and `engram-bench scale`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engram_client::{Client, ErrorCode};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::agent::{tenant_name, AgentData, RecallKind, COLLECTION};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Latency and throughput of one kind of request.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LatencyStats {
    pub count: u64,
    pub errors: u64,
    pub qps: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// A latency histogram in microseconds (1 µs .. 10 min).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).unwrap_or_else(|_| unreachable!("valid bounds"))
}

pub fn record(h: &mut Histogram<u64>, d: Duration) {
    let _ = h.record((d.as_micros() as u64).clamp(1, 600_000_000));
}

impl LatencyStats {
    pub fn of(h: &Histogram<u64>, errors: u64, seconds: f64) -> Self {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        LatencyStats {
            count: h.len(),
            errors,
            qps: h.len() as f64 / seconds.max(1e-9),
            p50_ms: ms(0.50),
            p95_ms: ms(0.95),
            p99_ms: ms(0.99),
            max_ms: h.max() as f64 / 1000.0,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct IngestReport {
    pub memories: usize,
    pub seconds: f64,
    pub vectors_per_s: f64,
    pub batch: usize,
    pub concurrency: usize,
    /// Payload + text bytes per memory, on average (besides the vector).
    pub payload_bytes_mean: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct KindPoint {
    pub stats: LatencyStats,
    pub recall_at_k: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RecallPoint {
    pub concurrency: usize,
    pub consistency: String,
    pub ef: u32,
    pub overall: LatencyStats,
    pub recall_at_k: f64,
    pub per_kind: BTreeMap<String, KindPoint>,
    /// Tenant-scope answers missing a shard.
    pub partial: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MixedPoint {
    pub concurrency: usize,
    pub write_share: f64,
    pub seconds: f64,
    pub recalls: LatencyStats,
    pub writes: LatencyStats,
}

/// Drops and creates every tenant's collection.
pub async fn create_collections(client: &Client, data: &AgentData) -> Result<(), BoxError> {
    for t in 0..data.spec.tenants as u32 {
        let tenant = tenant_name(t);
        let _ = client.drop_collection(&tenant, COLLECTION).await;
        match client
            .create_collection(&tenant, COLLECTION, data.dim as u32)
            .await
        {
            Ok(_) => {}
            Err(e) if e.code == ErrorCode::CollectionExists => {}
            Err(e) => return Err(format!("creating {tenant}/{COLLECTION}: {e}").into()),
        }
    }
    Ok(())
}

/// Loads every memory: per tenant, batches of consecutive rows, `concurrency` in flight,
/// each with its own idempotency key (so the SDK's retries never duplicate).
pub async fn ingest(
    client: &Client,
    data: &Arc<AgentData>,
    batch: usize,
    concurrency: usize,
    progress: bool,
) -> Result<IngestReport, BoxError> {
    let mut per_tenant: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, m) in data.memories.iter().enumerate() {
        per_tenant.entry(m.tenant).or_default().push(i);
    }
    let mut jobs: Vec<(u32, Vec<usize>)> = Vec::new();
    for (t, rows) in per_tenant {
        for chunk in rows.chunks(batch.max(1)) {
            jobs.push((t, chunk.to_vec()));
        }
    }
    let pb = if progress {
        crate::progress(data.memories.len() as u64, "ingest")
    } else {
        indicatif::ProgressBar::hidden()
    };
    let started = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = Vec::new();
    for (t, rows) in jobs {
        let permit = sem.clone().acquire_owned().await?;
        let (client, data, pb) = (client.clone(), data.clone(), pb.clone());
        tasks.push(tokio::spawn(async move {
            let batch = rows.iter().map(|&i| data.input(i)).collect();
            let key = format!("agent-load-{t}-{}", rows[0]);
            let r = client
                .upsert_batch(&tenant_name(t), COLLECTION, batch, Some(key))
                .await;
            pb.inc(rows.len() as u64);
            drop(permit);
            r
        }));
    }
    for task in tasks {
        task.await??;
    }
    pb.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    Ok(IngestReport {
        memories: data.memories.len(),
        seconds,
        vectors_per_s: data.memories.len() as f64 / seconds,
        batch,
        concurrency,
        payload_bytes_mean: data.mean_payload_bytes(),
    })
}

/// Runs the first `queries` recalls with `concurrency` concurrent callers.
pub async fn recall(
    client: &Client,
    data: &Arc<AgentData>,
    concurrency: usize,
    queries: usize,
    ef: u32,
    bounded: bool,
) -> Result<RecallPoint, BoxError> {
    let nq = queries.min(data.queries.len());
    let c = concurrency.max(1);
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..c {
        let (client, data) = (client.clone(), data.clone());
        workers.push(tokio::spawn(async move {
            let mut per: BTreeMap<RecallKind, (Histogram<u64>, u64, f64)> = BTreeMap::new();
            let mut partial = 0u64;
            for j in (w..nq).step_by(c) {
                let (tenant, mut s) = data.search(j, ef);
                if bounded {
                    s = s.bounded();
                }
                let kind = data.queries[j].kind;
                let e = per.entry(kind).or_insert_with(|| (histogram(), 0, 0.0));
                let t0 = Instant::now();
                match client.search(&tenant, COLLECTION, s).await {
                    Ok(r) => {
                        record(&mut e.0, t0.elapsed());
                        e.2 += data.recall(j, &r.hits);
                        partial += r.partial as u64;
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "recall failed");
                        e.1 += 1;
                    }
                }
            }
            (per, partial)
        }));
    }
    let mut per: BTreeMap<RecallKind, (Histogram<u64>, u64, f64)> = BTreeMap::new();
    let mut partial = 0;
    for w in workers {
        let (p, part) = w.await?;
        partial += part;
        for (k, (h, errs, rsum)) in p {
            let e = per.entry(k).or_insert_with(|| (histogram(), 0, 0.0));
            e.0.add(&h)?;
            e.1 += errs;
            e.2 += rsum;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut all = histogram();
    let (mut errors, mut rsum) = (0, 0.0);
    let mut per_kind = BTreeMap::new();
    for (k, (h, errs, rs)) in &per {
        all.add(h)?;
        errors += errs;
        rsum += rs;
        per_kind.insert(
            k.name().to_string(),
            KindPoint {
                stats: LatencyStats::of(h, *errs, seconds),
                recall_at_k: rs / (h.len().max(1)) as f64,
            },
        );
    }
    if errors as usize * 100 > nq {
        return Err(format!("{errors} of {nq} recalls failed").into());
    }
    Ok(RecallPoint {
        concurrency: c,
        consistency: if bounded { "bounded" } else { "strong" }.into(),
        ef,
        recall_at_k: rsum / all.len().max(1) as f64,
        overall: LatencyStats::of(&all, errors, seconds),
        per_kind,
        partial,
    })
}

/// `concurrency` callers for `seconds`, each operation a write of a new memory (with
/// probability `write_share`: one memory per call, as an agent writes after a turn) or a
/// recall. The new memories reuse existing rows' vectors under fresh ids, so this phase
/// measures latency only (recall is measured by [`recall`], before).
pub async fn mixed(
    client: &Client,
    data: &Arc<AgentData>,
    concurrency: usize,
    seconds: f64,
    write_share: f64,
    ef: u32,
) -> Result<MixedPoint, BoxError> {
    let c = concurrency.max(1);
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(seconds.max(0.1));
    let mut workers = Vec::new();
    for w in 0..c {
        let (client, data) = (client.clone(), data.clone());
        workers.push(tokio::spawn(async move {
            use rand::{Rng, SeedableRng};
            let mut rng = rand::rngs::StdRng::seed_from_u64(0x6d69_7865 ^ w as u64);
            let (mut reads, mut writes) = (histogram(), histogram());
            let (mut read_err, mut write_err) = (0u64, 0u64);
            let mut n = 0u64;
            while Instant::now() < until {
                n += 1;
                if rng.random_bool(write_share.clamp(0.0, 1.0)) {
                    let row = rng.random_range(0..data.memories.len());
                    let mut m = data.input(row);
                    m.0.id = format!("live-{w}-{n}");
                    let tenant = tenant_name(data.memories[row].tenant);
                    let t0 = Instant::now();
                    match client.upsert(&tenant, COLLECTION, m).await {
                        Ok(_) => record(&mut writes, t0.elapsed()),
                        Err(_) => write_err += 1,
                    }
                } else {
                    let j = rng.random_range(0..data.queries.len());
                    let (tenant, s) = data.search(j, ef);
                    let t0 = Instant::now();
                    match client.search(&tenant, COLLECTION, s).await {
                        Ok(_) => record(&mut reads, t0.elapsed()),
                        Err(_) => read_err += 1,
                    }
                }
            }
            (reads, read_err, writes, write_err)
        }));
    }
    let (mut reads, mut writes) = (histogram(), histogram());
    let (mut re, mut we) = (0, 0);
    for w in workers {
        let (r, rerr, wr, werr) = w.await?;
        reads.add(&r)?;
        writes.add(&wr)?;
        re += rerr;
        we += werr;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(MixedPoint {
        concurrency: c,
        write_share,
        seconds: secs,
        recalls: LatencyStats::of(&reads, re, secs),
        writes: LatencyStats::of(&writes, we, secs),
    })
}
