//! Shared scenario for the valuation tests and benchmark: a logistic-regression round in plain
//! Rust (sigmoid + log-loss), with hospitals trained from the same global model on disjoint
//! shards. Included by `tests/valuation_estimators.rs` and `benches/valuation.rs` with `#[path]`;
//! the lead's acceptance test on the real breast-cancer scenario can reuse it the same way.

#![allow(dead_code)]

use fedledger_valuation::{LinearCombinationGame, rng_for_seed};
use rand::Rng;

/// Rows of features (row-major) and 0/1 labels.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub x: Vec<f32>,
    pub y: Vec<f32>,
    pub features: usize,
}

impl Dataset {
    pub fn rows(&self) -> usize {
        self.y.len()
    }

    /// The rows `idx` as a new dataset.
    pub fn select(&self, idx: &[usize]) -> Dataset {
        let mut x = Vec::with_capacity(idx.len() * self.features);
        let mut y = Vec::with_capacity(idx.len());
        for &r in idx {
            x.extend_from_slice(&self.x[r * self.features..(r + 1) * self.features]);
            y.push(self.y[r]);
        }
        Dataset {
            x,
            y,
            features: self.features,
        }
    }
}

/// A standard normal draw (Box-Muller) from the stream.
pub fn gaussian(rng: &mut chacha20::ChaCha20Rng) -> f64 {
    let u = |r: &mut chacha20::ChaCha20Rng| ((r.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64;
    let (a, b) = (u(rng), u(rng));
    (-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos()
}

/// Synthetic breast-cancer-like data: 30 correlated standardised features (three latent factors)
/// and labels from a logistic model that a linear classifier separates at about 95%.
pub fn synthetic(seed: u64, rows: usize) -> Dataset {
    let features = 30;
    let mut rng = rng_for_seed(seed ^ 0x5eed_da7a);
    let loadings: Vec<[f64; 3]> = (0..features)
        .map(|_| [gaussian(&mut rng), gaussian(&mut rng), gaussian(&mut rng)])
        .collect();
    let beta: Vec<f64> = (0..3).map(|_| gaussian(&mut rng) * 1.5).collect();
    let mut x = Vec::with_capacity(rows * features);
    let mut y = Vec::with_capacity(rows);
    for _ in 0..rows {
        let f = [gaussian(&mut rng), gaussian(&mut rng), gaussian(&mut rng)];
        for l in &loadings {
            let v = (l[0] * f[0] + l[1] * f[1] + l[2] * f[2]) * 0.6 + 0.6 * gaussian(&mut rng);
            x.push(v as f32);
        }
        let z: f64 = beta.iter().zip(&f).map(|(b, f)| b * f).sum::<f64>() + 0.4;
        let p = 1.0 / (1.0 + (-2.0 * z).exp());
        let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        y.push(if u < p { 1.0 } else { 0.0 });
    }
    Dataset { x, y, features }
}

/// The Wisconsin breast-cancer data vendored in `examples/data/` (569 rows, 30 features,
/// label `malignant`), standardised column by column; `None` if the file is absent.
pub fn breast_cancer() -> Option<Dataset> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/data/breast_cancer.csv"
    );
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    let header = lines.next()?;
    let columns = header.split(',').count();
    let features = columns - 1;
    let mut x = Vec::new();
    let mut y = Vec::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let fields: Vec<f32> = line
            .split(',')
            .map(|f| f.trim().parse().ok())
            .collect::<Option<_>>()?;
        if fields.len() != columns {
            return None;
        }
        x.extend_from_slice(&fields[..features]);
        y.push(fields[features]);
    }
    let rows = y.len();
    for j in 0..features {
        let col = (0..rows).map(|r| f64::from(x[r * features + j]));
        let mean = col.clone().sum::<f64>() / rows as f64;
        let sd = (col.map(|v| (v - mean) * (v - mean)).sum::<f64>() / rows as f64)
            .sqrt()
            .max(1e-12);
        for r in 0..rows {
            x[r * features + j] = ((f64::from(x[r * features + j]) - mean) / sd) as f32;
        }
    }
    Some(Dataset { x, y, features })
}

/// Mean log-loss of the logistic model `params = (weights, bias)` on `data`.
pub fn log_loss(params: &[f32], data: &Dataset) -> f64 {
    let d = data.features;
    let mut total = 0.0f64;
    for (r, &label) in data.y.iter().enumerate() {
        let row = &data.x[r * d..(r + 1) * d];
        let mut z = f64::from(params[d]);
        for (w, x) in params[..d].iter().zip(row) {
            z += f64::from(*w) * f64::from(*x);
        }
        // log(1 + e^z) - y z, computed stably.
        total += z.max(0.0) - f64::from(label) * z + (-z.abs()).exp().ln_1p();
    }
    total / data.rows() as f64
}

/// Accuracy at threshold 0.5.
pub fn accuracy(params: &[f32], data: &Dataset) -> f64 {
    let d = data.features;
    let correct = (0..data.rows())
        .filter(|&r| {
            let row = &data.x[r * d..(r + 1) * d];
            let z: f32 = params[d] + params[..d].iter().zip(row).map(|(w, x)| w * x).sum::<f32>();
            (z > 0.0) == (data.y[r] > 0.5)
        })
        .count();
    correct as f64 / data.rows() as f64
}

/// Local training from `global`: full-batch gradient descent on the log-loss; returns the update
/// (local parameters minus `global`).
pub fn train(global: &[f32], data: &Dataset, epochs: usize, lr: f64) -> Vec<f32> {
    let d = data.features;
    let mut w: Vec<f64> = global.iter().map(|&v| f64::from(v)).collect();
    for _ in 0..epochs {
        let mut grad = vec![0.0f64; d + 1];
        for r in 0..data.rows() {
            let row = &data.x[r * d..(r + 1) * d];
            let z = w[d]
                + w[..d]
                    .iter()
                    .zip(row)
                    .map(|(w, &x)| w * f64::from(x))
                    .sum::<f64>();
            let err = 1.0 / (1.0 + (-z).exp()) - f64::from(data.y[r]);
            for (g, &x) in grad[..d].iter_mut().zip(row) {
                *g += err * f64::from(x);
            }
            grad[d] += err;
        }
        for (w, g) in w.iter_mut().zip(&grad) {
            *w -= lr * g / data.rows() as f64;
        }
    }
    w.iter()
        .zip(global)
        .map(|(&w, &g)| (w - f64::from(g)) as f32)
        .collect()
}

/// One round's inputs.
#[derive(Clone, Debug)]
pub struct Round {
    pub names: Vec<String>,
    pub base: Vec<f32>,
    pub updates: Vec<Vec<f32>>,
    pub counts: Vec<u64>,
    pub validation: Dataset,
}

impl Round {
    /// The design's game, scored by the negative validation log-loss.
    pub fn game(&self) -> LinearCombinationGame<'_, impl Fn(&[f32]) -> f64 + Sync + '_> {
        let refs: Vec<&[f32]> = self.updates.iter().map(Vec::as_slice).collect();
        let validation = &self.validation;
        LinearCombinationGame::new(&self.base, &refs, &self.counts, move |p: &[f32]| {
            -log_loss(p, validation)
        })
        .expect("scenario inputs are consistent")
    }

    pub fn index(&self, name: &str) -> usize {
        self.names
            .iter()
            .position(|n| n == name)
            .expect("known participant")
    }
}

fn flip(data: &Dataset, fraction: f64, rng: &mut chacha20::ChaCha20Rng) -> Dataset {
    let mut out = data.clone();
    for y in &mut out.y {
        let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        if u < fraction {
            *y = 1.0 - *y;
        }
    }
    out
}

fn norm(v: &[f32]) -> f64 {
    v.iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt()
}

/// The eight-hospital scenario of the valuation issue on `data`: a 143-row validation set, then
/// A clean 120 rows, B clean 60, C clean 20, D a copy of B claiming 60, E 60 rows with 30% of
/// labels flipped, F a harmful update (its 60 rows trained then negated), G a zero update claiming
/// 60, H a random update of honest norm claiming 60. `base` is the global model (zeros for the
/// first round). Rows are shuffled by `seed`.
pub fn eight_hospitals(data: &Dataset, seed: u64, base: Option<Vec<f32>>) -> Round {
    let mut rng = rng_for_seed(seed);
    let mut order: Vec<usize> = (0..data.rows()).collect();
    for i in (1..order.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    let mut next = 0;
    let mut take = |n: usize| {
        let rows = data.select(&order[next..next + n]);
        next += n;
        rows
    };
    let validation = take(143);
    let (a, b, c, e, f) = (take(120), take(60), take(20), take(60), take(60));
    let base = base.unwrap_or_else(|| vec![0.0; data.features + 1]);
    let (epochs, lr) = (5, 0.5);
    let ua = train(&base, &a, epochs, lr);
    let ub = train(&base, &b, epochs, lr);
    let uc = train(&base, &c, epochs, lr);
    let ue = train(&base, &flip(&e, 0.3, &mut rng), epochs, lr);
    let uf: Vec<f32> = train(&base, &f, epochs, lr).iter().map(|x| -x).collect();
    let zero = vec![0.0f32; base.len()];
    let random: Vec<f64> = (0..base.len()).map(|_| gaussian(&mut rng)).collect();
    let scale = norm(&ub) / random.iter().map(|x| x * x).sum::<f64>().sqrt();
    let uh: Vec<f32> = random.iter().map(|x| (x * scale) as f32).collect();
    Round {
        names: ["A", "B", "C", "D", "E", "F", "G", "H"]
            .map(String::from)
            .to_vec(),
        base,
        updates: vec![ua, ub.clone(), uc, ub, ue, uf, zero, uh],
        counts: vec![120, 60, 20, 60, 60, 60, 60, 60],
        validation,
    }
}

/// `players` honest hospitals with 5 to 40 rows each of synthetic data (for speed measurements),
/// every fifth one harmful (trained on flipped labels).
pub fn many_hospitals(players: usize, seed: u64) -> Round {
    let mut rng = rng_for_seed(seed ^ 0x0e0e);
    let sizes: Vec<usize> = (0..players)
        .map(|_| 5 + (rng.next_u64() % 36) as usize)
        .collect();
    let data = synthetic(seed, 143 + sizes.iter().sum::<usize>());
    let mut next = 0;
    let mut take = |n: usize| {
        let idx: Vec<usize> = (next..next + n).collect();
        next += n;
        data.select(&idx)
    };
    let validation = take(143);
    let base = vec![0.0f32; data.features + 1];
    let mut updates = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        let shard = take(n);
        let shard = if i % 5 == 4 {
            flip(&shard, 1.0, &mut rng)
        } else {
            shard
        };
        updates.push(train(&base, &shard, 5, 0.5));
    }
    Round {
        names: (0..players).map(|i| format!("h{i:02}")).collect(),
        base,
        updates,
        counts: sizes.iter().map(|&n| n as u64).collect(),
        validation,
    }
}

#[test]
fn logistic_helpers_behave() {
    let data = synthetic(1, 300);
    let zero = vec![0.0f32; 31];
    assert!((log_loss(&zero, &data) - std::f64::consts::LN_2).abs() < 1e-12);
    let update = train(&zero, &data, 20, 0.5);
    assert!(log_loss(&update, &data) < 0.5, "training lowers the loss");
    assert!(accuracy(&update, &data) > 0.8);
    let bc = breast_cancer().expect("examples/data/breast_cancer.csv is vendored");
    assert_eq!((bc.rows(), bc.features), (569, 30));
}
