//! Splitting a round's reward pool by value, in integer base units.

/// One participant's claim on the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RewardEntry<'a> {
    /// The participant's public key in lowercase hex: breaks ties in the rounding.
    pub participant_key_hex: &'a str,
    /// Its value in nano-units ([`super::value_nano`]).
    pub value_nano: i64,
    /// Whether it may be paid (copies are not).
    pub eligible: bool,
}

/// The split of one round's pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewardSplit {
    /// The pool as recorded: the configured pool, or 0 if nobody had a positive eligible value.
    pub recorded_pool: u64,
    /// One reward per entry, in entry order; they sum to `recorded_pool` exactly.
    pub rewards: Vec<u64>,
}

/// Splits `pool` base units in proportion to the positive `value_nano` of eligible entries.
///
/// Entry `i` first gets `floor(pool * v_i / V)` with `V` the sum of positive eligible values; the
/// units left over (fewer than the number of paid entries) go one each to the largest remainders
/// `pool * v_i mod V`, ties to the ascending participant key (then entry order). Non-positive or
/// ineligible entries get 0. If no entry is positive and eligible, every reward and the recorded
/// pool are 0. Integer arithmetic only (`u128`), so the result is the same everywhere.
pub fn split_rewards(pool: u64, entries: &[RewardEntry<'_>]) -> RewardSplit {
    let paid: Vec<usize> = (0..entries.len())
        .filter(|&i| entries[i].eligible && entries[i].value_nano > 0)
        .collect();
    let mut rewards = vec![0u64; entries.len()];
    // value_nano > 0 so the conversion is exact; the total of at most 2^64 entries of < 2^63
    // fits in u128, and pool * value < 2^127.
    let value = |i: usize| entries[i].value_nano.unsigned_abs() as u128;
    let total: u128 = paid.iter().map(|&i| value(i)).sum();
    if total == 0 || pool == 0 {
        return RewardSplit {
            recorded_pool: if total == 0 { 0 } else { pool },
            rewards,
        };
    }
    let mut remainders = Vec::with_capacity(paid.len());
    let mut given: u128 = 0;
    for &i in &paid {
        let product = u128::from(pool) * value(i);
        let share = product / total;
        // share <= pool, so it fits in u64.
        rewards[i] = share as u64;
        given += share;
        remainders.push((i, product % total));
    }
    let left = u128::from(pool) - given;
    remainders.sort_by(|a, b| {
        b.1.cmp(&a.1)
            .then_with(|| {
                entries[a.0]
                    .participant_key_hex
                    .cmp(entries[b.0].participant_key_hex)
            })
            .then(a.0.cmp(&b.0))
    });
    for &(i, _) in remainders.iter().take(left as usize) {
        rewards[i] += 1;
    }
    debug_assert_eq!(
        rewards.iter().map(|&r| u128::from(r)).sum::<u128>(),
        u128::from(pool)
    );
    RewardSplit {
        recorded_pool: pool,
        rewards,
    }
}

/// Orders by value then key, as the rounding does (used by the tests' monotonicity property).
#[cfg(test)]
pub(crate) fn order(a: &RewardEntry<'_>, b: &RewardEntry<'_>) -> std::cmp::Ordering {
    a.value_nano
        .cmp(&b.value_nano)
        .then_with(|| b.participant_key_hex.cmp(a.participant_key_hex))
}

#[cfg(test)]
mod tests {
    use std::cmp::Ordering;

    use proptest::prelude::*;

    use super::*;

    fn entry(key: &str, value_nano: i64, eligible: bool) -> RewardEntry<'_> {
        RewardEntry {
            participant_key_hex: key,
            value_nano,
            eligible,
        }
    }

    #[test]
    fn worked_example() {
        // 10 units over values 1:1:1 -> 3.33 each; the leftover unit goes to the smallest key.
        let e = [
            entry("bb", 5, true),
            entry("aa", 5, true),
            entry("cc", 5, true),
        ];
        let split = split_rewards(10, &e);
        assert_eq!(split.rewards, vec![3, 4, 3]);
        assert_eq!(split.recorded_pool, 10);
        // A copy and a harmful participant earn nothing.
        let e = [
            entry("a", 300, true),
            entry("b", 100, true),
            entry("d", 100, false),
            entry("f", -50, true),
        ];
        assert_eq!(split_rewards(1000, &e).rewards, vec![750, 250, 0, 0]);
    }

    #[test]
    fn nobody_positive_means_no_pool() {
        let e = [
            entry("a", 0, true),
            entry("b", -3, true),
            entry("c", 7, false),
        ];
        let split = split_rewards(1000, &e);
        assert_eq!(
            split,
            RewardSplit {
                recorded_pool: 0,
                rewards: vec![0, 0, 0]
            }
        );
        assert_eq!(split_rewards(1000, &[]).recorded_pool, 0);
    }

    #[test]
    fn extreme_values_do_not_overflow() {
        let e = [
            entry("a", i64::MAX, true),
            entry("b", i64::MAX, true),
            entry("c", 1, true),
        ];
        let split = split_rewards(u64::MAX, &e);
        assert_eq!(
            split.rewards.iter().map(|&r| u128::from(r)).sum::<u128>(),
            u128::from(u64::MAX)
        );
        // The pool equals the total value here, so each share is its value exactly.
        assert_eq!(split.rewards, vec![i64::MAX as u64, i64::MAX as u64, 1]);
    }

    fn entries_strategy() -> impl Strategy<Value = Vec<(String, i64, bool)>> {
        prop::collection::vec(
            (
                "[0-9a-f]{4}",
                prop_oneof![-1_000_000i64..1_000_000, 0i64..5, Just(i64::MAX / 3)],
                prop::bool::weighted(0.8),
            ),
            0..12,
        )
    }

    proptest! {
        #[test]
        fn sums_to_pool_and_is_monotone(pool in prop_oneof![0u64..1000, any::<u64>()], raw in entries_strategy()) {
            let entries: Vec<RewardEntry<'_>> = raw.iter().map(|(k, v, e)| entry(k, *v, *e)).collect();
            let split = split_rewards(pool, &entries);
            let any_positive = entries.iter().any(|e| e.eligible && e.value_nano > 0);
            let sum: u128 = split.rewards.iter().map(|&r| u128::from(r)).sum();
            prop_assert_eq!(split.recorded_pool, if any_positive { pool } else { 0 });
            prop_assert_eq!(sum, u128::from(split.recorded_pool));
            let total: u128 = entries.iter().filter(|e| e.eligible && e.value_nano > 0).map(|e| e.value_nano as u128).sum();
            for (e, &r) in entries.iter().zip(&split.rewards) {
                if !e.eligible || e.value_nano <= 0 {
                    prop_assert_eq!(r, 0);
                } else {
                    // Within one unit above the exact proportional floor.
                    let floor = u128::from(pool) * e.value_nano as u128 / total;
                    prop_assert!(u128::from(r) == floor || u128::from(r) == floor + 1);
                }
            }
            for (a, ra) in entries.iter().zip(&split.rewards) {
                for (b, rb) in entries.iter().zip(&split.rewards) {
                    if a.eligible && b.eligible && order(a, b) == Ordering::Greater {
                        // Higher value (or equal value and smaller key) never earns less.
                        prop_assert!(ra >= rb, "{:?} got {} < {:?} got {}", a, ra, b, rb);
                    }
                }
            }
        }
    }
}
