//! The cloneable [`NodeHandle`]: what the rest of the program calls. Each call is a
//! [`Command`] sent to the event loop over a bounded channel, answered on a oneshot channel;
//! the handle's own store work (reading entries to publish, appending caught-up entries,
//! storing cosignatures) runs on the blocking pool, never on a runtime thread.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot};

use super::protocol::{Announcement, CHUNK, SyncRequest, SyncResponse, utf8};
use crate::error::LedgerError;
use crate::note::Evidence;
use crate::note::{SignedCheckpoint, SignedNote, VerifierKey};
use crate::store::{CheckedChunk, Log};

/// Chunk requests a catch-up keeps in flight.
const CATCH_UP_REQUESTS: usize = 3;
/// Chunks checked and waiting for the writer.
const CHECKED_CHUNKS: usize = 4;
/// A catch-up write takes every checked chunk waiting until it holds this many bytes of
/// entries (at least one chunk), and flushes once.
const WRITE_BYTES: usize = 8 << 20;

/// Which gossip topic to publish on.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Topic {
    Entries,
    Evidence,
}

/// What a handle asks of the event loop.
pub(crate) enum Command {
    Dial(Multiaddr, oneshot::Sender<Result<(), LedgerError>>),
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    Peers(oneshot::Sender<Vec<PeerId>>),
    Publish(Topic, Vec<u8>, oneshot::Sender<Result<(), LedgerError>>),
    Request(
        PeerId,
        SyncRequest,
        oneshot::Sender<Result<SyncResponse, LedgerError>>,
    ),
    Shutdown,
}

/// Counters of what a node did with gossip.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) accepted: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) ignored: AtomicU64,
}

/// State shared by a node's handles and its event loop.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) stats: Stats,
    /// Inbound connections refused by the allow-list.
    pub(crate) refused_peers: Arc<AtomicU64>,
    /// A catch-up is running (at most one at a time).
    pub(crate) catching_up: AtomicBool,
}

/// A snapshot of a node's gossip counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeStats {
    /// Messages accepted (and forwarded).
    pub accepted: u64,
    /// Messages rejected as invalid (the sender is penalised).
    pub rejected: u64,
    /// Messages ignored (duplicates, gaps handed to catch-up, equivocations, local storage
    /// failures, and messages that arrived while the validation queue was full).
    pub ignored: u64,
    /// Inbound connections refused because the peer is not on the allow-list.
    pub refused_peers: u64,
}

/// A cloneable handle to a running node.
#[derive(Clone)]
pub struct NodeHandle {
    tx: mpsc::Sender<Command>,
    peer_id: PeerId,
    log: Log,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeHandle({})", self.peer_id)
    }
}

impl NodeHandle {
    pub(crate) fn new(
        tx: mpsc::Sender<Command>,
        peer_id: PeerId,
        log: Log,
        shared: Arc<Shared>,
    ) -> Self {
        Self {
            tx,
            peer_id,
            log,
            shared,
        }
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, LedgerError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| LedgerError::Network("node stopped".into()))?;
        rx.await
            .map_err(|_| LedgerError::Network("node stopped".into()))
    }

    /// Runs store work on the blocking pool, so that no runtime thread waits on the disk.
    async fn storage<T, F>(&self, f: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(&Log) -> Result<T, LedgerError> + Send + 'static,
    {
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || f(&log))
            .await
            .map_err(|e| LedgerError::io("ledger storage task", std::io::Error::other(e)))?
    }

    /// Starts a background catch-up from `peer` unless one is running.
    pub(crate) fn catch_up_in_background(self, peer: PeerId) {
        if self.shared.catching_up.swap(true, Ordering::SeqCst) {
            return;
        }
        tokio::spawn(async move {
            if let Err(e) = self.catch_up_from(peer).await {
                tracing::debug!(%peer, error = %e, "catch-up failed");
            }
            self.shared.catching_up.store(false, Ordering::SeqCst);
        });
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The log this node serves.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Gossip counters.
    pub fn stats(&self) -> NodeStats {
        let s = &self.shared.stats;
        NodeStats {
            accepted: s.accepted.load(Ordering::Relaxed),
            rejected: s.rejected.load(Ordering::Relaxed),
            ignored: s.ignored.load(Ordering::Relaxed),
            refused_peers: self.shared.refused_peers.load(Ordering::Relaxed),
        }
    }

    /// Addresses the node listens on, waiting up to `wait` for the first one.
    pub async fn listen_addrs(&self, wait: Duration) -> Result<Vec<Multiaddr>, LedgerError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let a = self.call(Command::ListenAddrs).await?;
            if !a.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(a);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Dials a peer.
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), LedgerError> {
        self.call(|tx| Command::Dial(addr, tx)).await?
    }

    /// Connected peers.
    pub async fn peers(&self) -> Result<Vec<PeerId>, LedgerError> {
        self.call(Command::Peers).await
    }

    /// Sends one sync request to `peer`.
    pub async fn request(
        &self,
        peer: PeerId,
        req: SyncRequest,
    ) -> Result<SyncResponse, LedgerError> {
        self.call(|tx| Command::Request(peer, req, tx)).await?
    }

    /// Publishes raw bytes on the entries topic (tools and tests; [`Self::publish_since`] is
    /// the normal way).
    pub async fn publish_raw(&self, data: Vec<u8>) -> Result<(), LedgerError> {
        self.call(|tx| Command::Publish(Topic::Entries, data, tx))
            .await?
    }

    /// Gossips entries `old_size..` with the latest checkpoint, in announcements of at most
    /// [`CHUNK`] entries, each with a consistency proof to that checkpoint.
    pub async fn publish_since(&self, old_size: u64) -> Result<(), LedgerError> {
        let cp = self
            .storage(|log| log.latest_checkpoint())
            .await?
            .ok_or_else(|| LedgerError::Corrupt("no checkpoint to publish".into()))?;
        let size = cp.checkpoint.size;
        let note = cp.encode();
        let mut start = old_size.min(size);
        loop {
            let end = (start + CHUNK).min(size);
            let (entries, consistency) = self
                .storage(move |log| {
                    let entries = log
                        .entries(start, end)?
                        .into_iter()
                        .map(utf8)
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok((entries, log.consistency_proof(end, size)?))
                })
                .await?;
            let a = Announcement {
                first: start,
                entries,
                checkpoint: note.clone(),
                consistency: consistency.iter().map(hex::encode).collect(),
            };
            let data = serde_json::to_vec(&a)
                .map_err(|e| LedgerError::Corrupt(format!("encode announcement: {e}")))?;
            self.call(|tx| Command::Publish(Topic::Entries, data, tx))
                .await??;
            start = end;
            if start >= size {
                return Ok(());
            }
        }
    }

    /// Gossips evidence of equivocation.
    pub async fn publish_evidence(&self, ev: &Evidence) -> Result<(), LedgerError> {
        let data = serde_json::to_vec(ev)
            .map_err(|e| LedgerError::Corrupt(format!("encode evidence: {e}")))?;
        self.call(|tx| Command::Publish(Topic::Evidence, data, tx))
            .await?
    }

    /// Fetches and verifies everything `peer` has beyond this log: its latest checkpoint, then
    /// entries in chunks, each proven a prefix of that checkpoint. Returns the new size.
    ///
    /// Three stages overlap: a few chunk requests are in flight (3); each answer, taken in
    /// order, is schema-checked and hashed on the blocking pool as it arrives; and the writer
    /// stores every chunk checked by the time it is free (up to 8 MiB of entries) with one
    /// flush, each chunk proven a prefix of the checkpoint first. What is held at once is
    /// bounded by those counts and the checked chunks queued for the writer (4), each answer
    /// by the protocol's response limit; never by a size the peer declares.
    pub async fn catch_up_from(&self, peer: PeerId) -> Result<u64, LedgerError> {
        let SyncResponse::Latest(Some(note)) = self.request(peer, SyncRequest::Latest).await?
        else {
            return Ok(self.log.size());
        };
        let cp = SignedCheckpoint::open(note.as_bytes(), self.log.log_key())?;
        let target = cp.checkpoint.size;
        let start = self.log.size();
        if start < target {
            let (tx, rx) = mpsc::channel(CHECKED_CHUNKS);
            let (fetched, written) = tokio::join!(
                self.fetch_and_check(peer, start, target, tx),
                self.write_checked(rx, note.clone()),
            );
            // A writer that failed stops the fetcher quietly: its error is the one to report.
            written?;
            fetched?;
        }
        self.storage(move |log| log.observe_checkpoint(note.as_bytes()))
            .await?;
        Ok(self.log.size())
    }

    /// Catch-up's first two stages: requests entries `start..target` from `peer` in chunks of
    /// [`CHUNK`], [`CATCH_UP_REQUESTS`] at a time, takes the answers in order, checks each on
    /// the blocking pool and hands it to the writer. Stops quietly when the writer has.
    async fn fetch_and_check(
        &self,
        peer: PeerId,
        start: u64,
        target: u64,
        checked: mpsc::Sender<CheckedChunk>,
    ) -> Result<(), LedgerError> {
        let fetch = |start: u64| {
            let h = self.clone();
            let end = (start + CHUNK).min(target);
            tokio::spawn(async move {
                let r = h
                    .request(
                        peer,
                        SyncRequest::Entries {
                            start,
                            end,
                            proof_to: target,
                        },
                    )
                    .await;
                (start, end, r)
            })
        };
        let mut in_flight = VecDeque::with_capacity(CATCH_UP_REQUESTS);
        let mut next = start;
        let result = async {
            loop {
                while in_flight.len() < CATCH_UP_REQUESTS && next < target {
                    in_flight.push_back(fetch(next));
                    next = (next + CHUNK).min(target);
                }
                let Some(task) = in_flight.pop_front() else {
                    return Ok(());
                };
                let (start, end, resp) = task.await.map_err(LedgerError::network)?;
                let (entries, consistency) = match resp? {
                    SyncResponse::Entries {
                        entries,
                        consistency,
                    } => (entries, consistency),
                    SyncResponse::Refused(r) => {
                        return Err(LedgerError::Network(format!("peer refused entries: {r}")));
                    }
                    other => {
                        return Err(LedgerError::Network(format!(
                            "unexpected response {other:?}"
                        )));
                    }
                };
                if entries.len() as u64 != end - start {
                    return Err(LedgerError::ProofInvalid(format!(
                        "peer sent {} entries for {start}..{end}",
                        entries.len()
                    )));
                }
                let entries: Vec<Vec<u8>> = entries.into_iter().map(String::into_bytes).collect();
                let chunk = self
                    .storage(move |log| log.check_entries(start, entries, consistency))
                    .await?;
                if checked.send(chunk).await.is_err() {
                    return Ok(());
                }
            }
        }
        .await;
        for task in in_flight {
            task.abort();
        }
        result
    }

    /// Catch-up's last stage: writes checked chunks in order, each write taking every chunk
    /// waiting (at least one, up to [`WRITE_BYTES`] of entries) in one batch with one flush.
    async fn write_checked(
        &self,
        mut chunks: mpsc::Receiver<CheckedChunk>,
        note: String,
    ) -> Result<(), LedgerError> {
        while let Some(first) = chunks.recv().await {
            let mut bytes = first.bytes();
            let mut group = vec![first];
            while bytes < WRITE_BYTES {
                let Ok(c) = chunks.try_recv() else {
                    break;
                };
                bytes += c.bytes();
                group.push(c);
            }
            let note = note.clone();
            self.storage(move |log| log.append_checked(&group, note.as_bytes()))
                .await?;
        }
        Ok(())
    }

    /// Asks every connected peer to cosign the checkpoint at `size` (add-checkpoint with a
    /// consistency proof; a conflict is retried once from the size the witness reports).
    /// Cosignatures by `witnesses` are verified and stored with the checkpoint. Returns how many
    /// distinct witnesses have now cosigned it; the round is anchored when that reaches the
    /// genesis quorum.
    pub async fn collect_cosignatures(
        &self,
        size: u64,
        witnesses: &[VerifierKey],
    ) -> Result<usize, LedgerError> {
        let cp = self
            .storage(move |log| log.checkpoint_at(size))
            .await?
            .ok_or_else(|| LedgerError::Corrupt(format!("no checkpoint at size {size}")))?;
        let mut base = cp.note.clone();
        base.signatures.retain(|s| s.is_by(self.log.log_key()));
        let note = base.encode();
        let peers = self.peers().await?;
        let asks = peers.into_iter().map(|peer| {
            let note = note.clone();
            async move {
                let mut old = 0;
                for _ in 0..2 {
                    let from = old.min(size);
                    let proof = self
                        .storage(move |log| log.consistency_proof(from, size))
                        .await?;
                    match self
                        .request(
                            peer,
                            SyncRequest::AddCheckpoint {
                                old_size: old,
                                proof,
                                checkpoint: note.clone(),
                            },
                        )
                        .await?
                    {
                        SyncResponse::Cosignature(line) => return Ok(Some(line)),
                        SyncResponse::Conflict(s) if s <= size && s != old => old = s,
                        _ => return Ok(None),
                    }
                }
                Ok::<_, LedgerError>(None)
            }
        });
        let mut cosignatures = Vec::new();
        for line in futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .flatten()
        {
            let parsed = SignedNote::parse(format!("{}\n{line}\n", base.text).as_bytes());
            let Some(sig) = parsed.ok().and_then(|n| n.signatures.into_iter().next()) else {
                continue;
            };
            if let Some(w) = witnesses.iter().find(|w| sig.is_by(w)) {
                cosignatures.push((w.clone(), sig));
            }
        }
        let cp = self
            .storage(move |log| {
                for (w, sig) in cosignatures {
                    if let Err(e) = log.add_cosignature(size, &w, sig) {
                        tracing::warn!(witness = %w.name, error = %e, "invalid cosignature");
                    }
                }
                log.checkpoint_at(size)
            })
            .await?
            .ok_or_else(|| LedgerError::Corrupt(format!("no checkpoint at size {size}")))?;
        // Replicas keep cosigned checkpoints too, so auditors' exports carry the cosignatures.
        let a = Announcement {
            first: size,
            entries: Vec::new(),
            checkpoint: cp.encode(),
            consistency: Vec::new(),
        };
        if let Ok(data) = serde_json::to_vec(&a)
            && let Err(e) = self
                .call(|tx| Command::Publish(Topic::Entries, data, tx))
                .await?
        {
            tracing::debug!(error = %e, "could not gossip the cosigned checkpoint");
        }
        Ok(cp.note.valid_cosigners(witnesses).len())
    }

    /// Stops the node.
    pub async fn shutdown(&self) {
        let _ = self.tx.send(Command::Shutdown).await;
    }
}
