//! Flags for copied updates, free-riders and participants who declined.

use std::collections::HashSet;

use super::ValuationError;

/// Prefix of the copy flag: `copy_of:<name>`.
pub const FLAG_COPY_OF_PREFIX: &str = "copy_of:";
/// Flag of a zero/near-zero update or one uncorrelated with everyone else's.
pub const FLAG_FREE_RIDER: &str = "free_rider";
/// Flag of a participant who declined the round.
pub const FLAG_DECLINED: &str = "declined";

/// Upper bound of the uncorrelated threshold, for small models where
/// `uncorrelated_sigmas / sqrt(dim)` would exceed it.
const UNCORRELATED_CAP: f64 = 0.45;

/// Thresholds of [`detect`].
#[derive(Debug, Clone, PartialEq)]
pub struct AbuseConfig {
    /// Two updates are a copy pair when their cosine similarity is at least this.
    ///
    /// Default 0.999, not 0.99. Measured on breast cancer (logistic regression, 31 parameters, no
    /// DP, disjoint shards of 20-120 rows, 5 local epochs of full-batch gradient descent from the
    /// same global model), honest pairs reached a cosine of 0.9885 in a first round (largest over six
    /// shuffles) and 0.94, 0.91, 0.88 in three successive rounds of one shuffle: 0.99 leaves honest
    /// hospitals almost no margin. 0.999 still catches an exact or rescaled copy and a copy plus noise of up to
    /// about 4.5% of its norm.
    pub copy_cosine: f64,
    /// An update whose norm is at most this fraction of the round's median norm is a free-rider.
    pub free_rider_relative_norm: f64,
    /// An update is uncorrelated with everyone's when its largest `|cosine|` with any other
    /// (non-tiny) update is at most `max(uncorrelated_cosine_floor, min(0.45, uncorrelated_sigmas /
    /// sqrt(dim)))`: two independent random directions in `dim` dimensions have a cosine of
    /// standard deviation about `1/sqrt(dim)`. Default 2, i.e. 0.359 for the 31 parameters of
    /// breast cancer. Measured there (no DP): clean hospitals' largest `|cosine|` was at least 0.65
    /// (4 shuffles x 6 rounds, 3 of 8 participants harmful), the 30%-label-flipped hospital's at
    /// least 0.44 (6 first rounds), a random update of honest norm's 0.02 to 0.37 (flagged in 5 of
    /// 6 first rounds).
    ///
    /// The design first compared each update with the mean of the others; measured on the same
    /// rounds that rule flagged honest hospitals from round 4 on (their cosine with a mean
    /// dominated by harmful updates fell to -0.2..0.2), so the largest pairwise cosine is used.
    pub uncorrelated_sigmas: f64,
    /// Lower bound of the uncorrelated threshold for large models.
    pub uncorrelated_cosine_floor: f64,
    /// Apply the "uncorrelated with everyone's" rule at all. The coordinator turns it off for
    /// rounds whose updates carry DP-SGD noise: the noise legitimately decorrelates honest
    /// updates (measured: every honest hospital of the hospitals example was flagged at
    /// epsilon 8), so there the rule only catches zero or near-zero updates.
    pub check_uncorrelated: bool,
}

impl Default for AbuseConfig {
    fn default() -> Self {
        Self {
            copy_cosine: 0.999,
            free_rider_relative_norm: 0.01,
            uncorrelated_sigmas: 2.0,
            uncorrelated_cosine_floor: 0.05,
            check_uncorrelated: true,
        }
    }
}

/// One participant of a round as seen by the abuse detection.
#[derive(Debug, Clone, Copy)]
pub struct Participation<'a> {
    /// The participant's name (unique in the round).
    pub name: &'a str,
    /// Its update, or `None` if it declined the round.
    pub update: Option<&'a [f32]>,
    /// Order of reception (smaller is earlier; ties broken by name). Ignored for decliners.
    pub received: u64,
}

/// Flags of each participant, in input order (see the module docs for the strings).
///
/// Catches: an exact copy; a rescaled copy (cosine ignores scale, for any positive factor); a
/// copy plus noise whose norm is below about `sqrt(1/copy_cosine^2 - 1)` of the copied update's
/// (4.5% at 0.999); an all-zero or tiny update; a random update (its cosines with the others are
/// of order `1/sqrt(dim)`).
///
/// Cannot catch: a copy plus larger noise, or a copy rotated or mixed with other updates (e.g. the
/// mean of two participants'); a copy of a *negated* update (cosine -1: not flagged, but its
/// value is negative); a sybil that trains on its own data or splits one data set over two
/// identities (legitimate-looking, distinct updates: Shapley values then share the data's worth
/// between them); a random update that happens to align with one other update beyond the
/// threshold (1 of 6 measured first rounds with 31 parameters and 7 others), or random noise
/// added to a real update; a lazy participant that trains on a handful of rows (a genuine, weakly
/// valuable update: its Shapley value is small instead). Under strong DP noise honest updates
/// themselves look uncorrelated, so `free_rider` may then fire on honest participants (the flag
/// is informational: only copies are excluded from rewards). Which of a copied pair is the
/// original is decided by reception order only: an early copier flags the original instead.
pub fn detect(
    participants: &[Participation<'_>],
    config: &AbuseConfig,
) -> Result<Vec<Vec<String>>, ValuationError> {
    let mut names = HashSet::new();
    for p in participants {
        if !names.insert(p.name) {
            return Err(ValuationError::DuplicateName(p.name.to_owned()));
        }
    }
    let mut flags = vec![Vec::new(); participants.len()];
    let submitted: Vec<usize> = (0..participants.len())
        .filter(|&i| participants[i].update.is_some())
        .collect();
    let update = |i: usize| participants[i].update.unwrap_or(&[]);
    for (i, p) in participants.iter().enumerate() {
        if p.update.is_none() {
            flags[i].push(FLAG_DECLINED.to_owned());
        }
    }
    let dim = submitted.first().map_or(0, |&i| update(i).len());
    for &i in &submitted {
        let found = update(i).len();
        if found != dim {
            return Err(ValuationError::LengthMismatch {
                what: "update",
                found,
                expected: dim,
            });
        }
        if update(i).iter().any(|x| !x.is_finite()) {
            return Err(ValuationError::NonFiniteInput { what: "update" });
        }
    }
    // Every pair's dot product in one blocked pass over the updates (each summed as `cosine`
    // sums it), so each pair costs one product and add per coordinate, once: the copy scan and
    // the uncorrelated rule below read the same numbers.
    let gram = Gram::new(&submitted.iter().map(|&i| update(i)).collect::<Vec<_>>());
    let norms: Vec<f64> = (0..submitted.len())
        .map(|k| gram.dot(k, k).sqrt())
        .collect();
    let mut sorted = norms.clone();
    sorted.sort_by(f64::total_cmp);
    let median = match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    };
    let tiny: Vec<bool> = norms
        .iter()
        .map(|&n| n == 0.0 || n <= config.free_rider_relative_norm * median)
        .collect();

    // Copies: scan in reception order; each update is compared with the earlier ones.
    let mut by_arrival: Vec<usize> = (0..submitted.len()).collect();
    by_arrival.sort_by(|&a, &b| {
        let (pa, pb) = (&participants[submitted[a]], &participants[submitted[b]]);
        pa.received.cmp(&pb.received).then(pa.name.cmp(pb.name))
    });
    for (pos, &later) in by_arrival.iter().enumerate() {
        if tiny[later] {
            continue;
        }
        let original = by_arrival[..pos]
            .iter()
            .copied()
            .find(|&earlier| !tiny[earlier] && gram.cosine(earlier, later) >= config.copy_cosine);
        if let Some(earlier) = original {
            let name = participants[submitted[earlier]].name;
            flags[submitted[later]].push(format!("{FLAG_COPY_OF_PREFIX}{name}"));
        }
    }

    // Free riders: tiny, or uncorrelated with every other non-tiny update.
    let threshold = config
        .uncorrelated_cosine_floor
        .max((config.uncorrelated_sigmas / (dim.max(1) as f64).sqrt()).min(UNCORRELATED_CAP));
    for (k, &i) in submitted.iter().enumerate() {
        let mut others = (0..submitted.len())
            .filter(|&o| o != k && !tiny[o])
            .peekable();
        let uncorrelated = config.check_uncorrelated
            && !tiny[k]
            && others.peek().is_some()
            && others.all(|o| gram.cosine(k, o).abs() <= threshold);
        if tiny[k] || uncorrelated {
            flags[i].push(FLAG_FREE_RIDER.to_owned());
        }
    }
    Ok(flags)
}

/// Cosine similarity of two updates (`NaN` if either is zero), accumulated in `f64`.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    ab / (aa * bb).sqrt()
}

/// Dot products of every pair of a round's updates, the diagonal being the squared norms.
///
/// Each product is summed from 0.0 in ascending coordinate order, as [`cosine`] sums it, so
/// [`Gram::cosine`] has the bits of [`cosine`]. The pass goes a block of coordinates at a time
/// (the block of every update stays in cache while each pair adds it in) and takes the products
/// eight pairs at a time (eight independent sums instead of one chain of additions); rows go to
/// rayon's threads. Its cost is still quadratic: `n (n + 1) / 2` products of the model's size.
struct Gram {
    n: usize,
    /// The upper triangle row by row: row `i` holds pairs `(i, i)..(i, n - 1)`.
    dots: Vec<f64>,
}

/// Bytes of updates a block of coordinates may take (about a second-level cache).
const GRAM_BLOCK_BYTES: usize = 512 * 1024;

/// Pairs summed together in the inner loop.
const GRAM_LANES: usize = 8;

impl Gram {
    fn new(updates: &[&[f32]]) -> Self {
        let block = GRAM_BLOCK_BYTES / (4 * updates.len().max(1));
        Self::in_blocks(updates, block.clamp(256, 64 * 1024))
    }

    /// [`Gram::new`] with `block` coordinates at a time.
    fn in_blocks(updates: &[&[f32]], block: usize) -> Self {
        use rayon::prelude::*;
        let n = updates.len();
        let dim = updates.first().map_or(0, |u| u.len());
        let mut dots = vec![0.0f64; n * (n + 1) / 2];
        // Row `i` of the triangle, pairs `(i, i)..(i, n - 1)`, for each thread to fill.
        let mut rows = Vec::with_capacity(n);
        let mut rest = dots.as_mut_slice();
        for i in 0..n {
            let (row, tail) = rest.split_at_mut(n - i);
            rows.push(row);
            rest = tail;
        }
        for start in (0..dim).step_by(block) {
            let end = (start + block).min(dim);
            rows.par_iter_mut().enumerate().for_each(|(i, row)| {
                let a = &updates[i][start..end];
                // `row[j - i]` is pair `(i, j)`.
                let mut j = i;
                while j < n {
                    let lanes = GRAM_LANES.min(n - j);
                    let sums = &mut row[j - i..j - i + lanes];
                    let mut acc = [0.0f64; GRAM_LANES];
                    acc[..lanes].copy_from_slice(sums);
                    if lanes == GRAM_LANES {
                        let b: [&[f32]; GRAM_LANES] =
                            std::array::from_fn(|l| &updates[j + l][start..end]);
                        for (k, &x) in a.iter().enumerate() {
                            let x = f64::from(x);
                            for (s, b) in acc.iter_mut().zip(&b) {
                                *s += x * f64::from(b[k]);
                            }
                        }
                    } else {
                        for (s, b) in acc[..lanes].iter_mut().zip(&updates[j..j + lanes]) {
                            for (&x, &y) in a.iter().zip(&b[start..end]) {
                                *s += f64::from(x) * f64::from(y);
                            }
                        }
                    }
                    sums.copy_from_slice(&acc[..lanes]);
                    j += lanes;
                }
            });
        }
        Self { n, dots }
    }

    /// The dot product of updates `i` and `j`.
    fn dot(&self, i: usize, j: usize) -> f64 {
        let (i, j) = (i.min(j), i.max(j));
        // Rows 0..i hold n + (n - 1) + ... + (n - i + 1) pairs.
        self.dots[i * self.n - i * i.saturating_sub(1) / 2 + (j - i)]
    }

    /// The cosine of updates `i` and `j`, bit for bit [`cosine`] of the two.
    fn cosine(&self, i: usize, j: usize) -> f64 {
        self.dot(i, j) / (self.dot(i, i) * self.dot(j, j)).sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p<'a>(name: &'a str, update: Option<&'a [f32]>, received: u64) -> Participation<'a> {
        Participation {
            name,
            update,
            received,
        }
    }

    #[test]
    fn flags_copies_zero_random_and_declined() {
        let a = [1.0f32, 0.5, -0.2, 0.3];
        let b = [0.9f32, 0.7, -0.1, 0.2];
        let copy_of_b = [1.8f32, 1.4, -0.2, 0.4]; // rescaled copy
        let zero = [0.0f32; 4];
        let orthogonal = [0.1f32, -0.2, -0.9, 0.3];
        let input = [
            p("A", Some(&a), 1),
            p("D", Some(&copy_of_b), 5),
            p("B", Some(&b), 2),
            p("G", Some(&zero), 3),
            p("H", Some(&orthogonal), 4),
            p("X", None, 0),
        ];
        let flags = detect(&input, &AbuseConfig::default()).unwrap();
        assert_eq!(flags[0], Vec::<String>::new());
        assert_eq!(flags[1], vec!["copy_of:B".to_owned()]);
        assert_eq!(flags[2], Vec::<String>::new());
        assert_eq!(flags[3], vec!["free_rider".to_owned()]);
        assert_eq!(flags[4], vec!["free_rider".to_owned()]);
        assert_eq!(flags[5], vec!["declined".to_owned()]);
    }

    #[test]
    fn copy_flag_goes_to_the_later_received() {
        let u = [1.0f32, 2.0, 3.0];
        let v = [3.0f32, 1.0, 2.0];
        let input = [
            p("first", Some(&u), 9),
            p("second", Some(&u), 3),
            p("other", Some(&v), 1),
        ];
        let flags = detect(&input, &AbuseConfig::default()).unwrap();
        assert_eq!(flags[0], vec!["copy_of:second".to_owned()]);
        assert!(flags[1].is_empty());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

        /// The blocked, eight-pairs-at-a-time products give `cosine`'s bits for every pair.
        #[test]
        fn gram_cosines_are_the_bits_of_cosine(
            n in 1usize..20,
            dim in 1usize..700,
            block in 1usize..300,
            seed in proptest::prelude::any::<u64>(),
        ) {
            let mut state = seed;
            let mut next = move || {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 3.0
            };
            let updates: Vec<Vec<f32>> =
                (0..n).map(|_| (0..dim).map(|_| next()).collect()).collect();
            let refs: Vec<&[f32]> = updates.iter().map(Vec::as_slice).collect();
            let gram = Gram::in_blocks(&refs, block);
            for i in 0..n {
                for j in 0..n {
                    let (got, want) = (gram.cosine(i, j), cosine(refs[i], refs[j]));
                    proptest::prop_assert_eq!(got.to_bits(), want.to_bits(), "pair {} {}", i, j);
                }
            }
        }
    }

    #[test]
    fn refuses_duplicates_and_ragged_updates() {
        let u = [1.0f32, 2.0];
        let short = [1.0f32];
        assert!(matches!(
            detect(
                &[p("a", Some(&u), 0), p("a", None, 1)],
                &AbuseConfig::default()
            ),
            Err(ValuationError::DuplicateName(_))
        ));
        assert!(matches!(
            detect(
                &[p("a", Some(&u), 0), p("b", Some(&short), 1)],
                &AbuseConfig::default()
            ),
            Err(ValuationError::LengthMismatch { .. })
        ));
    }
}
