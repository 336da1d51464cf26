//! Validators' consensus: the game every validator evaluates identically, and the values that
//! follow from their utility vectors, in integers where a record must be recomputed exactly.
//!
//! # The game ([`design`])
//!
//! The players are the round's contributors sorted by key (ascending), so the design depends on
//! nothing the coordinator chooses after the round opened: `(seed, sorted keys)` alone, with the
//! seed announced in the task header before any upload. Up to `exact_max` players the coalitions
//! are all `2^n` subsets in ascending order of their bit masks (player `i` is bit `i`); above, a
//! fixed number of permutations, each a Fisher-Yates shuffle of `0..n` drawn in turn from
//! [`crate::rng_for_seed`]`(seed)`, and the coalitions are every prefix of every permutation
//! (sizes 0 to `n`) in order of first appearance. There is no truncation and nothing adapts to
//! the utilities, so a validator can evaluate the whole list before anyone sees its numbers, and
//! any two validators evaluate the same list.
//!
//! # A validator's vector
//!
//! The utility of every coalition in list order, as integer nano-units (`round(u * 1e9)`); a
//! vector of another length is refused ([`check_vector`]).
//!
//! # Consensus ([`consensus`])
//!
//! Each validator's utilities are first taken relative to its own `U(none)` (the round's
//! starting model on its holdout): `g_v(S) = u_v(S) - u_v(none)`. This changes none of its
//! own game's values (Shapley values ignore a constant), but it removes the level at which a
//! holdout scores every model (an honest harder holdout scores all of them lower), which a
//! per-coalition median would otherwise mix from coalition to coalition. Then, per coalition,
//! the median of the `g_v(S)` (for an even count, the mean of the two middle ones rounded
//! toward negative infinity). The consensus game is a game like any other, so its Shapley
//! values sum to its `U(all) - U(none)` (efficiency). The median bounds what a minority can do:
//! with fewer than half of the validators lying, every consensus gain lies between two honest
//! validators' gains.
//!
//! Only validators in good standing enter the final median, in two passes: a first median over
//! the validators within the governed distance on their standing before this round (or judged
//! in no round yet; [`good_standing`]), then the final median over those whose standing with
//! this round, measured against the first, is within the distance. When no validator
//! qualifies, all do. A validator that lies is left out of the median from the round it is
//! flagged in, the first one included (its distance is still measured against the consensus,
//! and it comes back only if its numbers do).
//!
//! # Values ([`values`])
//!
//! Exact designs: the Shapley formula over the list. Permutation designs: the mean over the
//! permutations of each player's marginal `U(prefix + i) - U(prefix)`. The same function values
//! the consensus game and each validator's own game; floating point in a fixed order, so the
//! coordinator and `verify` get the same bits, recorded as [`crate::value_nano`].
//!
//! # Distance and flags ([`standing_distances`])
//!
//! A round's record judges each validator by its *standing*: its own games' values and the
//! consensus values, each summed per contributor (by key) over every round it was judged in
//! so far, this one included ([`Standing`]). One round of a federation that has nearly
//! converged carries little signal (its DP-noised updates change the model little, and a small
//! holdout's game is mostly its own noise), so a single round cannot tell a noisy honest
//! validator from a liar; summed over rounds, the honest signal adds up and the noise does not,
//! while a liar's values stay far from consensus round after round. The first round a validator
//! is judged in, its standing is that round alone.
//!
//! A validator's distance from consensus is the L2 distance between the values of its own game
//! and the consensus values, relative to the round's scale, in thousandths
//! (`round(1000 * |phi_v - phi_c| / s)`, saturating), where the scale `s` is the larger of
//! `|phi_c|` and the median over validators of `|phi_v|` (`u64::MAX` when every norm is zero and
//! its distance is not). It measures what matters for pay (the values), not the level of the
//! utilities, which differs honestly between holdouts of different difficulty. The scale is
//! not `|phi_c|` alone: in a round whose updates change little, honest games are mostly the
//! noise of small holdouts, the consensus values are near zero, and a distance relative to them
//! alone would flag honest validators at random. A validator that reports the opposite of the
//! others (an inverted game) sits near 2,000 whatever the round's scale; honest validators of
//! an uninformative round (independent noise of equal size) typically below 1,000. Validators above the governed limit are flagged
//! and share nothing of the validators' pool ([`validator_rewards`]).

use std::collections::{BTreeMap, HashMap};

use crate::{Coalition, RewardEntry, ValuationError, rng::shuffle, rng_for_seed, split_rewards};

/// The coalitions every validator evaluates, and how values follow from them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Design {
    /// Players.
    pub players: usize,
    /// The coalitions, in the order of every utility vector.
    pub coalitions: Vec<Coalition>,
    /// Empty for an exact design; else the sampled permutations.
    pub permutations: Vec<Vec<usize>>,
}

/// The design for `players` contributors (sorted by key) and the round's announced `seed`:
/// exact up to `exact_max` players (at most 12), else `permutations` sampled permutations.
pub fn design(
    seed: u64,
    players: usize,
    exact_max: usize,
    permutations: usize,
) -> Result<Design, ValuationError> {
    if players > crate::MAX_PLAYERS {
        return Err(ValuationError::TooManyPlayers {
            players,
            max: crate::MAX_PLAYERS,
        });
    }
    let exact_max = exact_max.min(crate::EXACT_HARD_MAX_PLAYERS);
    if players <= exact_max {
        let coalitions = (0..1u64 << players).map(Coalition::from_bits).collect();
        return Ok(Design {
            players,
            coalitions,
            permutations: Vec::new(),
        });
    }
    if permutations == 0 {
        return Err(ValuationError::BudgetTooSmall {
            estimator: "validators",
            budget: 0,
            needed: 1,
        });
    }
    let mut rng = rng_for_seed(seed);
    let mut seen: HashMap<Coalition, usize> = HashMap::new();
    let mut coalitions = Vec::new();
    let mut orders = Vec::with_capacity(permutations);
    for _ in 0..permutations {
        let mut order: Vec<usize> = (0..players).collect();
        shuffle(&mut rng, &mut order);
        let mut prefix = Coalition::EMPTY;
        for step in 0..=players {
            if step > 0 {
                prefix = prefix.with(order[step - 1]);
            }
            seen.entry(prefix).or_insert_with(|| {
                coalitions.push(prefix);
                coalitions.len() - 1
            });
        }
        orders.push(order);
    }
    Ok(Design {
        players,
        coalitions,
        permutations: orders,
    })
}

impl Design {
    /// The list as bytes, for the digest validators sign: per coalition, its members' indices
    /// ascending, comma-separated, one coalition per line (`\n` after each; the empty coalition
    /// is an empty line).
    pub fn canonical(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for c in &self.coalitions {
            let members: Vec<String> = c.members().map(|i| i.to_string()).collect();
            out.extend_from_slice(members.join(",").as_bytes());
            out.push(b'\n');
        }
        out
    }

    fn index(&self) -> HashMap<Coalition, usize> {
        self.coalitions
            .iter()
            .enumerate()
            .map(|(i, c)| (*c, i))
            .collect()
    }
}

/// Refuses a vector that is not one utility per coalition of the design.
pub fn check_vector(design: &Design, utilities: &[i64]) -> Result<(), ValuationError> {
    if utilities.len() != design.coalitions.len() {
        return Err(ValuationError::LengthMismatch {
            what: "utility vector (one per coalition of the design)",
            found: utilities.len(),
            expected: design.coalitions.len(),
        });
    }
    Ok(())
}

/// Per coalition, the median of the `vectors`' gains over their own `U(none)` (each checked
/// against `design`; saturating at the `i64` range).
pub fn consensus(design: &Design, vectors: &[&[i64]]) -> Result<Vec<i64>, ValuationError> {
    if vectors.is_empty() {
        return Err(ValuationError::LengthMismatch {
            what: "validators' vectors",
            found: 0,
            expected: 1,
        });
    }
    for v in vectors {
        check_vector(design, v)?;
    }
    // The empty coalition is the first of every design.
    let gain = |v: &[i64], k: usize| {
        (i128::from(v[k]) - i128::from(v[0])).clamp(i128::from(i64::MIN), i128::from(i64::MAX))
            as i64
    };
    let mut column = Vec::with_capacity(vectors.len());
    Ok((0..design.coalitions.len())
        .map(|k| {
            column.clear();
            column.extend(vectors.iter().map(|v| gain(v, k)));
            column.sort_unstable();
            let m = column.len();
            if m % 2 == 1 {
                column[m / 2]
            } else {
                let sum = i128::from(column[m / 2 - 1]) + i128::from(column[m / 2]);
                // Floor division by 2 of a sum of two i64 fits back in i64.
                sum.div_euclid(2) as i64
            }
        })
        .collect())
}

/// The Shapley values (in the units of `utilities`, as `f64`) of the game the design's list and
/// `utilities` describe.
pub fn values(design: &Design, utilities: &[i64]) -> Result<Vec<f64>, ValuationError> {
    check_vector(design, utilities)?;
    let n = design.players;
    let u = |k: usize| utilities[k] as f64 / 1e9;
    if design.permutations.is_empty() {
        // Exact: coalitions are the masks 0..2^n in order, so index = mask.
        let mut weights = vec![0.0f64; n];
        for (s, w) in weights.iter_mut().enumerate() {
            // |S|! (n - |S| - 1)! / n! for |S| = s.
            let mut x = 1.0f64 / n as f64;
            for k in 1..=s {
                x *= k as f64 / (n - s - 1 + k) as f64;
            }
            *w = x;
        }
        let mut phi = vec![0.0f64; n];
        for (i, p) in phi.iter_mut().enumerate() {
            for mask in 0..(1usize << n) {
                if mask & (1 << i) != 0 {
                    continue;
                }
                let s = (mask as u64).count_ones() as usize;
                *p += weights[s] * (u(mask | (1 << i)) - u(mask));
            }
        }
        return Ok(phi);
    }
    let index = design.index();
    let mut phi = vec![0.0f64; n];
    for order in &design.permutations {
        let mut prefix = Coalition::EMPTY;
        let mut before = u(index[&prefix]);
        for &i in order {
            prefix = prefix.with(i);
            let after = u(index[&prefix]);
            phi[i] += after - before;
            before = after;
        }
    }
    let m = design.permutations.len() as f64;
    Ok(phi.into_iter().map(|p| p / m).collect())
}

/// Per validator (key), per contributor (key): its own games' values and the consensus values,
/// each summed over the rounds it was judged in, nano-units. Integers, so the coordinator and
/// `verify` accumulate the same sums exactly.
pub type Standing = BTreeMap<String, BTreeMap<String, (i128, i128)>>;

/// Each validator's distance (thousandths) between its
/// accumulated values and the accumulated consensus values, after adding this round
/// (`own_nano[v]` and `consensus_nano`, per player; `players` their keys) to `before`.
/// Returns the distances (in `keys` order) and the standing after the round.
pub fn standing_distances(
    keys: &[&str],
    players: &[&str],
    own_nano: &[Vec<i64>],
    consensus_nano: &[i64],
    before: &Standing,
) -> (Vec<u64>, Standing) {
    let mut after = before.clone();
    for (key, own) in keys.iter().zip(own_nano) {
        let line = after.entry((*key).to_owned()).or_default();
        for ((p, o), c) in players.iter().zip(own).zip(consensus_nano) {
            let e = line.entry((*p).to_owned()).or_default();
            e.0 += i128::from(*o);
            e.1 += i128::from(*c);
        }
    }
    let distances = distances_on(keys, &after)
        .into_iter()
        .map(|d| d.expect("every key has a line after the round"))
        .collect();
    (distances, after)
}

/// Per validator (in `keys` order), its distance on `standing` (`None` without a line): the L2
/// distance between its own and the consensus sums relative to the larger of the consensus
/// sums' norm and the median norm of the listed validators' own sums, in thousandths.
fn distances_on(keys: &[&str], standing: &Standing) -> Vec<Option<u64>> {
    let f = |x: i128| x as f64 / 1e9;
    let l2 = |x: &mut dyn Iterator<Item = f64>| x.map(|v| v * v).sum::<f64>().sqrt();
    let mut norms: Vec<f64> = keys
        .iter()
        .filter_map(|k| standing.get(*k))
        .map(|l| l2(&mut l.values().map(|(o, _)| f(*o))))
        .collect();
    norms.sort_by(f64::total_cmp);
    let median = median_of_sorted(&norms);
    keys.iter()
        .map(|k| {
            standing.get(*k).map(|l| {
                let scale = l2(&mut l.values().map(|(_, c)| f(*c))).max(median);
                let d = l2(&mut l.values().map(|(o, c)| f(*o - *c)));
                milli(d, scale)
            })
        })
        .collect()
}

/// Per validator (in `keys` order): whether it is in good standing before a round, that is
/// new (judged in no round yet) or within `max_distance_milli` on its standing so far (the
/// scale's median taken over the validators of `keys` that have one).
pub fn good_standing(keys: &[&str], before: &Standing, max_distance_milli: u64) -> Vec<bool> {
    distances_on(keys, before)
        .into_iter()
        .map(|d| d.is_none_or(|d| d <= max_distance_milli))
        .collect()
}

fn median_of_sorted(x: &[f64]) -> f64 {
    match x.len() {
        0 => 0.0,
        m if m % 2 == 1 => x[m / 2],
        m => (x[m / 2 - 1] + x[m / 2]) / 2.0,
    }
}

/// `round(1000 * d / scale)`, saturating; `u64::MAX` for a distance over a zero scale.
fn milli(d: f64, scale: f64) -> u64 {
    if scale > 0.0 {
        let m = (1000.0 * d / scale).round();
        if m >= u64::MAX as f64 {
            u64::MAX
        } else {
            m as u64
        }
    } else if d > 0.0 {
        u64::MAX
    } else {
        0
    }
}

/// The validators' pool split equally (integer units, largest remainder, ties to the ascending
/// key) among those within `max_distance_milli` of consensus; flagged ones get 0. Returns the
/// rewards (in `keys` order) and the units actually paid (0 when nobody is near consensus).
pub fn validator_rewards(
    pool: u64,
    keys: &[&str],
    distances_milli: &[u64],
    max_distance_milli: u64,
) -> (Vec<u64>, u64) {
    let entries: Vec<RewardEntry<'_>> = keys
        .iter()
        .zip(distances_milli)
        .map(|(k, d)| RewardEntry {
            participant_key_hex: k,
            value_nano: 1,
            eligible: *d <= max_distance_milli,
        })
        .collect();
    let split = split_rewards(pool, &entries);
    (split.rewards, split.recorded_pool)
}

/// The key under which a [`Standing`] keeps each contributor's consensus values summed over
/// every round judged by validators, with the number of those rounds (validators' keys are 64
/// hex digits, so it names no validator).
pub const CONTRIBUTORS: &str = "*";

/// The quality rule: which contributors' updates enter the aggregate, judged on their standing
/// (values summed over the rounds so far, this one included), not on one noisy round. An update
/// is excluded when its contributor's summed consensus value is negative (`consensus_sums`)
/// and, with `k > 0`, its summed value is also negative in at least `k` validators' own games
/// (`own_sums`, one per validator near consensus; so fewer than `k` validators cannot exclude
/// anyone, and a flagged one counts for nothing).
/// Returns one `keep` flag per player.
pub fn curate(consensus_sums: &[i128], own_sums: &[Vec<i128>], k: usize) -> Vec<bool> {
    (0..consensus_sums.len())
        .map(|i| {
            let against = own_sums
                .iter()
                .filter(|v| v.get(i).is_some_and(|x| *x < 0))
                .count();
            consensus_sums[i] >= 0 || (k > 0 && against < k)
        })
        .collect()
}

/// The parameters of a round with validators, as its summary records them.
#[derive(Debug, Clone, Copy)]
pub struct RoundParams {
    /// The design's seed (announced in the task header).
    pub seed: u64,
    /// The round's contributors (players, sorted by key).
    pub players: usize,
    /// Exact designs up to this many players.
    pub exact_max: usize,
    /// Sampled permutations above.
    pub permutations: usize,
    /// Units offered to the validators.
    pub pool: u64,
    /// Distance beyond which a validator is flagged, thousandths.
    pub max_distance_milli: u64,
    /// The quality rule's `k` (curation on), or `None` (every update kept).
    pub quality_k: Option<usize>,
}

/// Everything a round with validators records, from the vectors alone: what the coordinator
/// writes and `verify` recomputes, with this one function.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundConsensus {
    /// The design (its [`Design::canonical`] bytes are what validators sign the digest of).
    pub design: Design,
    /// The consensus game's values, nano-units, one per player.
    pub values_nano: Vec<i64>,
    /// Each validator's distance from consensus, thousandths.
    pub distances_milli: Vec<u64>,
    /// Each validator's reward ([`validator_rewards`]).
    pub rewards: Vec<u64>,
    /// Units paid to the validators (the pool, or 0 when nobody is near consensus).
    pub paid: u64,
    /// Per player, whether the quality rule keeps its update (all true without curation).
    pub keep: Vec<bool>,
    /// Each validator's standing after this round.
    pub standing: Standing,
}

/// [`round_consensus_with`] for a round judged alone (no earlier standing; players named by
/// their index).
pub fn round_consensus(
    p: &RoundParams,
    keys: &[&str],
    vectors: &[&[i64]],
) -> Result<RoundConsensus, ValuationError> {
    let names: Vec<String> = (0..p.players).map(|i| i.to_string()).collect();
    let players: Vec<&str> = names.iter().map(String::as_str).collect();
    round_consensus_with(p, keys, vectors, &players, &Standing::new())
}

/// The design, consensus, values, distances (from each validator's standing after this round:
/// `before` plus this round, `players` naming the contributors by key), validators' rewards and
/// quality verdicts of a round, from its validators' `vectors` (in the order of `keys`,
/// ascending).
pub fn round_consensus_with(
    p: &RoundParams,
    keys: &[&str],
    vectors: &[&[i64]],
    players: &[&str],
    before: &Standing,
) -> Result<RoundConsensus, ValuationError> {
    if players.len() != p.players {
        return Err(ValuationError::LengthMismatch {
            what: "contributors' keys (one per player)",
            found: players.len(),
            expected: p.players,
        });
    }
    if keys.len() != vectors.len() {
        return Err(ValuationError::LengthMismatch {
            what: "validators' keys (one per vector)",
            found: keys.len(),
            expected: vectors.len(),
        });
    }
    let design = design(p.seed, p.players, p.exact_max, p.permutations)?;
    let own: Vec<Vec<i64>> = vectors
        .iter()
        .map(|v| values(&design, v).map(|x| x.into_iter().map(crate::value_nano).collect()))
        .collect::<Result<_, _>>()?;
    // Two passes: the median over the validators in good standing before this round gives a
    // first consensus; whoever this round's standing then flags against it is left out of the
    // final median (when someone is left in).
    let median_over = |trusted: &[bool]| -> Result<Vec<i64>, ValuationError> {
        let chosen: Vec<&[i64]> = if trusted.iter().any(|t| *t) {
            vectors
                .iter()
                .zip(trusted)
                .filter(|(_, t)| **t)
                .map(|(v, _)| *v)
                .collect()
        } else {
            vectors.to_vec()
        };
        let game = consensus(&design, &chosen)?;
        Ok(values(&design, &game)?
            .into_iter()
            .map(crate::value_nano)
            .collect())
    };
    let first = median_over(&good_standing(keys, before, p.max_distance_milli))?;
    let (first_distances, _) = standing_distances(keys, players, &own, &first, before);
    let near: Vec<bool> = first_distances
        .iter()
        .map(|d| *d <= p.max_distance_milli)
        .collect();
    let values_nano = median_over(&near)?;
    let (distances_milli, mut standing) =
        standing_distances(keys, players, &own, &values_nano, before);
    let contributors = standing.entry(CONTRIBUTORS.to_owned()).or_default();
    for (player, v) in players.iter().zip(&values_nano) {
        let e = contributors.entry((*player).to_owned()).or_default();
        e.0 += i128::from(*v);
        e.1 += 1;
    }
    let (rewards, paid) = validator_rewards(p.pool, keys, &distances_milli, p.max_distance_milli);
    let keep = match p.quality_k {
        None => vec![true; p.players],
        Some(k) => {
            let sums = |key: &str| -> Vec<i128> {
                players
                    .iter()
                    .map(|pl| standing[key].get(*pl).map_or(0, |e| e.0))
                    .collect()
            };
            // Only validators near consensus (by this round's distances) count against.
            let own_sums: Vec<Vec<i128>> = keys
                .iter()
                .zip(&distances_milli)
                .filter(|(_, d)| **d <= p.max_distance_milli)
                .map(|(key, _)| sums(key))
                .collect();
            curate(&sums(CONTRIBUTORS), &own_sums, k)
        }
    };
    Ok(RoundConsensus {
        design,
        values_nano,
        distances_milli,
        rewards,
        paid,
        keep,
        standing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value_nano;

    /// A game with pair and triple interactions on `n` players, in nano-units.
    fn game(c: Coalition) -> i64 {
        let members: Vec<usize> = c.members().collect();
        let mut u = 0.0f64;
        for &i in &members {
            u += 0.01 * (i as f64 + 1.0) - 0.02 * f64::from((i as u32).is_multiple_of(3));
            for &j in &members {
                if i < j && (i + j) % 4 == 1 {
                    u += 0.003;
                }
            }
        }
        if members.len() >= 3 {
            u -= 0.001 * (members.len() - 2) as f64;
        }
        value_nano(u)
    }

    fn vector(d: &Design, f: impl Fn(Coalition) -> i64) -> Vec<i64> {
        d.coalitions.iter().map(|c| f(*c)).collect()
    }

    #[test]
    fn the_design_follows_from_the_seed_alone() {
        let exact = design(1, 4, 12, 0).unwrap();
        assert_eq!(exact.coalitions.len(), 16);
        assert!(exact.permutations.is_empty());
        let a = design(7, 20, 12, 6).unwrap();
        assert_eq!(a, design(7, 20, 12, 6).unwrap());
        assert_ne!(a.coalitions, design(8, 20, 12, 6).unwrap().coalitions);
        assert_eq!(a.permutations.len(), 6);
        // Every prefix of every permutation, each once; empty and full included.
        assert_eq!(a.coalitions[0], Coalition::EMPTY);
        assert!(a.coalitions.len() <= 6 * 20 + 1);
        assert!(a.coalitions.len() > 20);
        let lines = String::from_utf8(a.canonical()).unwrap();
        assert_eq!(lines.lines().count(), a.coalitions.len());
        assert!(lines.starts_with('\n'));
        assert!(matches!(
            design(7, 20, 12, 0),
            Err(ValuationError::BudgetTooSmall { .. })
        ));
    }

    #[test]
    fn exact_values_are_efficient_and_match_the_estimator() {
        let d = design(3, 6, 12, 0).unwrap();
        let u = vector(&d, game);
        let phi = values(&d, &u).unwrap();
        let total = (u[63] - u[0]) as f64 / 1e9;
        assert!((phi.iter().sum::<f64>() - total).abs() < 1e-12);
        struct G(Vec<i64>);
        impl crate::Utility for G {
            fn players(&self) -> usize {
                6
            }
            fn utility(&self, c: Coalition) -> f64 {
                self.0[c.bits() as usize] as f64 / 1e9
            }
        }
        let exact = crate::Estimator::estimate(&crate::Exact::default(), &G(u.clone()), 1).unwrap();
        for (a, b) in phi.iter().zip(&exact.values) {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
    }

    #[test]
    fn permutation_values_are_efficient_and_close_to_exact() {
        let n = 10;
        let exact_d = design(0, n, 12, 0).unwrap();
        let exact = values(&exact_d, &vector(&exact_d, game)).unwrap();
        let d = design(5, n, 8, 400).unwrap();
        let u = vector(&d, game);
        let phi = values(&d, &u).unwrap();
        let full = d
            .coalitions
            .iter()
            .position(|c| c.len() == n)
            .expect("the full coalition is a prefix of every permutation");
        let total = (u[full] - u[0]) as f64 / 1e9;
        assert!((phi.iter().sum::<f64>() - total).abs() < 1e-9);
        assert!(crate::relative_l2(&phi, &exact) < 0.05);
    }

    #[test]
    fn the_median_resists_an_inverted_validator_and_flags_it() {
        let d = design(2, 5, 12, 0).unwrap();
        let honest_a = vector(&d, game);
        // Another holdout: harder (every utility lower) and slightly different.
        let honest_b = vector(&d, |c| game(c) - 40_000_000 + 300_000 * c.len() as i64);
        let honest_c = vector(&d, |c| game(c) - 10_000_000 - 200_000 * c.len() as i64);
        let inverted: Vec<i64> = honest_a.iter().map(|u| -u).collect();
        let all: Vec<&[i64]> = vec![&honest_a, &honest_b, &honest_c, &inverted];
        let cons = consensus(&d, &all[..3]).unwrap();
        let with_liar = consensus(&d, &[&honest_a, &honest_b, &inverted]).unwrap();
        let honest_values = values(&d, &cons).unwrap();
        let liar_values = values(&d, &with_liar).unwrap();
        assert!(crate::relative_l2(&liar_values, &honest_values) < 0.10);
        let nano = |v: &[f64]| v.iter().map(|x| value_nano(*x)).collect::<Vec<i64>>();
        let own: Vec<Vec<i64>> = [&honest_a, &honest_b, &inverted]
            .iter()
            .map(|v| nano(&values(&d, v).unwrap()))
            .collect();
        let players = ["p0", "p1", "p2", "p3", "p4"];
        let (dist, _) = standing_distances(
            &["a", "b", "c"],
            &players,
            &own,
            &nano(&liar_values),
            &Standing::new(),
        );
        assert!(dist[0] < 200 && dist[1] < 200, "{dist:?}");
        assert!(dist[2] > 1500, "{dist:?}");
        let keys = ["a", "b", "c"];
        let (rewards, paid) = validator_rewards(1_000_001, &keys, &dist, 500);
        assert_eq!(rewards[2], 0);
        assert_eq!(rewards[0] + rewards[1], 1_000_001);
        assert_eq!(paid, 1_000_001);
        // Nobody near consensus: nothing paid.
        assert_eq!(
            validator_rewards(10, &keys, &[600, 700, 800], 500),
            (vec![0; 3], 0)
        );
    }

    #[test]
    fn the_median_of_an_even_count_rounds_down_and_partial_vectors_are_refused() {
        let d = design(0, 1, 12, 0).unwrap();
        // Gains over each vector's own first (empty) coalition: [0, 3] and [0, 5].
        assert_eq!(consensus(&d, &[&[1, 4], &[2, 7]]).unwrap(), vec![0, 4]);
        assert_eq!(consensus(&d, &[&[0, -1], &[0, -2]]).unwrap(), vec![0, -2]);
        assert!(matches!(
            consensus(&d, &[&[1, 4], &[2]]),
            Err(ValuationError::LengthMismatch {
                found: 1,
                expected: 2,
                ..
            })
        ));
        assert!(consensus(&d, &[]).is_err());
    }

    #[test]
    fn curation_excludes_negative_consensus_and_k_validators_against() {
        let own: Vec<Vec<i128>> = vec![vec![5, -1, 3], vec![4, -2, -1], vec![6, 1, -3]];
        assert_eq!(curate(&[5, -1, 2], &own, 0), vec![true, false, true]);
        // Negative consensus and at least k validators against.
        assert_eq!(curate(&[5, -1, -2], &own, 2), vec![true, false, false]);
        assert_eq!(curate(&[5, -1, -2], &own, 3), vec![true, true, true]);
        // Validators against, but a positive consensus: kept.
        assert_eq!(curate(&[5, 1, 2], &own, 1), vec![true, true, true]);
    }

    #[test]
    fn standing_separates_a_liar_from_noisy_honest_validators_over_rounds() {
        // Per round, each honest validator's values are the signal plus noise up to twice as
        // large; the liar reports the opposite of an honest game. After twenty rounds the
        // honest standings are within the limit and the liar's far beyond it.
        let players = ["p0", "p1", "p2", "p3"];
        let keys = ["a", "b", "c"];
        let signal = [3_000_000i64, 2_000_000, 1_000_000, -2_000_000];
        let mut rng = crate::rng_for_seed(9);
        let mut noise = || {
            use rand::RngExt;
            (rng.random::<f64>() - 0.5) * 12_000_000.0
        };
        let mut standing = Standing::new();
        let mut last = Vec::new();
        for round in 0..20 {
            let honest: Vec<Vec<i64>> = (0..3)
                .map(|_| signal.iter().map(|s| s + noise() as i64).collect())
                .collect();
            let own = vec![
                honest[0].clone(),
                honest[1].clone(),
                honest[2].iter().map(|v| -v).collect(),
            ];
            // The per-coalition median is not needed here: take the honest mean as consensus.
            let cons: Vec<i64> = (0..4).map(|i| (honest[0][i] + honest[1][i]) / 2).collect();
            let (d, after) = standing_distances(&keys, &players, &own, &cons, &standing);
            standing = after;
            if round == 19 {
                last = d;
            }
        }
        assert!(last[0] < 1000 && last[1] < 1000, "{last:?}");
        assert!(last[2] > 1500, "{last:?}");
        // The sums are the rounds' values, exactly.
        assert_eq!(standing["c"].len(), 4);
    }

    proptest::proptest! {
        /// With a strict majority honest, every consensus gain lies between the smallest and
        /// the largest honest gain, whatever the others report; and the consensus game's values
        /// are efficient.
        #[test]
        fn a_minority_cannot_move_consensus_outside_the_honest_range(
            honest in proptest::collection::vec(
                proptest::collection::vec(-1_000_000_000i64..1_000_000_000, 8), 2..5),
            liars in proptest::collection::vec(
                proptest::collection::vec(proptest::num::i64::ANY, 8), 0..2),
        ) {
            let d = design(0, 3, 12, 0).unwrap();
            proptest::prop_assume!(liars.len() < honest.len());
            let all: Vec<&[i64]> = honest.iter().chain(&liars).map(Vec::as_slice).collect();
            let cons = consensus(&d, &all).unwrap();
            for (k, c) in cons.iter().enumerate() {
                let gains = honest.iter().map(|v| v[k] - v[0]);
                let (lo, hi) = (gains.clone().min().unwrap(), gains.max().unwrap());
                proptest::prop_assert!(lo <= *c && *c <= hi, "coalition {k}: {c} not in {lo}..={hi}");
            }
            let phi = values(&d, &cons).unwrap();
            let total = (cons[7] - cons[0]) as f64 / 1e9;
            proptest::prop_assert!((phi.iter().sum::<f64>() - total).abs() < 1e-9);
        }
    }
}
