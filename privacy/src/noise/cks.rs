//! The exact sampler of Canonne, Kamath and Steinke (2020), algorithms 1 to 3, with integer-only
//! decisions: the reference implementation, used directly for coarse grids (few grid units per
//! standard deviation) and, through [`geometric`], for the tail of the binned sampler.

use rand_core::Rng;

use super::MAX_GRID_UNITS;

/// Exact sampler of `N_Z(0, S^2)` (CKS 2020, algorithm 3) for an integer scale `S <= 2^30`.
///
/// Bounds that keep every integer in range: `t = S + 1 <= 2^30 + 1`; a discrete Laplace draw is
/// `u + t v` with `u < t` and `v < 2^64`, so `|y| < 2^95`, `|y| t < 2^126`,
/// `(|y| t - S^2)^2 < 2^252` and `2 S^2 t^2 < 2^122`.
#[derive(Debug, Clone)]
pub(super) struct Cks {
    t: u64,
    scale_sq: u128,
    two_scale_sq_t_sq: u128,
}

impl Cks {
    pub(super) fn new(scale: u64) -> Self {
        debug_assert!((1..=MAX_GRID_UNITS).contains(&scale));
        let t = scale + 1;
        let scale_sq = u128::from(scale) * u128::from(scale);
        let t_sq = u128::from(t) * u128::from(t);
        Self {
            t,
            scale_sq,
            two_scale_sq_t_sq: 2 * scale_sq * t_sq,
        }
    }

    pub(super) fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> i128 {
        loop {
            let (positive, magnitude) = discrete_laplace(rng, self.t);
            // Accept with probability exp(-(|y| - S^2/t)^2 / (2 S^2))
            //                       = exp(-(|y| t - S^2)^2 / (2 S^2 t^2)).
            let a = (magnitude * u128::from(self.t)).abs_diff(self.scale_sq);
            if bernoulli_exp(rng, U256::mul(a, a), self.two_scale_sq_t_sq) {
                #[allow(clippy::cast_possible_wrap)] // magnitude < 2^95
                let m = magnitude as i128;
                return if positive { m } else { -m };
            }
        }
    }
}

/// Discrete Laplace with scale `t` (CKS 2020 algorithm 2 with `s = 1`), as (sign, magnitude);
/// `-0` is rejected so that 0 has the right probability.
fn discrete_laplace<R: Rng + ?Sized>(rng: &mut R, t: u64) -> (bool, u128) {
    loop {
        let positive = rng.next_u32() & 1 == 1;
        let magnitude = geometric(rng, t);
        if positive || magnitude != 0 {
            return (positive, magnitude);
        }
    }
}

/// `g >= 0` with probability proportional to `exp(-g / t)`, exactly: `u + t v` with `u` uniform
/// in `[0, t)` accepted with probability `exp(-u/t)`, and `v` the number of successes of
/// Bernoulli(exp(-1)) before the first failure (CKS 2020 algorithm 2).
pub(super) fn geometric<R: Rng + ?Sized>(rng: &mut R, t: u64) -> u128 {
    let mut u = uniform_below_u64(rng, t);
    while !bernoulli_exp_frac(rng, u128::from(u), u128::from(t)) {
        u = uniform_below_u64(rng, t);
    }
    let mut v: u64 = 0;
    while bernoulli_exp_frac(rng, 1, 1) {
        v += 1;
    }
    u128::from(v) * u128::from(t) + u128::from(u)
}

/// Bernoulli(exp(-num/den)) for any `num / den >= 0` (CKS 2020 algorithm 1, with the integer
/// part peeled off as independent Bernoulli(exp(-1)) draws).
fn bernoulli_exp<R: Rng + ?Sized>(rng: &mut R, mut num: U256, den: u128) -> bool {
    let den_wide = U256::from(den);
    while num > den_wide {
        if !bernoulli_exp_frac(rng, 1, 1) {
            return false;
        }
        num = num.sub(den_wide);
    }
    // num <= den < 2^128 here.
    bernoulli_exp_frac(rng, num.lo, den)
}

/// Bernoulli(exp(-num/den)) for `0 <= num <= den`, `den > 0` (CKS 2020 algorithm 1): count the
/// successes `K` of Bernoulli(gamma/1), Bernoulli(gamma/2), ... and return whether `K` is even.
fn bernoulli_exp_frac<R: Rng + ?Sized>(rng: &mut R, num: u128, den: u128) -> bool {
    let num_wide = U256::from(num);
    let mut k: u128 = 1;
    loop {
        // Bernoulli(num / (den k)): a uniform integer below den k is below num.
        if uniform_below_u256(rng, U256::mul(den, k)) < num_wide {
            k += 1;
        } else {
            return k % 2 == 1;
        }
    }
}

/// Uniform integer in `[0, m)`, `m > 0`, exactly (Lemire's multiply-and-reject).
fn uniform_below_u64<R: Rng + ?Sized>(rng: &mut R, m: u64) -> u64 {
    debug_assert!(m > 0);
    let mut product = u128::from(rng.next_u64()) * u128::from(m);
    #[allow(clippy::cast_possible_truncation)] // low half
    let mut low = product as u64;
    if low < m {
        let threshold = m.wrapping_neg() % m;
        while low < threshold {
            product = u128::from(rng.next_u64()) * u128::from(m);
            #[allow(clippy::cast_possible_truncation)]
            {
                low = product as u64;
            }
        }
    }
    #[allow(clippy::cast_possible_truncation)] // high half
    let high = (product >> 64) as u64;
    high
}

fn next_u128<R: Rng + ?Sized>(rng: &mut R) -> u128 {
    (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64())
}

/// Uniform integer in `[0, m)`, `m > 0`, exactly.
fn uniform_below_u128<R: Rng + ?Sized>(rng: &mut R, m: u128) -> u128 {
    if let Ok(small) = u64::try_from(m) {
        return u128::from(uniform_below_u64(rng, small));
    }
    let mask = u128::MAX >> m.leading_zeros();
    loop {
        let x = next_u128(rng) & mask;
        if x < m {
            return x;
        }
    }
}

/// Uniform integer in `[0, m)`, `m > 0`, exactly.
fn uniform_below_u256<R: Rng + ?Sized>(rng: &mut R, m: U256) -> U256 {
    if m.hi == 0 {
        return U256::from(uniform_below_u128(rng, m.lo));
    }
    let mask = u128::MAX >> m.hi.leading_zeros();
    loop {
        let x = U256 {
            hi: next_u128(rng) & mask,
            lo: next_u128(rng),
        };
        if x < m {
            return x;
        }
    }
}

/// Just enough 256-bit arithmetic for the acceptance test. Field order makes the derived
/// ordering numeric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct U256 {
    hi: u128,
    lo: u128,
}

impl From<u128> for U256 {
    fn from(lo: u128) -> Self {
        Self { hi: 0, lo }
    }
}

impl U256 {
    /// Full product of two 128-bit integers.
    fn mul(a: u128, b: u128) -> Self {
        const MASK: u128 = u64::MAX as u128;
        let (a1, a0) = (a >> 64, a & MASK);
        let (b1, b0) = (b >> 64, b & MASK);
        let (p00, p01, p10, p11) = (a0 * b0, a0 * b1, a1 * b0, a1 * b1);
        let mid = (p00 >> 64) + (p01 & MASK) + (p10 & MASK); // < 3 * 2^64
        Self {
            hi: p11 + (p01 >> 64) + (p10 >> 64) + (mid >> 64),
            lo: (p00 & MASK) | (mid << 64),
        }
    }

    /// `self - other` for `self >= other`.
    fn sub(self, other: Self) -> Self {
        let (lo, borrow) = self.lo.overflowing_sub(other.lo);
        Self {
            hi: self.hi - other.hi - u128::from(borrow),
            lo,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20::ChaCha20Rng;
    use proptest::prelude::*;
    use rand_core::SeedableRng;

    fn seeded(seed: u64) -> ChaCha20Rng {
        ChaCha20Rng::seed_from_u64(seed)
    }

    proptest! {
        #[test]
        fn u256_mul_matches_u128_when_small(a in any::<u64>(), b in any::<u64>()) {
            let p = U256::mul(u128::from(a), u128::from(b));
            prop_assert_eq!(p, U256::from(u128::from(a) * u128::from(b)));
        }

        #[test]
        fn u256_mul_distributes(a in any::<u128>(), b in any::<u128>()) {
            // (a * b) - (a * (b - 1)) == a, checked through sub.
            prop_assume!(b > 0);
            let diff = U256::mul(a, b).sub(U256::mul(a, b - 1));
            prop_assert_eq!(diff, U256::from(a));
        }

    }

    #[test]
    fn u256_mul_extremes() {
        let p = U256::mul(u128::MAX, u128::MAX);
        // (2^128 - 1)^2 = 2^256 - 2^129 + 1
        assert_eq!(
            p,
            U256 {
                hi: u128::MAX - 1,
                lo: 1
            }
        );
    }

    #[test]
    fn uniform_below_is_in_range_and_covers() {
        let mut rng = seeded(7);
        let mut seen = [0u32; 7];
        for _ in 0..7000 {
            let x = uniform_below_u64(&mut rng, 7);
            seen[usize::try_from(x).unwrap()] += 1;
        }
        assert!(seen.iter().all(|&c| (800..1200).contains(&c)), "{seen:?}");
        let big = (1u128 << 100) + 3;
        for _ in 0..1000 {
            assert!(uniform_below_u128(&mut rng, big) < big);
        }
        let huge = U256 { hi: 5, lo: 0 };
        for _ in 0..1000 {
            assert!(uniform_below_u256(&mut rng, huge) < huge);
        }
    }

    #[test]
    fn bernoulli_exp_frequencies() {
        // gamma = 1/2 and gamma = 5/2 (the latter via the integer peel-off).
        let mut rng = seeded(11);
        let n = 40_000;
        for (num, den, p) in [(1u128, 2u128, (-0.5f64).exp()), (5, 2, (-2.5f64).exp())] {
            let hits = (0..n)
                .filter(|_| bernoulli_exp(&mut rng, U256::from(num), den))
                .count();
            #[allow(clippy::cast_precision_loss)]
            let freq = hits as f64 / f64::from(n);
            let sd = (p * (1.0 - p) / f64::from(n)).sqrt();
            assert!(
                (freq - p).abs() < 6.0 * sd,
                "gamma {num}/{den}: {freq} vs {p}"
            );
        }
    }
}
