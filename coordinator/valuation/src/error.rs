//! What can go wrong while valuing a round.

/// Errors of the valuation module.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValuationError {
    /// A game has more players than a coalition mask can hold.
    #[error("{players} players, at most {max} are supported")]
    TooManyPlayers {
        /// Players asked for.
        players: usize,
        /// The limit.
        max: usize,
    },
    /// Exact enumeration was asked for more players than it is configured for.
    #[error("exact enumeration of {players} players refused (configured limit {max})")]
    TooManyForExact {
        /// Players of the game.
        players: usize,
        /// The configured limit.
        max: usize,
    },
    /// The evaluation budget cannot produce any estimate.
    #[error("estimator {estimator} needs at least {needed} evaluations, budget is {budget}")]
    BudgetTooSmall {
        /// Estimator name.
        estimator: &'static str,
        /// The budget given.
        budget: u64,
        /// The least budget that could work (a lower bound for sampling estimators).
        needed: u64,
    },
    /// The utility of a coalition was NaN or infinite.
    #[error("utility of the coalition of players {coalition:?} is not finite ({value})")]
    NonFiniteUtility {
        /// The coalition's members.
        coalition: Vec<usize>,
        /// The value returned.
        value: f64,
    },
    /// A game was built from vectors of different lengths.
    #[error("{what}: length {found}, expected {expected}")]
    LengthMismatch {
        /// Which input.
        what: &'static str,
        /// Its length.
        found: usize,
        /// The length it should have.
        expected: usize,
    },
    /// An input contained a NaN or infinite number.
    #[error("{what} contains a non-finite number")]
    NonFiniteInput {
        /// Which input.
        what: &'static str,
    },
    /// The example counts of a round sum to zero.
    #[error("the example counts of the round sum to zero")]
    NoExamples,
    /// KernelSHAP's weighted normal equations are singular (too few distinct coalitions).
    #[error("kernelshap design is singular with {coalitions} coalitions")]
    SingularDesign {
        /// Coalitions used.
        coalitions: usize,
    },
    /// An estimator name not among `exact`, `gtg`, `kernelshap`, `loo`.
    #[error("unknown estimator {0:?} (expected exact, gtg, kernelshap or loo)")]
    UnknownEstimator(String),
    /// Two participants of a round share a name.
    #[error("participant name {0:?} appears twice")]
    DuplicateName(String),
}
