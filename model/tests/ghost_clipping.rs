//! The batched per-example clipping equals a loop of batch-size-one backward passes.

mod common;

use common::{l2, random_params, synthetic};
use fedledger_model::{Dataset, ModelSpec, Trainer};
use proptest::prelude::*;

/// The test oracle: one backward pass per example, clip, sum.
fn microbatch_clipped_sum(
    t: &Trainer,
    data: &Dataset,
    rows: &[usize],
    clip: f64,
) -> (Vec<f32>, Vec<f64>) {
    let mut sum = vec![0f32; t.spec().num_params()];
    let mut norms = Vec::new();
    for &i in rows {
        let g = t.gradient(data, &[i]).unwrap();
        let n = l2(&g);
        let c = if n > clip { clip / n } else { 1.0 };
        sum.iter_mut()
            .zip(&g)
            .for_each(|(s, v)| *s += (c * f64::from(*v)) as f32);
        norms.push(n);
    }
    (sum, norms)
}

fn check(spec: ModelSpec, seed: u64) {
    let data = synthetic(40, spec.features, spec.classes, 2.0, seed);
    let params = random_params(spec.num_params(), 0.5, seed + 1);
    let t = Trainer::new(&spec, &params, 0.1).unwrap();
    let rows: Vec<usize> = (0..32).chain([3, 3]).collect();
    let (oracle, oracle_norms) = microbatch_clipped_sum(&t, &data, &rows, 1.0);
    let ghost = t.clipped_gradient_sum(&data, &rows, 1.0).unwrap();
    // the clip must bind for some rows and not others, or the test proves little
    assert!(
        oracle_norms.iter().any(|&n| n > 1.0) && oracle_norms.iter().any(|&n| n < 1.0),
        "{oracle_norms:?}"
    );
    for (a, b) in ghost.norms.iter().zip(&oracle_norms) {
        assert!(
            (a - b).abs() <= 1e-4 * b.max(1.0),
            "{spec:?} norm {a} vs {b}"
        );
    }
    let max_diff = ghost
        .sum
        .iter()
        .zip(&oracle)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        max_diff < 1e-4,
        "{spec:?}: max |ghost - microbatch| = {max_diff}"
    );
}

#[test]
fn ghost_equals_microbatch_binary_logreg() {
    check(ModelSpec::logreg(6, 2), 10);
}

#[test]
fn ghost_equals_microbatch_multinomial_logreg() {
    check(ModelSpec::logreg(6, 4), 20);
}

#[test]
fn ghost_equals_microbatch_mlp() {
    check(ModelSpec::mlp(6, vec![8, 5], 3), 30);
}

#[test]
fn empty_batch_gives_zero_sum() {
    let spec = ModelSpec::mlp(3, vec![4], 2);
    let data = synthetic(5, 3, 2, 1.0, 1);
    let t = Trainer::new(&spec, &random_params(spec.num_params(), 1.0, 2), 0.1).unwrap();
    let g = t.clipped_gradient_sum(&data, &[], 1.0).unwrap();
    assert!(g.norms.is_empty());
    assert_eq!(g.sum, vec![0.0; spec.num_params()]);
}

fn arb_spec() -> impl Strategy<Value = ModelSpec> {
    (1usize..6, 2usize..5, prop::option::of(1usize..6)).prop_map(|(d, k, h)| match h {
        None => ModelSpec::logreg(d, k),
        Some(h) => ModelSpec::mlp(d, vec![h], k),
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Every example's clipped gradient (its exact gradient times the factor the batched
    /// computation chose) has norm at most C.
    #[test]
    fn per_example_clipped_norm_at_most_c(
        spec in arb_spec(),
        seed in 0u64..1_000_000,
        clip in 0.01f64..5.0,
        scale in 0.1f64..20.0,
        b in 1usize..6,
    ) {
        let data = synthetic(b, spec.features, spec.classes, scale, seed);
        let params = random_params(spec.num_params(), 1.0, seed ^ 0xabcdef);
        let t = Trainer::new(&spec, &params, 0.1).unwrap();
        let rows: Vec<usize> = (0..b).collect();
        let ghost = t.clipped_gradient_sum(&data, &rows, clip).unwrap();
        for (&i, &n) in rows.iter().zip(&ghost.norms) {
            let g = t.gradient(&data, &[i]).unwrap();
            let c = if n > clip { clip / n } else { 1.0 };
            let clipped = g.iter().map(|v| (c * f64::from(*v)) as f32).collect::<Vec<_>>();
            prop_assert!(l2(&clipped) <= clip + 1e-5, "clipped norm {} > C {}", l2(&clipped), clip);
        }
        // hence the sum of b clipped gradients is within b C
        prop_assert!(l2(&ghost.sum) <= b as f64 * clip + 1e-5);
    }
}
