//! A log monitor: follows a federation's tlog-tiles API and checks every new checkpoint before
//! it accepts it: the log's signature, the genesis quorum of witness cosignatures, consistency
//! with the last checkpoint it accepted (a proof computed from the tiles served), that the
//! entries served reproduce the signed root, and every entry as `verify` checks it (schema,
//! enrolment, contiguous rounds, every hospital's signature, rewards, epsilon). It keeps its own
//! copy of the log (a replica [`Log`] in its state directory), so what it accepted once cannot
//! be rewritten under it, and a checkpoint that contradicts that copy is an [`Alert`] carrying
//! both signed checkpoints.

use std::path::{Path, PathBuf};

use crate::error::LedgerError;
use crate::http::TilesClient;
use crate::merkle::{self, sha256_bytes};
use crate::note::{Evidence, SignedCheckpoint, VerifierKey};
use crate::records;
use crate::store::Log;
use crate::tiles::TileCache;
use crate::verify::{EpsilonAccountant, RewardRule, verify_entries};

/// Something the log did that cannot be right, with what shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Alert {
    /// Two checkpoints signed by the log that cannot both hold: the one accepted before
    /// (`evidence.first`) and the new one (`evidence.second`).
    Inconsistent {
        /// Both signed notes and why they conflict.
        evidence: Evidence,
    },
    /// A checkpoint served as the log's that is not signed by the log key, or lacks the
    /// genesis quorum of witness cosignatures.
    BadCheckpoint {
        /// The note as served.
        note: String,
        /// What is wrong with it.
        what: String,
    },
    /// The entries or tiles served do not reproduce a checkpoint the log signed.
    EntriesMismatch {
        /// The signed note.
        note: String,
        /// What did not match.
        what: String,
    },
    /// Entry 0 is not the genesis the monitor was told to expect.
    WrongGenesis {
        /// SHA-256 expected (lowercase hex).
        expected: String,
        /// SHA-256 of the entry 0 served and signed.
        found: String,
    },
    /// Entries under a signed checkpoint that fail `verify`'s checks.
    InvalidEntries {
        /// The signed note that covers them.
        note: String,
        /// `entries/<index>: what` per failure.
        failures: Vec<String>,
    },
}

impl std::fmt::Display for Alert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Inconsistent { evidence } => write!(
                f,
                "ALERT inconsistent checkpoints: {}\n--- accepted ---\n{}--- new ---\n{}",
                evidence.reason, evidence.first, evidence.second
            ),
            Self::BadCheckpoint { note, what } => {
                write!(f, "ALERT bad checkpoint: {what}\n--- served ---\n{note}")
            }
            Self::EntriesMismatch { note, what } => write!(
                f,
                "ALERT entries do not match the signed checkpoint: {what}\n--- signed ---\n{note}"
            ),
            Self::WrongGenesis { expected, found } => write!(
                f,
                "ALERT wrong genesis: entry 0 hashes to {found}, expected {expected}"
            ),
            Self::InvalidEntries { note, failures } => write!(
                f,
                "ALERT invalid entries under a signed checkpoint: {}\n--- signed ---\n{note}",
                failures.join("; ")
            ),
        }
    }
}

/// Why a poll did not accept the log's checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// The log misbehaved; the alert is also written to the state directory.
    #[error("{0}")]
    Alert(Box<Alert>),
    /// Fetching, or the monitor's own store, failed; nothing was accepted (retry later).
    #[error("{0}")]
    Failed(#[from] LedgerError),
}

/// What one poll found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Polled {
    /// The log serves no checkpoint yet.
    Empty,
    /// The checkpoint accepted before, again.
    Unchanged {
        /// Its size.
        size: u64,
    },
    /// A smaller checkpoint consistent with the copy held (a stale cache, say).
    Behind {
        /// The size served.
        served: u64,
        /// The size accepted.
        held: u64,
    },
    /// A new checkpoint, checked and accepted.
    Advanced {
        /// The size accepted before.
        from: u64,
        /// The new size.
        to: u64,
        /// Valid cosignatures by genesis witnesses on it.
        cosigners: usize,
    },
}

/// What the monitor is told.
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    /// The log's tlog-tiles URL prefix.
    pub url: String,
    /// The monitor's state directory: its copy of the log (`log/`) and its alerts (`alerts/`).
    pub state: PathBuf,
    /// The log's verifier key, as the operator published it.
    pub log_key: VerifierKey,
    /// SHA-256 of the genesis entry, when known (the keys file gives it).
    pub genesis_sha256: Option<String>,
}

/// A monitor of one log.
pub struct Monitor {
    cfg: MonitorConfig,
    client: TilesClient,
    log: Log,
}

/// The alerts written to `state` by earlier runs.
pub fn recorded_alerts(state: &Path) -> Result<Vec<(PathBuf, Alert)>, LedgerError> {
    let dir = state.join("alerts");
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Ok(out);
    };
    let mut paths: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
    paths.sort();
    for p in paths {
        let bytes =
            std::fs::read(&p).map_err(|e| LedgerError::io(format!("read {}", p.display()), e))?;
        let alert = serde_json::from_slice(&bytes)
            .map_err(|e| LedgerError::Corrupt(format!("{}: {e}", p.display())))?;
        out.push((p, alert));
    }
    Ok(out)
}

impl Monitor {
    /// Opens (or creates) the monitor's state.
    pub fn open(cfg: MonitorConfig) -> Result<Self, LedgerError> {
        std::fs::create_dir_all(&cfg.state)
            .map_err(|e| LedgerError::io(format!("create {}", cfg.state.display()), e))?;
        let log = Log::open_replica(&cfg.state.join("log"), cfg.log_key.clone())?;
        let client = TilesClient::new(&cfg.url)?;
        Ok(Self { cfg, client, log })
    }

    /// The monitor's copy of the log.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Writes `alert` to `<state>/alerts/` and returns it as the error; the file's path is in
    /// the returned alert's output.
    fn alert(&self, alert: Alert) -> Result<Polled, MonitorError> {
        let dir = self.cfg.state.join("alerts");
        let n = recorded_alerts(&self.cfg.state)?.len();
        std::fs::create_dir_all(&dir)
            .map_err(|e| LedgerError::io(format!("create {}", dir.display()), e))?;
        let path = dir.join(format!("{n:04}.json"));
        let bytes = serde_json::to_vec_pretty(&alert)
            .map_err(|e| LedgerError::Corrupt(format!("encode alert: {e}")))?;
        std::fs::write(&path, bytes)
            .map_err(|e| LedgerError::io(format!("write {}", path.display()), e))?;
        if let Alert::Inconsistent { evidence } = &alert {
            let _ = self.log.record_evidence(evidence);
        }
        Err(MonitorError::Alert(Box::new(alert)))
    }

    /// Fetches the log's checkpoint and, when it is new, checks and accepts it (see the module
    /// docs). A refused checkpoint changes nothing in the copy held, except that conflicting
    /// checkpoints are kept as evidence.
    pub async fn poll(
        &self,
        accountant: Option<&dyn EpsilonAccountant>,
        rewards: Option<&dyn RewardRule>,
    ) -> Result<Polled, MonitorError> {
        let Some(note) = self.client.checkpoint().await? else {
            return Ok(Polled::Empty);
        };
        let served = String::from_utf8_lossy(&note).into_owned();
        let cp = match SignedCheckpoint::open(&note, &self.cfg.log_key) {
            Ok(cp) => cp,
            Err(e) => {
                return self.alert(Alert::BadCheckpoint {
                    note: served,
                    what: format!("not a checkpoint signed by the log key: {e}"),
                });
            }
        };
        let (n, new_root) = (cp.checkpoint.size, cp.checkpoint.root);
        let held = self.log.latest_checkpoint()?;
        let (m, old_root) = held.as_ref().map_or((0, merkle::empty_root()), |h| {
            (h.checkpoint.size, h.checkpoint.root)
        });
        let inconsistent = |reason: String| Alert::Inconsistent {
            evidence: Evidence {
                reason,
                first: held
                    .as_ref()
                    .map(SignedCheckpoint::encode)
                    .unwrap_or_default(),
                second: cp.encode(),
            },
        };
        if held.is_some() {
            if n == m {
                if new_root == old_root {
                    return Ok(Polled::Unchanged { size: n });
                }
                return self.alert(inconsistent(format!("two roots for size {n}")));
            }
            if n < m {
                if self.log.root_at(n)? == new_root {
                    return Ok(Polled::Behind { served: n, held: m });
                }
                return self.alert(inconsistent(format!(
                    "the checkpoint of size {n} is not a prefix of the log of size {m} accepted before"
                )));
            }
        }
        // New entries m..n and, from the same tiles, the consistency proof from m.
        let mut cache = TileCache::new(n);
        let indices: Vec<u64> = (m..n).collect();
        self.client
            .fill(&mut cache, &indices, (m > 0).then_some(m))
            .await?;
        if m > 0 {
            let proof = match cache.consistency_proof(m) {
                Ok(p) => p,
                Err(e) => {
                    return self.alert(Alert::EntriesMismatch {
                        note: cp.encode(),
                        what: format!("the tiles do not give a consistency proof: {e}"),
                    });
                }
            };
            if let Err(e) = merkle::verify_consistency(m, n, &old_root, &new_root, &proof) {
                return self.alert(inconsistent(format!(
                    "no consistency from the accepted size {m} to {n}: {e}"
                )));
            }
        }
        let mut fresh = Vec::with_capacity(indices.len());
        for i in &indices {
            fresh.push(cache.entry(*i)?.to_vec());
        }
        // Witnesses and quorum from the genesis (held, or served now and proven below).
        let genesis = if m > 0 {
            self.log.entry(0)?
        } else {
            fresh.first().cloned().unwrap_or_default()
        };
        if let Some(expected) = &self.cfg.genesis_sha256 {
            let found = hex::encode(sha256_bytes(&genesis));
            if &found != expected {
                return self.alert(Alert::WrongGenesis {
                    expected: expected.clone(),
                    found,
                });
            }
        }
        if !matches!(
            records::validate_entry(0, self.log.origin(), &genesis),
            Ok(records::Record::Federation(_) | records::Record::V1Federation(_))
        ) {
            return self.alert(Alert::InvalidEntries {
                note: cp.encode(),
                failures: vec!["entries/0: not a genesis record naming witnesses".into()],
            });
        }
        // The witnesses in force at the checkpoint's size: the genesis's, or those of a
        // governed change among the entries held or fetched now (admitted by the same rule
        // verify applies).
        let (witnesses, quorum) = self.log.witness_policy_with(&fresh, n);
        let cosigners = cp.note.valid_cosigners(&witnesses).len();
        if (cosigners as u64) < quorum {
            return self.alert(Alert::BadCheckpoint {
                note: cp.encode(),
                what: format!(
                    "{cosigners} valid cosignature(s) by the witnesses in force, {quorum} required"
                ),
            });
        }
        // The entries must reproduce the signed root; the copy takes them atomically with it.
        let log = self.log.clone();
        let note_bytes = note.clone();
        let appended =
            tokio::task::spawn_blocking(move || log.append_proven(m, &fresh, &note_bytes, &[]))
                .await
                .map_err(|e| LedgerError::io("monitor storage task", std::io::Error::other(e)))?;
        match appended {
            Ok(_) => {}
            Err(e @ (LedgerError::Storage(_) | LedgerError::Io { .. })) => return Err(e.into()),
            Err(LedgerError::Equivocation(what)) => {
                return self.alert(inconsistent(what));
            }
            Err(e @ LedgerError::Schema { .. }) => {
                return self.alert(Alert::InvalidEntries {
                    note: cp.encode(),
                    failures: vec![e.to_string()],
                });
            }
            Err(e) => {
                return self.alert(Alert::EntriesMismatch {
                    note: cp.encode(),
                    what: e.to_string(),
                });
            }
        }
        // Every entry as `verify` checks it (the checks across entries need them all).
        let log = self.log.clone();
        let entries = tokio::task::spawn_blocking(move || log.entries(0, n))
            .await
            .map_err(|e| LedgerError::io("monitor storage task", std::io::Error::other(e)))??;
        let report = verify_entries(self.log.origin(), &entries, accountant, rewards);
        if !report.ok() {
            return self.alert(Alert::InvalidEntries {
                note: cp.encode(),
                failures: report
                    .failures
                    .iter()
                    .map(|f| format!("{}: {}", f.file, f.what))
                    .collect(),
            });
        }
        Ok(Polled::Advanced {
            from: m,
            to: n,
            cosigners,
        })
    }
}
