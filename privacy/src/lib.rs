//! fedledger-privacy: the differential-privacy building blocks of fedledger.
//!
//! Pure logic, no I/O, no async, no network. Its randomness comes from a cryptographic
//! generator it is handed (production: `ChaCha20Rng` seeded from the operating system; tests hand
//! it a seeded one).
//!
//! In reading order:
//! - [`noise`]: exact discrete Gaussian noise on a `2^k` grid, safe on real floating point
//!   ([`SecureGaussian`]), with its soundness argument;
//! - [`accountant`]: Renyi-DP accounting of the Poisson-subsampled Gaussian mechanism, the
//!   `(epsilon, delta)` conversion and the inverse planner;
//! - [`clip`]: L2 clipping whose result is really inside the ball;
//! - [`budget`]: hard budgets and the cost of the next round as the increase of the cumulative
//!   epsilon;
//! - [`fedavg`]: participant-level DP pieces for the coordinator's DP-FedAvg wrapper (aggregate
//!   noise, adaptive clipping, accounting);
//! - [`error`]: the crate's error type [`PrivacyError`].

pub mod accountant;
pub mod budget;
pub mod clip;
pub mod error;
pub mod fedavg;
pub mod noise;

pub use accountant::{
    AccountantKind, EpsilonReport, PoissonGaussian, RdpAccountant, epsilon_for,
    noise_multiplier_for,
};
pub use budget::{Budget, RoundCost};
pub use clip::{clip_factor, clip_l2, l2_norm};
pub use error::PrivacyError;
pub use fedavg::{AdaptiveClip, AdaptiveClipStep, add_aggregate_noise, dp_fedavg_epsilon};
pub use noise::SecureGaussian;
