//! Accountant cost: epsilon of 10,000 DP-SGD steps (q = 0.01, sigma = 1.1, delta = 1e-5) over the
//! 156 default orders (exact fractional orders, and dp_accounting's series), against the
//! closed-form full-batch case (q = 1) as the same-run baseline, and one inverse-planner call;
//! then the PLD accountant beside RDP on the same parameters and on rows of
//! `tests/data/dp_epsilon_reference.csv` (`pld_vs_rdp` group), same run.

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

/// `(sigma, q, steps)`: the headline parameters above, then reference-table rows from a small
/// window to the largest subsampled one (sigma 0.8, q 0.1, 10,000 steps: about 3 million buckets).
const PLD_CASES: [(f64, f64, u64); 4] = [
    (1.1, 0.01, 10_000),
    (2.0, 0.1, 100),
    (0.8, 0.01, 1000),
    (0.8, 0.1, 10_000),
];

fn pld_vs_rdp(c: &mut Criterion) {
    let mut group = c.benchmark_group("pld_vs_rdp");
    group.sample_size(10);
    for (sigma, q, steps) in PLD_CASES {
        for kind in [AccountantKind::Rdp, AccountantKind::Pld] {
            let name = format!("{kind}_sigma{sigma}_q{q}_{steps}_steps");
            group.bench_function(name, |b| {
                b.iter(|| {
                    epsilon_for(kind, black_box(sigma), black_box(q), steps, 1e-5).expect("epsilon")
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, accountant, pld_vs_rdp);
criterion_main!(benches);
