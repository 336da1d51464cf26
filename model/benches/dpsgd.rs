//! One DP-SGD step (ghost clipping + Gaussian noise) against one plain SGD step of the same
//! model and batch size; plus, for context, per-example clipping by a loop of batch-size-one
//! backward passes (the approach the ghost clipping replaces).
//!
//! Run: `cargo bench -p fedledger-model --bench dpsgd`.

use std::hint::black_box;
use std::time::Duration;

use chacha20::ChaCha20Rng;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use fedledger_model::{
    Dataset, DpSgdConfig, GradientNoise, ModelError, ModelSpec, Trainer, init_params,
};
use rand_core::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

/// Standard normal (rand_distr's ziggurat) over a seeded ChaCha20: a fast stand-in for the
/// secure sampler of the privacy crate (bench only; not safe for real DP).
struct SeededNormal(ChaCha20Rng);

impl SeededNormal {
    fn normal(&mut self) -> f64 {
        StandardNormal.sample(&mut self.0)
    }
}

impl GradientNoise for SeededNormal {
    fn add_gaussian(&mut self, values: &mut [f32], std_dev: f64) -> Result<(), ModelError> {
        for v in values {
            *v += (self.normal() * std_dev) as f32;
        }
        Ok(())
    }
}

fn data(n: usize, spec: &ModelSpec) -> Dataset {
    let mut g = SeededNormal(ChaCha20Rng::seed_from_u64(1));
    Dataset {
        feature_names: (0..spec.features).map(|j| format!("f{j}")).collect(),
        label_column: "y".into(),
        x: (0..n * spec.features).map(|_| g.normal() as f32).collect(),
        y: (0..n)
            .map(|_| g.0.next_u32() % spec.classes as u32)
            .collect(),
        classes: spec.classes,
    }
}

fn bench(c: &mut Criterion) {
    let batch = 64;
    let cases = [
        ("logreg 30-1", ModelSpec::logreg(30, 2), true),
        ("mlp 64-[64]-10", ModelSpec::mlp(64, vec![64], 10), true),
        (
            "mlp 784-[128]-10",
            ModelSpec::mlp(784, vec![128], 10),
            false,
        ),
    ];
    let dp = DpSgdConfig {
        clip_norm: 1.0,
        noise_multiplier: 1.0,
    };
    let mut group = c.benchmark_group("step_b64");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (name, spec, with_microbatch) in cases {
        let data = data(batch, &spec);
        let rows: Vec<usize> = (0..batch).collect();
        let params = init_params(&spec, 1);
        // tiny learning rate: the parameters barely drift over the many timed steps
        let mut plain = Trainer::new(&spec, &params, 1e-6).unwrap();
        group.bench_function(BenchmarkId::new("plain_sgd", name), |b| {
            b.iter(|| plain.sgd_step(black_box(&data), black_box(&rows)).unwrap())
        });
        let mut private = Trainer::new(&spec, &params, 1e-6).unwrap();
        let mut noise = SeededNormal(ChaCha20Rng::seed_from_u64(2));
        group.bench_function(BenchmarkId::new("dp_sgd_ghost", name), |b| {
            b.iter(|| {
                private
                    .dp_sgd_step(
                        black_box(&data),
                        black_box(&rows),
                        &dp,
                        batch as f64,
                        &mut noise,
                    )
                    .unwrap()
            })
        });
        // the same step with sigma = 0 (the noise source is then not called): clipping alone
        let mut clip_only = Trainer::new(&spec, &params, 1e-6).unwrap();
        let no_noise = DpSgdConfig {
            noise_multiplier: 0.0,
            ..dp
        };
        group.bench_function(BenchmarkId::new("dp_sgd_ghost_sigma0", name), |b| {
            b.iter(|| {
                clip_only
                    .dp_sgd_step(
                        black_box(&data),
                        black_box(&rows),
                        &no_noise,
                        batch as f64,
                        &mut noise,
                    )
                    .unwrap()
            })
        });
        let mut buf = vec![0f32; spec.num_params()];
        group.bench_function(BenchmarkId::new("noise_only", name), |b| {
            b.iter(|| noise.add_gaussian(black_box(&mut buf), 1.0))
        });
        if with_microbatch {
            let t = Trainer::new(&spec, &params, 1e-6).unwrap();
            group.bench_function(BenchmarkId::new("clip_microbatch_oracle", name), |b| {
                b.iter(|| {
                    let mut sum = vec![0f32; spec.num_params()];
                    for &i in &rows {
                        let g = t.gradient(&data, &[i]).unwrap();
                        let n = g.iter().map(|v| v * v).sum::<f32>().sqrt();
                        let s = (1.0 / n.max(1e-12)).min(1.0);
                        sum.iter_mut().zip(&g).for_each(|(a, v)| *a += s * v);
                    }
                    black_box(sum)
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
