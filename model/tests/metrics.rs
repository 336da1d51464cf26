//! Metrics against values computed by hand.

use fedledger_model::{
    Dataset, ModelError, ModelSpec, evaluate, evaluate_rows, predict_proba, roc_auc,
};

fn data(x: &[f32], y: &[u32], d: usize) -> Dataset {
    Dataset {
        feature_names: (0..d).map(|j| format!("f{j}")).collect(),
        label_column: "y".into(),
        x: x.to_vec(),
        y: y.to_vec(),
        classes: y.iter().max().map_or(0, |m| *m as usize + 1),
    }
}

#[test]
fn binary_metrics_with_a_tie() {
    // w = 1, b = 0: logits -1, 0, 0, 2
    let spec = ModelSpec::logreg(1, 2);
    let ds = data(&[-1.0, 0.0, 0.0, 2.0], &[0, 1, 0, 1], 1);
    let m = evaluate(&spec, &[1.0, 0.0], &ds).unwrap();
    // predictions (p > 0.5): 0 0 0 1 -> rows 0, 2, 3 right
    assert_eq!(m.accuracy, 0.75);
    // ln(1 + e^-1), ln 2, ln 2, ln(1 + e^-2)
    let expected =
        ((1.0 + (-1.0f64).exp()).ln() + 2.0 * 2f64.ln() + (1.0 + (-2.0f64).exp()).ln()) / 4.0;
    assert!(
        (m.log_loss - expected).abs() < 1e-12,
        "{} vs {expected}",
        m.log_loss
    );
    // positives {0, 2} vs negatives {-1, 0}: pairs 1 + 0.5 + 1 + 1 of 4
    assert_eq!(m.auc, Some(0.875));
    let p = predict_proba(&spec, &[1.0, 0.0], &ds).unwrap();
    let sig = |z: f64| 1.0 / (1.0 + (-z).exp());
    for (a, b) in p.iter().zip([sig(-1.0), 0.5, 0.5, sig(2.0)]) {
        assert!((a - b).abs() < 1e-15);
    }
}

#[test]
fn multinomial_metrics() {
    // logits (0, ln 2, 0) for every row: probabilities 1/4, 1/2, 1/4
    let spec = ModelSpec::logreg(1, 3);
    let params = [0.0, 0.0, 0.0, 0.0, 2f32.ln(), 0.0];
    let ds = data(&[5.0, -1.0, 0.0], &[1, 0, 2], 1);
    let m = evaluate(&spec, &params, &ds).unwrap();
    assert!((m.accuracy - 1.0 / 3.0).abs() < 1e-15);
    assert!(
        (m.log_loss - 5.0 * 2f64.ln() / 3.0).abs() < 1e-6,
        "{}",
        m.log_loss
    );
    assert_eq!(m.auc, None);
    let p = predict_proba(&spec, &params, &ds).unwrap();
    assert_eq!(p.len(), 9);
    for row in p.chunks(3) {
        assert!(
            (row[0] - 0.25).abs() < 1e-7
                && (row[1] - 0.5).abs() < 1e-7
                && (row[2] - 0.25).abs() < 1e-7
        );
    }
}

#[test]
fn auc_edge_cases() {
    assert_eq!(roc_auc(&[0.3, 0.3, 0.3], &[0, 1, 1]), Some(0.5));
    assert_eq!(roc_auc(&[0.1, 0.9], &[0, 1]), Some(1.0));
    assert_eq!(roc_auc(&[0.1, 0.9], &[1, 0]), Some(0.0));
    assert_eq!(roc_auc(&[0.1, 0.9], &[1, 1]), None);
    // 3 positives, 2 negatives: scores pos {0.8, 0.4, 0.4}, neg {0.4, 0.1}
    // pairs: 0.8>0.4 0.8>0.1 | 0.4=0.4 (.5) 0.4>0.1 | 0.4=0.4 (.5) 0.4>0.1 = 5 of 6
    let auc = roc_auc(&[0.8, 0.4, 0.4, 0.4, 0.1], &[1, 1, 0, 1, 0]).unwrap();
    assert!((auc - 5.0 / 6.0).abs() < 1e-15);
}

#[test]
fn single_class_data_has_no_auc() {
    let m = evaluate(
        &ModelSpec::logreg(1, 2),
        &[1.0, 0.0],
        &data(&[1.0, 2.0], &[1, 1], 1),
    )
    .unwrap();
    assert_eq!(m.auc, None);
    assert_eq!(m.accuracy, 1.0);
}

#[test]
fn mismatches_are_errors() {
    let spec = ModelSpec::logreg(2, 2);
    let ds = data(&[1.0, 2.0], &[0], 2);
    assert!(matches!(
        evaluate(&spec, &[0.0; 2], &ds),
        Err(ModelError::ParamLength {
            expected: 3,
            actual: 2
        })
    ));
    assert!(matches!(
        evaluate(&spec, &[f32::NAN, 0.0, 0.0], &ds),
        Err(ModelError::NonFiniteParam { index: 0, .. })
    ));
    assert!(matches!(
        evaluate(&ModelSpec::logreg(1, 2), &[0.0; 2], &ds),
        Err(ModelError::FeatureCount {
            expected: 1,
            actual: 2
        })
    ));
    let ds3 = data(&[1.0, 2.0], &[2], 2);
    assert!(matches!(
        evaluate(&spec, &[0.0; 3], &ds3),
        Err(ModelError::LabelOutOfRange {
            row: 0,
            label: 2,
            classes: 2
        })
    ));
    assert!(matches!(
        evaluate(&spec, &[0.0; 3], &data(&[], &[], 2)),
        Err(ModelError::EmptyData { .. })
    ));
}

#[test]
fn spec_serde_forms() {
    let s: ModelSpec =
        toml::from_str("kind = \"mlp\"\nfeatures = 64\nclasses = 10\nhidden = [64]\n").unwrap();
    assert_eq!(s, ModelSpec::mlp(64, vec![64], 10));
    let l: ModelSpec =
        serde_json::from_str(r#"{"kind":"logreg","features":30,"classes":2}"#).unwrap();
    assert_eq!(l, ModelSpec::logreg(30, 2));
    assert!(l.validate().is_ok());
}

#[test]
fn row_scores_average_to_the_metrics_bit_for_bit() {
    let spec = ModelSpec::logreg(1, 2);
    let ds = data(&[-1.0, 0.0, 0.3, 2.0, -0.7], &[0, 1, 0, 1, 1], 1);
    let params = [0.9f32, -0.1];
    let m = evaluate(&spec, &params, &ds).unwrap();
    let rows = evaluate_rows(&spec, &params, &ds).unwrap();
    assert_eq!(rows.log_loss.iter().sum::<f64>() / 5.0, m.log_loss);
    let right = rows.correct.iter().filter(|&&c| c).count();
    assert_eq!(right as f64 / 5.0, m.accuracy);
    let spec = ModelSpec::logreg(1, 3);
    let ds = data(&[5.0, -1.0, 0.0], &[1, 0, 2], 1);
    let params = [0.3, -0.2, 0.1, 0.0, 2f32.ln(), 0.0];
    let m = evaluate(&spec, &params, &ds).unwrap();
    let rows = evaluate_rows(&spec, &params, &ds).unwrap();
    assert_eq!(rows.log_loss.iter().sum::<f64>() / 3.0, m.log_loss);
}
