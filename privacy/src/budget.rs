//! Hard privacy budgets: what the next round would cost, and whether it still fits.
//!
//! RDP epsilons do not add up: the epsilon of two runs composed is less than the sum of their
//! epsilons. So a round's cost is the increase of the cumulative epsilon, recomputed from the
//! whole history of runs with the next one appended ([`Budget::round_cost`]).

use serde::{Deserialize, Serialize};

use crate::accountant::{AccountantKind, PoissonGaussian, epsilon_of_history};
use crate::error::PrivacyError;

/// A participant's budget: the cumulative epsilon may never exceed `epsilon_limit` at `delta`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    /// Largest cumulative epsilon allowed.
    pub epsilon_limit: f64,
    /// The delta every epsilon is computed at.
    pub delta: f64,
    /// The accountant that computes epsilons.
    pub accountant: AccountantKind,
}

/// What one more round costs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RoundCost {
    /// Cumulative epsilon before the round.
    pub epsilon_before: f64,
    /// Cumulative epsilon after the round.
    pub epsilon_after: f64,
    /// `epsilon_after - epsilon_before` (never negative): this round's epsilon.
    pub increase: f64,
    /// The Renyi order that attained `epsilon_after` (`None` for the PLD accountant).
    pub order: Option<f64>,
    /// The delta of both epsilons.
    pub delta: f64,
    /// The accountant that computed them.
    pub accountant: AccountantKind,
}

impl Budget {
    /// A budget of `epsilon_limit` (finite, `> 0`) at `delta` (in `(0, 1)`), RDP accounting.
    pub fn new(epsilon_limit: f64, delta: f64) -> Result<Self, PrivacyError> {
        if !(epsilon_limit.is_finite() && epsilon_limit > 0.0) {
            return Err(PrivacyError::InvalidParameter {
                name: "epsilon_limit",
                value: epsilon_limit,
                reason: "must be finite and > 0",
            });
        }
        if !(delta > 0.0 && delta < 1.0) {
            return Err(PrivacyError::InvalidParameter {
                name: "delta",
                value: delta,
                reason: "must lie in (0, 1)",
            });
        }
        Ok(Self {
            epsilon_limit,
            delta,
            accountant: AccountantKind::Rdp,
        })
    }

    /// Accepts a round that takes the cumulative epsilon from `spent_before` to `spent_after`
    /// iff `spent_after <= epsilon_limit` (a NaN is refused).
    pub fn check(&self, spent_before: f64, spent_after: f64) -> Result<(), PrivacyError> {
        if spent_after <= self.epsilon_limit {
            Ok(())
        } else {
            Err(PrivacyError::BudgetExhausted {
                spent: spent_before,
                limit: self.epsilon_limit,
                requested: spent_after - spent_before,
            })
        }
    }

    /// Epsilon left after `spent` (never negative).
    pub fn remaining(&self, spent: f64) -> f64 {
        (self.epsilon_limit - spent).max(0.0)
    }

    /// Cumulative epsilon of `history` alone.
    pub fn spent(&self, history: &[PoissonGaussian]) -> Result<f64, PrivacyError> {
        Ok(epsilon_of_history(self.accountant, history, self.delta)?.epsilon)
    }

    /// The cost of running `next` after `history`: cumulative epsilon before and after, and the
    /// increase.
    pub fn round_cost(
        &self,
        history: &[PoissonGaussian],
        next: &PoissonGaussian,
    ) -> Result<RoundCost, PrivacyError> {
        let before = epsilon_of_history(self.accountant, history, self.delta)?;
        let mut all = history.to_vec();
        all.push(*next);
        let after = epsilon_of_history(self.accountant, &all, self.delta)?;
        Ok(RoundCost {
            epsilon_before: before.epsilon,
            epsilon_after: after.epsilon,
            increase: (after.epsilon - before.epsilon).max(0.0),
            order: after.order,
            delta: self.delta,
            accountant: self.accountant,
        })
    }

    /// [`Self::round_cost`], refused with [`PrivacyError::BudgetExhausted`] if it would exceed
    /// the limit.
    pub fn admit(
        &self,
        history: &[PoissonGaussian],
        next: &PoissonGaussian,
    ) -> Result<RoundCost, PrivacyError> {
        let cost = self.round_cost(history, next)?;
        self.check(cost.epsilon_before, cost.epsilon_after)?;
        Ok(cost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(z: f64, q: f64, steps: u64) -> PoissonGaussian {
        PoissonGaussian {
            noise_multiplier: z,
            sampling_rate: q,
            steps,
        }
    }

    #[test]
    fn round_cost_is_the_increase_of_the_cumulative() {
        let b = Budget::new(8.0, 1e-5).unwrap();
        let history = [run(1.0, 0.01, 500), run(1.2, 0.02, 300)];
        let cost = b.round_cost(&history, &run(1.1, 0.01, 400)).unwrap();
        assert_eq!(cost.epsilon_before, b.spent(&history).unwrap());
        assert_eq!(cost.increase, cost.epsilon_after - cost.epsilon_before);
        // Sub-additive: less than the round's stand-alone epsilon.
        let alone = b.spent(&[run(1.1, 0.01, 400)]).unwrap();
        assert!(cost.increase < alone);
    }

    #[test]
    fn exhausted_budget_names_spent_limit_and_request() {
        let b = Budget::new(1.0, 1e-5).unwrap();
        let err = b.admit(&[], &run(0.8, 0.1, 1000)).unwrap_err();
        match err {
            PrivacyError::BudgetExhausted {
                spent,
                limit,
                requested,
            } => {
                assert_eq!(spent, 0.0);
                assert_eq!(limit, 1.0);
                assert!(requested > 1.0);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(b.check(0.5, f64::NAN).is_err());
        assert_eq!(b.remaining(1.5), 0.0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Admitting rounds one after the other never takes the spend over the limit.
        #[test]
        fn admitted_rounds_never_exceed_the_limit(
            limit in 0.5f64..10.0,
            rounds in prop::collection::vec((0.6f64..3.0, 0.001f64..0.2, 1u64..400), 1..8),
        ) {
            let b = Budget::new(limit, 1e-5).unwrap();
            let mut history = Vec::new();
            for (z, q, steps) in rounds {
                let next = run(z, q, steps);
                if let Ok(cost) = b.admit(&history, &next) {
                    history.push(next);
                    prop_assert!(cost.epsilon_after <= limit);
                }
                prop_assert!(b.spent(&history).unwrap() <= limit);
            }
        }
    }
}
