//! Aggregation: each strategy turns the round's global parameters and accepted updates into the
//! next global parameters. They share one trait so robust alternatives, and the server-side
//! differential-privacy wrapper ([`dp`]), are swapped in without touching the round logic. An
//! aggregation returns what a wrapper did together with the parameters, never through a later
//! call.

pub mod dp;
pub mod history;
pub mod robust;
pub mod strategies;

use chacha20::ChaCha20Rng;

pub use dp::{DpAggregator, federation_epsilon};
pub use robust::{Bulyan, MultiKrum};
pub use strategies::{
    CoordinateMedian, FedAvg, InverseNoiseFedAvg, RandomEffectsFedAvg, TrimmedMean, fedavg,
};

use crate::{
    config::{ServerDpSection, StrategyKind},
    error::CoordinatorError,
    types::{ServerDpReport, WeightedUpdate},
};

/// The result of one aggregation.
#[derive(Clone, Debug)]
pub struct Aggregate {
    /// The next global parameters.
    pub params: Vec<f32>,
    /// What a differential-privacy wrapper did (None for the plain strategies).
    pub server_dp: Option<ServerDpReport>,
    /// Updates a selecting strategy left out of the aggregate (indices into the updates).
    pub excluded: Vec<usize>,
}

impl Aggregate {
    /// Parameters from a strategy without a privacy wrapper.
    pub fn plain(params: Vec<f32>) -> Self {
        Self {
            params,
            server_dp: None,
            excluded: Vec::new(),
        }
    }
}

/// The updates as the valuation game sees them: those the strategy left out of the aggregate
/// count as updates of zeros (`zeros`, at least as long as any delta). With the round's fixed
/// weights a zero update changes no coalition's model, so it is a null player: worth exactly
/// nothing, and paid nothing.
pub fn valuation_views<'a>(
    views: &[WeightedUpdate<'a>],
    excluded: &[usize],
    zeros: &'a [f32],
) -> Vec<WeightedUpdate<'a>> {
    views
        .iter()
        .enumerate()
        .map(|(i, v)| {
            if excluded.contains(&i) {
                WeightedUpdate {
                    delta: &zeros[..v.delta.len()],
                    ..*v
                }
            } else {
                *v
            }
        })
        .collect()
}

/// The flag a contribution carries when the strategy left it out of the aggregate.
pub fn excluded_flag(aggregator: &str) -> String {
    format!("excluded by {aggregator}")
}

/// A server-side aggregation rule.
pub trait Aggregator: Send + Sync {
    /// Short name, recorded with the round.
    fn name(&self) -> &'static str;
    /// The next global parameters. `updates` is non-empty and every delta has `global.len()`
    /// values (the round logic checks both).
    fn aggregate(
        &self,
        global: &[f32],
        updates: &[WeightedUpdate<'_>],
    ) -> Result<Aggregate, CoordinatorError>;

    /// True when the strategy selects updates by comparing them (Multi-Krum, Bulyan), so it
    /// can compare the hospitals' histories instead ([`history`]).
    fn selects(&self) -> bool {
        false
    }

    /// As [`Aggregator::aggregate`], with `compared[i]` (update `i`'s hospital's history, this
    /// update included) standing for update `i` wherever a selecting strategy compares
    /// updates; the aggregate is still made of the updates. Strategies that do not select
    /// ignore `compared`.
    fn aggregate_compared(
        &self,
        global: &[f32],
        updates: &[WeightedUpdate<'_>],
        compared: Option<&[&[f32]]>,
    ) -> Result<Aggregate, CoordinatorError> {
        let _ = compared;
        self.aggregate(global, updates)
    }
}

/// The plain strategy object of `kind`; `byzantine` is the number of Byzantine updates the
/// selecting strategies (Multi-Krum, Bulyan) assume; `step` is the task's learning rate times
/// its clipping norm (the scale of DP-SGD noise in an update, which random-effects weights
/// read).
pub fn strategy(kind: StrategyKind, byzantine: usize, step: f64) -> Box<dyn Aggregator> {
    match kind {
        StrategyKind::Fedavg => Box::new(FedAvg),
        StrategyKind::FedavgInverseNoise => Box::new(InverseNoiseFedAvg),
        StrategyKind::FedavgRandomEffects => Box::new(RandomEffectsFedAvg { step }),
        StrategyKind::Median => Box::new(CoordinateMedian),
        StrategyKind::TrimmedMean => Box::new(TrimmedMean { fraction: 0.1 }),
        StrategyKind::MultiKrum => Box::new(MultiKrum {
            byzantine,
            keep: None,
        }),
        StrategyKind::Bulyan => Box::new(Bulyan { byzantine }),
    }
}

/// The federation's aggregator: the strategy, wrapped in DP-FedAvg when `server_dp` is set
/// (whose noise is drawn from `rng`).
pub fn build(
    kind: StrategyKind,
    byzantine: usize,
    step: f64,
    server_dp: Option<&ServerDpSection>,
    rng: ChaCha20Rng,
) -> Result<Box<dyn Aggregator>, CoordinatorError> {
    Ok(match server_dp {
        Some(dp) => Box::new(DpAggregator::new(strategy(kind, byzantine, step), dp, rng)?),
        None => strategy(kind, byzantine, step),
    })
}
