//! The privacy object: what one release of a hospital's data cost, as it signs it and as the
//! ledger records it. Integers only, so its canonical bytes (and their SHA-256, which the
//! hospital signs) are the same on every machine; rounded so that the recorded figures never
//! claim more privacy than was had.
//!
//! | field | unit | rounding |
//! | --- | --- | --- |
//! | `accountant` | `rdp`, `pld`, `rdp-dp-accounting`, or `none` (no DP) | |
//! | `noise_multiplier_micro` | 1e-6 | down (less noise recorded: epsilon recomputed higher) |
//! | `sampling_rate_nano` | 1e-9 | up, at most 1e9 |
//! | `steps` | DP-SGD steps of the release | |
//! | `delta_pico` | 1e-12 | nearest (epsilon is computed at the recorded delta) |
//! | `epsilon_micro` | cumulative epsilon in this federation after the release, 1e-6 | up |
//! | `epsilon_round_micro` | the release's increase of it, 1e-6 | up |
//!
//! The hospital rounds its raw figures with [`PrivacyObject::conservative`] *before* it accounts
//! for them, and computes both epsilons from the rounded figures ([`PrivacyObject::noise_multiplier`]
//! and friends give them back as `f64`), so that `verify` recomputes the same numbers from the
//! record.

use serde::{Deserialize, Serialize};

use super::Ctx;
use crate::error::LedgerError;

/// The accountant name of a release without DP noise.
pub const ACCOUNTANT_NONE: &str = "none";

/// Accountant names a privacy object may carry (`none` for a release without DP noise).
const ACCOUNTANTS: [&str; 4] = ["rdp", "pld", "rdp-dp-accounting", ACCOUNTANT_NONE];

/// One release's privacy cost (see the module docs for units and rounding).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyObject {
    /// `rdp`, `pld`, `rdp-dp-accounting`, or `none`.
    pub accountant: String,
    /// Delta, in units of 1e-12.
    pub delta_pico: u64,
    /// Cumulative epsilon in this federation after this release, in units of 1e-6, rounded up.
    pub epsilon_micro: u64,
    /// This release's increase of the cumulative epsilon, in units of 1e-6, rounded up.
    pub epsilon_round_micro: u64,
    /// Noise multiplier (noise standard deviation over the clipping norm, including the
    /// sampler's rounding charge), in units of 1e-6, rounded down.
    pub noise_multiplier_micro: u64,
    /// Poisson sampling rate of each step, in units of 1e-9, rounded up.
    pub sampling_rate_nano: u64,
    /// DP-SGD steps of the release.
    pub steps: u64,
}

fn micro_down(x: f64) -> u64 {
    if x.is_finite() && x > 0.0 {
        (x * 1e6).floor() as u64
    } else {
        0
    }
}

/// `ceil(x * 1e6)`, 0 for anything not positive (epsilons are never under-reported).
pub fn micro_up(x: f64) -> u64 {
    if x.is_finite() && x > 0.0 {
        (x * 1e6).ceil() as u64
    } else {
        0
    }
}

impl PrivacyObject {
    /// The object of a release without DP noise: it spends no accounted privacy.
    pub fn none() -> Self {
        Self {
            accountant: ACCOUNTANT_NONE.into(),
            delta_pico: 0,
            epsilon_micro: 0,
            epsilon_round_micro: 0,
            noise_multiplier_micro: 0,
            sampling_rate_nano: 0,
            steps: 0,
        }
    }

    /// Round raw mechanism parameters the safe way (noise down, sampling rate up, delta to the
    /// nearest pico-unit). The epsilons are left at 0: compute them from the rounded figures
    /// and set them with [`Self::with_epsilon`].
    pub fn conservative(
        accountant: &str,
        noise_multiplier: f64,
        sampling_rate: f64,
        steps: u64,
        delta: f64,
    ) -> Self {
        let q = if sampling_rate.is_finite() && sampling_rate > 0.0 {
            ((sampling_rate * 1e9).ceil() as u64).min(1_000_000_000)
        } else {
            0
        };
        let d = if delta.is_finite() && delta > 0.0 {
            (delta * 1e12).round() as u64
        } else {
            0
        };
        Self {
            accountant: accountant.to_owned(),
            delta_pico: d,
            epsilon_micro: 0,
            epsilon_round_micro: 0,
            noise_multiplier_micro: micro_down(noise_multiplier),
            sampling_rate_nano: q,
            steps,
        }
    }

    /// A sampling rate as [`Self::conservative`] records it (rounded up to the nano-unit).
    pub fn recorded_sampling_rate(sampling_rate: f64) -> f64 {
        Self::conservative("", 0.0, sampling_rate, 0, 0.0).sampling_rate()
    }

    /// A delta as [`Self::conservative`] records it (to the nearest pico-unit).
    pub fn recorded_delta(delta: f64) -> f64 {
        Self::conservative("", 0.0, 0.0, 0, delta).delta()
    }

    /// The object of figures that were already rounded by [`Self::conservative`] and turned
    /// back into `f64` by its accessors (a participant keeps them so): the mechanism's figures
    /// are taken to the nearest unit, which gives back exactly the integers they came from;
    /// the epsilons are rounded up.
    pub fn from_rounded(
        accountant: &str,
        noise_multiplier: f64,
        sampling_rate: f64,
        steps: u64,
        delta: f64,
        cumulative: f64,
        increase: f64,
    ) -> Self {
        let nearest = |x: f64, scale: f64| {
            if x.is_finite() && x > 0.0 {
                (x * scale).round() as u64
            } else {
                0
            }
        };
        Self {
            accountant: accountant.to_owned(),
            delta_pico: nearest(delta, 1e12),
            epsilon_micro: 0,
            epsilon_round_micro: 0,
            noise_multiplier_micro: nearest(noise_multiplier, 1e6),
            sampling_rate_nano: nearest(sampling_rate, 1e9),
            steps,
        }
        .with_epsilon(cumulative, increase)
    }

    /// The same object with its cumulative epsilon in this federation and the release's
    /// increase, both rounded up.
    pub fn with_epsilon(mut self, cumulative: f64, increase: f64) -> Self {
        self.epsilon_micro = micro_up(cumulative);
        self.epsilon_round_micro = micro_up(increase);
        self
    }

    /// The recorded noise multiplier.
    pub fn noise_multiplier(&self) -> f64 {
        self.noise_multiplier_micro as f64 / 1e6
    }

    /// The recorded sampling rate.
    pub fn sampling_rate(&self) -> f64 {
        self.sampling_rate_nano as f64 / 1e9
    }

    /// The recorded delta.
    pub fn delta(&self) -> f64 {
        self.delta_pico as f64 / 1e12
    }

    /// The recorded cumulative epsilon in this federation.
    pub fn epsilon(&self) -> f64 {
        self.epsilon_micro as f64 / 1e6
    }

    /// True for a release that spent accounted privacy (DP noise, at least one step).
    pub fn is_private(&self) -> bool {
        self.accountant != ACCOUNTANT_NONE && self.steps > 0
    }

    /// The canonical JSON bytes: what the ledger records and what the hospital's signature
    /// covers (through their SHA-256).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        super::encode_canonical(self).expect("a privacy object has only strings and integers")
    }

    /// SHA-256 of [`Self::canonical_bytes`], lowercase hex: the `<privacy_sha256>` of the update
    /// signing message.
    pub fn sha256_hex(&self) -> String {
        hex::encode(ring::digest::digest(&ring::digest::SHA256, &self.canonical_bytes()).as_ref())
    }

    /// Check the ranges: a known accountant; `none` carries only zeros; a private release has a
    /// positive noise multiplier, sampling rate and delta below 1; the round's epsilon is at
    /// most the cumulative one.
    pub fn validate(&self) -> Result<(), String> {
        if !ACCOUNTANTS.contains(&self.accountant.as_str()) {
            return Err(format!(
                "accountant {:?} is not one of {}",
                self.accountant,
                ACCOUNTANTS.join(", ")
            ));
        }
        if self.accountant == ACCOUNTANT_NONE {
            if *self != Self::none() {
                return Err("a release without DP (accountant none) records only zeros".into());
            }
            return Ok(());
        }
        if self.steps > 0 && self.noise_multiplier_micro == 0 {
            return Err("a private release needs a positive noise multiplier".into());
        }
        if self.sampling_rate_nano > 1_000_000_000 {
            return Err(format!(
                "sampling_rate_nano {} exceeds 1e9 (a rate above 1)",
                self.sampling_rate_nano
            ));
        }
        if self.delta_pico == 0 || self.delta_pico >= 1_000_000_000_000 {
            return Err(format!(
                "delta_pico {} is not in (0, 1e12)",
                self.delta_pico
            ));
        }
        if self.epsilon_round_micro > self.epsilon_micro {
            return Err(format!(
                "epsilon_round_micro {} exceeds epsilon_micro {}",
                self.epsilon_round_micro, self.epsilon_micro
            ));
        }
        Ok(())
    }

    pub(super) fn check(&self, cx: &Ctx, field: &str) -> Result<(), LedgerError> {
        self.validate().map_err(|r| cx.err(field, r))
    }
}

/// Participant-level DP applied by the coordinator in a round (DP-FedAvg), as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerDpRecord {
    /// The clipping bound of the round, a decimal string.
    pub clip_norm: String,
    /// Delta of the federation-level epsilon, in units of 1e-12.
    pub delta_pico: u64,
    /// The federation-level epsilon after this round, in units of 1e-6, rounded up.
    pub epsilon_micro: u64,
    /// The round's effective noise multiplier, in units of 1e-6, rounded down.
    pub noise_multiplier_micro: u64,
}

impl ServerDpRecord {
    /// The record of a round's DP-FedAvg report.
    pub fn new(clip_norm: &str, noise_multiplier: f64, epsilon: f64, delta: f64) -> Self {
        Self {
            clip_norm: clip_norm.to_owned(),
            delta_pico: (delta * 1e12).round() as u64,
            epsilon_micro: micro_up(epsilon),
            noise_multiplier_micro: micro_down(noise_multiplier),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conservative_rounding_never_claims_more_privacy() {
        let p = PrivacyObject::conservative("rdp", 1.099_999_999_7, 0.012_345_678_91, 40, 1e-5);
        assert_eq!(p.noise_multiplier_micro, 1_099_999);
        assert!(p.noise_multiplier() <= 1.099_999_999_7);
        assert_eq!(p.sampling_rate_nano, 12_345_679);
        assert!(p.sampling_rate() >= 0.012_345_678_91);
        assert_eq!(p.delta_pico, 10_000_000);
        assert_eq!(p.delta(), 1e-5);
        let p = p.with_epsilon(1.234_567_1, 0.5);
        assert_eq!(
            (p.epsilon_micro, p.epsilon_round_micro),
            (1_234_568, 500_000)
        );
        assert!(p.validate().is_ok());
    }

    proptest::proptest! {
        #[test]
        fn rounded_figures_come_back_to_the_same_object(
            z in 0.01f64..50.0,
            q in 1e-7f64..1.0,
            steps in 1u64..100_000,
            delta_exp in -12i32..-1,
            eps in 0.0f64..100.0,
        ) {
            let delta = 10f64.powi(delta_exp);
            let p = PrivacyObject::conservative("rdp", z, q, steps, delta);
            proptest::prop_assert!(p.noise_multiplier() <= z);
            proptest::prop_assert!(p.sampling_rate() >= q);
            let back = PrivacyObject::from_rounded(
                "rdp",
                p.noise_multiplier(),
                p.sampling_rate(),
                steps,
                p.delta(),
                eps,
                eps,
            );
            proptest::prop_assert_eq!(back, p.with_epsilon(eps, eps));
        }
    }

    #[test]
    fn canonical_bytes_and_digest_are_fixed() {
        let p = PrivacyObject::conservative("pld", 1.1, 0.05, 40, 1e-5).with_epsilon(2.0, 0.25);
        assert_eq!(
            String::from_utf8(p.canonical_bytes()).unwrap(),
            "{\"accountant\":\"pld\",\"delta_pico\":10000000,\"epsilon_micro\":2000000,\
             \"epsilon_round_micro\":250000,\"noise_multiplier_micro\":1100000,\
             \"sampling_rate_nano\":50000000,\"steps\":40}"
        );
        assert_eq!(p.sha256_hex().len(), 64);
        assert_ne!(p.sha256_hex(), PrivacyObject::none().sha256_hex());
    }

    #[test]
    fn validation_names_what_is_out_of_range() {
        let ok = PrivacyObject::conservative("rdp", 1.0, 0.1, 10, 1e-5).with_epsilon(1.0, 1.0);
        assert!(ok.validate().is_ok());
        assert!(PrivacyObject::none().validate().is_ok());
        type Change = fn(&mut PrivacyObject);
        let cases: [(Change, &str); 6] = [
            (|p| p.accountant = "gdp".into(), "accountant"),
            (|p| p.noise_multiplier_micro = 0, "noise multiplier"),
            (
                |p| p.sampling_rate_nano = 2_000_000_000,
                "sampling_rate_nano",
            ),
            (|p| p.delta_pico = 0, "delta_pico"),
            (|p| p.epsilon_round_micro = 2_000_000, "epsilon_round_micro"),
            (|p| p.epsilon_micro = 0, "epsilon_round_micro"),
        ];
        for (change, what) in cases {
            let mut p = ok.clone();
            change(&mut p);
            let e = p.validate().unwrap_err();
            assert!(e.contains(what), "{what}: {e}");
        }
        let mut p = PrivacyObject::none();
        p.steps = 3;
        assert!(p.validate().unwrap_err().contains("only zeros"));
    }
}
