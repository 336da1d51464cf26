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
//!
//! [ledger]                                 # receipts: check every round's record (recommended)
//! url = "http://127.0.0.1:8080/"           # the log's C2SP tlog-tiles prefix (coordinator's tiles_listen)
//! keys_file = "federation.keys"            # what `fedledger-coordinator keys` printed, from the operator
//! # or, instead of keys_file:
//! # log_key = "<origin>+<key id>+<base64>"  # the log's verifier key
//! # genesis_sha256 = "<64 hex digits>"      # SHA-256 of the genesis entry
//! allow_no_witnesses = false               # refuse a federation whose witness quorum is zero
//! receipt_timeout_secs = 600               # round r's receipt must be complete before submitting for r + 2
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
    /// Receipts: where the log is served and what to pin. Without it, no receipt is checked.
    #[serde(default)]
    pub ledger: Option<LedgerSection>,
}

/// `[ledger]`: how this hospital checks what the ledger records for it each round.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LedgerSection {
    /// The log's C2SP tlog-tiles URL prefix (`http://host:port/`).
    pub url: String,
    /// A file the operator handed over: the output of `fedledger-coordinator keys` (lines
    /// `log verifier key: ...` and `genesis sha256: ...`). Instead of `log_key` and
    /// `genesis_sha256`.
    #[serde(default)]
    pub keys_file: Option<PathBuf>,
    /// The log's verifier key (it signs every checkpoint).
    #[serde(default)]
    pub log_key: Option<String>,
    /// SHA-256 (lowercase hex) of the federation's genesis entry (entry 0), pinned.
    #[serde(default)]
    pub genesis_sha256: Option<String>,
    /// Accept a federation whose genesis names no witness quorum (0): its checkpoints then rest
    /// on the coordinator's signature alone. Off by default; tests without witnesses set it.
    #[serde(default)]
    pub allow_no_witnesses: bool,
    /// How long the agent waits for a round's receipt before it may submit for the round after
    /// next; when it passes, the agent stops.
    #[serde(default = "default_receipt_timeout")]
    pub receipt_timeout_secs: u64,
}

fn default_receipt_timeout() -> u64 {
    600
}

/// The pins of a `[ledger]` section, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pins {
    /// The log's verifier key.
    pub log_key: fedledger_ledger::note::VerifierKey,
    /// SHA-256 of entry 0, lowercase hex.
    pub genesis_sha256: String,
}

impl LedgerSection {
    /// The log key and genesis digest, from the section or from its keys file.
    pub fn pins(&self) -> Result<Pins, ConfigError> {
        let bad = |r: String| ConfigError::Invalid(format!("[ledger]: {r}"));
        let (mut log_key, mut genesis) = (self.log_key.clone(), self.genesis_sha256.clone());
        if let Some(path) = &self.keys_file {
            if log_key.is_some() || genesis.is_some() {
                return Err(bad(
                    "give either keys_file or log_key and genesis_sha256, not both".into(),
                ));
            }
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            for line in text.lines() {
                if let Some(v) = line.strip_prefix("log verifier key:") {
                    log_key = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("genesis sha256:") {
                    genesis = Some(v.trim().to_owned());
                }
            }
        }
        let log_key = log_key.ok_or_else(|| bad("no log_key (nor keys_file)".into()))?;
        let log_key = fedledger_ledger::note::VerifierKey::parse(&log_key)
            .map_err(|e| bad(format!("log_key: {e}")))?;
        if log_key.key_type != fedledger_ledger::note::KEY_TYPE_ED25519 {
            return Err(bad("log_key is not a log (type 0x01) key".into()));
        }
        let genesis = genesis.ok_or_else(|| bad("no genesis_sha256 (nor keys_file)".into()))?;
        if genesis.len() != 64
            || !genesis
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad(format!(
                "genesis_sha256 {genesis:?} is not 64 lowercase hex digits"
            )));
        }
        Ok(Pins {
            log_key,
            genesis_sha256: genesis,
        })
    }
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
            if let Some(p) = cfg.ledger.as_mut().and_then(|l| l.keys_file.as_mut())
                && p.is_relative()
            {
                *p = base.join(&*p);
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
        if let Some(l) = &self.ledger {
            if !l.url.starts_with("http://") {
                return Err(ConfigError::Invalid(format!(
                    "ledger.url must be an http:// URL (TLS comes later), got {:?}",
                    l.url
                )));
            }
            l.pins()?;
        }
        Ok(())
    }
}
