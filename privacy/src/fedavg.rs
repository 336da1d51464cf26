//! Participant-level differential privacy for the coordinator's DP-FedAvg wrapper.
//!
//! DP-FedAvg (McMahan et al. 2018) protects whole participants: each update is clipped to L2 norm
//! `C` ([`crate::clip_l2`]), the clipped updates are summed, and Gaussian noise of standard
//! deviation `z * C` is added to the sum ([`add_aggregate_noise`]) before averaging. With every
//! hospital in every round this is the Gaussian mechanism composed over rounds (sampling rate 1;
//! zCDP `rho = rounds / (2 z^2)`), accounted by [`dp_fedavg_epsilon`]; with a random subset per
//! round pass the participation rate as the sampling rate.
//!
//! Adaptive clipping (Andrew, Thakkar, McMahan, Ramaswamy 2021, "Differentially Private Learning
//! with Adaptive Clipping") replaces the fixed `C` by a private estimate of a quantile of the
//! update norms: each round, every participant reports whether its norm was at most `C`; the
//! coordinator adds Gaussian noise of standard deviation `sigma_b` to the count (sensitivity 1/2
//! in the centred form `sum(b_i - 1/2)`), and moves `C` geometrically,
//! `C <- C * exp(-eta * (b_hat - gamma))`, towards the target quantile `gamma`
//! ([`AdaptiveClip`]). The count and the sum are released together; to keep a total noise
//! multiplier `z`, the sum's noise multiplier is `z_sum = (z^-2 - (2 sigma_b)^-2)^(-1/2)`
//! ([`AdaptiveClip::sum_noise_multiplier`]) and the accountant is given `z`.

use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};

use crate::accountant::{AccountantKind, EpsilonReport, epsilon_for};
use crate::error::PrivacyError;
use crate::noise::SecureGaussian;

/// Adds exact Gaussian noise of standard deviation `noise_multiplier * clip_norm` to the sum of
/// clipped updates, in place. Returns the noise multiplier to account for, i.e. the effective one
/// after the grid-rounding charge ([`SecureGaussian::effective_noise_multiplier`]).
pub fn add_aggregate_noise<R: CryptoRng + ?Sized>(
    clipped_sum: &mut [f32],
    noise_multiplier: f64,
    clip_norm: f64,
    rng: &mut R,
) -> Result<f64, PrivacyError> {
    if !(clip_norm.is_finite() && clip_norm > 0.0) {
        return Err(PrivacyError::InvalidParameter {
            name: "clip_norm",
            value: clip_norm,
            reason: "must be finite and > 0",
        });
    }
    let noise = SecureGaussian::new(noise_multiplier * clip_norm, None)?;
    noise.add_noise_f32(clipped_sum, rng)?;
    Ok(noise.effective_noise_multiplier(clip_norm, clipped_sum.len()))
}

/// zCDP of `rounds` releases of the Gaussian mechanism with noise multiplier `z`:
/// `rho = rounds / (2 z^2)`.
pub fn zcdp_rho(noise_multiplier: f64, rounds: u64) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let r = rounds as f64;
    r / (2.0 * noise_multiplier * noise_multiplier)
}

/// `(epsilon, delta)` of DP-FedAvg after `rounds` rounds: the Gaussian mechanism with
/// `noise_multiplier`, each participant taking part with probability `participation_rate`
/// (1 when all take part in every round), accounted by RDP.
pub fn dp_fedavg_epsilon(
    noise_multiplier: f64,
    participation_rate: f64,
    rounds: u64,
    delta: f64,
) -> Result<EpsilonReport, PrivacyError> {
    epsilon_for(
        AccountantKind::Rdp,
        noise_multiplier,
        participation_rate,
        rounds,
        delta,
    )
}

/// Private quantile-based clipping bound (Andrew et al. 2021).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdaptiveClip {
    clip_norm: f64,
    target_quantile: f64,
    learning_rate: f64,
    count_noise_std: f64,
}

/// What one [`AdaptiveClip::update`] did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdaptiveClipStep {
    /// The bound the round's updates were clipped to.
    pub previous_clip_norm: f64,
    /// The noisy fraction of updates whose norm was at most that bound.
    pub unclipped_fraction: f64,
    /// The bound for the next round.
    pub next_clip_norm: f64,
}

impl AdaptiveClip {
    /// Starts at `initial_clip_norm`, targets the `target_quantile` of update norms, moves with
    /// `learning_rate` (Andrew et al. use 0.2), and adds noise `count_noise_std` (`sigma_b`; they
    /// suggest about `participants / 20`) to the count. `count_noise_std = 0` is non-private.
    pub fn new(
        initial_clip_norm: f64,
        target_quantile: f64,
        learning_rate: f64,
        count_noise_std: f64,
    ) -> Result<Self, PrivacyError> {
        let check = |name, value: f64, ok: bool, reason| {
            if ok {
                Ok(())
            } else {
                Err(PrivacyError::InvalidParameter {
                    name,
                    value,
                    reason,
                })
            }
        };
        check(
            "initial_clip_norm",
            initial_clip_norm,
            initial_clip_norm.is_finite() && initial_clip_norm > 0.0,
            "must be finite and > 0",
        )?;
        check(
            "target_quantile",
            target_quantile,
            (0.0..=1.0).contains(&target_quantile),
            "must lie in [0, 1]",
        )?;
        check(
            "learning_rate",
            learning_rate,
            learning_rate.is_finite() && learning_rate >= 0.0,
            "must be finite and >= 0",
        )?;
        check(
            "count_noise_std",
            count_noise_std,
            count_noise_std.is_finite() && count_noise_std >= 0.0,
            "must be finite and >= 0",
        )?;
        Ok(Self {
            clip_norm: initial_clip_norm,
            target_quantile,
            learning_rate,
            count_noise_std,
        })
    }

    /// The bound to clip this round's updates to.
    pub fn clip_norm(&self) -> f64 {
        self.clip_norm
    }

    /// Noise multiplier for the sum when the count and the sum together must have total noise
    /// multiplier `total`: `(total^-2 - (2 sigma_b)^-2)^(-1/2)`, rounded up. Requires
    /// `2 sigma_b > total`.
    pub fn sum_noise_multiplier(&self, total: f64) -> Result<f64, PrivacyError> {
        let two_sb = 2.0 * self.count_noise_std;
        if !(total.is_finite() && total > 0.0 && two_sb > total) {
            return Err(PrivacyError::InvalidParameter {
                name: "total_noise_multiplier",
                value: total,
                reason: "must be finite, > 0 and below twice the count noise std",
            });
        }
        let inv = total.powi(-2) - two_sb.powi(-2);
        Ok((1.0 / inv.sqrt()).next_up())
    }

    /// Records this round's update norms (measured before clipping, against
    /// [`Self::clip_norm`]) and moves the bound. The number of updates is treated as public, as
    /// in the paper.
    pub fn update<R: CryptoRng + ?Sized>(
        &mut self,
        update_norms: &[f64],
        rng: &mut R,
    ) -> Result<AdaptiveClipStep, PrivacyError> {
        let previous = self.clip_norm;
        if update_norms.is_empty() {
            return Ok(AdaptiveClipStep {
                previous_clip_norm: previous,
                unclipped_fraction: self.target_quantile,
                next_clip_norm: previous,
            });
        }
        #[allow(clippy::cast_precision_loss)]
        let m = update_norms.len() as f64;
        // Centred count sum(b_i - 1/2): sensitivity 1/2 when one participant is added or removed.
        // A NaN norm counts as clipped.
        #[allow(clippy::cast_precision_loss)]
        let unclipped = update_norms.iter().filter(|&&n| n <= previous).count() as f64;
        let mut centred = [unclipped - m / 2.0];
        if self.count_noise_std > 0.0 {
            // The centred count is a multiple of 1/2, on the grid whenever k <= -1, which the
            // default grid gives for any sigma_b below 2^28: no rounding charge.
            SecureGaussian::new(self.count_noise_std, None)?.add_noise_f64(&mut centred, rng)?;
        }
        let fraction = (centred[0] + m / 2.0) / m;
        let next = previous * (-self.learning_rate * (fraction - self.target_quantile)).exp();
        if next.is_finite() && next > 0.0 {
            self.clip_norm = next;
        }
        Ok(AdaptiveClipStep {
            previous_clip_norm: previous,
            unclipped_fraction: fraction,
            next_clip_norm: self.clip_norm,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn adaptive_clip_converges_to_the_target_quantile() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        // Norms 1..=100: the median is about 50.
        let norms: Vec<f64> = (1..=100).map(f64::from).collect();
        let mut clip = AdaptiveClip::new(5.0, 0.5, 0.2, 100.0 / 20.0).unwrap();
        for _ in 0..200 {
            clip.update(&norms, &mut rng).unwrap();
        }
        assert!(
            (35.0..65.0).contains(&clip.clip_norm()),
            "{}",
            clip.clip_norm()
        );
    }

    #[test]
    fn noiseless_update_is_the_paper_formula() {
        let mut clip = AdaptiveClip::new(2.0, 0.5, 0.2, 0.0).unwrap();
        let step = clip
            .update(&[1.0, 1.5, 3.0, 4.0], &mut ChaCha20Rng::seed_from_u64(0))
            .unwrap();
        assert_eq!(step.unclipped_fraction, 0.5);
        assert_eq!(step.next_clip_norm, 2.0);
        let step = clip
            .update(&[1.0, 1.5, 1.8, 4.0], &mut ChaCha20Rng::seed_from_u64(0))
            .unwrap();
        assert_eq!(step.next_clip_norm, 2.0 * (-0.2f64 * 0.25).exp());
    }

    #[test]
    fn sum_noise_multiplier_keeps_the_total() {
        let clip = AdaptiveClip::new(1.0, 0.5, 0.2, 5.0).unwrap();
        let z_sum = clip.sum_noise_multiplier(1.0).unwrap();
        let total = (z_sum.powi(-2) + 10.0f64.powi(-2)).powf(-0.5);
        assert!(total >= 1.0 - 1e-12 && z_sum > 1.0);
        assert!(clip.sum_noise_multiplier(20.0).is_err());
    }

    #[test]
    fn fedavg_accounting_is_the_plain_gaussian() {
        let eps = dp_fedavg_epsilon(1.0, 1.0, 10, 1e-5).unwrap();
        // rho = 5; the CKS conversion at the best order is below rho + 2 sqrt(rho log(1/delta)).
        let rho = zcdp_rho(1.0, 10);
        assert_eq!(rho, 5.0);
        assert!(eps.epsilon < rho + 2.0 * (rho * 1e5f64.ln()).sqrt());
        assert!(eps.epsilon > rho);
    }

    #[test]
    fn aggregate_noise_reports_the_effective_multiplier() {
        let mut sum = vec![0.0f32; 1000];
        let z =
            add_aggregate_noise(&mut sum, 1.5, 2.0, &mut ChaCha20Rng::seed_from_u64(9)).unwrap();
        assert!(z <= 1.5 && z > 1.5 * (1.0 - 1e-6));
        let var = sum.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / 1000.0;
        assert!((var.sqrt() - 3.0).abs() < 0.3, "{}", var.sqrt());
    }
}
