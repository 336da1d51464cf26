//! Plain-Rust inference and metrics: no burn, no threads, deterministic.
//!
//! Every sum is accumulated in `f64` in a fixed order, so the same build gives bit-identical
//! results on every run (replay relies on it); the values agree with burn's `f32` forward pass to
//! about 1e-6.

use serde::{Deserialize, Serialize};

use crate::{data::Dataset, error::ModelError, spec::ModelSpec};

/// Quality of a model on a labelled data set.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct Metrics {
    /// Fraction of rows whose most probable class is the label (binary: `P(1) > 0.5`).
    pub accuracy: f64,
    /// Mean negative log-likelihood of the labels (natural log), computed from the logits.
    pub log_loss: f64,
    /// ROC AUC of the class-1 score with ties counted half; `None` unless the task is binary and
    /// both classes occur in the data.
    pub auc: Option<f64>,
}

/// Logits of every row, `n x spec.outputs()` row-major, in `f64`.
pub(crate) fn logits(
    spec: &ModelSpec,
    params: &[f32],
    data: &Dataset,
) -> Result<Vec<f64>, ModelError> {
    spec.check_params(params)?;
    data.check_fits(spec.features, spec.classes)?;
    Ok(crate::forward::logits(spec, params, &data.x, data.len()))
}

/// `ln(1 + e^x)` without overflow.
fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// Predicted probabilities, `n x spec.outputs()` row-major: for a binary task one column,
/// `P(class 1)`; otherwise one column per class (each row sums to 1).
pub fn predict_proba(
    spec: &ModelSpec,
    params: &[f32],
    data: &Dataset,
) -> Result<Vec<f64>, ModelError> {
    let mut z = logits(spec, params, data)?;
    let k = spec.outputs();
    if k == 1 {
        z.iter_mut().for_each(|v| *v = (-softplus(-*v)).exp());
    } else {
        for row in z.chunks_exact_mut(k) {
            let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            row.iter_mut().for_each(|v| *v = (*v - m).exp());
            let s: f64 = row.iter().sum();
            row.iter_mut().for_each(|v| *v /= s);
        }
    }
    Ok(z)
}

/// Accuracy, log-loss and (binary tasks) ROC AUC of the model on `data`, which must not be empty.
pub fn evaluate(spec: &ModelSpec, params: &[f32], data: &Dataset) -> Result<Metrics, ModelError> {
    if data.is_empty() {
        return Err(ModelError::EmptyData {
            what: "evaluate needs at least one row",
        });
    }
    let z = logits(spec, params, data)?;
    let k = spec.outputs();
    let n = data.len();
    let (mut correct, mut loss) = (0usize, 0.0f64);
    if k == 1 {
        for (&zi, &yi) in z.iter().zip(&data.y) {
            // -ln sigmoid(z) = softplus(-z); -ln(1 - sigmoid(z)) = softplus(z)
            loss += if yi == 1 { softplus(-zi) } else { softplus(zi) };
            correct += usize::from((zi > 0.0) == (yi == 1));
        }
    } else {
        for (row, &yi) in z.chunks_exact(k).zip(&data.y) {
            let (mut arg, mut m) = (0, f64::NEG_INFINITY);
            for (j, &v) in row.iter().enumerate() {
                if v > m {
                    (arg, m) = (j, v);
                }
            }
            let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
            loss += lse - row[yi as usize];
            correct += usize::from(arg == yi as usize);
        }
    }
    let auc = if k == 1 { roc_auc(&z, &data.y) } else { None };
    Ok(Metrics {
        accuracy: correct as f64 / n as f64,
        log_loss: loss / n as f64,
        auc,
    })
}

/// Per-row scores of the model on `data`: each row's negative log-likelihood of its label and
/// whether its most probable class is the label. [`evaluate`]'s `log_loss` and `accuracy` are
/// their means, summed in row order (the same bits); the valuation keeps them per row to
/// bootstrap over validation rows.
#[derive(Clone, Debug, PartialEq)]
pub struct RowScores {
    pub log_loss: Vec<f64>,
    pub correct: Vec<bool>,
}

/// [`RowScores`] of every row of `data`.
pub fn evaluate_rows(
    spec: &ModelSpec,
    params: &[f32],
    data: &Dataset,
) -> Result<RowScores, ModelError> {
    let z = logits(spec, params, data)?;
    let k = spec.outputs();
    let mut out = RowScores {
        log_loss: Vec::with_capacity(data.len()),
        correct: Vec::with_capacity(data.len()),
    };
    if k == 1 {
        for (&zi, &yi) in z.iter().zip(&data.y) {
            out.log_loss
                .push(if yi == 1 { softplus(-zi) } else { softplus(zi) });
            out.correct.push((zi > 0.0) == (yi == 1));
        }
    } else {
        for (row, &yi) in z.chunks_exact(k).zip(&data.y) {
            let (mut arg, mut m) = (0, f64::NEG_INFINITY);
            for (j, &v) in row.iter().enumerate() {
                if v > m {
                    (arg, m) = (j, v);
                }
            }
            let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
            out.log_loss.push(lse - row[yi as usize]);
            out.correct.push(arg == yi as usize);
        }
    }
    Ok(out)
}

/// ROC AUC of `scores` for labels `== 1` against the rest, by the Mann-Whitney rank sum with
/// average ranks for ties. `None` when either class is absent.
pub fn roc_auc(scores: &[f64], labels: &[u32]) -> Option<f64> {
    let n = scores.len().min(labels.len());
    let pos = labels[..n].iter().filter(|&&y| y == 1).count();
    let neg = n - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_unstable_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum_pos = 0.0f64;
    let mut i = 0;
    while i < n {
        let mut j = i + 1;
        while j < n && scores[order[j]] == scores[order[i]] {
            j += 1;
        }
        // ranks i+1 ..= j share their average
        let avg = (i + 1 + j) as f64 / 2.0;
        rank_sum_pos += avg * order[i..j].iter().filter(|&&r| labels[r] == 1).count() as f64;
        i = j;
    }
    let (p, q) = (pos as f64, neg as f64);
    Some((rank_sum_pos - p * (p + 1.0) / 2.0) / (p * q))
}
