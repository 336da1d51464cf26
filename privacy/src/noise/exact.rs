//! Exact decisions `u < v` between a uniform real `u` and a transcendental threshold `v`.
//!
//! The binned sampler decides almost every acceptance from 64 random bits and a floating-point
//! interval around the acceptance probability (see [`super::binned`]). When the interval cannot
//! decide (probability about `2^-38` per draw), the decision is finished here, exactly: `u` is a
//! uniform real whose binary digits are drawn lazily ([`LazyUniform`]), and `v` is bracketed by
//! integers at precision `p` bits ([`exp_neg_bounds`]); `p` doubles until the bracket and the
//! digits drawn so far settle the comparison. The result is `1{u < v}` for a uniform `u`, i.e. a
//! Bernoulli(`v`) draw with no approximation; only the running time is random.

use num_bigint::{BigInt, BigUint, Sign};
use rand_core::Rng;

/// A uniform real in `[0, 1)`: `prefix` holds its first `bits` binary digits; more are drawn
/// from the generator only when a comparison needs them.
pub(super) struct LazyUniform {
    prefix: BigUint,
    bits: u64,
}

impl LazyUniform {
    /// A uniform real whose first `bits` digits (`bits <= 64`) are the low bits of `prefix`.
    pub(super) fn from_prefix(prefix: u64, bits: u32) -> Self {
        debug_assert!(bits <= 64 && (bits == 64 || prefix >> bits == 0));
        Self {
            prefix: BigUint::from(prefix),
            bits: u64::from(bits),
        }
    }

    fn extend_to<R: Rng + ?Sized>(&mut self, bits: u64, rng: &mut R) {
        while self.bits < bits {
            let take = (bits - self.bits).min(64);
            let fresh = if take == 64 {
                rng.next_u64()
            } else {
                rng.next_u64() >> (64 - take)
            };
            self.prefix = (std::mem::take(&mut self.prefix) << take) | BigUint::from(fresh);
            self.bits += take;
        }
    }

    /// Whether `u < v`, where `bracket(p)` returns integers `(lo, hi)` with
    /// `lo <= v * 2^p <= hi`. The bracket must narrow to a bounded width (in units of `2^-p`) as
    /// `p` grows, so that the loop ends with probability one.
    pub(super) fn less_than<R, F>(&mut self, rng: &mut R, mut bracket: F) -> bool
    where
        R: Rng + ?Sized,
        F: FnMut(u64) -> (BigUint, BigUint),
    {
        let mut p = self.bits.max(32);
        loop {
            self.extend_to(p, rng);
            let (lo, hi) = bracket(p);
            // u lies in [prefix, prefix + 1) * 2^-p: below v if prefix + 1 <= lo.
            if self.prefix < lo {
                return true;
            }
            if self.prefix >= hi {
                return false;
            }
            p *= 2;
        }
    }
}

/// Integers `(lo, hi)` with `lo <= exp(-num / den) * 2^p <= hi`, `den > 0`, `hi - lo <= 4`.
///
/// `exp(-x)` is `exp(-1)^n * exp(-f)` with `n = floor(x)` and `f` in `[0, 1)`; each factor is
/// an alternating series whose terms decrease, so a partial sum is within the next term of the
/// value. Terms and products are carried as integer intervals at a working precision of
/// `p + 2 log2(n) + 40` bits, rounding every lower end down and every upper end up. For
/// `x >= p` the value is at most `2^-x <= 2^-p` (since `e > 2`), so `(0, 1)` brackets it.
pub(super) fn exp_neg_bounds(num: &BigUint, den: &BigUint, p: u64) -> (BigUint, BigUint) {
    debug_assert!(*den > BigUint::ZERO);
    let whole = num / den;
    if whole >= BigUint::from(p) {
        return (BigUint::ZERO, BigUint::from(1u32));
    }
    let n = u64::try_from(&whole).expect("below p");
    let frac = num - &whole * den;
    let w = p + 2 * u64::from(64 - n.leading_zeros()) + 40;
    let (mut lo, mut hi) = exp_neg_frac(&frac, den, w);
    if n > 0 {
        let one = BigUint::from(1u32);
        let (e_lo, e_hi) = exp_neg_frac(&one, &one, w);
        for _ in 0..n {
            lo = (lo * &e_lo) >> w;
            hi = ceil_shr(hi * &e_hi, w);
        }
    }
    (lo >> (w - p), ceil_shr(hi, w - p))
}

/// `(lo, hi)` with `lo <= exp(-num / den) * 2^w <= hi` for `0 <= num / den <= 1`.
fn exp_neg_frac(num: &BigUint, den: &BigUint, w: u64) -> (BigUint, BigUint) {
    debug_assert!(num <= den);
    let scaled = num << w;
    let f_lo = &scaled / den;
    let f_hi = ceil_div(&scaled, den);
    // Term k of sum (-f)^k / k!, as an interval [t_lo, t_hi] in units of 2^-w.
    let mut t_lo = BigUint::from(1u32) << w;
    let mut t_hi = t_lo.clone();
    let mut sum_lo = BigInt::from(t_lo.clone());
    let mut sum_hi = sum_lo.clone();
    let mut k: u32 = 0;
    loop {
        k += 1;
        t_lo = ((t_lo * &f_lo) >> w) / k;
        t_hi = ceil_div(&ceil_shr(t_hi * &f_hi, w), &BigUint::from(k));
        if t_hi <= BigUint::from(1u32) {
            // Remainder after term k - 1 is at most t_k <= t_hi (alternating, decreasing terms).
            let r = BigInt::from(t_hi);
            let lo = (sum_lo - &r).max(BigInt::ZERO);
            let hi = sum_hi + r;
            return (to_unsigned(lo), to_unsigned(hi));
        }
        if k % 2 == 1 {
            sum_lo -= BigInt::from(t_hi.clone());
            sum_hi -= BigInt::from(t_lo.clone());
        } else {
            sum_lo += BigInt::from(t_lo.clone());
            sum_hi += BigInt::from(t_hi.clone());
        }
    }
}

fn to_unsigned(x: BigInt) -> BigUint {
    debug_assert!(x.sign() != Sign::Minus);
    x.to_biguint().unwrap_or_default()
}

/// `ceil(a / b)` for `b > 0`.
pub(super) fn ceil_div(a: &BigUint, b: &BigUint) -> BigUint {
    (a + b - 1u32) / b
}

fn ceil_shr(a: BigUint, s: u64) -> BigUint {
    let one = BigUint::from(1u32);
    (a + ((&one << s) - &one)) >> s
}

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20::ChaCha20Rng;
    use proptest::prelude::*;
    use rand_core::SeedableRng;

    fn to_f64(x: &BigUint, p: u64) -> f64 {
        let digits = x.to_u64_digits();
        let mut v = 0.0f64;
        for d in digits.iter().rev() {
            #[allow(clippy::cast_precision_loss)]
            let d = *d as f64;
            v = v * 2f64.powi(64) + d;
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
        let p = p as i32;
        v * 2f64.powi(-p)
    }

    proptest! {
        #[test]
        fn exp_bounds_bracket_the_float_value(
            num in 0u64..5_000_000,
            den in 1u64..100_000,
            p in 8u64..200,
        ) {
            let (lo, hi) = exp_neg_bounds(&BigUint::from(num), &BigUint::from(den), p);
            prop_assert!(lo <= hi);
            prop_assert!(&hi - &lo <= BigUint::from(4u32), "width {}", &hi - &lo);
            #[allow(clippy::cast_precision_loss)]
            let x = num as f64 / den as f64;
            let v = (-x).exp();
            let scale = 2f64.powi(i32::try_from(p).unwrap());
            // f64 agrees to ~1e-15 relative; the bracket is exact.
            prop_assert!(to_f64(&lo, p) <= v * (1.0 + 1e-12) + 1.0 / scale);
            prop_assert!(to_f64(&hi, p) >= v * (1.0 - 1e-12) - 1.0 / scale);
        }
    }

    #[test]
    fn exp_bounds_narrow_with_precision() {
        // exp(-1/3) to 300 bits: width stays bounded, so the relative width shrinks as 2^-p.
        let (num, den) = (BigUint::from(1u32), BigUint::from(3u32));
        for p in [64u64, 128, 300] {
            let (lo, hi) = exp_neg_bounds(&num, &den, p);
            assert!(&hi - &lo <= BigUint::from(4u32));
            assert!(
                lo.bits() == p,
                "exp(-1/3) = 0.71..: {} bits at p = {p}",
                lo.bits()
            );
        }
        // Huge exponents are bracketed by (0, 1).
        let (lo, hi) = exp_neg_bounds(&BigUint::from(1000u32), &BigUint::from(1u32), 64);
        assert_eq!((lo, hi), (BigUint::ZERO, BigUint::from(1u32)));
    }

    #[test]
    fn lazy_comparison_is_a_bernoulli_draw() {
        // u < exp(-0.7) must happen with probability exp(-0.7), starting from 1-bit prefixes
        // so that most decisions need the lazy extension.
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let (num, den) = (BigUint::from(7u32), BigUint::from(10u32));
        let n = 20_000;
        let mut hits = 0u32;
        for _ in 0..n {
            let first = rng.next_u64() >> 63;
            let mut u = LazyUniform::from_prefix(first, 1);
            if u.less_than(&mut rng, |p| exp_neg_bounds(&num, &den, p)) {
                hits += 1;
            }
        }
        let p = (-0.7f64).exp();
        let freq = f64::from(hits) / f64::from(n);
        let sd = (p * (1.0 - p) / f64::from(n)).sqrt();
        assert!((freq - p).abs() < 6.0 * sd, "{freq} vs {p}");
    }

    #[test]
    fn a_prefix_that_already_decides_draws_nothing_more() {
        // u in [0.5, 1) against v = exp(-1000) < 2^-32: decided at p = 32 from the prefix alone.
        struct NoMore;
        impl rand_core::TryRng for NoMore {
            type Error = core::convert::Infallible;
            fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
                unreachable!("no digits needed")
            }
            fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
                unreachable!("no digits needed")
            }
            fn try_fill_bytes(&mut self, _: &mut [u8]) -> Result<(), Self::Error> {
                unreachable!("no digits needed")
            }
        }
        let mut u = LazyUniform::from_prefix(u64::MAX >> 1, 63);
        let (num, den) = (BigUint::from(1000u32), BigUint::from(1u32));
        assert!(!u.less_than(&mut NoMore, |p| exp_neg_bounds(&num, &den, p)));
    }
}
