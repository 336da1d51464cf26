//! Accountant cost: epsilon of 10,000 DP-SGD steps (q = 0.01, sigma = 1.1, delta = 1e-5) over the
//! 156 default orders (exact fractional orders, and dp_accounting's series), against the
//! closed-form full-batch case (q = 1) as the same-run baseline, and one inverse-planner call.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use fedledger_privacy::{AccountantKind, epsilon_for, noise_multiplier_for};

fn accountant(c: &mut Criterion) {
    let mut group = c.benchmark_group("accountant");
    group.sample_size(20);
    group.bench_function("epsilon_subsampled_1e4_steps", |b| {
        b.iter(|| {
            epsilon_for(
                AccountantKind::Rdp,
                black_box(1.1),
                black_box(0.01),
                10_000,
                1e-5,
            )
            .expect("epsilon")
        });
    });
    group.bench_function("epsilon_subsampled_1e4_steps_dp_accounting_series", |b| {
        b.iter(|| {
            epsilon_for(
                AccountantKind::RdpDpAccounting,
                black_box(1.1),
                black_box(0.01),
                10_000,
                1e-5,
            )
            .expect("epsilon")
        });
    });
    group.bench_function("epsilon_full_batch_1e4_steps", |b| {
        b.iter(|| {
            epsilon_for(
                AccountantKind::Rdp,
                black_box(1.1),
                black_box(1.0),
                10_000,
                1e-5,
            )
            .expect("epsilon")
        });
    });
    group.sample_size(10);
    group.bench_function("plan_noise_multiplier_eps8_1e4_steps", |b| {
        b.iter(|| {
            noise_multiplier_for(black_box(8.0), 0.01, 10_000, 1e-5, AccountantKind::Rdp)
                .expect("plan")
        });
    });
    group.finish();
}

criterion_group!(benches, accountant);
criterion_main!(benches);
