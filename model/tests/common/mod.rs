//! Helpers shared by the integration tests.
#![allow(dead_code)]

use chacha20::ChaCha20Rng;
use fedledger_model::{Dataset, GradientNoise, ModelError};
use rand_core::{Rng, SeedableRng};

/// Box-Muller normal noise from a seeded ChaCha20: fine for tests, NOT a secure DP sampler.
pub struct SeededNormal(pub ChaCha20Rng);

impl SeededNormal {
    pub fn new(seed: u64) -> Self {
        Self(ChaCha20Rng::seed_from_u64(seed))
    }
    pub fn normal(&mut self) -> f64 {
        let u1 = ((self.0.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (self.0.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

impl GradientNoise for SeededNormal {
    fn add_gaussian(&mut self, values: &mut [f32], std_dev: f64) -> Result<(), ModelError> {
        for v in values {
            *v += (self.normal() * std_dev) as f32;
        }
        Ok(())
    }
}

/// Synthetic data set: n rows, d features ~ N(0, scale^2), labels uniform in 0..classes.
pub fn synthetic(n: usize, d: usize, classes: usize, scale: f64, seed: u64) -> Dataset {
    let mut g = SeededNormal::new(seed);
    let x = (0..n * d).map(|_| (g.normal() * scale) as f32).collect();
    let y = (0..n).map(|_| g.0.next_u32() % classes as u32).collect();
    Dataset {
        feature_names: (0..d).map(|j| format!("f{j}")).collect(),
        label_column: "y".into(),
        x,
        y,
        classes,
    }
}

/// Random parameters ~ N(0, scale^2).
pub fn random_params(len: usize, scale: f64, seed: u64) -> Vec<f32> {
    let mut g = SeededNormal::new(seed);
    (0..len).map(|_| (g.normal() * scale) as f32).collect()
}

pub fn l2(v: &[f32]) -> f64 {
    v.iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt()
}
