//! Model specification, flat parameter layout and deterministic initialisation.

use chacha20::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// Most parameters a valid spec may have (2^30, 4 GiB as f32): every size computed from a valid
/// spec fits in memory arithmetic without overflow.
pub const MAX_PARAMS: usize = 1 << 30;

/// Which family of model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Logistic regression: one dense layer, no hidden layers.
    Logreg,
    /// Multi-layer perceptron: dense layers with ReLU between them.
    Mlp,
}

impl ModelKind {
    /// The name used in configs, tasks and ledger records (`"logreg"`, `"mlp"`).
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Logreg => "logreg",
            ModelKind::Mlp => "mlp",
        }
    }
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ModelKind {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "logreg" => Ok(ModelKind::Logreg),
            "mlp" => Ok(ModelKind::Mlp),
            other => Err(ModelError::InvalidSpec {
                reason: format!("unknown model kind {other:?} (logreg or mlp)"),
            }),
        }
    }
}

/// What model to train; serialises as e.g. `{ kind = "mlp", features = 64, classes = 10, hidden = [64] }`.
///
/// `classes == 2` gives a single logit with a sigmoid; `classes > 2` gives `classes` logits with a
/// softmax (multinomial logistic regression for [`ModelKind::Logreg`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Model family.
    pub kind: ModelKind,
    /// Number of input features.
    pub features: usize,
    /// Number of classes (labels are `0..classes`), at least 2.
    pub classes: usize,
    /// Widths of the hidden layers (MLP only; empty for logistic regression).
    #[serde(default)]
    pub hidden: Vec<usize>,
}

impl ModelSpec {
    /// Binary or multinomial logistic regression.
    pub fn logreg(features: usize, classes: usize) -> Self {
        Self {
            kind: ModelKind::Logreg,
            features,
            classes,
            hidden: Vec::new(),
        }
    }

    /// MLP with ReLU hidden layers of the given widths.
    pub fn mlp(features: usize, hidden: Vec<usize>, classes: usize) -> Self {
        Self {
            kind: ModelKind::Mlp,
            features,
            classes,
            hidden,
        }
    }

    /// Checks: at least 2 classes and 1 feature; an MLP has at least one hidden layer, every one
    /// at least 1 wide; logistic regression has none; at most [`MAX_PARAMS`] parameters.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |reason: String| Err(ModelError::InvalidSpec { reason });
        if self.classes < 2 {
            return bad(format!("classes = {}, need at least 2", self.classes));
        }
        if self.features == 0 {
            return bad("features = 0, need at least 1".into());
        }
        match self.kind {
            ModelKind::Logreg if !self.hidden.is_empty() => bad(format!(
                "logreg has no hidden layers, got hidden = {:?}",
                self.hidden
            )),
            ModelKind::Mlp if self.hidden.is_empty() => {
                bad("mlp needs at least one hidden layer (hidden = [64] for example)".into())
            }
            ModelKind::Mlp if self.hidden.contains(&0) => {
                bad(format!("hidden layer of width 0 in {:?}", self.hidden))
            }
            _ => match self.checked_num_params() {
                Some(n) if n <= MAX_PARAMS => Ok(()),
                _ => bad(format!(
                    "the model has more than {MAX_PARAMS} parameters (features {}, hidden {:?}, \
                     classes {})",
                    self.features, self.hidden, self.classes
                )),
            },
        }
    }

    /// [`Self::num_params`] without overflow: `None` when it does not fit a `usize`.
    pub fn checked_num_params(&self) -> Option<usize> {
        self.layer_dims().iter().try_fold(0usize, |total, (i, o)| {
            i.checked_mul(*o)?.checked_add(*o)?.checked_add(total)
        })
    }

    /// Number of logits: 1 for a binary task (sigmoid), else `classes` (softmax).
    pub fn outputs(&self) -> usize {
        if self.classes == 2 { 1 } else { self.classes }
    }

    /// `(inputs, outputs)` of each dense layer, from input to output.
    pub fn layer_dims(&self) -> Vec<(usize, usize)> {
        let mut widths = Vec::with_capacity(self.hidden.len() + 2);
        widths.push(self.features);
        widths.extend_from_slice(&self.hidden);
        widths.push(self.outputs());
        widths.windows(2).map(|w| (w[0], w[1])).collect()
    }

    /// Length of the flat parameter vector: sum over layers of `in * out + out`.
    pub fn num_params(&self) -> usize {
        self.layer_dims().iter().map(|(i, o)| i * o + o).sum()
    }

    /// Validates the spec and that `params` has the right length and only finite values.
    pub fn check_params(&self, params: &[f32]) -> Result<(), ModelError> {
        self.validate()?;
        let expected = self.num_params();
        if params.len() != expected {
            return Err(ModelError::ParamLength {
                expected,
                actual: params.len(),
            });
        }
        if let Some((index, &value)) = params.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(ModelError::NonFiniteParam { index, value });
        }
        Ok(())
    }
}

/// Deterministic initial parameters in the flat layout.
///
/// Logistic regression starts at zero (its loss is convex; `seed` is unused). An MLP draws each
/// weight uniformly from `[-b, b)` with `b = sqrt(6 / fan_in)` (He-uniform) for layers followed
/// by a ReLU and `b = sqrt(1 / fan_in)` for the output layer; biases start at zero. The uniform
/// draws come from `ChaCha20Rng::seed_from_u64(seed)` (24-bit mantissas), so the result is the
/// same on every platform and build. An invalid spec yields zeros of `num_params()` length;
/// call [`ModelSpec::validate`] first.
pub fn init_params(spec: &ModelSpec, seed: u64) -> Vec<f32> {
    let mut out = Vec::with_capacity(spec.num_params());
    if spec.kind == ModelKind::Logreg || spec.validate().is_err() {
        out.resize(spec.num_params(), 0.0);
        return out;
    }
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let dims = spec.layer_dims();
    let last = dims.len() - 1;
    for (l, &(fan_in, fan_out)) in dims.iter().enumerate() {
        let gain = if l == last { 1.0 } else { 6.0 };
        let bound = (gain / fan_in as f64).sqrt() as f32;
        for _ in 0..fan_in * fan_out {
            let u = (rng.next_u32() >> 8) as f32 * (1.0 / (1u32 << 24) as f32); // [0, 1)
            out.push((2.0 * u - 1.0) * bound);
        }
        out.resize(out.len() + fan_out, 0.0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_outputs() {
        let lr = ModelSpec::logreg(30, 2);
        assert_eq!(lr.outputs(), 1);
        assert_eq!(lr.num_params(), 31);
        let mlr = ModelSpec::logreg(64, 10);
        assert_eq!(mlr.num_params(), 64 * 10 + 10);
        let mlp = ModelSpec::mlp(64, vec![64], 10);
        assert_eq!(mlp.layer_dims(), vec![(64, 64), (64, 10)]);
        assert_eq!(mlp.num_params(), 64 * 64 + 64 + 64 * 10 + 10);
    }

    #[test]
    fn validation() {
        assert!(ModelSpec::logreg(3, 2).validate().is_ok());
        assert!(ModelSpec::logreg(3, 1).validate().is_err());
        assert!(ModelSpec::logreg(0, 2).validate().is_err());
        assert!(ModelSpec::mlp(3, vec![], 2).validate().is_err());
        assert!(ModelSpec::mlp(3, vec![4, 0], 2).validate().is_err());
        let mut s = ModelSpec::logreg(3, 2);
        s.hidden = vec![4];
        assert!(s.validate().is_err());
        // Sizes that overflow, or that no machine holds, are refused (not a panic).
        assert!(ModelSpec::logreg(usize::MAX, 2).validate().is_err());
        assert!(
            ModelSpec::mlp(1 << 20, vec![1 << 20], 2)
                .validate()
                .is_err()
        );
        assert!(
            ModelSpec::logreg(usize::MAX, 3)
                .checked_num_params()
                .is_none()
        );
    }

    #[test]
    fn init_is_seeded_and_bounded() {
        let spec = ModelSpec::mlp(8, vec![5], 3);
        let a = init_params(&spec, 7);
        assert_eq!(a, init_params(&spec, 7));
        assert_ne!(a, init_params(&spec, 8));
        assert_eq!(a.len(), spec.num_params());
        let b1 = (6.0f32 / 8.0).sqrt();
        assert!(a[..40].iter().all(|w| w.abs() <= b1));
        assert!(a[40..45].iter().all(|b| *b == 0.0));
        assert!(
            init_params(&ModelSpec::logreg(4, 2), 1)
                .iter()
                .all(|w| *w == 0.0)
        );
    }
}
