//! fedledger-privacy: the differential-privacy building blocks of fedledger.
//!
//! Pure logic, no I/O, no async, no network. Its randomness comes from a cryptographic
//! generator it is handed (production: `ChaCha20Rng` seeded from the operating system; tests hand
//! it a seeded one).
//!
//! In reading order:
//! - [`noise`]: exact discrete Gaussian noise on a `2^k` grid, safe on real floating point
//!   ([`SecureGaussian`]), with its soundness argument;
//! - [`accounting`]: what both accountants speak: the mechanism ([`PoissonGaussian`]), the
//!   guarantee ([`EpsilonReport`]), which accountant ([`AccountantKind`]) and the [`Accountant`]
//!   trait (compose runs, ask for epsilon);
//! - [`rdp`]: Renyi-DP accounting of the Poisson-subsampled Gaussian mechanism (exact
//!   fractional orders by default, or dp_accounting 0.6's figures) and the `(epsilon, delta)`
//!   conversion ([`RdpAccountant`]);
//! - [`pld`]: the tighter privacy-loss-distribution accountant of the same mechanism
//!   (pessimistic discretisation, FFT composition, add and remove directions), with its
//!   soundness argument ([`PldAccountant`]);
//! - [`accountant`]: either accountant by its kind ([`accountant_for`]), the epsilon of a run or
//!   a history ([`epsilon_for`], [`accountant::epsilon_of_history`]) and the inverse planner
//!   ([`noise_multiplier_for`]);
//! - [`clip`]: L2 clipping whose result is really inside the ball;
//! - [`budget`]: hard budgets and the cost of the next round as the increase of the cumulative
//!   epsilon;
//! - [`spend`]: [`PrivacySpend`], the cost of one release as participant, coordinator and ledger
//!   see it;
//! - [`fedavg`]: participant-level DP pieces for the coordinator's DP-FedAvg wrapper (aggregate
//!   noise, adaptive clipping, accounting);
//! - [`error`]: the crate's error type [`PrivacyError`].
//!
//! Imports point one way: `error` at the bottom; `accounting` (beside `clip` and `noise`); `rdp`
//! and `pld`, which never import each other (beside `spend`); `accountant`; then `budget` and
//! `fedavg` (the `layers privacy/src` block of ARCHITECTURE.md, checked by a test).
//!
//! One DP-SGD step and its budget check, as the participant does it (production seeds the
//! generator from the operating system, e.g. `ChaCha20Rng::try_from_rng(&mut rand::rngs::SysRng)`;
//! this crate never does I/O itself):
//!
//! ```
//! use chacha20::ChaCha20Rng;
//! use fedledger_privacy::{Budget, PoissonGaussian, SecureGaussian, clip_l2};
//! use rand_core::SeedableRng;
//!
//! let (clip, noise_multiplier) = (1.0, 1.1);
//! let mut sum = vec![0.0f32; 4];
//! for mut grad in [vec![3.0f32, 0.0, 4.0, 0.0], vec![0.1, 0.2, 0.0, 0.0]] {
//!     clip_l2(&mut grad, clip)?; // per-example clipping
//!     sum.iter_mut().zip(&grad).for_each(|(s, g)| *s += g);
//! }
//! let noise = SecureGaussian::new(noise_multiplier * clip, None)?;
//! let mut rng = ChaCha20Rng::seed_from_u64(7);
//! noise.add_noise_f32(&mut sum, &mut rng)?;
//! // Account with the multiplier that includes the grid-rounding charge.
//! let z = noise.effective_noise_multiplier(clip, sum.len());
//! let budget = Budget::new(8.0, 1e-5)?;
//! let next = PoissonGaussian { noise_multiplier: z, sampling_rate: 0.01, steps: 100 };
//! let cost = budget.admit(&[], &next)?; // Err(BudgetExhausted { .. }) if over the limit
//! assert!(cost.epsilon_after <= 8.0 && cost.increase == cost.epsilon_after);
//! # Ok::<(), fedledger_privacy::PrivacyError>(())
//! ```

pub mod accountant;
pub mod accounting;
pub mod budget;
pub mod clip;
pub mod error;
pub mod fedavg;
pub mod noise;
pub mod pld;
pub mod rdp;
pub mod spend;

pub use accountant::{accountant_for, epsilon_for, noise_multiplier_for};
pub use accounting::{Accountant, AccountantKind, EpsilonReport, PoissonGaussian};
pub use budget::{Budget, RoundCost};
pub use clip::{clip_factor, clip_l2, l2_norm};
pub use error::PrivacyError;
pub use fedavg::{AdaptiveClip, AdaptiveClipStep, add_aggregate_noise, dp_fedavg_epsilon};
pub use noise::{LatticeNoise, SecureGaussian};
pub use pld::PldAccountant;
pub use rdp::RdpAccountant;
pub use spend::PrivacySpend;
