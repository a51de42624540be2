//! The hot tier: recent memories in a mutable in-memory HNSW graph (hnsw_rs).
//!
//! hnsw_rs gives concurrent insert and search behind `&self`, but no delete or update: a
//! replaced or deleted row stays in the graph and is masked by the tier's [`DeadSet`] during
//! the walk. Rows are numbered densely from 0 in insertion order; the row number is the
//! hnsw_rs data id. When the tier is sealed, its graph is exported ([`HotTier::export_graph`])
//! and written as a warm segment, so the graph is built once, never rebuilt on restart.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use hnsw_rs::anndists::dist::Distance;
use hnsw_rs::hnsw::Hnsw;
use parking_lot::RwLock;

use crate::config::IndexConfig;
use crate::deadset::DeadSet;
use crate::distance::DistanceFn;
use crate::filter::Filter;
use crate::graph::GraphExport;
use crate::topk::{Cand, TopK};
use crate::types::{activity, MemoryMeta, Metric};

/// hnsw_rs's max_layer must be 16 for its own dump format; we never use that format, but keep
/// the library's default shape.
const MAX_LAYER: usize = 16;

/// Our distance kernels behind hnsw_rs's `Distance` trait (never hnsw_rs's own `DistDot`,
/// which asserts on rounding noise).
#[derive(Clone, Copy)]
struct HnswDistance(DistanceFn);

impl Distance<f32> for HnswDistance {
    /// hnsw_rs requires distances ≥ 0 (it negates them internally and asserts the sign), so
    /// each metric's distance goes through an order-preserving map onto [0, ∞):
    /// cosine clamps rounding noise below 0; dot maps −dot through a strictly increasing,
    /// positive function; L2 (squared) is already ≥ 0. Results are re-scored with the exact
    /// distance before they leave the tier.
    #[inline]
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        let d = self.0.distance(a, b);
        match self.0.metric() {
            Metric::Cosine | Metric::L2 => d.max(0.0),
            // d = −dot: d ≤ 0 → 1/(1−d) ∈ (0, 1]; d > 0 → 1 + d.
            Metric::Dot => {
                if d <= 0.0 {
                    1.0 / (1.0 - d)
                } else {
                    1.0 + d
                }
            }
        }
    }
}

pub(crate) struct HotRow {
    pub meta: Arc<MemoryMeta>,
    pub vector: Arc<[f32]>,
}

pub(crate) struct HotTier {
    /// Distinguishes hot tier instances (locations name the instance they point into).
    pub generation: u64,
    dist: DistanceFn,
    m: usize,
    graph: Hnsw<'static, f32, HnswDistance>,
    rows: RwLock<Vec<HotRow>>,
    by_user: RwLock<HashMap<String, Vec<u32>>>,
    pub dead: DeadSet,
    oldest_activity_ms: AtomicI64,
}

impl HotTier {
    pub fn new(config: &IndexConfig, generation: u64, capacity_hint: usize) -> Self {
        let dist = DistanceFn::new(config.metric);
        let graph = Hnsw::new(
            config.hnsw.m,
            capacity_hint.max(1024),
            MAX_LAYER,
            config.hnsw.ef_construction,
            HnswDistance(dist),
        );
        HotTier {
            generation,
            dist,
            m: config.hnsw.m,
            graph,
            rows: RwLock::new(Vec::new()),
            by_user: RwLock::new(HashMap::new()),
            dead: DeadSet::default(),
            oldest_activity_ms: AtomicI64::new(i64::MAX),
        }
    }

    /// Appends a row (vector already validated and prepared) without linking it into the
    /// graph yet: it is visible to exact scans at once, and to graph walks after [`Self::link`].
    pub fn append(&self, meta: Arc<MemoryMeta>, vector: Arc<[f32]>) -> u32 {
        let act = activity(&meta);
        let user = meta.user.clone();
        let row = {
            let mut rows = self.rows.write();
            rows.push(HotRow { meta, vector });
            (rows.len() - 1) as u32
        };
        self.by_user.write().entry(user).or_default().push(row);
        self.oldest_activity_ms.fetch_min(act, Ordering::Relaxed);
        row
    }

    /// Links appended rows into the graph; many rows are linked in parallel (rayon).
    pub fn link(&self, rows: &[u32]) {
        let vectors: Vec<(u32, Arc<[f32]>)> = {
            let all = self.rows.read();
            rows.iter().map(|&r| (r, all[r as usize].vector.clone())).collect()
        };
        if vectors.len() == 1 {
            self.graph.insert_slice((&vectors[0].1, vectors[0].0 as usize));
        } else {
            let batch: Vec<(&[f32], usize)> =
                vectors.iter().map(|(r, v)| (&v[..], *r as usize)).collect();
            self.graph.parallel_insert_slice(&batch);
        }
    }

    pub fn row_count(&self) -> usize {
        self.rows.read().len()
    }

    pub fn live_count(&self) -> usize {
        self.row_count() - self.dead.count()
    }

    pub fn oldest_activity_ms(&self) -> Option<i64> {
        let v = self.oldest_activity_ms.load(Ordering::Relaxed);
        (v != i64::MAX).then_some(v)
    }

    pub fn row(&self, row: u32) -> Option<(Arc<MemoryMeta>, Arc<[f32]>)> {
        self.rows.read().get(row as usize).map(|r| (r.meta.clone(), r.vector.clone()))
    }

    /// Live rows matching a filter (for delete-by-filter).
    pub fn matching_rows(&self, filter: &Filter) -> Vec<u32> {
        let rows = self.rows.read();
        let dead = self.dead.snapshot();
        (0..rows.len() as u32)
            .filter(|&r| !dead.contains(r) && filter.matches(&rows[r as usize].meta))
            .collect()
    }

    /// Up to `k` nearest live rows matching `filter` (distance, row, meta), nearest first.
    pub fn search(
        &self,
        q: &[f32],
        k: usize,
        ef: usize,
        filter: &Filter,
        exact_threshold: usize,
    ) -> Vec<(f32, Arc<MemoryMeta>)> {
        let rows = self.rows.read();
        let dead = self.dead.snapshot();
        let n = rows.len();
        if n == 0 {
            return Vec::new();
        }
        let accept = |r: u32| {
            !dead.contains(r) && (filter.is_empty() || filter.matches(&rows[r as usize].meta))
        };
        let exact = |candidates: &mut dyn Iterator<Item = u32>| {
            let mut top = TopK::new(k);
            for r in candidates {
                if accept(r) {
                    top.push(self.dist.distance(q, &rows[r as usize].vector), r);
                }
            }
            top.into_sorted()
        };
        let user_rows = filter.user.as_ref().map(|u| self.by_user.read().get(u).cloned().unwrap_or_default());
        let found: Vec<Cand> = match &user_rows {
            Some(posting) if posting.len() <= exact_threshold.max(k) => {
                exact(&mut posting.iter().copied())
            }
            _ if n <= exact_threshold => exact(&mut (0..n as u32)),
            _ => {
                // Rows appended after we took the read lock are not in `rows`; hnsw_rs may
                // already return them, so bound-check before touching `rows`.
                let graph_hits = if filter.is_empty() && dead.count() == 0 {
                    self.graph.search(q, k, ef)
                } else {
                    let f = |id: &usize| *id < n && accept(*id as u32);
                    self.graph.search_filter(q, k, ef, Some(&f))
                };
                let hits: Vec<Cand> = graph_hits
                    .into_iter()
                    .filter(|h| h.d_id < n && accept(h.d_id as u32))
                    .map(|h| {
                        let r = h.d_id as u32;
                        Cand { dist: self.dist.distance(q, &rows[r as usize].vector), row: r }
                    })
                    .collect();
                if hits.len() < k {
                    // Too few passed the filter in the walk: answer exactly from the matches.
                    match &user_rows {
                        Some(posting) => exact(&mut posting.iter().copied()),
                        None => exact(&mut (0..n as u32)),
                    }
                } else {
                    hits
                }
            }
        };
        found.into_iter().map(|c| (c.dist, rows[c.row as usize].meta.clone())).collect()
    }

    /// The graph's adjacency over rows `0..row_count` (for sealing into a warm segment).
    /// Must be called once writes to this tier have stopped.
    pub fn export_graph(&self) -> GraphExport {
        let n = self.row_count();
        let mut neighbors = vec![Vec::new(); n];
        let points = self.graph.get_point_indexation();
        let mut entry = 0u32;
        let top = points.get_max_level_observed() as usize;
        for p in points {
            let row = p.get_origin_id();
            if row >= n {
                continue;
            }
            let level = p.get_point_id().0 as usize;
            if level == top {
                entry = row as u32;
            }
            let hood = p.get_neighborhood_id();
            neighbors[row] = hood
                .into_iter()
                .take(level + 1)
                .map(|layer| {
                    layer
                        .into_iter()
                        .map(|nb| nb.d_id as u32)
                        .filter(|&x| (x as usize) < n && x as usize != row)
                        .collect()
                })
                .collect();
        }
        for layers in &mut neighbors {
            if layers.is_empty() {
                layers.push(Vec::new());
            }
        }
        GraphExport { neighbors, entry }
    }

    pub fn m(&self) -> usize {
        self.m
    }

    /// Rows in order with their vectors (for sealing).
    pub fn rows_snapshot(&self) -> Vec<(Arc<MemoryMeta>, Arc<[f32]>)> {
        self.rows.read().iter().map(|r| (r.meta.clone(), r.vector.clone())).collect()
    }
}
