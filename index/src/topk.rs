//! Bounded top-k selection by distance, shared by every tier's search.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// A candidate row with its distance (lower is better). Ordered by distance, then row.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cand {
    pub dist: f32,
    pub row: u32,
}

impl PartialEq for Cand {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Cand {}
impl PartialOrd for Cand {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Cand {
    fn cmp(&self, other: &Self) -> Ordering {
        self.dist
            .total_cmp(&other.dist)
            .then(self.row.cmp(&other.row))
    }
}

/// Keeps the `k` smallest-distance candidates seen.
pub(crate) struct TopK {
    k: usize,
    heap: BinaryHeap<Cand>,
}

impl TopK {
    pub fn new(k: usize) -> Self {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    /// The distance a new candidate must beat to enter (∞ until full).
    #[inline]
    pub fn bound(&self) -> f32 {
        if self.heap.len() < self.k {
            f32::INFINITY
        } else {
            self.heap.peek().map_or(f32::INFINITY, |c| c.dist)
        }
    }

    #[inline]
    pub fn push(&mut self, dist: f32, row: u32) {
        if self.k == 0 {
            return;
        }
        if self.heap.len() < self.k {
            self.heap.push(Cand { dist, row });
        } else if dist < self.bound() {
            self.heap.pop();
            self.heap.push(Cand { dist, row });
        }
    }

    /// Candidates sorted nearest first.
    pub fn into_sorted(self) -> Vec<Cand> {
        self.heap.into_sorted_vec()
    }
}

/// The search plan shared by the graph tiers (hot, warm) over rows `0..n`:
/// - a user filter whose posting list is small, or a small tier → exact scan;
/// - otherwise the graph `walk`; if fewer than `k` matches come back (a selective filter),
///   an exact scan of the user's rows, or of all rows, gives the right answer.
pub(crate) fn plan_search(
    k: usize,
    n: usize,
    exact_threshold: usize,
    posting: Option<&[u32]>,
    accept: &dyn Fn(u32) -> bool,
    distance: &dyn Fn(u32) -> f32,
    walk: impl FnOnce() -> Vec<Cand>,
) -> Vec<Cand> {
    let exact = |rows: &mut dyn Iterator<Item = u32>| {
        let mut top = TopK::new(k);
        for r in rows {
            if accept(r) {
                top.push(distance(r), r);
            }
        }
        top.into_sorted()
    };
    let scan_matches = || match posting {
        Some(p) => exact(&mut p.iter().copied()),
        None => exact(&mut (0..n as u32)),
    };
    match posting {
        Some(p) if p.len() <= exact_threshold.max(k) => return scan_matches(),
        _ if n <= exact_threshold => return exact(&mut (0..n as u32)),
        _ => {}
    }
    let mut hits = walk();
    if hits.len() < k {
        return scan_matches();
    }
    hits.truncate(k);
    hits
}
