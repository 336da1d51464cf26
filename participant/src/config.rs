//! `participant.toml`.
//!
//! The complete file, every field with its default and a comment, is `config/participant.toml`
//! ([`DEFAULT_CONFIG`], what `fedledger-participant --print-default-config` prints and the
//! README's configuration reference shows); a test keeps it equal to the fields below.

use std::path::{Path, PathBuf};

/// A complete `participant.toml`: every field with its default, commented
/// (`fedledger-participant --print-default-config`). Valid once the key, the data and the
/// operator's keys file it names exist.
pub const DEFAULT_CONFIG: &str = include_str!("../config/participant.toml");

use fedledger_privacy::AccountantKind;
use serde::{Deserialize, Serialize};

use crate::link::{Link, LinkSettings, ProxySetting, Trust};

/// The file format.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ParticipantConfig {
    pub coordinator: String,
    pub key: PathBuf,
    /// The hospital's training data (a contributor). Absent: this agent only validates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<PathBuf>,
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
    /// `[tls]`: which certificate the coordinator (and its tiles server) must present. Absent:
    /// the public web PKI's roots.
    #[serde(default)]
    pub tls: Option<TlsSection>,
    /// Allow `http://` (no TLS) to addresses other than loopback. Off: anyone on the path
    /// could read updates and alter tasks.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// HTTP CONNECT proxy for every outbound link (`http://[user:password@]host:port`).
    /// Absent: `HTTPS_PROXY` (`HTTP_PROXY` for http://) minus `NO_PROXY`; `""`: no proxy.
    #[serde(default)]
    pub proxy: Option<String>,
    /// `[validator]`: also (or only) judge contributions on a holdout (README: Validators).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validator: Option<ValidatorSection>,
}

/// `[validator]`: this agent scores each round's candidate updates on its own holdout and
/// sends the signed vector of every coalition's score (never a row).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ValidatorSection {
    /// The holdout CSV (the federation's columns; disjoint from any training data).
    pub data: PathBuf,
    /// The validator's key, enrolled with the role `validator`. Absent: the agent's `key`
    /// (a key has one role: an agent that also contributes needs a second key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

/// `[tls]`: the coordinator's certificate, as the operator handed it over.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM CA certificate(s): the coordinator's certificate must chain to one and be valid for
    /// the server name.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Instead of `ca`: exactly this (PEM) certificate is accepted.
    #[serde(default)]
    pub pin: Option<PathBuf>,
    /// The name the certificate must be valid for; default: the host in `coordinator`.
    #[serde(default)]
    pub server_name: Option<String>,
}

/// `[ledger]`: how this hospital checks what the ledger records for it each round.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LedgerSection {
    /// The log's C2SP tlog-tiles URL prefix (`https://host:port/`; the same trust, plaintext
    /// rule and proxy as the coordinator's link).
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
            let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
                path: path.clone(),
                error,
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
#[serde(deny_unknown_fields, default)]
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
    #[error("read {path}: {error}")]
    Read {
        path: PathBuf,
        /// Part of the message, not a source: said once.
        error: std::io::Error,
    },
    /// The TOML did not parse or names a field that does not exist. Said once: the TOML error is
    /// part of this message, not a source of it.
    #[error(
        "{path}: {message}(every field, with its default: `fedledger-participant --print-default-config`)"
    )]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl ParticipantConfig {
    /// Read, resolve relative paths against the file's folder, and validate.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with(path, None)
    }

    /// [`ParticipantConfig::load`], with the state directory given on the command line instead
    /// of the file's.
    pub fn load_with(path: &Path, state_dir: Option<&Path>) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        let mut cfg: ParticipantConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        if let Some(base) = path.parent() {
            let validator = cfg
                .validator
                .as_mut()
                .map(|v| std::iter::once(&mut v.data).chain(v.key.as_mut()));
            for p in [&mut cfg.key, &mut cfg.state_dir]
                .into_iter()
                .chain(cfg.data.as_mut())
                .chain(validator.into_iter().flatten())
            {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
            if let Some(p) = cfg.ledger.as_mut().and_then(|l| l.keys_file.as_mut())
                && p.is_relative()
            {
                *p = base.join(&*p);
            }
            if let Some(t) = cfg.tls.as_mut() {
                for p in [t.ca.as_mut(), t.pin.as_mut()].into_iter().flatten() {
                    if p.is_relative() {
                        *p = base.join(&*p);
                    }
                }
            }
        }
        if let Some(d) = state_dir {
            cfg.state_dir = d.to_owned();
        }
        cfg.validate()
            .map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?;
        Ok(cfg)
    }

    /// How links are made: trust, plaintext, proxy (server name: the coordinator's only).
    pub fn link_settings(&self) -> Result<LinkSettings, ConfigError> {
        let tls = self.tls.clone().unwrap_or_default();
        let trust = match (tls.ca, tls.pin) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid(
                    "[tls]: give either ca or pin, not both".into(),
                ));
            }
            (Some(ca), None) => Trust::Ca(ca),
            (None, Some(pin)) => Trust::Pin(pin),
            (None, None) => Trust::PublicRoots,
        };
        let proxy = match self.proxy.as_deref().map(str::trim) {
            None => ProxySetting::FromEnv,
            Some("") => ProxySetting::Off,
            Some(p) => ProxySetting::Url(p.to_owned()),
        };
        Ok(LinkSettings {
            trust,
            server_name: None,
            allow_plaintext: self.allow_plaintext,
            proxy,
        })
    }

    /// The link to the coordinator's gRPC endpoint.
    pub fn coordinator_link(&self) -> Result<Link, ConfigError> {
        let mut s = self.link_settings()?;
        s.server_name = self.tls.as_ref().and_then(|t| t.server_name.clone());
        Link::new(&self.coordinator, &s)
            .map_err(|e| ConfigError::Invalid(format!("coordinator: {e}")))
    }

    /// The link to the log's tlog-tiles server (`[ledger] url`), when receipts are checked.
    pub fn ledger_link(&self) -> Result<Option<Link>, ConfigError> {
        let Some(l) = &self.ledger else {
            return Ok(None);
        };
        Link::new(&l.url, &self.link_settings()?)
            .map(Some)
            .map_err(|e| ConfigError::Invalid(format!("ledger.url: {e}")))
    }

    /// Check the values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match (&self.data, &self.validator) {
            (None, None) => {
                return Err(ConfigError::Invalid(
                    "give `data` (training data, to contribute) or a [validator] section (a \
                     holdout, to validate), or both"
                        .into(),
                ));
            }
            (Some(_), Some(v)) if v.key.as_ref().is_none_or(|k| *k == self.key) => {
                return Err(ConfigError::Invalid(
                    "an agent that contributes and validates needs a second key for \
                     validating (validator.key): a key is enrolled in one role"
                        .into(),
                ));
            }
            _ => {}
        }
        self.coordinator_link()?;
        self.ledger_link()?;
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
            l.pins()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_paths(v: &toml::Value, prefix: &str, out: &mut Vec<String>) {
        if let toml::Value::Table(t) = v {
            for (k, v) in t {
                out.push(format!("{prefix}{k}"));
                key_paths(v, &format!("{prefix}{k}."), out);
            }
        }
    }

    #[test]
    fn the_default_config_names_every_field_loads_and_errors_are_said_once() {
        let file: ParticipantConfig = toml::from_str(DEFAULT_CONFIG).unwrap();
        // Serialised back, the parsed file names exactly the fields the text sets: none is left
        // out (defaults are written too) and none is ignored.
        let (mut a, mut b) = (Vec::new(), Vec::new());
        key_paths(&toml::Value::try_from(&file).unwrap(), "", &mut a);
        key_paths(&toml::from_str(DEFAULT_CONFIG).unwrap(), "", &mut b);
        a.retain(|k| !k.ends_with("log_key") && !k.ends_with("genesis_sha256"));
        a.sort();
        b.sort();
        assert_eq!(a, b);

        // It loads once the operator's keys file is there.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("participant.toml");
        std::fs::write(&path, DEFAULT_CONFIG).unwrap();
        let log = fedledger_ledger::note::NoteSigner::log(
            "f",
            fedledger_ledger::keys::generate_key_file(&dir.path().join("log.key")).unwrap(),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("federation.keys"),
            format!(
                "log verifier key: {}\ngenesis sha256:   {}\n",
                log.verifier_key(),
                "cd".repeat(32)
            ),
        )
        .unwrap();
        let cfg = ParticipantConfig::load_with(&path, Some(Path::new("/elsewhere"))).unwrap();
        assert_eq!(cfg.state_dir, PathBuf::from("/elsewhere"));

        std::fs::write(&path, format!("colour = 1\n{DEFAULT_CONFIG}")).unwrap();
        let e = ParticipantConfig::load(&path).unwrap_err();
        let said = e.to_string();
        assert!(said.contains("unknown field `colour`"), "{said}");
        assert!(said.contains("participant.toml"), "{said}");
        assert!(std::error::Error::source(&e).is_none());
    }
}
