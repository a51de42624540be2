//! Restart and crash behaviour of a tiered index directory.

mod common;

use common::{memory, Rng};
use engram_index::{
    Filter, IndexConfig, IndexError, Metric, SearchRequest, TierSelection, TieredIndex, VectorIndex,
};

const DIM: usize = 16;

fn config() -> IndexConfig {
    let mut c = IndexConfig::new(DIM, Metric::Cosine);
    c.exact_scan_threshold = 0;
    c
}

fn snapshot(index: &TieredIndex, queries: &[Vec<f32>]) -> Vec<Vec<String>> {
    queries
        .iter()
        .map(|q| {
            let req = SearchRequest::new(q.clone(), 10)
                .with_tiers(TierSelection::all())
                .with_ef(200);
            index
                .search(&req)
                .unwrap()
                .iter()
                .map(|h| h.id().to_string())
                .collect()
        })
        .collect()
}

#[test]
fn reopen_restores_segments_tombstones_and_watermark_without_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idx");
    let mut rng = Rng(11);
    let queries: Vec<Vec<f32>> = (0..20).map(|_| rng.vector(DIM)).collect();
    let (before, len) = {
        let index = TieredIndex::create(&path, config()).unwrap();
        index
            .upsert_batch((0..800).map(|i| memory(&mut rng, i, 9, DIM)).collect())
            .unwrap();
        index.mark_applied(800);
        index.seal_hot().unwrap();
        index.demote_all_warm().unwrap(); // → cold
        index
            .upsert_batch((800..1500).map(|i| memory(&mut rng, i, 9, DIM)).collect())
            .unwrap();
        index.mark_applied(1500);
        index.seal_hot().unwrap(); // → warm
                                   // Deletes and replacements after the last seal land as tombstones.
        for i in (0..1500).step_by(5) {
            index.delete(&format!("m{i}")).unwrap();
        }
        index.delete_by_filter(&Filter::user("u4")).unwrap();
        index.flush().unwrap();
        assert_eq!(index.watermark(), 1500);
        (snapshot(&index, &queries), index.len())
    };
    let index = TieredIndex::open(&path).unwrap();
    assert_eq!(index.watermark(), 1500);
    assert_eq!(index.len(), len);
    assert!(index.get("m5").unwrap().is_none());
    assert!(index.get("m1").unwrap().is_some());
    assert_eq!(snapshot(&index, &queries), before);
    let stats = index.stats();
    assert_eq!(
        (stats.warm_segments, stats.cold_segments, stats.hot_rows),
        (1, 1, 0)
    );
}

#[test]
fn unsealed_hot_rows_are_not_persisted_and_the_watermark_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idx");
    let mut rng = Rng(12);
    {
        let index = TieredIndex::create(&path, config()).unwrap();
        index
            .upsert_batch((0..100).map(|i| memory(&mut rng, i, 3, DIM)).collect())
            .unwrap();
        index.mark_applied(100);
        index.seal_hot().unwrap();
        index
            .upsert_batch((100..150).map(|i| memory(&mut rng, i, 3, DIM)).collect())
            .unwrap();
        index.mark_applied(150);
    }
    let index = TieredIndex::open(&path).unwrap();
    // The caller replays its writes after the watermark; rows before it are all there.
    assert_eq!(index.watermark(), 100);
    assert_eq!(index.len(), 100);
    // Replaying is idempotent: re-applying writes already reflected changes nothing.
    let mut rng = Rng(12);
    index
        .upsert_batch((0..150).map(|i| memory(&mut rng, i, 3, DIM)).collect())
        .unwrap();
    assert_eq!(index.len(), 150);
}

#[test]
fn leftovers_of_a_crashed_seal_are_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idx");
    {
        let index = TieredIndex::create(&path, config()).unwrap();
        let mut rng = Rng(13);
        index
            .upsert_batch((0..50).map(|i| memory(&mut rng, i, 3, DIM)).collect())
            .unwrap();
        index.seal_hot().unwrap();
    }
    // A segment written but never published, and a half-written temp file.
    std::fs::write(path.join("warm-00000099.seg"), b"partial").unwrap();
    std::fs::write(path.join("warm-00000100.tmp"), b"partial").unwrap();
    let index = TieredIndex::open(&path).unwrap();
    assert_eq!(index.len(), 50);
    assert!(!path.join("warm-00000099.seg").exists());
    assert!(!path.join("warm-00000100.tmp").exists());
}

#[test]
fn corrupt_or_truncated_segments_are_reported_not_panicked_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idx");
    {
        let index = TieredIndex::create(&path, config()).unwrap();
        let mut rng = Rng(14);
        index
            .upsert_batch((0..300).map(|i| memory(&mut rng, i, 3, DIM)).collect())
            .unwrap();
        index.seal_hot().unwrap();
        index
            .upsert_batch((300..400).map(|i| memory(&mut rng, i, 3, DIM)).collect())
            .unwrap();
        index.seal_hot().unwrap();
        index.demote_all_warm().unwrap();
        index
            .upsert_batch((400..500).map(|i| memory(&mut rng, i, 3, DIM)).collect())
            .unwrap();
        index.seal_hot().unwrap();
    }
    let segs: Vec<std::path::PathBuf> = std::fs::read_dir(&path)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    assert!(segs.iter().any(|p| p.to_string_lossy().contains("warm-")));
    assert!(segs.iter().any(|p| p.to_string_lossy().contains("cold-")));
    for seg in &segs {
        let original = std::fs::read(seg).unwrap();
        // Flip bytes at several places (header, data, table), then truncate.
        let len = original.len();
        for pos in [3, 40, len / 3, len / 2, len - 10] {
            let mut bad = original.clone();
            bad[pos] ^= 0x5A;
            std::fs::write(seg, &bad).unwrap();
            match TieredIndex::open(&path) {
                Err(IndexError::Corrupt { .. }) => {}
                Err(e) => panic!("{}: byte {pos}: unexpected error {e}", seg.display()),
                Ok(_) => panic!("{}: byte {pos} flipped, yet it opened", seg.display()),
            }
        }
        std::fs::write(seg, &original[..len - 7]).unwrap();
        assert!(matches!(
            TieredIndex::open(&path),
            Err(IndexError::Corrupt { .. })
        ));
        std::fs::write(seg, &original).unwrap();
    }
    assert_eq!(TieredIndex::open(&path).unwrap().len(), 500);
    // A damaged manifest is an error too.
    std::fs::write(path.join("manifest.json"), b"{not json").unwrap();
    assert!(matches!(
        TieredIndex::open(&path),
        Err(IndexError::Corrupt { .. })
    ));
}

#[test]
fn open_or_create_refuses_a_different_shape() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idx");
    TieredIndex::create(&path, config()).unwrap();
    assert!(TieredIndex::create(&path, config()).is_err());
    assert!(TieredIndex::open_or_create(&path, config()).is_ok());
    let err = TieredIndex::open_or_create(&path, IndexConfig::new(DIM + 1, Metric::Cosine))
        .err()
        .unwrap();
    assert!(matches!(err, IndexError::InvalidConfig(_)), "{err}");
}
