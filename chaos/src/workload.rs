//! The workload: concurrent SDK clients writing unique memories across tenants and users,
//! overwriting and deleting a few hot ids (registers), reading single ids strongly and
//! searching; every operation recorded as invoke → ok / fail / unknown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engram_client::{v1, Client, ClientConfig, Error, ErrorCode, MemoryInput, Search};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::history::{Call, Key, Op, Outcome, Seen, FINAL};

pub const COLLECTION: &str = "memories";

#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    pub tenants: usize,
    /// Concurrent clients.
    pub workers: usize,
    /// Users each worker writes for (its write streams).
    pub users_per_worker: usize,
    /// Hot ids overwritten, read and deleted by every worker.
    pub registers: usize,
    pub dimension: usize,
    /// Pause between a worker's operations (bounds the load on a small machine).
    pub think: Duration,
    /// Deadline of one client call, its retries included.
    pub call_timeout: Duration,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            tenants: 4,
            workers: 8,
            users_per_worker: 2,
            registers: 8,
            dimension: 16,
            think: Duration::from_millis(10),
            call_timeout: Duration::from_secs(10),
        }
    }
}

/// Records operations with times relative to the run's start.
#[derive(Clone)]
pub struct Recorder {
    start: Instant,
    ops: Arc<Mutex<Vec<Op>>>,
}

impl Recorder {
    pub fn new(start: Instant) -> Self {
        Recorder {
            start,
            ops: Arc::default(),
        }
    }

    pub fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    pub fn push(&self, op: Op) {
        self.ops.lock().push(op);
    }

    pub fn take(&self) -> Vec<Op> {
        std::mem::take(&mut *self.ops.lock())
    }

    pub fn len(&self) -> usize {
        self.ops.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Acknowledged writes so far (for progress lines).
    pub fn acked(&self) -> usize {
        self.ops
            .lock()
            .iter()
            .filter(|o| o.ok() && matches!(o.call, Call::Write { .. }))
            .count()
    }
}

/// The deterministic vector of a written value (so verification can search for it exactly).
pub fn vector_for(value: u64, dimension: usize) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(value ^ 0x5eed_cafe_f00d);
    let mut v: Vec<f32> = (0..dimension).map(|_| rng.random_range(-1.0..1.0)).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
    v.iter_mut().for_each(|x| *x /= n);
    v
}

pub fn tenant_name(t: usize) -> String {
    format!("tenant-{t}")
}

pub fn register_key(r: usize, tenants: usize) -> Key {
    Key::new(&tenant_name(r % tenants.max(1)), "hot", &format!("reg-{r}"))
}

/// Whether a failed mutation may still have taken effect.
fn outcome_of(e: &Error) -> Outcome {
    if e.is_retryable() || matches!(e.code, ErrorCode::Internal | ErrorCode::Unspecified) {
        Outcome::Unknown
    } else {
        Outcome::Fail
    }
}

fn seen_of(tenant: &str, m: &v1::Memory) -> Seen {
    let payload: serde_json::Value =
        serde_json::from_str(&m.payload_json).unwrap_or(serde_json::Value::Null);
    let s = |f: &str| {
        payload
            .get(f)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    Seen {
        key: Key::new(tenant, &m.user, &m.id),
        value: payload.get("v").and_then(|v| v.as_u64()),
        payload_tenant: s("t"),
        payload_user: s("u"),
    }
}

pub fn client(endpoints: &[String], rotate: usize, timeout: Duration) -> Result<Client, Error> {
    let mut eps = endpoints.to_vec();
    if !eps.is_empty() {
        let k = rotate % eps.len();
        eps.rotate_left(k);
    }
    Client::with_config(
        eps,
        ClientConfig {
            timeout,
            backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(500),
            max_attempts: 40,
            ..ClientConfig::default()
        },
    )
}

/// Creates every tenant's collection (retrying until `deadline`).
pub async fn setup(client: &Client, cfg: &WorkloadConfig, deadline: Instant) -> Result<(), String> {
    for t in 0..cfg.tenants {
        let tenant = tenant_name(t);
        loop {
            match client
                .create_collection(&tenant, COLLECTION, cfg.dimension as u32)
                .await
            {
                Ok(_) => break,
                Err(e) if e.code == ErrorCode::CollectionExists => break,
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, "create collection: retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(format!("creating {tenant}/{COLLECTION}: {e}")),
            }
        }
    }
    Ok(())
}

/// One executed operation against the cluster, recorded.
pub struct Exec<'a> {
    pub client: &'a Client,
    pub rec: &'a Recorder,
    pub process: usize,
    pub dimension: usize,
}

impl Exec<'_> {
    fn record(&self, call: Call, invoke: f64, res: Result<(Option<Option<Seen>>, Vec<Seen>), Error>) -> Op {
        let complete = self.rec.now();
        let op = match res {
            Ok((read, hits)) => Op {
                process: self.process,
                call,
                invoke,
                complete,
                outcome: Outcome::Ok,
                read,
                hits,
                error: None,
            },
            Err(e) => Op {
                process: self.process,
                outcome: if call.is_mutation() {
                    outcome_of(&e)
                } else {
                    Outcome::Fail
                },
                call,
                invoke,
                complete,
                read: None,
                hits: vec![],
                error: Some(e.to_string()),
            },
        };
        self.rec.push(op.clone());
        op
    }

    pub async fn write(&self, key: &Key, value: u64) -> Op {
        let invoke = self.rec.now();
        let payload = serde_json::json!({"v": value, "t": key.tenant, "u": key.user});
        let m = MemoryInput::new(&key.id, &key.user, vector_for(value, self.dimension))
            .payload(payload)
            .text(format!("memory {value} of {}", key.user));
        let res = self
            .client
            .upsert(&key.tenant, COLLECTION, m)
            .await
            .map(|_| (None, vec![]));
        self.record(
            Call::Write {
                key: key.clone(),
                value,
            },
            invoke,
            res,
        )
    }

    pub async fn delete(&self, key: &Key) -> Op {
        let invoke = self.rec.now();
        let res = self
            .client
            .delete(&key.tenant, COLLECTION, &key.user, &[&key.id])
            .await
            .map(|_| (None, vec![]));
        self.record(Call::Delete { key: key.clone() }, invoke, res)
    }

    pub async fn read(&self, key: &Key) -> Op {
        let invoke = self.rec.now();
        let res = self
            .client
            .get(&key.tenant, COLLECTION, &key.user, &[&key.id])
            .await
            .map(|r| {
                let found = r
                    .memories
                    .iter()
                    .find(|m| m.id == key.id)
                    .or(r.memories.first())
                    .map(|m| seen_of(&key.tenant, m));
                (Some(found), vec![])
            });
        self.record(Call::Read { key: key.clone() }, invoke, res)
    }

    /// A strong search (complete answers only) for `vector`.
    pub async fn search(&self, tenant: &str, user: Option<&str>, vector: Vec<f32>, k: u32) -> Op {
        let invoke = self.rec.now();
        let s = match user {
            Some(u) => Search::user(u, vector, k),
            None => Search::tenant(vector, k),
        }
        .require_complete();
        let res = self.client.search(tenant, COLLECTION, s).await.map(|r| {
            let hits = r
                .hits
                .iter()
                .filter_map(|h| h.memory.as_ref())
                .map(|m| seen_of(tenant, m))
                .collect();
            (None, hits)
        });
        self.record(
            Call::Search {
                tenant: tenant.into(),
                user: user.map(String::from),
            },
            invoke,
            res,
        )
    }
}

/// State the workers share.
pub struct Shared {
    pub cfg: WorkloadConfig,
    pub rec: Recorder,
    pub stop: AtomicBool,
    next_value: AtomicU64,
    /// Unique memories acknowledged and not (yet) chosen for deletion.
    live: Mutex<Vec<(Key, u64)>>,
}

impl Shared {
    pub fn new(cfg: WorkloadConfig, rec: Recorder) -> Arc<Self> {
        Arc::new(Shared {
            cfg,
            rec,
            stop: AtomicBool::new(false),
            next_value: AtomicU64::new(1),
            live: Mutex::new(Vec::new()),
        })
    }

    fn value(&self) -> u64 {
        self.next_value.fetch_add(1, Ordering::Relaxed)
    }
}

/// One worker's loop, until `shared.stop`.
pub async fn worker(shared: Arc<Shared>, client: Client, w: usize, seed: u64) {
    let cfg = shared.cfg.clone();
    let mut rng = StdRng::seed_from_u64(seed ^ (w as u64).wrapping_mul(0x9e37_79b9));
    let exec = Exec {
        client: &client,
        rec: &shared.rec,
        process: w,
        dimension: cfg.dimension,
    };
    let tenant = tenant_name(w % cfg.tenants.max(1));
    let users: Vec<String> = (0..cfg.users_per_worker.max(1))
        .map(|u| format!("user-{w}-{u}"))
        .collect();
    let mut n = 0u64;
    let mut last_vec: HashMap<String, Vec<f32>> = HashMap::new();
    while !shared.stop.load(Ordering::Relaxed) {
        let roll = rng.random_range(0..100);
        match roll {
            // Unique memories on this worker's streams (round robin over its users).
            0..40 => {
                let user = &users[(n as usize) % users.len()];
                n += 1;
                let key = Key::new(&tenant, user, &format!("w{w}-{n}"));
                let value = shared.value();
                let op = exec.write(&key, value).await;
                if op.ok() {
                    last_vec.insert(user.clone(), vector_for(value, cfg.dimension));
                    shared.live.lock().push((key, value));
                }
            }
            40..60 => {
                let key = register_key(rng.random_range(0..cfg.registers), cfg.tenants);
                let value = shared.value();
                exec.write(&key, value).await;
            }
            60..64 => {
                let key = register_key(rng.random_range(0..cfg.registers), cfg.tenants);
                exec.delete(&key).await;
            }
            64..80 => {
                let key = register_key(rng.random_range(0..cfg.registers), cfg.tenants);
                exec.read(&key).await;
            }
            80..88 => {
                let pick = {
                    let live = shared.live.lock();
                    (!live.is_empty()).then(|| live[rng.random_range(0..live.len())].0.clone())
                };
                if let Some(key) = pick {
                    exec.read(&key).await;
                }
            }
            88..92 => {
                let pick = {
                    let mut live = shared.live.lock();
                    (!live.is_empty()).then(|| {
                        let i = rng.random_range(0..live.len());
                        live.swap_remove(i).0
                    })
                };
                if let Some(key) = pick {
                    exec.delete(&key).await;
                }
            }
            92..98 => {
                let user = &users[rng.random_range(0..users.len())];
                if let Some(v) = last_vec.get(user) {
                    exec.search(&tenant, Some(user), v.clone(), 5).await;
                }
            }
            _ => {
                let v = vector_for(rng.random(), cfg.dimension);
                exec.search(&tenant, None, v, 10).await;
            }
        }
        tokio::time::sleep(cfg.think).await;
    }
}

/// After the heal: a strong read of every key the run touched (recorded as [`FINAL`] reads,
/// retried until they succeed or `deadline`), and an exact-vector search for every
/// acknowledged unique memory never targeted by a delete.
pub async fn verify(
    history: &[Op],
    endpoints: &[String],
    cfg: &WorkloadConfig,
    rec: &Recorder,
    deadline: Instant,
) -> Vec<crate::checker::SearchProbe> {
    let mut keys: Vec<Key> = history
        .iter()
        .filter(|o| o.call.is_mutation())
        .filter_map(|o| o.call.key().cloned())
        .collect();
    keys.sort();
    keys.dedup();
    let deleted: std::collections::HashSet<Key> = history
        .iter()
        .filter_map(|o| match &o.call {
            Call::Delete { key } => Some(key.clone()),
            _ => None,
        })
        .collect();
    let mut probes: Vec<(Key, u64)> = history
        .iter()
        .filter(|o| o.ok())
        .filter_map(|o| match &o.call {
            Call::Write { key, value } if key.user != "hot" && !deleted.contains(key) => {
                Some((key.clone(), *value))
            }
            _ => None,
        })
        .collect();
    probes.sort();

    let lanes = 8usize;
    let keys = Arc::new(keys);
    let probes = Arc::new(probes);
    let mut tasks = Vec::new();
    for lane in 0..lanes {
        let keys = keys.clone();
        let probes = probes.clone();
        let rec = rec.clone();
        let endpoints = endpoints.to_vec();
        let dim = cfg.dimension;
        let timeout = cfg.call_timeout;
        tasks.push(tokio::spawn(async move {
            let Ok(client) = client(&endpoints, lane, timeout) else {
                return Vec::new();
            };
            let exec = Exec {
                client: &client,
                rec: &rec,
                process: FINAL,
                dimension: dim,
            };
            for key in keys.iter().skip(lane).step_by(lanes) {
                loop {
                    let op = exec.read(key).await;
                    if op.ok() || Instant::now() > deadline {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            let mut out = Vec::new();
            for (key, value) in probes.iter().skip(lane).step_by(lanes) {
                let mut found = None;
                while Instant::now() < deadline {
                    let s = Search::user(&key.user, vector_for(*value, dim), 10)
                        .require_complete()
                        .ef(256);
                    match client.search(&key.tenant, COLLECTION, s).await {
                        Ok(r) => {
                            found = Some(r.hits.iter().any(|h| {
                                h.memory.as_ref().is_some_and(|m| m.id == key.id)
                            }));
                            break;
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
                out.push(crate::checker::SearchProbe {
                    key: key.clone(),
                    found,
                });
            }
            out
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        if let Ok(v) = t.await {
            out.extend(v);
        }
    }
    out
}
