//! The agent-memory workload end to end on a local 3-zone cluster of real node processes:
//! what `engram-bench cluster --workload agent` and `scale` measure must be right before it
//! is fast — every memory lands, filtered recalls honour their filters (their exact ground
//! truth only holds matching memories), tenant recalls fan out and merge.

use std::sync::Arc;

use engram_bench::agent::{AgentData, AgentSpec};
use engram_bench::load;
use engram_bench::local::LocalCluster;
use engram_client::{Client, ClientConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_workload_loads_and_recalls_exactly_what_it_should() {
    let data = Arc::new(
        AgentData::generate(
            AgentSpec {
                tenants: 3,
                users: 12,
                memories: 1_500,
                queries: 120,
                dim: 32,
                clusters: 16,
                ..AgentSpec::default()
            },
            None,
        )
        .expect("workload"),
    );
    let mut cluster = LocalCluster::start(3, 3, 6, None)
        .await
        .expect("a local cluster (the engram binary is built by cargo test --workspace)");
    let client = Client::with_config(
        cluster.endpoints(),
        ClientConfig {
            timeout: std::time::Duration::from_secs(30),
            ..ClientConfig::default()
        },
    )
    .expect("client");
    load::create_collections(&client, &data).await.expect("collections");
    let ingest = load::ingest(&client, &data, 100, 4, false).await.expect("ingest");
    assert_eq!(ingest.memories, 1_500);

    // Every memory is there (shard status may come from a replica still applying: wait).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let st = client.cluster_status().await.expect("status");
        let stored: u64 = st.shards.iter().map(|s| s.memory_count).sum();
        if stored == 1_500 {
            break;
        }
        assert!(
            stored <= 1_500 && std::time::Instant::now() < deadline,
            "memories stored across shards: {stored}, want 1500"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    // Recalls: a user's memories are few, so user-scope answers are exact; a filter that
    // were ignored would return non-matching memories and miss the ground truth.
    let p = load::recall(&client, &data, 4, 120, 0, false).await.expect("recall");
    assert_eq!(p.overall.errors, 0);
    assert_eq!(p.overall.count, 120);
    for kind in ["user", "user+time", "user+tag"] {
        let k = p.per_kind.get(kind).unwrap_or_else(|| panic!("no {kind} recalls: {:?}", p.per_kind.keys()));
        assert!(k.recall_at_k > 0.99, "{kind} recall {}", k.recall_at_k);
    }
    let tenant = p.per_kind.get("tenant").expect("tenant recalls");
    assert!(tenant.recall_at_k > 0.9, "tenant recall {}", tenant.recall_at_k);
    assert_eq!(p.partial, 0);

    // The mixed phase writes and recalls without errors.
    let m = load::mixed(&client, &data, 4, 2.0, 0.3, 0).await.expect("mixed");
    assert!(m.writes.count > 0 && m.recalls.count > 0);
    assert_eq!(m.writes.errors + m.recalls.errors, 0);
    assert!(cluster.disk_bytes() > 0 && cluster.rss_bytes() > 0);
    cluster.stop();
}
