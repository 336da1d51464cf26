//! The exact discrete Gaussian against its exact probabilities and against OpenDP's
//! `make_gaussian` at the same sigma and grid (OpenDP draws from an unseeded generator, so the
//! two-sample bounds are set at about six standard errors: a false failure has probability below
//! 1e-8 per run).

use chacha20::ChaCha20Rng;
use fedledger_privacy::SecureGaussian;
use fedledger_privacy::noise::CHUNK_LEN;
use opendp::{
    domains::{AtomDomain, VectorDomain},
    measurements::make_gaussian,
    measures::ZeroConcentratedDivergence,
    metrics::L2Distance,
};
use rand_core::SeedableRng;

fn ours(sigma: f64, k: Option<i32>, n: usize, seed: u64) -> Vec<f64> {
    let mut v = vec![0.0f64; n];
    let g = SecureGaussian::new(sigma, k).unwrap();
    g.add_noise_f64(&mut v, &mut ChaCha20Rng::seed_from_u64(seed))
        .unwrap();
    v
}

fn opendp(sigma: f64, k: i32, n: usize) -> Vec<f64> {
    let domain = VectorDomain::new(AtomDomain::<f64>::new_non_nan()).with_size(n);
    let m = make_gaussian::<_, _, ZeroConcentratedDivergence>(
        domain,
        L2Distance::<f64>::default(),
        sigma,
        Some(k),
    )
    .unwrap();
    m.invoke(&vec![0.0; n]).unwrap()
}

/// Upper `1e-9` quantile of chi-square with `df` degrees of freedom (Wilson-Hilferty, z = 6).
fn chi2_bound(df: usize) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let d = df as f64;
    let c = 2.0 / (9.0 * d);
    d * (1.0 - c + 6.0 * c.sqrt()).powi(3)
}

/// Counts of integer samples in bins `-r..=r` plus one pooled tail bin.
#[allow(clippy::cast_possible_truncation)]
fn histogram(samples: &[f64], r: i64) -> Vec<f64> {
    let mut h = vec![0.0; usize::try_from(2 * r + 2).unwrap()];
    for &x in samples {
        assert_eq!(x.fract(), 0.0, "sample {x} is not on the integer grid");
        let x = x as i64;
        let bin = if x.abs() <= r {
            usize::try_from(x + r).unwrap()
        } else {
            h.len() - 1
        };
        h[bin] += 1.0;
    }
    h
}

#[test]
fn matches_exact_discrete_gaussian_probabilities() {
    // sigma = S grid units with k = 0: samples are N_Z(0, S^2) exactly.
    for (s, seed) in [(1.0f64, 1u64), (3.0, 2)] {
        let n = 60_000;
        let samples = ours(s, Some(0), n, seed);
        #[allow(clippy::cast_possible_truncation)]
        let r = (3.0 * s) as i64;
        let h = histogram(&samples, r);
        let weight = |x: i64| {
            #[allow(clippy::cast_precision_loss)]
            let x = x as f64;
            (-x * x / (2.0 * s * s)).exp()
        };
        let total: f64 = (-200..=200).map(weight).sum();
        let mut expected: Vec<f64> = (-r..=r).map(|x| weight(x) / total).collect();
        expected.push(1.0 - expected.iter().sum::<f64>());
        #[allow(clippy::cast_precision_loss)]
        let nf = n as f64;
        let chi2: f64 = h
            .iter()
            .zip(&expected)
            .map(|(o, p)| (o - nf * p).powi(2) / (nf * p))
            .sum();
        assert!(chi2 < chi2_bound(h.len() - 1), "S={s}: chi2 {chi2}");
        // Variance of N_Z(0, S^2) is S^2 up to exp(-2 pi^2 S^2) for S >= 1 (within 1e-8).
        let var = samples.iter().map(|x| x * x).sum::<f64>() / nf;
        let exact: f64 = (-200..=200)
            .map(|x: i64| {
                #[allow(clippy::cast_precision_loss)]
                let xf = x as f64;
                xf * xf * weight(x) / total
            })
            .sum();
        assert!(
            (var - exact).abs() < 6.0 * exact * (2.0 / nf).sqrt(),
            "S={s}: {var} vs {exact}"
        );
    }
}

#[test]
fn two_sample_chi_square_against_opendp_on_a_coarse_grid() {
    // sigma = 1.5 on the grid 2^-1: 3 grid units, a genuinely discrete distribution.
    let n = 20_000;
    let a: Vec<f64> = ours(1.5, Some(-1), n, 5).iter().map(|x| x * 2.0).collect();
    let b: Vec<f64> = opendp(1.5, -1, n).iter().map(|x| x * 2.0).collect();
    let (ha, hb) = (histogram(&a, 8), histogram(&b, 8));
    let chi2: f64 = ha
        .iter()
        .zip(&hb)
        .filter(|(x, y)| *x + *y > 0.0)
        .map(|(x, y)| (x - y).powi(2) / (x + y))
        .sum();
    assert!(chi2 < chi2_bound(ha.len() - 1), "chi2 {chi2}");
}

#[test]
fn moments_and_ks_against_opendp_at_the_default_grid() {
    let sigma = 1.0;
    let g = SecureGaussian::new(sigma, None).unwrap();
    let k = g.grid_exponent();
    assert_eq!(k, -29);
    let n = 20_000;
    let mut a = ours(sigma, None, n, 8);
    let mut b = opendp(sigma, k, n);
    #[allow(clippy::cast_precision_loss)]
    let nf = n as f64;
    for s in [&a, &b] {
        let mean = s.iter().sum::<f64>() / nf;
        let var = s.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / nf;
        assert!(mean.abs() < 6.0 / nf.sqrt(), "mean {mean}");
        assert!((var - 1.0).abs() < 6.0 * (2.0 / nf).sqrt(), "var {var}");
    }
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    // Two-sample Kolmogorov-Smirnov statistic.
    let (mut i, mut j, mut d) = (0usize, 0usize, 0.0f64);
    while i < n && j < n {
        if a[i] <= b[j] {
            i += 1;
        } else {
            j += 1;
        }
        #[allow(clippy::cast_precision_loss)]
        let gap = ((i as f64) - (j as f64)).abs() / nf;
        d = d.max(gap);
    }
    // alpha = 1e-9: sqrt(-ln(alpha / 2) / 2) * sqrt(2 / n) = 0.0327.
    assert!(d < 0.035, "KS statistic {d}");
}

#[test]
fn outputs_lie_on_the_grid_and_round_to_nearest() {
    let g = SecureGaussian::new(0.5, Some(-10)).unwrap();
    let input: Vec<f64> = (0..5000)
        .map(|i| f64::from(i) * 0.001_234_5 - 3.0)
        .collect();
    let mut v = input.clone();
    g.add_noise_f64(&mut v, &mut ChaCha20Rng::seed_from_u64(4))
        .unwrap();
    for (x, y) in input.iter().zip(&v) {
        assert_eq!((y * 1024.0).fract(), 0.0, "{y} is not a multiple of 2^-10");
        assert!((y - x).abs() < 12.0 * 0.5, "{x} -> {y}");
    }
}

#[test]
fn deterministic_given_the_seed_and_f32_is_f64_rounded() {
    let g = SecureGaussian::new(0.7, None).unwrap();
    let n = 3 * CHUNK_LEN + 5;
    let input: Vec<f32> = (0..n).map(|i| (i as f32).sin()).collect();
    let run = |seed| {
        let mut v = input.clone();
        g.add_noise_f32(&mut v, &mut ChaCha20Rng::seed_from_u64(seed))
            .unwrap();
        v
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
    let mut wide: Vec<f64> = input.iter().map(|&x| f64::from(x)).collect();
    g.add_noise_f64(&mut wide, &mut ChaCha20Rng::seed_from_u64(1))
        .unwrap();
    #[allow(clippy::cast_possible_truncation)]
    let narrowed: Vec<f32> = wide.iter().map(|&x| x as f32).collect();
    assert_eq!(run(1), narrowed);
}

#[test]
fn independent_of_the_number_of_threads() {
    let g = SecureGaussian::new(2.0, None).unwrap();
    let n = 9 * CHUNK_LEN + 17; // long enough for the parallel path
    let run = |threads| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let mut v = vec![1.0f32; n];
        pool.install(|| {
            g.add_noise_f32(&mut v, &mut ChaCha20Rng::seed_from_u64(77))
                .unwrap()
        });
        v
    };
    let one = run(1);
    assert_eq!(one, run(3));
    assert_eq!(one, run(8));
}

#[test]
fn drawing_ahead_then_applying_equals_adding_directly() {
    let g = SecureGaussian::new(0.9, None).unwrap();
    let n = 2 * CHUNK_LEN + 3;
    let input: Vec<f32> = (0..n).map(|i| (i as f32 * 0.01).cos()).collect();
    let mut direct = input.clone();
    g.add_noise_f32(&mut direct, &mut ChaCha20Rng::seed_from_u64(5))
        .unwrap();
    let noise = g.draw(n, &mut ChaCha20Rng::seed_from_u64(5));
    assert_eq!(noise.len(), n);
    let mut later = input.clone();
    g.apply_f32(&mut later, &noise).unwrap();
    assert_eq!(direct, later);

    // Noise of another length or from another sampler is refused and changes nothing.
    let mut short = input[..n - 1].to_vec();
    let before = short.clone();
    let err = g.apply_f32(&mut short, &noise).unwrap_err();
    assert!(err.to_string().contains("another length"), "{err}");
    assert_eq!(short, before);
    let other = SecureGaussian::new(3.0, None).unwrap();
    let mut v = input.clone();
    let err = other.apply_f32(&mut v, &noise).unwrap_err();
    assert!(err.to_string().contains("another grid or scale"), "{err}");
    assert_eq!(v, input);
}

#[test]
fn coarse_and_fine_scales_both_have_the_requested_variance() {
    // 1000 grid units per sd uses the CKS sampler, 5000 the binned one (switch at 2048).
    for (units, seed) in [(1000.0f64, 21u64), (5000.0, 22)] {
        let n = 40_000;
        let samples = ours(units, Some(0), n, seed);
        #[allow(clippy::cast_precision_loss)]
        let nf = n as f64;
        let var = samples.iter().map(|x| x * x).sum::<f64>() / nf;
        let want = units * units;
        assert!(
            (var - want).abs() < 6.0 * want * (2.0 / nf).sqrt(),
            "{units} units: variance {var} vs {want}"
        );
    }
}
