//! Contribution valuation, rewards and abuse flags for one federated round.
//!
//! # The game
//!
//! For round t with global parameters `w` and the accepted updates `u_1..u_n` with example counts
//! `n_1..n_n`, the utility of a coalition `S` is the validation score of the model
//! `w + sum over i in S of (n_i / n_all) * u_i`, where `n_all` is the sum of the example counts of
//! **all** participants of the round ([`LinearCombinationGame`]). The weights are fixed: they are
//! not renormalised inside `S`, so `U(all)` is exactly the FedAvg aggregate's score and a
//! participant that sends a zero update is a null player whose value is exactly 0. The score is a
//! closure handed in by the caller; the coordinator passes the negative validation log-loss (accuracy
//! is coarse and hides harm). The abstraction is [`Utility`]: anything that maps a [`Coalition`]
//! (a bit set over at most [`MAX_PLAYERS`] players) to a real number.
//!
//! # The valuation
//!
//! A participant's value is its Shapley value in that game,
//! `phi_i = sum over S not containing i of |S|! (n-|S|-1)! / n! * (U(S + i) - U(S))`,
//! computed per round (values over rounds are summed by the caller). Four [`Estimator`]s, each
//! seeded and bounded by an evaluation budget (one *evaluation* is one distinct coalition whose
//! utility was computed; repeated look-ups are served from a memo and not counted):
//!
//! - `exact` ([`Exact`]): evaluates all `2^n` coalitions in parallel (rayon, order-preserving
//!   collect) and applies the formula above, summing each player's terms sequentially in coalition
//!   order. The default up to 12 players. Satisfies efficiency (values sum to `U(all) - U(none)`),
//!   symmetry and the null-player property up to floating-point rounding.
//! - `gtg` ([`GtgShapley`]): GTG-Shapley-style permutation sampling, the default above 12
//!   players within a per-round budget of utility evaluations ([`default_budget`]: 1,000, or
//!   what one sample needs when that is more), reporting its own accuracy: each value's standard
//!   error as a sampled mean ([`Valuation::sampling_se`]). Sampling proceeds in rounds of
//!   `n` permutations in which player `k` is placed first in the `k`-th permutation (guided first
//!   positions) and the rest are shuffled; by default each permutation is followed by its reverse
//!   (antithetic pair), which makes the estimate exact for games with at most pairwise interactions.
//!   Within a permutation, the scan is truncated once the prefix is within a tolerance of `U(all)`
//!   *and* every player still to come has a leave-one-out effect `|U(all) - U(all - r)|` below the
//!   same tolerance (so a harmful player still to come always gets its marginal computed); the
//!   tolerance is relative to the largest of `|U(all) - U(none)|` and the leave-one-out effects, so
//!   a round whose total gain is tiny is never skipped and still charges harmful updates. Sampling
//!   stops when the relative change of the estimate over one round falls below a tolerance, at a
//!   round limit, or when the budget is spent (a permutation cut short by the budget is discarded
//!   with its antithetic partner).
//! - `kernelshap` ([`KernelShap`]): paired KernelSHAP with the efficiency constraint. Coalition
//!   sizes are taken in order of Shapley-kernel mass (1 and n-1, then 2 and n-2, ...); every size
//!   pair that fits in the budget is enumerated completely, the remaining budget is allocated over
//!   the other sizes in proportion to their kernel mass (largest remainder) and filled with
//!   uniformly drawn distinct coalitions, each drawn with its complement. The values solve the
//!   kernel-weighted least-squares problem subject to `sum phi = U(all) - U(none)` (Cholesky on the
//!   `n x n` normal equations). With a budget of `2^n` it reproduces the exact values.
//! - `loo` ([`LeaveOneOut`]): `U(all) - U(all - i)`, for comparison; not a Shapley value.
//!
//! Players the game declares null ([`Utility::null_players`]; [`LinearCombinationGame`] declares
//! those with an all-zero update or a zero weight) are left out of every estimator's work and get
//! exactly 0, so with `m` non-null players `exact` makes `2^m` evaluations.
//!
//! Randomness is a ChaCha20 stream keyed by the round's seed ([`rng_for_seed`]); integers below a
//! bound are drawn by rejection, shuffles are Fisher-Yates, and every reduction runs in a fixed
//! order, so the same inputs and seed give bit-identical values on the same build and platform.
//! The record keeps `estimator`, `seed` and `evaluations` ([`Valuation`]) and each value as
//! [`value_nano`] `= round(value * 1e9)`, from which rewards are computed exactly.
//!
//! # Rewards
//!
//! [`split_rewards`] splits a round's pool of integer base units in proportion to the positive
//! `value_nano` of eligible participants (copies are not eligible), with integer arithmetic and
//! largest-remainder rounding (ties to the ascending participant key), so the shares sum to the pool
//! exactly. Non-positive values earn nothing; if nobody has a positive eligible value nobody is paid
//! and the recorded pool is 0.
//!
//! # Uncertainty
//!
//! [`bootstrap_standard_errors`] gives each value a standard error from seeded bootstrap
//! resamples of the validation rows, reusing the coalition models already scored
//! ([`RowGame`] keeps each coalition's per-row scores) (the draws: [`bootstrap_rng`]).
//!
//! # Validators' consensus
//!
//! [`consensus`] is the game independent validators evaluate on their own holdouts: a coalition
//! list fixed by the round's announced seed and the sorted contributor keys alone (all subsets
//! up to 12 players, else a fixed number of sampled permutations, no truncation), the
//! per-coalition median of the validators' integer utility vectors, the Shapley values of that
//! consensus game, each validator's distance from it, the equal split of the validators' pool
//! among those near consensus, and the quality rule that keeps an update out of the aggregate.
//!
//! # Settlement over periods
//!
//! [`settle`] is the reward rule [`RULE_SETTLED`]: over a period of rounds, only rounds that
//! improved the model count, values accumulate, a value is paid only when it is distinguishable
//! from zero at the rule's `z` (accumulated value > z x combined standard error), and the
//! period's pool is split with [`split_rewards`]. [`settle_cumulative`] is the rule
//! [`RULE_SETTLED_CUMULATIVE`]: the same test over all rounds since the first, each period's
//! pool paid towards every participant's share of everything paid so far. [`settle_impact`] is
//! the default rule [`RULE_SETTLED_IMPACT`]: the cumulative rule with the values of rounds that
//! did not improve the model counted too (their pool is still nothing). Integer
//! arithmetic only, so `verify` recomputes every settlement from the ledger's recorded values.
//!
//! # Abuse flags
//!
//! [`detect`] returns, per participant, a list of flag strings:
//!
//! - `copy_of:<name>`: this update's cosine similarity with the update of `<name>`, received
//!   earlier, is at least [`AbuseConfig::copy_cosine`] (default 0.999). Put on the later-received
//!   update of the pair only; `<name>` is the earliest-received such participant.
//! - `free_rider`: the update's norm is at most [`AbuseConfig::free_rider_relative_norm`] times the
//!   median norm of the round's updates (zero or near-zero update), or its cosine with every other
//!   update is within `+-max(0.05, min(0.45, 2/sqrt(dim)))` ([`AbuseConfig::uncorrelated_sigmas`]):
//!   uncorrelated with everyone's.
//! - `declined`: the participant declined the round (its privacy budget did not fit); passed in by
//!   the coordinator, nothing is inferred.
//!
//! What the detection catches and what it cannot is documented on [`detect`].

mod abuse;
mod bootstrap;
mod coalition;
pub mod consensus;
mod error;
mod estimators;
mod game;
mod metrics;
mod rewards;
mod rng;
mod settle;

pub use abuse::{
    AbuseConfig, FLAG_COPY_OF_PREFIX, FLAG_DECLINED, FLAG_FREE_RIDER, Participation, cosine, detect,
};
pub use bootstrap::{RowGame, bootstrap_rng, bootstrap_standard_errors};
pub use coalition::{Coalition, MAX_PLAYERS};
pub use error::ValuationError;
pub use estimators::{
    EXACT_DEFAULT_MAX_PLAYERS, EXACT_HARD_MAX_PLAYERS, Estimator, Exact, GtgShapley,
    KERNELSHAP_MAX_PLAYERS, KernelShap, LeaveOneOut, Valuation, default_budget, default_estimator,
    estimator_by_name, value_nano,
};
pub use game::{LinearCombinationGame, Utility};
pub use metrics::{relative_l2, spearman};
pub use rewards::{RewardEntry, RewardSplit, split_rewards};
pub use rng::rng_for_seed;
pub use settle::{
    NonImproving, RULE_PER_ROUND, RULE_SETTLED, RULE_SETTLED_CUMULATIVE, RULE_SETTLED_IMPACT,
    RoundValues, SettledParticipant, Settlement, SettlementRule, ValueEntry, distinguishable,
    isqrt_u128, settle, settle_accumulated, settle_cumulative, settle_impact,
};
