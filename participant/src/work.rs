//! What a source of updates is asked and what it answers: an open round's [`Task`] and the
//! spends recorded so far go in; [`Work`] (an update with its privacy spend, or a declined
//! round) or a [`SourceError`] comes out. The agent drives any [`UpdateSource`]; the real one is
//! [`crate::source::LocalTrainer`], the examples add misbehaving ones.

use fedledger_privacy::PrivacySpend;

use crate::{client::Task, store::SpendRecord};

/// Failures while producing an update.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("data: {0}")]
    Data(#[from] fedledger_model::ModelError),
    #[error("task: {0}")]
    Task(String),
    #[error("privacy: {0}")]
    Privacy(String),
    #[error("{0}")]
    Other(String),
}

/// What to do with an open round.
#[derive(Debug)]
pub enum Work {
    /// Send this delta, claiming `examples`, after persisting `spend`.
    Update {
        delta: Vec<f32>,
        examples: u64,
        spend: Option<PrivacySpend>,
    },
    /// Decline the round with this one-line reason.
    Decline(String),
}

/// Produces a participant's answer to an open round.
pub trait UpdateSource: Send {
    /// `spent` is every spend recorded so far on this machine.
    fn work(&mut self, task: &Task, spent: &[SpendRecord]) -> Result<Work, SourceError>;

    /// Check the local data against the federation's governed schema, before any round and
    /// again when the schema changes: an error (naming the missing column) stops the agent.
    /// Sources without local data accept any schema.
    fn check_schema(&mut self, schema: &fedledger_proto::DataSchema) -> Result<(), SourceError> {
        let _ = schema;
        Ok(())
    }

    /// Called after the coordinator acknowledged this source's update for `round`.
    fn submitted(&mut self, _round: u64) {}
}
