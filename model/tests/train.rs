//! Training: accuracy on real data, DP-SGD semantics, determinism.

mod common;

use std::path::Path;

use chacha20::ChaCha20Rng;
use common::{SeededNormal, random_params, synthetic};
use fedledger_model::{
    Dataset, DpSgdConfig, GradientNoise, ModelError, ModelSpec, Standardiser, TrainConfig, Trainer,
    evaluate, init_params, train,
};
use rand_core::{Rng, SeedableRng};

/// Seeded 80/20 split of the vendored breast cancer data, standardised with the training part's
/// statistics.
fn breast_cancer_split(seed: u64) -> (Dataset, Dataset) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/breast_cancer.csv");
    let data = Dataset::load_csv(&path, "malignant").unwrap();
    let mut order: Vec<usize> = (0..data.len()).collect();
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    for i in (1..order.len()).rev() {
        order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    let cut = data.len() * 4 / 5;
    let (mut tr, mut te) = (data.subset(&order[..cut]), data.subset(&order[cut..]));
    let s = Standardiser::fit(&tr);
    s.apply(&mut tr).unwrap();
    s.apply(&mut te).unwrap();
    (tr, te)
}

fn cfg(epochs: usize, dp: Option<DpSgdConfig>) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 32,
        learning_rate: 0.1,
        seed: 7,
        dp,
        steps: None,
    }
}

#[test]
fn centralised_logreg_on_breast_cancer() {
    let (tr, te) = breast_cancer_split(42);
    let spec = ModelSpec::logreg(30, 2);
    let global = init_params(&spec, 0);
    let before = evaluate(&spec, &global, &te).unwrap();
    let out = train(
        &spec,
        &global,
        &tr,
        &cfg(20, None),
        &mut ChaCha20Rng::seed_from_u64(1),
        None,
    )
    .unwrap();
    assert_eq!(out.steps, 20 * 15); // ceil(455 / 32) = 15 per epoch
    assert_eq!(out.examples, 455);
    let m = evaluate(&spec, &out.params, &te).unwrap();
    println!("breast cancer logreg, 20 epochs: {m:?}");
    assert!(m.accuracy >= 0.95, "{m:?}");
    assert!(m.log_loss < before.log_loss);
    assert!(m.auc.unwrap() > 0.98, "{m:?}");
}

#[test]
fn dp_sgd_logreg_on_breast_cancer() {
    let (tr, te) = breast_cancer_split(42);
    let spec = ModelSpec::logreg(30, 2);
    let dp = DpSgdConfig {
        clip_norm: 1.0,
        noise_multiplier: 1.0,
    };
    let mut noise = SeededNormal::new(9);
    let out = train(
        &spec,
        &init_params(&spec, 0),
        &tr,
        &TrainConfig {
            epochs: 5,
            batch_size: 64,
            learning_rate: 0.5,
            seed: 0,
            dp: Some(dp),
            steps: None,
        },
        &mut ChaCha20Rng::seed_from_u64(3),
        Some(&mut noise),
    )
    .unwrap();
    assert_eq!(out.steps, 5 * 7); // round(455 / 64) = 7
    assert!((out.sampling_rate - 64.0 / 455.0).abs() < 1e-15);
    let m = evaluate(&spec, &out.params, &te).unwrap();
    println!("breast cancer logreg, DP-SGD sigma 1 C 1, 5 epochs: {m:?}");
    assert!(m.accuracy >= 0.9, "{m:?}");
}

#[test]
fn training_is_deterministic_and_rng_free_without_dp() {
    let spec = ModelSpec::mlp(4, vec![6], 3);
    let data = synthetic(50, 4, 3, 1.0, 1);
    let g = init_params(&spec, 2);
    let a = train(
        &spec,
        &g,
        &data,
        &cfg(2, None),
        &mut ChaCha20Rng::seed_from_u64(1),
        None,
    )
    .unwrap();
    let b = train(
        &spec,
        &g,
        &data,
        &cfg(2, None),
        &mut ChaCha20Rng::seed_from_u64(99),
        None,
    )
    .unwrap();
    assert_eq!(a, b);
    assert_ne!(a.params, g);
    let mut other_seed = cfg(2, None);
    other_seed.seed = 8;
    assert_ne!(
        train(
            &spec,
            &g,
            &data,
            &other_seed,
            &mut ChaCha20Rng::seed_from_u64(1),
            None
        )
        .unwrap()
        .params,
        a.params
    );
}

#[test]
fn dp_requires_noise_and_valid_settings() {
    let spec = ModelSpec::logreg(3, 2);
    let data = synthetic(10, 3, 2, 1.0, 1);
    let g = init_params(&spec, 0);
    let mut r = ChaCha20Rng::seed_from_u64(1);
    let dp = DpSgdConfig {
        clip_norm: 1.0,
        noise_multiplier: 1.0,
    };
    assert!(matches!(
        train(&spec, &g, &data, &cfg(1, Some(dp)), &mut r, None),
        Err(ModelError::MissingNoise)
    ));
    let bad = DpSgdConfig {
        clip_norm: 0.0,
        noise_multiplier: 1.0,
    };
    let mut n = SeededNormal::new(1);
    assert!(matches!(
        train(&spec, &g, &data, &cfg(1, Some(bad)), &mut r, Some(&mut n)),
        Err(ModelError::InvalidConfig { .. })
    ));
    let mut zero_batch = cfg(1, None);
    zero_batch.batch_size = 0;
    assert!(matches!(
        train(&spec, &g, &data, &zero_batch, &mut r, None),
        Err(ModelError::InvalidConfig { .. })
    ));
}

/// Adds exactly `std_dev` to every coordinate and counts calls: makes the normalisation visible.
struct Shift(usize);
impl GradientNoise for Shift {
    fn add_gaussian(&mut self, values: &mut [f32], std_dev: f64) -> Result<(), ModelError> {
        self.0 += 1;
        values.iter_mut().for_each(|v| *v += std_dev as f32);
        Ok(())
    }
}

#[test]
fn empty_poisson_batch_takes_a_noise_only_step() {
    let spec = ModelSpec::mlp(3, vec![4], 2);
    let data = synthetic(8, 3, 2, 1.0, 1);
    let p = random_params(spec.num_params(), 0.5, 3);
    let mut t = Trainer::new(&spec, &p, 0.5).unwrap();
    let dp = DpSgdConfig {
        clip_norm: 2.0,
        noise_multiplier: 1.5,
    };
    let mut shift = Shift(0);
    t.dp_sgd_step(&data, &[], &dp, 4.0, &mut shift).unwrap();
    assert_eq!(shift.0, 1);
    // each parameter moves by lr * sigma C / (q n) = 0.5 * 3 / 4
    for (a, b) in t.params().unwrap().iter().zip(&p) {
        assert!((b - a - 0.375).abs() < 1e-6, "{a} {b}");
    }
}

#[test]
fn dp_step_is_clipped_sum_over_expected_batch() {
    let spec = ModelSpec::logreg(3, 3);
    let data = synthetic(6, 3, 3, 3.0, 4);
    let p = random_params(spec.num_params(), 0.5, 5);
    let rows = [0, 2, 3];
    let mut t = Trainer::new(&spec, &p, 0.25).unwrap();
    let sum = t.clipped_gradient_sum(&data, &rows, 0.5).unwrap().sum;
    let dp = DpSgdConfig {
        clip_norm: 0.5,
        noise_multiplier: 0.0,
    };
    let mut never = Shift(0);
    t.dp_sgd_step(&data, &rows, &dp, 2.0, &mut never).unwrap();
    assert_eq!(never.0, 0, "sigma = 0 must not call the noise source");
    for ((a, b), g) in t.params().unwrap().iter().zip(&p).zip(&sum) {
        assert!((b - 0.25 * g / 2.0 - a).abs() < 1e-6);
    }
}

#[test]
fn dp_training_reports_schedule_and_accepts_dyn_rng() {
    let spec = ModelSpec::logreg(2, 2);
    let data = synthetic(10, 2, 2, 1.0, 1);
    let mut rng: Box<dyn Rng> = Box::new(ChaCha20Rng::seed_from_u64(5));
    let mut noise = SeededNormal::new(2);
    let mut c = cfg(
        3,
        Some(DpSgdConfig {
            clip_norm: 1.0,
            noise_multiplier: 0.5,
        }),
    );
    c.batch_size = 64; // larger than the data: q = 1, one step per epoch
    let out = train(
        &spec,
        &init_params(&spec, 0),
        &data,
        &c,
        &mut *rng,
        Some(&mut noise),
    )
    .unwrap();
    assert_eq!((out.steps, out.sampling_rate, out.examples), (3, 1.0, 10));
}

/// A per-example gradient that is not finite (here: features so large that the logits and the
/// squared norms overflow) counts as zero: the clipped sum stays finite with sensitivity C, the
/// other examples are clipped as usual, and DP-SGD goes on. Nothing here depends on which row
/// it was, so no decision leaks it.
#[test]
fn a_non_finite_per_example_gradient_counts_as_zero_and_training_goes_on() {
    for spec in [ModelSpec::logreg(3, 2), ModelSpec::mlp(3, vec![4], 3)] {
        let mut data = synthetic(6, 3, spec.classes, 1.0, 7);
        let clean = data.clone();
        data.x[3..6].copy_from_slice(&[3e38, -3e38, 3e38]);
        let p = random_params(spec.num_params(), 0.5, 3);
        let t = Trainer::new(&spec, &p, 0.1).unwrap();
        let rows: Vec<usize> = (0..6).collect();
        let clipped = t.clipped_gradient_sum(&data, &rows, 0.5).unwrap();
        assert!(clipped.norms[1].is_infinite(), "{:?}", clipped.norms);
        assert!(
            clipped.sum.iter().all(|v| v.is_finite()),
            "{:?}",
            clipped.sum
        );
        // Exactly the clipped sum of the other rows.
        let others: Vec<usize> = vec![0, 2, 3, 4, 5];
        let want = t.clipped_gradient_sum(&clean, &others, 0.5).unwrap().sum;
        for (a, b) in clipped.sum.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        let cfg = TrainConfig {
            epochs: 2,
            batch_size: 3,
            learning_rate: 0.1,
            seed: 1,
            steps: None,
            dp: Some(DpSgdConfig {
                clip_norm: 0.5,
                noise_multiplier: 1.0,
            }),
        };
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let mut noise = SeededNormal::new(3);
        let out = train(&spec, &p, &data, &cfg, &mut rng, Some(&mut noise)).unwrap();
        assert!(out.params.iter().all(|v| v.is_finite()));
    }
}

#[test]
fn a_planned_step_count_replaces_the_epochs_and_is_what_the_schedule_says() {
    let spec = ModelSpec::logreg(2, 2);
    let data = synthetic(40, 2, 2, 1.0, 3);
    let mut c = cfg(
        3,
        Some(DpSgdConfig {
            clip_norm: 1.0,
            noise_multiplier: 2.0,
        }),
    );
    c.batch_size = 10;
    assert_eq!(c.dp_schedule(40), (0.25, 3 * 4));
    c.steps = Some(7);
    assert_eq!(c.dp_schedule(40), (0.25, 7));
    let out = train(
        &spec,
        &init_params(&spec, 0),
        &data,
        &c,
        &mut ChaCha20Rng::seed_from_u64(5),
        Some(&mut SeededNormal::new(4)),
    )
    .unwrap();
    assert_eq!((out.steps, out.sampling_rate), (7, 0.25));
    // Non-private training ignores it: epochs of minibatches.
    c.dp = None;
    let plain = train(
        &spec,
        &init_params(&spec, 0),
        &data,
        &c,
        &mut ChaCha20Rng::seed_from_u64(5),
        None,
    )
    .unwrap();
    assert_eq!(plain.steps, 3 * 4);
}
