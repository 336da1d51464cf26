//! Paired KernelSHAP with the efficiency constraint.

use std::collections::HashSet;

use super::{Estimator, Memo, Reduced, Stop, Valuation, binomial, random_subset, seeded};
use crate::rng::shuffle;
use crate::{Coalition, Utility, ValuationError};

/// Paired KernelSHAP (Lundberg and Lee 2017; paired sampling as in Covert and Lee 2021) with the
/// efficiency constraint `sum phi = U(all) - U(none)`.
///
/// Coalition sizes are visited in pairs `(s, m - s)` from `s = 1` (largest Shapley-kernel mass)
/// inwards; each pair that still fits in the budget is enumerated completely with the kernel
/// weight of its size. The rest of the budget is allocated over the remaining size pairs in
/// proportion to their kernel mass (largest remainder, capped at their size) and filled with
/// distinct uniformly drawn coalitions, each with its complement; the sampled coalitions of a size
/// share that size's kernel mass equally. The values are the constrained weighted least-squares
/// solution. With a budget of `2^m` this is exact.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KernelShap {
    /// Budget of distinct coalitions (`None`: `min(2^m, max(2m + 2, 2048))`). At least
    /// `min(2^m, 2m + 2)`.
    pub max_evaluations: Option<u64>,
}

/// Coalitions with regression weights.
struct Design {
    coalitions: Vec<u64>,
    weights: Vec<f64>,
}

/// The most active players KernelSHAP values (its design is built on 64-bit masks); use `gtg`
/// or `loo` above.
pub const KERNELSHAP_MAX_PLAYERS: usize = 64;

impl Estimator for KernelShap {
    fn name(&self) -> &'static str {
        "kernelshap"
    }

    /// The design enumerates coalitions as 64-bit masks.
    fn max_players(&self) -> usize {
        KERNELSHAP_MAX_PLAYERS
    }

    /// The empty and full coalitions and at least `2m` others (all of them when fewer).
    fn min_evaluations(&self, players: usize) -> u64 {
        let all = if players >= 63 {
            u64::MAX
        } else {
            1u64 << players
        };
        all.min(2 * players as u64 + 2)
    }

    fn estimate(&self, game: &dyn Utility, seed: u64) -> Result<Valuation, ValuationError> {
        let reduced = Reduced::new(game)?;
        let m = reduced.m();
        if m > self.max_players() {
            return Err(ValuationError::TooManyPlayers {
                players: m,
                max: self.max_players(),
            });
        }
        let all = if m >= 63 { u64::MAX } else { 1u64 << m };
        let needed = self.min_evaluations(m);
        let budget = self
            .max_evaluations
            .unwrap_or_else(|| all.min(needed.max(2048)));
        if budget < needed {
            return Err(ValuationError::BudgetTooSmall {
                estimator: "kernelshap",
                budget,
                needed,
            });
        }
        let mut memo = Memo::new(&reduced, budget);
        let fail = |stop| match stop {
            Stop::Budget => ValuationError::BudgetTooSmall {
                estimator: "kernelshap",
                budget,
                needed,
            },
            Stop::Fail(e) => e,
        };
        let values = match m {
            0 => Vec::new(),
            1 => {
                let u = memo
                    .get_all(&[Coalition::EMPTY, Coalition::from_bits(1)])
                    .map_err(fail)?;
                vec![u[1] - u[0]]
            }
            _ => {
                let full = reduced.full();
                let ends = memo.get_all(&[Coalition::EMPTY, full]).map_err(fail)?;
                let (empty, grand) = (ends[0], ends[1]);
                let design = design(m, budget - 2, seed);
                let masks: Vec<Coalition> = design
                    .coalitions
                    .iter()
                    .map(|&c| Coalition::from_bits(c))
                    .collect();
                let utilities = memo.get_all(&masks).map_err(fail)?;
                solve(m, &design, &utilities, empty, grand)?
            }
        };
        Ok(Valuation {
            values: reduced.expand_values(&values),
            evaluations: memo.evaluations(),
            estimator: self.name().to_owned(),
            seed,
            sampling_se: None,
        })
    }
}

/// Total Shapley-kernel mass of the coalitions of size `s` among `m` players: `(m-1)/(s(m-s))`.
fn size_mass(m: usize, s: usize) -> f64 {
    (m - 1) as f64 / (s * (m - s)) as f64
}

/// The coalitions (excluding the empty and full ones) and their weights, within `room`.
fn design(m: usize, room: u64, seed: u64) -> Design {
    let mut design = Design {
        coalitions: Vec::new(),
        weights: Vec::new(),
    };
    let mut room = u128::from(room);
    let half = m / 2;
    let mut s = 1;
    // Complete enumeration of size pairs while they fit.
    while s <= half {
        let pair = if 2 * s == m {
            binomial(m, s)
        } else {
            2 * binomial(m, s)
        };
        if pair > room {
            break;
        }
        room -= pair;
        for size in if 2 * s == m { vec![s] } else { vec![s, m - s] } {
            let weight = size_mass(m, size) / binomial(m, size) as f64;
            for c in combinations(m, size) {
                design.coalitions.push(c);
                design.weights.push(weight);
            }
        }
        s += 1;
    }
    if s > half {
        return design;
    }
    // Stratified paired sampling over the remaining size pairs.
    let sizes: Vec<usize> = (s..=half).collect();
    let masses: Vec<f64> = sizes
        .iter()
        .map(|&s| {
            if 2 * s == m {
                size_mass(m, s)
            } else {
                2.0 * size_mass(m, s)
            }
        })
        .collect();
    let caps: Vec<u128> = sizes
        .iter()
        .map(|&s| {
            if 2 * s == m {
                binomial(m, s) / 2
            } else {
                binomial(m, s)
            }
        })
        .collect();
    let pairs = allocate(room / 2, &masses, &caps);
    let mut rng = seeded(seed);
    let full = if m == 64 { u64::MAX } else { (1u64 << m) - 1 };
    for ((&s, &count), &cap) in sizes.iter().zip(&pairs).zip(&caps) {
        if count == 0 {
            continue;
        }
        let chosen = sample_distinct(&mut rng, m, s, count, cap);
        let weight = size_mass(m, s) / count as f64 / if 2 * s == m { 2.0 } else { 1.0 };
        for c in chosen {
            design.coalitions.push(c);
            design.weights.push(weight);
            design.coalitions.push(full & !c);
            design.weights.push(weight);
        }
    }
    design
}

/// `count` distinct coalitions of size `s` (for `2s = m`: distinct up to complement), in draw
/// order. Enumerates and shuffles when more than half of the `cap` candidates are wanted.
fn sample_distinct(
    rng: &mut chacha20::ChaCha20Rng,
    m: usize,
    s: usize,
    count: u128,
    cap: u128,
) -> Vec<u64> {
    let full = if m == 64 { u64::MAX } else { (1u64 << m) - 1 };
    let middle = 2 * s == m;
    // Canonical representative of a coalition and its complement (middle size): the one without
    // player m-1.
    let canonical = |c: u64| {
        if middle && c & (1u64 << (m - 1)) != 0 {
            full & !c
        } else {
            c
        }
    };
    let count = count as usize;
    if 2 * count as u128 > cap {
        let mut all: Vec<u64> = combinations(m, s).filter(|&c| canonical(c) == c).collect();
        shuffle(rng, &mut all);
        all.truncate(count);
        return all;
    }
    let mut seen = HashSet::with_capacity(count);
    let mut chosen = Vec::with_capacity(count);
    while chosen.len() < count {
        let c = canonical(random_subset(rng, m, s));
        if seen.insert(c) {
            chosen.push(c);
        }
    }
    chosen
}

/// Largest-remainder allocation of `total` units proportional to `masses`, capped by `caps`;
/// strata whose share reaches their cap are filled and the rest re-allocated. Ties go to the
/// earlier stratum.
fn allocate(total: u128, masses: &[f64], caps: &[u128]) -> Vec<u128> {
    let k = masses.len();
    let mut alloc = vec![0u128; k];
    let mut open: Vec<usize> = (0..k).collect();
    let mut left = total.min(caps.iter().sum());
    loop {
        let mass: f64 = open.iter().map(|&i| masses[i]).sum();
        let capped: Vec<usize> = open
            .iter()
            .copied()
            .filter(|&i| left as f64 * masses[i] / mass >= caps[i] as f64)
            .collect();
        if capped.is_empty() {
            let mut rest: Vec<(usize, f64)> = Vec::new();
            for &i in &open {
                let share = left as f64 * masses[i] / mass;
                alloc[i] = share.floor() as u128;
                rest.push((i, share - share.floor()));
            }
            let mut remaining = left - open.iter().map(|&i| alloc[i]).sum::<u128>();
            rest.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            for (i, _) in rest {
                if remaining == 0 {
                    break;
                }
                if alloc[i] < caps[i] {
                    alloc[i] += 1;
                    remaining -= 1;
                }
            }
            return alloc;
        }
        for i in capped {
            alloc[i] = caps[i];
            left -= caps[i];
            open.retain(|&j| j != i);
        }
        if open.is_empty() || left == 0 {
            return alloc;
        }
    }
}

/// All `s`-subsets of `0..m` as masks, in increasing order (Gosper's hack).
fn combinations(m: usize, s: usize) -> impl Iterator<Item = u64> {
    let total = binomial(m, s);
    let mut next = if s == 0 {
        0
    } else if s == 64 {
        u64::MAX
    } else {
        (1u64 << s) - 1
    };
    let mut produced: u128 = 0;
    std::iter::from_fn(move || {
        if produced == total {
            return None;
        }
        let current = next;
        produced += 1;
        if produced < total {
            let low = current & current.wrapping_neg();
            let ripple = current.wrapping_add(low);
            next = (((ripple ^ current) >> 2) / low) | ripple;
        }
        Some(current)
    })
}

/// Constrained weighted least squares: minimise `sum w (y - z.phi)^2` subject to
/// `sum phi = grand - empty`, with `y = U(S) - U(none)`.
fn solve(
    m: usize,
    design: &Design,
    utilities: &[f64],
    empty: f64,
    grand: f64,
) -> Result<Vec<f64>, ValuationError> {
    let mut a = vec![0.0f64; m * m];
    let mut b = vec![0.0f64; m];
    for ((&c, &w), &u) in design.coalitions.iter().zip(&design.weights).zip(utilities) {
        let y = u - empty;
        let members: Vec<usize> = crate::Coalition::from_bits(c).members().collect();
        for &i in &members {
            b[i] += w * y;
            for &j in &members {
                a[i * m + j] += w;
            }
        }
    }
    let singular = || ValuationError::SingularDesign {
        coalitions: design.coalitions.len() + 2,
    };
    let l = cholesky(m, &a).ok_or_else(singular)?;
    let x = cholesky_solve(m, &l, &b);
    let ones = cholesky_solve(m, &l, &vec![1.0; m]);
    let denominator: f64 = ones.iter().sum();
    if !denominator.is_finite() || denominator <= 0.0 {
        return Err(singular());
    }
    let lambda = (x.iter().sum::<f64>() - (grand - empty)) / denominator;
    Ok(x.iter().zip(&ones).map(|(x, o)| x - lambda * o).collect())
}

/// Lower-triangular Cholesky factor of the symmetric `m x m` matrix `a`, if positive definite.
fn cholesky(m: usize, a: &[f64]) -> Option<Vec<f64>> {
    let mut l = vec![0.0f64; m * m];
    for i in 0..m {
        for j in 0..=i {
            let mut sum = a[i * m + j];
            for k in 0..j {
                sum -= l[i * m + k] * l[j * m + k];
            }
            if i == j {
                if !sum.is_finite() || sum <= 0.0 {
                    return None;
                }
                l[i * m + i] = sum.sqrt();
            } else {
                l[i * m + j] = sum / l[j * m + j];
            }
        }
    }
    Some(l)
}

/// Solves `L L^T x = b`.
fn cholesky_solve(m: usize, l: &[f64], b: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0f64; m];
    for i in 0..m {
        let mut sum = b[i];
        for k in 0..i {
            sum -= l[i * m + k] * y[k];
        }
        y[i] = sum / l[i * m + i];
    }
    let mut x = vec![0.0f64; m];
    for i in (0..m).rev() {
        let mut sum = y[i];
        for k in i + 1..m {
            sum -= l[k * m + i] * x[k];
        }
        x[i] = sum / l[i * m + i];
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combinations_enumerate_each_subset_once() {
        let all: Vec<u64> = combinations(6, 3).collect();
        assert_eq!(all.len(), 20);
        assert!(all.iter().all(|c| c.count_ones() == 3));
        assert!(all.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(combinations(64, 64).collect::<Vec<_>>(), vec![u64::MAX]);
        assert_eq!(combinations(64, 63).count(), 64);
        assert_eq!(combinations(5, 0).collect::<Vec<_>>(), vec![0]);
    }

    #[test]
    fn allocation_respects_caps_and_total() {
        let alloc = allocate(10, &[5.0, 1.0, 1.0], &[3, 100, 100]);
        assert_eq!(alloc.iter().sum::<u128>(), 10);
        assert_eq!(alloc[0], 3);
        let alloc = allocate(1000, &[1.0, 1.0], &[3, 4]);
        assert_eq!(alloc, vec![3, 4]);
    }

    #[test]
    fn middle_size_samples_are_distinct_up_to_complement() {
        let mut rng = seeded(3);
        let picks = sample_distinct(&mut rng, 6, 3, 10, 10);
        let mut seen = HashSet::new();
        for c in picks {
            assert!(seen.insert(c) && seen.insert(63 & !c));
        }
    }
}
