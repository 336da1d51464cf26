//! fedledger's models: what a hospital trains and the coordinator evaluates.
//!
//! * [`ModelSpec`]: logistic regression (binary with one logit and a sigmoid, or multinomial
//!   with a softmax when `classes > 2`) and MLPs with ReLU hidden layers of configurable widths.
//! * Parameters travel as one flat `Vec<f32>` (see the layout below); [`init_params`] gives
//!   deterministic seeded starting points.
//! * [`Dataset`]: CSV with a header row and a named integer label column;
//!   [`Standardiser`] scales features from a site's own statistics or operator-given values.
//! * [`evaluate`] / [`predict_proba`]: plain-Rust inference and metrics (accuracy, log-loss, ROC
//!   AUC), deterministic and fast enough for Shapley valuation and replay; no burn involved.
//! * [`train`]: local SGD or DP-SGD in burn 0.22 on the CPU `flex` backend with autodiff.
//!
//! # Flat parameter layout
//!
//! Part of the wire protocol and of the ledger (update digests are over these bytes), so it is
//! stable: for each dense layer from the input to the output, the weight matrix as `[in, out]`
//! row-major (`W[k][j]`, input `k`, output `j`, at offset `k * out + j`), then the bias `[out]`.
//! Layer widths are `features, hidden..., outputs` with `outputs = 1` for two classes and
//! `classes` otherwise, so `num_params = sum(in * out + out)`. Example: binary logistic
//! regression on 30 features is `w_0 .. w_29, b` (31 values); an MLP 64-[64]-10 is
//! `W1 (64x64), b1 (64), W2 (64x10), b2 (10)`. A layer computes `z = a W + b`; hidden layers
//! apply ReLU; the output is a sigmoid (binary) or softmax. The loss is the cross-entropy.
//!
//! # DP-SGD and why it is sound
//!
//! With `TrainConfig::dp` set, [`train`] runs DP-SGD (Abadi et al. 2016) in the form that the
//! Renyi-DP accountant for the Poisson-subsampled Gaussian mechanism assumes:
//!
//! 1. **Poisson sampling.** Each step includes every row independently with probability
//!    `q = batch_size / n` (capped at 1), drawn from the caller's generator (a cryptographic one
//!    in production). The batch size is random; an empty batch still takes a (noise-only)
//!    step. There are `epochs * max(1, round(n / batch_size))` steps; [`TrainOutcome`] reports
//!    `steps` and `sampling_rate` for the accountant.
//! 2. **Per-example clipping.** Each example's full gradient (all layers together) is scaled by
//!    `min(1, C / ||g_i||)`, so adding or removing one row changes the summed clipped gradient
//!    by at most `C` in L2: the sensitivity of the sum is `C`. The per-example norms are exact
//!    (not estimated): for a dense layer the per-example gradient is the outer product of the
//!    layer's input and the example's output gradient, whose norm factorises; see
//!    [`Trainer::clipped_gradient_sum`]. They are obtained from one batched backward pass, never
//!    from a loop over examples.
//! 3. **Noise on the sum.** Independent N(0, (sigma C)^2) noise is added to every coordinate of
//!    the summed clipped gradient through the [`GradientNoise`] the caller provides (the privacy
//!    crate's secure sampler in production); this is the Gaussian mechanism with noise
//!    multiplier `sigma`.
//! 4. **Normalisation by the expected batch size.** The noisy sum is divided by the constant
//!    `q n`, not by the realised batch size (which would depend on the data and is not
//!    protected). Everything after the noise is post-processing.
//!
//! What is not covered here: the noise is only as good as the [`GradientNoise`] supplied (the
//! sampler must be safe on floating point), computations are `f32`, and the accounting itself
//! lives in the privacy crate.

mod data;
pub mod digest;
mod error;
mod eval;
mod forward;
mod net;
mod spec;
mod train;

pub use data::{Dataset, Standardiser};
pub use error::ModelError;
pub use eval::{Metrics, RowScores, evaluate, evaluate_rows, predict_proba, roc_auc};
pub use spec::{ModelKind, ModelSpec, init_params};
pub use train::{
    ClippedGradients, DpSgdConfig, GradientNoise, TrainConfig, TrainOutcome, Trainer,
    poisson_sample, train,
};
