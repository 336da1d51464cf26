//! GTG-Shapley-style guided permutation sampling with conservative truncation.

use super::{Estimator, Memo, Reduced, Stop, Valuation, guided_permutation, seeded};
use crate::{Coalition, Utility, ValuationError};

/// GTG-Shapley-style permutation sampling (Liu et al., "GTG-Shapley: Efficient and Accurate
/// Participant Contribution Evaluation in Federated Learning", 2022), without its between-round
/// truncation (a round with a tiny total gain is still valued, so harm is still charged) and with
/// a within-permutation truncation that never skips a player whose leave-one-out effect is large.
///
/// One sampling round is `m` permutations, the `k`-th with player `k` first and the others
/// shuffled; with `antithetic` each is followed by its reverse. A player's value is the mean of
/// its marginal contributions over the complete permutations.
#[derive(Debug, Clone, PartialEq)]
pub struct GtgShapley {
    /// Budget of distinct coalitions (`None`: stop only on convergence or `max_rounds`). A
    /// permutation that would exceed it is discarded (with its antithetic partner) and sampling
    /// stops.
    pub max_evaluations: Option<u64>,
    /// Truncation tolerance, relative to `max(|U(all) - U(none)|, max_i |U(all) - U(all - i)|)`.
    /// The scan of a permutation stops once the prefix is within it of `U(all)` and every player
    /// still to come has a leave-one-out effect within it; those players get a marginal of 0.
    /// `0` disables truncation.
    pub truncation_tolerance: f64,
    /// Stop when one sampling round changes the estimate by less than this, relative (L2).
    pub convergence_tolerance: f64,
    /// Sampling rounds before the convergence test applies.
    pub min_rounds: usize,
    /// Sampling rounds at most.
    pub max_rounds: usize,
    /// Follow each permutation by its reverse (exact for games with pairwise interactions only).
    pub antithetic: bool,
}

impl Default for GtgShapley {
    fn default() -> Self {
        Self {
            max_evaluations: None,
            truncation_tolerance: 0.01,
            convergence_tolerance: 0.01,
            min_rounds: 3,
            max_rounds: 100,
            antithetic: true,
        }
    }
}

impl Estimator for GtgShapley {
    fn name(&self) -> &'static str {
        "gtg"
    }

    /// U(none), U(all) and the leave-one-out coalitions, then one permutation (with its reverse
    /// when antithetic) scanned to the end: each adds its `n - 2` prefixes of sizes `1..n-1`
    /// (the size `n - 1` prefix is a leave-one-out coalition). With less, not a single
    /// sample may fit and every close would fail.
    fn min_evaluations(&self, players: usize) -> u64 {
        let n = players as u64;
        match n {
            0 | 1 => n * 2,
            2 => 4,
            _ => n + 2 + (n - 2) * if self.antithetic { 2 } else { 1 },
        }
    }

    fn estimate(&self, game: &dyn Utility, seed: u64) -> Result<Valuation, ValuationError> {
        let reduced = Reduced::new(game)?;
        let m = reduced.m();
        let budget = self.max_evaluations.unwrap_or(u64::MAX);
        let needed = self.min_evaluations(m);
        let too_small = || ValuationError::BudgetTooSmall {
            estimator: "gtg",
            budget,
            needed,
        };
        let fail = |stop| match stop {
            Stop::Budget => too_small(),
            Stop::Fail(e) => e,
        };
        let mut memo = Memo::new(&reduced, budget);
        if m == 0 {
            return Ok(self.valuation(&reduced, &[], &memo, seed));
        }
        let full = reduced.full();
        let mut first = vec![Coalition::EMPTY, full];
        first.extend((0..m).map(|i| full.without(i)));
        let top = memo.get_all(&first).map_err(fail)?;
        let (empty, grand) = (top[0], top[1]);
        let loo: Vec<f64> = top[2..].iter().map(|u| (grand - u).abs()).collect();
        let scale = loo.iter().fold((grand - empty).abs(), |a, &b| a.max(b));
        let tolerance = self.truncation_tolerance.max(0.0) * scale;

        let mut rng = seeded(seed);
        let mut sums = vec![0.0f64; m];
        // The sampling units are independent: a permutation, or a permutation with its reverse
        // (their mean marginal is one draw). Squares of the unit means give the spread.
        let mut squares = vec![0.0f64; m];
        let mut units = 0u64;
        let mut permutations = 0u64;
        let mut previous: Option<Vec<f64>> = None;
        let mut marginals = vec![0.0f64; m];
        let mut pair = vec![0.0f64; m];
        'rounds: for round in 0..self.max_rounds.max(1) {
            for k in 0..m {
                let perm = guided_permutation(&mut rng, m, k);
                let mut orders = vec![perm];
                if self.antithetic && m > 1 {
                    let reverse: Vec<usize> = orders[0].iter().rev().copied().collect();
                    orders.push(reverse);
                }
                // A permutation and its reverse count together or not at all: an unpaired one
                // would lose the antithetic cancellation.
                pair.fill(0.0);
                for order in &orders {
                    match self.scan(
                        &mut memo,
                        order,
                        empty,
                        grand,
                        &loo,
                        tolerance,
                        &mut marginals,
                    ) {
                        Ok(()) => {
                            for (s, x) in pair.iter_mut().zip(&marginals) {
                                *s += x;
                            }
                        }
                        Err(Stop::Budget) => break 'rounds,
                        Err(Stop::Fail(e)) => return Err(e),
                    }
                }
                let len = orders.len() as f64;
                for ((s, q), x) in sums.iter_mut().zip(squares.iter_mut()).zip(&pair) {
                    *s += x;
                    *q += (x / len) * (x / len);
                }
                units += 1;
                permutations += orders.len() as u64;
            }
            let estimate: Vec<f64> = sums.iter().map(|s| s / permutations as f64).collect();
            if let Some(prev) = &previous
                && round + 1 >= self.min_rounds
                && crate::relative_l2(prev, &estimate) < self.convergence_tolerance
            {
                break;
            }
            previous = Some(estimate);
        }
        if permutations == 0 {
            // The fixed coalitions fitted, but not a single (pair of) permutation(s).
            return Err(ValuationError::BudgetTooSmall {
                estimator: "gtg",
                budget,
                needed: memo.evaluations() + 1,
            });
        }
        let values: Vec<f64> = sums.iter().map(|s| s / permutations as f64).collect();
        let mut valuation = self.valuation(&reduced, &values, &memo, seed);
        if units >= 2 {
            let k = units as f64;
            let se: Vec<f64> = values
                .iter()
                .zip(&squares)
                .map(|(mean, q)| ((q / k - mean * mean).max(0.0) / (k - 1.0)).sqrt())
                .collect();
            valuation.sampling_se = Some(reduced.expand_values(&se));
        }
        Ok(valuation)
    }
}

impl GtgShapley {
    /// Marginal contributions along `order`, truncated conservatively; fails on the budget.
    #[allow(clippy::too_many_arguments)]
    fn scan(
        &self,
        memo: &mut Memo<'_, '_>,
        order: &[usize],
        empty: f64,
        grand: f64,
        loo: &[f64],
        tolerance: f64,
        marginals: &mut [f64],
    ) -> Result<(), Stop> {
        marginals.fill(0.0);
        let mut prefix = Coalition::EMPTY;
        let mut previous = empty;
        for (position, &player) in order.iter().enumerate() {
            let rest = &order[position..];
            if position > 0
                && (grand - previous).abs() <= tolerance
                && rest.iter().all(|&r| loo[r] <= tolerance)
            {
                break;
            }
            prefix = prefix.with(player);
            let current = if position + 1 == order.len() {
                grand
            } else {
                memo.get(prefix)?
            };
            marginals[player] = current - previous;
            previous = current;
        }
        Ok(())
    }

    fn valuation(
        &self,
        reduced: &Reduced<'_>,
        values: &[f64],
        memo: &Memo<'_, '_>,
        seed: u64,
    ) -> Valuation {
        Valuation {
            values: reduced.expand_values(values),
            evaluations: memo.evaluations(),
            estimator: self.name().to_owned(),
            seed,
            sampling_se: None,
        }
    }
}
