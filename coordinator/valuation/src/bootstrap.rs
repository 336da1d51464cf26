//! The uncertainty of a round's values: seeded bootstrap resamples of the validation rows,
//! valued with the coalition models already evaluated.
//!
//! A utility that is a mean over validation rows of a per-row score (negative log-loss,
//! correctness) is kept per row for every coalition evaluated ([`RowGame`]). A bootstrap
//! resample draws `n` rows with replacement; its utility of a coalition is the mean of that
//! coalition's row scores over the drawn rows, so no model is rebuilt for a coalition already
//! scored (an estimator whose path depends on the utilities may ask for a new one; it is scored
//! once and kept). The same estimator with the same seed values each resample; a participant's
//! standard error is the sample standard deviation (`B - 1` in the denominator) of its `B`
//! resampled values.
//!
//! The draws come from [`bootstrap_rng`]: ChaCha20 keyed by the round's valuation seed and the
//! tag `"fedledger/bootstrap/v1\0\0"`, nonce 0; resample `b` takes the next `n` draws
//! `below(n)`, for `b = 0, 1, ...`. So the spread is recomputable from the round's recorded seed
//! and the coordinator's inputs (replay).
//!
//! What it measures: how much the values depend on which validation rows happened to be drawn.
//! It does not see how the values would change with other training noise or other updates.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chacha20::ChaCha20Rng;
use rand::SeedableRng;

use crate::{Coalition, Estimator, Utility, ValuationError, rng::below};

const KEY_TAG: &[u8; 24] = b"fedledger/bootstrap/v1\0\0";

/// The ChaCha20 generator of a round's bootstrap draws: key = the seed's 8 little-endian bytes
/// then `"fedledger/bootstrap/v1\0\0"`, nonce 0.
pub fn bootstrap_rng(seed: u64) -> ChaCha20Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..].copy_from_slice(KEY_TAG);
    ChaCha20Rng::from_seed(key)
}

type Rows = Arc<[f64]>;

/// A game whose utility is the mean of per-row scores, remembering each coalition's rows.
pub struct RowGame<F> {
    players: usize,
    rows: usize,
    null: Coalition,
    score_rows: F,
    cache: Mutex<HashMap<Coalition, Rows>>,
}

impl<F> RowGame<F>
where
    F: Fn(Coalition) -> Vec<f64> + Sync,
{
    /// `score_rows(S)` returns the `rows` per-row scores of coalition `S`'s model (higher is
    /// better); `null` are the players known to be null.
    pub fn new(players: usize, rows: usize, null: Coalition, score_rows: F) -> Self {
        Self {
            players,
            rows,
            null,
            score_rows,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn rows_of(&self, coalition: Coalition) -> Rows {
        let key = coalition.minus(self.null);
        if let Some(r) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return r.clone();
        }
        let rows: Rows = (self.score_rows)(coalition).into();
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_insert(rows)
            .clone()
    }

    /// Coalitions scored so far.
    pub fn scored(&self) -> usize {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl<F> Utility for RowGame<F>
where
    F: Fn(Coalition) -> Vec<f64> + Sync,
{
    fn players(&self) -> usize {
        self.players
    }

    /// The mean of the row scores, summed in row order (so the same bits as a metric that sums
    /// its rows in order and divides by their count). NaN when the rows are missing.
    fn utility(&self, coalition: Coalition) -> f64 {
        let rows = self.rows_of(coalition);
        if rows.len() != self.rows || rows.is_empty() {
            return f64::NAN;
        }
        rows.iter().sum::<f64>() / rows.len() as f64
    }

    fn null_players(&self) -> Coalition {
        self.null
    }
}

/// One bootstrap resample of a [`RowGame`]: row `r` counted `counts[r]` times.
struct Resampled<'g, F> {
    game: &'g RowGame<F>,
    counts: Vec<u32>,
}

impl<F> Utility for Resampled<'_, F>
where
    F: Fn(Coalition) -> Vec<f64> + Sync,
{
    fn players(&self) -> usize {
        self.game.players
    }

    fn utility(&self, coalition: Coalition) -> f64 {
        let rows = self.game.rows_of(coalition);
        if rows.len() != self.counts.len() || rows.is_empty() {
            return f64::NAN;
        }
        let sum: f64 = rows
            .iter()
            .zip(&self.counts)
            .filter(|(_, c)| **c > 0)
            .map(|(s, &c)| s * f64::from(c))
            .sum();
        sum / rows.len() as f64
    }

    fn null_players(&self) -> Coalition {
        self.game.null
    }
}

/// Each player's standard error over `resamples` bootstrap resamples of the rows of `game`,
/// valued by `estimator` with `seed` (the round's), the draws from [`bootstrap_rng`]`(seed)`.
/// Null players get 0. Fewer than two resamples give all zeros.
pub fn bootstrap_standard_errors<F>(
    game: &RowGame<F>,
    estimator: &dyn Estimator,
    seed: u64,
    resamples: u32,
) -> Result<Vec<f64>, ValuationError>
where
    F: Fn(Coalition) -> Vec<f64> + Sync,
{
    let players = game.players;
    if resamples < 2 || game.rows == 0 {
        return Ok(vec![0.0; players]);
    }
    let n = game.rows;
    let mut rng = bootstrap_rng(seed);
    // Welford's running mean and sum of squares, per player, in resample order.
    let mut mean = vec![0.0f64; players];
    let mut m2 = vec![0.0f64; players];
    for b in 0..resamples {
        let mut counts = vec![0u32; n];
        for _ in 0..n {
            counts[below(&mut rng, n as u64) as usize] += 1;
        }
        let values = estimator
            .estimate(&Resampled { game, counts }, seed)?
            .values;
        let k = f64::from(b + 1);
        for (i, &v) in values.iter().enumerate() {
            let d = v - mean[i];
            mean[i] += d / k;
            m2[i] += d * (v - mean[i]);
        }
    }
    let denom = f64::from(resamples - 1);
    Ok(m2.iter().map(|s| (s / denom).max(0.0).sqrt()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Exact;

    /// Player 0 adds 1.0 to every row; player 1 adds +-1 alternating (no mean effect).
    fn game() -> RowGame<impl Fn(Coalition) -> Vec<f64> + Sync> {
        RowGame::new(3, 40, Coalition::EMPTY.with(2), |c: Coalition| {
            (0..40)
                .map(|r| {
                    let mut s = 0.0;
                    if c.contains(0) {
                        s += 1.0;
                    }
                    if c.contains(1) {
                        s += if r % 2 == 0 { 1.0 } else { -1.0 };
                    }
                    s
                })
                .collect()
        })
    }

    #[test]
    fn a_consistent_effect_has_no_spread_and_noise_has_some() {
        let g = game();
        let exact = Exact::default();
        let v = exact.estimate(&g, 1).unwrap();
        assert_eq!(v.values, vec![1.0, 0.0, 0.0]);
        let se = bootstrap_standard_errors(&g, &exact, 1, 200).unwrap();
        assert!(se[0] < 1e-12, "{se:?}");
        // sd of a +-1 row score over 40 rows: about 1 / sqrt(40) = 0.158.
        assert!(se[1] > 0.1 && se[1] < 0.22, "{se:?}");
        assert_eq!(se[2], 0.0);
        // The four coalitions of the two non-null players, each scored once.
        assert_eq!(g.scored(), 4);
        // Reproducible bit for bit; another seed draws other rows.
        assert_eq!(se, bootstrap_standard_errors(&g, &exact, 1, 200).unwrap());
        assert_ne!(se, bootstrap_standard_errors(&g, &exact, 2, 200).unwrap());
        assert_eq!(
            bootstrap_standard_errors(&g, &exact, 1, 1).unwrap(),
            vec![0.0; 3]
        );
    }
}
