//! The fedledger participant agent: runs next to a hospital's private data, dials out to the
//! coordinator, trains locally (with DP-SGD), keeps a hard local privacy budget, and signs every
//! update it sends. It never sends data, and never accepts inbound connections.
//!
//! Reading order:
//! - [`config`] - `participant.toml`.
//! - [`keys`] - the Ed25519 identity file.
//! - [`client`] - the wire protocol, participant side.
//! - [`source`] - where updates come from; `LocalTrainer` trains on the private CSV.
//! - [`dp`] - the privacy gate: cost of a round, budget check, DP-SGD with secure noise.
//! - [`store`] - local sled store of spends and answered rounds (flushed before sending).
//! - [`agent`] - the loop tying them together.

pub mod agent;
pub mod client;
pub mod config;
pub mod dp;
pub mod keys;
pub mod source;
pub mod store;

use std::{sync::Arc, time::Duration};

pub use agent::{AgentError, AgentOptions, AgentReport, run_agent};
pub use config::ParticipantConfig;
pub use source::{LocalTrainer, UpdateSource, Work};

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
}

/// Run a participant from its configuration until the federation finishes, training on its
/// own data. `progress` shows a progress bar.
pub async fn run(cfg: ParticipantConfig, progress: bool) -> Result<AgentReport, RunError> {
    let source = Box::new(LocalTrainer::new(
        cfg.data.clone(),
        cfg.label_column.clone(),
        cfg.privacy.clone(),
    ));
    run_with_source(cfg, progress, source).await
}

/// Like [`run`], with another source of updates (the examples use this to simulate
/// misbehaving hospitals).
pub async fn run_with_source(
    cfg: ParticipantConfig,
    progress: bool,
    source: Box<dyn UpdateSource>,
) -> Result<AgentReport, RunError> {
    let key = Arc::new(keys::load_key(&cfg.key)?);
    std::fs::create_dir_all(&cfg.state_dir).map_err(|source| RunError::StateDir {
        path: cfg.state_dir.display().to_string(),
        source,
    })?;
    let store = store::LocalStore::open(&cfg.state_dir)?;
    let opts = AgentOptions {
        coordinator: cfg.coordinator.clone(),
        reconnect_patience: Duration::from_secs(cfg.reconnect_patience_secs),
        progress,
    };
    Ok(run_agent(opts, key, store, source).await?)
}
