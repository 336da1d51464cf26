//! Monotonicity of the accountant's epsilon (issue 3 acceptance).
//!
//! Steps: exactly non-decreasing (composition multiplies the per-step RDP by the step count, and
//! rounding is monotone). Sampling rate and noise multiplier: the per-step RDP is a sum of floating
//! point terms whose rounding error is about 1e-15 relative, so the comparison allows a relative
//! 1e-9, far below any difference that matters and far below the accountant's safety margin.

use fedledger_privacy::{AccountantKind, epsilon_for};
use proptest::prelude::*;

const TOL: f64 = 1e-9;

fn eps(z: f64, q: f64, steps: u64) -> f64 {
    epsilon_for(AccountantKind::Rdp, z, q, steps, 1e-5)
        .unwrap()
        .epsilon
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn non_decreasing_in_steps(z in 0.5f64..5.0, q in 0.0001f64..1.0, t in 1u64..100_000, extra in 1u64..100_000) {
        prop_assert!(eps(z, q, t) <= eps(z, q, t + extra));
    }

    #[test]
    fn non_decreasing_in_sampling_rate(z in 0.5f64..5.0, q in 0.0001f64..0.99, f in 1.0001f64..100.0, t in 1u64..10_000) {
        let q2 = (q * f).min(1.0);
        let (a, b) = (eps(z, q, t), eps(z, q2, t));
        prop_assert!(a <= b * (1.0 + TOL), "q {q} -> {a}, q {q2} -> {b}");
    }

    #[test]
    fn decreasing_in_noise_multiplier(z in 0.5f64..5.0, f in 1.001f64..4.0, q in 0.0001f64..1.0, t in 1u64..10_000) {
        let (a, b) = (eps(z, q, t), eps(z * f, q, t));
        prop_assert!(b <= a * (1.0 + TOL), "z {z} -> {a}, z {} -> {b}", z * f);
        if a > 0.0 {
            prop_assert!(b < a);
        }
    }
}

/// The PLD accountant (few cases: each is an FFT composition in a debug build). Its figures are
/// exact compositions of a dominating discretisation, so monotone up to round-off; the
/// comparisons allow a relative `1e-6`. Against RDP: PLD is the tighter bound, allowed a
/// relative `1e-3` plus an absolute `1e-3` for its discretisation.
mod pld {
    use super::*;

    const PLD_TOL: f64 = 1e-6;

    fn pld(z: f64, q: f64, steps: u64) -> f64 {
        epsilon_for(AccountantKind::Pld, z, q, steps, 1e-5)
            .unwrap()
            .epsilon
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(6))]

        #[test]
        fn non_decreasing_in_steps(z in 1.0f64..4.0, q in 0.001f64..0.1, t in 1u64..200, extra in 1u64..200) {
            let (a, b) = (pld(z, q, t), pld(z, q, t + extra));
            prop_assert!(a <= b * (1.0 + PLD_TOL), "t {t} -> {a}, t {} -> {b}", t + extra);
        }

        #[test]
        fn non_decreasing_in_sampling_rate(z in 1.0f64..4.0, q in 0.001f64..0.05, f in 1.01f64..4.0, t in 1u64..200) {
            let q2 = q * f;
            let (a, b) = (pld(z, q, t), pld(z, q2, t));
            prop_assert!(a <= b * (1.0 + PLD_TOL), "q {q} -> {a}, q {q2} -> {b}");
        }

        #[test]
        fn decreasing_in_noise_multiplier(z in 1.0f64..3.0, f in 1.01f64..2.0, q in 0.001f64..0.1, t in 1u64..200) {
            let (a, b) = (pld(z, q, t), pld(z * f, q, t));
            prop_assert!(b <= a * (1.0 + PLD_TOL), "z {z} -> {a}, z {} -> {b}", z * f);
        }

        #[test]
        fn no_looser_than_rdp(z in 1.0f64..4.0, q in 0.001f64..0.3, t in 1u64..200) {
            let (p, r) = (pld(z, q, t), eps(z, q, t));
            prop_assert!(p <= r * (1.0 + 1e-3) + 1e-3, "pld {p} > rdp {r}");
        }
    }
}
