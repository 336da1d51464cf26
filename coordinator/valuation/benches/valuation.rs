//! Valuation speed and accuracy.
//!
//! Speed (criterion): one utility evaluation (the baseline: scoring one model on 143 rows), exact
//! values for eight hospitals of a logistic-regression round on breast cancer (goal < 50 ms), and
//! `gtg` / `kernelshap` with their defaults for 50 hospitals (goal < 2 s).
//!
//! Scale: one coalition's combination and the abuse flags of a round of 100 updates of 1M
//! parameters (`-- scale`).
//!
//! Accuracy (printed before the timings): `gtg`, `kernelshap` and `loo` against exact values on
//! the eight-hospital breast-cancer scenario, three successive rounds, 30 estimator seeds, at 1/2
//! and 1/4 of exact's evaluations: mean Spearman and mean relative L2 error; and, for 50
//! hospitals, the default estimators against a long antithetic permutation run.

#[path = "../tests/valuation_support.rs"]
mod support;

use std::hint::black_box;
use std::time::Duration;

use criterion::Criterion;
use fedledger_valuation::{
    Coalition, Estimator, Exact, GtgShapley, KernelShap, LeaveOneOut, Utility, cosine, relative_l2,
    spearman,
};
use support::{Round, breast_cancer, eight_hospitals, many_hospitals, synthetic};

/// Three successive rounds of the eight-hospital scenario: each round's hospitals train from the
/// previous round's aggregate.
fn rounds() -> Vec<Round> {
    let data = breast_cancer().unwrap_or_else(|| synthetic(0, 569));
    let mut out: Vec<Round> = Vec::new();
    let mut base = None;
    for _ in 0..3 {
        let round = eight_hospitals(&data, 0, base.clone());
        let game = round.game();
        base = Some(game.parameters(Coalition::full(8).expect("8 players")));
        drop(game);
        out.push(round);
    }
    out
}

fn accuracy_study() {
    let rounds = rounds();
    let seeds = 30u64;
    println!(
        "accuracy study: 8 hospitals on breast cancer, {} rounds, {seeds} seeds",
        rounds.len()
    );
    for (r, round) in rounds.iter().enumerate() {
        let honest = ["A", "B", "C", "E"].map(|n| round.index(n));
        let mut max_cos: f64 = -1.0;
        for &i in &honest {
            for &j in &honest {
                if i < j {
                    max_cos = max_cos.max(cosine(&round.updates[i], &round.updates[j]));
                }
            }
        }
        let game = round.game();
        let exact = Exact::default().estimate(&game, 0).expect("exact");
        let total = game.utility(Coalition::full(8).expect("8")) - game.utility(Coalition::EMPTY);
        println!(
            "  round {}: U(all)-U(none) {total:.4}, exact {:?}, largest honest cosine {max_cos:.4}",
            r + 1,
            exact
                .values
                .iter()
                .map(|v| format!("{v:.4}"))
                .collect::<Vec<_>>()
        );
    }
    for divisor in [2u64, 4] {
        type Make = fn(u64) -> Box<dyn Estimator>;
        let makers: [(&str, Make); 4] = [
            ("gtg", |b| {
                Box::new(GtgShapley {
                    max_evaluations: Some(b),
                    ..GtgShapley::default()
                })
            }),
            ("gtg (no antithetic)", |b| {
                Box::new(GtgShapley {
                    max_evaluations: Some(b),
                    antithetic: false,
                    ..GtgShapley::default()
                })
            }),
            ("kernelshap", |b| {
                Box::new(KernelShap {
                    max_evaluations: Some(b),
                })
            }),
            ("loo", |b| {
                Box::new(LeaveOneOut {
                    max_evaluations: Some(b),
                })
            }),
        ];
        for (label, make) in makers {
            let (mut rho, mut l2, mut evaluations, mut runs) = (0.0, 0.0, 0u64, 0u64);
            let mut budget_shown = 0;
            for round in &rounds {
                let game = round.game();
                let exact = Exact::default().estimate(&game, 0).expect("exact");
                let budget = exact.evaluations / divisor;
                budget_shown = budget;
                let estimator = make(budget);
                // Per round: mean over seeds; then averaged over rounds.
                for seed in 0..seeds {
                    let v = estimator.estimate(&game, seed).expect("estimate");
                    rho += spearman(&v.values, &exact.values);
                    l2 += relative_l2(&v.values, &exact.values);
                    evaluations += v.evaluations;
                    runs += 1;
                }
            }
            let n = runs as f64;
            println!(
                "  1/{divisor} of exact (budget {budget_shown}): {label:<20} mean Spearman {:.4}  \
                 mean relative L2 {:.4}  mean evaluations {:.1}",
                rho / n,
                l2 / n,
                evaluations as f64 / n
            );
        }
    }
}

/// 50 hospitals: the default `gtg` and `kernelshap` against a long antithetic permutation run
/// (no truncation, 40 sampling rounds = 4000 permutations) as reference.
fn fifty_study() {
    let round = many_hospitals(50, 1);
    let game = round.game();
    let reference = GtgShapley {
        truncation_tolerance: 0.0,
        convergence_tolerance: 0.0,
        max_rounds: 40,
        ..GtgShapley::default()
    }
    .estimate(&game, 1_000)
    .expect("reference");
    println!(
        "50 hospitals: reference with {} evaluations",
        reference.evaluations
    );
    for (label, estimator) in [
        (
            "gtg (defaults)",
            Box::new(GtgShapley::default()) as Box<dyn Estimator>,
        ),
        ("kernelshap (defaults)", Box::new(KernelShap::default())),
        (
            "kernelshap (budget 8192)",
            Box::new(KernelShap {
                max_evaluations: Some(8192),
            }),
        ),
        ("loo", Box::new(LeaveOneOut::default())),
    ] {
        let (mut rho, mut l2, mut evaluations) = (0.0, 0.0, 0u64);
        let seeds = 5u64;
        for seed in 0..seeds {
            let v = estimator.estimate(&game, seed).expect("estimate");
            rho += spearman(&v.values, &reference.values);
            l2 += relative_l2(&v.values, &reference.values);
            evaluations += v.evaluations;
        }
        let n = seeds as f64;
        println!(
            "  {label:<26} vs reference over {seeds} seeds: mean Spearman {:.4}  mean relative L2 \
             {:.4}  mean evaluations {:.0}",
            rho / n,
            l2 / n,
            evaluations as f64 / n
        );
    }
}

fn speed(c: &mut Criterion) {
    let round = &rounds()[0];
    let game = round.game();
    let full = Coalition::full(8).expect("8 players");
    c.bench_function("utility/one evaluation, 31 params, 143 rows", |b| {
        b.iter(|| black_box(game.utility(black_box(full))))
    });
    c.bench_function("exact/8 hospitals (G null: 128 coalitions)", |b| {
        b.iter(|| black_box(Exact::default().estimate(&game, 0).expect("exact")))
    });
    // The same round with G replaced by a small honest update: all 256 coalitions.
    let mut no_null = round.clone();
    let g = no_null.index("G");
    no_null.updates[g] = no_null.updates[no_null.index("C")]
        .iter()
        .map(|x| x * 0.5)
        .collect();
    let game_no_null = no_null.game();
    c.bench_function("exact/8 hospitals (no null: 256 coalitions)", |b| {
        b.iter(|| black_box(Exact::default().estimate(&game_no_null, 0).expect("exact")))
    });

    let fifty = many_hospitals(50, 1);
    let game50 = fifty.game();
    for (name, estimator) in [
        (
            "gtg/50 hospitals (defaults)",
            Box::new(GtgShapley::default()) as Box<dyn Estimator>,
        ),
        (
            "kernelshap/50 hospitals (defaults)",
            Box::new(KernelShap::default()),
        ),
    ] {
        let v = estimator.estimate(&game50, 0).expect("estimate");
        println!("{name}: {} evaluations", v.evaluations);
        let mut group = c.benchmark_group("fifty");
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(10));
        group.bench_function(name, |b| {
            b.iter(|| black_box(estimator.estimate(&game50, 0)))
        });
        group.finish();
    }
}

/// A hundred updates of a million parameters (400 MB, as a 100-hospital round of the
/// `bench_sites` example holds them): one coalition's combination and the abuse flags' pairwise
/// cosines, the two parts of a close that grow with hospitals x model size.
fn scale(c: &mut Criterion) {
    const N: usize = 100;
    const DIM: usize = 1 << 20;
    let wave = |k: usize| -> Vec<f32> {
        let mut z = (k as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (0..DIM)
            .map(|_| {
                z ^= z << 13;
                z ^= z >> 7;
                z ^= z << 17;
                ((z >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.002
            })
            .collect()
    };
    let base = wave(N);
    let updates: Vec<Vec<f32>> = (0..N).map(wave).collect();
    let refs: Vec<&[f32]> = updates.iter().map(Vec::as_slice).collect();
    let game =
        fedledger_valuation::LinearCombinationGame::new(&base, &refs, &[50; N], |p: &[f32]| {
            f64::from(p[0])
        })
        .expect("game");
    // Every other hospital: a coalition of fifty.
    let half = (0..N).step_by(2).fold(Coalition::EMPTY, |c, i| c.with(i));
    let mut group = c.benchmark_group("scale");
    group.sample_size(10);
    group.bench_function("combine/50 of 100 updates x 1M", |b| {
        b.iter(|| black_box(game.utility(black_box(half))))
    });
    let names: Vec<String> = (0..N).map(|i| format!("h{i}")).collect();
    let participations: Vec<fedledger_valuation::Participation<'_>> = names
        .iter()
        .zip(&refs)
        .enumerate()
        .map(|(i, (name, u))| fedledger_valuation::Participation {
            name,
            update: Some(u),
            received: i as u64,
        })
        .collect();
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(30));
    group.bench_function("abuse/detect 100 updates x 1M", |b| {
        b.iter(|| {
            black_box(fedledger_valuation::detect(
                black_box(&participations),
                &fedledger_valuation::AbuseConfig::default(),
            ))
        })
    });
    group.finish();
}

fn main() {
    // The studies print figures, not timings: skipped when a filter names timings only.
    let filtered = std::env::args().skip(1).any(|a| !a.starts_with('-'));
    if !filtered {
        accuracy_study();
        fifty_study();
    }
    let mut c = Criterion::default().configure_from_args();
    speed(&mut c);
    scale(&mut c);
    c.final_summary();
}
