//! The models in burn: dense layers held as plain tensors on the CPU `flex` backend, the
//! per-example losses, and the two gradient computations of a training step (the batch-mean
//! gradient, and the per-example-clipped gradient sum of DP-SGD).

use burn::prelude::*;
use burn::tensor::activation::{log_sigmoid, log_softmax, relu};
use burn::tensor::module::linear;

use crate::{data::Dataset, error::ModelError, spec::ModelSpec};

/// One dense layer: `z = a W + b` with `W: [in, out]`, `b: [out]`.
#[derive(Clone, Debug)]
pub(crate) struct Dense {
    pub(crate) w: Tensor<2>,
    pub(crate) b: Tensor<1>,
}

/// A model as a stack of dense layers with ReLU between them. Tensors live on the inner (non
/// autodiff) device; each step lifts them into the autodiff graph as needed.
#[derive(Clone, Debug)]
pub(crate) struct Net {
    pub(crate) spec: ModelSpec,
    pub(crate) device: Device,
    pub(crate) layers: Vec<Dense>,
}

/// Result of the DP-SGD gradient computation, still as tensors.
pub(crate) struct ClippedSum {
    /// Clipped gradient sum per layer: (dW, db).
    pub(crate) layers: Vec<(Tensor<2>, Tensor<1>)>,
    /// Unclipped per-example gradient norms.
    pub(crate) norms: Vec<f64>,
}

fn data_vec(t: Tensor<2>) -> Result<Vec<f32>, ModelError> {
    t.into_data()
        .try_into_vec::<f32>()
        .map_err(|e| ModelError::Tensor(format!("{e:?}")))
}

fn data_vec1(t: Tensor<1>) -> Result<Vec<f32>, ModelError> {
    t.into_data()
        .try_into_vec::<f32>()
        .map_err(|e| ModelError::Tensor(format!("{e:?}")))
}

/// The CPU device with autodiff all training runs on.
pub(crate) fn train_device() -> Device {
    Device::flex().autodiff()
}

impl Net {
    /// Builds the layers from a flat vector (checked by the caller).
    pub(crate) fn from_flat(spec: &ModelSpec, params: &[f32]) -> Self {
        let device = train_device();
        let inner = device.clone().inner();
        let mut off = 0;
        let layers = spec
            .layer_dims()
            .into_iter()
            .map(|(i, o)| {
                let w = TensorData::new(params[off..off + i * o].to_vec(), [i, o]);
                let b = TensorData::new(params[off + i * o..off + i * o + o].to_vec(), [o]);
                off += i * o + o;
                Dense {
                    w: Tensor::from_data(w, &inner),
                    b: Tensor::from_data(b, &inner),
                }
            })
            .collect();
        Net {
            spec: spec.clone(),
            device,
            layers,
        }
    }

    /// The flat parameter vector: per layer, W row-major then b.
    pub(crate) fn to_flat(&self) -> Result<Vec<f32>, ModelError> {
        flatten(self.layers.iter().map(|l| (l.w.clone(), l.b.clone())))
    }

    /// Features and targets of the given rows as autodiff constants: `x: [B, d]` and the target
    /// `[B, 1]` (binary, 0/1) or `[B, K]` (one-hot).
    pub(crate) fn batch(&self, data: &Dataset, rows: &[usize]) -> (Tensor<2>, Tensor<2>) {
        let d = self.spec.features;
        let k = self.spec.outputs();
        let mut x = Vec::with_capacity(rows.len() * d);
        let mut t = vec![0f32; rows.len() * k];
        for (r, &i) in rows.iter().enumerate() {
            x.extend_from_slice(data.row(i));
            let y = data.y[i] as usize;
            if k == 1 {
                t[r] = y as f32;
            } else {
                t[r * k + y] = 1.0;
            }
        }
        let b = rows.len();
        (
            Tensor::from_data(TensorData::new(x, [b, d]), &self.device),
            Tensor::from_data(TensorData::new(t, [b, k]), &self.device),
        )
    }

    /// burn forward pass without autodiff: logits `[B, outputs]`.
    pub(crate) fn logits(&self, x: Tensor<2>) -> Tensor<2> {
        let mut h = x.inner();
        let last = self.layers.len() - 1;
        for (l, layer) in self.layers.iter().enumerate() {
            h = linear(h, layer.w.clone(), Some(layer.b.clone()));
            if l < last {
                h = relu(h);
            }
        }
        h
    }

    /// Gradient of the batch-mean loss (one forward, one backward), per layer.
    pub(crate) fn mean_gradient(
        &self,
        x: Tensor<2>,
        target: Tensor<2>,
    ) -> Result<Vec<(Tensor<2>, Tensor<1>)>, ModelError> {
        let leaves: Vec<(Tensor<2>, Tensor<1>)> = self
            .layers
            .iter()
            .map(|l| {
                (
                    l.w.clone().autodiff().require_grad(),
                    l.b.clone().autodiff().require_grad(),
                )
            })
            .collect();
        let mut h = x;
        for (l, (w, b)) in leaves.iter().enumerate() {
            h = linear(h, w.clone(), Some(b.clone()));
            if l + 1 < leaves.len() {
                h = relu(h);
            }
        }
        let mut grads = per_example_loss(h, target).mean().backward();
        leaves
            .iter()
            .map(|(w, b)| {
                let gw = w.grad_remove(&mut grads);
                let gb = b.grad_remove(&mut grads);
                gw.zip(gb)
                    .ok_or_else(|| ModelError::Tensor("burn returned no parameter gradient".into()))
            })
            .collect()
    }

    /// Sum over the batch of per-example gradients, each clipped to L2 norm `clip`, without
    /// materialising per-example gradients.
    ///
    /// A zero "probe" `p_l` requiring grad is added to each layer's pre-activation
    /// `z_l = a_{l-1} W_l + b_l + p_l`. One backward pass of `sum_i loss_i` gives
    /// `D_l = dL/dp_l`, whose row `i` is example `i`'s gradient w.r.t. `z_l` (only example `i`'s
    /// loss depends on row `i`). Example `i`'s gradient for layer `l` is the outer product
    /// `a_{l-1,i} (x) d_{l,i}` for `W_l` and `d_{l,i}` for `b_l`, so its squared norm is
    /// `sum_l (||a_{l-1,i}||^2 + 1) ||d_{l,i}||^2` and, with `c_i = min(1, clip / norm_i)`, the
    /// clipped sum is `A_{l-1}^T (c * D_l)` and `sum_i c_i d_{l,i}`: one matrix product per layer,
    /// the same work a plain backward pass spends on the weight gradients. Parameters enter the
    /// graph as constants, so the backward pass computes no unclipped weight gradients.
    pub(crate) fn clipped_sum(
        &self,
        x: Tensor<2>,
        target: Tensor<2>,
        clip: f64,
    ) -> Result<ClippedSum, ModelError> {
        let bsz = x.dims()[0];
        let inner = self.device.clone().inner();
        if bsz == 0 {
            let layers = self
                .layers
                .iter()
                .map(|l| (l.w.clone().zeros_like(), l.b.clone().zeros_like()))
                .collect();
            return Ok(ClippedSum {
                layers,
                norms: Vec::new(),
            });
        }
        let n_layers = self.layers.len();
        let mut inputs: Vec<Tensor<2>> = Vec::with_capacity(n_layers);
        let mut probes: Vec<Tensor<2>> = Vec::with_capacity(n_layers);
        let mut h = x;
        for (l, layer) in self.layers.iter().enumerate() {
            let out = layer.b.dims()[0];
            let probe = Tensor::<2>::zeros([bsz, out], &self.device).require_grad();
            inputs.push(h.clone().inner());
            h = linear(
                h,
                layer.w.clone().autodiff(),
                Some(layer.b.clone().autodiff()),
            ) + probe.clone();
            probes.push(probe);
            if l + 1 < n_layers {
                h = relu(h);
            }
        }
        let mut grads = per_example_loss(h, target).sum().backward();
        let mut douts = Vec::with_capacity(n_layers);
        for p in &probes {
            douts.push(
                p.grad_remove(&mut grads)
                    .ok_or_else(|| ModelError::Tensor("burn returned no probe gradient".into()))?,
            );
        }
        // per-example squared norms, [B, 1]
        let mut norm2 = Tensor::<2>::zeros([bsz, 1], &inner);
        for (a, d) in inputs.iter().zip(&douts) {
            let a2 = a.clone().square().sum_dim(1).add_scalar(1.0);
            let d2 = d.clone().square().sum_dim(1);
            norm2 = norm2 + a2 * d2;
        }
        // A non-finite squared norm (NaN or infinite entries, or an overflow) marks an example
        // whose gradient cannot be clipped: it counts as zero. (Checked before `max`, which
        // would turn NaN into 0.)
        let norm2 = data_vec(norm2)?;
        let bad: Vec<bool> = norm2.iter().map(|v| !v.is_finite()).collect();
        let norms: Vec<f64> = norm2
            .iter()
            .map(|&v| {
                if v.is_finite() {
                    f64::from(v.max(0.0)).sqrt()
                } else {
                    f64::INFINITY
                }
            })
            .collect();
        let scale: Vec<f32> = norms
            .iter()
            .zip(&bad)
            .map(|(&n, &b)| if b { 0.0 } else { clip_factor(n, clip) as f32 })
            .collect();
        let (inputs, douts) = if bad.contains(&true) {
            // Zero scaling is not enough (0 * inf is NaN): zero the example's rows outright.
            (
                zero_rows(inputs, &bad, &inner)?,
                zero_rows(douts, &bad, &inner)?,
            )
        } else {
            (inputs, douts)
        };
        let c = Tensor::<2>::from_data(TensorData::new(scale, [bsz, 1]), &inner);
        let layers = inputs
            .into_iter()
            .zip(douts)
            .map(|(a, d)| {
                let cd = d * c.clone();
                let out = cd.dims()[1];
                let gw = a.transpose().matmul(cd.clone());
                let gb = cd.sum_dim(0).reshape([out]);
                (gw, gb)
            })
            .collect();
        Ok(ClippedSum { layers, norms })
    }

    /// `W_l -= lr * G_l`, `b_l -= lr * g_l`.
    pub(crate) fn apply_step(&mut self, grads: Vec<(Tensor<2>, Tensor<1>)>, lr: f64) {
        for (layer, (gw, gb)) in self.layers.iter_mut().zip(grads) {
            layer.w = layer.w.clone() - gw.mul_scalar(lr);
            layer.b = layer.b.clone() - gb.mul_scalar(lr);
        }
    }

    /// Per-layer gradients from a flat vector in the parameter layout (on the inner device).
    pub(crate) fn unflatten(&self, flat: Vec<f32>) -> Vec<(Tensor<2>, Tensor<1>)> {
        let inner = self.device.clone().inner();
        let mut off = 0;
        self.spec
            .layer_dims()
            .into_iter()
            .map(|(i, o)| {
                let w = TensorData::new(flat[off..off + i * o].to_vec(), [i, o]);
                let b = TensorData::new(flat[off + i * o..off + i * o + o].to_vec(), [o]);
                off += i * o + o;
                (Tensor::from_data(w, &inner), Tensor::from_data(b, &inner))
            })
            .collect()
    }
}

/// The same `[B, w]` tensors with the rows marked in `bad` set to zero (on the inner device).
fn zero_rows(
    tensors: Vec<Tensor<2>>,
    bad: &[bool],
    inner: &Device,
) -> Result<Vec<Tensor<2>>, ModelError> {
    tensors
        .into_iter()
        .map(|t| {
            let [rows, width] = t.dims();
            let mut v = data_vec(t)?;
            for (r, row) in v.chunks_mut(width.max(1)).enumerate().take(rows) {
                if bad.get(r).copied().unwrap_or(false) {
                    row.fill(0.0);
                }
            }
            Ok(Tensor::from_data(TensorData::new(v, [rows, width]), inner))
        })
        .collect()
}

/// `min(1, clip / norm)`, 1 for a zero gradient.
pub(crate) fn clip_factor(norm: f64, clip: f64) -> f64 {
    if norm > clip { clip / norm } else { 1.0 }
}

/// Flat vector of per-layer tensors in the parameter layout.
pub(crate) fn flatten(
    layers: impl IntoIterator<Item = (Tensor<2>, Tensor<1>)>,
) -> Result<Vec<f32>, ModelError> {
    let mut out = Vec::new();
    for (w, b) in layers {
        out.extend(data_vec(w)?);
        out.extend(data_vec1(b)?);
    }
    Ok(out)
}

/// Per-example cross-entropy `[B, 1]`: binary with logits (`[B, 1]` logits, 0/1 targets), or
/// softmax (`[B, K]` logits, one-hot targets).
fn per_example_loss(z: Tensor<2>, target: Tensor<2>) -> Tensor<2> {
    if z.dims()[1] == 1 {
        let not_t = target.clone().neg().add_scalar(1.0);
        (target * log_sigmoid(z.clone()) + not_t * log_sigmoid(z.neg())).neg()
    } else {
        (target * log_softmax(z, 1)).sum_dim(1).neg()
    }
}
