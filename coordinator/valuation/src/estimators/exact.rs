//! Exact Shapley values by enumerating every coalition.

use rayon::prelude::*;

use super::{Estimator, Reduced, Valuation, binomial};
use crate::{Coalition, Utility, ValuationError};

/// Exact enumeration is the default up to this many players.
pub const EXACT_DEFAULT_MAX_PLAYERS: usize = 12;

/// Exact enumeration is refused above this many (non-null) players whatever the configuration:
/// the utility table alone would take 2^24 * 8 bytes = 128 MiB.
pub const EXACT_HARD_MAX_PLAYERS: usize = 24;

/// Exact Shapley values: all `2^m` coalitions of the `m` non-null players are evaluated in
/// parallel, then each player's value is summed sequentially in coalition order.
#[derive(Debug, Clone, PartialEq)]
pub struct Exact {
    /// Refuse games with more non-null players than this (capped at [`EXACT_HARD_MAX_PLAYERS`]).
    pub max_players: usize,
    /// Refuse if `2^m` exceeds this budget (`None`: no budget).
    pub max_evaluations: Option<u64>,
}

impl Default for Exact {
    fn default() -> Self {
        Self {
            max_players: EXACT_DEFAULT_MAX_PLAYERS,
            max_evaluations: None,
        }
    }
}

impl Estimator for Exact {
    fn name(&self) -> &'static str {
        "exact"
    }

    fn max_players(&self) -> usize {
        self.max_players.min(EXACT_HARD_MAX_PLAYERS)
    }

    /// Every coalition: `2^players` (saturating).
    fn min_evaluations(&self, players: usize) -> u64 {
        1u64.checked_shl(players as u32).unwrap_or(u64::MAX)
    }

    fn estimate(&self, game: &dyn Utility, seed: u64) -> Result<Valuation, ValuationError> {
        let reduced = Reduced::new(game)?;
        let m = reduced.m();
        let max = self.max_players();
        if m > max {
            return Err(ValuationError::TooManyForExact { players: m, max });
        }
        let coalitions = self.min_evaluations(m);
        if let Some(budget) = self.max_evaluations
            && budget < coalitions
        {
            return Err(ValuationError::BudgetTooSmall {
                estimator: "exact",
                budget,
                needed: coalitions,
            });
        }
        let table = (0..coalitions)
            .into_par_iter()
            .map(|c| reduced.utility(Coalition::from_bits(c)))
            .collect::<Result<Vec<f64>, ValuationError>>()?;
        let values = shapley_from_table(m, &table);
        Ok(Valuation {
            values: reduced.expand_values(&values),
            evaluations: coalitions,
            estimator: self.name().to_owned(),
            seed,
            sampling_se: None,
        })
    }
}

/// Shapley values of an `m`-player game from its full utility table indexed by coalition mask.
/// Each player's marginals are summed per coalition size, then weighted by
/// `1 / (m * C(m-1, s))`; players are independent, so the parallel map does not change a bit.
pub(crate) fn shapley_from_table(m: usize, table: &[f64]) -> Vec<f64> {
    let weights: Vec<f64> = (0..m)
        .map(|s| 1.0 / (m as f64 * binomial(m - 1, s) as f64))
        .collect();
    (0..m)
        .into_par_iter()
        .map(|i| {
            let bit = 1usize << i;
            let mut by_size = vec![0.0f64; m];
            for c in 0..table.len() {
                if c & bit == 0 {
                    by_size[c.count_ones() as usize] += table[c | bit] - table[c];
                }
            }
            by_size.iter().zip(&weights).map(|(sum, w)| sum * w).sum()
        })
        .collect()
}
