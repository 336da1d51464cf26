//! The one error type of the crate.

/// What went wrong in a privacy computation.
///
/// Every variant names the offending parameter or value so that a caller can print it as is.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PrivacyError {
    /// A parameter is outside the range where the computation is defined.
    #[error("invalid {name} = {value}: {reason}")]
    InvalidParameter {
        /// Name of the parameter, as in the function signature.
        name: &'static str,
        /// The value that was passed.
        value: f64,
        /// Which range was expected.
        reason: &'static str,
    },
    /// An input vector holds NaN or an infinity; noise is only defined for finite values.
    #[error("non-finite input at index {index}: {value}")]
    NonFiniteInput {
        /// Position of the first non-finite coordinate.
        index: usize,
        /// The coordinate itself (NaN, +inf or -inf).
        value: f64,
    },
    /// The noise scale expressed in grid units is outside what the exact sampler supports.
    #[error(
        "standard deviation {std_dev} on the grid 2^{k} is {grid_units} grid units; \
         the exact sampler supports at most {max} (choose a larger k)"
    )]
    GridTooFine {
        /// The requested standard deviation.
        std_dev: f64,
        /// The requested grid exponent.
        k: i32,
        /// `std_dev / 2^k`.
        grid_units: f64,
        /// Largest supported number of grid units.
        max: f64,
    },
    /// The next round would take the cumulative epsilon over the participant's budget.
    #[error(
        "privacy budget exhausted: spent epsilon {spent}, this round would add {requested}, \
         limit {limit}"
    )]
    BudgetExhausted {
        /// Cumulative epsilon spent before the round.
        spent: f64,
        /// Budget limit on the cumulative epsilon.
        limit: f64,
        /// Increase of the cumulative epsilon the round would cause.
        requested: f64,
    },
    /// An accountant name that is not one of `rdp`, `rdp-dp-accounting`, `pld`.
    #[error("unknown accountant {name:?} (expected \"rdp\", \"rdp-dp-accounting\" or \"pld\")")]
    UnknownAccountant {
        /// The name that was given.
        name: String,
    },
    /// No epsilon could be met: the target is unreachable with any noise multiplier in range.
    #[error("no noise multiplier up to {max_noise_multiplier} reaches epsilon {target_epsilon}")]
    TargetUnreachable {
        /// The requested epsilon.
        target_epsilon: f64,
        /// Largest noise multiplier that was tried.
        max_noise_multiplier: f64,
    },
}
