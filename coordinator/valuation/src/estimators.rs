//! Shapley estimators behind one trait, and the memo that counts evaluations.

use std::collections::HashMap;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::rng::{below, rng_for_seed, shuffle};
use super::{Coalition, MAX_PLAYERS, Utility, ValuationError};

mod exact;
mod gtg;
mod kernelshap;
mod loo;

pub use exact::{EXACT_DEFAULT_MAX_PLAYERS, EXACT_HARD_MAX_PLAYERS, Exact};
pub use gtg::GtgShapley;
pub use kernelshap::{KERNELSHAP_MAX_PLAYERS, KernelShap};
pub use loo::LeaveOneOut;

/// The values of one round as an estimator produced them, with what is needed to recompute them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Valuation {
    /// One value per player, in the game's player order.
    pub values: Vec<f64>,
    /// Distinct coalitions whose utility was computed.
    pub evaluations: u64,
    /// The estimator's name (`exact`, `gtg`, `kernelshap` or `loo`).
    pub estimator: String,
    /// The seed of the estimator's random stream.
    pub seed: u64,
    /// Sampling estimators: each value's standard error as an estimate of the sampled mean
    /// (the spread of the independent sampling units, over the square root of their number),
    /// in the game's player order; null players 0. `None` for estimators that do not sample
    /// (or sampled fewer than two units).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling_se: Option<Vec<f64>>,
}

impl Valuation {
    /// Each value as integer nano-units ([`value_nano`]), as recorded in the ledger.
    pub fn values_nano(&self) -> Vec<i64> {
        self.values.iter().map(|&v| value_nano(v)).collect()
    }

    /// The estimator's own accuracy in one figure: the L2 norm of the sampling standard errors
    /// over the L2 norm of the values (`None` without sampling errors or with all values 0).
    pub fn relative_sampling_se(&self) -> Option<f64> {
        let se = self.sampling_se.as_ref()?;
        let norm = self.values.iter().map(|v| v * v).sum::<f64>().sqrt();
        (norm > 0.0).then(|| se.iter().map(|s| s * s).sum::<f64>().sqrt() / norm)
    }
}

/// A value in integer nano-units: `round(value * 1e9)` (half away from zero), saturating at the
/// `i64` range. Rewards are computed from these integers, so anyone recomputes them exactly.
pub fn value_nano(value: f64) -> i64 {
    (value * 1e9).round() as i64
}

/// A Shapley value estimator.
pub trait Estimator: Send + Sync {
    /// The name recorded with the values: `exact`, `gtg`, `kernelshap` or `loo`.
    fn name(&self) -> &'static str;

    /// Values every player of `game`; the same game and seed give bit-identical values.
    fn estimate(&self, game: &dyn Utility, seed: u64) -> Result<Valuation, ValuationError>;

    /// The most non-null players it values; a game with more is refused.
    fn max_players(&self) -> usize {
        MAX_PLAYERS
    }

    /// The fewest distinct coalitions it evaluates for `players` non-null players: an
    /// evaluation budget below this is refused.
    fn min_evaluations(&self, players: usize) -> u64;
}

/// Utility evaluations per round the default estimator spends above
/// [`EXACT_DEFAULT_MAX_PLAYERS`] players, unless the round needs more to sample at all (see
/// [`default_budget`]).
pub const DEFAULT_EVALUATIONS: u64 = 1_000;

/// The default per-round evaluation budget of `gtg` for `players` participants: at least
/// [`DEFAULT_EVALUATIONS`], and at least its fixed coalitions plus one antithetic pair of
/// permutations ([`Estimator::min_evaluations`], `3n - 2`), so it always samples. A count of
/// evaluations, never a time: replay must not read the clock.
pub fn default_budget(players: usize) -> u64 {
    DEFAULT_EVALUATIONS.max(GtgShapley::default().min_evaluations(players))
}

/// The estimator for a round of `players` participants: `exact` up to
/// [`EXACT_DEFAULT_MAX_PLAYERS`], above it `gtg` within `max_evaluations` utility evaluations
/// (`None`: [`default_budget`]).
pub fn default_estimator(players: usize, max_evaluations: Option<u64>) -> Box<dyn Estimator> {
    if players <= EXACT_DEFAULT_MAX_PLAYERS {
        Box::new(Exact::default())
    } else {
        Box::new(GtgShapley {
            max_evaluations: Some(max_evaluations.unwrap_or_else(|| default_budget(players))),
            ..GtgShapley::default()
        })
    }
}

/// The estimator recorded as `name`, with default settings and an optional evaluation budget.
pub fn estimator_by_name(
    name: &str,
    max_evaluations: Option<u64>,
) -> Result<Box<dyn Estimator>, ValuationError> {
    Ok(match name {
        "exact" => Box::new(Exact {
            max_evaluations,
            ..Exact::default()
        }),
        "gtg" => Box::new(GtgShapley {
            max_evaluations,
            ..GtgShapley::default()
        }),
        "kernelshap" => Box::new(KernelShap { max_evaluations }),
        "loo" => Box::new(LeaveOneOut { max_evaluations }),
        other => return Err(ValuationError::UnknownEstimator(other.to_owned())),
    })
}

/// The game restricted to its players not declared null: estimators work on `m` active players
/// (reduced indices `0..m`) and give the null players exactly 0.
pub(crate) struct Reduced<'g> {
    game: &'g dyn Utility,
    players: usize,
    active: Vec<usize>,
}

impl<'g> Reduced<'g> {
    pub(crate) fn new(game: &'g dyn Utility) -> Result<Self, ValuationError> {
        let players = game.players();
        if players > MAX_PLAYERS {
            return Err(ValuationError::TooManyPlayers {
                players,
                max: MAX_PLAYERS,
            });
        }
        let null = game.null_players();
        let active = (0..players).filter(|&i| !null.contains(i)).collect();
        Ok(Self {
            game,
            players,
            active,
        })
    }

    /// Active players.
    pub(crate) fn m(&self) -> usize {
        self.active.len()
    }

    /// The reduced coalition of all active players.
    pub(crate) fn full(&self) -> Coalition {
        Coalition::full(self.m()).expect("at most MAX_PLAYERS players, checked at new")
    }

    fn expand(&self, reduced: Coalition) -> Coalition {
        let mut c = Coalition::EMPTY;
        for r in reduced.members() {
            c = c.with(self.active[r]);
        }
        c
    }

    /// The utility of a reduced coalition, refusing non-finite numbers.
    pub(crate) fn utility(&self, reduced: Coalition) -> Result<f64, ValuationError> {
        let coalition = self.expand(reduced);
        let value = self.game.utility(coalition);
        if value.is_finite() {
            Ok(value)
        } else {
            Err(ValuationError::NonFiniteUtility {
                coalition: coalition.members().collect(),
                value,
            })
        }
    }

    /// Values of the full game from values of the active players (null players get 0).
    pub(crate) fn expand_values(&self, reduced_values: &[f64]) -> Vec<f64> {
        let mut values = vec![0.0; self.players];
        for (&player, &v) in self.active.iter().zip(reduced_values) {
            values[player] = v;
        }
        values
    }
}

/// Why a memoised look-up did not produce a number.
pub(crate) enum Stop {
    /// The budget of distinct coalitions is spent.
    Budget,
    /// The game failed.
    Fail(ValuationError),
}

/// Memo of utilities by reduced coalition, bounded by a budget of distinct coalitions.
pub(crate) struct Memo<'r, 'g> {
    game: &'r Reduced<'g>,
    cache: HashMap<Coalition, f64>,
    budget: u64,
}

impl<'r, 'g> Memo<'r, 'g> {
    pub(crate) fn new(game: &'r Reduced<'g>, budget: u64) -> Self {
        Self {
            game,
            cache: HashMap::new(),
            budget,
        }
    }

    /// Distinct coalitions evaluated so far.
    pub(crate) fn evaluations(&self) -> u64 {
        self.cache.len() as u64
    }

    /// The utility of a reduced coalition, computing it if new and the budget allows.
    pub(crate) fn get(&mut self, reduced: Coalition) -> Result<f64, Stop> {
        if let Some(&v) = self.cache.get(&reduced) {
            return Ok(v);
        }
        if self.evaluations() >= self.budget {
            return Err(Stop::Budget);
        }
        let v = self.game.utility(reduced).map_err(Stop::Fail)?;
        self.cache.insert(reduced, v);
        Ok(v)
    }

    /// The utilities of `coalitions`, computing the new ones in parallel. Refuses (computing
    /// nothing) if the new ones do not fit in the budget.
    pub(crate) fn get_all(&mut self, coalitions: &[Coalition]) -> Result<Vec<f64>, Stop> {
        let mut fresh: Vec<Coalition> = coalitions
            .iter()
            .copied()
            .filter(|c| !self.cache.contains_key(c))
            .collect();
        fresh.sort_unstable();
        fresh.dedup();
        if self.evaluations() + fresh.len() as u64 > self.budget {
            return Err(Stop::Budget);
        }
        let values: Vec<Result<f64, ValuationError>> =
            fresh.par_iter().map(|&c| self.game.utility(c)).collect();
        for (c, v) in fresh.into_iter().zip(values) {
            self.cache.insert(c, v.map_err(Stop::Fail)?);
        }
        Ok(coalitions.iter().map(|c| self.cache[c]).collect())
    }
}

/// `n choose k` as an exact integer (saturating at `u128::MAX`, far above any use here).
pub(crate) fn binomial(n: usize, k: usize) -> u128 {
    if k > n {
        return 0;
    }
    let k = k.min(n - k);
    let mut c: u128 = 1;
    for i in 0..k {
        // c * (n - i) / (i + 1) is exact at every step.
        c = c.saturating_mul((n - i) as u128) / (i as u128 + 1);
    }
    c
}

/// A uniformly random permutation of `0..m` with `first` in front.
pub(crate) fn guided_permutation(
    rng: &mut chacha20::ChaCha20Rng,
    m: usize,
    first: usize,
) -> Vec<usize> {
    let mut perm: Vec<usize> = (0..m).collect();
    perm.swap(0, first);
    shuffle(rng, &mut perm[1..]);
    perm
}

/// A uniformly random `k`-subset of `0..m` as a mask (partial Fisher-Yates).
pub(crate) fn random_subset(rng: &mut chacha20::ChaCha20Rng, m: usize, k: usize) -> u64 {
    let mut items: Vec<usize> = (0..m).collect();
    let mut mask = 0u64;
    for i in 0..k {
        let j = i + below(rng, (m - i) as u64) as usize;
        items.swap(i, j);
        mask |= 1u64 << items[i];
    }
    mask
}

pub(crate) fn seeded(seed: u64) -> chacha20::ChaCha20Rng {
    rng_for_seed(seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binomials() {
        assert_eq!(binomial(8, 0), 1);
        assert_eq!(binomial(8, 3), 56);
        assert_eq!(binomial(64, 32), 1_832_624_140_942_590_534);
        assert_eq!(binomial(3, 4), 0);
    }

    #[test]
    fn value_nano_rounds_half_away() {
        assert_eq!(value_nano(1.5e-9), 2);
        assert_eq!(value_nano(-1.5e-9), -2);
        assert_eq!(value_nano(0.123_456_789_4), 123_456_789);
        assert_eq!(value_nano(0.0), 0);
    }

    #[test]
    fn unknown_estimator_is_refused() {
        assert!(matches!(
            estimator_by_name("banzhaf", None),
            Err(ValuationError::UnknownEstimator(_))
        ));
        for name in ["exact", "gtg", "kernelshap", "loo"] {
            assert_eq!(estimator_by_name(name, None).unwrap().name(), name);
        }
    }
}
