//! A flat, immutable HNSW graph: the search structure of sealed (warm) segments.
//!
//! Built once from the hot tier's graph (hnsw_rs builds it; [`GraphExport`] is its adjacency),
//! then laid out as plain arrays that can live in a memory-mapped file:
//! - `levels[i]`: the top layer of node `i`;
//! - layer 0 and the vectors, interleaved per node (as hnswlib does): a fixed stride of
//!   `m0 + 1 + dim` words, `[count, n_1 .. n_m0, v_1 .. v_dim]` (u32 links, f32 vector), so
//!   the links of a node are next to the vector whose distance was computed when it was found;
//! - `upper_index[i]`: where node `i`'s upper layers start in `upper` (`u32::MAX` if none);
//! - `upper`: per node with level `L ≥ 1`, `L` blocks of `m + 1` u32 (`[count, n_1 .. n_m]`).
//!
//! The search is the classic HNSW walk (greedy descent, then a best-first search of width `ef`
//! on layer 0) over these arrays: no locks, no reference counting, a thread-local visited
//! list with epochs, and software prefetch of the next neighbour's vector.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::distance::DistanceFn;
use crate::topk::Cand;
use crate::types::Metric;

/// The adjacency of an HNSW graph over rows `0..n`, independent of any library.
#[derive(Debug, Clone, Default)]
pub(crate) struct GraphExport {
    /// `neighbors[i][l]`: node `i`'s links on layer `l` (`0..=level(i)`).
    pub neighbors: Vec<Vec<Vec<u32>>>,
    pub entry: u32,
}

/// Flat arrays of a graph, owned (for writing) — see the module docs for the layout.
#[derive(Debug, Clone, Default)]
pub(crate) struct FlatArrays {
    pub m0: usize,
    pub m: usize,
    pub entry: u32,
    pub max_level: u8,
    pub levels: Vec<u8>,
    pub l0: Vec<u32>,
    pub upper_index: Vec<u32>,
    pub upper: Vec<u32>,
}

impl FlatArrays {
    pub fn from_export(g: &GraphExport, m0: usize, m: usize) -> Self {
        let n = g.neighbors.len();
        let mut out = FlatArrays {
            m0,
            m,
            entry: g.entry,
            max_level: 0,
            levels: Vec::with_capacity(n),
            l0: vec![0; n * (m0 + 1)],
            upper_index: vec![u32::MAX; n],
            upper: Vec::new(),
        };
        for (i, layers) in g.neighbors.iter().enumerate() {
            let level = layers.len().saturating_sub(1).min(u8::MAX as usize) as u8;
            out.levels.push(level);
            out.max_level = out.max_level.max(level);
            if let Some(l0) = layers.first() {
                let slot = &mut out.l0[i * (m0 + 1)..(i + 1) * (m0 + 1)];
                let cnt = l0.len().min(m0);
                slot[0] = cnt as u32;
                slot[1..=cnt].copy_from_slice(&l0[..cnt]);
            }
            if level > 0 {
                out.upper_index[i] = out.upper.len() as u32;
                for (l, links) in layers[1..=level as usize].iter().enumerate() {
                    // A link on layer l must lead to a node that has layer l.
                    let valid: Vec<u32> = links
                        .iter()
                        .copied()
                        .filter(|&x| {
                            g.neighbors
                                .get(x as usize)
                                .is_some_and(|ls| ls.len() > l + 1)
                        })
                        .take(m)
                        .collect();
                    out.upper.push(valid.len() as u32);
                    out.upper.extend_from_slice(&valid);
                    out.upper.extend(std::iter::repeat_n(0, m - valid.len()));
                }
            }
        }
        if n == 0 {
            out.entry = 0;
        }
        out
    }
}

/// A borrowed view of a flat graph and its vectors (from memory or a mapped file).
#[derive(Clone, Copy)]
pub(crate) struct FlatGraph<'a> {
    pub dim: usize,
    pub m0: usize,
    pub m: usize,
    pub entry: u32,
    pub max_level: u8,
    pub levels: &'a [u8],
    /// Layer 0 + vectors, interleaved (see the module docs), as words...
    pub nodes_u32: &'a [u32],
    /// ... and the same memory viewed as f32 (for the vectors).
    pub nodes_f32: &'a [f32],
    pub upper_index: &'a [u32],
    pub upper: &'a [u32],
}

impl<'a> FlatGraph<'a> {
    pub fn len(&self) -> usize {
        self.levels.len()
    }

    /// Checks that every array has the size and every link the range the layout promises, so
    /// that a search can never index out of bounds on a (corrupt) file. Returns the problem.
    pub fn check(&self) -> Result<(), String> {
        let n = self.len();
        if self.nodes_u32.len() != n * self.stride() || self.nodes_f32.len() != self.nodes_u32.len()
        {
            return Err(format!(
                "{} words for {n} nodes of stride {}",
                self.nodes_u32.len(),
                self.stride()
            ));
        }
        if self.upper_index.len() != n {
            return Err("upper index size does not match the node count".into());
        }
        if n > 0 && self.entry as usize >= n {
            return Err(format!("entry point {} out of range", self.entry));
        }
        if n > 0 && self.levels[self.entry as usize] != self.max_level {
            return Err("entry point is not on the top layer".into());
        }
        let bad_link = |links: &[u32]| links.iter().any(|&x| x as usize >= n);
        for i in 0..n {
            let slot = &self.nodes_u32[i * self.stride()..i * self.stride() + self.m0 + 1];
            if slot[0] as usize > self.m0 || bad_link(&slot[1..=slot[0] as usize]) {
                return Err(format!("node {i}: bad layer-0 links"));
            }
            let level = self.levels[i] as usize;
            if level > self.max_level as usize {
                return Err(format!("node {i}: level above max level"));
            }
            if level > 0 {
                let start = self.upper_index[i] as usize;
                let end = start + level * (self.m + 1);
                if end > self.upper.len() {
                    return Err(format!("node {i}: upper links out of range"));
                }
                for l in 0..level {
                    let b = &self.upper[start + l * (self.m + 1)..start + (l + 1) * (self.m + 1)];
                    let links = b.get(1..=b[0] as usize).unwrap_or(&[]);
                    if b[0] as usize > self.m
                        || bad_link(links)
                        || links
                            .iter()
                            .any(|&x| (self.levels[x as usize] as usize) < l + 1)
                    {
                        return Err(format!("node {i}: bad layer-{} links", l + 1));
                    }
                }
            }
        }
        Ok(())
    }

    /// Words per node in the interleaved layer-0 array.
    #[inline(always)]
    pub fn stride(&self) -> usize {
        self.m0 + 1 + self.dim
    }

    #[inline(always)]
    pub fn vector(&self, i: u32) -> &'a [f32] {
        let s = i as usize * self.stride() + self.m0 + 1;
        &self.nodes_f32[s..s + self.dim]
    }

    #[inline(always)]
    fn links(&self, i: u32, level: usize) -> &'a [u32] {
        if level == 0 {
            let s = i as usize * self.stride();
            let cnt = self.nodes_u32[s] as usize;
            &self.nodes_u32[s + 1..s + 1 + cnt]
        } else {
            let s = self.upper_index[i as usize] as usize + (level - 1) * (self.m + 1);
            let cnt = self.upper[s] as usize;
            &self.upper[s + 1..s + 1 + cnt]
        }
    }

    /// Hints the CPU to load node `i`'s vector (every cache line of it).
    #[inline(always)]
    fn prefetch(&self, i: u32) {
        let s = i as usize * self.stride() + self.m0 + 1;
        prefetch_range(self.nodes_f32.get(s..s + self.dim));
    }

    /// Hints the CPU to load node `i`'s layer-0 link list.
    #[inline(always)]
    fn prefetch_links(&self, i: u32) {
        let s = i as usize * self.stride();
        prefetch_range(self.nodes_u32.get(s..s + self.m0 + 1));
    }

    /// Best-first search: up to `ef` accepted nodes nearest to `q`, nearest first.
    /// `accept` decides which nodes may be returned (tombstones, filters); rejected nodes are
    /// still walked through, so the graph stays connected under any filter.
    ///
    /// On AVX2 + FMA machines the whole walk is compiled with those features and the distance
    /// kernel inlined into it; elsewhere it calls the portable kernel.
    pub fn search(
        &self,
        dist: &DistanceFn,
        q: &[f32],
        ef: usize,
        accept: impl Fn(u32) -> bool,
    ) -> Vec<Cand> {
        if self.len() == 0 || ef == 0 {
            return Vec::new();
        }
        let mut visited = VISITED.with(|c| std::mem::take(&mut *c.borrow_mut()));
        visited.reset(self.len());
        #[cfg(target_arch = "x86_64")]
        let found = if crate::distance::has_avx2() {
            // SAFETY: AVX2 and FMA were detected at run time.
            unsafe { self.search_avx2(dist.metric(), q, ef, &accept, &mut visited) }
        } else {
            self.walk(&Portable(dist), q, ef, &accept, &mut visited)
        };
        #[cfg(not(target_arch = "x86_64"))]
        let found = self.walk(&Portable(dist), q, ef, &accept, &mut visited);
        VISITED.with(|c| *c.borrow_mut() = visited);
        found
    }

    /// The walk compiled with AVX2 + FMA, the metric's kernel inlined into it.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn search_avx2(
        &self,
        metric: Metric,
        q: &[f32],
        ef: usize,
        accept: &impl Fn(u32) -> bool,
        visited: &mut Visited,
    ) -> Vec<Cand> {
        match metric {
            Metric::Cosine => self.walk(&avx2k::Cosine, q, ef, accept, visited),
            Metric::Dot => self.walk(&avx2k::Dot, q, ef, accept, visited),
            Metric::L2 => self.walk(&avx2k::L2, q, ef, accept, visited),
        }
    }

    #[inline(always)]
    fn walk<K: Kernel>(
        &self,
        kernel: &K,
        q: &[f32],
        ef: usize,
        accept: &impl Fn(u32) -> bool,
        visited: &mut Visited,
    ) -> Vec<Cand> {
        // SAFETY: kernels only need the CPU features their constructor checked.
        let dist = |a: &[f32], b: &[f32]| unsafe { kernel.d(a, b) };
        let mut ep = self.entry;
        let mut d_ep = dist(q, self.vector(ep));
        for level in (1..=self.max_level as usize).rev() {
            loop {
                let mut changed = false;
                for &nb in self.links(ep, level) {
                    let d = dist(q, self.vector(nb));
                    if d < d_ep {
                        d_ep = d;
                        ep = nb;
                        changed = true;
                    }
                }
                if !changed {
                    break;
                }
            }
        }
        let mut candidates: BinaryHeap<Reverse<Cand>> = BinaryHeap::with_capacity(ef * 4);
        let mut results: BinaryHeap<Cand> = BinaryHeap::with_capacity(ef + 1);
        visited.mark(ep);
        candidates.push(Reverse(Cand {
            dist: d_ep,
            row: ep,
        }));
        let mut bound = f32::INFINITY;
        if accept(ep) {
            results.push(Cand {
                dist: d_ep,
                row: ep,
            });
            bound = d_ep;
        }
        while let Some(Reverse(cur)) = candidates.pop() {
            if cur.dist > bound && results.len() >= ef {
                break;
            }
            if let Some(Reverse(next)) = candidates.peek() {
                self.prefetch_links(next.row);
            }
            let links = self.links(cur.row, 0);
            if let Some(&first) = links.first() {
                self.prefetch(first);
            }
            for (j, &nb) in links.iter().enumerate() {
                if let Some(&next) = links.get(j + 1) {
                    self.prefetch(next);
                }
                if !visited.mark(nb) {
                    continue;
                }
                let d = dist(q, self.vector(nb));
                if results.len() < ef || d < bound {
                    candidates.push(Reverse(Cand { dist: d, row: nb }));
                    if accept(nb) {
                        results.push(Cand { dist: d, row: nb });
                        if results.len() > ef {
                            results.pop();
                        }
                        if let Some(top) = results.peek() {
                            bound = top.dist;
                        }
                    }
                }
            }
        }
        results.into_sorted_vec()
    }
}

#[inline(always)]
fn prefetch_range<T>(slice: Option<&[T]>) {
    #[cfg(target_arch = "x86_64")]
    if let Some(s) = slice {
        let bytes = std::mem::size_of_val(s);
        let p = s.as_ptr() as *const i8;
        let mut off = 0;
        while off < bytes {
            // SAFETY: prefetch is only a hint, and the address is inside the slice.
            unsafe { std::arch::x86_64::_mm_prefetch(p.add(off), std::arch::x86_64::_MM_HINT_T0) };
            off += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = slice;
}

/// A distance kernel the walk is generic over, so it can be inlined.
trait Kernel {
    /// # Safety
    /// The CPU must have the features the kernel was selected for.
    unsafe fn d(&self, a: &[f32], b: &[f32]) -> f32;
}

/// Any metric through its resolved function pointers (no special CPU features).
struct Portable<'a>(&'a DistanceFn);

impl Kernel for Portable<'_> {
    #[inline(always)]
    unsafe fn d(&self, a: &[f32], b: &[f32]) -> f32 {
        self.0.distance(a, b)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2k {
    use crate::distance::avx2::{dot_impl, l2sq_impl};

    pub struct Cosine;
    pub struct Dot;
    pub struct L2;

    impl super::Kernel for Cosine {
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn d(&self, a: &[f32], b: &[f32]) -> f32 {
            1.0 - dot_impl(a, b)
        }
    }
    impl super::Kernel for Dot {
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn d(&self, a: &[f32], b: &[f32]) -> f32 {
            -dot_impl(a, b)
        }
    }
    impl super::Kernel for L2 {
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn d(&self, a: &[f32], b: &[f32]) -> f32 {
            l2sq_impl(a, b)
        }
    }
}

/// Per-thread visited marks, reset in O(1) by bumping an epoch.
#[derive(Default)]
pub(crate) struct Visited {
    marks: Vec<u16>,
    epoch: u16,
}

impl Visited {
    pub(crate) fn reset(&mut self, n: usize) {
        if self.marks.len() < n {
            self.marks.resize(n, 0);
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.marks.iter_mut().for_each(|m| *m = 0);
            self.epoch = 1;
        }
    }

    /// Marks a node; returns true if it was not yet visited.
    #[inline(always)]
    pub(crate) fn mark(&mut self, i: u32) -> bool {
        let m = &mut self.marks[i as usize];
        if *m == self.epoch {
            false
        } else {
            *m = self.epoch;
            true
        }
    }
}

thread_local! {
    static VISITED: RefCell<Visited> = const { RefCell::new(Visited { marks: Vec::new(), epoch: 0 }) };
}
