//! The burn model and the plain-Rust inference agree, and flat parameters survive burn.

mod common;

use common::{random_params, synthetic};
use fedledger_model::{ModelSpec, Trainer, init_params, predict_proba};

fn specs() -> Vec<ModelSpec> {
    vec![
        ModelSpec::logreg(7, 2),
        ModelSpec::logreg(7, 4),
        ModelSpec::mlp(7, vec![9], 2),
        ModelSpec::mlp(7, vec![9, 5], 3),
        ModelSpec::mlp(7, vec![1, 4], 2),
    ]
}

#[test]
fn flat_params_round_trip_through_burn() {
    for (s, spec) in specs().into_iter().enumerate() {
        for params in [
            init_params(&spec, 3),
            random_params(spec.num_params(), 1.0, s as u64),
        ] {
            let back = Trainer::new(&spec, &params, 0.1).unwrap().params().unwrap();
            assert_eq!(back, params, "{spec:?}");
        }
    }
}

#[test]
fn burn_forward_matches_plain_rust() {
    for (s, spec) in specs().into_iter().enumerate() {
        let data = synthetic(50, spec.features, spec.classes, 1.5, 100 + s as u64);
        let params = random_params(spec.num_params(), 0.7, 200 + s as u64);
        let rows: Vec<usize> = (0..data.len()).collect();
        let z = Trainer::new(&spec, &params, 0.1)
            .unwrap()
            .logits(&data, &rows)
            .unwrap();
        let k = spec.outputs();
        let burn_probs: Vec<f64> = if k == 1 {
            z.iter()
                .map(|&v| 1.0 / (1.0 + (-f64::from(v)).exp()))
                .collect()
        } else {
            z.chunks(k)
                .flat_map(|row| {
                    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let e: Vec<f64> = row.iter().map(|&v| f64::from(v - m).exp()).collect();
                    let s: f64 = e.iter().sum();
                    e.into_iter().map(move |v| v / s)
                })
                .collect()
        };
        let plain = predict_proba(&spec, &params, &data).unwrap();
        assert_eq!(plain.len(), data.len() * k);
        for (a, b) in burn_probs.iter().zip(&plain) {
            assert!((a - b).abs() < 1e-5, "{spec:?}: burn {a} vs plain {b}");
        }
    }
}

#[test]
fn plain_rust_inference_is_bit_reproducible() {
    let spec = ModelSpec::mlp(7, vec![9], 3);
    let data = synthetic(40, 7, 3, 1.0, 5);
    let params = random_params(spec.num_params(), 0.5, 6);
    let a = predict_proba(&spec, &params, &data).unwrap();
    let b = predict_proba(&spec, &params, &data).unwrap();
    assert_eq!(
        a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        b.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
}

#[test]
fn public_types_can_move_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<fedledger_model::Dataset>();
    send_sync::<fedledger_model::ModelSpec>();
    send_sync::<fedledger_model::ModelError>();
    fn send<T: Send>() {}
    send::<Trainer>();
}
