//! Plain-Rust evaluation as the coordinator's Shapley valuation uses it: many evaluations of a
//! small model on the validation set. Reference point: a full-precision matrix pass over the same
//! rows and parameters (the arithmetic evaluation cannot avoid).
//!
//! Run: `cargo bench -p fedledger-model --bench evaluate`.

use std::hint::black_box;
use std::time::Duration;

use chacha20::ChaCha20Rng;
use criterion::{Criterion, criterion_group, criterion_main};
use fedledger_model::{Dataset, ModelSpec, evaluate};
use rand_core::{Rng, SeedableRng};

fn bench(c: &mut Criterion) {
    let (n, d) = (143, 30);
    let spec = ModelSpec::logreg(d, 2);
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let mut uniform = move || (rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
    let data = Dataset {
        feature_names: (0..d).map(|j| format!("f{j}")).collect(),
        label_column: "y".into(),
        x: (0..n * d).map(|_| uniform()).collect(),
        y: (0..n).map(|i| (i % 2) as u32).collect(),
        classes: 2,
    };
    let models: Vec<Vec<f32>> = (0..256)
        .map(|_| (0..spec.num_params()).map(|_| uniform()).collect())
        .collect();
    let mut group = c.benchmark_group("shapley_like");
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("evaluate_256x_logreg31_143rows", |b| {
        b.iter(|| {
            for p in &models {
                black_box(evaluate(&spec, p, black_box(&data)).unwrap());
            }
        })
    });
    group.bench_function("baseline_256x_dot_products_143rows", |b| {
        b.iter(|| {
            let mut acc = 0.0f64;
            for p in &models {
                for row in black_box(&data).x.chunks_exact(d) {
                    let z: f64 = row
                        .iter()
                        .zip(p)
                        .map(|(x, w)| f64::from(*x) * f64::from(*w))
                        .sum();
                    acc += z;
                }
            }
            black_box(acc)
        })
    });
    // The valuation's other shapes: the digits MLP (64-[64]-10, ~360 validation rows) and two
    // wide ones (30-[20000]-1, 640k parameters; 30-[500000]-1, 16.5M), whose every row read all
    // the weights and whose hidden sums left the cache when evaluated one row at a time.
    for (name, spec, rows, evals) in [
        (
            "evaluate_64x_mlp64_64_10_360rows",
            ModelSpec::mlp(64, vec![64], 10),
            360,
            64,
        ),
        (
            "evaluate_4x_mlp30_20000_1_143rows",
            ModelSpec::mlp(30, vec![20_000], 2),
            143,
            4,
        ),
        (
            "evaluate_1x_mlp30_500000_1_32rows",
            ModelSpec::mlp(30, vec![500_000], 2),
            32,
            1,
        ),
    ] {
        let data = Dataset {
            feature_names: (0..spec.features).map(|j| format!("f{j}")).collect(),
            label_column: "y".into(),
            x: (0..rows * spec.features).map(|_| uniform()).collect(),
            y: (0..rows).map(|i| (i % spec.classes) as u32).collect(),
            classes: spec.classes,
        };
        let models: Vec<Vec<f32>> = (0..evals)
            .map(|_| (0..spec.num_params()).map(|_| uniform() * 0.1).collect())
            .collect();
        group.bench_function(name, |b| {
            b.iter(|| {
                for p in &models {
                    black_box(evaluate(&spec, p, black_box(&data)).unwrap());
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
