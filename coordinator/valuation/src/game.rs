//! The cooperative game of a round: utility of a coalition of updates.

use std::sync::{Mutex, PoisonError};

use super::{Coalition, MAX_PLAYERS, ValuationError};

/// A cooperative game over at most [`MAX_PLAYERS`] players.
pub trait Utility: Sync {
    /// The number of players (at most [`MAX_PLAYERS`]).
    fn players(&self) -> usize;

    /// The utility of `coalition`. Must be a pure function of the coalition: estimators memoise it
    /// and rely on repeated calls giving the same number.
    fn utility(&self, coalition: Coalition) -> f64;

    /// Players known to be null (their presence never changes the utility). Estimators give them
    /// exactly 0. The default knows of none.
    fn null_players(&self) -> Coalition {
        Coalition::EMPTY
    }
}

/// The design's game: `U(S) = score(w + sum over i in S of a_i * u_i)` with fixed weights
/// `a_i = n_i / n_all` over all participants of the round (no renormalisation inside `S`).
///
/// The combination is accumulated in `f64` in ascending player order, then rounded once to `f32`
/// for the score, in scratch buffers the game reuses across calls (as many as calls ran at
/// once, freed with the game). Players whose update is all
/// zeros, or whose weight is zero, are skipped, so they are null players whose value is exactly 0.
pub struct LinearCombinationGame<'a, F> {
    /// Borrowed, never copied: a round's updates may be large (the game adds no copy of them).
    base: &'a [f32],
    updates: Vec<&'a [f32]>,
    weights: Vec<f64>,
    dim: usize,
    players: usize,
    null: Coalition,
    score: F,
    /// Scratch buffers not in use: one per call that ran at the same time as others, not one
    /// per call (a 16M-parameter model's combination is 64 MB to allocate, fault in and free).
    spare: Mutex<Vec<Scratch>>,
}

/// Coordinates combined at a time: the `f64` accumulator holds one block, not a model (each
/// coordinate is still summed in ascending player order, so the bits do not depend on it).
const BLOCK: usize = 16 * 1024;

/// Members added in one sweep over a block.
const MEMBERS_AT_ONCE: usize = 8;

/// One call's scratch: the `f64` accumulator of one block and the `f32` parameters handed to
/// the score.
#[derive(Default)]
struct Scratch {
    acc: Vec<f64>,
    params: Vec<f32>,
}

impl<'a, F> LinearCombinationGame<'a, F>
where
    F: Fn(&[f32]) -> f64 + Sync,
{
    /// Builds the game of a round from the global parameters `base`, each participant's update and
    /// example count (all participants of the round), and the score (higher is better; the
    /// coordinator passes the negative validation log-loss).
    pub fn new(
        base: &'a [f32],
        updates: &[&'a [f32]],
        example_counts: &[u64],
        score: F,
    ) -> Result<Self, ValuationError> {
        if example_counts.len() != updates.len() {
            return Err(ValuationError::LengthMismatch {
                what: "example counts",
                found: example_counts.len(),
                expected: updates.len(),
            });
        }
        let total: u128 = example_counts.iter().map(|&n| u128::from(n)).sum();
        if total == 0 && !updates.is_empty() {
            return Err(ValuationError::NoExamples);
        }
        let weights = example_counts
            .iter()
            .map(|&n| n as f64 / total as f64)
            .collect();
        Self::with_weights(base, updates, weights, score)
    }

    /// Builds the game with explicit weights `a_i` instead of `n_i / n_all`.
    pub fn with_weights(
        base: &'a [f32],
        updates: &[&'a [f32]],
        weights: Vec<f64>,
        score: F,
    ) -> Result<Self, ValuationError> {
        let players = updates.len();
        if players > MAX_PLAYERS {
            return Err(ValuationError::TooManyPlayers {
                players,
                max: MAX_PLAYERS,
            });
        }
        if weights.len() != players {
            return Err(ValuationError::LengthMismatch {
                what: "weights",
                found: weights.len(),
                expected: players,
            });
        }
        if weights.iter().any(|w| !w.is_finite()) {
            return Err(ValuationError::NonFiniteInput { what: "weights" });
        }
        if base.iter().any(|x| !x.is_finite()) {
            return Err(ValuationError::NonFiniteInput {
                what: "base parameters",
            });
        }
        let dim = base.len();
        let mut null = Coalition::EMPTY;
        for (i, u) in updates.iter().enumerate() {
            if u.len() != dim {
                return Err(ValuationError::LengthMismatch {
                    what: "update",
                    found: u.len(),
                    expected: dim,
                });
            }
            if u.iter().any(|x| !x.is_finite()) {
                return Err(ValuationError::NonFiniteInput { what: "update" });
            }
            if weights[i] == 0.0 || u.iter().all(|&x| x == 0.0) {
                null = null.with(i);
            }
        }
        Ok(Self {
            base,
            updates: updates.to_vec(),
            weights,
            dim,
            players,
            null,
            score,
            spare: Mutex::default(),
        })
    }

    /// The weight `a_i` of each player.
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// The parameters of coalition `coalition`'s model, `w + sum over i in S of a_i * u_i`, in
    /// a vector of their own ([`Self::with_parameters`] lends them instead).
    pub fn parameters(&self, coalition: Coalition) -> Vec<f32> {
        self.with_parameters(coalition, <[f32]>::to_vec)
    }

    /// `f` of the parameters of coalition `coalition`'s model, combined in a scratch buffer of
    /// the game's: called for coalition after coalition, it allocates a buffer only for calls
    /// that run at the same time (scores may use rayon themselves, and a thread that waits for
    /// them may start another call), never one per coalition.
    pub fn with_parameters<R>(&self, coalition: Coalition, f: impl FnOnce(&[f32]) -> R) -> R {
        let spare = || self.spare.lock().unwrap_or_else(PoisonError::into_inner);
        let mut scratch = spare().pop().unwrap_or_default();
        self.combine(coalition, &mut scratch);
        let value = f(&scratch.params);
        spare().push(scratch);
        value
    }

    fn combine(&self, coalition: Coalition, scratch: &mut Scratch) {
        let members: Vec<usize> = coalition
            .minus(self.null)
            .members()
            .filter(|&i| i < self.players)
            .collect();
        scratch.params.clear();
        scratch.params.reserve(self.dim);
        let mut start = 0;
        while start < self.dim {
            let end = (start + BLOCK).min(self.dim);
            scratch.acc.clear();
            scratch
                .acc
                .extend(self.base[start..end].iter().map(|&x| f64::from(x)));
            // Eight members at a time: each coordinate's sum still adds them one by one in
            // ascending order, but is loaded and stored once per eight.
            let mut group = members.chunks_exact(MEMBERS_AT_ONCE);
            for g in group.by_ref() {
                let a: [f64; MEMBERS_AT_ONCE] = std::array::from_fn(|m| self.weights[g[m]]);
                let u: [&[f32]; MEMBERS_AT_ONCE] =
                    std::array::from_fn(|m| &self.updates[g[m]][start..end]);
                for (k, acc) in scratch.acc.iter_mut().enumerate() {
                    let mut s = *acc;
                    s += a[0] * f64::from(u[0][k]);
                    s += a[1] * f64::from(u[1][k]);
                    s += a[2] * f64::from(u[2][k]);
                    s += a[3] * f64::from(u[3][k]);
                    s += a[4] * f64::from(u[4][k]);
                    s += a[5] * f64::from(u[5][k]);
                    s += a[6] * f64::from(u[6][k]);
                    s += a[7] * f64::from(u[7][k]);
                    *acc = s;
                }
            }
            for &i in group.remainder() {
                let a = self.weights[i];
                for (acc, &x) in scratch.acc.iter_mut().zip(&self.updates[i][start..end]) {
                    *acc += a * f64::from(x);
                }
            }
            scratch.params.extend(scratch.acc.iter().map(|&x| x as f32));
            start = end;
        }
    }
}

impl<F> Utility for LinearCombinationGame<'_, F>
where
    F: Fn(&[f32]) -> f64 + Sync,
{
    fn players(&self) -> usize {
        self.players
    }

    fn utility(&self, coalition: Coalition) -> f64 {
        self.with_parameters(coalition, &self.score)
    }

    fn null_players(&self) -> Coalition {
        self.null
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combines_with_fixed_weights() {
        let base = [1.0f32, 2.0];
        let u0 = [1.0f32, 0.0];
        let u1 = [0.0f32, 4.0];
        let zero = [0.0f32, 0.0];
        let game =
            LinearCombinationGame::new(&base, &[&u0[..], &u1, &zero], &[1, 1, 2], |p: &[f32]| {
                f64::from(p[0] + p[1])
            })
            .unwrap();
        assert_eq!(game.weights(), &[0.25, 0.25, 0.5]);
        assert_eq!(
            game.parameters(Coalition::full(3).unwrap()),
            vec![1.25, 3.0]
        );
        assert_eq!(game.utility(Coalition::EMPTY), 3.0);
        assert_eq!(game.utility(Coalition::EMPTY.with(1)), 4.0);
        assert_eq!(game.null_players(), Coalition::EMPTY.with(2));
        assert_eq!(
            game.utility(Coalition::EMPTY.with(2)),
            game.utility(Coalition::EMPTY)
        );
    }

    /// Coalition after coalition reuses one scratch buffer; a call made while another is in
    /// progress (a score that re-enters, as rayon's work stealing does) gets a second one, and
    /// both are kept for later calls.
    #[test]
    fn scratch_buffers_are_one_per_call_at_a_time() {
        let base = [1.0f32, 2.0];
        let (u0, u1) = ([1.0f32, 0.0], [0.0f32, 4.0]);
        let game = LinearCombinationGame::new(&base, &[&u0[..], &u1], &[1, 1], |p: &[f32]| {
            f64::from(p[0] + p[1])
        })
        .unwrap();
        let spare = || game.spare.lock().unwrap().len();
        let one = Coalition::EMPTY.with(0);
        for c in [Coalition::EMPTY, one, one.with(1), Coalition::EMPTY.with(1)] {
            game.utility(c);
        }
        assert_eq!(spare(), 1);
        let nested = game.with_parameters(Coalition::EMPTY.with(0), |outer| {
            let inner = game.with_parameters(Coalition::EMPTY.with(1), <[f32]>::to_vec);
            (outer.to_vec(), inner)
        });
        assert_eq!(nested, (vec![1.5, 2.0], vec![1.0, 4.0]));
        assert_eq!(spare(), 2);
        assert_eq!(game.parameters(Coalition::full(2).unwrap()), vec![1.5, 4.0]);
        assert_eq!(spare(), 2);
    }

    /// Combining block by block, members eight at a time, gives the bits of one pass over the
    /// whole vector adding one member at a time (each coordinate summed in ascending player
    /// order, in `f64`, rounded once).
    #[test]
    fn blocks_give_the_bits_of_one_pass() {
        let dim = 2 * BLOCK + 5;
        let wave = |k: usize| -> Vec<f32> {
            (0..dim)
                .map(|j| ((j * 7 + k * 13) % 101) as f32 * 0.37e-3 - 0.01)
                .collect()
        };
        let base = wave(0);
        // Twelve players, eleven in the coalition: a group of eight added together, then three.
        let updates: Vec<Vec<f32>> = (1..=12).map(wave).collect();
        let refs: Vec<&[f32]> = updates.iter().map(Vec::as_slice).collect();
        let counts: Vec<u64> = (0..12).map(|i| 3 + 2 * i).collect();
        let game = LinearCombinationGame::new(&base, &refs, &counts, |_: &[f32]| 0.0).unwrap();
        let all = Coalition::full(12).unwrap().without(1);
        let mut expected = Vec::with_capacity(dim);
        for j in 0..dim {
            let mut acc = f64::from(base[j]);
            for i in (0..12).filter(|&i| i != 1) {
                acc += game.weights()[i] * f64::from(updates[i][j]);
            }
            expected.push(acc as f32);
        }
        let got = game.parameters(all);
        assert!(
            got.iter()
                .zip(&expected)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        );
        assert_eq!(got.len(), dim);
    }

    /// The order of the additions shows in the bits: a coordinate where one member adds 2^40
    /// and a later one takes it away keeps what the members between them added only to 2^40's
    /// precision. Members grouped eight at a time still add in ascending order.
    #[test]
    fn members_add_in_ascending_order() {
        let (players, dim) = (11usize, 99usize);
        let big = 2f32.powi(40);
        let updates: Vec<Vec<f32>> = (0..players)
            .map(|i| {
                (0..dim)
                    .map(|j| match (j + players - i) % players {
                        0 => big,
                        4 => -big,
                        r => 0.1 + 0.013 * (r * j % 17) as f32,
                    })
                    .collect()
            })
            .collect();
        let refs: Vec<&[f32]> = updates.iter().map(Vec::as_slice).collect();
        let base: Vec<f32> = (0..dim).map(|j| 0.25 + 0.0371 * j as f32).collect();
        let game =
            LinearCombinationGame::with_weights(&base, &refs, vec![1.0; players], |_: &[f32]| 0.0)
                .unwrap();
        let coalition = Coalition::full(players).unwrap();
        let one_by_one: Vec<f32> = (0..dim)
            .map(|j| {
                let mut acc = f64::from(base[j]);
                for u in &updates {
                    acc += f64::from(u[j]);
                }
                acc as f32
            })
            .collect();
        let exact: Vec<f32> = (0..dim)
            .map(|j| {
                let small: f64 = updates
                    .iter()
                    .map(|u| f64::from(u[j]))
                    .filter(|v| v.abs() < 1.0)
                    .sum();
                (f64::from(base[j]) + small) as f32
            })
            .collect();
        // The order is visible: adding one by one loses what exact arithmetic keeps, and two
        // neighbours added the other way round give other bits.
        assert_ne!(one_by_one, exact);
        let swapped: Vec<f32> = (0..dim)
            .map(|j| {
                let mut acc = f64::from(base[j]);
                for i in [1, 0].into_iter().chain(2..players) {
                    acc += f64::from(updates[i][j]);
                }
                acc as f32
            })
            .collect();
        assert_ne!(one_by_one, swapped);
        let got = game.parameters(coalition);
        assert_eq!(
            got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            one_by_one.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn refuses_bad_inputs() {
        let score = |_: &[f32]| 0.0;
        let base = [0.0f32; 2];
        let short = [0.0f32; 1];
        assert!(matches!(
            LinearCombinationGame::new(&base, &[&short], &[1], score),
            Err(ValuationError::LengthMismatch { what: "update", .. })
        ));
        let nan = [f32::NAN, 0.0];
        assert!(matches!(
            LinearCombinationGame::new(&base, &[&nan], &[1], score),
            Err(ValuationError::NonFiniteInput { .. })
        ));
        assert!(matches!(
            LinearCombinationGame::new(&base, &[&base], &[0], score),
            Err(ValuationError::NoExamples)
        ));
        let many: Vec<&[f32]> = vec![&base; MAX_PLAYERS + 1];
        assert!(matches!(
            LinearCombinationGame::new(&base, &many, &[1; MAX_PLAYERS + 1], score),
            Err(ValuationError::TooManyPlayers { players, .. }) if players == MAX_PLAYERS + 1
        ));
    }
}
