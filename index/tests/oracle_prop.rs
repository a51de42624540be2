//! Property test: random sequences of writes, deletes, seals, demotions, compactions and
//! restarts, with searches in between, leave the tiered index equal to the exact oracle.

use engram_index::{
    BruteForce, Filter, HotEngine, IndexConfig, Memory, Metric, Op, SearchRequest, TierSelection,
    TieredIndex, VectorIndex,
};
use proptest::prelude::*;
use serde_json::json;

const DIM: usize = 6;

#[derive(Debug, Clone)]
enum Action {
    Upsert {
        id: u8,
        user: u8,
        topic: u8,
        v: Vec<f32>,
    },
    Batch(Vec<(u8, u8, Vec<f32>)>),
    Delete {
        id: u8,
    },
    DeleteUser {
        user: u8,
    },
    Seal,
    Demote,
    Compact,
    Restart,
    Search {
        q: Vec<f32>,
        k: usize,
        filter: u8,
    },
}

fn vector() -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(-1.0f32..1.0, DIM)
        .prop_filter("non-zero", |v| v.iter().any(|x| x.abs() > 1e-3))
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => (0u8..40, 0u8..4, 0u8..3, vector()).prop_map(|(id, user, topic, v)| Action::Upsert { id, user, topic, v }),
        2 => prop::collection::vec((0u8..40, 0u8..4, vector()), 1..12).prop_map(Action::Batch),
        2 => (0u8..40).prop_map(|id| Action::Delete { id }),
        1 => (0u8..4).prop_map(|user| Action::DeleteUser { user }),
        1 => Just(Action::Seal),
        1 => Just(Action::Demote),
        1 => Just(Action::Compact),
        1 => Just(Action::Restart),
        5 => (vector(), 1usize..15, 0u8..5).prop_map(|(q, k, filter)| Action::Search { q, k, filter }),
    ]
}

fn memory(id: u8, user: u8, topic: u8, v: Vec<f32>) -> Memory {
    Memory::new(format!("id{id}"), format!("user{user}"), v, id as i64)
        .with_payload(json!({"topic": topic}))
}

fn filter(choice: u8) -> Filter {
    match choice {
        0 => Filter::default(),
        1 => Filter::user("user1"),
        2 => Filter::default().and("topic", Op::Eq(json!(2))),
        3 => Filter::user("user2").and("topic", Op::In(vec![json!(0), json!(1)])),
        _ => Filter::default().created_between(Some(10), Some(30)),
    }
}

fn run(actions: Vec<Action>, engine: HotEngine) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idx");
    let mut config = IndexConfig::new(DIM, Metric::Cosine);
    config.exact_scan_threshold = 0; // always walk the graphs
    config.hot_engine = engine;
    config.hnsw.ef_search = 64;
    config.policy.promote_on_recall = false;
    config.policy.compact_dead_fraction = 0.2;
    let oracle = BruteForce::new(config.clone()).unwrap();
    let mut index = TieredIndex::create(&path, config).unwrap();
    for a in actions {
        match a {
            Action::Upsert { id, user, topic, v } => {
                let m = memory(id, user, topic, v);
                index.upsert(m.clone()).unwrap();
                oracle.upsert(m).unwrap();
            }
            Action::Batch(items) => {
                let batch: Vec<Memory> = items
                    .into_iter()
                    .map(|(id, u, v)| memory(id, u, 0, v))
                    .collect();
                index.upsert_batch(batch.clone()).unwrap();
                oracle.upsert_batch(batch).unwrap();
            }
            Action::Delete { id } => {
                let id = format!("id{id}");
                prop_assert_eq!(index.delete(&id).unwrap(), oracle.delete(&id).unwrap());
            }
            Action::DeleteUser { user } => {
                let f = Filter::user(format!("user{user}"));
                prop_assert_eq!(
                    index.delete_by_filter(&f).unwrap(),
                    oracle.delete_by_filter(&f).unwrap()
                );
            }
            Action::Seal => {
                index.seal_hot().unwrap();
            }
            Action::Demote => {
                index.demote_all_warm().unwrap();
            }
            Action::Compact => {
                index.maintain(0).unwrap();
            }
            Action::Restart => {
                // Hot rows are replayed by the shard after a restart; sealing first makes the
                // persisted state complete.
                index.seal_hot().unwrap();
                index.flush().unwrap();
                drop(index);
                index = TieredIndex::open(&path).unwrap();
            }
            Action::Search { q, k, filter: f } => {
                let req = SearchRequest::new(q, k)
                    .with_filter(filter(f))
                    .with_tiers(TierSelection::all());
                let got = index.search(&req).unwrap();
                let want = oracle.search(&req).unwrap();
                prop_assert_eq!(got.len(), want.len(), "result count");
                for (g, w) in got.iter().zip(&want) {
                    prop_assert!(
                        (g.score - w.score).abs() < 1e-4,
                        "scores {:?} vs {:?}",
                        got,
                        want
                    );
                    let truth = oracle.get(g.id()).unwrap();
                    prop_assert!(truth.is_some(), "returned a deleted memory {}", g.id());
                    prop_assert_eq!(&*g.meta, &truth.unwrap().meta);
                }
            }
        }
        prop_assert_eq!(index.len(), oracle.len());
    }
    // Every memory reads back identically from whatever tier it ended in.
    for id in 0..40u8 {
        let id = format!("id{id}");
        let (got, want) = (index.get(&id).unwrap(), oracle.get(&id).unwrap());
        prop_assert_eq!(got.is_some(), want.is_some(), "{}", id);
        if let (Some(g), Some(w)) = (got, want) {
            prop_assert_eq!(&g.meta, &w.meta);
            for (a, b) in g.vector.iter().zip(&w.vector) {
                prop_assert!((a - b).abs() < 1e-6);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn tiered_index_behaves_like_the_oracle(actions in prop::collection::vec(action(), 1..80)) {
        run(actions, HotEngine::Native)?;
    }

    #[test]
    fn tiered_index_on_hnsw_rs_behaves_like_the_oracle(actions in prop::collection::vec(action(), 1..60)) {
        run(actions, HotEngine::HnswRs)?;
    }
}
