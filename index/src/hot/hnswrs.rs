//! The hnsw_rs hot engine (the design card's crate; selectable with `HotEngine::HnswRs`).
//!
//! hnsw_rs gives concurrent insert and search behind `&self`, but no delete or update: dead
//! rows are masked by the tier's filter. See ADR 0003 for how it measured against the native
//! engine, and why the native one is the default.

use std::sync::Arc;

use hnsw_rs::anndists::dist::Distance;
use hnsw_rs::hnsw::Hnsw;

use crate::distance::DistanceFn;
use crate::graph::GraphExport;
use crate::topk::Cand;
use crate::types::Metric;

/// hnsw_rs's max_layer must be 16 for its own dump format; keep the library's default shape.
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

pub(crate) struct HnswRsGraph {
    graph: Hnsw<'static, f32, HnswDistance>,
}

impl HnswRsGraph {
    pub fn new(dist: DistanceFn, m: usize, ef_construction: usize, capacity: usize) -> Self {
        HnswRsGraph {
            graph: Hnsw::new(
                m,
                capacity.max(1024),
                MAX_LAYER,
                ef_construction,
                HnswDistance(dist),
            ),
        }
    }

    /// Inserts rows (the row number is the hnsw_rs data id); many in parallel (rayon).
    pub fn link(&self, items: &[(u32, Arc<[f32]>)]) {
        if let [(row, v)] = items {
            self.graph.insert_slice((v, *row as usize));
        } else {
            let batch: Vec<(&[f32], usize)> =
                items.iter().map(|(r, v)| (&v[..], *r as usize)).collect();
            self.graph.parallel_insert_slice(&batch);
        }
    }

    /// Up to `k` accepted rows `< limit` (hnsw_rs ranks by its mapped distance; callers re-score).
    pub fn search(
        &self,
        q: &[f32],
        k: usize,
        ef: usize,
        limit: usize,
        accept: &dyn Fn(u32) -> bool,
        unfiltered: bool,
    ) -> Vec<u32> {
        let hits = if unfiltered {
            self.graph.search(q, k, ef)
        } else {
            let f = |id: &usize| *id < limit && accept(*id as u32);
            self.graph.search_filter(q, k, ef, Some(&f))
        };
        hits.into_iter()
            .map(|h| h.d_id)
            .filter(|&r| r < limit && accept(r as u32))
            .map(|r| r as u32)
            .collect()
    }

    /// The graph's adjacency over rows `0..n`.
    pub fn export(&self, n: usize) -> GraphExport {
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
            neighbors[row] = p
                .get_neighborhood_id()
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
}

/// Re-scores hnsw_rs hits with the exact distance (hnsw_rs ranks by its mapped distance).
pub(crate) fn rescored(
    dist: &DistanceFn,
    q: &[f32],
    rows: &[u32],
    vector: impl Fn(u32) -> Arc<[f32]>,
) -> Vec<Cand> {
    rows.iter()
        .map(|&r| Cand {
            dist: dist.distance(q, &vector(r)),
            row: r,
        })
        .collect()
}
