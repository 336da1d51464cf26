//! Local training: plain minibatch SGD, and DP-SGD with Poisson sampling, per-example clipping
//! and Gaussian noise.

use chacha20::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::net::{Net, flatten};
use crate::{data::Dataset, error::ModelError, spec::ModelSpec};

/// Hyper-parameters of one local training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Passes over the data (DP-SGD: expected passes, see [`train`]).
    pub epochs: usize,
    /// Minibatch size (DP-SGD: expected batch size, so the sampling rate is `batch_size / n`).
    pub batch_size: usize,
    /// SGD step size.
    pub learning_rate: f64,
    /// Seed of the minibatch shuffle in non-private training (unused by DP-SGD, whose sampling
    /// comes from the caller's generator).
    pub seed: u64,
    /// `Some` to train with DP-SGD.
    pub dp: Option<DpSgdConfig>,
    /// DP-SGD only: the number of steps, when a plan fixes it (`None`: one schedule per epoch,
    /// see [`TrainConfig::dp_schedule`]). Ignored by non-private training.
    #[serde(default)]
    pub steps: Option<u64>,
}

/// DP-SGD settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DpSgdConfig {
    /// Per-example gradient L2 bound `C`.
    pub clip_norm: f64,
    /// Noise multiplier `sigma`: the summed clipped gradient gets N(0, (sigma * C)^2) noise.
    pub noise_multiplier: f64,
}

/// Source of the Gaussian noise DP-SGD adds; the participant plugs in a secure sampler.
pub trait GradientNoise {
    /// Adds independent N(0, std_dev^2) noise to every value. Called once per DP-SGD step with
    /// the whole flat summed clipped gradient (parameter layout, always finite) and
    /// `std_dev = sigma * C > 0` (never called when `sigma = 0`). An error stops training
    /// (never a panic: a source that cannot add noise must not leave a step without it).
    fn add_gaussian(&mut self, values: &mut [f32], std_dev: f64) -> Result<(), ModelError>;
}

/// What [`train`] did; `steps` and `sampling_rate` are what a privacy accountant needs.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainOutcome {
    /// The locally trained parameters (the update to send is `params - global`).
    pub params: Vec<f32>,
    /// SGD steps taken.
    pub steps: u64,
    /// Poisson sampling rate `q` of DP-SGD; for non-private training `min(1, batch_size / n)`.
    pub sampling_rate: f64,
    /// Rows in the local data set.
    pub examples: usize,
}

/// Clipped gradient sum of one batch, as computed inside a DP-SGD step (before noise).
#[derive(Clone, Debug, PartialEq)]
pub struct ClippedGradients {
    /// `sum_i min(1, C / ||g_i||) g_i` in the flat parameter layout.
    pub sum: Vec<f32>,
    /// `||g_i||`, each example's unclipped gradient norm, in batch order.
    pub norms: Vec<f64>,
}

impl TrainConfig {
    /// The DP-SGD schedule on `n` rows, exactly as [`train`] follows it: the Poisson sampling
    /// rate `q = min(1, batch_size / n)` and the number of steps, `steps` when set, else
    /// [`DpSgdConfig::schedule`]'s `epochs * max(1, round(n / batch_size))`.
    pub fn dp_schedule(&self, n: usize) -> (f64, u64) {
        let (q, per_epochs) = DpSgdConfig::schedule(n, self.batch_size, self.epochs);
        match self.steps {
            Some(steps) if q > 0.0 => (q, steps),
            _ => (q, per_epochs),
        }
    }

    fn validate(&self) -> Result<(), ModelError> {
        let bad = |reason: String| Err(ModelError::InvalidConfig { reason });
        if self.batch_size == 0 {
            return bad("batch_size = 0".into());
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad(format!(
                "learning_rate = {}, need a finite value > 0",
                self.learning_rate
            ));
        }
        if let Some(dp) = &self.dp {
            dp.validate()?;
        }
        Ok(())
    }
}

impl DpSgdConfig {
    fn validate(&self) -> Result<(), ModelError> {
        let bad = |reason: String| Err(ModelError::InvalidConfig { reason });
        if !(self.clip_norm.is_finite() && self.clip_norm > 0.0) {
            return bad(format!(
                "clip_norm = {}, need a finite value > 0",
                self.clip_norm
            ));
        }
        if !(self.noise_multiplier.is_finite() && self.noise_multiplier >= 0.0) {
            return bad(format!(
                "noise_multiplier = {}, need a finite value >= 0",
                self.noise_multiplier
            ));
        }
        Ok(())
    }

    /// Poisson sampling rate and number of steps for `n` rows: `q = min(1, batch_size / n)` and
    /// `epochs * max(1, round(n / batch_size))` steps.
    pub fn schedule(n: usize, batch_size: usize, epochs: usize) -> (f64, u64) {
        if n == 0 || batch_size == 0 {
            return (0.0, 0);
        }
        let q = (batch_size as f64 / n as f64).min(1.0);
        let per_epoch = ((n as f64 / batch_size as f64).round() as u64).max(1);
        (q, epochs as u64 * per_epoch)
    }
}

/// A model being trained: parameters as burn tensors on the CPU `flex` backend with autodiff.
///
/// [`train`] drives it; it is public so benchmarks and tests can time or inspect single steps.
#[derive(Clone, Debug)]
pub struct Trainer {
    net: Net,
    learning_rate: f64,
}

impl Trainer {
    /// Loads `params` (flat layout) into burn.
    pub fn new(spec: &ModelSpec, params: &[f32], learning_rate: f64) -> Result<Self, ModelError> {
        spec.check_params(params)?;
        Ok(Self {
            net: Net::from_flat(spec, params),
            learning_rate,
        })
    }

    /// The model spec.
    pub fn spec(&self) -> &ModelSpec {
        &self.net.spec
    }

    /// The current parameters, flat layout.
    pub fn params(&self) -> Result<Vec<f32>, ModelError> {
        self.net.to_flat()
    }

    /// burn's forward pass: logits of the given rows, `rows.len() x outputs` row-major.
    pub fn logits(&self, data: &Dataset, rows: &[usize]) -> Result<Vec<f32>, ModelError> {
        self.check_rows(data, rows)?;
        let (x, _) = self.net.batch(data, rows);
        let z = self.net.logits(x);
        z.into_data()
            .try_into_vec::<f32>()
            .map_err(|e| ModelError::Tensor(format!("{e:?}")))
    }

    /// Gradient of the mean cross-entropy over `rows` (flat layout). With one row, this is that
    /// example's own gradient.
    pub fn gradient(&self, data: &Dataset, rows: &[usize]) -> Result<Vec<f32>, ModelError> {
        self.check_rows(data, rows)?;
        if rows.is_empty() {
            return Err(ModelError::EmptyData {
                what: "a gradient needs at least one row",
            });
        }
        let (x, t) = self.net.batch(data, rows);
        flatten(self.net.mean_gradient(x, t)?)
    }

    /// The per-example-clipped gradient sum of `rows` (the DP-SGD step before noise), and each
    /// example's gradient norm. An example whose gradient is not finite (or whose norm
    /// overflows) contributes zero and its norm is reported as infinite: the sum's sensitivity
    /// stays `clip_norm` and training goes on, whatever the data.
    pub fn clipped_gradient_sum(
        &self,
        data: &Dataset,
        rows: &[usize],
        clip_norm: f64,
    ) -> Result<ClippedGradients, ModelError> {
        self.check_rows(data, rows)?;
        if !(clip_norm.is_finite() && clip_norm > 0.0) {
            return Err(ModelError::InvalidConfig {
                reason: format!("clip_norm = {clip_norm}"),
            });
        }
        let (x, t) = self.net.batch(data, rows);
        let cs = self.net.clipped_sum(x, t, clip_norm)?;
        Ok(ClippedGradients {
            sum: flatten(cs.layers)?,
            norms: cs.norms,
        })
    }

    /// One plain SGD step on the mean loss over `rows` (no-op for no rows).
    pub fn sgd_step(&mut self, data: &Dataset, rows: &[usize]) -> Result<(), ModelError> {
        self.check_rows(data, rows)?;
        if rows.is_empty() {
            return Ok(());
        }
        let (x, t) = self.net.batch(data, rows);
        let grads = self.net.mean_gradient(x, t)?;
        self.net.apply_step(grads, self.learning_rate);
        Ok(())
    }

    /// One DP-SGD step on the sampled `rows`: clip each example's gradient to `dp.clip_norm`
    /// (a non-finite one counts as zero),
    /// sum, add N(0, (sigma C)^2) noise to every coordinate of the sum, divide by
    /// `expected_batch_size` (`q n`, not the realised batch size, which would leak it), step.
    /// An empty batch takes a noise-only step.
    pub fn dp_sgd_step(
        &mut self,
        data: &Dataset,
        rows: &[usize],
        dp: &DpSgdConfig,
        expected_batch_size: f64,
        noise: &mut dyn GradientNoise,
    ) -> Result<(), ModelError> {
        self.check_rows(data, rows)?;
        dp.validate()?;
        if !(expected_batch_size.is_finite() && expected_batch_size > 0.0) {
            return Err(ModelError::InvalidConfig {
                reason: format!("expected batch size {expected_batch_size}"),
            });
        }
        let (x, t) = self.net.batch(data, rows);
        let cs = self.net.clipped_sum(x, t, dp.clip_norm)?;
        let mut g = flatten(cs.layers)?;
        let std_dev = dp.noise_multiplier * dp.clip_norm;
        if std_dev > 0.0 {
            noise.add_gaussian(&mut g, std_dev)?;
        }
        let inv = (1.0 / expected_batch_size) as f32;
        g.iter_mut().for_each(|v| *v *= inv);
        let grads = self.net.unflatten(g);
        self.net.apply_step(grads, self.learning_rate);
        Ok(())
    }

    fn check_rows(&self, data: &Dataset, rows: &[usize]) -> Result<(), ModelError> {
        let spec = &self.net.spec;
        if data.n_features() != spec.features || data.x.len() != data.len() * spec.features {
            return Err(ModelError::FeatureCount {
                expected: spec.features,
                actual: data.n_features(),
            });
        }
        for &r in rows {
            let Some(&label) = data.y.get(r) else {
                return Err(ModelError::InvalidConfig {
                    reason: format!("row {r} out of range for a data set of {} rows", data.len()),
                });
            };
            if label as usize >= spec.classes {
                return Err(ModelError::LabelOutOfRange {
                    row: r,
                    label,
                    classes: spec.classes,
                });
            }
        }
        Ok(())
    }
}

/// Uniform integer in `0..n` (n > 0) by rejection, no modulo bias.
fn below<R: Rng + ?Sized>(rng: &mut R, n: usize) -> usize {
    let n = n as u64;
    let zone = u64::MAX - (u64::MAX % n);
    loop {
        let v = rng.next_u64();
        if v < zone {
            return (v % n) as usize;
        }
    }
}

/// Uniform `f64` in `[0, 1)` with 53 random bits.
fn unit<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Poisson subsample: each of `0..n` independently with probability `q`.
pub fn poisson_sample<R: Rng + ?Sized>(rng: &mut R, n: usize, q: f64) -> Vec<usize> {
    (0..n).filter(|_| unit(rng) < q).collect()
}

/// Trains locally from `global` and returns the new parameters.
///
/// * Non-private (`cfg.dp == None`): `epochs` passes of minibatch SGD on the mean cross-entropy;
///   each epoch shuffles the rows with `ChaCha20Rng::seed_from_u64(cfg.seed)` (one generator for
///   the run) and takes `ceil(n / batch_size)` steps (the last batch may be smaller). `rng` is
///   not used, so the result depends only on the inputs.
/// * DP-SGD (`cfg.dp == Some`): `q = min(1, batch_size / n)` and `cfg.steps` steps, or
///   `epochs * max(1, round(n / batch_size))` when it is `None` ([`TrainConfig::dp_schedule`]);
///   each step draws a Poisson sample (each row
///   independently with probability `q`, 53-bit uniforms from `rng`, which should be a
///   cryptographic generator), clips per-example gradients to `C`, adds N(0, (sigma C)^2) noise
///   from `noise` to the sum, divides by `q n` and steps. `noise` is required.
///
/// `rng` is generic over [`rand_core::Rng`] (`?Sized`, so `&mut dyn Rng` works too).
pub fn train<R: Rng + ?Sized>(
    spec: &ModelSpec,
    global: &[f32],
    data: &Dataset,
    cfg: &TrainConfig,
    rng: &mut R,
    noise: Option<&mut dyn GradientNoise>,
) -> Result<TrainOutcome, ModelError> {
    cfg.validate()?;
    spec.check_params(global)?;
    data.check_fits(spec.features, spec.classes)?;
    let n = data.len();
    if n == 0 {
        return Err(ModelError::EmptyData {
            what: "training needs at least one row",
        });
    }
    let mut trainer = Trainer::new(spec, global, cfg.learning_rate)?;
    let mut steps = 0u64;
    let sampling_rate;
    match &cfg.dp {
        None => {
            sampling_rate = (cfg.batch_size as f64 / n as f64).min(1.0);
            let mut shuffle = ChaCha20Rng::seed_from_u64(cfg.seed);
            let mut order: Vec<usize> = (0..n).collect();
            for _ in 0..cfg.epochs {
                for i in (1..n).rev() {
                    order.swap(i, below(&mut shuffle, i + 1));
                }
                for batch in order.chunks(cfg.batch_size) {
                    trainer.sgd_step(data, batch)?;
                    steps += 1;
                }
            }
        }
        Some(dp) => {
            let noise = noise.ok_or(ModelError::MissingNoise)?;
            let (q, total) = cfg.dp_schedule(n);
            sampling_rate = q;
            let expected = q * n as f64;
            for _ in 0..total {
                let rows = poisson_sample(rng, n, q);
                trainer.dp_sgd_step(data, &rows, dp, expected, &mut *noise)?;
                steps += 1;
            }
        }
    }
    let params = trainer.params()?;
    if let Some((index, &value)) = params.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(ModelError::Diverged {
            index,
            value,
            step: steps,
        });
    }
    Ok(TrainOutcome {
        params,
        steps,
        sampling_rate,
        examples: n,
    })
}
