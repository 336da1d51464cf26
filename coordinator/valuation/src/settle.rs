//! Settling rewards over a period of rounds from the values recorded for each round.
//!
//! The rule ([`RULE_SETTLED`]), in integers only so that anyone recomputes it exactly from the
//! ledger:
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

use crate::{RewardEntry, split_rewards};

/// The rule settled over periods (the default).
pub const RULE_SETTLED: &str = "shapley-settled/v1";
/// The first rule: each round's pool split by that round's positive values.
pub const RULE_PER_ROUND: &str = "shapley-proportional/v1";

/// The parameters of [`RULE_SETTLED`].
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
    /// Counted rounds whose value it accumulated.
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

/// Settles under [`RULE_SETTLED`] (see the module docs) the period made of the rounds of
/// `rounds` from `first_round` on; `rounds` is the federation's history up to the period's end,
/// ascending (its earlier rounds only inform each participant's round-to-round noise).
pub fn settle(rule: &SettlementRule, rounds: &[RoundValues<'_>], first_round: u64) -> Settlement {
    use std::collections::BTreeMap;
    struct Acc {
        value: i128,
        se_sq: u128,
        rounds: u64,
        history: Vec<i64>,
        in_period: bool,
    }
    let mut acc: BTreeMap<&str, Acc> = BTreeMap::new();
    let mut counted_rounds = Vec::new();
    for r in rounds {
        let in_period = r.round >= first_round;
        let counts = in_period && r.completed && r.gain_nano > 0;
        if counts {
            counted_rounds.push(r.round);
        }
        for e in &r.entries {
            let a = acc.entry(e.participant_key_hex).or_insert(Acc {
                value: 0,
                se_sq: 0,
                rounds: 0,
                history: Vec::new(),
                in_period: false,
            });
            a.in_period |= in_period;
            if r.completed && e.eligible {
                a.history.push(e.value_nano);
            }
            if counts && e.eligible {
                a.value += i128::from(e.value_nano);
                let se = u128::from(e.se_nano);
                a.se_sq = a.se_sq.saturating_add(se * se);
                a.rounds += 1;
            }
        }
    }
    counted_rounds.sort_unstable();
    let pool = rule
        .pool_per_round
        .saturating_mul(counted_rounds.len() as u64);
    let lines: Vec<(&str, i64, u128, u64, bool)> = acc
        .iter()
        .filter(|(_, a)| a.in_period)
        .map(|(k, a)| {
            let value = a.value.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
            let m2 = twice_median_step(&a.history).unwrap_or(0);
            let d = distinguishable(value, a.se_sq, rule.z_milli)
                && above_dispersion(value, a.rounds, m2, rule.z_milli);
            let variance = a.se_sq.max(dispersion_variance(a.rounds, m2));
            (*k, value, variance, a.rounds, d)
        })
        .collect();
    let entries: Vec<RewardEntry<'_>> = lines
        .iter()
        .map(|&(k, v, _, _, d)| RewardEntry {
            participant_key_hex: k,
            value_nano: if d { v } else { 0 },
            eligible: d,
        })
        .collect();
    let split = split_rewards(pool, &entries);
    let participants = lines
        .iter()
        .zip(&split.rewards)
        .map(|(&(k, v, se_sq, rounds, d), &payout)| SettledParticipant {
            participant_key_hex: k.to_owned(),
            value_nano: v,
            se_nano: u64::try_from(isqrt_u128(se_sq)).unwrap_or(u64::MAX),
            rounds,
            distinguishable: d,
            payout,
        })
        .collect();
    Settlement {
        counted_rounds,
        pool: split.recorded_pool,
        participants,
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

    /// A round as generated: gain, completed, and (key index, value, s.e., eligible) lines.
    type RawRound = (i64, bool, Vec<(u8, i64, u64, bool)>);

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
            let rounds: Vec<RoundValues<'_>> = raw
                .iter()
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
                .collect();
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
    }
}
