//! The participant's local state in sled: every round it answered (with exactly what it signed,
//! so that its receipt can be checked after a restart), the privacy it spent, the last
//! checkpoint of each federation's log it accepted, and whether it has stopped after a receipt
//! mismatch. A spend is flushed to disk before the update that caused it leaves the machine, so
//! a crash or restart can never forget spending.

use std::path::Path;

use fedledger_ledger::records::PrivacyObject;
use fedledger_privacy::PrivacySpend;
use serde::{Deserialize, Serialize};

/// Local-store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("local store: {0}")]
    Sled(#[from] sled::Error),
    #[error("local store record {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
}

/// One DP release, as spent: where, and what it cost (stored flat, one JSON object).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SpendRecord {
    pub federation: String,
    pub round: u64,
    #[serde(flatten)]
    pub spend: PrivacySpend,
}

/// What the participant did in a round.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RoundRecord {
    pub round: u64,
    pub federation: String,
    /// "sent" or "declined".
    pub action: String,
    pub update_sha256: Option<String>,
    pub reason: Option<String>,
    /// The example count it signed (sent updates).
    #[serde(default)]
    pub examples: Option<u64>,
    /// The privacy object it signed (sent updates).
    #[serde(default)]
    pub privacy: Option<PrivacyObject>,
    /// Its receipt: `pending` (the coordinator acknowledged the answer, so the ledger must
    /// record it), `done`, or `waived` (a mismatch the operator resumed past); absent when no
    /// receipt is expected (the answer was not acknowledged, or receipts are off).
    #[serde(default)]
    pub receipt: Option<String>,
}

/// Receipt states of a [`RoundRecord`].
pub mod receipt_state {
    /// The answer was acknowledged; its receipt is not yet complete.
    pub const PENDING: &str = "pending";
    /// The receipt is complete and stored.
    pub const DONE: &str = "done";
    /// A mismatch the operator investigated and resumed past.
    pub const WAIVED: &str = "waived";
}

/// Why the participant stopped taking part (a receipt mismatch), until `resume` clears it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Halt {
    pub federation: String,
    pub round: u64,
    /// What differed.
    pub what: String,
    /// The evidence file written.
    pub evidence: String,
    /// The checkpoints of the log were inconsistent (the last accepted one is then forgotten
    /// on resume).
    #[serde(default)]
    pub inconsistent_log: bool,
}

/// An update whose spend is recorded and which may not have reached the coordinator yet: after a
/// crash it is sent again as it was (the same bytes, the same signed claims), never trained
/// again, so a round is never spent twice nor answered with two different updates.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PreparedUpdate {
    pub federation: String,
    pub round: u64,
    pub examples: u64,
    pub update_sha256: String,
    /// The spend the update was trained under (None without DP).
    pub spend: Option<PrivacySpend>,
    /// The round was answered (acknowledged, or refused as it stood): the vector is gone.
    #[serde(default)]
    pub settled: bool,
}

/// A prepared update and its vector (`None` once the round is settled).
pub type Prepared = (PreparedUpdate, Option<Vec<f32>>);

/// The local store.
pub struct LocalStore {
    db: sled::Db,
    spends: sled::Tree,
    rounds: sled::Tree,
    prepared: sled::Tree,
    /// Folder of the prepared updates' vectors (`<sha256>.f32`, little-endian).
    vectors: std::path::PathBuf,
    /// Federation -> the last checkpoint note of its log this participant accepted; and
    /// `halt` -> [`Halt`].
    ledger: sled::Tree,
}

const HALT_KEY: &[u8] = b"\0halt";

fn key(federation: &str, round: u64) -> Vec<u8> {
    let mut k = federation.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&round.to_be_bytes());
    k
}

impl LocalStore {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = fedledger_ledger::db::open_sled(&dir.join("participant.sled"))?;
        Ok(Self {
            spends: db.open_tree("spends")?,
            rounds: db.open_tree("rounds")?,
            prepared: db.open_tree("prepared")?,
            vectors: dir.join("prepared"),
            ledger: db.open_tree("ledger")?,
            db,
        })
    }

    /// Persist a spend and flush. Appends: a second release in the same round is kept too.
    pub fn record_spend(&self, spend: &SpendRecord) -> Result<(), StoreError> {
        let id = self.db.generate_id()?;
        let mut k = key(&spend.federation, spend.round);
        k.extend_from_slice(&id.to_be_bytes());
        self.spends
            .insert(k, serde_json::to_vec(spend).expect("serialisable"))?;
        self.db.flush()?;
        Ok(())
    }

    /// Every spend ever recorded, in order (all federations: the budget is the person's, not the
    /// federation's).
    pub fn spends(&self) -> Result<Vec<SpendRecord>, StoreError> {
        let out: Vec<SpendRecord> = self
            .spends
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                    key: String::from_utf8_lossy(&k).into_owned(),
                    reason: e.to_string(),
                })
            })
            .collect::<Result<_, _>>()?;
        // In key order: by federation, then round, then recording order, so each federation's
        // releases come in the order its ledger records them.
        Ok(out)
    }

    /// Persist, durably and before anything is sent, an update and the spend it cost: the
    /// vector's file (fsynced), then the spend and the update's record in one sled transaction,
    /// flushed.
    pub fn record_prepared(
        &self,
        prepared: &PreparedUpdate,
        delta: &[f32],
    ) -> Result<(), StoreError> {
        use std::io::Write as _;
        std::fs::create_dir_all(&self.vectors).map_err(|e| self.io("create", &self.vectors, e))?;
        let path = self.vectors.join(format!("{}.f32", prepared.update_sha256));
        let tmp = path.with_extension("tmp");
        {
            let mut f = std::fs::File::create(&tmp).map_err(|e| self.io("create", &tmp, e))?;
            f.write_all(&fedledger_model::digest::vector_to_bytes(delta))
                .and_then(|()| f.sync_all())
                .map_err(|e| self.io("write", &tmp, e))?;
        }
        std::fs::rename(&tmp, &path).map_err(|e| self.io("rename", &path, e))?;
        let spend = prepared.spend.as_ref().map(|s| SpendRecord {
            federation: prepared.federation.clone(),
            round: prepared.round,
            spend: s.clone(),
        });
        let id = self.db.generate_id()?;
        let mut spend_key = key(&prepared.federation, prepared.round);
        spend_key.extend_from_slice(&id.to_be_bytes());
        let meta = serde_json::to_vec(prepared).expect("serialisable");
        let spend_bytes = spend.map(|s| serde_json::to_vec(&s).expect("serialisable"));
        use sled::Transactional as _;
        (&self.spends, &self.prepared)
            .transaction(|(spends, prepared_tree)| {
                if let Some(b) = &spend_bytes {
                    spends.insert(spend_key.as_slice(), b.as_slice())?;
                }
                prepared_tree.insert(key(&prepared.federation, prepared.round), meta.as_slice())?;
                Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| StoreError::Corrupt {
                key: format!("prepared round {}", prepared.round),
                reason: format!("transaction: {e:?}"),
            })?;
        self.db.flush()?;
        Ok(())
    }

    /// The update prepared for `round` of `federation`, if any, with its vector unless the round
    /// is settled.
    pub fn prepared(&self, federation: &str, round: u64) -> Result<Option<Prepared>, StoreError> {
        let Some(v) = self.prepared.get(key(federation, round))? else {
            return Ok(None);
        };
        let p: PreparedUpdate = serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
            key: format!("prepared round {round}"),
            reason: e.to_string(),
        })?;
        if p.settled {
            return Ok(Some((p, None)));
        }
        let path = self.vectors.join(format!("{}.f32", p.update_sha256));
        let bytes = std::fs::read(&path).map_err(|e| self.io("read", &path, e))?;
        let delta = fedledger_model::digest::vector_from_bytes(&bytes)
            .filter(|d| fedledger_model::digest::vector_sha256(d) == p.update_sha256)
            .ok_or_else(|| StoreError::Corrupt {
                key: path.display().to_string(),
                reason: "the prepared update does not hash to its digest".into(),
            })?;
        Ok(Some((p, Some(delta))))
    }

    /// The round is answered (sent, or refused as it was): its vector is no longer needed. The
    /// record stays (what was signed, for receipts).
    pub fn settle_prepared(&self, prepared: &PreparedUpdate) -> Result<(), StoreError> {
        let settled = PreparedUpdate {
            settled: true,
            ..prepared.clone()
        };
        self.prepared.insert(
            key(&prepared.federation, prepared.round),
            serde_json::to_vec(&settled).expect("serialisable"),
        )?;
        self.db.flush()?;
        let path = self.vectors.join(format!("{}.f32", prepared.update_sha256));
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io("remove", &path, e)),
        }
    }

    fn io(&self, what: &str, path: &Path, e: std::io::Error) -> StoreError {
        StoreError::Corrupt {
            key: path.display().to_string(),
            reason: format!("{what}: {e}"),
        }
    }

    pub fn record_round(&self, r: &RoundRecord) -> Result<(), StoreError> {
        self.rounds.insert(
            key(&r.federation, r.round),
            serde_json::to_vec(r).expect("serialisable"),
        )?;
        self.db.flush()?;
        Ok(())
    }

    /// The record of `round` in `federation`, if any.
    pub fn round(&self, federation: &str, round: u64) -> Result<Option<RoundRecord>, StoreError> {
        match self.rounds.get(key(federation, round))? {
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| StoreError::Corrupt {
                    key: format!("{federation}/{round}"),
                    reason: e.to_string(),
                }),
            None => Ok(None),
        }
    }

    /// Sets the receipt state of a recorded round (flushed).
    pub fn set_receipt(&self, federation: &str, round: u64, state: &str) -> Result<(), StoreError> {
        if let Some(mut r) = self.round(federation, round)? {
            r.receipt = Some(state.to_owned());
            self.record_round(&r)?;
        }
        Ok(())
    }

    /// The last checkpoint note of `federation`'s log this participant accepted.
    pub fn accepted_checkpoint(&self, federation: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.ledger.get(federation.as_bytes())?.map(|v| v.to_vec()))
    }

    /// Records the checkpoint just accepted (flushed). `None` forgets it.
    pub fn accept_checkpoint(
        &self,
        federation: &str,
        note: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        match note {
            Some(n) => self.ledger.insert(federation.as_bytes(), n)?,
            None => self.ledger.remove(federation.as_bytes())?,
        };
        self.db.flush()?;
        Ok(())
    }

    /// Why the participant stopped, if it has.
    pub fn halt(&self) -> Result<Option<Halt>, StoreError> {
        match self.ledger.get(HALT_KEY)? {
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| StoreError::Corrupt {
                    key: "halt".into(),
                    reason: e.to_string(),
                }),
            None => Ok(None),
        }
    }

    /// Stops the participant (flushed) until [`LocalStore::resume`].
    pub fn set_halt(&self, h: &Halt) -> Result<(), StoreError> {
        self.ledger
            .insert(HALT_KEY, serde_json::to_vec(h).expect("serialisable"))?;
        self.db.flush()?;
        Ok(())
    }

    /// Clears a halt: the round it names is waived (its receipt is not checked again) and, when
    /// the log was inconsistent, the last accepted checkpoint is forgotten. Returns the halt.
    pub fn resume(&self) -> Result<Option<Halt>, StoreError> {
        let Some(h) = self.halt()? else {
            return Ok(None);
        };
        self.set_receipt(&h.federation, h.round, receipt_state::WAIVED)?;
        if h.inconsistent_log {
            self.ledger.remove(h.federation.as_bytes())?;
        }
        self.ledger.remove(HALT_KEY)?;
        self.db.flush()?;
        Ok(Some(h))
    }

    pub fn rounds(&self) -> Result<Vec<RoundRecord>, StoreError> {
        self.rounds
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                    key: String::from_utf8_lossy(&k).into_owned(),
                    reason: e.to_string(),
                })
            })
            .collect()
    }
}
