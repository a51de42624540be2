//! The hot tier: recent memories in a mutable in-memory HNSW graph.
//!
//! Two graph engines, chosen per collection ([`HotEngine`]): Engram's native HNSW (default)
//! and hnsw_rs. Neither deletes: a replaced or deleted row stays in the graph and is masked by
//! the tier's [`DeadSet`] during the walk. Rows are numbered densely from 0 in insertion order.
//! When the tier is sealed, its graph is exported ([`HotTier::export_graph`]) and written as a
//! warm segment, so a graph is built once and never rebuilt on restart.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::config::{HotEngine, IndexConfig};
use crate::deadset::DeadSet;
use crate::distance::DistanceFn;
use crate::filter::Filter;
use crate::graph::GraphExport;
use crate::topk::plan_search;
use crate::types::{activity, MemoryMeta};

mod hnswrs;
mod native;

use hnswrs::HnswRsGraph;
use native::NativeGraph;

enum Engine {
    Native(NativeGraph),
    HnswRs(HnswRsGraph),
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
    engine: Engine,
    rows: RwLock<Vec<HotRow>>,
    by_user: RwLock<HashMap<String, Vec<u32>>>,
    pub dead: DeadSet,
    oldest_activity_ms: AtomicI64,
}

impl HotTier {
    pub fn new(config: &IndexConfig, generation: u64, capacity_hint: usize) -> Self {
        let dist = DistanceFn::new(config.metric);
        let (m, efc) = (config.hnsw.m, config.hnsw.ef_construction);
        let engine = match config.hot_engine {
            HotEngine::Native => Engine::Native(NativeGraph::new(dist, m, efc, capacity_hint)),
            HotEngine::HnswRs => Engine::HnswRs(HnswRsGraph::new(dist, m, efc, capacity_hint)),
        };
        HotTier {
            generation,
            dist,
            m: config.hnsw.m,
            engine,
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
            rows.push(HotRow {
                meta,
                vector: vector.clone(),
            });
            (rows.len() - 1) as u32
        };
        if let Engine::Native(g) = &self.engine {
            g.append(row, vector);
        }
        self.by_user.write().entry(user).or_default().push(row);
        self.oldest_activity_ms.fetch_min(act, Ordering::Relaxed);
        row
    }

    /// Links appended rows into the graph; many rows are linked in parallel (rayon).
    pub fn link(&self, rows: &[u32]) {
        match &self.engine {
            Engine::Native(g) => g.link(rows),
            Engine::HnswRs(g) => {
                let items: Vec<(u32, Arc<[f32]>)> = {
                    let all = self.rows.read();
                    rows.iter()
                        .map(|&r| (r, all[r as usize].vector.clone()))
                        .collect()
                };
                g.link(&items);
            }
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
        self.rows
            .read()
            .get(row as usize)
            .map(|r| (r.meta.clone(), r.vector.clone()))
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
        let user_rows = filter
            .user
            .as_ref()
            .map(|u| self.by_user.read().get(u).cloned().unwrap_or_default());
        let distance = |r: u32| self.dist.distance(q, &rows[r as usize].vector);
        // Rows appended after we took the read lock are not in `rows`: the engines are told
        // to ignore rows >= n.
        let walk = || match &self.engine {
            Engine::Native(g) => g.search(q, ef, n, &accept),
            Engine::HnswRs(g) => {
                let unfiltered = filter.is_empty() && dead.count() == 0;
                let found = g.search(q, k, ef, n, &accept, unfiltered);
                let mut c =
                    hnswrs::rescored(&self.dist, q, &found, |r| rows[r as usize].vector.clone());
                c.sort_unstable();
                c
            }
        };
        let found = plan_search(
            k,
            n,
            exact_threshold,
            user_rows.as_deref(),
            &accept,
            &distance,
            walk,
        );
        found
            .into_iter()
            .map(|c| (c.dist, rows[c.row as usize].meta.clone()))
            .collect()
    }

    /// The graph's adjacency over rows `0..row_count` (for sealing into a warm segment).
    /// Must be called once writes to this tier have stopped.
    pub fn export_graph(&self) -> GraphExport {
        let n = self.row_count();
        match &self.engine {
            Engine::Native(g) => g.export(n),
            Engine::HnswRs(g) => g.export(n),
        }
    }

    pub fn m(&self) -> usize {
        self.m
    }

    /// Rows in order with their vectors (for sealing).
    pub fn rows_snapshot(&self) -> Vec<(Arc<MemoryMeta>, Arc<[f32]>)> {
        self.rows
            .read()
            .iter()
            .map(|r| (r.meta.clone(), r.vector.clone()))
            .collect()
    }
}
