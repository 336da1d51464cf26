//! The wire protocol between ledger nodes: gossip topics and announcements, the sync
//! request-response messages, and their size limits. Plain data and the checks that need no
//! storage (parsing, the log's signature on a checkpoint).

use libp2p::gossipsub;
use serde::{Deserialize, Serialize};

use crate::error::LedgerError;
use crate::merkle::Hash;
use crate::note::{SignedCheckpoint, VerifierKey};

/// Entries per catch-up request and per gossip announcement.
pub const CHUNK: u64 = 1000;

/// The request-response protocol for catch-up and add-checkpoint.
pub(crate) const SYNC_PROTOCOL: &str = "/fedledger/ledger-sync/1";
/// The identify protocol version nodes announce.
pub(crate) const IDENTIFY_PROTOCOL: &str = "/fedledger/ledger/1";
/// Largest gossip message, sent or received.
pub(crate) const MAX_GOSSIP_BYTES: usize = 8 << 20;
/// Largest sync request (an add-checkpoint carries a note and a proof).
pub(crate) const MAX_REQUEST_BYTES: u64 = 1 << 20;
/// Largest sync response ([`CHUNK`] entries of up to 64 KiB each).
pub(crate) const MAX_RESPONSE_BYTES: u64 = 64 << 20;

/// The two gossip topics of one log.
#[derive(Debug, Clone)]
pub(crate) struct Topics {
    /// New entries with their checkpoint ([`Announcement`]s).
    pub(crate) entries: gossipsub::IdentTopic,
    /// Evidence of equivocation (`note::Evidence` as JSON).
    pub(crate) evidence: gossipsub::IdentTopic,
}

impl Topics {
    pub(crate) fn new(origin: &str) -> Self {
        Self {
            entries: gossipsub::IdentTopic::new(format!("fedledger/{origin}/entries/v1")),
            evidence: gossipsub::IdentTopic::new(format!("fedledger/{origin}/evidence/v1")),
        }
    }
}

/// A gossip announcement: entries `first..first+len` and a log-signed checkpoint they belong to,
/// with a consistency proof from `first + len` to the checkpoint's size (empty if equal).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// Index of the first entry.
    pub first: u64,
    /// Entry bytes (records are UTF-8 JSON).
    pub entries: Vec<String>,
    /// Signed checkpoint note.
    pub checkpoint: String,
    /// Consistency proof from `first + entries.len()` to the checkpoint, hex hashes.
    pub consistency: Vec<String>,
}

/// An announcement that passed every check that needs no storage: it parses, its checkpoint
/// is signed by the log, and its proof is made of hashes.
#[derive(Debug)]
pub(crate) struct CheckedAnnouncement {
    pub(crate) first: u64,
    pub(crate) entries: Vec<Vec<u8>>,
    /// The signed checkpoint note, verbatim.
    pub(crate) note: String,
    pub(crate) consistency: Vec<Hash>,
}

/// Why an announcement was refused before it reached storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Malformed {
    /// Not an announcement.
    Unparsable,
    /// The checkpoint is not signed by the log.
    NotSignedByTheLog,
    /// The consistency proof is not a list of hex hashes.
    BadProof,
}

impl Announcement {
    /// Parses gossip bytes and checks what can be checked without the store.
    pub(crate) fn check(
        data: &[u8],
        log_key: &VerifierKey,
    ) -> Result<CheckedAnnouncement, Malformed> {
        let a: Self = serde_json::from_slice(data).map_err(|_| Malformed::Unparsable)?;
        if SignedCheckpoint::open(a.checkpoint.as_bytes(), log_key).is_err() {
            return Err(Malformed::NotSignedByTheLog);
        }
        let consistency = a
            .consistency
            .iter()
            .map(|h| hex::decode(h).ok().and_then(|v| Hash::try_from(v).ok()))
            .collect::<Option<Vec<Hash>>>()
            .ok_or(Malformed::BadProof)?;
        Ok(CheckedAnnouncement {
            first: a.first,
            entries: a.entries.into_iter().map(String::into_bytes).collect(),
            note: a.checkpoint,
            consistency,
        })
    }
}

/// Requests of the sync protocol.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SyncRequest {
    /// The peer's latest checkpoint.
    Latest,
    /// Entries `[start, end)` with a consistency proof from `end` to `proof_to`.
    Entries {
        /// First index.
        start: u64,
        /// One past the last index.
        end: u64,
        /// Size of the checkpoint the requester syncs to.
        proof_to: u64,
    },
    /// Witness add-checkpoint: cosign `checkpoint` given a consistency proof from `old_size`.
    AddCheckpoint {
        /// Size the requester believes the witness last cosigned.
        old_size: u64,
        /// Consistency proof from `old_size` to the checkpoint.
        proof: Vec<Hash>,
        /// Signed checkpoint note.
        checkpoint: String,
    },
}

/// Responses of the sync protocol.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SyncResponse {
    /// The latest checkpoint, if any.
    Latest(Option<String>),
    /// Requested entries and proof.
    Entries {
        /// Entry bytes.
        entries: Vec<String>,
        /// Consistency proof from `end` to `proof_to`.
        consistency: Vec<Hash>,
    },
    /// A cosignature/v1 signature line.
    Cosignature(String),
    /// The witness last cosigned this size.
    Conflict(u64),
    /// Refused, with why.
    Refused(String),
}

/// Entry bytes as the protocol carries them (records are UTF-8 JSON).
pub(crate) fn utf8(b: Vec<u8>) -> Result<String, LedgerError> {
    String::from_utf8(b).map_err(|_| LedgerError::Corrupt("entry is not UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle;
    use crate::note::{Checkpoint, NoteSigner};

    #[test]
    fn announcements_are_checked_before_storage() {
        let key = ring::signature::Ed25519KeyPair::from_seed_unchecked(&[1; 32]).unwrap();
        let log = NoteSigner::log("log.example", key).unwrap();
        let cp = SignedCheckpoint::sign(
            Checkpoint::new("log.example", 0, merkle::empty_root()),
            &log,
        );
        let good = Announcement {
            first: 0,
            entries: vec!["{}".into()],
            checkpoint: cp.encode(),
            consistency: vec![hex::encode([7u8; 32])],
        };
        let data = serde_json::to_vec(&good).unwrap();
        let c = Announcement::check(&data, log.verifier_key()).unwrap();
        assert_eq!(
            (c.first, c.entries, c.consistency),
            (0, vec![b"{}".to_vec()], vec![[7u8; 32]])
        );
        assert_eq!(
            Announcement::check(b"not json", log.verifier_key()).unwrap_err(),
            Malformed::Unparsable
        );
        let other = NoteSigner::log(
            "log.example",
            ring::signature::Ed25519KeyPair::from_seed_unchecked(&[2; 32]).unwrap(),
        )
        .unwrap();
        assert_eq!(
            Announcement::check(&data, other.verifier_key()).unwrap_err(),
            Malformed::NotSignedByTheLog
        );
        let short = Announcement {
            consistency: vec!["abcd".into()],
            ..good
        };
        assert_eq!(
            Announcement::check(&serde_json::to_vec(&short).unwrap(), log.verifier_key())
                .unwrap_err(),
            Malformed::BadProof
        );
    }

    mod fuzz {
        //! Arbitrary gossip (fuzzing on stable Rust; `PROPTEST_CASES` for a long run): every
        //! message is refused or checked without panicking, and an announcement that still
        //! checks after any change carries the checkpoint the log signed.

        use super::*;
        use proptest::prelude::*;

        fn log() -> NoteSigner {
            NoteSigner::log(
                "log.example",
                ring::signature::Ed25519KeyPair::from_seed_unchecked(&[1; 32]).unwrap(),
            )
            .unwrap()
        }

        fn announcement() -> Vec<u8> {
            let cp = SignedCheckpoint::sign(
                Checkpoint::new("log.example", 0, merkle::empty_root()),
                &log(),
            );
            serde_json::to_vec(&Announcement {
                first: 0,
                entries: vec!["{}".into()],
                checkpoint: cp.encode(),
                consistency: vec![hex::encode([7u8; 32])],
            })
            .unwrap()
        }

        proptest! {
            #[test]
            fn any_gossip_bytes_are_refused_or_checked(
                data in prop::collection::vec(any::<u8>(), 0..600),
            ) {
                let _ = Announcement::check(&data, log().verifier_key());
            }

            #[test]
            fn a_changed_announcement_checks_only_with_the_signed_checkpoint(
                edits in prop::collection::vec(
                    (any::<prop::sample::Index>(), any::<u8>(), 0u8..3),
                    1..6,
                ),
            ) {
                let mut b = announcement();
                for (at, byte, op) in edits {
                    let i = at.index(b.len() + 1);
                    match op {
                        0 if i < b.len() => b[i] = byte,
                        1 => b.insert(i, byte),
                        _ if i < b.len() => {
                            b.remove(i);
                        }
                        _ => {}
                    }
                }
                if let Ok(c) = Announcement::check(&b, log().verifier_key()) {
                    let cp = SignedCheckpoint::open(c.note.as_bytes(), log().verifier_key())
                        .unwrap();
                    prop_assert_eq!(cp.checkpoint.size, 0);
                    prop_assert_eq!(cp.checkpoint.root, merkle::empty_root());
                }
            }
        }

        /// Inputs on the edges, kept as regression tests.
        #[test]
        fn corpus() {
            for data in [
                &b"{}"[..],
                b"{\"first\":18446744073709551615,\"entries\":[],\"checkpoint\":\"\",\"consistency\":[]}",
                b"{\"first\":0,\"entries\":[\"\\ud800\"],\"checkpoint\":\"x\",\"consistency\":[\"zz\"]}",
                b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
            ] {
                assert!(Announcement::check(data, log().verifier_key()).is_err());
            }
        }
    }
}
