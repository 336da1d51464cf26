//! `participant.toml`.
//!
//! ```toml
//! coordinator = "http://127.0.0.1:50051"   # dialled out; the participant accepts no connections
//! key = "hospital-a.key"                   # from `fedledger-participant keygen`
//! data = "hospital-a.csv"                  # private; never leaves this machine
//! label_column = "malignant"               # optional; default: the task's label column
//! state_dir = "hospital-a-state"           # local sled store: privacy spend, rounds answered
//!
//! [privacy]
//! epsilon_budget = 8.0                     # hard limit over the whole federation
//! delta = 1e-5
//! require_dp = true                        # decline rounds that would train without noise
//! accountant = "rdp"                       # or "pld" (tighter); keep it for the state_dir's life
//! ```

use std::path::{Path, PathBuf};

use fedledger_privacy::AccountantKind;
use serde::{Deserialize, Serialize};

/// The file format.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ParticipantConfig {
    pub coordinator: String,
    pub key: PathBuf,
    pub data: PathBuf,
    #[serde(default)]
    pub label_column: Option<String>,
    pub state_dir: PathBuf,
    #[serde(default)]
    pub privacy: PrivacySection,
    /// Give up after the coordinator has been unreachable this long.
    #[serde(default = "default_patience")]
    pub reconnect_patience_secs: u64,
}

fn default_patience() -> u64 {
    300
}

/// The participant's own privacy limits, enforced locally whatever the coordinator asks.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PrivacySection {
    pub epsilon_budget: f64,
    pub delta: f64,
    /// Refuse (decline) rounds that ask for training without DP noise. On by default: turn it
    /// off only for data that is not personal.
    #[serde(default = "yes")]
    pub require_dp: bool,
    /// The accountant of the budget gate: `rdp` (default), `rdp-dp-accounting` or `pld`
    /// (tighter, slower). Rounds are declined if the local store holds spends accounted by
    /// another one, so that the ledger's records of this participant name one accountant, and
    /// if the task lists the accountants the federation records and this one is not among them.
    #[serde(default)]
    pub accountant: AccountantKind,
}

fn yes() -> bool {
    true
}

impl Default for PrivacySection {
    fn default() -> Self {
        Self {
            epsilon_budget: 8.0,
            delta: 1e-5,
            require_dp: true,
            accountant: AccountantKind::Rdp,
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parse {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("{0}")]
    Invalid(String),
}

impl ParticipantConfig {
    /// Read, resolve relative paths against the file's folder, and validate.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut cfg: ParticipantConfig =
            toml::from_str(&text).map_err(|source| ConfigError::Parse {
                path: path.to_owned(),
                source: Box::new(source),
            })?;
        if let Some(base) = path.parent() {
            for p in [&mut cfg.key, &mut cfg.data, &mut cfg.state_dir] {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Check the values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.coordinator.starts_with("http://") || self.coordinator.starts_with("https://")) {
            return Err(ConfigError::Invalid(format!(
                "coordinator must be an http:// or https:// URL, got {:?}",
                self.coordinator
            )));
        }
        let p = &self.privacy;
        if !(p.epsilon_budget.is_finite() && p.epsilon_budget > 0.0) {
            return Err(ConfigError::Invalid(format!(
                "privacy.epsilon_budget must be > 0, got {}",
                p.epsilon_budget
            )));
        }
        if !(p.delta > 0.0 && p.delta < 1.0) {
            return Err(ConfigError::Invalid(format!(
                "privacy.delta must be in (0, 1), got {}",
                p.delta
            )));
        }
        Ok(())
    }
}
