//! The shard state machine through real openraft on a single-voter group: what a write does
//! to the records and the index, what a rejected write leaves behind (nothing), idempotent
//! retries, and recovery after restart (with and without log compaction).

mod common;

use std::time::Duration;

use common::*;
use engram_api::ErrorCode;
use engram_index::{Filter, Memory, SearchRequest};
use engram_raft::{Command, RaftError, ShardRequest};

const T: Duration = Duration::from_secs(20);
const G: u64 = 7;

async fn single(timing: engram_raft::RaftTiming) -> TestCluster {
    let c = TestCluster::start(1, timing).await;
    c.create_groups([G], &[0]).await;
    c.leader(G, T).await;
    c
}

fn search(c: &TestCluster, v: Vec<f32>, k: usize) -> Vec<String> {
    let state = c.host(0).group(G).unwrap().state().clone();
    let mut req = SearchRequest::new(v, k);
    req.filter = Filter::default();
    state
        .search("mem", &req)
        .unwrap()
        .into_iter()
        .map(|h| h.id().to_string())
        .collect()
}

fn rejected_code(r: Result<engram_raft::WriteAck, RaftError>) -> ErrorCode {
    match r {
        Err(RaftError::Rejected { code, .. }) => code,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_reach_records_and_index() {
    let c = single(test_timing()).await;
    c.write(G, create_collection("mem"), T).await.unwrap();
    let ms: Vec<Memory> = (0..20).map(|n| memory(n, "alice")).collect();
    let ack = c.write(G, upsert("mem", ms), T).await.unwrap();
    assert_eq!(ack.upserted, 20);
    let state = c.host(0).group(G).unwrap().state().clone();
    assert_eq!(state.record_ids("mem").unwrap().len(), 20);
    let rec = state.get_record("mem", "m3").unwrap().expect("stored");
    assert_eq!(rec.seq, ack.index);
    assert_eq!(rec.record.vector, vector(3));
    assert_eq!(search(&c, vector(3), 1), vec!["m3".to_string()]);

    let ack = c
        .write(
            G,
            ShardRequest::new(Command::Delete {
                collection: "mem".into(),
                ids: vec!["m3".into(), "m3".into(), "nope".into()],
            }),
            T,
        )
        .await
        .unwrap();
    assert_eq!(ack.deleted, 1);
    assert!(state.get_record("mem", "m3").unwrap().is_none());
    assert!(!search(&c, vector(3), 5).contains(&"m3".to_string()));

    let bob: Vec<Memory> = (100..105).map(|n| memory(n, "bob")).collect();
    c.write(G, upsert("mem", bob), T).await.unwrap();
    let ack = c
        .write(
            G,
            ShardRequest::new(Command::delete_by_filter("mem", &Filter::user("bob"))),
            T,
        )
        .await
        .unwrap();
    assert_eq!(ack.deleted, 5);
    assert_eq!(state.record_ids("mem").unwrap().len(), 19);
    let bob_ids: Vec<String> = (100..105).map(|n| format!("m{n}")).collect();
    assert!(search(&c, vector(101), 30)
        .iter()
        .all(|id| !bob_ids.contains(id)));

    c.write(
        G,
        ShardRequest::new(Command::DropCollection { name: "mem".into() }),
        T,
    )
    .await
    .unwrap();
    assert!(state.record_ids("mem").unwrap().is_empty());
    assert!(state.collection_names().is_empty());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_writes_change_nothing() {
    let c = single(test_timing()).await;
    c.write(G, create_collection("mem"), T).await.unwrap();
    c.write(G, upsert("mem", vec![memory(1, "u")]), T)
        .await
        .unwrap();
    let state = c.host(0).group(G).unwrap().state().clone();

    // One bad memory in a batch: nothing of the batch is written.
    let mut bad = memory(2, "u");
    bad.vector.push(1.0);
    let r = c
        .write(G, upsert("mem", vec![memory(3, "u"), bad]), T)
        .await;
    assert_eq!(rejected_code(r), ErrorCode::DimensionMismatch);
    let mut nan = memory(4, "u");
    nan.vector[2] = f32::NAN;
    assert_eq!(
        rejected_code(c.write(G, upsert("mem", vec![nan]), T).await),
        ErrorCode::NonFiniteVector
    );
    assert_eq!(
        rejected_code(c.write(G, upsert("other", vec![memory(5, "u")]), T).await),
        ErrorCode::CollectionNotFound
    );
    let not_object = memory(6, "u").with_payload(serde_json::json!([1, 2]));
    assert_eq!(
        rejected_code(c.write(G, upsert("mem", vec![not_object]), T).await),
        ErrorCode::InvalidPayload
    );
    assert_eq!(
        rejected_code(c.write(G, create_collection("mem"), T).await),
        ErrorCode::CollectionExists
    );
    assert_eq!(
        rejected_code(c.write(G, create_collection("bad name!"), T).await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(state.record_ids("mem").unwrap(), vec!["m1".to_string()]);
    assert_eq!(search(&c, vector(3), 10), vec!["m1".to_string()]);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_retry_returns_first_answer_and_writes_nothing() {
    let c = single(test_timing()).await;
    c.write(G, create_collection("mem"), T).await.unwrap();
    let first = c
        .write(
            G,
            upsert("mem", vec![memory(1, "u"), memory(2, "u")]).with_idempotency_key("k-1"),
            T,
        )
        .await
        .unwrap();
    assert!(!first.deduplicated);
    // Same key, different content: the first answer, and no write.
    let again = c
        .write(
            G,
            upsert("mem", vec![memory(9, "u")]).with_idempotency_key("k-1"),
            T,
        )
        .await
        .unwrap();
    assert!(again.deduplicated);
    assert_eq!(again.index, first.index);
    assert_eq!(again.upserted, 2);
    let state = c.host(0).group(G).unwrap().state().clone();
    assert_eq!(
        state.record_ids("mem").unwrap(),
        vec!["m1".to_string(), "m2".to_string()]
    );
    assert_eq!(
        state.get_record("mem", "m1").unwrap().unwrap().seq,
        first.index
    );

    // A key whose window has passed (by the proposer's clock) is forgotten.
    let mut old = upsert("mem", vec![memory(3, "u")]).with_idempotency_key("k-old");
    old.proposed_at_ms -= 2 * engram_raft::storage::sm::DEFAULT_IDEMPOTENCY_WINDOW_MS;
    c.write(G, old, T).await.unwrap();
    let fresh = c
        .write(
            G,
            upsert("mem", vec![memory(4, "u")]).with_idempotency_key("k-old"),
            T,
        )
        .await
        .unwrap();
    assert!(!fresh.deduplicated, "an expired key must not deduplicate");
    assert!(state.get_record("mem", "m4").unwrap().is_some());
    c.shutdown().await;
}

async fn restart_keeps_everything(timing: engram_raft::RaftTiming, writes: u64) {
    restart_keeps_everything_with(timing, writes, engram_raft::Durability::Sync).await
}

async fn restart_keeps_everything_with(
    timing: engram_raft::RaftTiming,
    writes: u64,
    durability: engram_raft::Durability,
) {
    let mut c = TestCluster::start(0, timing).await;
    c.durability = durability;
    c.add_node().await;
    c.create_groups([G], &[0]).await;
    c.leader(G, T).await;
    c.write(G, create_collection("mem"), T).await.unwrap();
    let mut last = 0;
    for n in 0..writes {
        let ack = c
            .write(
                G,
                upsert("mem", vec![memory(n, "u")]).with_idempotency_key(format!("w{n}")),
                T,
            )
            .await
            .unwrap();
        last = ack.index;
    }
    // Some deletes, so replay has to re-apply them too.
    c.write(
        G,
        ShardRequest::new(Command::Delete {
            collection: "mem".into(),
            ids: vec!["m0".into(), "m1".into()],
        }),
        T,
    )
    .await
    .unwrap();
    c.kill(0).await;
    c.restart(0).await;
    c.leader(G, T).await;
    let state = c.host(0).group(G).unwrap().state().clone();
    assert!(state.applied_index() > last);
    let ids = state.record_ids("mem").unwrap();
    assert_eq!(ids.len() as u64, writes - 2);
    for n in 2..writes {
        let hits = search(&c, vector(n), 1);
        assert_eq!(
            hits,
            vec![format!("m{n}")],
            "memory {n} missing from the index after restart"
        );
    }
    assert!(!search(&c, vector(0), 3).contains(&"m0".to_string()));
    // A retried write from before the restart is still recognised.
    let retry = c
        .write(
            G,
            upsert("mem", vec![memory(5, "u")]).with_idempotency_key("w5"),
            T,
        )
        .await
        .unwrap();
    assert!(retry.deduplicated);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_replays_the_index_from_the_log() {
    restart_keeps_everything(test_timing(), 40).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_snapshots_and_log_compaction() {
    let mut t = test_timing();
    t.snapshot_every_entries = 10;
    t.keep_after_snapshot = 2;
    restart_keeps_everything(t, 60).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_durability_acknowledges_and_survives_a_clean_restart() {
    // Acks come without waiting for an fsync; the WAL is synced every 20 ms and on close.
    restart_keeps_everything_with(
        test_timing(),
        30,
        engram_raft::Durability::Periodic { interval_ms: 20 },
    )
    .await;
}
