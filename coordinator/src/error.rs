//! The coordinator's errors: domain refusals and storage failures. Plain types; the gRPC layer
//! translates them into statuses in one place (`service`).

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
    #[error("{request} is for round {got} but round {open} is open")]
    WrongRound {
        request: &'static str,
        got: u64,
        open: u64,
    },
    #[error("no round is open (state: {state})")]
    NoOpenRound { state: &'static str },
    #[error("{name} already submitted an update or declined in round {round}")]
    AlreadySubmitted { name: String, round: u64 },
    #[error(
        "{name} already has an update or decline for round {round} in flight; wait for its answer"
    )]
    InFlight { name: String, round: u64 },
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
    Store(#[from] StoreError),
    #[error("model: {0}")]
    Model(#[from] fedledger_model::ModelError),
    #[error("ledger: {0}")]
    Ledger(String),
    #[error("proposal refused: {0}")]
    Proposal(#[from] fedledger_ledger::records::Refusal),
    #[error("configuration: {0}")]
    Config(String),
    #[error("internal: {0}")]
    Internal(String),
}

/// Storage failures. A failure to persist means the request is refused, never half-applied.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("blob {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("blob {sha256} is corrupt: its bytes hash to {actual}")]
    CorruptBlob { sha256: String, actual: String },
    #[error("blob {0} is missing")]
    MissingBlob(String),
    #[error("record {key} cannot be decoded: {reason}")]
    Decode { key: String, reason: String },
    #[error("transaction: {0}")]
    Transaction(String),
    #[error("injected failure: {0}")]
    Injected(String),
    #[error("the blob's writer stopped before the upload was complete")]
    Abandoned,
}
