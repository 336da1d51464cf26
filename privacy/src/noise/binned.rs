//! A fast exact sampler of `N_Z(0, S^2)` for scales of at least [`MIN_SCALE`] grid units.
//!
//! # Algorithm
//!
//! Rejection sampling of the magnitude `m = |x|` against the unnormalised target
//! `exp(-gamma(m))`, `gamma(m) = m^2 / (2 S^2)`, with a proposal that is cheap to draw exactly:
//!
//! - **Core.** `[0, L)` is cut into `B` bins of `w = 2^b` integers (`w` about `S / 32`,
//!   `L = B w >= 12 S`). Bin `i` gets an integer weight `W_i >= K exp(-gamma(i w))`, the bin's
//!   largest target value times a constant `K`. A bin is drawn from these weights by an alias
//!   table whose integer thresholds make the bin probabilities exactly `W_i / 2^32`, then a
//!   uniform offset in the bin.
//! - **Tail.** `m >= L` is proposed, with weight `W_T`, as `L + g` for `g` geometric with
//!   ratio `rho = exp(-1/t)`, `t = ceil(S^2 / L)`, drawn exactly by CKS 2020 algorithm 2. Since
//!   `gamma(m) - gamma(L) >= (m - L) L / S^2 >= (m - L) / t`, the target decays at least as fast
//!   as the proposal.
//! - **Padding.** The weights fall short of `2^32` by about 1%; that mass proposes nothing (the
//!   attempt restarts).
//!
//! A proposed `m` is accepted with probability `a(m) = K exp(-gamma(m)) / W_i` in bin `i`, and
//! `K exp(-gamma(m)) / (w W_T (1 - rho) rho^(m - L))` in the tail. Proposal probability times
//! acceptance is `K exp(-gamma(m)) / (2^32 w)` for every `m`: the accepted `m` follows the target
//! exactly. `a(m) <= 1` holds by the choice of `W_i` (the target is largest at the bin's start)
//! and of `W_T >= 2 t K exp(-gamma(L)) / w` (since `1 - rho >= 1 / (2t)`). A uniform sign, with
//! `-0` rejected, gives `x`.
//!
//! # Exactness of each acceptance decision
//!
//! Every decision is `1{u < a(m)}` for a uniform real `u`. One 64-bit word gives the alias
//! column and threshold (32 bits), the sign, the offset (`b` bits) and the first `31 - b` digits
//! of `u`; when those digits are too few, a second word extends them to 52. The decision is
//! settled with floating point, but only when a rigorous interval around `a(m)` does not contain
//! the interval of reals that `u`'s digits leave open:
//!
//! 1. `c_i = K exp(-gamma(i w)) / W_i` is bracketed at construction with a relative slack of
//!    `2^-40` around its `f64` value (`libm`'s `exp` is within 1 ulp, `2^-52`; the argument's
//!    rounding adds at most `72 * 2^-51`);
//! 2. `a(m) = c_i exp(-d)`, `d = gamma(m) - gamma(i w) = (m - i w)(m + i w) / (2 S^2) >= 0`,
//!    computed with relative error below `2^-48`, is bracketed by `1 - d <= exp(-d) <= 1 - d +
//!    d^2/2` (no transcendental function at all), widened by the same slack;
//! 3. if that is undecided (probability about `d^2 / 2`), by `libm::exp(-d)` with the slack;
//! 4. if still undecided with 52 digits (probability about `2^-38`), or in the tail
//!    (probability below `2^-32`), exactly: [`super::exact`] draws more digits of `u` and
//!    brackets `a(m)` with integer arithmetic at growing precision until the comparison is
//!    settled.
//!
//! Steps 1 to 3 only ever answer when the answer is certain; step 4 always answers correctly.
//! The sampler is therefore exact, like the CKS sampler it replaces for fine grids, at about
//! a tenth of the cost (one generator word and no loops in almost every draw).

use std::fmt;

use num_bigint::BigUint;
use rand_core::Rng;

use super::{
    cks,
    exact::{LazyUniform, ceil_div, exp_neg_bounds},
    pow2,
};

/// Smallest scale (grid units per standard deviation) the binned sampler is used for.
pub(super) const MIN_SCALE: u64 = 1 << 11;

/// The core covers `[0, TAIL_SDS * S)`; beyond, the tail proposal.
const TAIL_SDS: u64 = 12;

/// Bits of probability mass in the alias table: entries are drawn with probability `W / 2^32`.
const MASS_BITS: u32 = 32;

/// Digits of `u` after the second word: as many as an `f64` holds exactly.
const LONG_DIGITS: u32 = 52;

/// Relative slack around every floating-point bracket (`2^-40`).
const EPS: f64 = 1.0 / 1_099_511_627_776.0;

/// Relative error allowed for `d` computed in `f64` (`2^-48`).
const D_ERR: f64 = 1.0 / 281_474_976_710_656.0;

/// Relative slack covering the roundings of `K * need` when sizing a weight (`2^-50`).
const ROUND: f64 = 1.0 / 1_125_899_906_842_624.0;

#[derive(Clone, Copy)]
struct Bin {
    base: u64,
    c_lo: f64,
    c_hi: f64,
}

#[derive(Clone, Copy)]
struct Column {
    threshold: u32,
    entry: u32,
}

/// See the [module documentation](self).
pub(super) struct Binned {
    scale: u64,
    width_bits: u32,
    bins: Vec<Bin>,
    weights: Vec<u64>,
    tail_start: u64,
    tail_t: u64,
    tail_weight: u64,
    k: u64,
    columns: Vec<Column>,
    column_bits: u32,
    inv_two_s2: f64,
    two_s2: BigUint,
}

impl fmt::Debug for Binned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Binned")
            .field("scale", &self.scale)
            .field("bin_width", &(1u64 << self.width_bits))
            .field("bins", &self.bins.len())
            .field("tail_start", &self.tail_start)
            .finish_non_exhaustive()
    }
}

impl Binned {
    /// The sampler for `N_Z(0, scale^2)`, `MIN_SCALE <= scale <= 2^30`.
    pub(super) fn new(scale: u64) -> Self {
        Self::with_tail_at(scale, TAIL_SDS)
    }

    /// As [`Self::new`] with the tail starting near `tail_sds * scale` (tests move it close to
    /// the mode so that the tail's exact path is exercised often).
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    pub(super) fn with_tail_at(scale: u64, tail_sds: u64) -> Self {
        assert!(
            (MIN_SCALE..=super::MAX_GRID_UNITS).contains(&scale),
            "binned sampler scale {scale} out of range"
        );
        assert!((1..=TAIL_SDS).contains(&tail_sds), "tail at {tail_sds} sds");
        let width_bits = scale.ilog2() - 5;
        let width = 1u64 << width_bits;
        let nbins = (tail_sds * scale).div_ceil(width);
        let tail_start = nbins * width;
        let s2 = u128::from(scale) * u128::from(scale);
        let tail_t = u64::try_from(s2.div_ceil(u128::from(tail_start))).expect("t < 2^30");
        let sf = scale as f64;
        let inv_two_s2 = 1.0 / (2.0 * sf * sf);
        // gamma(m) as f64 for m < 2^36: relative error below 2^-51.
        let gamma = |m: u64| {
            let mf = m as f64;
            mf * mf * inv_two_s2
        };
        let exp_up = |m: u64| libm::exp(-gamma(m)) * (1.0 + EPS);
        let bin_exp_up: Vec<f64> = (0..nbins).map(|i| exp_up(i * width)).collect();
        let tail_need = 2.0 * tail_t as f64 * exp_up(tail_start) / width as f64;
        let total: f64 = bin_exp_up.iter().sum::<f64>() + tail_need;
        let k_f = (4_294_967_296.0 * 0.99 / total).floor();
        assert!(k_f >= 1e6, "K = {k_f} too coarse");
        let k = k_f as u64;
        // W >= K * need, with 2^-50 covering the roundings of the product.
        let weight = |need: f64| ((k_f * need * (1.0 + ROUND)).ceil() as u64).max(1);
        let weights: Vec<u64> = bin_exp_up.iter().map(|&e| weight(e)).collect();
        let tail_weight = weight(tail_need);
        let bins = weights
            .iter()
            .enumerate()
            .map(|(i, &w_i)| {
                let base = i as u64 * width;
                let c = k_f * libm::exp(-gamma(base)) / w_i as f64;
                Bin {
                    base,
                    c_lo: c * (1.0 - EPS),
                    c_hi: c * (1.0 + EPS),
                }
            })
            .collect();

        // Entries: bins 0..B, tail B, padding B + 1, then zero-weight fillers.
        let used: u128 =
            weights.iter().map(|&w| u128::from(w)).sum::<u128>() + u128::from(tail_weight);
        let total_mass = 1u128 << MASS_BITS;
        assert!(used <= total_mass, "weights exceed 2^32");
        let mut entries: Vec<u128> = weights.iter().map(|&w| u128::from(w)).collect();
        entries.push(u128::from(tail_weight));
        entries.push(total_mass - used);
        let column_bits = (entries.len() as u64).next_power_of_two().ilog2();
        entries.resize(1 << column_bits, 0);
        let columns = alias_table(&entries, column_bits);
        Self {
            scale,
            width_bits,
            bins,
            weights,
            tail_start,
            tail_t,
            tail_weight,
            k,
            columns,
            column_bits,
            inv_two_s2,
            two_s2: BigUint::from(2 * s2),
        }
    }

    /// One exact draw from `N_Z(0, S^2)`.
    pub(super) fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> i128 {
        let low_mask = (1u64 << (MASS_BITS - self.column_bits)) - 1;
        loop {
            let r = rng.next_u64();
            let alias = r >> 32;
            #[allow(clippy::cast_possible_truncation)] // < 2^column_bits
            let column = (alias >> (MASS_BITS - self.column_bits)) as usize;
            let c = self.columns[column];
            let entry = if alias & low_mask < u64::from(c.threshold) {
                column
            } else {
                c.entry as usize
            };
            let low = r & 0xffff_ffff;
            let positive = low & 1 == 1;
            let magnitude = if entry < self.bins.len() {
                let offset = (low >> 1) & ((1 << self.width_bits) - 1);
                let u_bits = 31 - self.width_bits;
                let u = low >> (1 + self.width_bits);
                if !self.accept_core(entry, offset, u, u_bits, rng) {
                    continue;
                }
                u128::from(self.bins[entry].base + offset)
            } else if entry == self.bins.len() {
                match self.tail_draw(low >> 1, rng) {
                    Some(m) => m,
                    None => continue,
                }
            } else {
                continue; // padding
            };
            if positive || magnitude != 0 {
                #[allow(clippy::cast_possible_wrap)] // magnitude < 2^96
                let m = magnitude as i128;
                return if positive { m } else { -m };
            }
        }
    }

    /// `1{u < K exp(-gamma(m)) / W_i}` for `m = base_i + offset`; `u`'s first digits are `u`.
    #[inline]
    fn accept_core<R: Rng + ?Sized>(
        &self,
        entry: usize,
        offset: u64,
        u: u64,
        u_bits: u32,
        rng: &mut R,
    ) -> bool {
        if let Some(decided) = self.decide_core_fast(entry, offset, u, u_bits) {
            return decided;
        }
        self.accept_core_slow(entry, offset, u, u_bits, rng)
    }

    /// The rare continuation of [`Self::accept_core`], kept out of the hot loop.
    #[cold]
    #[inline(never)]
    fn accept_core_slow<R: Rng + ?Sized>(
        &self,
        entry: usize,
        offset: u64,
        u: u64,
        u_bits: u32,
        rng: &mut R,
    ) -> bool {
        // Extend u to 52 digits (still exact as an f64) and try again.
        let more = LONG_DIGITS - u_bits;
        let u = (u << more) | (rng.next_u64() >> (64 - more));
        self.decide_core_fast(entry, offset, u, LONG_DIGITS)
            .unwrap_or_else(|| self.decide_core_exact(entry, offset, u, LONG_DIGITS, rng))
    }

    /// Steps 1 to 3 of the module docs: the decision if floating point settles it for certain.
    #[inline]
    fn decide_core_fast(&self, entry: usize, offset: u64, u: u64, u_bits: u32) -> Option<bool> {
        let bin = self.bins[entry];
        // d = offset (2 base + offset) / (2 S^2); the product is below 2^62, exact as an integer.
        #[allow(clippy::cast_precision_loss)]
        let d = (offset * (2 * bin.base + offset)) as f64 * self.inv_two_s2;
        let (d_lo, d_hi) = (d * (1.0 - D_ERR), d * (1.0 + D_ERR));
        #[allow(clippy::cast_possible_wrap)] // u_bits <= 52
        let ulp = pow2(-(u_bits as i32));
        #[allow(clippy::cast_precision_loss)] // u < 2^52: exact
        let (u_lo, u_hi) = (u as f64 * ulp, (u + 1) as f64 * ulp);
        if u_hi <= bin.c_lo * (1.0 - d_hi) * (1.0 - EPS) {
            return Some(true);
        }
        if u_lo >= bin.c_hi * (1.0 - d_lo + 0.5 * d_hi * d_hi) * (1.0 + EPS) {
            return Some(false);
        }
        let e = libm::exp(-d);
        if u_hi <= bin.c_lo * e * (1.0 - EPS) {
            return Some(true);
        }
        if u_lo >= bin.c_hi * e * (1.0 + EPS) {
            return Some(false);
        }
        None
    }

    /// Step 4: the same decision in integer arithmetic, drawing more digits of `u` as needed.
    fn decide_core_exact<R: Rng + ?Sized>(
        &self,
        entry: usize,
        offset: u64,
        u: u64,
        u_bits: u32,
        rng: &mut R,
    ) -> bool {
        let m = BigUint::from(self.bins[entry].base + offset);
        let num = &m * &m;
        let k = BigUint::from(self.k);
        let div = BigUint::from(self.weights[entry]) << 72u32;
        LazyUniform::from_prefix(u, u_bits).less_than(rng, |p| {
            let (x_lo, x_hi) = exp_neg_bounds(&num, &self.two_s2, p + 72);
            (&k * x_lo / &div, ceil_div(&(&k * x_hi), &div))
        })
    }

    /// A tail proposal `m = L + g` and its acceptance (probability below `2^-32` per attempt).
    #[cold]
    #[inline(never)]
    fn tail_draw<R: Rng + ?Sized>(&self, u: u64, rng: &mut R) -> Option<u128> {
        let m = u128::from(self.tail_start) + cks::geometric(rng, self.tail_t);
        self.accept_tail(m, u, 31, rng).then_some(m)
    }

    /// `1{u < K exp(-gamma(m)) / (w W_T (1 - rho) rho^(m - L))}`, exactly.
    fn accept_tail<R: Rng + ?Sized>(&self, m: u128, u: u64, u_bits: u32, rng: &mut R) -> bool {
        // Exponent gamma(m) - (m - L)/t = (m^2 t - 2 S^2 (m - L)) / (2 S^2 t) >= gamma(L) >= 0.
        let m_big = BigUint::from(m);
        let t = BigUint::from(self.tail_t);
        let num = &m_big * &m_big * &t - &self.two_s2 * (m_big - self.tail_start);
        let den = &self.two_s2 * &t;
        let k = BigUint::from(self.k);
        let w_wt = BigUint::from(self.tail_weight) << self.width_bits;
        let one = BigUint::from(1u32);
        LazyUniform::from_prefix(u, u_bits).less_than(rng, |p| {
            let q = p + 160;
            let (x_lo, x_hi) = exp_neg_bounds(&num, &den, q);
            // 1 - rho in [2^q - e_hi, 2^q - e_lo] / 2^q.
            let (e_lo, e_hi) = exp_neg_bounds(&one, &t, q);
            let full = &one << q;
            let (d_lo, d_hi) = (&full - e_hi, &full - e_lo);
            (
                ((&k * x_lo) << p) / (&w_wt * d_hi),
                ceil_div(&((&k * x_hi) << p), &(&w_wt * d_lo)),
            )
        })
    }
}

/// Alias table over `2^column_bits` columns of capacity `2^(32 - column_bits)` each, for integer
/// weights summing to `2^32`, built by Vose's method in exact integer arithmetic: entry `i` is
/// drawn with probability exactly `weights[i] / 2^32`.
fn alias_table(weights: &[u128], column_bits: u32) -> Vec<Column> {
    debug_assert_eq!(weights.len(), 1 << column_bits);
    debug_assert_eq!(weights.iter().sum::<u128>(), 1 << MASS_BITS);
    let cap = 1u128 << (MASS_BITS - column_bits);
    let mut rest = weights.to_vec();
    let (mut small, mut large): (Vec<usize>, Vec<usize>) =
        (0..weights.len()).partition(|&i| rest[i] < cap);
    #[allow(clippy::cast_possible_truncation)]
    let mut columns: Vec<Column> = (0..weights.len())
        .map(|i| Column {
            threshold: cap as u32,
            entry: i as u32,
        })
        .collect();
    while let (Some(&s), Some(&l)) = (small.last(), large.last()) {
        small.pop();
        #[allow(clippy::cast_possible_truncation)] // rest[s] < cap <= 2^30
        {
            columns[s] = Column {
                threshold: rest[s] as u32,
                entry: l as u32,
            };
        }
        rest[l] -= cap - rest[s];
        if rest[l] < cap {
            large.pop();
            small.push(l);
        }
    }
    // Exact integers: whatever is left holds exactly one column's capacity.
    debug_assert!(small.iter().chain(&large).all(|&i| rest[i] == cap));
    columns
}

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20::ChaCha20Rng;
    use rand_core::SeedableRng;

    /// Probability mass of each entry implied by the table, in units of 2^-64.
    fn implied(columns: &[Column], column_bits: u32) -> Vec<u128> {
        let cap = 1u128 << (MASS_BITS - column_bits);
        let mut mass = vec![0u128; columns.len()];
        for (j, c) in columns.iter().enumerate() {
            mass[j] += u128::from(c.threshold);
            mass[c.entry as usize] += cap - u128::from(c.threshold);
        }
        mass
    }

    #[test]
    fn alias_table_reproduces_the_weights_exactly() {
        for scale in [MIN_SCALE, 3_000, 1 << 20, (1 << 30) - 7] {
            let b = Binned::new(scale);
            let mut want: Vec<u128> = b.weights.iter().map(|&w| u128::from(w)).collect();
            want.push(u128::from(b.tail_weight));
            let used: u128 = want.iter().sum();
            want.push((1u128 << MASS_BITS) - used);
            want.resize(b.columns.len(), 0);
            assert_eq!(implied(&b.columns, b.column_bits), want, "scale {scale}");
            // About 1% padding, as designed.
            #[allow(clippy::cast_precision_loss)]
            let padding = ((1u128 << MASS_BITS) - used) as f64 / 2f64.powi(32);
            assert!((0.005..0.02).contains(&padding), "padding {padding}");
        }
    }

    #[test]
    fn acceptance_never_exceeds_one() {
        // c_i = K exp(-gamma(i w)) / W_i <= 1 at every bin start, checked with the exact bracket.
        for scale in [MIN_SCALE, 1 << 20, 1 << 30] {
            let b = Binned::new(scale);
            for (i, bin) in b.bins.iter().enumerate() {
                let m = BigUint::from(bin.base);
                let (_, hi) = exp_neg_bounds(&(&m * &m), &b.two_s2, 200);
                // K * hi <= W_i * 2^200 with hi >= exp(-gamma) * 2^200: rigorous.
                let lhs = BigUint::from(b.k) * hi;
                assert!(
                    lhs <= BigUint::from(b.weights[i]) << 200u32,
                    "bin {i} at scale {scale}"
                );
                assert!(bin.c_lo <= 1.0);
            }
        }
    }

    #[test]
    fn draws_are_fast_path_almost_always_and_deterministic() {
        let b = Binned::new(1 << 29);
        let mut r1 = ChaCha20Rng::seed_from_u64(1);
        let mut r2 = ChaCha20Rng::seed_from_u64(1);
        for _ in 0..10_000 {
            assert_eq!(b.sample(&mut r1), b.sample(&mut r2));
        }
    }

    /// The floating-point decisions agree with the exact ones wherever they answer, including
    /// for digits chosen right at the acceptance probability, and leave only rare cases open.
    #[test]
    fn fast_decisions_agree_with_exact_ones() {
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        for scale in [MIN_SCALE, 12_345, 1 << 29] {
            let b = Binned::new(scale);
            let width = 1u64 << b.width_bits;
            let (mut decided, mut open) = (0u32, 0u32);
            for trial in 0..3000u64 {
                let u_bits = if trial % 2 == 0 {
                    31 - b.width_bits
                } else {
                    LONG_DIGITS
                };
                let entry = usize::try_from(rng.next_u64() % b.bins.len() as u64).unwrap();
                let offset = rng.next_u64() % width;
                // Every third trial puts u's digits within a few units of the exact threshold.
                let u = if trial % 3 == 0 {
                    let m = BigUint::from(b.bins[entry].base + offset);
                    let (lo, _) = exp_neg_bounds(&(&m * &m), &b.two_s2, u64::from(u_bits) + 72);
                    let a = BigUint::from(b.k) * lo / (BigUint::from(b.weights[entry]) << 72u32);
                    let a = u64::try_from(&a).unwrap_or(u64::MAX >> (64 - u_bits));
                    (a + (rng.next_u64() % 5))
                        .saturating_sub(2)
                        .min((1 << u_bits) - 1)
                } else {
                    rng.next_u64() >> (64 - u_bits)
                };
                match b.decide_core_fast(entry, offset, u, u_bits) {
                    Some(fast) => {
                        decided += 1;
                        let exact = b.decide_core_exact(entry, offset, u, u_bits, &mut rng);
                        assert_eq!(
                            fast, exact,
                            "scale {scale} bin {entry} offset {offset} u {u}"
                        );
                    }
                    None => open += 1,
                }
            }
            // Random digits are all settled by floating point; only near-threshold ones stay open.
            assert!(
                decided >= 2000 && open <= 1000,
                "{decided} decided, {open} open"
            );
        }
    }

    /// Chi-square of draws against the exact probabilities of `N_Z(0, S^2)`, in buckets of
    /// `S / 8` out to 6 S plus two pooled tails; with the tail proposal moved to 1 S so that a
    /// third of all draws go through the tail's exact path.
    #[test]
    fn matches_the_exact_distribution_including_the_tail_path() {
        for (tail_sds, seed) in [(TAIL_SDS, 1u64), (1, 2)] {
            let scale = MIN_SCALE;
            let b = Binned::with_tail_at(scale, tail_sds);
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let n = 60_000usize;
            let bucket = i64::try_from(scale / 8).unwrap();
            let reach = 6 * i64::try_from(scale).unwrap();
            let nb = usize::try_from(2 * reach / bucket).unwrap();
            let mut counts = vec![0f64; nb + 2];
            let index = |x: i64| {
                if x < -reach {
                    nb
                } else if x >= reach {
                    nb + 1
                } else {
                    usize::try_from((x + reach) / bucket).unwrap()
                }
            };
            let mut beyond_tail_start = 0usize;
            for _ in 0..n {
                let x = i64::try_from(b.sample(&mut rng)).unwrap();
                if x.unsigned_abs() >= b.tail_start {
                    beyond_tail_start += 1;
                }
                counts[index(x)] += 1.0;
            }
            #[allow(clippy::cast_precision_loss)]
            let sf = scale as f64;
            let mut expected = vec![0f64; nb + 2];
            let lim = 40 * i64::try_from(scale).unwrap();
            let mut z = 0.0;
            for x in -lim..=lim {
                #[allow(clippy::cast_precision_loss)]
                let xf = x as f64;
                let p = (-xf * xf / (2.0 * sf * sf)).exp();
                z += p;
                expected[index(x)] += p;
            }
            #[allow(clippy::cast_precision_loss)]
            let nf = n as f64;
            let cells: Vec<(f64, f64)> = counts
                .iter()
                .zip(&expected)
                .map(|(o, e)| (*o, e / z * nf))
                .filter(|(_, e)| *e >= 5.0)
                .collect();
            let chi2: f64 = cells.iter().map(|(o, e)| (o - e).powi(2) / e).sum();
            // Upper 1e-9 quantile (Wilson-Hilferty, z = 6) for the cells used (about 56).
            #[allow(clippy::cast_precision_loss)]
            let df = (cells.len() - 1) as f64;
            let c = 2.0 / (9.0 * df);
            let bound = df * (1.0 - c + 6.0 * c.sqrt()).powi(3);
            assert!(cells.len() > 50, "{} cells", cells.len());
            assert!(
                chi2 < bound,
                "tail at {tail_sds} sds: chi2 {chi2} over {df} df"
            );
            if tail_sds == 1 {
                // P(|x| >= L) with L just above S is about 0.31.
                #[allow(clippy::cast_precision_loss)]
                let frac = beyond_tail_start as f64 / nf;
                assert!((0.28..0.34).contains(&frac), "tail fraction {frac}");
            }
        }
    }
}
