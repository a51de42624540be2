//! Distance kernels and the metric ↔ distance ↔ score conventions.
//!
//! Internally every tier ranks by a *distance* (lower is better):
//! - cosine: `1 − dot(a, b)` on vectors normalised at write / query time,
//! - dot: `−dot(a, b)`,
//! - L2: squared euclidean distance.
//!
//! Users see a *score* (higher is better): cosine similarity, dot product, or −euclidean.
//! Kernels use AVX2 + FMA when the CPU has them (checked once, at first use) and a portable
//! loop that LLVM vectorises for SSE otherwise.

use std::sync::OnceLock;

use crate::types::Metric;

type Kernel = fn(&[f32], &[f32]) -> f32;

struct Kernels {
    dot: Kernel,
    l2sq: Kernel,
    avx2: bool,
}

fn kernels() -> &'static Kernels {
    static KERNELS: OnceLock<Kernels> = OnceLock::new();
    KERNELS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                return Kernels {
                    dot: avx2::dot,
                    l2sq: avx2::l2sq,
                    avx2: true,
                };
            }
        }
        Kernels {
            dot: portable::dot,
            l2sq: portable::l2sq,
            avx2: false,
        }
    })
}

/// Inner product. Slices must have equal length (callers validate dimensions first).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    (kernels().dot)(a, b)
}

/// Squared euclidean distance.
#[inline]
pub fn l2sq(a: &[f32], b: &[f32]) -> f32 {
    (kernels().l2sq)(a, b)
}

/// A metric's distance function, resolved once so hot loops make one indirect call.
#[derive(Clone, Copy)]
pub struct DistanceFn {
    metric: Metric,
    dot: Kernel,
    l2sq: Kernel,
}

impl DistanceFn {
    pub fn new(metric: Metric) -> Self {
        let k = kernels();
        DistanceFn {
            metric,
            dot: k.dot,
            l2sq: k.l2sq,
        }
    }

    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// Distance between a prepared query and a stored vector (lower is better).
    #[inline(always)]
    pub fn distance(&self, a: &[f32], b: &[f32]) -> f32 {
        match self.metric {
            Metric::Cosine => 1.0 - (self.dot)(a, b),
            Metric::Dot => -(self.dot)(a, b),
            Metric::L2 => (self.l2sq)(a, b),
        }
    }

    /// The user-facing score for a distance.
    #[inline]
    pub fn score(&self, distance: f32) -> f32 {
        distance_to_score(self.metric, distance)
    }
}

impl std::fmt::Debug for DistanceFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DistanceFn")
            .field("metric", &self.metric)
            .finish()
    }
}

/// Score (higher is better) for an internal distance.
pub fn distance_to_score(metric: Metric, distance: f32) -> f32 {
    match metric {
        Metric::Cosine => 1.0 - distance,
        Metric::Dot => -distance,
        Metric::L2 => -distance.max(0.0).sqrt(),
    }
}

/// Normalises in place to unit length. Returns false for the zero vector (left unchanged).
pub fn normalize(v: &mut [f32]) -> bool {
    let norm = portable::dot(v, v).sqrt();
    if norm == 0.0 || !norm.is_finite() {
        return false;
    }
    let inv = 1.0 / norm;
    v.iter_mut().for_each(|x| *x *= inv);
    true
}

/// Prepares a stored or query vector for a metric: cosine vectors are normalised once.
pub fn prepare(metric: Metric, mut v: Vec<f32>) -> Vec<f32> {
    if metric == Metric::Cosine {
        normalize(&mut v);
    }
    v
}

mod portable {
    // Eight independent accumulators let LLVM vectorise without reassociation permission.
    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [0.0f32; 8];
        let chunks = n / 8;
        for c in 0..chunks {
            for l in 0..8 {
                acc[l] += a[c * 8 + l] * b[c * 8 + l];
            }
        }
        let mut sum: f32 = acc.iter().sum();
        for i in chunks * 8..n {
            sum += a[i] * b[i];
        }
        sum
    }

    pub fn l2sq(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [0.0f32; 8];
        let chunks = n / 8;
        for c in 0..chunks {
            for l in 0..8 {
                let d = a[c * 8 + l] - b[c * 8 + l];
                acc[l] += d * d;
            }
        }
        let mut sum: f32 = acc.iter().sum();
        for i in chunks * 8..n {
            let d = a[i] - b[i];
            sum += d * d;
        }
        sum
    }
}

/// Whether the AVX2 + FMA kernels are in use (callers may then use [`avx2`] directly inside
/// their own `#[target_feature(enable = "avx2,fma")]` functions, so the kernels inline).
pub(crate) fn has_avx2() -> bool {
    kernels().avx2
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: only selected by `kernels()` after detecting avx2 and fma.
        unsafe { dot_impl(a, b) }
    }

    pub fn l2sq(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: as above.
        unsafe { l2sq_impl(a, b) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn dot_impl(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut i = 0;
        while i + 16 <= n {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
            acc1 = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i + 8)),
                _mm256_loadu_ps(pb.add(i + 8)),
                acc1,
            );
            i += 16;
        }
        if i + 8 <= n {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
            i += 8;
        }
        let mut sum = hsum(_mm256_add_ps(acc0, acc1));
        while i < n {
            sum += *pa.add(i) * *pb.add(i);
            i += 1;
        }
        sum
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn l2sq_impl(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut i = 0;
        while i + 16 <= n {
            let d0 = _mm256_sub_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)));
            let d1 = _mm256_sub_ps(
                _mm256_loadu_ps(pa.add(i + 8)),
                _mm256_loadu_ps(pb.add(i + 8)),
            );
            acc0 = _mm256_fmadd_ps(d0, d0, acc0);
            acc1 = _mm256_fmadd_ps(d1, d1, acc1);
            i += 16;
        }
        if i + 8 <= n {
            let d0 = _mm256_sub_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)));
            acc0 = _mm256_fmadd_ps(d0, d0, acc0);
            i += 8;
        }
        let mut sum = hsum(_mm256_add_ps(acc0, acc1));
        while i < n {
            let d = *pa.add(i) - *pb.add(i);
            sum += d * d;
            i += 1;
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_dot(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn kernels_agree_with_naive_for_every_length() {
        for n in 0..70 {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let d = naive_dot(&a, &b);
            assert!((dot(&a, &b) - d).abs() < 1e-4, "dot n={n}");
            assert!(
                (portable::dot(&a, &b) - d).abs() < 1e-4,
                "portable dot n={n}"
            );
            let l: f32 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
            assert!((l2sq(&a, &b) - l).abs() < 1e-3, "l2 n={n}");
            assert!(
                (portable::l2sq(&a, &b) - l).abs() < 1e-3,
                "portable l2 n={n}"
            );
        }
    }

    #[test]
    fn scores_are_higher_for_closer_vectors() {
        for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
            let f = DistanceFn::new(metric);
            let q = prepare(metric, vec![1.0, 0.0]);
            let near = prepare(metric, vec![0.9, 0.1]);
            let far = prepare(metric, vec![-1.0, 0.2]);
            let (dn, df) = (f.distance(&q, &near), f.distance(&q, &far));
            assert!(dn < df, "{metric:?}");
            assert!(f.score(dn) > f.score(df), "{metric:?}");
        }
    }

    #[test]
    fn normalize_rejects_zero() {
        let mut z = vec![0.0; 4];
        assert!(!normalize(&mut z));
        let mut v = vec![3.0, 4.0];
        assert!(normalize(&mut v));
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
    }
}
