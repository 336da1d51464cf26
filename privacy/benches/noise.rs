//! Secure noise throughput: our exact discrete Gaussian against OpenDP's `make_gaussian` and a
//! naive (floating-point-unsafe) `rand_distr::Normal`, in the same run.
//!
//! - `secure/*`: 1M coordinates, sigma 1, default grid (k = -29), rayon over all cores.
//! - `opendp/k-52`: OpenDP's exact sampler on the grid 2^-52 (the finest grid it runs at a usable
//!   speed; its rho is unchanged to 6 digits from the default), on 20,000 coordinates;
//!   `opendp/default-k`: OpenDP's default (subnormal) grid, 2,000 coordinates. Compare per-element
//!   throughput (criterion's elements/s), not time.
//! - `naive/*`: 1M draws of `rand_distr::Normal`, one thread, ChaCha20 and rand's StdRng.

use std::hint::black_box;

use chacha20::ChaCha20Rng;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use fedledger_privacy::SecureGaussian;
use opendp::{
    domains::{AtomDomain, VectorDomain},
    measurements::make_gaussian,
    measures::ZeroConcentratedDivergence,
    metrics::L2Distance,
};
use rand_core::SeedableRng;
use rand_distr::{Distribution, Normal};

const N: usize = 1_000_000;

fn secure(c: &mut Criterion) {
    let mut group = c.benchmark_group("secure");
    group
        .sample_size(20)
        .throughput(Throughput::Elements(N as u64));
    let g = SecureGaussian::new(1.0, None).expect("valid sigma");
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    group.bench_function("f32_1M", |b| {
        b.iter_batched_ref(
            || vec![0.0f32; N],
            |v| g.add_noise_f32(v, &mut rng).expect("finite input"),
            BatchSize::LargeInput,
        );
    });
    group.bench_function("f64_1M", |b| {
        b.iter_batched_ref(
            || vec![0.0f64; N],
            |v| g.add_noise_f64(v, &mut rng).expect("finite input"),
            BatchSize::LargeInput,
        );
    });
    // A small model's gradient (MLP 64-[64]-10): per-call costs show here.
    group.throughput(Throughput::Elements(4810));
    group.bench_function("draw_4810", |b| b.iter(|| g.draw(4810, &mut rng)));
    group.throughput(Throughput::Elements(N as u64));
    let one_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("pool");
    group.bench_function("f32_1M_one_thread", |b| {
        b.iter_batched_ref(
            || vec![0.0f32; N],
            |v| one_thread.install(|| g.add_noise_f32(v, &mut rng).expect("finite input")),
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

fn opendp(c: &mut Criterion) {
    let mut group = c.benchmark_group("opendp");
    group.sample_size(10);
    for (name, k, n) in [("k-52", Some(-52), 20_000usize), ("default-k", None, 2_000)] {
        let domain = VectorDomain::new(AtomDomain::<f64>::new_non_nan()).with_size(n);
        let m = make_gaussian::<_, _, ZeroConcentratedDivergence>(
            domain,
            L2Distance::<f64>::default(),
            1.0,
            k,
        )
        .expect("opendp measurement");
        let x = vec![0.0f64; n];
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(name, |b| {
            b.iter(|| m.invoke(black_box(&x)).expect("opendp noise"))
        });
    }
    group.finish();
}

fn naive(c: &mut Criterion) {
    let mut group = c.benchmark_group("naive");
    group
        .sample_size(20)
        .throughput(Throughput::Elements(N as u64));
    let normal = Normal::new(0.0f64, 1.0).expect("valid normal");
    let mut chacha = ChaCha20Rng::seed_from_u64(2);
    group.bench_function("normal_chacha20_1M", |b| {
        b.iter_batched_ref(
            || vec![0.0f64; N],
            |v| v.iter_mut().for_each(|x| *x += normal.sample(&mut chacha)),
            BatchSize::LargeInput,
        );
    });
    let mut std_rng = rand::rngs::StdRng::seed_from_u64(3);
    group.bench_function("normal_stdrng_1M", |b| {
        b.iter_batched_ref(
            || vec![0.0f64; N],
            |v| v.iter_mut().for_each(|x| *x += normal.sample(&mut std_rng)),
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

criterion_group!(benches, secure, opendp, naive);
criterion_main!(benches);
