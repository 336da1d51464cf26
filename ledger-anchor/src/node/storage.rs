//! What gossip and sync requests do to the store: plain blocking functions over a [`Log`] and
//! a [`Witness`] that read, write and flush sled. The event loop never calls them itself; it
//! hands them to the blocking pool and takes their answers back on its own channel (see
//! `event_loop`), so a slow disk delays only the work that needs it.

use std::time::{SystemTime, UNIX_EPOCH};

use libp2p::gossipsub::MessageAcceptance;

use super::protocol::{CHUNK, CheckedAnnouncement, SyncRequest, SyncResponse, utf8};
use crate::error::LedgerError;
use crate::note::Evidence;
use crate::store::Log;
use crate::witness::{Witness, WitnessRefusal};

/// What the store made of a gossip message.
#[derive(Debug)]
pub(crate) struct Verdict {
    /// What to tell gossipsub (accept and forward, reject and penalise, or ignore).
    pub(crate) acceptance: MessageAcceptance,
    /// The sender has entries this log lacks: catch up from it.
    pub(crate) catch_up: bool,
    /// Equivocation was found: every piece of evidence held, to gossip.
    pub(crate) evidence: Vec<Evidence>,
}

impl Verdict {
    fn of(acceptance: MessageAcceptance) -> Self {
        Self {
            acceptance,
            catch_up: false,
            evidence: Vec::new(),
        }
    }

    /// The store has recorded evidence of equivocation: spread what it recorded.
    fn equivocation(log: &Log, err: &LedgerError) -> Self {
        tracing::error!(error = %err, "equivocation detected");
        Self {
            acceptance: MessageAcceptance::Ignore,
            catch_up: false,
            evidence: log.evidence().unwrap_or_default(),
        }
    }
}

/// Appends the entries of an announcement that are proven a prefix of its checkpoint.
/// Announcements beyond this log's size start a catch-up; a checkpoint that conflicts with
/// what is held becomes evidence; a failing disk is this node's problem, not the sender's.
pub(crate) fn apply_announcement(log: &Log, a: CheckedAnnouncement) -> Verdict {
    use MessageAcceptance::{Accept, Ignore, Reject};
    if a.first > log.size() {
        return match log.observe_checkpoint(a.note.as_bytes()) {
            Err(e @ LedgerError::Equivocation(_)) => Verdict::equivocation(log, &e),
            _ => Verdict {
                catch_up: true,
                ..Verdict::of(Ignore)
            },
        };
    }
    match log.append_proven(a.first, &a.entries, a.note.as_bytes(), &a.consistency) {
        Ok(cp) => Verdict {
            catch_up: log.size() < cp.checkpoint.size,
            ..Verdict::of(Accept)
        },
        Err(e @ LedgerError::Equivocation(_)) => Verdict::equivocation(log, &e),
        Err(e) if e.is_local_storage() => {
            tracing::error!(error = %e, "could not store gossiped entries");
            Verdict::of(Ignore)
        }
        Err(_) => match log.observe_checkpoint(a.note.as_bytes()) {
            Err(e @ LedgerError::Equivocation(_)) => Verdict::equivocation(log, &e),
            _ => Verdict::of(Reject),
        },
    }
}

/// Records gossiped evidence that this node can confirm: self-evident (two roots for one
/// size) or contradicting what this log holds.
pub(crate) fn apply_evidence(log: &Log, ev: &Evidence) -> Verdict {
    use MessageAcceptance::{Accept, Ignore, Reject};
    if log.evidence().is_ok_and(|all| all.contains(ev)) {
        return Verdict::of(Ignore);
    }
    let confirmed = ev.check_self_evident(log.log_key()).is_ok()
        || [&ev.first, &ev.second].iter().any(|n| {
            matches!(
                log.observe_checkpoint(n.as_bytes()),
                Err(LedgerError::Equivocation(_))
            )
        });
    if confirmed && log.record_evidence(ev).is_ok() {
        tracing::error!(reason = %ev.reason, "equivocation evidence received");
        Verdict::of(Accept)
    } else {
        Verdict::of(Reject)
    }
}

/// Answers one sync request. Returns the response and, when the request revealed
/// equivocation, every piece of evidence held (to gossip).
pub(crate) fn serve(
    log: &Log,
    witness: Option<&Witness>,
    req: SyncRequest,
) -> (SyncResponse, Vec<Evidence>) {
    let r = match req {
        SyncRequest::Latest => log
            .latest_checkpoint()
            .map(|c| SyncResponse::Latest(c.map(|c| c.encode()))),
        SyncRequest::Entries {
            start,
            end,
            proof_to,
        } => {
            if end < start || end - start > CHUNK || proof_to < end {
                return (
                    SyncResponse::Refused(format!("bad range {start}..{end} to {proof_to}")),
                    Vec::new(),
                );
            }
            log.entries(start, end).and_then(|es| {
                let entries = es.into_iter().map(utf8).collect::<Result<Vec<_>, _>>()?;
                Ok(SyncResponse::Entries {
                    entries,
                    consistency: log.consistency_proof(end, proof_to)?,
                })
            })
        }
        SyncRequest::AddCheckpoint {
            old_size,
            proof,
            checkpoint,
        } => {
            let Some(w) = witness else {
                return (SyncResponse::Refused("not a witness".into()), Vec::new());
            };
            return match w.add_checkpoint(old_size, &proof, checkpoint.as_bytes(), now_secs()) {
                Ok(sig) => (SyncResponse::Cosignature(sig.line()), Vec::new()),
                Err(WitnessRefusal::Conflict { size }) => {
                    (SyncResponse::Conflict(size), Vec::new())
                }
                Err(WitnessRefusal::Unprocessable {
                    evidence: Some(ev), ..
                }) => {
                    let _ = log.record_evidence(&ev);
                    let found =
                        Verdict::equivocation(log, &LedgerError::Equivocation(ev.reason.clone()));
                    (
                        SyncResponse::Refused(format!("equivocation: {}", ev.reason)),
                        found.evidence,
                    )
                }
                Err(e) => (SyncResponse::Refused(e.to_string()), Vec::new()),
            };
        }
    };
    (
        r.unwrap_or_else(|e| SyncResponse::Refused(e.to_string())),
        Vec::new(),
    )
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    //! Arbitrary catch-up requests (fuzzing on stable Rust; `PROPTEST_CASES` for a long run):
    //! answered or refused without panicking, and never with more than [`CHUNK`] entries,
    //! whatever range is claimed.

    use super::*;
    use crate::note::NoteSigner;
    use proptest::prelude::*;

    fn request() -> impl Strategy<Value = SyncRequest> {
        prop_oneof![
            Just(SyncRequest::Latest),
            (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(start, end, proof_to)| {
                SyncRequest::Entries {
                    start,
                    end,
                    proof_to,
                }
            }),
            (0u64..4, 0u64..4, 0u64..4).prop_map(|(start, end, proof_to)| {
                SyncRequest::Entries {
                    start,
                    end,
                    proof_to,
                }
            }),
            (
                any::<u64>(),
                prop::collection::vec(any::<[u8; 32]>(), 0..70),
                ".{0,200}"
            )
                .prop_map(|(old_size, proof, checkpoint)| SyncRequest::AddCheckpoint {
                    old_size,
                    proof,
                    checkpoint,
                }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        #[test]
        fn any_sync_request_is_answered_or_refused_within_a_chunk(
            requests in prop::collection::vec(request(), 1..20),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let signer = NoteSigner::log(
                "fed",
                ring::signature::Ed25519KeyPair::from_seed_unchecked(&[4; 32]).unwrap(),
            )
            .unwrap();
            let log = Log::open(dir.path(), "fed", signer).unwrap();
            for r in requests {
                if let (SyncResponse::Entries { entries, .. }, _) = serve(&log, None, r) {
                    prop_assert!(entries.len() as u64 <= CHUNK);
                }
            }
        }
    }
}
