//! The crate's error type.

/// Everything that can go wrong in the ledger, named by what went wrong.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// An index or size outside the tree.
    #[error("index {index} out of range for tree size {size}")]
    OutOfRange {
        /// The requested index or size.
        index: u64,
        /// The tree size it was checked against.
        size: u64,
    },
    /// A Merkle proof that does not verify.
    #[error("invalid proof: {0}")]
    ProofInvalid(String),
    /// A signed note, checkpoint, key or proof text that does not parse.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being parsed ("signed note", "verifier key", ...).
        what: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// A signature that does not verify, or a missing required signature.
    #[error("signature: {0}")]
    Signature(String),
    /// A record that violates its schema; `field` is a JSON path such as `contributions[2].reward`.
    #[error("entry {index}: field `{field}`: {reason}")]
    Schema {
        /// Log index of the entry.
        index: u64,
        /// JSON path of the offending field (`$` for the whole record).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Two checkpoints of one origin that cannot both hold.
    #[error("equivocation detected: {0}")]
    Equivocation(String),
    /// Stored data that is missing or inconsistent.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// A cryptographic key that cannot be generated, read or used.
    #[error("key: {0}")]
    Key(String),
    /// The sled database failed. Its error is part of the message, not a source of it, so it
    /// is said once.
    #[error("storage: {0}")]
    Storage(sled::Error),
    /// A file could not be read or written.
    #[error("{context}: {error}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error (in the message, not a source: said once).
        error: std::io::Error,
    },
    /// The network layer failed or was shut down.
    #[error("network: {0}")]
    Network(String),
}

impl From<sled::Error> for LedgerError {
    fn from(e: sled::Error) -> Self {
        Self::Storage(e)
    }
}

impl LedgerError {
    pub(crate) fn malformed(what: &'static str, reason: impl Into<String>) -> Self {
        Self::Malformed {
            what,
            reason: reason.into(),
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            error: source,
        }
    }

    pub(crate) fn network(e: impl std::fmt::Display) -> Self {
        Self::Network(e.to_string())
    }

    /// A local storage failure (as opposed to bad data from elsewhere).
    pub(crate) fn is_local_storage(&self) -> bool {
        matches!(self, Self::Storage(_) | Self::Io { .. })
    }
}
