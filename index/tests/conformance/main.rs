//! The index conformance suite: every implementation and every tier (hot with and without the
//! exact-scan shortcut, warm, cold, all three mixed) must behave like the exact brute-force
//! oracle. Each test runs against every subject.

#[path = "../common/mod.rs"]
mod common;

use common::{check_search, filters, memory, Kind, Rng, Subject, KINDS};
use engram_index::{
    BruteForce, Filter, IndexConfig, IndexError, Memory, Metric, Op, SearchRequest, TierSelection,
    VectorIndex,
};
use serde_json::json;

const DIM: usize = 12;

fn for_each_subject(metric: Metric, f: impl Fn(&Subject, &BruteForce)) {
    for kind in KINDS {
        let s = Subject::new(kind, DIM, metric);
        let oracle = BruteForce::new(IndexConfig::new(DIM, metric)).unwrap();
        f(&s, &oracle);
    }
}

fn write_both(s: &Subject, oracle: &BruteForce, batch: Vec<Memory>) {
    s.index.upsert_batch(batch.clone()).unwrap();
    oracle.upsert_batch(batch).unwrap();
}

fn all_tiers(k: usize, v: Vec<f32>) -> SearchRequest {
    SearchRequest::new(v, k).with_tiers(TierSelection::all())
}

#[test]
fn get_returns_what_was_written() {
    for_each_subject(Metric::Cosine, |s, oracle| {
        let mut rng = Rng(1);
        let batch: Vec<Memory> = (0..50).map(|i| memory(&mut rng, i, 5, DIM)).collect();
        write_both(s, oracle, batch);
        s.settle();
        assert_eq!(s.index.len(), 50, "{:?}", s.kind);
        for i in 0..50 {
            let id = format!("m{i}");
            let got = s
                .index
                .get(&id)
                .unwrap()
                .unwrap_or_else(|| panic!("{:?}: {id} missing", s.kind));
            let want = oracle.get(&id).unwrap().unwrap();
            assert_eq!(got.meta, want.meta, "{:?}", s.kind);
            for (a, b) in got.vector.iter().zip(&want.vector) {
                assert!((a - b).abs() < 1e-6, "{:?}: vector of {id}", s.kind);
            }
        }
        assert!(s.index.get("nope").unwrap().is_none());
    });
}

#[test]
fn upsert_replaces_by_id_in_every_tier() {
    for_each_subject(Metric::Cosine, |s, oracle| {
        let mut rng = Rng(2);
        write_both(
            s,
            oracle,
            (0..120).map(|i| memory(&mut rng, i, 6, DIM)).collect(),
        );
        s.settle();
        // Replace a third of them with new vectors and payloads.
        let replaced: Vec<Memory> = (0..120)
            .step_by(3)
            .map(|i| {
                memory(&mut rng, i, 6, DIM).with_payload(json!({"topic": "replaced", "n": 99}))
            })
            .collect();
        write_both(s, oracle, replaced.clone());
        s.settle();
        assert_eq!(s.index.len(), 120, "{:?}", s.kind);
        for m in &replaced {
            let got = s.index.get(m.id()).unwrap().unwrap();
            assert_eq!(
                got.meta.payload,
                json!({"topic": "replaced", "n": 99}),
                "{:?}",
                s.kind
            );
            // Searching with the new vector finds it; the old version is never returned.
            let hits = s.index.search(&all_tiers(5, m.vector.clone())).unwrap();
            assert_eq!(hits[0].id(), m.id(), "{:?}", s.kind);
            assert_eq!(hits[0].meta.payload["topic"], "replaced", "{:?}", s.kind);
        }
        for _ in 0..10 {
            check_search(s, oracle, &all_tiers(10, rng.vector(DIM)));
        }
    });
}

#[test]
fn deletes_are_honoured_in_every_tier() {
    for_each_subject(Metric::Cosine, |s, oracle| {
        let mut rng = Rng(3);
        let batch: Vec<Memory> = (0..150).map(|i| memory(&mut rng, i, 7, DIM)).collect();
        write_both(s, oracle, batch.clone());
        s.settle();
        for i in (0..150).step_by(4) {
            let id = format!("m{i}");
            assert!(s.index.delete(&id).unwrap(), "{:?}", s.kind);
            assert!(oracle.delete(&id).unwrap());
            assert!(!s.index.delete(&id).unwrap(), "{:?}: second delete", s.kind);
        }
        s.settle();
        assert_eq!(s.index.len(), oracle.len(), "{:?}", s.kind);
        for m in &batch {
            assert_eq!(
                s.index.get(m.id()).unwrap().is_some(),
                oracle.get(m.id()).unwrap().is_some()
            );
        }
        // A deleted memory's own vector does not bring it back.
        let gone = &batch[0];
        let hits = s.index.search(&all_tiers(10, gone.vector.clone())).unwrap();
        assert!(hits.iter().all(|h| h.id() != gone.id()), "{:?}", s.kind);
        for _ in 0..10 {
            check_search(s, oracle, &all_tiers(10, rng.vector(DIM)));
        }
    });
}

#[test]
fn delete_by_filter_removes_exactly_the_matches() {
    for_each_subject(Metric::Cosine, |s, oracle| {
        let mut rng = Rng(4);
        write_both(
            s,
            oracle,
            (0..200).map(|i| memory(&mut rng, i, 8, DIM)).collect(),
        );
        s.settle();
        for f in [
            Filter::user("u2"),
            Filter::default().and("topic", Op::Eq(json!("travel"))),
        ] {
            let n = s.index.delete_by_filter(&f).unwrap();
            assert_eq!(
                n,
                oracle.delete_by_filter(&f).unwrap(),
                "{:?}: {f:?}",
                s.kind
            );
            assert!(n > 0);
        }
        s.settle();
        assert_eq!(s.index.len(), oracle.len(), "{:?}", s.kind);
        for _ in 0..10 {
            check_search(s, oracle, &all_tiers(10, rng.vector(DIM)));
        }
    });
}

#[test]
fn filtered_search_matches_the_oracle() {
    for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
        for_each_subject(metric, |s, oracle| {
            let mut rng = Rng(5);
            write_both(
                s,
                oracle,
                (0..400).map(|i| memory(&mut rng, i, 10, DIM)).collect(),
            );
            s.settle();
            write_both(
                s,
                oracle,
                (400..500).map(|i| memory(&mut rng, i, 10, DIM)).collect(),
            );
            s.settle();
            let mut recall = 0.0;
            let mut n = 0;
            for f in filters() {
                for k in [1, 10, 40] {
                    let req = all_tiers(k, rng.vector(DIM)).with_filter(f.clone());
                    recall += check_search(s, oracle, &req);
                    n += 1;
                }
            }
            let recall = recall / n as f64;
            assert!(
                recall >= 0.9,
                "{:?} {metric:?}: mean recall {recall}",
                s.kind
            );
        });
    }
}

#[test]
fn very_selective_filters_return_every_match() {
    for_each_subject(Metric::Cosine, |s, oracle| {
        let mut rng = Rng(6);
        let mut batch: Vec<Memory> = (0..600).map(|i| memory(&mut rng, i, 3, DIM)).collect();
        // Three needles that the graph walk alone would rarely reach.
        for (i, m) in batch.iter_mut().enumerate().take(3) {
            m.meta.payload = json!({"needle": true, "n": i});
        }
        write_both(s, oracle, batch);
        s.settle();
        let f = Filter::default().and("needle", Op::Eq(json!(true)));
        for _ in 0..5 {
            let req = all_tiers(10, rng.vector(DIM)).with_filter(f.clone());
            let hits = s.index.search(&req).unwrap();
            assert_eq!(hits.len(), 3, "{:?}: every needle must be found", s.kind);
            check_search(s, oracle, &req);
        }
    });
}

#[test]
fn bad_input_is_rejected_and_changes_nothing() {
    for_each_subject(Metric::Cosine, |s, _| {
        let mut rng = Rng(7);
        s.index.upsert(memory(&mut rng, 0, 1, DIM)).unwrap();
        s.settle();
        let before = s.index.get("m0").unwrap();
        let good = memory(&mut rng, 1, 1, DIM);
        type Expect = fn(&IndexError) -> bool;
        let mut cases: Vec<(Memory, Expect)> = Vec::new();
        let mut m = good.clone();
        m.vector.pop();
        cases.push((m, |e| matches!(e, IndexError::DimensionMismatch { expected: DIM, got } if *got == DIM - 1)));
        let mut m = good.clone();
        m.vector[3] = f32::NAN;
        cases.push((m, |e| {
            matches!(e, IndexError::NonFiniteVector { position: 3, .. })
        }));
        let mut m = good.clone();
        m.vector[0] = f32::INFINITY;
        cases.push((m, |e| {
            matches!(e, IndexError::NonFiniteVector { position: 0, .. })
        }));
        let mut m = good.clone();
        m.vector.clear();
        cases.push((m, |e| matches!(e, IndexError::EmptyVector)));
        let mut m = good.clone();
        m.vector = vec![0.0; DIM];
        cases.push((m, |e| matches!(e, IndexError::ZeroVector)));
        let mut m = good.clone();
        m.meta.id.clear();
        cases.push((m, |e| matches!(e, IndexError::EmptyId)));
        let mut m = good.clone();
        m.meta.payload = json!([1, 2]);
        cases.push((m, |e| matches!(e, IndexError::InvalidPayload(_))));
        let mut m = good.clone();
        m.meta.payload = json!({"big": "x".repeat(70_000)});
        cases.push((m, |e| {
            matches!(
                e,
                IndexError::TooLarge {
                    field: "payload",
                    ..
                }
            )
        }));
        let mut m = good.clone();
        m.meta.importance = f32::NAN;
        cases.push((m, |e| matches!(e, IndexError::InvalidImportance(_))));
        for (bad, expected) in cases {
            // Alone, and as the last item of a batch whose other items are fine.
            let err = s.index.upsert(bad.clone()).unwrap_err();
            assert!(expected(&err), "{:?}: unexpected error {err:?}", s.kind);
            assert!(err.is_invalid_input());
            let err = s.index.upsert_batch(vec![good.clone(), bad]).unwrap_err();
            assert!(
                expected(&err),
                "{:?}: unexpected batch error {err:?}",
                s.kind
            );
            assert_eq!(
                s.index.len(),
                1,
                "{:?}: a failed batch wrote something",
                s.kind
            );
            assert!(s.index.get(good.id()).unwrap().is_none());
        }
        assert_eq!(s.index.get("m0").unwrap(), before, "{:?}", s.kind);
        // Bad searches.
        let q = rng.vector(DIM);
        let bad_searches = [
            SearchRequest::new(vec![1.0; DIM + 1], 5),
            SearchRequest::new(vec![f32::NAN; DIM], 5),
            SearchRequest::new(vec![], 5),
            SearchRequest::new(q.clone(), 0),
            SearchRequest::new(q.clone(), 1_000_000),
            SearchRequest::new(q.clone(), 5).with_ef(0),
            SearchRequest::new(q.clone(), 5)
                .with_filter(Filter::default().and("", Op::Eq(json!(1)))),
        ];
        for req in bad_searches {
            let err = s.index.search(&req).unwrap_err();
            assert!(err.is_invalid_input(), "{:?}: {err:?}", s.kind);
        }
        let err = s
            .index
            .delete_by_filter(&Filter::default().and("a", Op::In(vec![])))
            .unwrap_err();
        assert!(matches!(err, IndexError::InvalidFilter(_)));
        assert_eq!(s.index.len(), 1);
    });
}

#[test]
fn empty_index_answers_empty() {
    for_each_subject(Metric::L2, |s, _| {
        s.settle();
        assert!(s.index.is_empty());
        let hits = s.index.search(&all_tiers(10, vec![0.5; DIM])).unwrap();
        assert!(hits.is_empty(), "{:?}", s.kind);
        assert!(!s.index.delete("x").unwrap());
    });
}

#[test]
fn auto_tier_selection_reaches_cold_only_when_needed() {
    let s = Subject::new(Kind::Mixed, DIM, Metric::Cosine);
    let t = s.tiered().unwrap();
    let mut rng = Rng(8);
    let old: Vec<Memory> = (0..50).map(|i| memory(&mut rng, i, 2, DIM)).collect();
    s.index.upsert_batch(old.clone()).unwrap();
    s.settle(); // → cold
    s.index
        .upsert_batch((50..100).map(|i| memory(&mut rng, i, 2, DIM)).collect())
        .unwrap();
    assert_eq!(t.tier_of("m0"), Some(engram_index::Tier::Cold));
    assert_eq!(t.tier_of("m60"), Some(engram_index::Tier::Hot));
    // Enough results in hot: auto does not read cold.
    let hits = s
        .index
        .search(&SearchRequest::new(old[0].vector.clone(), 5))
        .unwrap();
    assert!(hits.iter().all(|h| h.tier == engram_index::Tier::Hot));
    // A filter only cold memories pass: auto falls through to cold.
    let f = Filter::default().created_between(None, Some(1_050));
    let hits = s
        .index
        .search(&SearchRequest::new(old[0].vector.clone(), 5).with_filter(f))
        .unwrap();
    assert_eq!(hits.len(), 5);
    assert_eq!(hits[0].id(), "m0");
    assert!(hits.iter().all(|h| h.tier == engram_index::Tier::Cold));
    // Explicit tiers are honoured.
    let hot_only = SearchRequest::new(old[0].vector.clone(), 5)
        .with_tiers(TierSelection::only(engram_index::Tier::Hot));
    assert!(s
        .index
        .search(&hot_only)
        .unwrap()
        .iter()
        .all(|h| h.tier == engram_index::Tier::Hot));
}
