//! The fedledger participant agent: runs next to a hospital's private data, dials out to the
//! coordinator, trains locally (with DP-SGD), keeps a hard local privacy budget, and signs every
//! update it sends. It never sends data, and never accepts inbound connections.
//!
//! Reading order (bottom up: a module imports only from modules above it in this list):
//! - [`link`] - how a server is reached: TLS trust and server name, no plaintext off loopback
//!   unless allowed, HTTP CONNECT proxies (config, `HTTPS_PROXY`, `NO_PROXY`).
//! - [`progress`] - what a person sees of the rounds: a bar on a terminal, a line per round
//!   otherwise, each with the budget left.
//! - [`config`] - `participant.toml`.
//! - [`keys`] - the Ed25519 identity file.
//! - [`store`] - local sled store of spends and answered rounds (flushed before sending).
//! - [`governance`] - signing proposals as a governor; the governed data schema (columns
//!   checked once, values clamped to their ranges).
//! - [`client`] - the wire protocol, participant side.
//! - [`receipts`] - each answered round's receipt, fetched over the log's tlog-tiles API and
//!   checked against what was signed and reported; evidence and a halt on a mismatch.
//! - [`work`] - what a source of updates is asked and answers: [`UpdateSource`], [`Work`],
//!   [`SourceError`].
//! - [`plan`] - a participant's own DP-SGD plan (batch size, steps, noise multiplier) within the
//!   task's bounds and its own budget, from its row count, never its data's values.
//! - [`dp`] - the privacy gate: the federation's accountants, cost of a round, budget check;
//!   DP-SGD with secure noise.
//! - [`source`] - the real source: [`LocalTrainer`] trains on the private CSV.
//! - [`validate`] - validator mode's computation: every coalition of a round's design scored on
//!   the validator's holdout (aggregate scores, never rows), and the vector's signature.
//! - [`agent`] - the loop tying them together: answer, persist the spend, sign and send.
//! - [`validator`] - validator mode's loop: pull each round's candidates, score the game on
//!   the holdout, sign and send the vector.

pub mod agent;
pub mod client;
pub mod config;
pub mod dp;
pub mod governance;
pub mod keys;
/// How the agent reaches its servers: the shared `fedledger-link` crate.
pub use fedledger_link as link;
pub mod plan;
pub mod progress;
pub mod receipts;
pub mod source;
pub mod store;
pub mod validate;
pub mod validator;
pub mod work;

use std::{sync::Arc, time::Duration};

pub use agent::{AgentError, AgentOptions, AgentReport, Ended, run_agent};
pub use config::ParticipantConfig;
pub use progress::ProgressMode;
pub use source::LocalTrainer;
pub use work::{SourceError, UpdateSource, Work};

/// Failures of [`run`] before the agent loop starts.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Key(#[from] fedledger_ledger::LedgerError),
    #[error("create state dir {path}: {source}")]
    StateDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error(transparent)]
    Validator(#[from] validator::ValidatorError),
    #[error("configuration: {0}")]
    Config(String),
}

impl RunError {
    /// The process exit status for this failure: 3 when the agent stopped on a receipt
    /// mismatch (evidence written) or is still stopped by one, 4 when a receipt was not complete
    /// in time, 5 when the federation was refused (genesis or witnesses), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Agent(AgentError::Receipt(receipts::ReceiptError::Mismatch { .. }))
            | RunError::Agent(AgentError::Halted(_)) => 3,
            RunError::Agent(AgentError::Receipt(receipts::ReceiptError::Timeout { .. })) => 4,
            RunError::Agent(AgentError::Receipt(receipts::ReceiptError::Refused(_))) => 5,
            _ => 1,
        }
    }
}

/// Run a participant from its configuration until the federation finishes, training on its
/// own data. `progress` shows a progress bar.
pub async fn run(cfg: ParticipantConfig, progress: bool) -> Result<AgentReport, RunError> {
    let mode = if progress {
        ProgressMode::Bar
    } else {
        ProgressMode::Quiet
    };
    run_showing(cfg, mode).await
}

/// Like [`run`], showing rounds as `mode` says (the binary: a bar on a terminal, a line per
/// round otherwise).
pub async fn run_showing(
    cfg: ParticipantConfig,
    mode: ProgressMode,
) -> Result<AgentReport, RunError> {
    let data = cfg.data.clone().ok_or_else(|| {
        RunError::Config("no `data`: this agent only validates ([validator])".into())
    })?;
    let source = Box::new(LocalTrainer::new(
        data,
        cfg.label_column.clone(),
        cfg.privacy.clone(),
    ));
    run_source_showing(cfg, mode, source).await
}

/// Validate with `[validator]`'s holdout and key until the federation finishes.
pub async fn run_validator(
    cfg: &ParticipantConfig,
) -> Result<validator::ValidatorReport, RunError> {
    let v = cfg
        .validator
        .as_ref()
        .ok_or_else(|| RunError::Config("no [validator] section".into()))?;
    let key = Arc::new(keys::load_key(v.key.as_ref().unwrap_or(&cfg.key))?);
    let opts = validator::ValidatorOptions {
        coordinator: cfg
            .coordinator_link()
            .map_err(|e| RunError::Config(e.to_string()))?,
        reconnect_patience: Duration::from_secs(cfg.reconnect_patience_secs),
        holdout: v.data.clone(),
        report: None,
    };
    Ok(validator::run_validator(opts, key).await?)
}

/// Like [`run`], with another source of updates (the examples use this to simulate
/// misbehaving hospitals).
pub async fn run_with_source(
    cfg: ParticipantConfig,
    progress: bool,
    source: Box<dyn UpdateSource>,
) -> Result<AgentReport, RunError> {
    let mode = if progress {
        ProgressMode::Bar
    } else {
        ProgressMode::Quiet
    };
    run_source_showing(cfg, mode, source).await
}

async fn run_source_showing(
    cfg: ParticipantConfig,
    progress: ProgressMode,
    source: Box<dyn UpdateSource>,
) -> Result<AgentReport, RunError> {
    let key = Arc::new(keys::load_key(&cfg.key)?);
    std::fs::create_dir_all(&cfg.state_dir).map_err(|source| RunError::StateDir {
        path: cfg.state_dir.display().to_string(),
        source,
    })?;
    let store = store::LocalStore::open(&cfg.state_dir)?;
    let coordinator = cfg
        .coordinator_link()
        .map_err(|e| RunError::Config(e.to_string()))?;
    let link = cfg
        .link_settings()
        .map_err(|e| RunError::Config(e.to_string()))?;
    if let Some(p) = coordinator.proxy() {
        tracing::info!(proxy = p, "reaching the coordinator through a proxy");
    }
    let receipts = match &cfg.ledger {
        Some(l) => Some(receipts::ReceiptSettings {
            url: l.url.clone(),
            link,
            pins: l.pins().map_err(|e| RunError::Config(e.to_string()))?,
            allow_no_witnesses: l.allow_no_witnesses,
            timeout: Duration::from_secs(l.receipt_timeout_secs),
        }),
        None => None,
    };
    let opts = AgentOptions {
        coordinator,
        reconnect_patience: Duration::from_secs(cfg.reconnect_patience_secs),
        progress,
        epsilon_budget: Some(cfg.privacy.epsilon_budget),
        receipts,
        state_dir: cfg.state_dir.clone(),
    };
    Ok(run_agent(opts, key, store, source).await?)
}
