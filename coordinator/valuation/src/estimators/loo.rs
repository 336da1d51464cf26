//! Leave-one-out values, for comparison with the Shapley estimators.

use super::{Estimator, Memo, Reduced, Stop, Valuation};
use crate::{Utility, ValuationError};

/// Leave-one-out: `U(all) - U(all - i)`. Needs `m + 1` evaluations for `m` non-null players. Not a
/// Shapley value (no efficiency; two copies of the same update both get about 0).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LeaveOneOut {
    /// Refuse if `m + 1` exceeds this budget (`None`: no budget).
    pub max_evaluations: Option<u64>,
}

impl Estimator for LeaveOneOut {
    fn name(&self) -> &'static str {
        "loo"
    }

    /// The grand coalition and each leave-one-out coalition.
    fn min_evaluations(&self, players: usize) -> u64 {
        if players == 0 { 0 } else { players as u64 + 1 }
    }

    fn estimate(&self, game: &dyn Utility, seed: u64) -> Result<Valuation, ValuationError> {
        let reduced = Reduced::new(game)?;
        let m = reduced.m();
        let full = reduced.full();
        let needed = self.min_evaluations(m);
        let budget = self.max_evaluations.unwrap_or(u64::MAX);
        let mut memo = Memo::new(&reduced, budget);
        let mut coalitions = vec![full];
        coalitions.extend((0..m).map(|i| full.without(i)));
        let values = if m == 0 {
            Vec::new()
        } else {
            let utilities = memo.get_all(&coalitions).map_err(|stop| match stop {
                Stop::Budget => ValuationError::BudgetTooSmall {
                    estimator: "loo",
                    budget,
                    needed,
                },
                Stop::Fail(e) => e,
            })?;
            utilities[1..].iter().map(|u| utilities[0] - u).collect()
        };
        Ok(Valuation {
            values: reduced.expand_values(&values),
            evaluations: memo.evaluations(),
            estimator: self.name().to_owned(),
            seed,
            sampling_se: None,
        })
    }
}
