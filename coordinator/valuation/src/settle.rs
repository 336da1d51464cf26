//! Settling rewards over periods of rounds from the values recorded for each round.
//!
//! Three rules, in integers only so that anyone recomputes them exactly from the ledger. The
//! first, [`RULE_SETTLED`] (`shapley-settled/v1`), settles each period on its own:
//!
//! 1. A round *counts* when it completed and its total gain (validation score after minus before,
//!    in nano-units) is positive. A round that did not improve the model adds no value to anyone
//!    and no units to the pool.
//! 2. Each participant's accumulated value `A` is the sum of its `value_nano` over the period's
//!    counted rounds in which it was eligible (a contribution flagged as a copy is not); `T` is
//!    the number of those rounds.
//! 3. Its variance `V` is the larger of two estimates, rounds treated as independent:
//!    - the validation-sampling variance, the sum of the squared standard errors `se_nano` of
//!      those rounds (bootstrap over validation rows);
//!    - the round-to-round variance, `T * s^2`, where `s` is a robust estimate of the noise of
//!      one round's value from the participant's whole history (its eligible values in every
//!      completed round up to the period's end, in round order): `s = m / (sqrt 2 * 0.6745)`
//!      with `m` the median of the absolute differences of successive values (the median
//!      absolute deviation of the differences, which a slow trend such as the large first
//!      rounds barely moves). It sees what the bootstrap cannot: an update whose effect changes
//!      sign from round to round (noise, a random update) however consistent it is within one
//!      round's validation rows. Fewer than two values: 0.
//! 4. `A` is *distinguishable from zero* when `A > 0` and `A > z * sqrt(V)` with
//!    `z = z_milli / 1000`, compared exactly in integers: a one-sided test at the normal
//!    approximation (`z = 2`: about 97.7% confidence).
//! 5. The period's pool is `pool_per_round` times the number of counted rounds; it is split in
//!    proportion to the distinguishable accumulated values by [`split_rewards`] (integer units,
//!    largest remainder, ties to the ascending key), so it is conserved exactly; if nobody is
//!    distinguishable nobody is paid and the recorded pool is 0.
//!
//! # Cumulative settlement ([`RULE_SETTLED_CUMULATIVE`], `shapley-settled/v2`)
//!
//! Settling each period on its own tests each period's evidence on its own: late periods,
//! after the model has converged, hold values of a few thousandths that are mostly noise, and
//! with several late periods one of them passes the test by chance now and then, paying one
//! hospital that period's whole pool. The cumulative rule settles instead on *all* the evidence
//! so far, so one noisy period moves the totals only as much as its values weigh among all:
//!
//! 1. At the end of each period, steps 1-4 above are applied to every round from round 1 to
//!    the period's end: each participant's accumulated value `A`, its variance and its verdict
//!    are over all counted rounds so far. Everyone with a contribution so far has a line (one
//!    absent from this period may still be owed a share).
//! 2. The period's pool is `pool_per_round` times the period's counted rounds, or 0 when
//!    nobody is distinguishable (as in v1). The cumulative pool `C` is what the earlier
//!    settlements paid, `P` (read from them: the recorded payouts), plus this period's pool.
//! 3. Each participant's *target* is its share of `C` in proportion to the distinguishable
//!    accumulated values (integer units, largest remainder): what it would have been paid had
//!    everything been settled now. Its *deficit* is `max(0, target - paid before)`.
//! 4. The period's pool is split in proportion to the deficits (integer units, largest
//!    remainder, ties to the ascending key), so it is conserved exactly.
//!
//! The deficits sum to at least the period's pool, so nobody is paid beyond its target: the
//! targets sum to `C` exactly, so `sum max(0, t_i - p_i) >= sum (t_i - p_i) = C - P = pool`.
//! A share `floor(pool * d_i / D)` with `D >= pool` is at most `d_i`, and a share rounded up
//! had a fractional part, so it is at most `d_i` too. (Only if `C` saturated at 2^64 units could
//! the deficits all be 0; the targets then split the pool.) Payments already made are never
//! taken back: a hospital paid in an early period more than its final target keeps it, and the
//! later pools go to the others until they reach theirs. Every period's pool therefore moves
//! the cumulative payouts towards the split of everything paid by all the evidence, which the
//! last settlement reaches exactly when nobody was overpaid.
//!
//! A multiple-testing correction (a larger `z` for later periods) would make chance passes rarer
//! but still settle each period on a handful of noisy rounds; accumulating the evidence makes
//! the early, informative rounds weigh in every later settlement as well.
//!
//! # Every round's impact counts ([`RULE_SETTLED_IMPACT`], `shapley-settled/v3`, the default)
//!
//! v1 and v2 leave a round that did not improve the model out entirely, so a hospital whose
//! update made the model worse in such a round (a large negative value) loses nothing by it,
//! and the order of rewards can differ from the order of the hospitals' total values. v3 is v2
//! with one change in step 1, the accumulation: every eligible value of every completed round
//! counts, whether the round improved the model or not. The pool still comes only from
//! improving rounds (step 2 of v2: `pool_per_round` times the period's counted rounds), so no
//! reward is paid for a round that did not improve the model, and `counted_rounds` names the
//! improving rounds only; but what a hospital did in every round decides its share of it.
//!
//! The standard errors combine as before, over every term added: each such round adds its
//! `se_nano^2` to the bootstrap sum and one to `T` (the rounds multiplying the round-to-round
//! variance `T * s^2`). A line's `rounds` is that `T`: every completed round it was eligible
//! in.
//!
//! A variant was measured and not chosen ([`NonImproving::HarmOnly`], no recorded rule): a
//! non-improving round adding only each value's negative part, `min(value, 0)` (harm counts,
//! help in a round that made the model worse does not). With the same standard errors (each
//! clipped term adds its round's `se^2` and one to `T`, an upper bound on its variance), it
//! still ordered the default run's rewards unlike the total values when a hospital's positive
//! values in non-improving rounds were what put it ahead (README, "Measured").

use crate::{RewardEntry, split_rewards};

/// The rule settled over periods, each period on its own.
pub const RULE_SETTLED: &str = "shapley-settled/v1";
/// The rule settled over periods from the values accumulated since round 1.
pub const RULE_SETTLED_CUMULATIVE: &str = "shapley-settled/v2";
/// [`RULE_SETTLED_CUMULATIVE`] with the values of non-improving rounds counted too (the
/// default).
pub const RULE_SETTLED_IMPACT: &str = "shapley-settled/v3";
/// The first rule: each round's pool split by that round's positive values.
pub const RULE_PER_ROUND: &str = "shapley-proportional/v1";

/// How a completed round whose total gain is not positive enters the accumulated values (it
/// never adds to the pool).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonImproving {
    /// It adds nothing ([`RULE_SETTLED`], [`RULE_SETTLED_CUMULATIVE`]).
    Ignored,
    /// Each eligible value adds its negative part, `min(value, 0)`. No recorded rule; kept to
    /// measure against.
    HarmOnly,
    /// Each eligible value adds in full ([`RULE_SETTLED_IMPACT`]).
    Full,
}

/// The parameters of [`RULE_SETTLED`], [`RULE_SETTLED_CUMULATIVE`] and [`RULE_SETTLED_IMPACT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettlementRule {
    /// Integer base units per counted round.
    pub pool_per_round: u64,
    /// Rounds per period (the last period ends with the federation and may be shorter).
    pub period_rounds: u64,
    /// The confidence threshold `z` times 1000.
    pub z_milli: u64,
}

impl SettlementRule {
    /// The period (from 1) that `round` (from 1) belongs to.
    pub fn period_of(&self, round: u64) -> u64 {
        round.saturating_sub(1) / self.period_rounds.max(1) + 1
    }

    /// True when `round` ends a period of a federation of `total_rounds` rounds: every
    /// `period_rounds` rounds and at the last round.
    pub fn ends_period(&self, round: u64, total_rounds: u64) -> bool {
        round == total_rounds || round.is_multiple_of(self.period_rounds.max(1))
    }

    /// The first round of `period`.
    pub fn first_round(&self, period: u64) -> u64 {
        period
            .saturating_sub(1)
            .saturating_mul(self.period_rounds.max(1))
            + 1
    }
}

/// One participant's recorded line in one round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueEntry<'a> {
    /// Public key, lowercase hex (orders the output, breaks ties in the rounding).
    pub participant_key_hex: &'a str,
    /// The round's value in nano-units.
    pub value_nano: i64,
    /// Its standard error in nano-units.
    pub se_nano: u64,
    /// False for a contribution flagged as a copy.
    pub eligible: bool,
}

/// One round as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundValues<'a> {
    pub round: u64,
    /// Completed (not abandoned).
    pub completed: bool,
    /// Validation score after the round minus before, nano-units.
    pub gain_nano: i64,
    pub entries: Vec<ValueEntry<'a>>,
}

/// One participant's settlement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettledParticipant {
    pub participant_key_hex: String,
    /// Accumulated value over the counted rounds it was eligible in, nano-units.
    pub value_nano: i64,
    /// Standard error of that sum, `floor(sqrt(V))` (the test itself is exact).
    pub se_nano: u64,
    /// Rounds whose value it accumulated: counted rounds (under [`RULE_SETTLED_IMPACT`] every
    /// completed round) it was eligible in.
    pub rounds: u64,
    /// Whether the accumulated value is distinguishable from zero (and so paid).
    pub distinguishable: bool,
    pub payout: u64,
}

/// A period's settlement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    /// The rounds that counted (completed, positive gain), ascending.
    pub counted_rounds: Vec<u64>,
    /// The pool split: `pool_per_round` times the counted rounds, or 0 if nobody is paid.
    pub pool: u64,
    /// Everyone with a contribution in the period, sorted by key; payouts sum to `pool`.
    pub participants: Vec<SettledParticipant>,
}

/// `floor(sqrt(x))` for `u128`, exactly.
pub fn isqrt_u128(x: u128) -> u128 {
    if x < 2 {
        return x;
    }
    // Newton's method from an over-estimate decreases monotonically to the floor.
    let mut r = 1u128 << (128 - x.leading_zeros()).div_ceil(2);
    loop {
        let next = (r + x / r) / 2;
        if next >= r {
            return r;
        }
        r = next;
    }
}

/// Whether `a` is distinguishable from zero given the sum of squared standard errors.
pub fn distinguishable(a: i64, se_sq_sum: u128, z_milli: u64) -> bool {
    if a <= 0 {
        return false;
    }
    let a = u128::from(a.unsigned_abs());
    let lhs = a.saturating_mul(a).saturating_mul(1_000_000);
    let z = u128::from(z_milli);
    let rhs = z.saturating_mul(z).saturating_mul(se_sq_sum);
    lhs > rhs
}

/// `0.6745` (the normal quantile of 0.75, which turns a median absolute deviation into a
/// standard deviation) as `MAD_NUM / MAD_DEN`.
const MAD_NUM: u128 = 6745;
const MAD_DEN: u128 = 10_000;

/// Twice the median of the absolute successive differences of `history` (so that it is an
/// integer for an even count), or `None` with fewer than two values.
pub fn twice_median_step(history: &[i64]) -> Option<u128> {
    if history.len() < 2 {
        return None;
    }
    let mut d: Vec<u128> = history
        .windows(2)
        .map(|w| (i128::from(w[1]) - i128::from(w[0])).unsigned_abs())
        .collect();
    d.sort_unstable();
    let m = d.len();
    Some(if m % 2 == 1 {
        2 * d[m / 2]
    } else {
        d[m / 2 - 1] + d[m / 2]
    })
}

/// Whether `a` is above `z` times the round-to-round standard error of a sum of `t` rounds
/// whose single-round noise is `s = m / (sqrt 2 * 0.6745)`, `m2 = 2m`:
/// `a^2 * 10^6 > z_milli^2 * t * m2^2 / (8 * 0.6745^2)`, exactly.
fn above_dispersion(a: i64, t: u64, m2: u128, z_milli: u64) -> bool {
    if a <= 0 {
        return false;
    }
    let a = u128::from(a.unsigned_abs());
    let z = u128::from(z_milli);
    // a^2 * 10^6 * 8 * MAD_NUM^2 > z^2 * t * m2^2 * MAD_DEN^2, both sides / 10^6.
    let lhs = a.saturating_mul(a).saturating_mul(8 * MAD_NUM * MAD_NUM);
    let rhs = z
        .saturating_mul(z)
        .saturating_mul(u128::from(t))
        .saturating_mul(m2.saturating_mul(m2))
        .saturating_mul(MAD_DEN * MAD_DEN / 1_000_000);
    lhs > rhs
}

/// `t * s^2` in squared nano-units, rounded down, for the record.
fn dispersion_variance(t: u64, m2: u128) -> u128 {
    u128::from(t)
        .saturating_mul(m2.saturating_mul(m2))
        .saturating_mul(MAD_DEN * MAD_DEN)
        / (8 * MAD_NUM * MAD_NUM)
}

/// One participant's accumulation, before any payout.
struct Line<'a> {
    key: &'a str,
    value: i64,
    variance: u128,
    rounds: u64,
    distinguishable: bool,
}

/// Steps 1-4 of the rules: the counted rounds from `from_round` on, and each participant with a
/// contribution from `from_round` on, sorted by key, with its value accumulated over those
/// counted rounds, its variance and its verdict. `rounds` is the history up to the period's end.
fn accumulate<'a>(
    rule: &SettlementRule,
    rounds: &[RoundValues<'a>],
    from_round: u64,
    non_improving: NonImproving,
) -> (Vec<u64>, Vec<Line<'a>>) {
    use std::collections::BTreeMap;
    struct Acc {
        value: i128,
        se_sq: u128,
        rounds: u64,
        history: Vec<i64>,
        in_range: bool,
    }
    let mut acc: BTreeMap<&str, Acc> = BTreeMap::new();
    let mut counted_rounds = Vec::new();
    for r in rounds {
        let in_range = r.round >= from_round;
        let counts = in_range && r.completed && r.gain_nano > 0;
        if counts {
            counted_rounds.push(r.round);
        }
        for e in &r.entries {
            let a = acc.entry(e.participant_key_hex).or_insert(Acc {
                value: 0,
                se_sq: 0,
                rounds: 0,
                history: Vec::new(),
                in_range: false,
            });
            a.in_range |= in_range;
            if r.completed && e.eligible {
                a.history.push(e.value_nano);
            }
            let term = if counts {
                Some(e.value_nano)
            } else if in_range && r.completed {
                match non_improving {
                    NonImproving::Ignored => None,
                    NonImproving::HarmOnly => Some(e.value_nano.min(0)),
                    NonImproving::Full => Some(e.value_nano),
                }
            } else {
                None
            };
            if let Some(v) = term.filter(|_| e.eligible) {
                a.value += i128::from(v);
                let se = u128::from(e.se_nano);
                a.se_sq = a.se_sq.saturating_add(se * se);
                a.rounds += 1;
            }
        }
    }
    counted_rounds.sort_unstable();
    let lines = acc
        .into_iter()
        .filter(|(_, a)| a.in_range)
        .map(|(key, a)| {
            let value = a.value.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
            let m2 = twice_median_step(&a.history).unwrap_or(0);
            let distinguishable = distinguishable(value, a.se_sq, rule.z_milli)
                && above_dispersion(value, a.rounds, m2, rule.z_milli);
            Line {
                key,
                value,
                variance: a.se_sq.max(dispersion_variance(a.rounds, m2)),
                rounds: a.rounds,
                distinguishable,
            }
        })
        .collect();
    (counted_rounds, lines)
}

fn settled_participant(l: &Line<'_>, payout: u64) -> SettledParticipant {
    SettledParticipant {
        participant_key_hex: l.key.to_owned(),
        value_nano: l.value,
        se_nano: u64::try_from(isqrt_u128(l.variance)).unwrap_or(u64::MAX),
        rounds: l.rounds,
        distinguishable: l.distinguishable,
        payout,
    }
}

/// Settles under [`RULE_SETTLED`] (see the module docs) the period made of the rounds of
/// `rounds` from `first_round` on; `rounds` is the federation's history up to the period's end,
/// ascending (its earlier rounds only inform each participant's round-to-round noise).
pub fn settle(rule: &SettlementRule, rounds: &[RoundValues<'_>], first_round: u64) -> Settlement {
    let (counted_rounds, lines) = accumulate(rule, rounds, first_round, NonImproving::Ignored);
    let pool = rule
        .pool_per_round
        .saturating_mul(counted_rounds.len() as u64);
    let entries: Vec<RewardEntry<'_>> = lines
        .iter()
        .map(|l| RewardEntry {
            participant_key_hex: l.key,
            value_nano: if l.distinguishable { l.value } else { 0 },
            eligible: l.distinguishable,
        })
        .collect();
    let split = split_rewards(pool, &entries);
    Settlement {
        counted_rounds,
        pool: split.recorded_pool,
        participants: lines
            .iter()
            .zip(&split.rewards)
            .map(|(l, &payout)| settled_participant(l, payout))
            .collect(),
    }
}

/// `pool` split in proportion to `weights` in integer units, largest remainder first, ties to
/// the earlier index (callers order by key); all zeros when the weights sum to 0. Exact while
/// `pool * weight` fits in `u128` (both below 2^64 here).
fn split_by_weight(pool: u64, weights: &[u128]) -> Vec<u64> {
    let total: u128 = weights.iter().fold(0u128, |t, &w| t.saturating_add(w));
    let mut out = vec![0u64; weights.len()];
    if total == 0 || pool == 0 {
        return out;
    }
    let mut remainders = Vec::with_capacity(weights.len());
    let mut given: u128 = 0;
    for (i, &w) in weights.iter().enumerate() {
        let product = u128::from(pool).saturating_mul(w);
        let share = (product / total).min(u128::from(pool));
        out[i] = share as u64;
        given += share;
        if w > 0 {
            remainders.push((i, product % total));
        }
    }
    let left = u128::from(pool).saturating_sub(given);
    remainders.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for &(i, _) in remainders.iter().take(left as usize) {
        out[i] += 1;
    }
    out
}

/// Settles under [`RULE_SETTLED_CUMULATIVE`] (see the module docs) the period made of the rounds
/// of `rounds` from `first_round` on: values accumulate over the whole history `rounds` (every
/// recorded round up to the period's end, ascending), and this period's pool goes to those
/// whose cumulative target exceeds what they were paid before, `paid_before` (the payouts of
/// the earlier settlements, by key).
pub fn settle_cumulative(
    rule: &SettlementRule,
    rounds: &[RoundValues<'_>],
    first_round: u64,
    paid_before: &std::collections::BTreeMap<&str, u64>,
) -> Settlement {
    settle_accumulated(
        rule,
        rounds,
        first_round,
        paid_before,
        NonImproving::Ignored,
    )
}

/// Settles under [`RULE_SETTLED_IMPACT`] (see the module docs): [`settle_cumulative`] with each
/// eligible value of a non-improving completed round counted as well.
pub fn settle_impact(
    rule: &SettlementRule,
    rounds: &[RoundValues<'_>],
    first_round: u64,
    paid_before: &std::collections::BTreeMap<&str, u64>,
) -> Settlement {
    settle_accumulated(rule, rounds, first_round, paid_before, NonImproving::Full)
}

/// The cumulative settlement with non-improving rounds entering the accumulation as
/// `non_improving` says: [`settle_cumulative`] and [`settle_impact`] are its recorded rules.
pub fn settle_accumulated(
    rule: &SettlementRule,
    rounds: &[RoundValues<'_>],
    first_round: u64,
    paid_before: &std::collections::BTreeMap<&str, u64>,
    non_improving: NonImproving,
) -> Settlement {
    let (all_counted, lines) = accumulate(rule, rounds, 1, non_improving);
    let counted_rounds: Vec<u64> = all_counted
        .into_iter()
        .filter(|&r| r >= first_round)
        .collect();
    let anyone = lines.iter().any(|l| l.distinguishable);
    let pool = if anyone {
        rule.pool_per_round
            .saturating_mul(counted_rounds.len() as u64)
    } else {
        0
    };
    let before = |l: &Line<'_>| paid_before.get(l.key).copied().unwrap_or(0);
    let paid: u64 = paid_before.values().fold(0u64, |t, &p| t.saturating_add(p));
    let cumulative_pool = paid.saturating_add(pool);
    let value_weights: Vec<u128> = lines
        .iter()
        .map(|l| {
            if l.distinguishable {
                u128::from(l.value.unsigned_abs())
            } else {
                0
            }
        })
        .collect();
    let targets = split_by_weight(cumulative_pool, &value_weights);
    let deficits: Vec<u128> = lines
        .iter()
        .zip(&targets)
        .map(|(l, &t)| u128::from(t.saturating_sub(before(l))))
        .collect();
    // The deficits sum to at least the pool (module docs); only a saturated cumulative pool
    // could leave them all 0, and then the targets split it.
    let payouts = if deficits.iter().any(|&d| d > 0) {
        split_by_weight(pool, &deficits)
    } else {
        split_by_weight(pool, &value_weights)
    };
    Settlement {
        counted_rounds,
        pool,
        participants: lines
            .iter()
            .zip(&payouts)
            .map(|(l, &payout)| settled_participant(l, payout))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const RULE: SettlementRule = SettlementRule {
        pool_per_round: 1000,
        period_rounds: 5,
        z_milli: 2000,
    };

    fn e(key: &str, value_nano: i64, se_nano: u64, eligible: bool) -> ValueEntry<'_> {
        ValueEntry {
            participant_key_hex: key,
            value_nano,
            se_nano,
            eligible,
        }
    }

    #[test]
    fn periods() {
        assert_eq!(RULE.period_of(1), 1);
        assert_eq!(RULE.period_of(5), 1);
        assert_eq!(RULE.period_of(6), 2);
        assert_eq!(RULE.first_round(2), 6);
        assert!(RULE.ends_period(5, 12));
        assert!(!RULE.ends_period(11, 12));
        assert!(RULE.ends_period(12, 12));
    }

    #[test]
    fn isqrt_is_the_floor() {
        for x in [
            0u128,
            1,
            2,
            3,
            4,
            15,
            16,
            17,
            99,
            100,
            101,
            u128::from(u64::MAX),
        ] {
            let r = isqrt_u128(x);
            assert!(r * r <= x && (r + 1) * (r + 1) > x, "{x}: {r}");
        }
        let r = isqrt_u128(u128::MAX);
        assert_eq!(r, u128::from(u64::MAX));
    }

    #[test]
    fn worked_example() {
        let rounds = vec![
            // Counted: a and b gain, c is noise, d a copy.
            RoundValues {
                round: 1,
                completed: true,
                gain_nano: 900,
                entries: vec![
                    e("a", 600, 50, true),
                    e("b", 300, 50, true),
                    e("c", 40, 100, true),
                    e("d", 300, 50, false),
                ],
            },
            // Made the model worse: adds nothing, not even c's large value.
            RoundValues {
                round: 2,
                completed: true,
                gain_nano: -10,
                entries: vec![
                    e("a", -5, 50, true),
                    e("b", -5, 50, true),
                    e("c", 10_000, 100, true),
                ],
            },
            RoundValues {
                round: 3,
                completed: false,
                gain_nano: 0,
                entries: vec![e("a", 0, 0, true)],
            },
        ];
        let s = settle(&RULE, &rounds, 1);
        assert_eq!(s.counted_rounds, vec![1]);
        // Nobody is distinguishable over this short, noisy history: nothing is paid.
        assert_eq!(s.pool, 0);
        let by: Vec<(&str, i64, u64, bool, u64)> = s
            .participants
            .iter()
            .map(|p| {
                (
                    p.participant_key_hex.as_str(),
                    p.value_nano,
                    p.se_nano,
                    p.distinguishable,
                    p.payout,
                )
            })
            .collect();
        assert_eq!(
            by,
            vec![
                // a's history 600, -5 (round 3 was abandoned): steps of 605 make its
                // round-to-round noise s = 605 / 0.954 = 634 > its bootstrap 50, so 600 is
                // not above 2 s; b's steps of 305 give s = 320 and 300 is not either.
                ("a", 600, 634, false, 0),
                ("b", 300, 319, false, 0),
                ("c", 40, 10_441, false, 0),
                ("d", 0, 0, false, 0),
            ]
        );
        // Nobody distinguishable: nobody paid, nothing recorded as paid.
        let noisy = vec![RoundValues {
            round: 6,
            completed: true,
            gain_nano: 5,
            entries: vec![e("a", 3, 10, true), e("b", 2, 10, true)],
        }];
        let s = settle(&RULE, &noisy, 6);
        assert_eq!(s.pool, 0);
        assert!(s.participants.iter().all(|p| p.payout == 0));
    }

    #[test]
    fn consistent_values_are_paid_and_alternating_ones_are_not() {
        // Two periods of three rounds; only the second is settled. "s" is steady (+100 each
        // round, bootstrap s.e. 10), "n" alternates +-300 around zero with a tiny bootstrap
        // s.e. that alone would call its +300 rounds significant.
        let mut rounds = Vec::new();
        for r in 1..=6u64 {
            let n = if r % 2 == 0 { 300 } else { -300 };
            rounds.push(RoundValues {
                round: r,
                completed: true,
                // Round 5 made the model worse; the others count.
                gain_nano: if r == 5 { -1 } else { 1 },
                entries: vec![e("s", 100, 10, true), e("n", n, 1, true)],
            });
        }
        let s = settle(&RULE, &rounds, 4);
        assert_eq!(s.counted_rounds, vec![4, 6]);
        assert_eq!(s.pool, 2000);
        let n = &s.participants[0];
        assert_eq!((n.participant_key_hex.as_str(), n.value_nano), ("n", 600));
        assert!(!n.distinguishable && n.payout == 0, "{n:?}");
        // Steps of 600: s = 600 / 0.954 = 629, over two rounds 889.
        assert_eq!(n.se_nano, 889);
        let st = &s.participants[1];
        assert_eq!((st.value_nano, st.se_nano, st.payout), (200, 14, 2000));
        assert!(st.distinguishable);
        assert_eq!(twice_median_step(&[1]), None);
        assert_eq!(twice_median_step(&[0, 3, 4, 10]), Some(6));
        assert_eq!(twice_median_step(&[0, 3, 4]), Some(4));
    }

    #[test]
    fn the_threshold_is_strict_and_exact() {
        // A = 2 * SE exactly with z = 2: not distinguishable; one more nano-unit is.
        assert!(!distinguishable(200, 100 * 100, 2000));
        assert!(distinguishable(201, 100 * 100, 2000));
        assert!(distinguishable(1, 0, 2000));
        assert!(!distinguishable(0, 0, 0));
        assert!(!distinguishable(-5, 0, 0));
        // Saturation never pays what it cannot compare.
        assert!(!distinguishable(i64::MAX, u128::MAX, u64::MAX));
    }

    #[test]
    fn cumulative_pays_towards_the_split_of_all_evidence() {
        // "a" earns steadily from round 1; "b" only shows a value in period 2, small against
        // a's history. Settled on its own, period 2 pays b alone; cumulatively b gets only
        // what brings it towards its share of everything paid.
        let mut rounds = Vec::new();
        for r in 1..=10u64 {
            let b = if r > 5 { 100 } else { 0 };
            rounds.push(RoundValues {
                round: r,
                completed: true,
                gain_nano: 1,
                entries: vec![
                    e("a", if r <= 5 { 1000 } else { 0 }, 1, true),
                    e("b", b, 1, true),
                ],
            });
        }
        let first = settle_cumulative(&RULE, &rounds[..5], 1, &Default::default());
        assert_eq!(first.pool, 5000);
        let paid: Vec<u64> = first.participants.iter().map(|p| p.payout).collect();
        assert_eq!(paid, vec![5000, 0]);
        let alone = settle(&RULE, &rounds, 6);
        assert_eq!(
            alone
                .participants
                .iter()
                .map(|p| p.payout)
                .collect::<Vec<_>>(),
            vec![0, 5000]
        );
        let before = [("a", 5000u64)].into_iter().collect();
        let s = settle_cumulative(&RULE, &rounds, 6, &before);
        assert_eq!(s.counted_rounds, vec![6, 7, 8, 9, 10]);
        assert_eq!(s.pool, 5000);
        let a = &s.participants[0];
        let b = &s.participants[1];
        // Cumulative lines: a 5000 over 10 rounds, b 500.
        assert_eq!((a.value_nano, a.rounds), (5000, 10));
        assert_eq!((b.value_nano, b.rounds), (500, 10));
        // a's steps are 0 except one of 1000, so its noise estimate is 0: distinguishable;
        // b's likewise. Targets of 10,000: a 9091 (deficit 4091), b 909: the pool splits
        // 5000 x 4091/5000 and 5000 x 909/5000.
        assert!(a.distinguishable && b.distinguishable);
        assert_eq!((a.payout, b.payout), (4091, 909));
        // A participant absent from the period keeps its line and may be owed.
        let mut later = rounds.clone();
        for r in &mut later[5..] {
            r.entries.retain(|e| e.participant_key_hex != "a");
        }
        let s = settle_cumulative(&RULE, &later, 6, &[("b", 0u64)].into_iter().collect());
        assert_eq!(s.participants.len(), 2);
        assert_eq!(s.participants.iter().map(|p| p.payout).sum::<u64>(), 5000);
    }

    #[test]
    fn impact_counts_every_round_but_pays_only_for_improving_ones() {
        // Rounds 1, 3 improve; round 2 made the model worse: "a" did the harm (-400), "b"
        // helped (+300), "c" was a copy.
        let mut rounds = Vec::new();
        for r in 1..=3u64 {
            let worse = r == 2;
            rounds.push(RoundValues {
                round: r,
                completed: true,
                gain_nano: if worse { -100 } else { 1000 },
                entries: vec![
                    e("a", if worse { -400 } else { 1000 }, 1, true),
                    e("b", if worse { 300 } else { 700 }, 1, true),
                    e("c", if worse { -900 } else { 700 }, 1, false),
                ],
            });
        }
        let rule = SettlementRule {
            pool_per_round: 1000,
            period_rounds: 3,
            z_milli: 0,
        };
        let none = Default::default();
        let v2 = settle_cumulative(&rule, &rounds, 1, &none);
        let v3 = settle_impact(&rule, &rounds, 1, &none);
        let harm = settle_accumulated(&rule, &rounds, 1, &none, NonImproving::HarmOnly);
        // The pool comes from the improving rounds only, under every variant.
        for s in [&v2, &v3, &harm] {
            assert_eq!((s.counted_rounds.clone(), s.pool), (vec![1, 3], 2000));
        }
        let lines = |s: &Settlement| -> Vec<(i64, u64, u64)> {
            s.participants
                .iter()
                .map(|p| (p.value_nano, p.rounds, p.payout))
                .collect()
        };
        // v2: a 2000 over 2 rounds, b 1400: paid 2000 x 2000/3400 and 2000 x 1400/3400.
        assert_eq!(lines(&v2), vec![(2000, 2, 1176), (1400, 2, 824), (0, 0, 0)]);
        // v3: every value counts, a 1600 and b 1700 over 3 rounds: 2000 x 1600/3300 and
        // 2000 x 1700/3300 (the order of the total values).
        assert_eq!(lines(&v3), vec![(1600, 3, 970), (1700, 3, 1030), (0, 0, 0)]);
        // Harm only: a's -400 counts, b's +300 does not: 1600 and 1400, the other order.
        assert_eq!(
            lines(&harm),
            vec![(1600, 3, 1067), (1400, 3, 933), (0, 0, 0)]
        );
        // The non-improving round enters b's variance: its steps of 400 make s = 400 / 0.954
        // = 419, over three rounds sqrt(3) x 419 = 726 (v2, over two: 593).
        assert_eq!(
            (v2.participants[1].se_nano, v3.participants[1].se_nano),
            (593, 726)
        );
        // A round made worse by everyone pays nothing, its values still recorded.
        let worse = vec![RoundValues {
            round: 1,
            completed: true,
            gain_nano: -5,
            entries: vec![e("a", -3, 1, true), e("b", 2, 1, true)],
        }];
        let s = settle_impact(&rule, &worse, 1, &none);
        assert_eq!((s.pool, s.counted_rounds.len()), (0, 0));
        assert!(s.participants.iter().all(|p| p.payout == 0));
        assert_eq!(
            s.participants
                .iter()
                .map(|p| p.value_nano)
                .collect::<Vec<_>>(),
            vec![-3, 2]
        );
        // An abandoned round adds nothing under any rule.
        let abandoned = vec![RoundValues {
            round: 1,
            completed: false,
            gain_nano: 0,
            entries: vec![e("a", 50, 1, true)],
        }];
        assert_eq!(
            settle_impact(&rule, &abandoned, 1, &none).participants[0].rounds,
            0
        );
    }

    /// A round as generated: gain, completed, and (key index, value, s.e., eligible) lines.
    type RawRound = (i64, bool, Vec<(u8, i64, u64, bool)>);

    /// The rounds a drawn history describes (round numbers from 1; a key at most once per
    /// round), with the participants' keys from `keys`.
    fn rounds_of<'k>(raw: &[RawRound], keys: &'k [String]) -> Vec<RoundValues<'k>> {
        raw.iter()
            .enumerate()
            .map(|(i, (gain, completed, entries))| {
                let mut seen = std::collections::BTreeSet::new();
                RoundValues {
                    round: i as u64 + 1,
                    completed: *completed,
                    gain_nano: *gain,
                    entries: entries
                        .iter()
                        .filter(|(k, ..)| seen.insert(*k))
                        .map(|&(k, v, se, el)| e(&keys[k as usize], v, se, el))
                        .collect(),
                }
            })
            .collect()
    }

    fn rounds_strategy() -> impl Strategy<Value = Vec<RawRound>> {
        prop::collection::vec(
            (
                prop_oneof![-1_000i64..1_000, Just(i64::MIN), Just(i64::MAX)],
                prop::bool::weighted(0.9),
                prop::collection::vec(
                    (
                        0u8..12,
                        prop_oneof![
                            -1_000_000i64..1_000_000,
                            Just(i64::MAX / 2),
                            Just(i64::MIN / 2)
                        ],
                        prop_oneof![0u64..100_000, Just(u64::MAX)],
                        prop::bool::weighted(0.85),
                    ),
                    0..10,
                ),
            ),
            0..8,
        )
    }

    proptest! {
        /// Pool conservation and integer units in every settlement: the payouts sum to the
        /// recorded pool exactly, which is the counted rounds' pool or 0, and only
        /// distinguishable, positive accumulated values are paid.
        #[test]
        fn conserves_the_pool_in_integer_units(
            pool_per_round in prop_oneof![0u64..10_000, any::<u64>()],
            z_milli in prop_oneof![0u64..5000, any::<u64>()],
            raw in rounds_strategy(),
        ) {
            let keys: Vec<String> = (0..12u8).map(|k| format!("{k:02x}")).collect();
            let rule = SettlementRule { pool_per_round, period_rounds: 5, z_milli };
            let rounds = rounds_of(&raw, &keys);
            let first = rounds.len() as u64 / 2 + 1;
            let s = settle(&rule, &rounds, first);
            let counted = rounds.iter().filter(|r| r.round >= first && r.completed && r.gain_nano > 0).count() as u64;
            let paid: u128 = s.participants.iter().map(|p| u128::from(p.payout)).sum();
            prop_assert_eq!(paid, u128::from(s.pool));
            let anyone = s.participants.iter().any(|p| p.distinguishable);
            let full = pool_per_round.saturating_mul(counted);
            prop_assert_eq!(s.pool, if anyone { full } else { 0 });
            for p in &s.participants {
                if !p.distinguishable {
                    prop_assert_eq!(p.payout, 0);
                } else {
                    prop_assert!(p.value_nano > 0);
                }
            }
            // Sorted by key, each once.
            prop_assert!(s.participants.windows(2).all(|w| w[0].participant_key_hex < w[1].participant_key_hex));
            // Deterministic.
            prop_assert_eq!(settle(&rule, &rounds, first), s);
        }

        /// The cumulative rule over successive periods: each settlement conserves its period's
        /// pool in integer units, pays only distinguishable participants, and never takes anyone
        /// beyond its cumulative target; a nobody-distinguishable period pays nothing.
        #[test]
        fn cumulative_conserves_each_pool_and_respects_the_targets(
            pool_per_round in prop_oneof![0u64..10_000, 0u64..(1 << 40)],
            z_milli in prop_oneof![0u64..5000, any::<u64>()],
            period_rounds in 1u64..4,
            raw in rounds_strategy(),
        ) {
            let rule = SettlementRule { pool_per_round, period_rounds, z_milli };
            check_periods(&rule, &raw, NonImproving::Ignored)?;
        }

        /// The same for the impact rule (v3): conservation, integer units, targets; and each
        /// line's value is the sum of its values in every completed round it was eligible in,
        /// recomputed independently.
        #[test]
        fn impact_conserves_each_pool_and_respects_the_targets(
            pool_per_round in prop_oneof![0u64..10_000, 0u64..(1 << 40)],
            z_milli in prop_oneof![0u64..5000, any::<u64>()],
            period_rounds in 1u64..4,
            raw in rounds_strategy(),
        ) {
            let rule = SettlementRule { pool_per_round, period_rounds, z_milli };
            check_periods(&rule, &raw, NonImproving::Full)?;
        }

        /// And for the variant measured against it (harm only).
        #[test]
        fn harm_only_conserves_each_pool_and_respects_the_targets(
            pool_per_round in prop_oneof![0u64..10_000, 0u64..(1 << 40)],
            z_milli in prop_oneof![0u64..5000, any::<u64>()],
            period_rounds in 1u64..4,
            raw in rounds_strategy(),
        ) {
            let rule = SettlementRule { pool_per_round, period_rounds, z_milli };
            check_periods(&rule, &raw, NonImproving::HarmOnly)?;
        }
    }

    /// Settles every period of the drawn history `raw` in turn under the cumulative settlement
    /// with `non_improving` and checks each settlement (see the properties above).
    fn check_periods(
        rule: &SettlementRule,
        raw: &[RawRound],
        non_improving: NonImproving,
    ) -> Result<(), TestCaseError> {
        let (rule, pool_per_round) = (*rule, rule.pool_per_round);
        let keys: Vec<String> = (0..12u8).map(|k| format!("{k:02x}")).collect();
        let rounds = rounds_of(raw, &keys);

        let total = rounds.len() as u64;
        let mut paid: std::collections::BTreeMap<&str, u64> = Default::default();
        for end in (1..=total).filter(|&r| rule.ends_period(r, total)) {
            let first = rule.first_round(rule.period_of(end));
            let history = &rounds[..end as usize];
            let s = settle_accumulated(&rule, history, first, &paid, non_improving);
            let counted = history
                .iter()
                .filter(|r| r.round >= first && r.completed && r.gain_nano > 0)
                .count() as u64;
            let anyone = s.participants.iter().any(|p| p.distinguishable);
            prop_assert_eq!(s.pool, if anyone { pool_per_round * counted } else { 0 });
            let sum: u128 = s.participants.iter().map(|p| u128::from(p.payout)).sum();
            prop_assert_eq!(sum, u128::from(s.pool));
            // The targets of the cumulative pool, recomputed independently.
            let c: u128 = paid.values().map(|&p| u128::from(p)).sum::<u128>() + u128::from(s.pool);
            let total_value: u128 = s
                .participants
                .iter()
                .filter(|p| p.distinguishable)
                .map(|p| u128::from(p.value_nano.unsigned_abs()))
                .sum();
            for p in &s.participants {
                if !p.distinguishable {
                    prop_assert_eq!(p.payout, 0);
                    continue;
                }
                prop_assert!(p.value_nano > 0);
                // ceil of the exact target bounds what it may have in all.
                let v = u128::from(p.value_nano.unsigned_abs());
                let ceil_target = (c * v).div_ceil(total_value);
                let had = u128::from(
                    paid.get(p.participant_key_hex.as_str())
                        .copied()
                        .unwrap_or(0),
                );
                prop_assert!(
                    p.payout == 0 || had + u128::from(p.payout) <= ceil_target,
                    "{} paid {} on top of {} beyond its target {}",
                    p.participant_key_hex,
                    p.payout,
                    had,
                    ceil_target
                );
            }
            // Lines: everyone with a contribution so far, sorted by key.
            let mut everyone: Vec<&str> = history
                .iter()
                .flat_map(|r| r.entries.iter().map(|e| e.participant_key_hex))
                .collect();
            everyone.sort_unstable();
            everyone.dedup();
            let named: Vec<&str> = s
                .participants
                .iter()
                .map(|p| p.participant_key_hex.as_str())
                .collect();
            prop_assert_eq!(named, everyone);
            prop_assert_eq!(
                settle_accumulated(&rule, history, first, &paid, non_improving),
                s.clone()
            );
            let named_rule = match non_improving {
                NonImproving::Ignored => Some(settle_cumulative(&rule, history, first, &paid)),
                NonImproving::Full => Some(settle_impact(&rule, history, first, &paid)),
                NonImproving::HarmOnly => None,
            };
            prop_assert!(named_rule.is_none_or(|n| n == s));
            // Each line's value and rounds, recomputed independently.
            for p in &s.participants {
                let (mut value, mut n) = (0i128, 0u64);
                for r in history.iter().filter(|r| r.completed) {
                    for e in r
                        .entries
                        .iter()
                        .filter(|e| e.eligible && e.participant_key_hex == p.participant_key_hex)
                    {
                        let term = match (r.gain_nano > 0, non_improving) {
                            (true, _) => Some(e.value_nano),
                            (false, NonImproving::Ignored) => None,
                            (false, NonImproving::HarmOnly) => Some(e.value_nano.min(0)),
                            (false, NonImproving::Full) => Some(e.value_nano),
                        };
                        if let Some(t) = term {
                            value += i128::from(t);
                            n += 1;
                        }
                    }
                }
                let value = value.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
                prop_assert_eq!(
                    (p.value_nano, p.rounds),
                    (value, n),
                    "{}",
                    p.participant_key_hex
                );
            }
            for p in &s.participants {
                let k = keys
                    .iter()
                    .find(|k| **k == p.participant_key_hex)
                    .map(String::as_str)
                    .unwrap_or("");
                *paid.entry(k).or_insert(0) += p.payout;
            }
        }
        Ok(())
    }
}
