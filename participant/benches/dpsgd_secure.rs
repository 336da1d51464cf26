//! One DP-SGD step as the participant really takes it (ghost clipping, then the privacy crate's
//! exact discrete Gaussian over ChaCha20, drawn one step ahead on a worker thread) against one
//! plain SGD step of the same model and batch. `dp_sgd_inline_noise` draws the noise inside the
//! step instead (what a one-core machine gets).
//!
//! Run: `cargo bench -p fedledger-participant --bench dpsgd_secure` (batches of 64, and 512 for
//! the largest model).

use std::{hint::black_box, time::Duration};

use chacha20::{ChaCha20Rng, rand_core::SeedableRng};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use fedledger_model::{Dataset, DpSgdConfig, ModelSpec, Trainer, init_params};
use fedledger_participant::dp::SecureNoise;

fn data(n: usize, spec: &ModelSpec) -> Dataset {
    Dataset {
        feature_names: (0..spec.features).map(|j| format!("f{j}")).collect(),
        label_column: "y".into(),
        x: (0..n * spec.features)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect(),
        y: (0..n).map(|i| (i % spec.classes) as u32).collect(),
        classes: spec.classes,
    }
}

fn bench(c: &mut Criterion) {
    let dp = DpSgdConfig {
        clip_norm: 1.0,
        noise_multiplier: 1.0,
    };
    let mut group = c.benchmark_group("participant_step");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    // The noise costs the same whatever the batch; the step grows with it, so the larger batch
    // (usual for DP-SGD) shows where the ratio goes.
    for (name, spec, batch) in [
        ("logreg 30-1 b64", ModelSpec::logreg(30, 2), 64),
        ("mlp 64-[64]-10 b64", ModelSpec::mlp(64, vec![64], 10), 64),
        (
            "mlp 784-[128]-10 b64",
            ModelSpec::mlp(784, vec![128], 10),
            64,
        ),
        (
            "mlp 784-[128]-10 b512",
            ModelSpec::mlp(784, vec![128], 10),
            512,
        ),
    ] {
        let data = data(batch, &spec);
        let rows: Vec<usize> = (0..batch).collect();
        let params = init_params(&spec, 1);
        let mut plain = Trainer::new(&spec, &params, 1e-6).expect("valid model");
        group.bench_function(BenchmarkId::new("plain_sgd", name), |b| {
            b.iter(|| plain.sgd_step(black_box(&data), &rows).expect("step"))
        });
        for (label, worker) in [
            ("dp_sgd_secure_noise", true),
            ("dp_sgd_inline_noise", false),
        ] {
            let mut private = Trainer::new(&spec, &params, 1e-6).expect("valid model");
            let mut noise = SecureNoise::new(
                ChaCha20Rng::seed_from_u64(7),
                worker.then(|| ChaCha20Rng::seed_from_u64(8)),
            )
            .expect("noise source");
            group.bench_function(BenchmarkId::new(label, name), |b| {
                b.iter(|| {
                    private
                        .dp_sgd_step(black_box(&data), &rows, &dp, batch as f64, &mut noise)
                        .expect("step")
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
