//! A witness: checks each new checkpoint of a log for consistency with the last one it
//! cosigned, persists it, and returns a cosignature/v1 line (the semantics of C2SP
//! tlog-witness add-checkpoint).

use std::path::Path;

use crate::error::LedgerError;
use crate::merkle::{self, Hash};
use crate::note::{Evidence, NoteSignature, NoteSigner, SignedCheckpoint, VerifierKey};

/// Why a witness refused to cosign.
#[derive(Debug, thiserror::Error)]
pub enum WitnessRefusal {
    /// The request's old size is not the size this witness last cosigned (HTTP 409 in the
    /// C2SP spec); retry with a consistency proof from `size`.
    #[error("conflict: this witness last cosigned size {size}")]
    Conflict {
        /// Size of the witness's latest checkpoint.
        size: u64,
    },
    /// The checkpoint is not signed by the log, or the proof does not verify.
    #[error("refused: {0}")]
    Invalid(#[from] LedgerError),
    /// The checkpoint contradicts the one the witness holds.
    #[error("equivocation: {}", .0.reason)]
    Equivocation(Box<Evidence>),
}

/// A witness for one log, persisting its latest cosigned checkpoint in sled.
#[derive(Clone)]
pub struct Witness {
    db: sled::Db,
    signer: NoteSigner,
    log_key: VerifierKey,
}

impl std::fmt::Debug for Witness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Witness({} for {})",
            self.signer.name(),
            self.log_key.name
        )
    }
}

const LATEST: &[u8] = b"latest";

impl Witness {
    /// Opens the witness state in `dir`; `signer` must be a witness (type 0x04) signer.
    pub fn open(dir: &Path, signer: NoteSigner, log_key: VerifierKey) -> Result<Self, LedgerError> {
        if signer.verifier_key().key_type != crate::note::KEY_TYPE_COSIGNATURE {
            return Err(LedgerError::Key(
                "a witness needs a cosignature/v1 (0x04) key".into(),
            ));
        }
        Ok(Self {
            db: sled::open(dir)?,
            signer,
            log_key,
        })
    }

    /// The witness's verifier key.
    pub fn verifier_key(&self) -> &VerifierKey {
        self.signer.verifier_key()
    }

    /// The latest checkpoint this witness cosigned.
    pub fn latest(&self) -> Result<Option<SignedCheckpoint>, LedgerError> {
        match self.db.get(LATEST)? {
            Some(b) => Ok(Some(SignedCheckpoint::open(&b, &self.log_key)?)),
            None => Ok(None),
        }
    }

    /// Handles add-checkpoint: `note` must be signed by the log, `old_size` must equal the size
    /// last cosigned (0 at first), and `proof` must prove consistency from it. Persists the new
    /// checkpoint before returning the cosignature, timestamped `now` (seconds since the epoch).
    pub fn add_checkpoint(
        &self,
        old_size: u64,
        proof: &[Hash],
        note: &[u8],
        now: u64,
    ) -> Result<NoteSignature, WitnessRefusal> {
        let cp = SignedCheckpoint::open(note, &self.log_key)?;
        let prev_bytes = self.db.get(LATEST).map_err(LedgerError::from)?;
        let prev = match &prev_bytes {
            Some(b) => Some(SignedCheckpoint::open(b, &self.log_key)?),
            None => None,
        };
        let (held_size, held_root) = prev.as_ref().map_or((0, merkle::empty_root()), |p| {
            (p.checkpoint.size, p.checkpoint.root)
        });
        if let Some(p) = &prev
            && p.checkpoint.size == cp.checkpoint.size
        {
            if p.checkpoint.root == cp.checkpoint.root {
                return Ok(self.signer.cosign(&cp.note.text, now));
            }
            return Err(WitnessRefusal::Equivocation(Box::new(Evidence {
                reason: format!("two roots for size {}", cp.checkpoint.size),
                first: p.encode(),
                second: cp.encode(),
            })));
        }
        if old_size != held_size {
            return Err(WitnessRefusal::Conflict { size: held_size });
        }
        if cp.checkpoint.size < held_size {
            return Err(WitnessRefusal::Conflict { size: held_size });
        }
        if let Err(e) = merkle::verify_consistency(
            held_size,
            cp.checkpoint.size,
            &held_root,
            &cp.checkpoint.root,
            proof,
        ) {
            return match prev {
                Some(p) => Err(WitnessRefusal::Equivocation(Box::new(Evidence {
                    reason: format!(
                        "no valid consistency from size {held_size} to {}: {e}",
                        cp.checkpoint.size
                    ),
                    first: p.encode(),
                    second: cp.encode(),
                }))),
                None => Err(WitnessRefusal::Invalid(e)),
            };
        }
        // Persist only the log's own signature line: the state is the log's checkpoint.
        let mut stored = cp.note.clone();
        stored.signatures.retain(|s| s.is_by(&self.log_key));
        fail::fail_point!("ledger::witness::before_persist", |_| Err(
            WitnessRefusal::Invalid(LedgerError::io(
                "persist the witness state (failpoint ledger::witness::before_persist)",
                std::io::Error::other("injected failure"),
            ))
        ));
        let swapped = self
            .db
            .compare_and_swap(
                LATEST,
                prev_bytes.as_deref(),
                Some(stored.encode().as_bytes()),
            )
            .map_err(LedgerError::from)?;
        if swapped.is_err() {
            return Err(WitnessRefusal::Conflict {
                size: self.latest()?.map_or(0, |l| l.checkpoint.size),
            });
        }
        self.db.flush().map_err(LedgerError::from)?;
        Ok(self.signer.cosign(&cp.note.text, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::MemoryTree;
    use crate::note::{Checkpoint, NoteSigner};

    fn key(seed: u8) -> ring::signature::Ed25519KeyPair {
        ring::signature::Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap()
    }

    #[test]
    fn cosigns_in_order_and_refuses_forks() {
        // Serialised with the failpoint test below (fail-rs configuration is process-wide).
        let _failpoints = fail::FailScenario::setup();
        let dir = tempfile::tempdir().unwrap();
        let log = NoteSigner::log("log.example", key(1)).unwrap();
        let w = Witness::open(
            dir.path(),
            NoteSigner::witness("w.example", key(2)).unwrap(),
            log.verifier_key().clone(),
        )
        .unwrap();
        let tree = MemoryTree::from_entries((0..20u8).map(|i| vec![i]));
        let cp = |n: u64| {
            SignedCheckpoint::sign(
                Checkpoint::new("log.example", n, tree.root_at(n).unwrap()),
                &log,
            )
            .encode()
        };
        let c5 = cp(5);
        let sig = w.add_checkpoint(0, &[], c5.as_bytes(), 7).unwrap();
        let mut note = crate::note::SignedNote::parse(c5.as_bytes()).unwrap();
        note.add_signature(sig);
        assert_eq!(note.verify_cosignature(w.verifier_key()).unwrap(), 7);
        // Wrong old size: conflict telling the held size.
        let p = merkle::consistency_proof(&tree, 5, 9).unwrap();
        assert!(matches!(
            w.add_checkpoint(0, &p, cp(9).as_bytes(), 8),
            Err(WitnessRefusal::Conflict { size: 5 })
        ));
        w.add_checkpoint(5, &p, cp(9).as_bytes(), 8).unwrap();
        // A fork at size 12 has no valid consistency from 9.
        let fork = MemoryTree::from_entries((0..20u8).map(|i| vec![i ^ 0x80]));
        let forged = SignedCheckpoint::sign(
            Checkpoint::new("log.example", 12, fork.root_at(12).unwrap()),
            &log,
        )
        .encode();
        let p = merkle::consistency_proof(&tree, 9, 12).unwrap();
        assert!(matches!(
            w.add_checkpoint(9, &p, forged.as_bytes(), 9),
            Err(WitnessRefusal::Equivocation(_))
        ));
        // A checkpoint signed by someone else is invalid.
        let other = NoteSigner::log("log.example", key(3)).unwrap();
        let bad = SignedCheckpoint::sign(
            Checkpoint::new("log.example", 12, tree.root_at(12).unwrap()),
            &other,
        )
        .encode();
        assert!(matches!(
            w.add_checkpoint(9, &p, bad.as_bytes(), 9),
            Err(WitnessRefusal::Invalid(_))
        ));
        assert_eq!(w.latest().unwrap().unwrap().checkpoint.size, 9);
    }

    #[test]
    fn a_failed_persist_cosigns_nothing() {
        let scenario = fail::FailScenario::setup();
        assert!(
            fail::has_failpoints(),
            "unit tests run with the failpoints feature"
        );
        let dir = tempfile::tempdir().unwrap();
        let log = NoteSigner::log("log.example", key(1)).unwrap();
        let w = Witness::open(
            dir.path(),
            NoteSigner::witness("w.example", key(2)).unwrap(),
            log.verifier_key().clone(),
        )
        .unwrap();
        let tree = MemoryTree::from_entries((0..5u8).map(|i| vec![i]));
        let c5 = SignedCheckpoint::sign(
            Checkpoint::new("log.example", 5, tree.root_at(5).unwrap()),
            &log,
        )
        .encode();
        fail::cfg("ledger::witness::before_persist", "return").unwrap();
        assert!(matches!(
            w.add_checkpoint(0, &[], c5.as_bytes(), 7),
            Err(WitnessRefusal::Invalid(LedgerError::Io { .. }))
        ));
        assert!(
            w.latest().unwrap().is_none(),
            "nothing persisted, nothing cosigned"
        );
        fail::remove("ledger::witness::before_persist");
        w.add_checkpoint(0, &[], c5.as_bytes(), 7).unwrap();
        assert_eq!(w.latest().unwrap().unwrap().checkpoint.size, 5);
        scenario.teardown();
    }
}
