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

use std::sync::Mutex;

use chacha20::ChaCha20Rng;
use fedledger_privacy::{AdaptiveClip, add_aggregate_noise, clip_l2};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::aggregate::{Aggregator, WeightedUpdate};

/// `[aggregation.dp]` in `coordinator.toml`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerDpSection {
    /// Noise multiplier `z` of the aggregate.
    pub noise_multiplier: f64,
    /// Clipping bound `C` (initial bound when adaptive).
    pub clip_norm: f64,
    /// Follow a target quantile of the update norms instead of a fixed bound.
    #[serde(default)]
    pub adaptive: bool,
    #[serde(default = "half")]
    pub target_quantile: f64,
    #[serde(default = "point_two")]
    pub clip_learning_rate: f64,
    /// Noise on the private count of unclipped updates (adaptive only).
    #[serde(default)]
    pub count_noise_std: f64,
    /// Delta at which the federation-level epsilon is reported.
    #[serde(default = "default_delta")]
    pub delta: f64,
}

fn half() -> f64 {
    0.5
}
fn point_two() -> f64 {
    0.2
}
fn default_delta() -> f64 {
    1e-5
}

/// What the wrapper did in the last round, for the round's record.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ServerDpReport {
    pub clip_norm: f64,
    /// The effective noise multiplier accounted for (after the grid-rounding charge).
    pub noise_multiplier: f64,
    pub clipped_updates: u32,
}

enum Clip {
    Fixed(f64),
    Adaptive(AdaptiveClip),
}

struct State {
    clip: Clip,
    rng: ChaCha20Rng,
    last: Option<ServerDpReport>,
}

/// The DP-FedAvg wrapper.
pub struct DpAggregator {
    inner: Box<dyn Aggregator>,
    noise_multiplier: f64,
    state: Mutex<State>,
}

impl DpAggregator {
    /// Wrap `inner`. Noise comes from ChaCha20 seeded by the operating system.
    pub fn new(inner: Box<dyn Aggregator>, cfg: &ServerDpSection) -> Result<Self, String> {
        if !(cfg.noise_multiplier.is_finite() && cfg.noise_multiplier > 0.0) {
            return Err(format!(
                "aggregation.dp.noise_multiplier must be > 0, got {}",
                cfg.noise_multiplier
            ));
        }
        let clip = if cfg.adaptive {
            Clip::Adaptive(
                AdaptiveClip::new(
                    cfg.clip_norm,
                    cfg.target_quantile,
                    cfg.clip_learning_rate,
                    cfg.count_noise_std,
                )
                .map_err(|e| format!("aggregation.dp: {e}"))?,
            )
        } else {
            if !(cfg.clip_norm.is_finite() && cfg.clip_norm > 0.0) {
                return Err(format!(
                    "aggregation.dp.clip_norm must be > 0, got {}",
                    cfg.clip_norm
                ));
            }
            Clip::Fixed(cfg.clip_norm)
        };
        let rng = ChaCha20Rng::try_from_rng(&mut rand::rngs::SysRng)
            .map_err(|e| format!("OS randomness unavailable: {e}"))?;
        Ok(Self {
            inner,
            noise_multiplier: cfg.noise_multiplier,
            state: Mutex::new(State {
                clip,
                rng,
                last: None,
            }),
        })
    }
}

impl Aggregator for DpAggregator {
    fn name(&self) -> &'static str {
        "dp-fedavg"
    }

    fn aggregate(&self, global: &[f32], updates: &[WeightedUpdate<'_>]) -> Vec<f32> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let bound = match &st.clip {
            Clip::Fixed(c) => *c,
            Clip::Adaptive(a) => a.clip_norm(),
        };
        let mut norms = Vec::with_capacity(updates.len());
        let mut clipped_count = 0u32;
        let clipped: Vec<Vec<f32>> = updates
            .iter()
            .map(|u| {
                let mut v = u.delta.to_vec();
                // The round logic only lets finite updates through, so clipping cannot fail.
                let norm = clip_l2(&mut v, bound).unwrap_or(f64::INFINITY);
                if norm > bound {
                    clipped_count += 1;
                }
                norms.push(norm);
                v
            })
            .collect();
        let equal: Vec<WeightedUpdate<'_>> = clipped
            .iter()
            .map(|d| WeightedUpdate {
                examples: 1,
                delta: d,
            })
            .collect();
        let mut out = self.inner.aggregate(global, &equal);
        let m = updates.len().max(1) as f64;
        let mut noise = vec![0f32; out.len()];
        let effective =
            add_aggregate_noise(&mut noise, self.noise_multiplier, bound / m, &mut st.rng)
                .unwrap_or(0.0);
        for (o, n) in out.iter_mut().zip(&noise) {
            *o += n;
        }
        let State { clip, rng, last } = &mut *st;
        if let Clip::Adaptive(a) = clip {
            // A failed update leaves the bound where it was (utility, not privacy, suffers).
            let _ = a.update(&norms, rng);
        }
        *last = Some(ServerDpReport {
            clip_norm: bound,
            noise_multiplier: effective,
            clipped_updates: clipped_count,
        });
        out
    }

    fn server_dp(&self) -> Option<ServerDpReport> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last
            .clone()
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn clips_equalises_and_adds_noise_of_the_right_scale() {
        let agg = DpAggregator::new(Box::new(FedAvg), &section(false)).unwrap();
        let n = 20_000;
        let global = vec![0f32; n];
        let big: Vec<f32> = vec![10.0 / (n as f32).sqrt(); n]; // norm 10 -> clipped to 1
        let small = vec![0f32; n];
        let out = agg.aggregate(
            &global,
            &[
                WeightedUpdate {
                    examples: 1000,
                    delta: &big,
                },
                WeightedUpdate {
                    examples: 1,
                    delta: &small,
                },
            ],
        );
        // Mean of clipped updates: big/10/2 per coordinate; noise std z*C/m = 0.5.
        let expect = 1.0 / (n as f64).sqrt() / 2.0;
        let mean = out.iter().map(|v| f64::from(*v)).sum::<f64>() / n as f64;
        let sd = (out
            .iter()
            .map(|v| (f64::from(*v) - mean).powi(2))
            .sum::<f64>()
            / n as f64)
            .sqrt();
        assert!((sd - 0.5).abs() < 0.02, "noise sd {sd}");
        assert!((mean - expect).abs() < 0.02, "mean {mean} vs {expect}");
        let r = agg.server_dp().unwrap();
        assert_eq!(r.clipped_updates, 1);
        assert!(r.noise_multiplier <= 1.0 && r.noise_multiplier > 0.999);
    }

    #[test]
    fn adaptive_bound_moves_towards_the_quantile() {
        let agg = DpAggregator::new(Box::new(FedAvg), &section(true)).unwrap();
        let global = vec![0f32; 4];
        let ups: Vec<Vec<f32>> = (1..=4)
            .map(|k| vec![k as f32 * 10.0, 0.0, 0.0, 0.0])
            .collect();
        let views: Vec<_> = ups
            .iter()
            .map(|d| WeightedUpdate {
                examples: 1,
                delta: d,
            })
            .collect();
        agg.aggregate(&global, &views);
        let first = agg.server_dp().unwrap().clip_norm;
        agg.aggregate(&global, &views);
        let second = agg.server_dp().unwrap().clip_norm;
        assert_eq!(first, 1.0);
        assert!(
            second > first,
            "all norms exceed the bound, so it grows: {second}"
        );
    }

    #[test]
    fn refuses_bad_settings() {
        let mut s = section(false);
        s.noise_multiplier = 0.0;
        assert!(DpAggregator::new(Box::new(FedAvg), &s).is_err());
    }
}
