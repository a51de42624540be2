//! Engram's own mutable HNSW graph for the hot tier (the default hot engine; see ADR 0003).
//!
//! Same algorithm as hnswlib (Malkov & Yashunin, with the neighbour-selection heuristic):
//! nodes get a random top layer; an insert descends greedily to its layer, then on each layer
//! below runs a best-first search of width `ef_construction`, links to the heuristic selection
//! of the results, and adds reverse links (pruning a full list with the same heuristic).
//!
//! Layout and concurrency:
//! - `nodes[row]`: the row's vector (shared with the hot tier's row) and one neighbour list per
//!   layer, each behind its own `RwLock`; a thread never holds two list locks at once.
//! - Appending a node takes the `nodes` write lock briefly; linking (many at once, in
//!   parallel) and searching hold its read lock.
//! - The entry point changes under its own lock when a node with a higher layer is linked.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::distance::DistanceFn;
use crate::graph::{GraphExport, Visited};
use crate::topk::Cand;

const MAX_LEVEL: usize = 16;

struct Node {
    vector: Arc<[f32]>,
    links: Box<[RwLock<Vec<u32>>]>,
}

pub(crate) struct NativeGraph {
    dist: DistanceFn,
    m: usize,
    m0: usize,
    ef_construction: usize,
    level_mult: f64,
    nodes: RwLock<Vec<Node>>,
    /// (entry node, its top layer); `None` until the first node is linked.
    entry: RwLock<Option<(u32, usize)>>,
    rng: AtomicU64,
}

impl NativeGraph {
    pub fn new(dist: DistanceFn, m: usize, ef_construction: usize, capacity: usize) -> Self {
        NativeGraph {
            dist,
            m,
            m0: 2 * m,
            ef_construction,
            level_mult: 1.0 / (m as f64).ln(),
            nodes: RwLock::new(Vec::with_capacity(capacity.min(1 << 20))),
            entry: RwLock::new(None),
            rng: AtomicU64::new(0x5EED_0FE4_6AA1),
        }
    }

    fn random_level(&self) -> usize {
        // SplitMix64 step on a shared counter: lock-free and deterministic per insert order.
        let mut z = self
            .rng
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let u = ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        ((-u.ln() * self.level_mult) as usize).min(MAX_LEVEL - 1)
    }

    /// Registers the node for `row` (rows arrive densely, in order); it is linked by `link`.
    pub fn append(&self, row: u32, vector: Arc<[f32]>) {
        let level = self.random_level();
        let links = (0..=level)
            .map(|l| RwLock::new(Vec::with_capacity(if l == 0 { self.m0 } else { self.m })))
            .collect();
        let mut nodes = self.nodes.write();
        debug_assert_eq!(
            nodes.len(),
            row as usize,
            "hot rows must be appended in order"
        );
        nodes.push(Node { vector, links });
    }

    /// Links appended rows into the graph (in parallel when there are many).
    pub fn link(&self, rows: &[u32]) {
        let nodes = self.nodes.read();
        if rows.len() > 1 {
            use rayon::prelude::*;
            rows.par_iter().for_each(|&r| self.link_one(&nodes, r));
        } else {
            rows.iter().for_each(|&r| self.link_one(&nodes, r));
        }
    }

    #[inline]
    fn d(&self, nodes: &[Node], q: &[f32], i: u32) -> f32 {
        self.dist.distance(q, &nodes[i as usize].vector)
    }

    fn link_one(&self, nodes: &[Node], row: u32) {
        let node = &nodes[row as usize];
        let level = node.links.len() - 1;
        let q = &node.vector;
        let (mut ep, top) = loop {
            if let Some(e) = *self.entry.read() {
                break e;
            }
            let mut entry = self.entry.write();
            if entry.is_none() {
                *entry = Some((row, level));
                return;
            }
        };
        let mut d_ep = self.d(nodes, q, ep);
        for l in (level + 1..=top).rev() {
            (ep, d_ep) = self.greedy(nodes, q, ep, d_ep, l);
        }
        let mut eps = vec![Cand {
            dist: d_ep,
            row: ep,
        }];
        for l in (0..=level.min(top)).rev() {
            let found = self.search_layer(nodes, q, &eps, self.ef_construction, l, None);
            let cap = if l == 0 { self.m0 } else { self.m };
            let selected = self.select(nodes, &found, self.m);
            {
                // Other inserts of the same batch may already have linked back to this node:
                // keep those links too, pruning with the heuristic if the list overflows.
                let mut links = node.links[l].write();
                let earlier: Vec<u32> = links
                    .iter()
                    .copied()
                    .filter(|r| selected.iter().all(|c| c.row != *r))
                    .collect();
                let mut all: Vec<Cand> =
                    selected.iter().copied().filter(|c| c.row != row).collect();
                all.extend(earlier.into_iter().map(|r| Cand {
                    dist: self.d(nodes, q, r),
                    row: r,
                }));
                if all.len() > cap {
                    all.sort_unstable();
                    all = self.select(nodes, &all, cap);
                }
                *links = all.into_iter().map(|c| c.row).collect();
            }
            for c in &selected {
                if c.row != row {
                    self.add_reverse(nodes, c.row, row, c.dist, l, cap);
                }
            }
            eps = found;
        }
        if level > top {
            let mut entry = self.entry.write();
            if entry.is_none_or(|(_, t)| level > t) {
                *entry = Some((row, level));
            }
        }
    }

    fn greedy(
        &self,
        nodes: &[Node],
        q: &[f32],
        mut ep: u32,
        mut d_ep: f32,
        layer: usize,
    ) -> (u32, f32) {
        loop {
            let mut changed = false;
            let links = nodes[ep as usize].links[layer].read();
            for &nb in links.iter() {
                let d = self.d(nodes, q, nb);
                if d < d_ep {
                    d_ep = d;
                    ep = nb;
                    changed = true;
                }
            }
            if !changed {
                return (ep, d_ep);
            }
        }
    }

    /// hnswlib's heuristic: keep a candidate only if it is closer to the query than to every
    /// neighbour kept so far (spreads links across directions).
    fn select(&self, nodes: &[Node], sorted: &[Cand], m: usize) -> Vec<Cand> {
        if sorted.len() <= m {
            return sorted.to_vec();
        }
        let mut out: Vec<Cand> = Vec::with_capacity(m);
        for c in sorted {
            let v = &nodes[c.row as usize].vector;
            if out
                .iter()
                .all(|r| self.dist.distance(v, &nodes[r.row as usize].vector) >= c.dist)
            {
                out.push(*c);
                if out.len() >= m {
                    break;
                }
            }
        }
        out
    }

    fn add_reverse(&self, nodes: &[Node], at: u32, new: u32, d: f32, layer: usize, cap: usize) {
        let Some(lock) = nodes[at as usize].links.get(layer) else {
            return;
        };
        let mut links = lock.write();
        if links.contains(&new) {
            return;
        }
        if links.len() < cap {
            links.push(new);
            return;
        }
        let base = &nodes[at as usize].vector;
        let mut cands: Vec<Cand> = links
            .iter()
            .map(|&r| Cand {
                dist: self.dist.distance(base, &nodes[r as usize].vector),
                row: r,
            })
            .chain(std::iter::once(Cand { dist: d, row: new }))
            .collect();
        cands.sort_unstable();
        *links = self
            .select(nodes, &cands, cap)
            .into_iter()
            .map(|c| c.row)
            .collect();
    }

    /// Best-first search of one layer from `eps`; returns up to `ef` nodes (accepted ones only
    /// when `accept` is given), nearest first.
    fn search_layer(
        &self,
        nodes: &[Node],
        q: &[f32],
        eps: &[Cand],
        ef: usize,
        layer: usize,
        accept: Option<&dyn Fn(u32) -> bool>,
    ) -> Vec<Cand> {
        VISITED.with(|cell| {
            let mut visited = cell.borrow_mut();
            visited.reset(nodes.len());
            let mut candidates: BinaryHeap<Reverse<Cand>> = BinaryHeap::with_capacity(ef * 2);
            let mut results: BinaryHeap<Cand> = BinaryHeap::with_capacity(ef + 1);
            let ok = |r: u32| accept.is_none_or(|f| f(r));
            let mut bound = f32::INFINITY;
            for &e in eps {
                if visited.mark(e.row) {
                    candidates.push(Reverse(e));
                    if ok(e.row) {
                        results.push(e);
                    }
                }
            }
            while results.len() > ef {
                results.pop();
            }
            if results.len() >= ef {
                bound = results.peek().map_or(f32::INFINITY, |c| c.dist);
            }
            while let Some(Reverse(cur)) = candidates.pop() {
                if cur.dist > bound && results.len() >= ef {
                    break;
                }
                let Some(lock) = nodes[cur.row as usize].links.get(layer) else {
                    continue;
                };
                let links = lock.read();
                for &nb in links.iter() {
                    if !visited.mark(nb) {
                        continue;
                    }
                    let d = self.d(nodes, q, nb);
                    if results.len() < ef || d < bound {
                        candidates.push(Reverse(Cand { dist: d, row: nb }));
                        if ok(nb) {
                            results.push(Cand { dist: d, row: nb });
                            if results.len() > ef {
                                results.pop();
                            }
                            if results.len() >= ef {
                                bound = results.peek().map_or(f32::INFINITY, |c| c.dist);
                            }
                        }
                    }
                }
            }
            results.into_sorted_vec()
        })
    }

    /// Up to `ef` accepted rows nearest to `q` (rows `>= limit` are ignored), nearest first.
    pub fn search(
        &self,
        q: &[f32],
        ef: usize,
        limit: usize,
        accept: &dyn Fn(u32) -> bool,
    ) -> Vec<Cand> {
        let Some((mut ep, top)) = *self.entry.read() else {
            return Vec::new();
        };
        let nodes = self.nodes.read();
        let mut d_ep = self.d(&nodes, q, ep);
        for l in (1..=top).rev() {
            (ep, d_ep) = self.greedy(&nodes, q, ep, d_ep, l);
        }
        let ok = |r: u32| (r as usize) < limit && accept(r);
        self.search_layer(
            &nodes,
            q,
            &[Cand {
                dist: d_ep,
                row: ep,
            }],
            ef,
            0,
            Some(&ok),
        )
    }

    /// The adjacency of rows `0..n` (for sealing).
    pub fn export(&self, n: usize) -> GraphExport {
        let nodes = self.nodes.read();
        let n = n.min(nodes.len());
        let neighbors = nodes[..n]
            .iter()
            .map(|node| {
                node.links
                    .iter()
                    .map(|l| {
                        l.read()
                            .iter()
                            .copied()
                            .filter(|&r| (r as usize) < n)
                            .collect()
                    })
                    .collect()
            })
            .collect();
        let entry = match *self.entry.read() {
            Some((e, _)) if (e as usize) < n => e,
            _ => 0,
        };
        GraphExport { neighbors, entry }
    }
}

thread_local! {
    static VISITED: RefCell<Visited> = RefCell::new(Visited::default());
}
