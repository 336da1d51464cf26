//! The participant's local state in sled: every round it answered and the privacy it spent.
//! A spend is flushed to disk before the update that caused it leaves the machine, so a crash
//! or restart can never forget spending.

use std::path::Path;

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
}

/// The local store.
pub struct LocalStore {
    db: sled::Db,
    spends: sled::Tree,
    rounds: sled::Tree,
}

fn key(federation: &str, round: u64) -> Vec<u8> {
    let mut k = federation.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&round.to_be_bytes());
    k
}

impl LocalStore {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::open(dir.join("participant.sled"))?;
        Ok(Self {
            spends: db.open_tree("spends")?,
            rounds: db.open_tree("rounds")?,
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
        let mut out: Vec<SpendRecord> = self
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
        out.sort_by(|a, b| a.spend.epsilon_total.total_cmp(&b.spend.epsilon_total));
        Ok(out)
    }

    pub fn record_round(&self, r: &RoundRecord) -> Result<(), StoreError> {
        self.rounds.insert(
            key(&r.federation, r.round),
            serde_json::to_vec(r).expect("serialisable"),
        )?;
        self.db.flush()?;
        Ok(())
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
