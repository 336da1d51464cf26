//! Either accountant, chosen by its kind: [`accountant_for`] builds the [`Accountant`] an
//! [`AccountantKind`] names, and the conveniences every caller uses take a kind: the epsilon of
//! one run ([`epsilon_for`]) or of a history of runs ([`epsilon_of_history`]), and the inverse
//! planner ([`noise_multiplier_for`], built on [`smallest_noise_multiplier`], which planners of
//! other shapes, such as a participant's per-round plan after a history, use too).
//!
//! The top of the accounting layers: it sits above [`crate::rdp`] and [`crate::pld`], which know
//! only the shared vocabulary of [`crate::accounting`] (re-exported here, so that
//! `accountant::{AccountantKind, EpsilonReport, PoissonGaussian}` name it as before).

pub use crate::accounting::{Accountant, AccountantKind, EpsilonReport, PoissonGaussian};
use crate::error::PrivacyError;
pub use crate::pld::PldAccountant;
pub use crate::rdp::RdpAccountant;

/// A fresh accountant (nothing spent) of the kind `kind` names: the [`PldAccountant`] for
/// [`AccountantKind::Pld`], else the [`RdpAccountant`] computing its curve as `kind` says.
pub fn accountant_for(kind: AccountantKind) -> Box<dyn Accountant> {
    match kind {
        AccountantKind::Pld => Box::new(PldAccountant::new()),
        AccountantKind::Rdp | AccountantKind::RdpDpAccounting => {
            Box::new(RdpAccountant::of_kind(kind))
        }
    }
}

/// Epsilon of `steps` steps of the Poisson-subsampled Gaussian mechanism at `delta`.
pub fn epsilon_for(
    accountant: AccountantKind,
    noise_multiplier: f64,
    sampling_rate: f64,
    steps: u64,
    delta: f64,
) -> Result<EpsilonReport, PrivacyError> {
    epsilon_of_history(
        accountant,
        &[PoissonGaussian {
            noise_multiplier,
            sampling_rate,
            steps,
        }],
        delta,
    )
}

/// Epsilon of a sequence of runs composed together, at `delta`, by the accountant `accountant`
/// names ([`accountant_for`]).
pub fn epsilon_of_history(
    accountant: AccountantKind,
    history: &[PoissonGaussian],
    delta: f64,
) -> Result<EpsilonReport, PrivacyError> {
    let mut acc = accountant_for(accountant);
    for run in history {
        acc.compose(run)?;
    }
    acc.epsilon(delta)
}

/// Relative tolerance of [`noise_multiplier_for`]: the answer is within this factor of the
/// smallest noise multiplier that meets the target.
pub const PLANNER_TOLERANCE: f64 = 1e-6;

/// Largest noise multiplier the planner tries before giving up.
pub const PLANNER_MAX_NOISE_MULTIPLIER: f64 = 1e6;

/// The smallest noise multiplier (within a relative [`PLANNER_TOLERANCE`], rounded up) whose
/// epsilon after `steps` steps at `sampling_rate` and `delta` is at most `target_epsilon`.
///
/// Bisection on the noise multiplier; the value returned is always one whose epsilon was computed
/// and found to meet the target, so it never under-delivers.
pub fn noise_multiplier_for(
    target_epsilon: f64,
    sampling_rate: f64,
    steps: u64,
    delta: f64,
    accountant: AccountantKind,
) -> Result<f64, PrivacyError> {
    smallest_noise_multiplier(target_epsilon, PLANNER_TOLERANCE, |z| {
        Ok(epsilon_for(accountant, z, sampling_rate, steps, delta)?.epsilon <= target_epsilon)
    })
}

/// The smallest noise multiplier (within a relative `tolerance`, rounded up) that `meets`
/// accepts, for any test that accepts every multiplier above one it accepts (more noise never
/// costs more epsilon): doubling from 1 until it is met, halving until it is not (answering the
/// last one met once below 1e-6), then bisection. The value returned is always one `meets`
/// accepted, so a planner built on it never under-delivers; `target_epsilon` only names the goal
/// in [`PrivacyError::TargetUnreachable`] when nothing up to [`PLANNER_MAX_NOISE_MULTIPLIER`]
/// meets it.
pub fn smallest_noise_multiplier(
    target_epsilon: f64,
    tolerance: f64,
    mut meets: impl FnMut(f64) -> Result<bool, PrivacyError>,
) -> Result<f64, PrivacyError> {
    if !(target_epsilon.is_finite() && target_epsilon > 0.0) {
        return Err(PrivacyError::InvalidParameter {
            name: "target_epsilon",
            value: target_epsilon,
            reason: "must be finite and > 0",
        });
    }
    if !(tolerance.is_finite() && tolerance > 0.0) {
        return Err(PrivacyError::InvalidParameter {
            name: "tolerance",
            value: tolerance,
            reason: "must be finite and > 0",
        });
    }
    let mut hi = 1.0;
    while !meets(hi)? {
        hi *= 2.0;
        if hi > PLANNER_MAX_NOISE_MULTIPLIER {
            return Err(PrivacyError::TargetUnreachable {
                target_epsilon,
                max_noise_multiplier: PLANNER_MAX_NOISE_MULTIPLIER,
            });
        }
    }
    let mut lo = hi / 2.0;
    while meets(lo)? {
        hi = lo;
        lo /= 2.0;
        if lo < 1e-6 {
            return Ok(hi);
        }
    }
    // Invariant: lo fails, hi meets.
    while hi - lo > tolerance * hi {
        let mid = 0.5 * (lo + hi);
        if meets(mid)? {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_builds_its_own_accountant() {
        for kind in [
            AccountantKind::Rdp,
            AccountantKind::RdpDpAccounting,
            AccountantKind::Pld,
        ] {
            let mut acc = accountant_for(kind);
            assert_eq!(acc.kind(), kind);
            acc.compose_poisson_gaussian(1.1, 0.01, 100).unwrap();
            let report = acc.epsilon(1e-5).unwrap();
            assert_eq!(report.accountant, kind);
            assert_eq!(report.order.is_none(), kind == AccountantKind::Pld);
            // The conveniences are the same computation.
            assert_eq!(Ok(report), epsilon_for(kind, 1.1, 0.01, 100, 1e-5));
        }
    }

    #[test]
    fn planner_meets_the_target_and_is_nearly_tight() {
        let z = noise_multiplier_for(2.0, 0.01, 1000, 1e-5, AccountantKind::Rdp).unwrap();
        let at = epsilon_for(AccountantKind::Rdp, z, 0.01, 1000, 1e-5)
            .unwrap()
            .epsilon;
        assert!(at <= 2.0);
        let below = epsilon_for(AccountantKind::Rdp, z * (1.0 - 1e-4), 0.01, 1000, 1e-5)
            .unwrap()
            .epsilon;
        assert!(below > 2.0, "{below}");
    }
}
