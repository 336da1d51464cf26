//! Byzantine-robust aggregation by selection: Multi-Krum (Blanchard et al. 2017, "Machine
//! Learning with Adversaries: Byzantine Tolerant Gradient Descent") and Bulyan (El Mhamdi et al.
//! 2018, "The Hidden Vulnerability of Distributed Learning in Byzantium").
//!
//! Both assume at most `f` of the `n` updates are Byzantine. Krum scores update `i` by the sum of
//! its squared distances to its `n - f - 2` nearest other updates; Multi-Krum averages the `m`
//! best-scored updates (`m = n - f` by default). Bulyan selects `theta = n - 2f` updates by
//! repeated Krum, then takes the coordinate-wise mean of the `theta - 2f` values closest to the
//! coordinate-wise median of the selection. Multi-Krum needs `n >= 2f + 3`, Bulyan `n >= 4f + 3`;
//! with fewer updates they fall back to what the count allows (documented in [`MultiKrum`]).
//!
//! Cost: the pairwise distances are `n (n - 1) / 2 x d` subtract-multiply-adds, quadratic in the
//! number of updates; they are computed block by block of coordinates, so memory is read about
//! once (the arithmetic, not memory, grows with `n^2`), in parallel over fixed groups of blocks
//! summed in a fixed order, so results are bit-reproducible. Selection and averaging are linear.
//! Neither composes with the DP-FedAvg wrapper: which updates are selected depends on every
//! update, so one participant can change the output by more than the `C / m` the wrapper's noise
//! is calibrated for (the configuration refuses the combination).

use rayon::prelude::*;

use super::{Aggregate, Aggregator};
use crate::{error::CoordinatorError, types::WeightedUpdate};

/// Coordinates per block: a block of every update (`n x 16 KiB`) stays in cache while every
/// pair is compared on it, so the updates are read from memory about once, not `n - 1` times.
const BLOCK: usize = 4096;

/// Fixed groups of blocks summed in parallel: the partial sums (one per pair per group) are then
/// added in group order, so the result does not depend on how many threads ran.
const GROUPS: usize = 16;

/// Squared L2 distances between every pair of vectors, `n x n` row-major, in `f64`.
fn pairwise_sq_distances(vectors: &[&[f32]]) -> Vec<f64> {
    let n = vectors.len();
    let len = vectors.iter().map(|v| v.len()).min().unwrap_or(0);
    let pairs: Vec<(usize, usize)> = (0..n)
        .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
        .collect();
    let blocks = len.div_ceil(BLOCK);
    let groups = GROUPS.min(blocks).max(1);
    let partials: Vec<Vec<f64>> = (0..groups)
        .into_par_iter()
        .map(|g| {
            let mut acc = vec![0.0f64; pairs.len()];
            for b in g * blocks / groups..(g + 1) * blocks / groups {
                let (lo, hi) = (b * BLOCK, ((b + 1) * BLOCK).min(len));
                for (a, &(i, j)) in acc.iter_mut().zip(&pairs) {
                    *a += sq_distance(&vectors[i][lo..hi], &vectors[j][lo..hi]);
                }
            }
            acc
        })
        .collect();
    let mut out = vec![0.0; n * n];
    for (k, &(i, j)) in pairs.iter().enumerate() {
        let v: f64 = partials.iter().map(|p| p[k]).sum();
        out[i * n + j] = v;
        out[j * n + i] = v;
    }
    out
}

/// `sum (a_k - b_k)^2` in `f64`, over four independent lanes (a serial sum would wait on the
/// adder's latency at every coordinate).
fn sq_distance(a: &[f32], b: &[f32]) -> f64 {
    let mut lanes = [0.0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..4 {
            let d = f64::from(x[k]) - f64::from(y[k]);
            lanes[k] += d * d;
        }
    }
    for (x, y) in ra.iter().zip(rb) {
        let d = f64::from(*x) - f64::from(*y);
        lanes[0] += d * d;
    }
    (lanes[0] + lanes[1]) + (lanes[2] + lanes[3])
}

/// Krum scores of the updates `among` (indices into the distance matrix of `n` updates): the sum
/// of each one's `k` smallest squared distances to the others among them.
fn krum_scores(dist: &[f64], n: usize, among: &[usize], k: usize) -> Vec<f64> {
    among
        .iter()
        .map(|&i| {
            let mut d: Vec<f64> = among
                .iter()
                .filter(|&&j| j != i)
                .map(|&j| dist[i * n + j])
                .collect();
            d.sort_unstable_by(f64::total_cmp);
            d.iter().take(k).sum()
        })
        .collect()
}

/// The `m` best-scored of `among` by Krum with `f` assumed Byzantine (ties to the lower index).
fn krum_select(dist: &[f64], n: usize, among: &[usize], f: usize, m: usize) -> Vec<usize> {
    let k = among.len().saturating_sub(f + 2).max(1);
    let scores = krum_scores(dist, n, among, k);
    let mut order: Vec<usize> = (0..among.len()).collect();
    order.sort_by(|&a, &b| {
        scores[a]
            .total_cmp(&scores[b])
            .then(among[a].cmp(&among[b]))
    });
    let mut chosen: Vec<usize> = order.into_iter().take(m).map(|o| among[o]).collect();
    chosen.sort_unstable();
    chosen
}

/// Multi-Krum: the mean of the `m` updates with the lowest Krum scores.
///
/// With `n` updates and `f` assumed Byzantine, each score sums the `n - f - 2` nearest squared
/// distances (at least one, when `n` is too small for that); `m` defaults to `n - f` (at least
/// one). The kept updates are averaged with equal weights (example counts are self-reported and
/// would let an attacker that slipped through weigh more).
#[derive(Clone, Copy, Debug)]
pub struct MultiKrum {
    /// Assumed number of Byzantine updates.
    pub byzantine: usize,
    /// Updates kept; `None`: `n - byzantine`.
    pub keep: Option<usize>,
}

/// The vectors a selecting strategy compares: `compared` when given (the hospitals'
/// histories, [`super::history`]: one per update, each as long as it), else the updates
/// themselves.
fn compared_vectors<'a>(
    updates: &'a [WeightedUpdate<'_>],
    compared: Option<&'a [&'a [f32]]>,
) -> Result<Vec<&'a [f32]>, CoordinatorError> {
    match compared {
        Some(c)
            if c.len() != updates.len()
                || c.iter().zip(updates).any(|(h, u)| h.len() != u.delta.len()) =>
        {
            Err(CoordinatorError::Internal(format!(
                "{} compared vectors for {} updates, or of another length",
                c.len(),
                updates.len()
            )))
        }
        Some(c) => Ok(c.to_vec()),
        None => Ok(updates.iter().map(|u| u.delta).collect()),
    }
}

impl MultiKrum {
    /// The indices of the vectors kept (updates, or the histories standing for them).
    pub fn select(&self, vectors: &[&[f32]]) -> Vec<usize> {
        let n = vectors.len();
        let m = self
            .keep
            .unwrap_or(n.saturating_sub(self.byzantine))
            .clamp(1, n.max(1));
        let dist = pairwise_sq_distances(vectors);
        let all: Vec<usize> = (0..n).collect();
        krum_select(&dist, n, &all, self.byzantine, m)
    }
}

fn mean_of(global: &[f32], updates: &[WeightedUpdate<'_>], kept: &[usize]) -> Vec<f32> {
    let w = 1.0 / kept.len().max(1) as f64;
    let mut out = global.to_vec();
    out.par_iter_mut().enumerate().for_each(|(j, o)| {
        let s: f64 = kept.iter().map(|&i| f64::from(updates[i].delta[j])).sum();
        *o += (s * w) as f32;
    });
    out
}

impl Aggregator for MultiKrum {
    fn name(&self) -> &'static str {
        "multi-krum"
    }

    fn selects(&self) -> bool {
        true
    }

    fn aggregate(
        &self,
        global: &[f32],
        updates: &[WeightedUpdate<'_>],
    ) -> Result<Aggregate, CoordinatorError> {
        self.aggregate_compared(global, updates, None)
    }

    fn aggregate_compared(
        &self,
        global: &[f32],
        updates: &[WeightedUpdate<'_>],
        compared: Option<&[&[f32]]>,
    ) -> Result<Aggregate, CoordinatorError> {
        let kept = self.select(&compared_vectors(updates, compared)?);
        let excluded = (0..updates.len()).filter(|i| !kept.contains(i)).collect();
        Ok(Aggregate {
            params: mean_of(global, updates, &kept),
            server_dp: None,
            excluded,
        })
    }
}

/// Bulyan: `theta = n - 2f` updates chosen by repeated Krum, then per coordinate the mean of the
/// `theta - 2f` values nearest the selection's median. With too few updates for `n >= 4f + 3`,
/// `theta` and the trimmed count shrink to what `n` allows (at least one value is kept).
#[derive(Clone, Copy, Debug)]
pub struct Bulyan {
    /// Assumed number of Byzantine updates.
    pub byzantine: usize,
}

impl Bulyan {
    /// The vectors selected by repeated Krum (updates, or the histories standing for them).
    pub fn select(&self, vectors: &[&[f32]]) -> Vec<usize> {
        let n = vectors.len();
        let f = self.byzantine;
        let theta = n.saturating_sub(2 * f).max(1);
        let dist = pairwise_sq_distances(vectors);
        let mut left: Vec<usize> = (0..n).collect();
        let mut chosen = Vec::with_capacity(theta);
        while chosen.len() < theta && !left.is_empty() {
            let best = krum_select(&dist, n, &left, f, 1)[0];
            chosen.push(best);
            left.retain(|&i| i != best);
        }
        chosen.sort_unstable();
        chosen
    }
}

impl Aggregator for Bulyan {
    fn name(&self) -> &'static str {
        "bulyan"
    }

    fn selects(&self) -> bool {
        true
    }

    fn aggregate(
        &self,
        global: &[f32],
        updates: &[WeightedUpdate<'_>],
    ) -> Result<Aggregate, CoordinatorError> {
        self.aggregate_compared(global, updates, None)
    }

    fn aggregate_compared(
        &self,
        global: &[f32],
        updates: &[WeightedUpdate<'_>],
        compared: Option<&[&[f32]]>,
    ) -> Result<Aggregate, CoordinatorError> {
        let chosen = self.select(&compared_vectors(updates, compared)?);
        let theta = chosen.len();
        let beta = theta.saturating_sub(2 * self.byzantine).max(1);
        let mut out = global.to_vec();
        out.par_chunks_mut(4096).enumerate().for_each_init(
            || vec![0f32; theta],
            |col, (c, dst)| {
                let start = c * 4096;
                for (j, d) in dst.iter_mut().enumerate() {
                    for (slot, &i) in col.iter_mut().zip(&chosen) {
                        *slot = updates[i].delta[start + j];
                    }
                    col.sort_unstable_by(f32::total_cmp);
                    let median = if theta % 2 == 1 {
                        col[theta / 2]
                    } else {
                        0.5 * (col[theta / 2 - 1] + col[theta / 2])
                    };
                    // The beta values nearest the median: a window of the sorted column.
                    let mut lo = 0;
                    for s in 0..=(theta - beta) {
                        let better = (col[s + beta - 1] - median)
                            .abs()
                            .max((col[s] - median).abs())
                            < (col[lo + beta - 1] - median)
                                .abs()
                                .max((col[lo] - median).abs());
                        if better {
                            lo = s;
                        }
                    }
                    let sum: f64 = col[lo..lo + beta].iter().map(|v| f64::from(*v)).sum();
                    *d += (sum / beta as f64) as f32;
                }
            },
        );
        let excluded = (0..updates.len()).filter(|i| !chosen.contains(i)).collect();
        Ok(Aggregate {
            params: out,
            server_dp: None,
            excluded,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upd(delta: &[f32]) -> WeightedUpdate<'_> {
        WeightedUpdate {
            examples: 1,
            delta,
            privacy: None,
        }
    }

    /// Six honest updates near (1, 1, 1) and two far-off attackers.
    fn round() -> Vec<Vec<f32>> {
        let mut u: Vec<Vec<f32>> = (0..6)
            .map(|i| vec![1.0 + 0.01 * i as f32, 1.0 - 0.01 * i as f32, 1.0])
            .collect();
        u.push(vec![-50.0, 40.0, 0.0]);
        u.push(vec![30.0, -60.0, 5.0]);
        u
    }

    #[test]
    fn multi_krum_keeps_the_honest_updates() {
        let u = round();
        let views: Vec<_> = u.iter().map(|d| upd(d)).collect();
        let mk = MultiKrum {
            byzantine: 2,
            keep: None,
        };
        let vectors: Vec<&[f32]> = u.iter().map(|d| d.as_slice()).collect();
        assert_eq!(mk.select(&vectors), vec![0, 1, 2, 3, 4, 5]);
        let a = mk.aggregate(&[0.0; 3], &views).unwrap();
        assert_eq!(a.excluded, vec![6, 7]);
        for (got, want) in a.params.iter().zip([1.025f32, 0.975, 1.0]) {
            assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        }
        // One kept: the most central.
        let one = MultiKrum {
            byzantine: 2,
            keep: Some(1),
        };
        assert_eq!(one.select(&vectors).len(), 1);
        assert!(one.select(&vectors)[0] < 6);
    }

    #[test]
    fn bulyan_keeps_the_honest_updates_and_trims_each_coordinate() {
        let mut u = round();
        // n = 11 >= 4f + 3 with f = 2.
        for i in 0..3 {
            u.insert(0, vec![1.0 - 0.02 * i as f32, 1.0, 1.0 + 0.02 * i as f32]);
        }
        let views: Vec<_> = u.iter().map(|d| upd(d)).collect();
        let b = Bulyan { byzantine: 2 };
        let vectors: Vec<&[f32]> = u.iter().map(|d| d.as_slice()).collect();
        let chosen = b.select(&vectors);
        assert_eq!(chosen.len(), 7);
        assert!(chosen.iter().all(|&i| i < 9), "{chosen:?}");
        let a = b.aggregate(&[0.0; 3], &views).unwrap();
        assert_eq!(a.excluded.len(), 4);
        for v in &a.params {
            assert!((v - 1.0).abs() < 0.05, "{:?}", a.params);
        }
    }

    /// With histories given, the selection compares them, and the aggregate is still the mean
    /// of the selected updates; histories that do not match the updates are refused.
    #[test]
    fn selection_compares_the_histories_and_averages_the_updates() {
        // Eight identical updates: on their own nothing tells them apart.
        let u: Vec<Vec<f32>> = vec![vec![1.0, 1.0, 1.0]; 8];
        let views: Vec<_> = u.iter().map(|d| upd(d)).collect();
        let histories = round();
        let compared: Vec<&[f32]> = histories.iter().map(|h| h.as_slice()).collect();
        let mk = MultiKrum {
            byzantine: 2,
            keep: None,
        };
        let a = mk
            .aggregate_compared(&[0.5; 3], &views, Some(&compared))
            .unwrap();
        assert_eq!(a.excluded, vec![6, 7]);
        assert_eq!(a.params, vec![1.5; 3]);
        // Without histories, ties go to the lower index: the same two by position only.
        assert_eq!(
            mk.aggregate(&[0.5; 3], &views).unwrap().excluded,
            vec![6, 7]
        );
        let mut swapped = compared.clone();
        swapped.swap(0, 7);
        let a = mk
            .aggregate_compared(&[0.5; 3], &views, Some(&swapped))
            .unwrap();
        assert_eq!(a.excluded, vec![0, 6]);
        let b = Bulyan { byzantine: 2 };
        let a = b
            .aggregate_compared(&[0.5; 3], &views, Some(&swapped))
            .unwrap();
        assert!(a.excluded.contains(&0) && a.excluded.contains(&6), "{a:?}");
        assert!(
            mk.aggregate_compared(&[0.5; 3], &views, Some(&compared[..7]))
                .is_err()
        );
    }

    #[test]
    fn small_rounds_do_not_panic() {
        for n in 1..5 {
            let u: Vec<Vec<f32>> = (0..n).map(|i| vec![i as f32; 2]).collect();
            let views: Vec<_> = u.iter().map(|d| upd(d)).collect();
            let mk = MultiKrum {
                byzantine: 3,
                keep: None,
            };
            assert!(!mk.aggregate(&[0.0; 2], &views).unwrap().params.is_empty());
            let b = Bulyan { byzantine: 3 };
            assert!(!b.aggregate(&[0.0; 2], &views).unwrap().params.is_empty());
        }
    }
}
