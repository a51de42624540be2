//! End-to-end: real node processes on loopback, driven through the SDK.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use engram_client::{v1, ErrorCode, MemoryInput, Search};
use rand::{Rng, SeedableRng};
use serde_json::json;

const DIM: usize = 16;
const TENANTS: usize = 50;
const USERS: usize = 20;
const PER_USER: usize = 4;

#[derive(Clone)]
struct Stored {
    tenant: String,
    user: String,
    id: String,
    vector: Vec<f32>,
}

fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
    v
}

fn random_vec(rng: &mut impl Rng) -> Vec<f32> {
    unit((0..DIM).map(|_| rng.random_range(-1.0f32..1.0)).collect())
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Ids of the exact top-k by cosine among `pool`.
fn exact_top(pool: &[&Stored], q: &[f32], k: usize) -> Vec<String> {
    let mut scored: Vec<(f32, &str)> = pool
        .iter()
        .map(|s| (dot(&s.vector, q), s.id.as_str()))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored
        .into_iter()
        .take(k)
        .map(|(_, id)| id.to_string())
        .collect()
}

fn recall(got: &[String], want: &[String]) -> f64 {
    let w: BTreeSet<&String> = want.iter().collect();
    got.iter().filter(|g| w.contains(g)).count() as f64 / want.len().max(1) as f64
}

async fn write_user(
    client: &engram_client::Client,
    tenant: &str,
    user: &str,
    memories: &[Stored],
    key: String,
) -> Result<(), engram_client::Error> {
    let batch = memories
        .iter()
        .map(|s| {
            MemoryInput::new(s.id.as_str(), user, s.vector.clone())
                .payload(json!({ "tenant": tenant, "user": user }))
        })
        .collect();
    client
        .upsert_batch(tenant, "mem", batch, Some(key))
        .await
        .map(|_| ())
}

/// Checks user-scope and tenant-scope recall against an exact scan, and that no hit ever
/// belongs to another tenant (or, for user scope, another user).
async fn check_searches(
    client: &engram_client::Client,
    data: &[Stored],
    rng: &mut impl Rng,
    queries: usize,
) -> (f64, f64) {
    let mut by_tenant: BTreeMap<&str, Vec<&Stored>> = BTreeMap::new();
    for s in data {
        by_tenant.entry(s.tenant.as_str()).or_default().push(s);
    }
    let tenants: Vec<&str> = by_tenant.keys().copied().collect();
    let (mut user_recall, mut tenant_recall) = (0.0, 0.0);
    for _ in 0..queries {
        let t = tenants[rng.random_range(0..tenants.len())];
        let pool = &by_tenant[t];
        let q = random_vec(rng);
        let user = &pool[rng.random_range(0..pool.len())].user;
        let mine: Vec<&Stored> = pool.iter().copied().filter(|s| &s.user == user).collect();

        let r = client
            .search(t, "mem", Search::user(user.as_str(), q.clone(), 3))
            .await
            .expect("user search");
        for h in &r.hits {
            let m = h.memory.as_ref().expect("memory");
            let p: serde_json::Value = serde_json::from_str(&m.payload_json).expect("payload");
            assert_eq!(p["tenant"], t, "tenant {t} got another tenant's memory");
            assert_eq!(&m.user, user, "user scope returned another user's memory");
        }
        let got: Vec<String> = r
            .hits
            .iter()
            .map(|h| h.memory.as_ref().map(|m| m.id.clone()).unwrap_or_default())
            .collect();
        user_recall += recall(&got, &exact_top(&mine, &q, 3));

        let r = client
            .search(t, "mem", Search::tenant(q.clone(), 10))
            .await
            .expect("tenant search");
        assert!(!r.partial, "all shards are up: {:?}", r.failed_shards);
        for h in &r.hits {
            let m = h.memory.as_ref().expect("memory");
            let p: serde_json::Value = serde_json::from_str(&m.payload_json).expect("payload");
            assert_eq!(p["tenant"], t, "tenant {t} got another tenant's memory");
        }
        // Tenant-scope ids are only unique per user: compare (user, id).
        let got: Vec<String> = r
            .hits
            .iter()
            .filter_map(|h| h.memory.as_ref().map(|m| format!("{}/{}", m.user, m.id)))
            .collect();
        let mut scored: Vec<(f32, String)> = pool
            .iter()
            .map(|s| (dot(&s.vector, &q), format!("{}/{}", s.user, s.id)))
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        let want: Vec<String> = scored.into_iter().take(10).map(|(_, k)| k).collect();
        tenant_recall += recall(&got, &want);
    }
    (user_recall / queries as f64, tenant_recall / queries as f64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_tenants_survive_killing_the_busiest_leader() {
    let mut tc = common::start(3, 3, common::pool(6, false)).await;
    let client = tc.client();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);

    // 50 tenants × 20 users, each user's memories written as one idempotent batch.
    let mut data = Vec::new();
    for t in 0..TENANTS {
        let tenant = format!("tenant-{t}");
        client
            .create_collection(&tenant, "mem", DIM as u32)
            .await
            .expect("create collection");
        for u in 0..USERS {
            for m in 0..PER_USER {
                data.push(Stored {
                    tenant: tenant.clone(),
                    user: format!("user-{u}"),
                    // Same ids for every user: ids are scoped per user.
                    id: format!("m{m}"),
                    vector: random_vec(&mut rng),
                });
            }
        }
    }
    let started = Instant::now();
    let mut batches: Vec<Vec<Stored>> = data.chunks(PER_USER).map(|c| c.to_vec()).collect();
    while !batches.is_empty() {
        let wave: Vec<Vec<Stored>> = batches.drain(..batches.len().min(16)).collect();
        let writes = wave.iter().map(|b| {
            let key = format!("load/{}/{}", b[0].tenant, b[0].user);
            write_user(&client, &b[0].tenant, &b[0].user, b, key)
        });
        for r in futures::future::join_all(writes).await {
            r.expect("write acknowledged");
        }
    }
    eprintln!("wrote {} memories in {:?}", data.len(), started.elapsed());

    // Replaying a batch with its idempotency key writes nothing.
    let again = client
        .upsert_batch(
            &data[0].tenant,
            "mem",
            data[..PER_USER]
                .iter()
                .map(|s| {
                    MemoryInput::new(s.id.as_str(), s.user.as_str(), s.vector.clone())
                        .payload(json!({"tenant": s.tenant, "user": s.user}))
                })
                .collect(),
            Some(format!("load/{}/{}", data[0].tenant, data[0].user)),
        )
        .await
        .expect("replay");
    assert!(
        again.replayed && again.written == 0,
        "replay wrote again: {again:?}"
    );

    let (ur, tr) = check_searches(&client, &data, &mut rng, 60).await;
    eprintln!("before failover: user-scope recall {ur:.3}, tenant-scope recall {tr:.3}");
    assert!(
        ur >= 0.95 && tr >= 0.9,
        "recall too low: user {ur:.3}, tenant {tr:.3}"
    );

    // Every shard's replicas are in three distinct zones.
    let status = client.cluster_status().await.expect("status");
    let zone: HashMap<u64, String> = status
        .nodes
        .iter()
        .map(|n| (n.node_id, n.zone.clone()))
        .collect();
    assert_eq!(status.shards.len(), 6);
    for s in &status.shards {
        let zones: BTreeSet<&String> = s.replica_nodes.iter().map(|n| &zone[n]).collect();
        assert_eq!(
            zones.len(),
            3,
            "shard {} replicas {:?} share a zone",
            s.shard_id,
            s.replica_nodes
        );
    }

    // SIGKILL the node leading the most shards.
    let mut leads: BTreeMap<u64, usize> = BTreeMap::new();
    for s in &status.shards {
        *leads.entry(s.leader_node).or_default() += 1;
    }
    let (&victim, &n) = leads.iter().max_by_key(|(_, c)| **c).expect("leaders");
    eprintln!("leaders per node {leads:?}; killing node {victim} ({n} shards)");
    let vi = (victim - 1) as usize;
    tc.cluster.kill(vi);

    // Writes and searches keep succeeding through the surviving nodes.
    let survivor = tc.client_of((vi + 1) % 3);
    let t0 = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut more = Vec::new();
    for i in 0..200 {
        let w0 = Instant::now();
        let t = format!("tenant-{}", i % TENANTS);
        let s = Stored {
            tenant: t.clone(),
            user: format!("user-{}", i % USERS),
            id: format!("after-{i}"),
            vector: random_vec(&mut rng),
        };
        write_user(
            &survivor,
            &s.tenant,
            &s.user,
            std::slice::from_ref(&s),
            format!("after/{i}"),
        )
        .await
        .expect("write after failover");
        slowest = slowest.max(w0.elapsed());
        more.push(s);
    }
    // Writes to the shards the victim led wait for their failover (informational: timing
    // is measured by engram-bench raft, not asserted here).
    eprintln!(
        "200 writes after the kill acknowledged in {:?}; slowest {:?}",
        t0.elapsed(),
        slowest
    );
    data.extend(more);
    let (ur, tr) = check_searches(&survivor, &data, &mut rng, 30).await;
    eprintln!("after failover: user-scope recall {ur:.3}, tenant-scope recall {tr:.3}");
    assert!(
        ur >= 0.95 && tr >= 0.9,
        "recall after failover: user {ur:.3}, tenant {tr:.3}"
    );

    // Restart it: it rejoins and catches up (its own replicas answer bounded reads with
    // everything acknowledged while it was down).
    tc.cluster.start(vi).expect("restart");
    tc.cluster
        .wait_node_ready(vi, Duration::from_secs(60))
        .await
        .expect("restarted node ready");
    let rejoined = tc.client_of(vi);
    let deadline = Instant::now() + Duration::from_secs(60);
    let after: Vec<&Stored> = data.iter().filter(|s| s.id.starts_with("after-")).collect();
    loop {
        let mut missing = 0;
        for s in &after {
            let req = v1::GetRequest {
                tenant: s.tenant.clone(),
                collection: "mem".into(),
                user: s.user.clone(),
                ids: vec![s.id.clone()],
                consistency: v1::Consistency::Bounded as i32,
                ..Default::default()
            };
            let r = get_raw(&rejoined, req).await;
            missing += r.missing.len();
        }
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "restarted node still misses {missing} memories"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Nothing acknowledged is lost (linearizable reads of every memory).
    let mut by_user: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for s in &data {
        by_user
            .entry((s.tenant.clone(), s.user.clone()))
            .or_default()
            .push(s.id.clone());
    }
    let mut lost = 0;
    for ((t, u), ids) in &by_user {
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let r = client.get(t, "mem", u, &refs).await.expect("get");
        lost += r.missing.len();
    }
    assert_eq!(lost, 0, "{lost} acknowledged memories lost");
    drop(tc);
}

async fn get_raw(client: &engram_client::Client, req: v1::GetRequest) -> v1::GetResponse {
    client.get_with(req).await.expect("get")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_typed_errors_and_writes_nothing() {
    let tc = common::start(3, 3, common::pool(2, false)).await;
    let c = tc.client();
    c.create_collection("acme", "notes", 4)
        .await
        .expect("create");
    let err = c
        .create_collection("acme", "notes", 4)
        .await
        .expect_err("twice");
    assert_eq!(err.code, ErrorCode::CollectionExists);

    let good = MemoryInput::new("ok", "u1", vec![1.0, 0.0, 0.0, 0.0]);
    let cases: Vec<(Vec<MemoryInput>, ErrorCode, &str)> = vec![
        (
            vec![
                good.clone(),
                MemoryInput::new("short", "u1", vec![1.0, 2.0]),
            ],
            ErrorCode::DimensionMismatch,
            "dimension",
        ),
        (
            vec![
                good.clone(),
                MemoryInput::new("nan", "u1", vec![f32::NAN, 0.0, 0.0, 1.0]),
            ],
            ErrorCode::NonFiniteVector,
            "NaN",
        ),
        (
            vec![
                good.clone(),
                MemoryInput(v1::Memory {
                    id: "p".into(),
                    user: "u1".into(),
                    vector: vec![0.0, 1.0, 0.0, 0.0],
                    payload_json: "[1,2]".into(),
                    ..Default::default()
                }),
            ],
            ErrorCode::InvalidPayload,
            "object",
        ),
        (
            vec![
                good.clone(),
                MemoryInput::new("", "u1", vec![0.0, 1.0, 0.0, 0.0]),
            ],
            ErrorCode::InvalidArgument,
            "id",
        ),
        (
            (0..1001)
                .map(|i| MemoryInput::new(format!("b{i}"), "u1", vec![0.0, 1.0, 0.0, 0.0]))
                .collect(),
            ErrorCode::BatchTooLarge,
            "limit",
        ),
    ];
    for (batch, code, words) in cases {
        let e = c
            .upsert_batch("acme", "notes", batch, None)
            .await
            .expect_err("bad batch");
        assert_eq!(e.code, code, "{e}");
        assert!(
            e.message.contains(words),
            "message {:?} should mention {words:?}",
            e.message
        );
    }
    // The valid memory in each rejected batch was not written.
    let r = c.get("acme", "notes", "u1", &["ok"]).await.expect("get");
    assert_eq!(
        r.missing,
        vec!["ok".to_string()],
        "a rejected batch wrote part of itself"
    );

    let e = c
        .create_collection("bad/tenant", "notes", 4)
        .await
        .expect_err("tenant");
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    let e = c
        .search("acme", "nope", Search::user("u1", vec![1.0; 4], 3))
        .await
        .expect_err("unknown");
    assert_eq!(e.code, ErrorCode::CollectionNotFound);
    let e = c
        .search("other", "notes", Search::user("u1", vec![1.0; 4], 3))
        .await
        .expect_err("other tenant");
    assert_eq!(
        e.code,
        ErrorCode::CollectionNotFound,
        "tenants never see each other's collections"
    );
    let e = c
        .search("acme", "notes", Search::user("u1", vec![1.0; 4], 0))
        .await
        .expect_err("k=0");
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    let e = c
        .search("acme", "notes", Search::user("u1", vec![1.0; 3], 3))
        .await
        .expect_err("dim");
    assert_eq!(e.code, ErrorCode::DimensionMismatch);

    // A dedicated tenant gets shards of its own, placed like every shard.
    let big = c
        .create_collection_with(v1::CreateCollectionRequest {
            tenant: "bigco".into(),
            name: "notes".into(),
            dimension: 4,
            shards: 2,
            ..Default::default()
        })
        .await
        .expect("dedicated");
    assert_eq!(big.shards, 2);
    c.upsert(
        "bigco",
        "notes",
        MemoryInput::new("x", "u1", vec![0.0, 0.0, 1.0, 0.0]),
    )
    .await
    .expect("write");
    let r = c
        .search(
            "bigco",
            "notes",
            Search::tenant(vec![0.0, 0.0, 1.0, 0.0], 3),
        )
        .await
        .expect("search");
    assert_eq!(r.hits.len(), 1);
    let status = c.cluster_status().await.expect("status");
    assert_eq!(status.shards.len(), 4, "2 pool shards + 2 dedicated");

    // HTTP: liveness, readiness and Prometheus metrics (node 1 served a search just now).
    tc.client_of(0)
        .search(
            "bigco",
            "notes",
            Search::tenant(vec![0.0, 0.0, 1.0, 0.0], 3),
        )
        .await
        .expect("search");
    let http = &tc.cluster.configs[0].http_addr;
    let (code, _) = engram_node::launch::http_get(http, "/healthz")
        .await
        .expect("healthz");
    assert_eq!(code, 200);
    let (code, body) = engram_node::launch::http_get(http, "/readyz")
        .await
        .expect("readyz");
    assert_eq!(code, 200, "{body}");
    let (code, body) = engram_node::launch::http_get(http, "/metrics")
        .await
        .expect("metrics");
    assert_eq!(code, 200);
    for name in [
        "engram_raft_commit_seconds",
        "engram_raft_groups",
        "engram_router_request_seconds",
    ] {
        assert!(body.contains(name), "/metrics lacks {name}");
    }

    // A standalone router (no data) serves the same API in front of the cluster.
    let router_addr = format!(
        "{}:{}",
        tc.cluster.spec.host,
        tc.cluster.spec.base_port + 90
    );
    let mut router = std::process::Command::new(env!("CARGO_BIN_EXE_engram"))
        .args(["router", "--listen", &router_addr, "--cluster-config"])
        .arg(tc.cluster.config_path(0))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("router");
    let via_router = engram_client::Client::connect([format!("http://{router_addr}")])
        .await
        .expect("client");
    via_router
        .upsert(
            "acme",
            "notes",
            MemoryInput::new("r1", "u2", vec![0.0, 1.0, 0.0, 0.0]),
        )
        .await
        .expect("write through the router");
    let r = via_router
        .search(
            "acme",
            "notes",
            Search::user("u2", vec![0.0, 1.0, 0.0, 0.0], 1),
        )
        .await
        .expect("search");
    assert_eq!(
        r.hits
            .first()
            .and_then(|h| h.memory.as_ref())
            .map(|m| m.id.as_str()),
        Some("r1")
    );
    let _ = router.kill();
    let _ = router.wait();

    // The peer port refuses calls without the peer credential.
    let peer = format!("http://{}", tc.cluster.configs[0].peer_addr);
    let mut shards = engram_api::peer::shards_client::ShardsClient::connect(peer)
        .await
        .expect("connect");
    let status = shards
        .call(engram_api::peer::ShardCall {
            group_id: 0,
            op: vec![],
        })
        .await
        .expect_err("no token");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_need_distinct_zones_unless_relaxed() {
    // Three nodes in two zones: a shard of three replicas cannot have them in distinct zones.
    let tc = common::start(3, 2, common::pool(2, false)).await;
    let e = tc
        .client()
        .create_collection("acme", "notes", 4)
        .await
        .expect_err("placement");
    assert_eq!(e.code, ErrorCode::PlacementImpossible, "{e}");
    assert!(
        e.message.contains("distinct zones") && e.message.contains("allow_same_zone"),
        "{}",
        e.message
    );
    drop(tc);

    let tc = common::start(3, 2, common::pool(2, true)).await;
    let c = tc.client();
    c.create_collection("acme", "notes", 4)
        .await
        .expect("relaxed placement");
    c.upsert(
        "acme",
        "notes",
        MemoryInput::new("a", "u", vec![1.0, 0.0, 0.0, 0.0]),
    )
    .await
    .expect("write");
    let status = c.cluster_status().await.expect("status");
    assert_eq!(status.shards.len(), 2);
    for s in &status.shards {
        assert_eq!(s.replica_nodes.len(), 3);
    }
}
