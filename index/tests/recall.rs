//! Recall on real data (GloVe 6B, 50-d, 10k base / 100 queries, cosine): every tier must find
//! the true neighbours, measured against the dataset's exact ground truth.

use engram_index::dataset::{shared_datasets_dir, Dataset};
use engram_index::{
    IndexConfig, Memory, Metric, SearchRequest, Tier, TierSelection, TieredIndex, VectorIndex,
};

fn recall_of(index: &TieredIndex, data: &Dataset, tier: Tier, ef: Option<usize>) -> f64 {
    let k = 10;
    let mut total = 0.0;
    for (q, v) in data.queries.iter().enumerate() {
        let mut req = SearchRequest::new(v.clone(), k).with_tiers(TierSelection::only(tier));
        if let Some(ef) = ef {
            req = req.with_ef(ef);
        }
        let hits = index.search(&req).expect("search");
        assert_eq!(hits.len(), k);
        assert!(hits.iter().all(|h| h.tier == tier));
        let rows: Vec<u32> = hits
            .iter()
            .map(|h| h.id().parse().expect("numeric id"))
            .collect();
        total += data.recall(q, &rows, k);
    }
    total / data.queries.len() as f64
}

#[test]
fn every_tier_meets_its_recall_target_on_glove_10k() {
    let data = Dataset::load(shared_datasets_dir().join("glove-6b-50-angular-10k")).expect(
        "the small dataset must be at ../shared/datasets/glove-6b-50-angular-10k (or set ENGRAM_DATASETS)",
    );
    let dir = tempfile::tempdir().unwrap();
    let config = IndexConfig::new(data.dim, Metric::Cosine);
    let index = TieredIndex::create(dir.path().join("idx"), config).unwrap();
    let batch: Vec<Memory> = data
        .base
        .iter()
        .enumerate()
        .map(|(i, v)| Memory::new(i.to_string(), format!("u{}", i % 50), v.clone(), i as i64))
        .collect();
    index.upsert_batch(batch).unwrap();

    // Default search breadth (ef_search = 64).
    let hot = recall_of(&index, &data, Tier::Hot, None);
    assert!(hot >= 0.95, "hot tier recall@10 = {hot}");

    index.seal_hot().unwrap();
    drop(index);
    // Reopened from disk: the warm segment is mapped, not rebuilt.
    let index = TieredIndex::open(dir.path().join("idx")).unwrap();
    assert_eq!(index.stats().warm_live, data.base.len());
    let warm = recall_of(&index, &data, Tier::Warm, None);
    assert!(warm >= 0.95, "warm segment recall@10 = {warm}");

    index.demote_all_warm().unwrap();
    let stats = index.stats();
    assert_eq!((stats.warm_segments, stats.cold_live), (0, data.base.len()));
    let cold = recall_of(&index, &data, Tier::Cold, None);
    assert!(cold >= 0.90, "cold-only recall@10 = {cold}");
    eprintln!("recall@10 on glove-6b-50-angular-10k: hot {hot:.3}, warm {warm:.3}, cold {cold:.3}");
}
