//! One DP-SGD step as the participant really takes it (ghost clipping, then the privacy crate's
//! exact discrete Gaussian over ChaCha20) against one plain SGD step of the same model and batch.
//!
//! Run: `cargo bench -p fedledger-participant --bench dpsgd_secure`.

use std::{hint::black_box, time::Duration};

use chacha20::{ChaCha20Rng, rand_core::SeedableRng};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use fedledger_model::{Dataset, DpSgdConfig, GradientNoise, ModelSpec, Trainer, init_params};
use fedledger_privacy::SecureGaussian;

/// The participant's noise: secure sampler, fresh per step as in training.
struct Secure(ChaCha20Rng);

impl GradientNoise for Secure {
    fn add_gaussian(&mut self, values: &mut [f32], std_dev: f64) {
        SecureGaussian::new(std_dev, None)
            .and_then(|g| g.add_noise_f32(values, &mut self.0))
            .expect("finite gradients and a positive std dev");
    }
}

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
    let batch = 64;
    let dp = DpSgdConfig {
        clip_norm: 1.0,
        noise_multiplier: 1.0,
    };
    let mut group = c.benchmark_group("participant_step_b64");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (name, spec) in [
        ("logreg 30-1", ModelSpec::logreg(30, 2)),
        ("mlp 64-[64]-10", ModelSpec::mlp(64, vec![64], 10)),
    ] {
        let data = data(batch, &spec);
        let rows: Vec<usize> = (0..batch).collect();
        let params = init_params(&spec, 1);
        let mut plain = Trainer::new(&spec, &params, 1e-6).expect("valid model");
        group.bench_function(BenchmarkId::new("plain_sgd", name), |b| {
            b.iter(|| plain.sgd_step(black_box(&data), &rows).expect("step"))
        });
        let mut private = Trainer::new(&spec, &params, 1e-6).expect("valid model");
        let mut noise = Secure(ChaCha20Rng::seed_from_u64(7));
        group.bench_function(BenchmarkId::new("dp_sgd_secure_noise", name), |b| {
            b.iter(|| {
                private
                    .dp_sgd_step(black_box(&data), &rows, &dp, batch as f64, &mut noise)
                    .expect("step")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
