//! A witness: checks each new checkpoint of a log for consistency with the last one it
//! cosigned, persists it, and returns a cosignature/v1 line, exactly as C2SP tlog-witness
//! `add-checkpoint` specifies (the checks, their order and what each refusal means; the HTTP
//! status of each refusal is [`WitnessRefusal::status`]). Also the request body of
//! `add-checkpoint` ([`AddCheckpoint`]), which the HTTP server and client share, without I/O.
//!
//! Only Ed25519 `cosignature/v1` (key type 0x04) is produced; ML-DSA-44 cosignatures are out of
//! scope.

use std::path::Path;

use crate::error::LedgerError;
use crate::merkle::{self, Hash};
use crate::note::{
    Checkpoint, Evidence, NoteSignature, NoteSigner, SignedCheckpoint, SignedNote, VerifierKey,
};

/// Most consistency proof lines a request may carry (the spec's client limit).
pub const MAX_PROOF_LINES: usize = 63;
/// Largest `add-checkpoint` request body accepted: the old size line, 63 proof lines and a
/// checkpoint with a hundred signatures fit in well under this.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Content type of a 409 response's body: the size the witness holds, in decimal, then a
/// newline.
pub const SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";

/// Why a witness refused to cosign, by the HTTP status C2SP tlog-witness gives each case.
#[derive(Debug, thiserror::Error)]
pub enum WitnessRefusal {
    /// 400: the request does not parse, or its old size exceeds the checkpoint's size.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// 403: no valid signature by the log's key on the checkpoint (or one by its key that
    /// fails to verify).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// 404: this witness does not know the checkpoint's origin.
    #[error("unknown log {origin:?}")]
    UnknownLog {
        /// The checkpoint's origin line.
        origin: String,
    },
    /// 409: the request's old size is not the size this witness last cosigned; retry with a
    /// consistency proof from `size`.
    #[error("conflict: this witness last cosigned size {size}")]
    Conflict {
        /// Size of the witness's latest cosigned checkpoint (0 if none).
        size: u64,
    },
    /// 422: the checkpoint is validly signed but not consistent with what the witness holds
    /// (a proof that does not verify, a proof from size 0, two roots for one size, a size-0
    /// checkpoint whose root is not the empty tree's). When the witness held a checkpoint, the
    /// two are kept as evidence.
    #[error("unprocessable: {reason}")]
    Unprocessable {
        /// What did not hold.
        reason: String,
        /// The held checkpoint and the refused one, when both are signed by the log.
        evidence: Option<Box<Evidence>>,
    },
    /// 500: the witness could not read or persist its state; nothing was cosigned.
    #[error("witness storage: {0}")]
    Storage(#[from] LedgerError),
}

impl WitnessRefusal {
    /// The HTTP status C2SP tlog-witness assigns to this refusal.
    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::Forbidden(_) => 403,
            Self::UnknownLog { .. } => 404,
            Self::Conflict { .. } => 409,
            Self::Unprocessable { .. } => 422,
            Self::Storage(_) => 500,
        }
    }
}

/// The body of an `add-checkpoint` request: `old <size>\n`, up to 63 base64 consistency proof
/// lines, an empty line, then the checkpoint note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCheckpoint {
    /// Size of the checkpoint the witness last cosigned, as the client believes.
    pub old_size: u64,
    /// Consistency proof from `old_size` to the checkpoint's size.
    pub proof: Vec<Hash>,
    /// The signed checkpoint note, verbatim.
    pub checkpoint: Vec<u8>,
}

impl AddCheckpoint {
    /// The request body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = format!("old {}\n", self.old_size).into_bytes();
        for h in &self.proof {
            out.extend_from_slice(crate::note::b64_encode(h).as_bytes());
            out.push(b'\n');
        }
        out.push(b'\n');
        out.extend_from_slice(&self.checkpoint);
        out
    }

    /// Parses a request body; every malformation is a [`WitnessRefusal::BadRequest`] naming it.
    pub fn parse(body: &[u8]) -> Result<Self, WitnessRefusal> {
        let bad = |r: &str| WitnessRefusal::BadRequest(r.to_owned());
        if body.len() > MAX_REQUEST_BYTES {
            return Err(bad("request body over 64 KiB"));
        }
        let mut rest = body;
        let mut line = || -> Result<&[u8], WitnessRefusal> {
            let end = rest
                .iter()
                .position(|b| *b == b'\n')
                .ok_or_else(|| bad("a line does not end in a newline"))?;
            let (l, r) = rest.split_at(end);
            rest = &r[1..];
            Ok(l)
        };
        let old = line()?;
        let digits = old
            .strip_prefix(b"old ")
            .ok_or_else(|| bad("the first line is not `old <size>`"))?;
        if digits.is_empty()
            || !digits.iter().all(u8::is_ascii_digit)
            || (digits.len() > 1 && digits[0] == b'0')
        {
            return Err(bad("the old size is not a decimal without leading zeroes"));
        }
        let old_size: u64 = std::str::from_utf8(digits)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("the old size is out of range"))?;
        let mut proof = Vec::new();
        loop {
            let l = line()?;
            if l.is_empty() {
                break;
            }
            if proof.len() == MAX_PROOF_LINES {
                return Err(bad("more than 63 consistency proof lines"));
            }
            let h: Hash = std::str::from_utf8(l)
                .ok()
                .and_then(crate::note::b64_decode)
                .and_then(|h| h.try_into().ok())
                .ok_or_else(|| bad("a consistency proof line is not a base64 SHA-256 hash"))?;
            proof.push(h);
        }
        if rest.is_empty() {
            return Err(bad("no checkpoint after the empty line"));
        }
        Ok(Self {
            old_size,
            proof,
            checkpoint: rest.to_vec(),
        })
    }
}

/// A witness for one log, persisting its latest cosigned checkpoint (the log's signature and
/// this witness's cosignature) in sled.
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
            db: crate::db::open_sled(dir)?,
            signer,
            log_key,
        })
    }

    /// The witness's verifier key.
    pub fn verifier_key(&self) -> &VerifierKey {
        self.signer.verifier_key()
    }

    /// The key of the log this witness follows (its name is the log's origin).
    pub fn log_key(&self) -> &VerifierKey {
        &self.log_key
    }

    /// The latest checkpoint this witness cosigned, with the log's signature and the
    /// cosignature it returned (what the monitoring endpoint serves).
    pub fn latest(&self) -> Result<Option<SignedCheckpoint>, LedgerError> {
        match self.db.get(LATEST)? {
            Some(b) => Ok(Some(SignedCheckpoint::open(&b, &self.log_key)?)),
            None => Ok(None),
        }
    }

    /// Handles add-checkpoint as C2SP tlog-witness specifies, in its order: the note must
    /// parse (400), name this log's origin (404) and carry a valid signature by the log's key
    /// (403; lines by other keys are ignored); `old_size` may not exceed the checkpoint's size
    /// (400) and must equal the size last cosigned, 0 at first (409); then 422 when a size-0
    /// checkpoint has another root than the empty tree's, when a proof comes with old size 0,
    /// when the proof does not verify, or when equal sizes have different roots. Otherwise the
    /// checkpoint is persisted (compare-and-swap, so concurrent requests cannot roll the state
    /// back) before the cosignature, timestamped `now` (seconds since the epoch, not 0), is
    /// returned. A refusal changes nothing.
    pub fn add_checkpoint(
        &self,
        old_size: u64,
        proof: &[Hash],
        note: &[u8],
        now: u64,
    ) -> Result<NoteSignature, WitnessRefusal> {
        let parsed = SignedNote::parse(note)
            .map_err(|e| WitnessRefusal::BadRequest(format!("checkpoint: {e}")))?;
        let body = Checkpoint::parse_text(&parsed.text)
            .map_err(|e| WitnessRefusal::BadRequest(format!("checkpoint: {e}")))?;
        if body.origin != self.log_key.name {
            return Err(WitnessRefusal::UnknownLog {
                origin: body.origin,
            });
        }
        parsed
            .verify_signature(&self.log_key)
            .map_err(|e| WitnessRefusal::Forbidden(e.to_string()))?;
        let cp = SignedCheckpoint {
            checkpoint: body,
            note: parsed,
        };
        let size = cp.checkpoint.size;
        if old_size > size {
            return Err(WitnessRefusal::BadRequest(format!(
                "old size {old_size} exceeds the checkpoint's size {size}"
            )));
        }
        let prev_bytes = self.db.get(LATEST).map_err(LedgerError::from)?;
        let prev = match &prev_bytes {
            Some(b) => Some(SignedCheckpoint::open(b, &self.log_key)?),
            None => None,
        };
        let (held_size, held_root) = prev.as_ref().map_or((0, merkle::empty_root()), |p| {
            (p.checkpoint.size, p.checkpoint.root)
        });
        if old_size != held_size {
            return Err(WitnessRefusal::Conflict { size: held_size });
        }
        let refuse = |reason: String| WitnessRefusal::Unprocessable {
            evidence: prev.as_ref().map(|p| {
                Box::new(Evidence {
                    reason: reason.clone(),
                    first: p.encode(),
                    second: cp.encode(),
                })
            }),
            reason,
        };
        if size == 0 && cp.checkpoint.root != merkle::empty_root() {
            return Err(refuse(
                "a checkpoint of size 0 must have the empty tree's root".into(),
            ));
        }
        if old_size == 0 && !proof.is_empty() {
            return Err(refuse(
                "a consistency proof from size 0 must be empty".into(),
            ));
        }
        if old_size == size && held_root != cp.checkpoint.root {
            return Err(refuse(format!("two roots for size {size}")));
        }
        if old_size > 0
            && let Err(e) =
                merkle::verify_consistency(old_size, size, &held_root, &cp.checkpoint.root, proof)
        {
            return Err(refuse(format!(
                "no valid consistency from size {old_size} to {size}: {e}"
            )));
        }
        if now == 0 {
            return Err(WitnessRefusal::Storage(LedgerError::io(
                "read the clock",
                std::io::Error::other("the clock is at or before 1970"),
            )));
        }
        let cosignature = self.signer.cosign(&cp.note.text, now);
        // The state is the log's checkpoint with its own signature and this cosignature.
        let mut stored = cp.note.clone();
        stored.signatures.retain(|s| s.is_by(&self.log_key));
        stored.signatures.push(cosignature.clone());
        fail::fail_point!("ledger::witness::before_persist", |_| Err(
            WitnessRefusal::Storage(LedgerError::io(
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
        Ok(cosignature)
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
            Err(WitnessRefusal::Unprocessable {
                evidence: Some(_),
                ..
            })
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
            Err(WitnessRefusal::Forbidden(_))
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
            Err(WitnessRefusal::Storage(LedgerError::Io { .. }))
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
