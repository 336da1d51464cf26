//! What every accountant speaks: the mechanism it composes ([`PoissonGaussian`]), the guarantee
//! it reports ([`EpsilonReport`]), which accountant it is ([`AccountantKind`]), and the
//! [`Accountant`] trait that the RDP ([`crate::rdp`]) and PLD ([`crate::pld`]) accountants both
//! implement; plus the one piece of numerics both need, `log_erfc`.
//!
//! The bottom of the accounting layers: it knows neither accountant. Choosing one by its kind,
//! and the conveniences over a history, live above both in [`crate::accountant`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::PrivacyError;

/// Which accountant computes epsilon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AccountantKind {
    /// Renyi DP over [`crate::rdp::default_orders`] with the CKS 2020 conversion; fractional
    /// orders by the exact series (the tightest valid RDP figure; monotone in every parameter).
    #[default]
    Rdp,
    /// The same, with fractional orders computed exactly as Google's `dp_accounting` 0.6 does
    /// (a looser upper bound; an order whose series does not settle within 1000 terms is
    /// dropped). Reproduces dp_accounting's published figures; not monotone in the sampling
    /// rate above about 0.6.
    #[serde(rename = "rdp-dp-accounting")]
    RdpDpAccounting,
    /// Privacy loss distributions ([`crate::pld`]): pessimistic discretisation at interval
    /// `1e-4`, composed by FFT, both add and remove directions; tighter than RDP, no order.
    Pld,
}

impl AccountantKind {
    /// The lowercase name used on the command line and in JSON (`"rdp"`, `"rdp-dp-accounting"`,
    /// `"pld"`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Rdp => "rdp",
            Self::RdpDpAccounting => "rdp-dp-accounting",
            Self::Pld => "pld",
        }
    }
}

impl fmt::Display for AccountantKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for AccountantKind {
    type Err = PrivacyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "rdp" => Ok(Self::Rdp),
            "rdp-dp-accounting" => Ok(Self::RdpDpAccounting),
            "pld" => Ok(Self::Pld),
            _ => Err(PrivacyError::UnknownAccountant { name: s.to_owned() }),
        }
    }
}

/// An `(epsilon, delta)` guarantee and how it was obtained.
///
/// Serialises as `{"epsilon":..,"delta":..,"order":..,"accountant":"rdp"}`; `"order"` is `null`
/// for the PLD accountant.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpsilonReport {
    /// Epsilon, rounded up.
    pub epsilon: f64,
    /// The delta it holds at.
    pub delta: f64,
    /// The Renyi order that attained epsilon (RDP accountants); `None` for PLD.
    pub order: Option<f64>,
    /// Which accountant produced it.
    pub accountant: AccountantKind,
}

/// One run of the Poisson-subsampled Gaussian mechanism: `steps` steps at sampling rate
/// `sampling_rate` with noise multiplier `noise_multiplier` (noise std / L2 sensitivity).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PoissonGaussian {
    /// Noise standard deviation divided by the L2 sensitivity (clipping norm).
    pub noise_multiplier: f64,
    /// Probability that each record takes part in a step; 1 for full batches.
    pub sampling_rate: f64,
    /// Number of steps.
    pub steps: u64,
}

impl PoissonGaussian {
    pub(crate) fn validate(&self) -> Result<(), PrivacyError> {
        let z = self.noise_multiplier;
        if !(z.is_finite() && z > 0.0) {
            return Err(PrivacyError::InvalidParameter {
                name: "noise_multiplier",
                value: z,
                reason: "must be finite and > 0",
            });
        }
        let q = self.sampling_rate;
        if !(0.0..=1.0).contains(&q) {
            return Err(PrivacyError::InvalidParameter {
                name: "sampling_rate",
                value: q,
                reason: "must lie in [0, 1]",
            });
        }
        Ok(())
    }
}

/// An accountant of the Poisson-subsampled Gaussian mechanism: runs go in, one `(epsilon,
/// delta)` guarantee of their composition comes out.
///
/// Implemented by [`crate::rdp::RdpAccountant`] and [`crate::pld::PldAccountant`];
/// [`crate::accountant::accountant_for`] builds either from its [`AccountantKind`].
///
/// ```
/// use fedledger_privacy::{Accountant, AccountantKind, accountant_for};
///
/// let mut acc = accountant_for(AccountantKind::Pld);
/// acc.compose_poisson_gaussian(1.1, 0.01, 100)?;
/// let report = acc.epsilon(1e-5)?;
/// assert_eq!(report.accountant, AccountantKind::Pld);
/// # Ok::<(), fedledger_privacy::PrivacyError>(())
/// ```
pub trait Accountant: fmt::Debug + Send {
    /// Which accountant this is (the one its reports name).
    fn kind(&self) -> AccountantKind;

    /// Composes one recorded run (runs may differ in every parameter); refuses a run whose
    /// parameters are out of range ([`PoissonGaussian`]'s fields say which).
    fn compose(&mut self, run: &PoissonGaussian) -> Result<(), PrivacyError>;

    /// The `(epsilon, delta)` guarantee of everything composed so far, for `0 < delta < 1`.
    fn epsilon(&self, delta: f64) -> Result<EpsilonReport, PrivacyError>;

    /// Composes `steps` steps of the Poisson-subsampled Gaussian mechanism; see
    /// [`Self::compose`].
    fn compose_poisson_gaussian(
        &mut self,
        noise_multiplier: f64,
        sampling_rate: f64,
        steps: u64,
    ) -> Result<(), PrivacyError> {
        self.compose(&PoissonGaussian {
            noise_multiplier,
            sampling_rate,
            steps,
        })
    }
}

/// Refuses a `delta` outside `(0, 1)`, as every [`Accountant::epsilon`] does first.
pub(crate) fn check_delta(delta: f64) -> Result<(), PrivacyError> {
    if !(delta > 0.0 && delta < 1.0) {
        return Err(PrivacyError::InvalidParameter {
            name: "delta",
            value: delta,
            reason: "must lie in (0, 1)",
        });
    }
    Ok(())
}

/// `log(erfc(x))`, accurate also far in the tail where `erfc` underflows.
pub(crate) fn log_erfc(x: f64) -> f64 {
    if x < 25.0 {
        return libm::erfc(x).ln();
    }
    // Asymptotic series at infinity (as dp_accounting's fallback):
    // erfc(x) ~ exp(-x^2) / (x sqrt(pi)) * exp(-1/(2x^2) + 5/(8x^4) - 37/(24x^6) + 353/(64x^8)).
    let x2 = x * x;
    let inv2 = 1.0 / x2;
    -0.5 * std::f64::consts::PI.ln() - x.ln() - x2 - 0.5 * inv2 + 0.625 * inv2 * inv2
        - 37.0 / 24.0 * inv2 * inv2 * inv2
        + 353.0 / 64.0 * inv2 * inv2 * inv2 * inv2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_erfc_is_continuous_across_the_switch() {
        let below = libm::erfc(24.999_999).ln();
        let above = log_erfc(25.000_001);
        assert!((below - above).abs() < 1e-3, "{below} {above}");
    }

    #[test]
    fn accountant_names_round_trip() {
        for kind in [
            AccountantKind::Rdp,
            AccountantKind::RdpDpAccounting,
            AccountantKind::Pld,
        ] {
            assert_eq!(kind.name().parse::<AccountantKind>(), Ok(kind));
        }
        assert!("pld2".parse::<AccountantKind>().is_err());
    }
}
