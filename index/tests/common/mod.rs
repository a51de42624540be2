//! Shared helpers for the index test suites.
#![allow(dead_code)]

use engram_index::{
    BruteForce, Filter, Hit, IndexConfig, Memory, Metric, SearchRequest, TieredIndex, VectorIndex,
};
use serde_json::json;
use std::sync::Arc;

/// Deterministic SplitMix64, so failures reproduce.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub fn vector(&mut self, dim: usize) -> Vec<f32> {
        (0..dim).map(|_| self.f32()).collect()
    }
}

/// A memory with a payload that the filter tests use: topic (string), n (number), tags.
pub fn memory(rng: &mut Rng, i: usize, users: usize, dim: usize) -> Memory {
    let topics = ["food", "travel", "work", "music"];
    Memory::new(format!("m{i}"), format!("u{}", i % users), rng.vector(dim), 1_000 + i as i64)
        .with_payload(json!({"topic": topics[i % topics.len()], "n": i % 17, "src": {"app": if i % 3 == 0 { "chat" } else { "mail" }}}))
        .with_text(format!("memory number {i}"))
}

/// The tier a subject holds its memories in after `settle`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Oracle,
    /// Hot tier, graph walk forced (no exact-scan shortcut for small tiers).
    HotGraph,
    /// Hot tier with the default exact-scan threshold.
    Hot,
    /// Hot tier on the hnsw_rs engine, graph walk forced.
    HotHnswRs,
    /// Everything sealed into warm segments, graph walk forced.
    WarmGraph,
    /// Everything moved to cold segments.
    Cold,
    /// Successive settles go cold, then warm, then stay hot: all three tiers at once.
    Mixed,
}

pub const KINDS: [Kind; 7] = [
    Kind::Oracle,
    Kind::HotGraph,
    Kind::Hot,
    Kind::HotHnswRs,
    Kind::WarmGraph,
    Kind::Cold,
    Kind::Mixed,
];

pub struct Subject {
    pub kind: Kind,
    pub index: Arc<dyn VectorIndex>,
    tiered: Option<Arc<TieredIndex>>,
    settles: std::cell::Cell<usize>,
    pub dir: tempfile::TempDir,
}

impl Subject {
    pub fn new(kind: Kind, dim: usize, metric: Metric) -> Subject {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = IndexConfig::new(dim, metric);
        config.hnsw.ef_search = 400;
        config.policy.promote_on_recall = false;
        if matches!(
            kind,
            Kind::HotGraph | Kind::HotHnswRs | Kind::WarmGraph | Kind::Mixed
        ) {
            config.exact_scan_threshold = 0;
        }
        if kind == Kind::HotHnswRs {
            config.hot_engine = engram_index::HotEngine::HnswRs;
        }
        let (index, tiered): (Arc<dyn VectorIndex>, Option<Arc<TieredIndex>>) = match kind {
            Kind::Oracle => (Arc::new(BruteForce::new(config).expect("config")), None),
            _ => {
                let t =
                    Arc::new(TieredIndex::create(dir.path().join("idx"), config).expect("create"));
                (t.clone(), Some(t))
            }
        };
        Subject {
            kind,
            index,
            tiered,
            settles: std::cell::Cell::new(0),
            dir,
        }
    }

    pub fn tiered(&self) -> Option<&TieredIndex> {
        self.tiered.as_deref()
    }

    /// Moves what was written so far into the tier under test.
    pub fn settle(&self) {
        let Some(t) = self.tiered() else { return };
        let n = self.settles.get();
        self.settles.set(n + 1);
        let to_cold = || {
            t.seal_hot().expect("seal");
            t.demote_all_warm().expect("demote");
        };
        match self.kind {
            Kind::Oracle | Kind::Hot | Kind::HotGraph | Kind::HotHnswRs => {}
            Kind::WarmGraph => {
                t.seal_hot().expect("seal");
            }
            Kind::Cold => to_cold(),
            Kind::Mixed => match n % 3 {
                0 => to_cold(),
                1 => {
                    t.seal_hot().expect("seal");
                }
                _ => {}
            },
        }
    }

    /// Whether search results must equal the oracle's exactly (else: recall ≥ 0.9).
    pub fn exact(&self) -> bool {
        matches!(self.kind, Kind::Oracle | Kind::Hot | Kind::Cold)
    }
}

/// Checks search results against the oracle: every hit valid, ordered, no duplicates, the
/// right count, and the expected overlap with the exact answer. Returns the recall.
pub fn check_search(s: &Subject, oracle: &BruteForce, req: &SearchRequest) -> f64 {
    let got = s.index.search(req).expect("search");
    let want = oracle.search(req).expect("oracle search");
    assert_eq!(
        got.len(),
        want.len(),
        "{:?}: result count for {:?}",
        s.kind,
        req.filter
    );
    let mut seen = std::collections::HashSet::new();
    for w in got.windows(2) {
        assert!(w[0].score >= w[1].score - 1e-5, "{:?}: not sorted", s.kind);
    }
    for h in &got {
        assert!(
            seen.insert(h.id().to_string()),
            "{:?}: duplicate {}",
            s.kind,
            h.id()
        );
        let truth = oracle
            .get(h.id())
            .expect("get")
            .unwrap_or_else(|| panic!("{:?}: returned deleted {}", s.kind, h.id()));
        assert!(
            req.filter.matches(&truth.meta),
            "{:?}: {} does not match the filter",
            s.kind,
            h.id()
        );
        assert_eq!(
            *h.meta,
            truth.meta,
            "{:?}: stale metadata for {}",
            s.kind,
            h.id()
        );
        let exact = exact_score(oracle, req, &truth);
        assert!(
            (h.score - exact).abs() < 1e-3 * (1.0 + exact.abs()),
            "{:?}: score {} vs {}",
            s.kind,
            h.score,
            exact
        );
    }
    let want_ids: std::collections::HashSet<&str> = want.iter().map(Hit::id).collect();
    let overlap = got.iter().filter(|h| want_ids.contains(h.id())).count();
    let recall = if want.is_empty() {
        1.0
    } else {
        overlap as f64 / want.len() as f64
    };
    if s.exact() {
        // Ties at the boundary may swap equal-score ids; compare the score lists.
        let gs: Vec<f32> = got.iter().map(|h| h.score).collect();
        let ws: Vec<f32> = want.iter().map(|h| h.score).collect();
        for (g, w) in gs.iter().zip(&ws) {
            assert!(
                (g - w).abs() < 1e-4,
                "{:?}: scores {gs:?} vs exact {ws:?}",
                s.kind
            );
        }
    }
    recall
}

fn exact_score(oracle: &BruteForce, req: &SearchRequest, m: &Memory) -> f32 {
    let one = BruteForce::new(oracle.config().clone()).expect("config");
    one.upsert(m.clone()).expect("upsert");
    one.search(&SearchRequest::new(req.vector.clone(), 1))
        .expect("search")[0]
        .score
}

pub fn filters() -> Vec<Filter> {
    use engram_index::Op;
    vec![
        Filter::default(),
        Filter::user("u3"),
        Filter::default().and("topic", Op::Eq(json!("food"))),
        Filter::default().and(
            "n",
            Op::Range {
                gte: Some(3.0),
                lte: Some(9.0),
            },
        ),
        Filter::default().and("topic", Op::In(vec![json!("work"), json!("music")])),
        Filter::default().and("src.app", Op::Eq(json!("chat"))),
        Filter::default().created_between(Some(1_050), Some(1_150)),
        Filter::user("u1").and(
            "n",
            Op::Range {
                gte: None,
                lte: Some(5.0),
            },
        ),
        // Very selective: a handful of memories.
        Filter::default()
            .and("n", Op::Eq(json!(16)))
            .and("topic", Op::Eq(json!("food"))),
        // Matches nothing.
        Filter::user("nobody"),
    ]
}
