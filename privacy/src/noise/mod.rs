//! Gaussian noise that is safe on real floating point: an exact discrete Gaussian on a `2^k` grid.
//!
//! # What this module does
//!
//! [`SecureGaussian::add_noise_f32`] and [`SecureGaussian::add_noise_f64`] add noise of standard
//! deviation (at least) `std_dev` to every coordinate of a vector, the way OpenDP's
//! `make_gaussian` on a `VectorDomain<AtomDomain<f64>>` under `L2Distance` does:
//!
//! 1. each coordinate `x` is rounded to the nearest multiple of `2^k` (ties up), giving an integer
//!    `r = round(x / 2^k)`;
//! 2. an integer `n` is drawn exactly from the discrete Gaussian `N_Z(0, S^2)` with
//!    `S = ceil(std_dev / 2^k)` grid units;
//! 3. the exact lattice point `z = r + n` is converted back to a float, `z * 2^k`.
//!
//! The default grid puts `S` in `[2^29, 2^30]`, so the noise is a lattice Gaussian with more
//! than five hundred million points per standard deviation.
//!
//! Two exact samplers draw `n`, chosen by `S`:
//!
//! - `S >= 2048` (every default grid): the binned sampler (`noise/binned.rs`), rejection
//!   sampling from an alias-table proposal over bins of width about `S / 32` plus a geometric
//!   tail. It uses one 64-bit generator word per draw in almost every case and decides
//!   acceptances with floating point only when a rigorous interval settles them; otherwise
//!   (`noise/exact.rs`) it draws more random digits and compares in big-integer arithmetic at
//!   growing precision.
//! - `S < 2048` (coarse explicit grids): the algorithm of Canonne, Kamath and Steinke (2020),
//!   "The Discrete Gaussian for Differential Privacy", algorithms 1 to 3 (`noise/cks.rs`): a
//!   discrete Laplace proposal, accepted with probability `exp(-(|y| - S^2/t)^2 / (2 S^2))`;
//!   every Bernoulli decision compares a uniform integer with an integer numerator.
//!
//! Both produce `N_Z(0, S^2)` exactly; the binned sampler is about fifteen times faster.
//!
//! # Soundness argument
//!
//! **Floating-point attacks.** Mironov (2012) showed that textbook samplers leak: `x + Laplace`
//! computed in floating point can only produce a set of doubles that depends on `x`, so an
//! observer who sees the output's low-order bits learns `x`; Box-Muller Gaussians have the same
//! porous support. Here the mechanism's real output is the integer `z = r + n`. Its distribution
//! is exactly `r + N_Z(0, S^2)`: the samplers draw uniform bits from the generator, and every
//! decision they make is the exact value of a comparison between a uniform real and a
//! probability. Floating point is used only to *certify* a comparison whose outcome a rigorous
//! interval already determines (the binned sampler's fast path; its error analysis is in
//! `noise/binned.rs`); an undecided comparison is finished in integer arithmetic. So the support
//! and the probabilities of `n` do not depend on floating-point rounding, and `n` is drawn
//! independently of `x`. The final float `z * 2^k` is a deterministic function of `z` alone
//! (integer `-> f64` rounds to nearest, then an exact power-of-two scaling; `f32` outputs round
//! that `f64` once more), hence post-processing, which cannot weaken differential privacy. (For
//! inputs with `|x| >= 2^(k+53)` the float is `x + n * 2^k`, still a function of `z` because
//! `n * 2^k` is exact while `|n| < 2^53`, i.e. for all but a `exp(-2^44)` fraction of draws.)
//!
//! **Timing.** How long a draw takes depends only on the generator's bits, never on `x`, so
//! drawing noise ahead ([`SecureGaussian::draw`]) or inline reveals nothing about the data.
//!
//! **Rounding is charged to the sensitivity.** Rounding moves each coordinate by at most
//! `2^(k-1)`, so two inputs at L2 distance `d` are rounded to lattice points at distance at most
//! `d + sqrt(n) * 2^k` (each of the two vectors moves by at most `sqrt(n) * 2^(k-1)`). This is
//! OpenDP's charge (`get_rounding_distance`: `(2^k - 2^k_min) * sqrt(n)`; we do not subtract the
//! input granularity, which only makes ours larger). [`SecureGaussian::sensitivity_with_rounding`]
//! returns `l2 + sqrt(n) * 2^k`, rounded up, and
//! [`SecureGaussian::effective_noise_multiplier`] returns `S * 2^k` divided by it, rounded down:
//! that ratio is the noise multiplier to give the accountant. At the default grid the charge is at
//! most `sqrt(n) * std_dev * 2^-29`, about `2e-6 * std_dev` for a million coordinates.
//!
//! **Why the Gaussian accountant applies to a lattice Gaussian.** For a shift `mu` on the lattice,
//! `N_Z(0, S^2)` and `N_Z(mu, S^2)` have the same normalising constant, and the privacy loss at
//! `x` is the continuous one, `(2 x mu - mu^2) / (2 S^2)`. For integer orders the Renyi divergence
//! of the (subsampled) mixture expands, by the binomial theorem, into a finite sum of Gaussian
//! functions of width `S`; by Poisson summation, a sum of such a function over `Z` equals its
//! integral times `1 + theta` with `|theta| <= 2 sum_{m>=1} exp(-2 pi^2 S^2 m^2)`, below
//! `10^(-10^18)` for `S >= 2^29`, and the same factor appears in the normaliser. The discrete
//! mechanism therefore has the continuous Gaussian's RDP up to an additive term far below `f64`
//! resolution (also coordinate-wise in many dimensions, where the sums factor). CKS 2020 show the
//! same for the unsampled case (the discrete Gaussian satisfies `mu^2 / (2 S^2)`-zCDP, like the
//! continuous one). This is why the grid is fine: a coarse grid (small `S`, e.g. with an explicit
//! `k`) is still exact as a sampler, but then the `1 + theta` argument needs `S` of at least a few.
//!
//! **Randomness and parallelism.** The caller hands in a cryptographically secure generator
//! (production: `ChaCha20Rng` seeded from the operating system). One call draws a fresh 32-byte
//! key from it; the vector is cut into chunks of [`CHUNK_LEN`] coordinates and chunk `i` draws
//! from `ChaCha20` under that key with stream id (nonce) `i`. ChaCha20 is a pseudorandom function
//! of (key, nonce, block counter): distinct nonces give keystreams that are computationally
//! independent and uniform, so the chunks' noise is independent; each chunk uses far fewer than
//! the `2^64` blocks of its stream, so no block is ever reused. Since the chunking does not depend
//! on the number of threads, the output is a deterministic function of the key and the input,
//! whatever rayon's scheduling.
//!
//! **Why not OpenDP's own sampler.** OpenDP is our reference in tests and benchmarks only. It
//! draws from `rand 0.7`'s `thread_rng` when built without `use-openssl` (its docs call that
//! non-secure); with the feature it builds a vendored OpenSSL. Neither matters for production,
//! whose randomness is the caller's `ChaCha20Rng`, so the workspace keeps OpenDP a
//! dev-dependency without `use-openssl` (faster builds, no OpenSSL in the tree).

use chacha20::ChaCha20Rng;
use rand_core::{CryptoRng, Rng, SeedableRng};
use rayon::prelude::*;

use crate::error::PrivacyError;

mod binned;
mod cks;
mod exact;

/// Coordinates per independent ChaCha20 stream (and per rayon task).
pub const CHUNK_LEN: usize = 1024;

/// Default grid: `std_dev / 2^k` lies in `[2^DEFAULT_GRID_BITS, 2^(DEFAULT_GRID_BITS + 1))`.
pub const DEFAULT_GRID_BITS: i32 = 29;

/// Largest supported noise scale in grid units (keeps all sampler integers within 256 bits).
pub const MAX_GRID_UNITS: u64 = 1 << 30;

/// Exact discrete Gaussian noise on a `2^k` grid, for vectors of `f32` or `f64`.
///
/// See the [module documentation](self) for the algorithm and its soundness argument.
#[derive(Debug, Clone)]
pub struct SecureGaussian {
    std_dev: f64,
    k: i32,
    scale: u64,
    sampler: Lattice,
}

impl SecureGaussian {
    /// Noise of standard deviation at least `std_dev` on the grid `2^k`.
    ///
    /// `k = None` picks `k = floor(log2(std_dev)) - 29`, so that the noise spans `2^29` to `2^30`
    /// grid points per standard deviation and the rounding charge is negligible. An explicit `k`
    /// must leave at most [`MAX_GRID_UNITS`] grid points per standard deviation; a coarse `k`
    /// rounds the noise scale up to a whole number of grid units (see
    /// [`effective_std_dev`](Self::effective_std_dev)).
    pub fn new(std_dev: f64, k: Option<i32>) -> Result<Self, PrivacyError> {
        if !(std_dev.is_finite() && std_dev > 0.0) {
            return Err(PrivacyError::InvalidParameter {
                name: "std_dev",
                value: std_dev,
                reason: "must be finite and > 0",
            });
        }
        let k = match k {
            Some(k) if !(MIN_K..=MAX_K).contains(&k) => {
                return Err(PrivacyError::InvalidParameter {
                    name: "k",
                    value: f64::from(k),
                    reason: "grid exponent must lie in [-1074, 1023]",
                });
            }
            Some(k) => k,
            None => (libm::ilogb(std_dev) - DEFAULT_GRID_BITS).max(MIN_K),
        };
        let grid_units = mul_pow2(std_dev, -k);
        #[allow(clippy::cast_precision_loss)]
        let max = MAX_GRID_UNITS as f64;
        if grid_units > max {
            return Err(PrivacyError::GridTooFine {
                std_dev,
                k,
                grid_units,
                max,
            });
        }
        // ceil of a value in (0, 2^30] is exact; a product that underflowed to 0 still has a
        // true ceiling of 1 because std_dev > 0.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let scale = (grid_units.ceil() as u64).max(1);
        Ok(Self {
            std_dev,
            k,
            scale,
            sampler: Lattice::new(scale),
        })
    }

    /// The requested standard deviation.
    pub fn std_dev(&self) -> f64 {
        self.std_dev
    }

    /// The grid exponent `k`: outputs are multiples of `2^k`.
    pub fn grid_exponent(&self) -> i32 {
        self.k
    }

    /// Noise scale in grid units, `S = ceil(std_dev / 2^k)`.
    pub fn grid_units(&self) -> u64 {
        self.scale
    }

    /// The standard deviation actually used, `S * 2^k >= std_dev`.
    pub fn effective_std_dev(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)] // S <= 2^30 is exact
        mul_pow2(self.scale as f64, self.k)
    }

    /// L2 sensitivity after rounding to the grid: `l2_sensitivity + sqrt(len) * 2^k`, rounded up.
    ///
    /// Two inputs at L2 distance `l2_sensitivity` are rounded to grid points at most this far
    /// apart, so this, not `l2_sensitivity`, is the sensitivity the noise protects.
    pub fn sensitivity_with_rounding(&self, l2_sensitivity: f64, len: usize) -> f64 {
        #[allow(clippy::cast_precision_loss)] // rounded up below
        let n = len as f64;
        let mut root = n.sqrt();
        if root * root < n {
            root = root.next_up();
        }
        (l2_sensitivity + mul_pow2(root, self.k)).next_up()
    }

    /// Noise multiplier to account for: effective std dev over the sensitivity with rounding,
    /// rounded down (a smaller multiplier means a larger, never smaller, reported epsilon).
    pub fn effective_noise_multiplier(&self, l2_sensitivity: f64, len: usize) -> f64 {
        (self.effective_std_dev() / self.sensitivity_with_rounding(l2_sensitivity, len)).next_down()
    }

    /// Adds noise to every coordinate of `values` in place.
    ///
    /// Draws one 32-byte key from `rng`; see the module docs for the per-chunk streams. Refuses
    /// (before drawing any randomness or changing anything) a vector with NaN or an infinity.
    pub fn add_noise_f32<R>(&self, values: &mut [f32], rng: &mut R) -> Result<(), PrivacyError>
    where
        R: CryptoRng + ?Sized,
    {
        self.add_noise(values, rng)
    }

    /// Adds noise to every coordinate of `values` in place; see [`Self::add_noise_f32`].
    pub fn add_noise_f64<R>(&self, values: &mut [f64], rng: &mut R) -> Result<(), PrivacyError>
    where
        R: CryptoRng + ?Sized,
    {
        self.add_noise(values, rng)
    }

    /// Draws the noise for a vector of `len` coordinates without applying it.
    ///
    /// The noise does not depend on the data, so it can be drawn ahead of time (for example on
    /// another core while the gradient it will protect is computed) and applied later with
    /// [`Self::apply_f32`]. Drawing and then applying gives exactly what
    /// [`Self::add_noise_f32`] gives for the same generator state.
    pub fn draw<R: CryptoRng + ?Sized>(&self, len: usize, rng: &mut R) -> LatticeNoise {
        let key = draw_key(rng);
        let mut units = vec![0i64; len];
        for_each_chunk(&mut units, |chunk, units| {
            let mut stream = chunk_stream(key, chunk);
            for u in units.iter_mut() {
                *u = to_units(self.sampler.sample(&mut stream));
            }
        });
        LatticeNoise {
            k: self.k,
            scale: self.scale,
            units,
        }
    }

    /// Applies noise drawn by [`Self::draw`] to `values`: each coordinate is rounded to the grid
    /// and moved by its drawn number of grid steps.
    ///
    /// Refuses, changing nothing, noise of another length or from a sampler with another grid or
    /// scale, and a vector with NaN or an infinity.
    pub fn apply_f32(&self, values: &mut [f32], noise: &LatticeNoise) -> Result<(), PrivacyError> {
        self.apply(values, noise)
    }

    /// Applies noise drawn by [`Self::draw`] to `values`; see [`Self::apply_f32`].
    pub fn apply_f64(&self, values: &mut [f64], noise: &LatticeNoise) -> Result<(), PrivacyError> {
        self.apply(values, noise)
    }

    fn apply<T: GridFloat>(
        &self,
        values: &mut [T],
        noise: &LatticeNoise,
    ) -> Result<(), PrivacyError> {
        if noise.k != self.k || noise.scale != self.scale {
            return Err(PrivacyError::InvalidParameter {
                name: "noise grid units",
                #[allow(clippy::cast_precision_loss)]
                value: noise.scale as f64,
                reason: "noise was drawn by a sampler with another grid or scale",
            });
        }
        if noise.units.len() != values.len() {
            return Err(PrivacyError::InvalidParameter {
                name: "noise length",
                #[allow(clippy::cast_precision_loss)]
                value: noise.units.len() as f64,
                reason: "noise was drawn for a vector of another length",
            });
        }
        check_finite(values)?;
        let grid = Grid::new(self.k);
        for_each_chunk(values, |chunk, values| {
            let units = &noise.units[chunk * CHUNK_LEN..];
            for (v, &n) in values.iter_mut().zip(units) {
                *v = T::from_f64(grid.add(v.to_f64(), n));
            }
        });
        Ok(())
    }

    fn add_noise<T: GridFloat, R: CryptoRng + ?Sized>(
        &self,
        values: &mut [T],
        rng: &mut R,
    ) -> Result<(), PrivacyError> {
        check_finite(values)?;
        let key = draw_key(rng);
        let grid = Grid::new(self.k);
        for_each_chunk(values, |chunk, values| {
            let mut stream = chunk_stream(key, chunk);
            for v in values.iter_mut() {
                let noise = to_units(self.sampler.sample(&mut stream));
                *v = T::from_f64(grid.add(v.to_f64(), noise));
            }
        });
        Ok(())
    }
}

/// Noise drawn by [`SecureGaussian::draw`]: one integer number of grid steps per coordinate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatticeNoise {
    k: i32,
    scale: u64,
    units: Vec<i64>,
}

impl LatticeNoise {
    /// Number of coordinates.
    pub fn len(&self) -> usize {
        self.units.len()
    }

    /// Whether the noise has no coordinates.
    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }
}

fn check_finite<T: GridFloat>(values: &[T]) -> Result<(), PrivacyError> {
    match values
        .iter()
        .enumerate()
        .map(|(i, v)| (i, v.to_f64()))
        .find(|(_, v)| !v.is_finite())
    {
        Some((index, value)) => Err(PrivacyError::NonFiniteInput { index, value }),
        None => Ok(()),
    }
}

/// Vectors shorter than this are processed on the calling thread: waking the rayon pool for a
/// few chunks costs more than it saves (measured: a 4,810-coordinate DP-SGD step spent more
/// time in the scheduler than in the sampler).
const PARALLEL_MIN_LEN: usize = 8 * CHUNK_LEN;

/// Calls `f(chunk_index, chunk)` for each [`CHUNK_LEN`] chunk, in parallel for long vectors.
/// The chunking, hence the output, is the same either way.
fn for_each_chunk<T: Send>(data: &mut [T], f: impl Fn(usize, &mut [T]) + Sync) {
    if data.len() < PARALLEL_MIN_LEN {
        data.chunks_mut(CHUNK_LEN)
            .enumerate()
            .for_each(|(i, c)| f(i, c));
    } else {
        data.par_chunks_mut(CHUNK_LEN)
            .enumerate()
            .for_each(|(i, c)| f(i, c));
    }
}

fn draw_key<R: CryptoRng + ?Sized>(rng: &mut R) -> [u8; 32] {
    let mut key = [0u8; 32];
    rng.fill_bytes(&mut key);
    key
}

fn chunk_stream(key: [u8; 32], chunk: usize) -> ChaCha20Rng {
    let mut stream = ChaCha20Rng::from_seed(key);
    stream.set_stream(chunk as u64);
    stream
}

/// A draw as grid steps. `|n| >= 2^63` would need a draw `2^32` standard deviations out
/// (probability below `exp(-2^63)`); it is refused rather than wrapped.
#[inline]
fn to_units(n: i128) -> i64 {
    i64::try_from(n).expect("a discrete Gaussian draw beyond 2^63 grid steps")
}

/// The exact lattice sampler for a scale: CKS 2020 on coarse grids, the binned sampler (the
/// same distribution, about twenty times faster) from [`binned::MIN_SCALE`] grid units up.
#[derive(Debug, Clone)]
enum Lattice {
    Cks(cks::Cks),
    Binned(std::sync::Arc<binned::Binned>),
}

impl Lattice {
    fn new(scale: u64) -> Self {
        if scale >= binned::MIN_SCALE {
            Self::Binned(std::sync::Arc::new(binned::Binned::new(scale)))
        } else {
            Self::Cks(cks::Cks::new(scale))
        }
    }

    fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> i128 {
        match self {
            Self::Cks(s) => s.sample(rng),
            Self::Binned(s) => s.sample(rng),
        }
    }
}

const MIN_K: i32 = -1074;
const MAX_K: i32 = 1023;

/// Float types the noise is defined for; inputs convert to `f64` exactly.
trait GridFloat: Copy + Send + Sync {
    fn to_f64(self) -> f64;
    fn from_f64(x: f64) -> Self;
}

impl GridFloat for f64 {
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(x: f64) -> Self {
        x
    }
}

impl GridFloat for f32 {
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    #[allow(clippy::cast_possible_truncation)] // post-processing of the exact lattice output
    fn from_f64(x: f64) -> Self {
        x as f32
    }
}

/// `x * 2^e` computed by exact power-of-two steps (exact unless the result over- or underflows).
fn mul_pow2(mut x: f64, mut e: i32) -> f64 {
    while e > 1000 {
        x *= pow2(1000);
        e -= 1000;
    }
    while e < -1000 {
        x *= pow2(-1000);
        e += 1000;
    }
    x * pow2(e)
}

/// `2^e` for `e` in `[-1022, 1023]`.
fn pow2(e: i32) -> f64 {
    debug_assert!((-1022..=1023).contains(&e));
    #[allow(clippy::cast_sign_loss)]
    f64::from_bits(((e + 1023) as u64) << 52)
}

/// Rounding to and from the `2^k` grid.
#[derive(Clone, Copy)]
struct Grid {
    k: i32,
    /// Values with `|x| >= on_grid` are already multiples of `2^k` (their ulp is at least `2^k`).
    on_grid: f64,
    /// `(2^-k, 2^k)` when both are normal floats, so that scaling is one exact multiplication.
    factors: Option<(f64, f64)>,
}

impl Grid {
    fn new(k: i32) -> Self {
        let on_grid = if k + 53 > MAX_K {
            f64::INFINITY
        } else {
            mul_pow2(1.0, k + 53)
        };
        let factors = (-1022..=1022).contains(&k).then(|| (pow2(-k), pow2(k)));
        Self {
            k,
            on_grid,
            factors,
        }
    }

    #[inline]
    fn scale_down(self, x: f64) -> f64 {
        match self.factors {
            Some((down, _)) => x * down,
            None => mul_pow2(x, -self.k),
        }
    }

    #[inline]
    fn scale_up(self, z: f64) -> f64 {
        match self.factors {
            Some((_, up)) => z * up,
            None => mul_pow2(z, self.k),
        }
    }

    /// `round(x / 2^k) * 2^k + noise * 2^k` as a float: the exact lattice point, rounded once.
    #[inline]
    fn add(self, x: f64, noise: i64) -> f64 {
        if x.abs() < self.on_grid {
            let y = self.scale_down(x); // exact: |y| < 2^53
            // Nearest integer, ties up as OpenDP: truncate, then fix with the exact fraction.
            #[allow(clippy::cast_possible_truncation)] // |y| < 2^53
            let t = y as i64;
            #[allow(clippy::cast_precision_loss)] // |t| < 2^53: exact
            let frac = y - t as f64;
            let r = t + i64::from(frac >= 0.5) - i64::from(frac < -0.5);
            // Round to nearest: post-processing of the exact lattice point z.
            #[allow(clippy::cast_precision_loss)]
            let z = match r.checked_add(noise) {
                Some(z) => z as f64,
                None => (i128::from(r) + i128::from(noise)) as f64,
            };
            self.scale_up(z)
        } else {
            #[allow(clippy::cast_precision_loss)] // exact while |noise| < 2^53
            let n = noise as f64;
            x + self.scale_up(n)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seeded(seed: u64) -> ChaCha20Rng {
        ChaCha20Rng::seed_from_u64(seed)
    }

    proptest! {
        #[test]
        fn rounding_is_to_nearest_grid_point(x in -1.0e6f64..1.0e6, k in -40i32..4) {
            let grid = Grid::new(k);
            let out = grid.add(x, 0);
            let step = mul_pow2(1.0, k);
            prop_assert!((out - x).abs() <= step / 2.0);
            prop_assert_eq!((out / step).fract(), 0.0);
        }
    }

    #[test]
    fn ties_round_up_like_opendp() {
        let grid = Grid::new(-1); // steps of 0.5: x / 2^k = 2x
        for (x, want) in [
            (1.25, 1.5),   // 2.5 -> 3
            (-1.25, -1.0), // -2.5 -> -2
            (-0.25, 0.0),  // -0.5 -> 0
            (0.25, 0.5),   // 0.5 -> 1
            (-0.3, -0.5),  // -0.6 -> -1
            (0.2, 0.0),
        ] {
            assert_eq!(grid.add(x, 0), want, "{x}");
        }
        assert_eq!(grid.add(1.25, -3), 0.0);
    }

    #[test]
    fn large_inputs_take_the_float_path_and_agree_with_the_lattice() {
        let grid = Grid::new(-10);
        for x in [2f64.powi(43), 3.0 * 2f64.powi(45), -(2f64.powi(50)), 1e300] {
            assert!(x.abs() >= grid.on_grid);
            for n in [-5i64, 0, 7, 1 << 40] {
                let got = grid.add(x, n);
                let want = if x.abs() < 1e30 {
                    #[allow(clippy::cast_possible_truncation)]
                    let r = mul_pow2(x, 10) as i64;
                    #[allow(clippy::cast_precision_loss)]
                    mul_pow2((r + n) as f64, -10)
                } else {
                    x // |n| 2^-10 is far below half an ulp of 1e300
                };
                assert_eq!(got, want, "x={x} n={n}");
            }
        }
    }

    #[test]
    fn default_grid_has_2_pow_29_units_per_std_dev() {
        for sd in [1e-3, 0.37, 1.0, 3.0, 1234.5] {
            let g = SecureGaussian::new(sd, None).unwrap();
            assert!(
                (1 << 29..=1 << 30).contains(&g.grid_units()),
                "{sd}: {}",
                g.grid_units()
            );
            assert!(g.effective_std_dev() >= sd);
            assert!(g.effective_std_dev() <= sd * (1.0 + 1e-8));
        }
    }

    #[test]
    fn rejects_bad_parameters_and_non_finite_inputs() {
        assert!(SecureGaussian::new(0.0, None).is_err());
        assert!(SecureGaussian::new(f64::NAN, None).is_err());
        assert!(matches!(
            SecureGaussian::new(1.0, Some(-40)),
            Err(PrivacyError::GridTooFine { .. })
        ));
        let g = SecureGaussian::new(1.0, None).unwrap();
        let mut v = vec![0.0f32, 1.0, f32::INFINITY, f32::NAN];
        let before = v.clone();
        let err = g.add_noise_f32(&mut v, &mut seeded(1)).unwrap_err();
        assert_eq!(
            err,
            PrivacyError::NonFiniteInput {
                index: 2,
                value: f64::INFINITY
            }
        );
        assert_eq!(v[..2], before[..2]);
    }

    #[test]
    fn sensitivity_charges_sqrt_n_grid_steps() {
        let g = SecureGaussian::new(1.0, Some(-10)).unwrap();
        let s = g.sensitivity_with_rounding(1.0, 10_000);
        assert!(s >= 1.0 + 100.0 / 1024.0);
        assert!(s < 1.0 + 100.0 / 1024.0 + 1e-12);
        let z = g.effective_noise_multiplier(1.0, 10_000);
        assert!(z * s <= g.effective_std_dev());
    }
}
