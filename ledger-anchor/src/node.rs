//! Replication and witnessing over libp2p: gossipsub pushes new entries with their checkpoint
//! and consistency proof, a request-response protocol serves catch-up (checkpoint, entry
//! ranges, proofs) and the witness add-checkpoint exchange, and evidence of equivocation is
//! gossiped on its own topic.
//!
//! One task owns the swarm ([`spawn`]); the rest of the program talks to it through a cloneable
//! [`NodeHandle`] that sends commands over a bounded channel and gets answers on oneshot
//! channels. Every message is checked before it is trusted: gossip validation is on (strict
//! mode, signed messages) and invalid messages are rejected, which lowers the sender's peer
//! score.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, gossipsub, identify, identity, noise, tcp, yamux,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::error::LedgerError;
use crate::merkle::Hash;
use crate::note::{SignedCheckpoint, SignedNote, VerifierKey};
use crate::records::{self, Record};
use crate::store::{Evidence, Log};
use crate::witness::{Witness, WitnessRefusal};

/// Entries per catch-up request and per gossip announcement.
pub const CHUNK: u64 = 1000;
const SYNC_PROTOCOL: &str = "/fedledger/ledger-sync/1";
const COMMAND_QUEUE: usize = 64;

/// Network settings of a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Addresses to listen on (none for a dial-out-only hospital node).
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start.
    pub dial: Vec<Multiaddr>,
    /// Gossipsub heartbeat.
    pub heartbeat: Duration,
    /// Timeout of one request.
    pub request_timeout: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            listen: Vec::new(),
            dial: Vec::new(),
            heartbeat: Duration::from_millis(200),
            request_timeout: Duration::from_secs(20),
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

#[derive(NetworkBehaviour)]
struct Behaviour {
    gossipsub: gossipsub::Behaviour,
    identify: identify::Behaviour,
    sync: request_response::cbor::Behaviour<SyncRequest, SyncResponse>,
}

/// Counters of what a node did with gossip.
#[derive(Debug, Default)]
struct Stats {
    accepted: AtomicU64,
    rejected: AtomicU64,
    ignored: AtomicU64,
}

/// A snapshot of a node's gossip counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeStats {
    /// Messages accepted (and forwarded).
    pub accepted: u64,
    /// Messages rejected as invalid (the sender is penalised).
    pub rejected: u64,
    /// Messages ignored (duplicates, gaps handed to catch-up, equivocations).
    pub ignored: u64,
}

enum Topic {
    Entries,
    Evidence,
}

enum Command {
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

/// A cloneable handle to a running node.
#[derive(Clone)]
pub struct NodeHandle {
    tx: mpsc::Sender<Command>,
    peer_id: PeerId,
    log: Log,
    stats: Arc<Stats>,
    catching_up: Arc<AtomicBool>,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeHandle({})", self.peer_id)
    }
}

fn net(e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Network(e.to_string())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn topics(origin: &str) -> (gossipsub::IdentTopic, gossipsub::IdentTopic) {
    (
        gossipsub::IdentTopic::new(format!("fedledger/{origin}/entries/v1")),
        gossipsub::IdentTopic::new(format!("fedledger/{origin}/evidence/v1")),
    )
}

fn build_swarm(
    key: identity::Keypair,
    cfg: &NodeConfig,
    origin: &str,
) -> Result<Swarm<Behaviour>, LedgerError> {
    let heartbeat = cfg.heartbeat;
    let timeout = cfg.request_timeout;
    let (entries_topic, evidence_topic) = topics(origin);
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(net)?
        .with_behaviour(|key| {
            let gcfg = gossipsub::ConfigBuilder::default()
                .heartbeat_interval(heartbeat)
                .validation_mode(gossipsub::ValidationMode::Strict)
                .validate_messages()
                .max_transmit_size(8 << 20)
                .build()
                .map_err(|e| e.to_string())?;
            let mut gossipsub = gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(key.clone()),
                gcfg,
            )?;
            let mut params = gossipsub::PeerScoreParams::default();
            for t in [&entries_topic, &evidence_topic] {
                // A ledger is quiet between rounds: do not punish peers for not delivering, only
                // for delivering invalid messages.
                let tp = gossipsub::TopicScoreParams {
                    topic_weight: 1.0,
                    mesh_message_deliveries_weight: 0.0,
                    mesh_failure_penalty_weight: 0.0,
                    invalid_message_deliveries_weight: -100.0,
                    invalid_message_deliveries_decay: 0.9,
                    ..Default::default()
                };
                params.topics.insert(t.hash(), tp);
            }
            gossipsub.with_peer_score(params, gossipsub::PeerScoreThresholds::default())?;
            let identify = identify::Behaviour::new(identify::Config::new(
                "/fedledger/ledger/1".into(),
                key.public(),
            ));
            let codec = request_response::cbor::codec::Codec::default()
                .set_request_size_maximum(1 << 20)
                .set_response_size_maximum(64 << 20);
            let sync = request_response::Behaviour::with_codec(
                codec,
                [(StreamProtocol::new(SYNC_PROTOCOL), ProtocolSupport::Full)],
                request_response::Config::default().with_request_timeout(timeout),
            );
            Ok(Behaviour {
                gossipsub,
                identify,
                sync,
            })
        })
        .map_err(net)?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
        .build();
    Ok(swarm)
}

/// Starts a node serving `log` (writer or replica), optionally as a witness, and returns its
/// handle. `key` is the node's libp2p identity.
pub async fn spawn(
    config: NodeConfig,
    key: identity::Keypair,
    log: Log,
    witness: Option<Witness>,
) -> Result<NodeHandle, LedgerError> {
    let mut swarm = build_swarm(key, &config, log.origin())?;
    let (entries_topic, evidence_topic) = topics(log.origin());
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&entries_topic)
        .map_err(net)?;
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&evidence_topic)
        .map_err(net)?;
    for a in &config.listen {
        swarm.listen_on(a.clone()).map_err(net)?;
    }
    for a in &config.dial {
        swarm.dial(a.clone()).map_err(net)?;
    }
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let handle = NodeHandle {
        tx: tx.clone(),
        peer_id: *swarm.local_peer_id(),
        log: log.clone(),
        stats: Arc::new(Stats::default()),
        catching_up: Arc::new(AtomicBool::new(false)),
    };
    let ev = EventLoop {
        swarm,
        rx,
        weak: tx.downgrade(),
        handle_parts: (
            handle.stats.clone(),
            handle.catching_up.clone(),
            handle.peer_id,
        ),
        log,
        witness,
        entries_topic,
        evidence_topic,
        pending: HashMap::new(),
        listen_addrs: Vec::new(),
    };
    drop(tx);
    tokio::spawn(ev.run());
    Ok(handle)
}

impl NodeHandle {
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
        NodeStats {
            accepted: self.stats.accepted.load(Ordering::Relaxed),
            rejected: self.stats.rejected.load(Ordering::Relaxed),
            ignored: self.stats.ignored.load(Ordering::Relaxed),
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
            .log
            .latest_checkpoint()?
            .ok_or_else(|| LedgerError::Corrupt("no checkpoint to publish".into()))?;
        let size = cp.checkpoint.size;
        let note = cp.encode();
        let mut start = old_size.min(size);
        loop {
            let end = (start + CHUNK).min(size);
            let entries = self
                .log
                .entries(start, end)?
                .into_iter()
                .map(utf8)
                .collect::<Result<Vec<_>, _>>()?;
            let consistency = self
                .log
                .consistency_proof(end, size)?
                .iter()
                .map(hex::encode)
                .collect();
            let a = Announcement {
                first: start,
                entries,
                checkpoint: note.clone(),
                consistency,
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
    pub async fn catch_up_from(&self, peer: PeerId) -> Result<u64, LedgerError> {
        let SyncResponse::Latest(Some(note)) = self.request(peer, SyncRequest::Latest).await?
        else {
            return Ok(self.log.size());
        };
        let cp = SignedCheckpoint::open(note.as_bytes(), self.log.log_key())?;
        let target = cp.checkpoint.size;
        // Pipelined: the next chunk is in flight while this one is checked and stored.
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
        let mut in_flight = (self.log.size() < target).then(|| fetch(self.log.size()));
        while let Some(task) = in_flight.take() {
            let (start, end, resp) = task.await.map_err(net)?;
            if end < target {
                in_flight = Some(fetch(end));
            }
            match resp? {
                SyncResponse::Entries {
                    entries,
                    consistency,
                } => {
                    let entries: Vec<Vec<u8>> =
                        entries.into_iter().map(String::into_bytes).collect();
                    if entries.len() as u64 != end - start {
                        return Err(LedgerError::ProofInvalid(format!(
                            "peer sent {} entries for {start}..{end}",
                            entries.len()
                        )));
                    }
                    self.log
                        .append_proven(start, &entries, note.as_bytes(), &consistency)?;
                }
                SyncResponse::Refused(r) => {
                    return Err(LedgerError::Network(format!("peer refused entries: {r}")));
                }
                other => {
                    return Err(LedgerError::Network(format!(
                        "unexpected response {other:?}"
                    )));
                }
            }
        }
        self.log.observe_checkpoint(note.as_bytes())?;
        Ok(self.log.size())
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
            .log
            .checkpoint_at(size)?
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
                    let proof = self.log.consistency_proof(old.min(size), size)?;
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
            if let Some(w) = witnesses.iter().find(|w| sig.is_by(w))
                && let Err(e) = self.log.add_cosignature(size, w, sig)
            {
                tracing::warn!(witness = %w.name, error = %e, "invalid cosignature");
            }
        }
        let cp = self
            .log
            .checkpoint_at(size)?
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

/// The witness keys and quorum recorded in a log's genesis record.
pub fn genesis_witnesses(log: &Log) -> Result<(Vec<VerifierKey>, u64), LedgerError> {
    match records::validate_entry(0, log.origin(), &log.entry(0)?)? {
        Record::Federation(g) => {
            let keys = g
                .witnesses
                .keys
                .iter()
                .map(|k| VerifierKey::parse(k))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((keys, g.witnesses.quorum))
        }
        Record::Round(_) => Err(LedgerError::Corrupt(
            "entry 0 is not a genesis record".into(),
        )),
    }
}

fn utf8(b: Vec<u8>) -> Result<String, LedgerError> {
    String::from_utf8(b).map_err(|_| LedgerError::Corrupt("entry is not UTF-8".into()))
}

struct EventLoop {
    swarm: Swarm<Behaviour>,
    rx: mpsc::Receiver<Command>,
    weak: mpsc::WeakSender<Command>,
    handle_parts: (Arc<Stats>, Arc<AtomicBool>, PeerId),
    log: Log,
    witness: Option<Witness>,
    entries_topic: gossipsub::IdentTopic,
    evidence_topic: gossipsub::IdentTopic,
    pending: HashMap<OutboundRequestId, oneshot::Sender<Result<SyncResponse, LedgerError>>>,
    listen_addrs: Vec<Multiaddr>,
}

impl EventLoop {
    async fn run(mut self) {
        loop {
            tokio::select! {
                cmd = self.rx.recv() => match cmd {
                    Some(Command::Shutdown) | None => return,
                    Some(c) => self.on_command(c),
                },
                ev = self.swarm.select_next_some() => self.on_event(ev),
            }
        }
    }

    fn on_command(&mut self, c: Command) {
        match c {
            Command::Dial(a, tx) => {
                let _ = tx.send(self.swarm.dial(a).map_err(net));
            }
            Command::ListenAddrs(tx) => {
                let _ = tx.send(self.listen_addrs.clone());
            }
            Command::Peers(tx) => {
                let _ = tx.send(self.swarm.connected_peers().copied().collect());
            }
            Command::Publish(topic, data, tx) => {
                let t = match topic {
                    Topic::Entries => self.entries_topic.clone(),
                    Topic::Evidence => self.evidence_topic.clone(),
                };
                let r = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(t, data)
                    .map(|_| ())
                    .map_err(net);
                let _ = tx.send(r);
            }
            Command::Request(peer, req, tx) => {
                let id = self.swarm.behaviour_mut().sync.send_request(&peer, req);
                self.pending.insert(id, tx);
            }
            Command::Shutdown => {}
        }
    }

    fn handle(&self) -> Option<NodeHandle> {
        let tx = self.weak.upgrade()?;
        let (stats, catching_up, peer_id) = self.handle_parts.clone();
        Some(NodeHandle {
            tx,
            peer_id,
            log: self.log.clone(),
            stats,
            catching_up,
        })
    }

    /// Starts a background catch-up from `peer` unless one is running.
    fn catch_up(&self, peer: PeerId) {
        let Some(h) = self.handle() else { return };
        if h.catching_up.swap(true, Ordering::SeqCst) {
            return;
        }
        tokio::spawn(async move {
            if let Err(e) = h.catch_up_from(peer).await {
                tracing::debug!(%peer, error = %e, "catch-up failed");
            }
            h.catching_up.store(false, Ordering::SeqCst);
        });
    }

    fn on_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => self.listen_addrs.push(address),
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                ..
            } if num_established.get() == 1 => {
                self.catch_up(peer_id);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => {
                let acceptance = if message.topic == self.entries_topic.hash() {
                    self.on_announcement(propagation_source, &message.data)
                } else if message.topic == self.evidence_topic.hash() {
                    self.on_evidence(&message.data)
                } else {
                    gossipsub::MessageAcceptance::Reject
                };
                let stats = &self.handle_parts.0;
                match acceptance {
                    gossipsub::MessageAcceptance::Accept => {
                        stats.accepted.fetch_add(1, Ordering::Relaxed)
                    }
                    gossipsub::MessageAcceptance::Reject => {
                        stats.rejected.fetch_add(1, Ordering::Relaxed)
                    }
                    gossipsub::MessageAcceptance::Ignore => {
                        stats.ignored.fetch_add(1, Ordering::Relaxed)
                    }
                };
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&message_id, &propagation_source, acceptance);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Sync(request_response::Event::Message {
                peer,
                message,
                ..
            })) => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    let resp = self.serve(request);
                    let _ = self.swarm.behaviour_mut().sync.send_response(channel, resp);
                    let _ = peer;
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some(tx) = self.pending.remove(&request_id) {
                        let _ = tx.send(Ok(response));
                    }
                }
            },
            SwarmEvent::Behaviour(BehaviourEvent::Sync(
                request_response::Event::OutboundFailure {
                    request_id, error, ..
                },
            )) => {
                if let Some(tx) = self.pending.remove(&request_id) {
                    let _ = tx.send(Err(net(error)));
                }
            }
            _ => {}
        }
    }

    fn evidence_found(&mut self, err: &LedgerError) {
        // The store has recorded it; spread what it recorded.
        tracing::error!(error = %err, "equivocation detected");
        if let Ok(all) = self.log.evidence() {
            for ev in all {
                if let Ok(data) = serde_json::to_vec(&ev) {
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .gossipsub
                        .publish(self.evidence_topic.clone(), data);
                }
            }
        }
    }

    fn on_announcement(&mut self, source: PeerId, data: &[u8]) -> gossipsub::MessageAcceptance {
        use gossipsub::MessageAcceptance::{Accept, Ignore, Reject};
        let Ok(a) = serde_json::from_slice::<Announcement>(data) else {
            return Reject;
        };
        if SignedCheckpoint::open(a.checkpoint.as_bytes(), self.log.log_key()).is_err() {
            tracing::warn!(%source, "rejected an announcement whose checkpoint is not signed by the log");
            return Reject;
        }
        let Some(consistency) = a
            .consistency
            .iter()
            .map(|h| hex::decode(h).ok().and_then(|v| Hash::try_from(v).ok()))
            .collect::<Option<Vec<Hash>>>()
        else {
            return Reject;
        };
        let size = self.log.size();
        if a.first > size {
            return match self.log.observe_checkpoint(a.checkpoint.as_bytes()) {
                Err(e @ LedgerError::Equivocation(_)) => {
                    self.evidence_found(&e);
                    Ignore
                }
                _ => {
                    self.catch_up(source);
                    Ignore
                }
            };
        }
        let entries: Vec<Vec<u8>> = a.entries.into_iter().map(String::into_bytes).collect();
        match self
            .log
            .append_proven(a.first, &entries, a.checkpoint.as_bytes(), &consistency)
        {
            Ok(cp) => {
                if self.log.size() < cp.checkpoint.size {
                    self.catch_up(source);
                }
                Accept
            }
            Err(e @ LedgerError::Equivocation(_)) => {
                self.evidence_found(&e);
                Ignore
            }
            Err(_) => match self.log.observe_checkpoint(a.checkpoint.as_bytes()) {
                Err(e @ LedgerError::Equivocation(_)) => {
                    self.evidence_found(&e);
                    Ignore
                }
                _ => Reject,
            },
        }
    }

    fn on_evidence(&mut self, data: &[u8]) -> gossipsub::MessageAcceptance {
        use gossipsub::MessageAcceptance::{Accept, Ignore, Reject};
        let Ok(ev) = serde_json::from_slice::<Evidence>(data) else {
            return Reject;
        };
        if self.log.evidence().is_ok_and(|all| all.contains(&ev)) {
            return Ignore;
        }
        let confirmed = ev.check_self_evident(self.log.log_key()).is_ok()
            || [&ev.first, &ev.second].iter().any(|n| {
                matches!(
                    self.log.observe_checkpoint(n.as_bytes()),
                    Err(LedgerError::Equivocation(_))
                )
            });
        if confirmed && self.log.record_evidence(&ev).is_ok() {
            tracing::error!(reason = %ev.reason, "equivocation evidence received");
            Accept
        } else {
            Reject
        }
    }

    fn serve(&mut self, req: SyncRequest) -> SyncResponse {
        let r = match req {
            SyncRequest::Latest => self
                .log
                .latest_checkpoint()
                .map(|c| SyncResponse::Latest(c.map(|c| c.encode()))),
            SyncRequest::Entries {
                start,
                end,
                proof_to,
            } => {
                if end < start || end - start > CHUNK || proof_to < end {
                    return SyncResponse::Refused(format!(
                        "bad range {start}..{end} to {proof_to}"
                    ));
                }
                self.log.entries(start, end).and_then(|es| {
                    let entries = es.into_iter().map(utf8).collect::<Result<Vec<_>, _>>()?;
                    Ok(SyncResponse::Entries {
                        entries,
                        consistency: self.log.consistency_proof(end, proof_to)?,
                    })
                })
            }
            SyncRequest::AddCheckpoint {
                old_size,
                proof,
                checkpoint,
            } => {
                let Some(w) = &self.witness else {
                    return SyncResponse::Refused("not a witness".into());
                };
                return match w.add_checkpoint(old_size, &proof, checkpoint.as_bytes(), now_secs()) {
                    Ok(sig) => SyncResponse::Cosignature(sig.line()),
                    Err(WitnessRefusal::Conflict { size }) => SyncResponse::Conflict(size),
                    Err(WitnessRefusal::Equivocation(ev)) => {
                        let _ = self.log.record_evidence(&ev);
                        self.evidence_found(&LedgerError::Equivocation(ev.reason.clone()));
                        SyncResponse::Refused(format!("equivocation: {}", ev.reason))
                    }
                    Err(e) => SyncResponse::Refused(e.to_string()),
                };
            }
        };
        r.unwrap_or_else(|e| SyncResponse::Refused(e.to_string()))
    }
}
