//! The aging policy: hot → warm by size and age, warm → cold by age and cap, compaction of
//! tombstone-heavy segments, promotion of recalled cold memories, and the background worker.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{memory, Rng};
use engram_index::{
    Collections, IndexConfig, IndexError, MaintenanceWorker, Memory, Metric, SearchRequest, Tier,
    TierSelection, TieredIndex, VectorIndex,
};

const DIM: usize = 8;
const DAY: i64 = 24 * 3600 * 1000;

fn index(dir: &tempfile::TempDir, tweak: impl FnOnce(&mut IndexConfig)) -> TieredIndex {
    let mut c = IndexConfig::new(DIM, Metric::Cosine);
    tweak(&mut c);
    TieredIndex::create(dir.path().join("idx"), c).unwrap()
}

fn at(rng: &mut Rng, i: usize, t: i64) -> Memory {
    let mut m = memory(rng, i, 4, DIM);
    m.meta.created_at_ms = t;
    m.meta.last_accessed_ms = t;
    m
}

#[test]
fn hot_seals_when_full() {
    let dir = tempfile::tempdir().unwrap();
    let idx = index(&dir, |c| c.policy.hot_max_memories = 100);
    let mut rng = Rng(21);
    idx.upsert_batch((0..99).map(|i| at(&mut rng, i, 0)).collect())
        .unwrap();
    assert_eq!(idx.maintain(1).unwrap().sealed, 0);
    idx.upsert(at(&mut rng, 99, 0)).unwrap();
    assert_eq!(idx.maintain(1).unwrap().sealed, 100);
    let s = idx.stats();
    assert_eq!((s.hot_rows, s.warm_live), (0, 100));
}

#[test]
fn hot_seals_by_age_and_warm_moves_to_cold_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let idx = index(&dir, |_| {});
    let mut rng = Rng(22);
    idx.upsert_batch((0..50).map(|i| at(&mut rng, i, 0)).collect())
        .unwrap();
    // Younger than 30 days: stays hot.
    assert_eq!(idx.maintain(29 * DAY).unwrap(), Default::default());
    let r = idx.maintain(31 * DAY).unwrap();
    assert_eq!((r.sealed, r.demoted), (50, 0));
    assert_eq!(idx.tier_of("m0"), Some(Tier::Warm));
    // A warm segment whose newest memory is older than 180 days goes cold.
    assert_eq!(idx.maintain(179 * DAY).unwrap().demoted, 0);
    assert_eq!(idx.maintain(181 * DAY).unwrap().demoted, 1);
    assert_eq!(idx.tier_of("m0"), Some(Tier::Cold));
    assert_eq!(idx.len(), 50);
}

#[test]
fn warm_cap_moves_the_oldest_segments_to_cold() {
    let dir = tempfile::tempdir().unwrap();
    let idx = index(&dir, |c| c.policy.warm_max_memories = Some(60));
    let mut rng = Rng(23);
    for (seg, t) in [(0, 10), (1, 20), (2, 30)] {
        idx.upsert_batch(
            (seg * 40..seg * 40 + 40)
                .map(|i| at(&mut rng, i, t))
                .collect(),
        )
        .unwrap();
        idx.seal_hot().unwrap();
    }
    let r = idx.maintain(40).unwrap();
    assert_eq!(
        r.demoted, 2,
        "120 warm memories over a cap of 60: the two oldest segments go"
    );
    assert_eq!(idx.tier_of("m0"), Some(Tier::Cold));
    assert_eq!(idx.tier_of("m45"), Some(Tier::Cold));
    assert_eq!(idx.tier_of("m85"), Some(Tier::Warm));
}

#[test]
fn tombstone_heavy_segments_are_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let idx = index(&dir, |c| c.policy.compact_dead_fraction = 0.25);
    let mut rng = Rng(24);
    idx.upsert_batch((0..200).map(|i| at(&mut rng, i, 0)).collect())
        .unwrap();
    idx.seal_hot().unwrap();
    for i in 0..60 {
        idx.delete(&format!("m{i}")).unwrap();
    }
    let before = idx.stats();
    assert_eq!((before.warm_rows, before.warm_live), (200, 140));
    assert_eq!(idx.maintain(1).unwrap().compacted, 1);
    let after = idx.stats();
    assert_eq!((after.warm_rows, after.warm_live), (140, 140));
    // Still searchable, and the deleted memories stay gone.
    let q = idx.get("m100").unwrap().unwrap().vector;
    let hits = idx
        .search(&SearchRequest::new(q, 5).with_tiers(TierSelection::only(Tier::Warm)))
        .unwrap();
    assert_eq!(hits[0].id(), "m100");
    assert!(idx.get("m10").unwrap().is_none());
}

#[test]
fn recalled_cold_memories_are_promoted_to_hot() {
    let dir = tempfile::tempdir().unwrap();
    let idx = index(&dir, |_| {});
    let mut rng = Rng(25);
    idx.upsert_batch((0..100).map(|i| at(&mut rng, i, 0)).collect())
        .unwrap();
    idx.seal_hot().unwrap();
    idx.demote_all_warm().unwrap();
    let target = idx.get("m7").unwrap().unwrap();
    let hits = idx
        .search(&SearchRequest::new(target.vector.clone(), 1))
        .unwrap();
    assert_eq!((hits[0].id(), hits[0].tier), ("m7", Tier::Cold));
    let r = idx.maintain(5 * DAY).unwrap();
    assert_eq!(r.promoted, 1);
    assert_eq!(idx.tier_of("m7"), Some(Tier::Hot));
    let promoted = idx.get("m7").unwrap().unwrap();
    assert_eq!(promoted.meta.last_accessed_ms, 5 * DAY);
    assert_eq!(promoted.meta.created_at_ms, target.meta.created_at_ms);
    assert_eq!(idx.len(), 100);
    // Promotion can be turned off.
    let dir2 = tempfile::tempdir().unwrap();
    let idx2 = index(&dir2, |c| c.policy.promote_on_recall = false);
    idx2.upsert_batch((0..20).map(|i| at(&mut rng, i, 0)).collect())
        .unwrap();
    idx2.seal_hot().unwrap();
    idx2.demote_all_warm().unwrap();
    idx2.search(&SearchRequest::new(target.vector, 1)).unwrap();
    assert_eq!(idx2.maintain(1).unwrap().promoted, 0);
}

#[test]
fn background_worker_ages_the_index_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let idx = Arc::new(index(&dir, |c| c.policy.hot_max_memories = 30));
    let mut rng = Rng(26);
    idx.upsert_batch((0..30).map(|i| at(&mut rng, i, 0)).collect())
        .unwrap();
    let worker = MaintenanceWorker::spawn(idx.clone(), Duration::from_millis(10), || 1);
    let deadline = Instant::now() + Duration::from_secs(20);
    while idx.stats().warm_live < 30 {
        assert!(
            Instant::now() < deadline,
            "worker did not seal the full hot tier"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(worker.has_run());
    worker.stop();
}

#[test]
fn writes_and_searches_run_concurrently_with_maintenance() {
    let dir = tempfile::tempdir().unwrap();
    let idx = Arc::new(index(&dir, |c| {
        c.policy.hot_max_memories = 150;
        c.exact_scan_threshold = 0;
    }));
    let worker = MaintenanceWorker::spawn(idx.clone(), Duration::from_millis(2), || 1);
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let idx = idx.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(100 + w);
                for i in 0..600 {
                    let id = w as usize * 10_000 + i;
                    idx.upsert(memory(&mut rng, id, 5, DIM)).unwrap();
                    if i % 7 == 0 {
                        idx.delete(&format!("m{}", id - i / 2)).unwrap();
                    }
                }
            })
        })
        .collect();
    let searcher = {
        let idx = idx.clone();
        std::thread::spawn(move || {
            let mut rng = Rng(7);
            for _ in 0..400 {
                let req = SearchRequest::new(rng.vector(DIM), 10).with_tiers(TierSelection::all());
                let hits = idx.search(&req).unwrap();
                let mut ids: Vec<&str> = hits.iter().map(|h| h.id()).collect();
                ids.sort_unstable();
                ids.dedup();
                assert_eq!(ids.len(), hits.len(), "duplicate ids in one result");
            }
        })
    };
    for w in writers {
        w.join().unwrap();
    }
    searcher.join().unwrap();
    worker.stop();
    // Every surviving memory is findable by its own vector.
    let mut live = 0;
    for w in 0..2usize {
        for i in 0..600 {
            if let Some(m) = idx.get(&format!("m{}", w * 10_000 + i)).unwrap() {
                live += 1;
                let hits = idx
                    .search(&SearchRequest::new(m.vector, 1).with_tiers(TierSelection::all()))
                    .unwrap();
                assert_eq!(hits[0].id(), m.meta.id);
            }
        }
    }
    assert_eq!(idx.len(), live);
    assert!(
        idx.stats().warm_segments + idx.stats().cold_segments > 0,
        "maintenance never sealed"
    );
}

#[test]
fn collections_are_created_listed_found_and_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let cols = Collections::open(dir.path()).unwrap();
    cols.create("notes", IndexConfig::new(DIM, Metric::Cosine))
        .unwrap();
    cols.create("facts", IndexConfig::new(4, Metric::L2))
        .unwrap();
    assert!(matches!(
        cols.create("notes", IndexConfig::new(DIM, Metric::Cosine)),
        Err(IndexError::CollectionExists(_))
    ));
    assert!(matches!(cols.get("missing"), Err(IndexError::UnknownCollection(n)) if n == "missing"));
    assert!(matches!(
        cols.create("../evil", IndexConfig::new(DIM, Metric::Cosine)),
        Err(IndexError::InvalidConfig(_))
    ));
    assert!(matches!(
        cols.create("bad-dim", IndexConfig::new(0, Metric::Cosine)),
        Err(IndexError::InvalidConfig(_))
    ));
    let mut rng = Rng(27);
    let notes = cols.get("notes").unwrap();
    notes.upsert(memory(&mut rng, 1, 1, DIM)).unwrap();
    notes.seal_hot().unwrap();
    drop(notes);
    assert_eq!(cols.list(), vec!["facts".to_string(), "notes".to_string()]);
    drop(cols);
    let cols = Collections::open(dir.path()).unwrap();
    assert_eq!(cols.get("notes").unwrap().len(), 1);
    cols.drop_collection("notes").unwrap();
    assert!(matches!(
        cols.get("notes"),
        Err(IndexError::UnknownCollection(_))
    ));
    assert!(matches!(
        cols.drop_collection("notes"),
        Err(IndexError::UnknownCollection(_))
    ));
    assert!(!dir.path().join("notes").exists());
}
