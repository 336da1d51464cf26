//! Participant-level differential privacy at the coordinator (DP-FedAvg, McMahan et al. 2018),
//! as a wrapper around any aggregation strategy rather than a flag inside each (the way Flower's
//! `DifferentialPrivacyServerSideFixedClipping` wraps a strategy).
//!
//! Each round, every update is clipped to L2 norm `C`; the inner strategy aggregates the clipped
//! updates with **equal weights** (example counts are self-reported and unprotected, so they
//! cannot scale a participant's influence beyond the bound); Gaussian noise of standard
//! deviation `z * C / m` (m updates) is added to the new model, which is the noise `z * C` on the
//! sum of clipped updates. The guarantee is for mean-type inner strategies (`fedavg`); the
//! configuration refuses DP with `median` or `trimmed-mean`, whose sensitivity is not `C / m`.
//!
//! `C` is fixed, or adaptive (Andrew et al. 2021): it follows a privately estimated quantile of
//! the update norms. The adaptive state lives in memory; after a restart it starts again from the
//! configured initial bound, which costs utility, never privacy.
//!
//! Each round's outcome carries the federation-level epsilon: every round with server-side DP
//! so far is one Gaussian mechanism over all participants (sampling rate 1) with that round's
//! effective noise multiplier, composed by the RDP accountant ([`federation_epsilon`]). The
//! history comes from the stored outcomes, so a restart never under-reports it.

use std::sync::Mutex;

use chacha20::ChaCha20Rng;
use fedledger_privacy::{
    AccountantKind, AdaptiveClip, PoissonGaussian, accountant::epsilon_of_history,
    add_aggregate_noise, clip_l2,
};

use super::{Aggregate, Aggregator};
use crate::{
    config::ServerDpSection,
    error::CoordinatorError,
    types::{ServerDpReport, WeightedUpdate},
};

enum Clip {
    Fixed(f64),
    Adaptive(AdaptiveClip),
}

struct State {
    clip: Clip,
    rng: ChaCha20Rng,
}

/// The DP-FedAvg wrapper.
pub struct DpAggregator {
    inner: Box<dyn Aggregator>,
    noise_multiplier: f64,
    delta: f64,
    state: Mutex<State>,
}

impl DpAggregator {
    /// Wrap `inner`; noise is drawn from `rng` (the coordinator seeds it from the operating
    /// system, tests with a fixed seed). The section is validated by the configuration.
    pub fn new(
        inner: Box<dyn Aggregator>,
        cfg: &ServerDpSection,
        rng: ChaCha20Rng,
    ) -> Result<Self, CoordinatorError> {
        let clip = if cfg.adaptive {
            Clip::Adaptive(
                AdaptiveClip::new(
                    cfg.clip_norm,
                    cfg.target_quantile,
                    cfg.clip_learning_rate,
                    cfg.count_noise_std,
                )
                .map_err(|e| CoordinatorError::Internal(format!("aggregation.dp: {e}")))?,
            )
        } else {
            Clip::Fixed(cfg.clip_norm)
        };
        Ok(Self {
            inner,
            noise_multiplier: cfg.noise_multiplier,
            delta: cfg.delta,
            state: Mutex::new(State { clip, rng }),
        })
    }
}

impl Aggregator for DpAggregator {
    fn name(&self) -> &'static str {
        "dp-fedavg"
    }

    fn aggregate(
        &self,
        global: &[f32],
        updates: &[WeightedUpdate<'_>],
    ) -> Result<Aggregate, CoordinatorError> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let bound = match &st.clip {
            Clip::Fixed(c) => *c,
            Clip::Adaptive(a) => a.clip_norm(),
        };
        let mut norms = Vec::with_capacity(updates.len());
        let mut clipped_count = 0u32;
        let mut clipped = Vec::with_capacity(updates.len());
        for u in updates {
            let mut v = u.delta.to_vec();
            let norm = clip_l2(&mut v, bound)
                .map_err(|e| CoordinatorError::Internal(format!("DP-FedAvg clipping: {e}")))?;
            if norm > bound {
                clipped_count += 1;
            }
            norms.push(norm);
            clipped.push(v);
        }
        let equal: Vec<WeightedUpdate<'_>> = clipped
            .iter()
            .map(|d| WeightedUpdate {
                examples: 1,
                delta: d,
                privacy: None,
            })
            .collect();
        let mut out = self.inner.aggregate(global, &equal)?.params;
        let m = updates.len().max(1) as f64;
        let mut noise = vec![0f32; out.len()];
        // Never an aggregate without its noise: a failure refuses the close.
        let effective =
            add_aggregate_noise(&mut noise, self.noise_multiplier, bound / m, &mut st.rng)
                .map_err(|e| CoordinatorError::Internal(format!("DP-FedAvg noise: {e}")))?;
        for (o, n) in out.iter_mut().zip(&noise) {
            *o += n;
        }
        let State { clip, rng } = &mut *st;
        if let Clip::Adaptive(a) = clip {
            // A failed update leaves the bound where it was (utility, not privacy, suffers).
            let _ = a.update(&norms, rng);
        }
        Ok(Aggregate {
            params: out,
            server_dp: Some(ServerDpReport {
                clip_norm: bound,
                noise_multiplier: effective,
                clipped_updates: clipped_count,
                epsilon: 0.0,
                delta: self.delta,
            }),
            excluded: Vec::new(),
        })
    }
}

/// The federation-level epsilon at `delta` after rounds of DP-FedAvg with these effective noise
/// multipliers (one per round, every participant in every round), by the RDP accountant.
pub fn federation_epsilon(multipliers: &[f64], delta: f64) -> Result<f64, CoordinatorError> {
    if multipliers.is_empty() {
        return Ok(0.0);
    }
    let runs: Vec<PoissonGaussian> = multipliers
        .iter()
        .map(|&noise_multiplier| PoissonGaussian {
            noise_multiplier,
            sampling_rate: 1.0,
            steps: 1,
        })
        .collect();
    epsilon_of_history(AccountantKind::Rdp, &runs, delta)
        .map(|r| r.epsilon)
        .map_err(|e| CoordinatorError::Internal(format!("DP-FedAvg accounting: {e}")))
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;
    use crate::aggregate::FedAvg;

    fn section(adaptive: bool) -> ServerDpSection {
        ServerDpSection {
            noise_multiplier: 1.0,
            clip_norm: 1.0,
            adaptive,
            target_quantile: 0.5,
            clip_learning_rate: 0.2,
            count_noise_std: 0.0,
            delta: 1e-5,
        }
    }

    fn wrapper(adaptive: bool) -> DpAggregator {
        DpAggregator::new(
            Box::new(FedAvg),
            &section(adaptive),
            ChaCha20Rng::seed_from_u64(9),
        )
        .unwrap()
    }

    #[test]
    fn clips_equalises_and_adds_noise_of_the_right_scale() {
        let agg = wrapper(false);
        let n = 20_000;
        let global = vec![0f32; n];
        let big: Vec<f32> = vec![10.0 / (n as f32).sqrt(); n]; // norm 10 -> clipped to 1
        let small = vec![0f32; n];
        let out = agg
            .aggregate(
                &global,
                &[
                    WeightedUpdate {
                        examples: 1000,
                        delta: &big,
                        privacy: None,
                    },
                    WeightedUpdate {
                        examples: 1,
                        delta: &small,
                        privacy: None,
                    },
                ],
            )
            .unwrap();
        // Mean of clipped updates: big/10/2 per coordinate; noise std z*C/m = 0.5.
        let expect = 1.0 / (n as f64).sqrt() / 2.0;
        let p = &out.params;
        let mean = p.iter().map(|v| f64::from(*v)).sum::<f64>() / n as f64;
        let sd = (p
            .iter()
            .map(|v| (f64::from(*v) - mean).powi(2))
            .sum::<f64>()
            / n as f64)
            .sqrt();
        assert!((sd - 0.5).abs() < 0.02, "noise sd {sd}");
        assert!((mean - expect).abs() < 0.02, "mean {mean} vs {expect}");
        let r = out.server_dp.unwrap();
        assert_eq!(r.clipped_updates, 1);
        assert!(r.noise_multiplier <= 1.0 && r.noise_multiplier > 0.999);
        assert_eq!(r.delta, 1e-5);
    }

    #[test]
    fn adaptive_bound_moves_towards_the_quantile() {
        let agg = wrapper(true);
        let global = vec![0f32; 4];
        let ups: Vec<Vec<f32>> = (1..=4)
            .map(|k| vec![k as f32 * 10.0, 0.0, 0.0, 0.0])
            .collect();
        let views: Vec<_> = ups
            .iter()
            .map(|d| WeightedUpdate {
                examples: 1,
                delta: d,
                privacy: None,
            })
            .collect();
        let first = agg.aggregate(&global, &views).unwrap().server_dp.unwrap();
        let second = agg.aggregate(&global, &views).unwrap().server_dp.unwrap();
        assert_eq!(first.clip_norm, 1.0);
        assert!(
            second.clip_norm > first.clip_norm,
            "all norms exceed the bound, so it grows: {}",
            second.clip_norm
        );
    }

    #[test]
    fn federation_epsilon_composes_rounds_and_matches_the_privacy_crate() {
        assert_eq!(federation_epsilon(&[], 1e-5).unwrap(), 0.0);
        let one = federation_epsilon(&[1.0], 1e-5).unwrap();
        let ten = federation_epsilon(&[1.0; 10], 1e-5).unwrap();
        let want = fedledger_privacy::dp_fedavg_epsilon(1.0, 1.0, 10, 1e-5)
            .unwrap()
            .epsilon;
        assert_eq!(ten, want);
        assert!(one > 0.0 && ten > one);
    }
}
