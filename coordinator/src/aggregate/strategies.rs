//! The plain strategies: weighted FedAvg and the robust coordinate-wise median and trimmed mean.

use rayon::prelude::*;

use super::{Aggregate, Aggregator};
use crate::{
    error::CoordinatorError,
    types::{WeightedUpdate, Weighting, fedavg_weights, random_effects_weights},
};

/// Coordinates per parallel work item: large enough to amortise scheduling, small enough that
/// each item's slice of every update stays in cache while it is summed.
const CHUNK: usize = 16 * 1024;

/// Weighted FedAvg: `w + sum_i (n_i / n) * delta_i`.
#[derive(Clone, Copy, Debug, Default)]
pub struct FedAvg;

impl Aggregator for FedAvg {
    fn name(&self) -> &'static str {
        "fedavg"
    }

    fn aggregate(
        &self,
        global: &[f32],
        updates: &[WeightedUpdate<'_>],
    ) -> Result<Aggregate, CoordinatorError> {
        Ok(Aggregate::plain(fedavg(global, updates)))
    }
}

/// FedAvg weighted inversely to each update's planned DP-SGD noise per unit of signal
/// ([`Weighting::InverseNoise`]): less noisy updates count more. The weights come from each
/// update's recorded privacy spend and example count, so replay recomputes them; rounds with an
/// update that reports no noisy DP-SGD run fall back to example weights.
#[derive(Clone, Copy, Debug, Default)]
pub struct InverseNoiseFedAvg;

impl Aggregator for InverseNoiseFedAvg {
    fn name(&self) -> &'static str {
        "fedavg-inverse-noise"
    }

    fn aggregate(
        &self,
        global: &[f32],
        updates: &[WeightedUpdate<'_>],
    ) -> Result<Aggregate, CoordinatorError> {
        let weights: Vec<f32> = fedavg_weights(updates, Weighting::InverseNoise)
            .into_iter()
            .map(|w| w as f32)
            .collect();
        Ok(Aggregate::plain(weighted_sum(global, updates, &weights)))
    }
}

/// FedAvg with [`random_effects_weights`]: inverse-noise weights shrunk towards example weights
/// by how much the round's updates differ beyond their planned noise. `step` is the task's
/// learning rate times its clipping norm.
#[derive(Clone, Copy, Debug)]
pub struct RandomEffectsFedAvg {
    pub step: f64,
}

impl Aggregator for RandomEffectsFedAvg {
    fn name(&self) -> &'static str {
        "fedavg-random-effects"
    }

    fn aggregate(
        &self,
        global: &[f32],
        updates: &[WeightedUpdate<'_>],
    ) -> Result<Aggregate, CoordinatorError> {
        let weights: Vec<f32> = random_effects_weights(updates, self.step)
            .into_iter()
            .map(|w| w as f32)
            .collect();
        Ok(Aggregate::plain(weighted_sum(global, updates, &weights)))
    }
}

/// `w + sum_i (n_i / n) * delta_i`, four updates per pass over the accumulator.
pub fn fedavg(global: &[f32], updates: &[WeightedUpdate<'_>]) -> Vec<f32> {
    let total: f64 = updates.iter().map(|u| u.examples as f64).sum();
    let weights: Vec<f32> = updates
        .iter()
        .map(|u| {
            if total > 0.0 {
                (u.examples as f64 / total) as f32
            } else {
                1.0 / updates.len() as f32
            }
        })
        .collect();
    weighted_sum(global, updates, &weights)
}

/// `w + sum_i weights_i * delta_i`, four updates per pass over the accumulator.
fn weighted_sum(global: &[f32], updates: &[WeightedUpdate<'_>], weights: &[f32]) -> Vec<f32> {
    let mut out = global.to_vec();
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, dst)| {
        let start = c * CHUNK;
        let end = start + dst.len();
        // Four updates per pass over `dst`: a quarter of the accumulator's loads and stores,
        // so the pass is bound by reading the updates alone.
        for (u, w) in updates.chunks_exact(4).zip(weights.chunks_exact(4)) {
            let (a, b, e, f) = (
                &u[0].delta[start..end],
                &u[1].delta[start..end],
                &u[2].delta[start..end],
                &u[3].delta[start..end],
            );
            for (j, d) in dst.iter_mut().enumerate() {
                *d += w[0] * a[j] + w[1] * b[j] + w[2] * e[j] + w[3] * f[j];
            }
        }
        let done = updates.len() / 4 * 4;
        for (u, &w) in updates[done..].iter().zip(&weights[done..]) {
            let src = &u.delta[start..end];
            for (d, s) in dst.iter_mut().zip(src) {
                *d += w * s;
            }
        }
    });
    out
}

fn per_coordinate(
    global: &[f32],
    updates: &[WeightedUpdate<'_>],
    reduce: impl Fn(&mut [f32]) -> f32 + Sync,
) -> Vec<f32> {
    let mut out = global.to_vec();
    out.par_chunks_mut(CHUNK).enumerate().for_each_init(
        || vec![0f32; updates.len()],
        |column, (c, dst)| {
            let start = c * CHUNK;
            for (j, d) in dst.iter_mut().enumerate() {
                for (slot, u) in column.iter_mut().zip(updates) {
                    *slot = u.delta[start + j];
                }
                *d += reduce(column);
            }
        },
    );
    out
}

/// Coordinate-wise median of the deltas (unweighted).
#[derive(Clone, Copy, Debug, Default)]
pub struct CoordinateMedian;

impl Aggregator for CoordinateMedian {
    fn name(&self) -> &'static str {
        "median"
    }

    fn aggregate(
        &self,
        global: &[f32],
        updates: &[WeightedUpdate<'_>],
    ) -> Result<Aggregate, CoordinatorError> {
        Ok(Aggregate::plain(per_coordinate(global, updates, |col| {
            col.sort_unstable_by(f32::total_cmp);
            let n = col.len();
            if n % 2 == 1 {
                col[n / 2]
            } else {
                0.5 * (col[n / 2 - 1] + col[n / 2])
            }
        })))
    }
}

/// Coordinate-wise trimmed mean of the deltas (unweighted).
#[derive(Clone, Copy, Debug)]
pub struct TrimmedMean {
    /// Fraction dropped at each end, per coordinate.
    pub fraction: f64,
}

impl Aggregator for TrimmedMean {
    fn name(&self) -> &'static str {
        "trimmed-mean"
    }

    fn aggregate(
        &self,
        global: &[f32],
        updates: &[WeightedUpdate<'_>],
    ) -> Result<Aggregate, CoordinatorError> {
        let n = updates.len();
        let cut = ((n as f64 * self.fraction).floor() as usize).min((n - 1) / 2);
        Ok(Aggregate::plain(per_coordinate(global, updates, |col| {
            col.sort_unstable_by(f32::total_cmp);
            let kept = &col[cut..n - cut];
            kept.iter().sum::<f32>() / kept.len() as f32
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upd(examples: u64, delta: &[f32]) -> WeightedUpdate<'_> {
        WeightedUpdate {
            examples,
            delta,
            privacy: None,
        }
    }

    #[test]
    fn fedavg_weights_by_examples() {
        let g = vec![1.0f32; 3];
        let a = [1.0f32, 0.0, -2.0];
        let b = [4.0f32, 2.0, 1.0];
        let out = FedAvg
            .aggregate(&g, &[upd(1, &a), upd(3, &b)])
            .unwrap()
            .params;
        let expect = [1.0 + 0.25 + 3.0, 1.0 + 1.5, 1.0 - 0.5 + 0.75];
        for (o, e) in out.iter().zip(expect) {
            assert!((o - e).abs() < 1e-6, "{o} vs {e}");
        }
    }

    #[test]
    fn fedavg_groups_of_four_and_remainder_agree_with_the_formula() {
        let g: Vec<f32> = (0..37).map(|i| i as f32 * 0.1).collect();
        let ups: Vec<Vec<f32>> = (0..7)
            .map(|u| {
                (0..37)
                    .map(|i| ((i * 3 + u * 5) % 11) as f32 - 5.0)
                    .collect()
            })
            .collect();
        let views: Vec<_> = ups
            .iter()
            .enumerate()
            .map(|(i, d)| upd(1 + i as u64, d))
            .collect();
        let out = FedAvg.aggregate(&g, &views).unwrap().params;
        let total: f64 = (1..=7).map(f64::from).sum();
        for j in 0..37 {
            let want: f64 = f64::from(g[j])
                + ups
                    .iter()
                    .enumerate()
                    .map(|(i, d)| (i as f64 + 1.0) / total * f64::from(d[j]))
                    .sum::<f64>();
            assert!(
                (f64::from(out[j]) - want).abs() < 1e-4,
                "{j}: {} vs {want}",
                out[j]
            );
        }
    }

    #[test]
    fn fedavg_spans_many_chunks() {
        let n = CHUNK * 3 + 17;
        let g: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let a: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
        let out = FedAvg.aggregate(&g, &[upd(5, &a)]).unwrap().params;
        for i in [0, CHUNK - 1, CHUNK, n - 1] {
            assert_eq!(out[i], g[i] + a[i]);
        }
    }

    #[test]
    fn inverse_noise_fedavg_weighs_by_the_planned_noise_per_unit_of_signal() {
        use fedledger_ledger::records::PrivacyObject;
        let spend =
            |z: f64, q: f64, steps: u64| PrivacyObject::conservative("rdp", z, q, steps, 1e-5);
        // Weights T (q n)^2 / z^2: 4 * 100^2 / 1 = 40000 and 1 * (0.5 * 400)^2 / 4 = 10000.
        let (a, b) = (spend(1.0, 1.0, 4), spend(2.0, 0.5, 1));
        let g = vec![0.0f32; 2];
        let (da, db) = ([1.0f32, 0.0], [0.0f32, 1.0]);
        let ups = [
            WeightedUpdate {
                examples: 100,
                delta: &da,
                privacy: Some(&a),
            },
            WeightedUpdate {
                examples: 400,
                delta: &db,
                privacy: Some(&b),
            },
        ];
        let out = InverseNoiseFedAvg.aggregate(&g, &ups).unwrap().params;
        assert!(
            (out[0] - 0.8).abs() < 1e-6 && (out[1] - 0.2).abs() < 1e-6,
            "{out:?}"
        );
        // Plain FedAvg still weighs by examples, bit for bit as before.
        assert_eq!(FedAvg.aggregate(&g, &ups).unwrap().params, vec![0.2, 0.8]);
    }

    #[test]
    fn median_ignores_one_outlier() {
        let g = vec![0.0f32; 2];
        let ups = [[1.0f32, 1.0], [1.1, 0.9], [1000.0, -1000.0]];
        let views: Vec<_> = ups.iter().map(|d| upd(1, d)).collect();
        let out = CoordinateMedian.aggregate(&g, &views).unwrap().params;
        assert_eq!(out, vec![1.1, 0.9]);
    }

    #[test]
    fn trimmed_mean_drops_extremes() {
        let g = vec![0.0f32];
        let ups: Vec<[f32; 1]> = (0..10).map(|i| [i as f32]).collect();
        let mut views: Vec<_> = ups.iter().map(|d| upd(1, d)).collect();
        let outlier = [1e6f32];
        views[9] = upd(1, &outlier);
        let out = TrimmedMean { fraction: 0.1 }
            .aggregate(&g, &views)
            .unwrap()
            .params;
        // drops 0 and 1e6, keeps 1..=8
        assert!((out[0] - 4.5).abs() < 1e-6);
    }
}
