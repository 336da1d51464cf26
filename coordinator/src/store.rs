//! Durable coordinator state: sled for metadata, content-addressed files for large vectors.
//!
//! Everything the coordinator acknowledges is on disk first: an update's vector is written to
//! `blobs/<sha256>` and fsynced, then its metadata is inserted into sled and flushed, and only then
//! does the participant get its receipt. Closing a round writes the round's result and the next
//! round's state in one sled transaction.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use serde::{Serialize, de::DeserializeOwned};
use sled::Transactional;

use fedledger_model::digest::{sha256_hex, vector_from_bytes, vector_sha256, vector_to_bytes};

use crate::{
    error::StoreError,
    types::{DeclineMeta, PersistedState, RoundOutcome, UpdateMeta},
};

/// The coordinator's store in `state_dir`.
pub struct Store {
    db: sled::Db,
    meta: sled::Tree,
    updates: sled::Tree,
    declines: sled::Tree,
    results: sled::Tree,
    blobs: PathBuf,
}

const STATE_KEY: &[u8] = b"state";
const ORDER_KEY: &[u8] = b"participant_order";

fn round_key(round: u64, participant: usize) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&round.to_be_bytes());
    k[8..].copy_from_slice(&(participant as u64).to_be_bytes());
    k
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Decode {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("in-memory records always serialise")
}

impl Store {
    /// Open (or create) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let blobs = dir.join("blobs");
        fs::create_dir_all(&blobs).map_err(io_err(&blobs))?;
        // Temporary files of writes a crash interrupted: never acknowledged, so never needed.
        for entry in fs::read_dir(&blobs).map_err(io_err(&blobs))? {
            let path = entry.map_err(io_err(&blobs))?.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                fs::remove_file(&path).map_err(io_err(&path))?;
            }
        }
        Self::open_parts(&dir.join("state.sled"), blobs)
    }

    /// Open the metadata at `sled_dir` with blobs read from (and written to) `blobs`. Replay
    /// opens a copy of a state directory's metadata this way and only reads blobs in place.
    pub fn open_parts(sled_dir: &Path, blobs: PathBuf) -> Result<Self, StoreError> {
        let db = sled::open(sled_dir)?;
        Ok(Self {
            meta: db.open_tree("meta")?,
            updates: db.open_tree("updates")?,
            declines: db.open_tree("declines")?,
            results: db.open_tree("results")?,
            db,
            blobs,
        })
    }

    /// Write bytes under their SHA-256, durably (fsync of the file and of the folder).
    /// Returns the digest. Writing the same content twice is a no-op.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<String, StoreError> {
        let sha = sha256_hex(bytes);
        let path = self.blobs.join(&sha);
        if path.exists() {
            return Ok(sha);
        }
        // A temporary name of its own: two participants may send identical updates at once
        // (a copy, or colluding attackers), and neither may rename or remove the other's file.
        static WRITERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let writer = WRITERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self
            .blobs
            .join(format!("{sha}.{}-{writer}.tmp", std::process::id()));
        let written = (|| {
            let mut f = fs::File::create(&tmp).map_err(io_err(&tmp))?;
            f.write_all(bytes).map_err(io_err(&tmp))?;
            f.sync_all().map_err(io_err(&tmp))?;
            fail::fail_point!("coordinator::blob::after_fsync", |_| Err(
                StoreError::Injected("coordinator::blob::after_fsync".into())
            ));
            fs::rename(&tmp, &path).map_err(io_err(&path))
        })();
        if written.is_err() {
            // A failed write leaves nothing behind (best effort: the error is what matters).
            let _ = fs::remove_file(&tmp);
        }
        written?;
        fs::File::open(&self.blobs)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.blobs))?;
        Ok(sha)
    }

    /// Store a flat vector; its key is the SHA-256 of its little-endian bytes.
    pub fn put_vector(&self, values: &[f32]) -> Result<String, StoreError> {
        self.put_blob(&vector_to_bytes(values))
    }

    /// Read a blob and check it still hashes to its name.
    pub fn get_blob(&self, sha256: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.blobs.join(sha256);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::MissingBlob(sha256.to_owned()));
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        let actual = sha256_hex(&bytes);
        if actual != sha256 {
            return Err(StoreError::CorruptBlob {
                sha256: sha256.to_owned(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Read a stored vector by digest.
    pub fn get_vector(&self, sha256: &str) -> Result<Vec<f32>, StoreError> {
        let bytes = self.get_blob(sha256)?;
        let v = vector_from_bytes(&bytes).ok_or_else(|| StoreError::Decode {
            key: sha256.to_owned(),
            reason: "length is not a multiple of 4".into(),
        })?;
        debug_assert_eq!(vector_sha256(&v), sha256);
        Ok(v)
    }

    /// Delete a blob (retention). Missing blobs are fine.
    pub fn delete_blob(&self, sha256: &str) -> Result<(), StoreError> {
        let path = self.blobs.join(sha256);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    pub fn load_state(&self) -> Result<Option<PersistedState>, StoreError> {
        self.meta
            .get(STATE_KEY)?
            .map(|b| decode("state", &b))
            .transpose()
    }

    /// The genesis participants' keys (hex) in the order their indices were first given
    /// (the file's order at the first start), so indices persisted in the store stay valid
    /// whatever the file lists later.
    pub fn load_order(&self) -> Result<Option<Vec<String>>, StoreError> {
        self.meta
            .get(ORDER_KEY)?
            .map(|b| decode("participant_order", &b))
            .transpose()
    }

    /// Record the participants' order (once, at the first start), flushed.
    pub fn save_order(&self, order: &[String]) -> Result<(), StoreError> {
        self.meta.insert(ORDER_KEY, encode(&order))?;
        self.db.flush()?;
        Ok(())
    }

    pub fn save_state(&self, state: &PersistedState) -> Result<(), StoreError> {
        self.meta.insert(STATE_KEY, encode(state))?;
        self.db.flush()?;
        Ok(())
    }

    /// Record an accepted update (its vector must already be stored) and flush.
    pub fn record_update(&self, meta: &UpdateMeta) -> Result<(), StoreError> {
        self.updates
            .insert(round_key(meta.round, meta.participant), encode(meta))?;
        self.db.flush()?;
        fail::fail_point!("coordinator::update::after_flush", |_| Err(
            StoreError::Injected("coordinator::update::after_flush".into())
        ));
        Ok(())
    }

    /// Record a decline and flush.
    pub fn record_decline(&self, meta: &DeclineMeta) -> Result<(), StoreError> {
        self.declines
            .insert(round_key(meta.round, meta.participant), encode(meta))?;
        self.db.flush()?;
        Ok(())
    }

    fn scan<T: DeserializeOwned>(tree: &sled::Tree, round: u64) -> Result<Vec<T>, StoreError> {
        tree.scan_prefix(round.to_be_bytes())
            .map(|kv| {
                let (_, v) = kv?;
                decode(&format!("round {round}"), &v)
            })
            .collect()
    }

    pub fn updates_for(&self, round: u64) -> Result<Vec<UpdateMeta>, StoreError> {
        Self::scan(&self.updates, round)
    }

    pub fn declines_for(&self, round: u64) -> Result<Vec<DeclineMeta>, StoreError> {
        Self::scan(&self.declines, round)
    }

    /// Atomically store a finished round's outcome and the state that follows it, then flush.
    pub fn finish_round(
        &self,
        outcome: &RoundOutcome,
        next: &PersistedState,
    ) -> Result<(), StoreError> {
        let value = encode(outcome);
        let state = encode(next);
        (&self.results, &self.meta)
            .transaction(|(results, meta)| {
                results.insert(&outcome.round.to_be_bytes(), value.as_slice())?;
                meta.insert(STATE_KEY, state.as_slice())?;
                Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| StoreError::Transaction(format!("{e:?}")))?;
        fail::fail_point!("coordinator::close::before_flush", |_| Err(
            StoreError::Injected("coordinator::close::before_flush".into())
        ));
        self.db.flush()?;
        fail::fail_point!("coordinator::close::after_flush", |_| Err(
            StoreError::Injected("coordinator::close::after_flush".into())
        ));
        Ok(())
    }

    pub fn outcome(&self, round: u64) -> Result<Option<RoundOutcome>, StoreError> {
        self.results
            .get(round.to_be_bytes())?
            .map(|b| decode(&format!("result {round}"), &b))
            .transpose()
    }

    /// Delete the inputs of `round` (its updates and the model it started from) that no round
    /// after it, up to `latest`, refers to. Returns how many blobs were deleted.
    pub fn prune_round(&self, round: u64, latest: u64) -> Result<usize, StoreError> {
        let Some(old) = self.outcome(round)? else {
            return Ok(0);
        };
        let mut keep = std::collections::HashSet::new();
        for r in round + 1..=latest {
            if let Some(o) = self.outcome(r)? {
                keep.insert(o.model_before.clone());
                keep.insert(o.model_after.clone());
                keep.extend(o.contributions.iter().map(|c| c.update_sha256.clone()));
            }
        }
        let mut deleted = 0;
        let candidates = std::iter::once(old.model_before.clone())
            .chain(old.contributions.iter().map(|c| c.update_sha256.clone()));
        for sha in candidates {
            if !keep.contains(&sha) && self.blobs.join(&sha).exists() {
                self.delete_blob(&sha)?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// All finished rounds, in order.
    pub fn outcomes(&self) -> Result<Vec<RoundOutcome>, StoreError> {
        self.results
            .iter()
            .map(|kv| {
                let (_, v) = kv?;
                decode("result", &v)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two participants sending identical updates at the same moment (a copy, colluding
    /// attackers) both get their blob; nothing temporary is left behind.
    #[test]
    fn identical_blobs_written_at_once_are_all_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let bytes = vec![7u8; 1 << 20];
        let shas: Vec<String> = std::thread::scope(|s| {
            let writers: Vec<_> = (0..8).map(|_| s.spawn(|| store.put_blob(&bytes))).collect();
            writers
                .into_iter()
                .map(|w| w.join().unwrap().unwrap())
                .collect()
        });
        assert!(shas.iter().all(|s| *s == shas[0]));
        assert_eq!(store.get_blob(&shas[0]).unwrap(), bytes);
        let names: Vec<String> = fs::read_dir(dir.path().join("blobs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![shas[0].clone()]);
    }

    /// A temporary file a crash left behind is removed when the store opens.
    #[test]
    fn temporary_files_of_an_interrupted_write_are_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let tmp = dir.path().join("blobs").join("abc.1-0.tmp");
        fs::write(&tmp, b"half").unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(!tmp.exists());
        drop(store);
    }
}
