//! The coordinator's domain errors, and their one translation into gRPC statuses.

use thiserror::Error;

/// Everything that can go wrong while serving a federation. Each variant names what was wrong
/// precisely enough for the participant's operator to act on it.
#[derive(Debug, Error)]
pub enum CoordinatorError {
    #[error("public key {key} is not enrolled in federation {federation}")]
    NotEnrolled { key: String, federation: String },
    #[error("malformed public key: {0}")]
    MalformedKey(String),
    #[error("registration challenge is unknown, already used or expired; ask for a new one")]
    BadChallenge,
    #[error("registration signature does not verify for key {key}")]
    BadRegistrationSignature { key: String },
    #[error("session is unknown or expired; register again")]
    NoSession,
    #[error("update is for round {got} but round {open} is open")]
    WrongRound { got: u64, open: u64 },
    #[error("no round is open (state: {state})")]
    NoOpenRound { state: &'static str },
    #[error("{name} already submitted an update or declined in round {round}")]
    AlreadySubmitted { name: String, round: u64 },
    #[error("update has {got} parameters but the model has {expected}")]
    DimensionMismatch { got: u64, expected: u64 },
    #[error("update value at index {index} is not finite")]
    NonFinite { index: u64 },
    #[error("chunk at offset {offset} carries {len} values; at most {max} are allowed per chunk")]
    ChunkTooLarge { offset: u64, len: usize, max: usize },
    #[error("chunk offset {got} out of order; expected {expected}")]
    ChunkOutOfOrder { got: u64, expected: u64 },
    #[error("update stream ended after {got} of {expected} values")]
    Truncated { got: u64, expected: u64 },
    #[error("update stream must start with a header")]
    MissingHeader,
    #[error("update stream has a second header")]
    DuplicateHeader,
    #[error("update digest mismatch: header says {claimed}, received bytes hash to {actual}")]
    DigestMismatch { claimed: String, actual: String },
    #[error("update signature does not verify for {name} over round {round} digest {digest}")]
    BadUpdateSignature {
        name: String,
        round: u64,
        digest: String,
    },
    #[error("decline signature does not verify for {name} in round {round}")]
    BadDeclineSignature { name: String, round: u64 },
    #[error("update L2 norm {norm:.4} exceeds the bound {bound:.4}")]
    NormTooLarge { norm: f64, bound: f64 },
    #[error("example count {got} is out of range (1..={max})")]
    BadExampleCount { got: u64, max: u64 },
    #[error("invalid privacy report: {0}")]
    BadPrivacyReport(String),
    #[error("invalid field {field}: {reason}")]
    InvalidField { field: &'static str, reason: String },
    #[error("round {round} has not finished")]
    RoundNotFinished { round: u64 },
    #[error("round {round} does not exist")]
    NoSuchRound { round: u64 },
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("model: {0}")]
    Model(#[from] fedledger_model::ModelError),
    #[error("ledger: {0}")]
    Ledger(String),
    #[error("internal: {0}")]
    Internal(String),
}

impl From<CoordinatorError> for tonic::Status {
    fn from(e: CoordinatorError) -> Self {
        use CoordinatorError as E;
        use tonic::Code;
        let code = match &e {
            E::NotEnrolled { .. }
            | E::BadUpdateSignature { .. }
            | E::BadDeclineSignature { .. } => Code::PermissionDenied,
            E::BadChallenge | E::BadRegistrationSignature { .. } | E::NoSession => {
                Code::Unauthenticated
            }
            E::WrongRound { .. } | E::NoOpenRound { .. } | E::RoundNotFinished { .. } => {
                Code::FailedPrecondition
            }
            E::AlreadySubmitted { .. } => Code::AlreadyExists,
            E::NoSuchRound { .. } => Code::NotFound,
            E::ChunkTooLarge { .. } => Code::ResourceExhausted,
            E::MalformedKey(_)
            | E::DimensionMismatch { .. }
            | E::NonFinite { .. }
            | E::ChunkOutOfOrder { .. }
            | E::Truncated { .. }
            | E::MissingHeader
            | E::DuplicateHeader
            | E::DigestMismatch { .. }
            | E::NormTooLarge { .. }
            | E::BadExampleCount { .. }
            | E::BadPrivacyReport(_)
            | E::InvalidField { .. } => Code::InvalidArgument,
            E::Store(_) | E::Model(_) | E::Ledger(_) | E::Internal(_) => Code::Internal,
        };
        tonic::Status::new(code, e.to_string())
    }
}
