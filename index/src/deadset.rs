//! Tombstones: a growable bitset of deleted (or replaced) rows within one tier instance.

use parking_lot::RwLock;

#[derive(Debug, Default)]
pub(crate) struct DeadSet {
    inner: RwLock<Bits>,
}

#[derive(Debug, Default, Clone)]
struct Bits {
    words: Vec<u64>,
    count: usize,
}

impl DeadSet {
    pub fn from_rows(rows: impl IntoIterator<Item = u32>) -> Self {
        let set = DeadSet::default();
        for r in rows {
            set.insert(r);
        }
        set
    }

    /// Marks a row dead; returns true if it was alive.
    pub fn insert(&self, row: u32) -> bool {
        let mut b = self.inner.write();
        let (w, bit) = (row as usize / 64, 1u64 << (row % 64));
        if b.words.len() <= w {
            b.words.resize(w + 1, 0);
        }
        if b.words[w] & bit != 0 {
            return false;
        }
        b.words[w] |= bit;
        b.count += 1;
        true
    }

    #[inline]
    pub fn contains(&self, row: u32) -> bool {
        self.inner.read().contains(row)
    }

    pub fn count(&self) -> usize {
        self.inner.read().count
    }

    /// A consistent copy for a long scan, so the scan takes no lock per row.
    pub fn snapshot(&self) -> DeadSnapshot {
        DeadSnapshot(self.inner.read().clone())
    }

    pub fn rows(&self) -> Vec<u32> {
        self.snapshot().rows()
    }
}

/// An immutable copy of a [`DeadSet`].
#[derive(Debug, Clone)]
pub(crate) struct DeadSnapshot(Bits);

impl DeadSnapshot {
    #[inline]
    pub fn contains(&self, row: u32) -> bool {
        self.0.contains(row)
    }

    pub fn count(&self) -> usize {
        self.0.count
    }

    pub fn rows(&self) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.0.count);
        for (w, &word) in self.0.words.iter().enumerate() {
            let mut x = word;
            while x != 0 {
                let t = x.trailing_zeros();
                out.push((w * 64) as u32 + t);
                x &= x - 1;
            }
        }
        out
    }
}

impl Bits {
    #[inline]
    fn contains(&self, row: u32) -> bool {
        self.words
            .get(row as usize / 64)
            .is_some_and(|w| w & (1u64 << (row % 64)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_contains_rows() {
        let d = DeadSet::default();
        assert!(d.insert(3));
        assert!(!d.insert(3));
        assert!(d.insert(200));
        assert!(d.contains(3) && d.contains(200) && !d.contains(4) && !d.contains(10_000));
        assert_eq!(d.count(), 2);
        assert_eq!(d.rows(), vec![3, 200]);
        assert_eq!(DeadSet::from_rows([7, 1]).rows(), vec![1, 7]);
    }
}
