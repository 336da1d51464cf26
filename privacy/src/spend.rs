//! A privacy spend: what one DP-SGD release cost, as the participant accounts it, persists,
//! reports with its update and the coordinator records. One type for every crate that handles
//! it; the wire message and the ledger record are built from it at the edges.

use serde::{Deserialize, Serialize};

use crate::accounting::{AccountantKind, PoissonGaussian};
use crate::error::PrivacyError;

/// The cost of one update: the DP-SGD run that produced it and the cumulative epsilon after it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrivacySpend {
    /// Effective noise multiplier accounted for (after the sampler's grid-rounding charge).
    pub noise_multiplier: f64,
    /// Poisson sampling rate of each step.
    pub sampling_rate: f64,
    /// DP-SGD steps of the run.
    pub steps: u64,
    /// The delta epsilon is stated at.
    pub delta: f64,
    /// Cumulative epsilon after this release.
    pub epsilon_total: f64,
    /// Increase of the cumulative epsilon caused by this release.
    #[serde(default)]
    pub epsilon_round: f64,
    /// The accountant that computed both epsilons.
    pub accountant: AccountantKind,
}

impl PrivacySpend {
    /// The mechanism run this spend accounts for.
    pub fn run(&self) -> PoissonGaussian {
        PoissonGaussian {
            noise_multiplier: self.noise_multiplier,
            sampling_rate: self.sampling_rate,
            steps: self.steps,
        }
    }

    /// Check that every figure is in range: finite, non-negative epsilons with the round's at
    /// most the total, delta in `[0, 1)`, sampling rate in `[0, 1]`, a positive noise multiplier
    /// when steps were taken. The coordinator refuses an update whose report fails this.
    pub fn validate(&self) -> Result<(), PrivacyError> {
        let bad = |name, value, reason| {
            Err(PrivacyError::InvalidParameter {
                name,
                value,
                reason,
            })
        };
        for (name, v) in [
            ("epsilon_total", self.epsilon_total),
            ("epsilon_round", self.epsilon_round),
            ("noise_multiplier", self.noise_multiplier),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(name, v, "must be finite and >= 0");
            }
        }
        if self.epsilon_round > self.epsilon_total + 1e-9 {
            return bad("epsilon_round", self.epsilon_round, "exceeds epsilon_total");
        }
        if !(self.delta.is_finite() && (0.0..1.0).contains(&self.delta)) {
            return bad("delta", self.delta, "must be in [0, 1)");
        }
        if !(self.sampling_rate.is_finite() && (0.0..=1.0).contains(&self.sampling_rate)) {
            return bad("sampling_rate", self.sampling_rate, "must be in [0, 1]");
        }
        if self.steps > 0 && self.noise_multiplier <= 0.0 {
            return bad(
                "noise_multiplier",
                self.noise_multiplier,
                "must be > 0 when steps were taken",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spend() -> PrivacySpend {
        PrivacySpend {
            noise_multiplier: 1.1,
            sampling_rate: 0.05,
            steps: 40,
            delta: 1e-5,
            epsilon_total: 2.0,
            epsilon_round: 0.5,
            accountant: AccountantKind::Pld,
        }
    }

    /// A change that breaks one field, and that field's name.
    type Breakage = (fn(&mut PrivacySpend), &'static str);

    #[test]
    fn validate_names_the_field() {
        assert!(spend().validate().is_ok());
        let cases: [Breakage; 6] = [
            (|s| s.epsilon_total = f64::NAN, "epsilon_total"),
            (|s| s.epsilon_round = 3.0, "epsilon_round"),
            (|s| s.delta = 1.0, "delta"),
            (|s| s.sampling_rate = 1.5, "sampling_rate"),
            (|s| s.noise_multiplier = 0.0, "noise_multiplier"),
            (|s| s.noise_multiplier = f64::INFINITY, "noise_multiplier"),
        ];
        for (change, field) in cases {
            let mut s = spend();
            change(&mut s);
            match s.validate() {
                Err(PrivacyError::InvalidParameter { name, .. }) => assert_eq!(name, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn serialises_the_accountant_by_name() {
        let json = serde_json::to_string(&spend()).unwrap();
        assert!(json.contains("\"accountant\":\"pld\""), "{json}");
        let back: PrivacySpend = serde_json::from_str(&json).unwrap();
        assert_eq!(back, spend());
    }
}
