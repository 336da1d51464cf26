//! The event loop: one task owns the libp2p swarm (gossipsub, identify, request-response) and
//! answers handles' commands (rust-libp2p's `file-sharing` example's shape). It does no store
//! work itself: a gossip message is checked as far as it can be without the store, then queued
//! for the validator task, and gossipsub is told the verdict when it comes back (delayed
//! validation); a sync request is served on the blocking pool and its response channel comes
//! back with the answer. Both come back as [`Done`] messages on the loop's own channel.
//!
//! Everything is bounded: the command and result channels; at most [`MAX_VALIDATIONS`] gossip
//! validations queued or running (past that, a message is ignored, not queued); at most
//! [`MAX_SERVING`] sync requests being served (past that, a request is refused as busy).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use libp2p::gossipsub::{self, MessageAcceptance, MessageId};
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, identify, identity, noise, tcp, yamux};
use tokio::sync::{mpsc, oneshot};

use super::allow::{AllowList, Gate};
use super::handle::{Command, NodeHandle, Shared, Topic};
use super::protocol::{
    Announcement, CheckedAnnouncement, IDENTIFY_PROTOCOL, MAX_GOSSIP_BYTES, MAX_REQUEST_BYTES,
    MAX_RESPONSE_BYTES, Malformed, SYNC_PROTOCOL, SyncRequest, SyncResponse, Topics,
};
use super::storage::{self, Verdict};
use crate::error::LedgerError;
use crate::note::Evidence;
use crate::store::Log;
use crate::witness::Witness;

/// Commands queued from handles to the loop.
const COMMAND_QUEUE: usize = 64;
/// Gossip validations queued for or running on the validator; past this, messages are ignored.
const MAX_VALIDATIONS: usize = 64;
/// Sync requests being served at once; past this, requests are refused as busy.
const MAX_SERVING: usize = 16;
/// How long gossipsub keeps a message waiting for its verdict (at least; it keeps messages for
/// a whole number of heartbeats). A verdict that comes later is dropped: the message is not
/// forwarded, though the store keeps what it appended.
const VALIDATION_WINDOW: Duration = Duration::from_secs(10);

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
    /// Peers allowed to dial in, by role; empty: any peer may.
    pub allow: AllowList,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            listen: Vec::new(),
            dial: Vec::new(),
            heartbeat: Duration::from_millis(200),
            request_timeout: Duration::from_secs(20),
            allow: AllowList::default(),
        }
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    // First: a peer it refuses never reaches the others.
    gate: Gate,
    gossipsub: gossipsub::Behaviour,
    identify: identify::Behaviour,
    sync: request_response::cbor::Behaviour<SyncRequest, SyncResponse>,
}

fn build_swarm(
    key: identity::Keypair,
    cfg: &NodeConfig,
    topics: &Topics,
    refused: Arc<std::sync::atomic::AtomicU64>,
) -> Result<Swarm<Behaviour>, LedgerError> {
    let allow = cfg.allow.clone();
    let heartbeat = cfg.heartbeat;
    let timeout = cfg.request_timeout;
    // Keep unvalidated messages for the validation window (at least the default 5 heartbeats).
    let history = (VALIDATION_WINDOW.as_millis() / heartbeat.as_millis().max(1)).max(5);
    let history = usize::try_from(history).unwrap_or(usize::MAX);
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(LedgerError::network)?
        .with_behaviour(|key| {
            let gcfg = gossipsub::ConfigBuilder::default()
                .heartbeat_interval(heartbeat)
                .history_length(history)
                .validation_mode(gossipsub::ValidationMode::Strict)
                .validate_messages()
                .max_transmit_size(MAX_GOSSIP_BYTES)
                .build()
                .map_err(|e| e.to_string())?;
            let mut gossipsub = gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(key.clone()),
                gcfg,
            )?;
            let mut params = gossipsub::PeerScoreParams::default();
            for t in [&topics.entries, &topics.evidence] {
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
                IDENTIFY_PROTOCOL.into(),
                key.public(),
            ));
            let codec = request_response::cbor::codec::Codec::default()
                .set_request_size_maximum(MAX_REQUEST_BYTES)
                .set_response_size_maximum(MAX_RESPONSE_BYTES);
            let sync = request_response::Behaviour::with_codec(
                codec,
                [(StreamProtocol::new(SYNC_PROTOCOL), ProtocolSupport::Full)],
                request_response::Config::default().with_request_timeout(timeout),
            );
            Ok(Behaviour {
                gate: Gate::new(allow, refused),
                gossipsub,
                identify,
                sync,
            })
        })
        .map_err(LedgerError::network)?
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
    let topics = Topics::new(log.origin());
    let shared = Arc::new(Shared::default());
    let mut swarm = build_swarm(key, &config, &topics, shared.refused_peers.clone())?;
    for t in [&topics.entries, &topics.evidence] {
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(t)
            .map_err(LedgerError::network)?;
    }
    for a in &config.listen {
        swarm.listen_on(a.clone()).map_err(LedgerError::network)?;
    }
    for a in &config.dial {
        swarm.dial(a.clone()).map_err(LedgerError::network)?;
    }
    let (tx, commands) = mpsc::channel(COMMAND_QUEUE);
    let (jobs, jobs_rx) = mpsc::channel(MAX_VALIDATIONS);
    let (done_tx, done) = mpsc::channel(MAX_VALIDATIONS + MAX_SERVING);
    let peer_id = *swarm.local_peer_id();
    let handle = NodeHandle::new(tx.clone(), peer_id, log.clone(), shared.clone());
    tokio::spawn(validator(log.clone(), jobs_rx, done_tx.clone()));
    let ev = EventLoop {
        swarm,
        commands,
        weak: tx.downgrade(),
        peer_id,
        shared,
        log,
        witness,
        topics,
        pending: HashMap::new(),
        listen_addrs: Vec::new(),
        jobs,
        validating: 0,
        serving: 0,
        done_tx,
        done,
    };
    drop(tx);
    tokio::spawn(ev.run());
    Ok(handle)
}

/// A gossip message waiting for the store's verdict.
struct Validation {
    id: MessageId,
    source: PeerId,
    work: Work,
}

enum Work {
    Announcement(CheckedAnnouncement),
    Evidence(Evidence),
}

/// Store work finished off the loop, handed back to it.
enum Done {
    /// Tell gossipsub what became of a message.
    Validated {
        id: MessageId,
        source: PeerId,
        verdict: Verdict,
    },
    /// Send a sync response.
    Respond {
        channel: ResponseChannel<SyncResponse>,
        response: SyncResponse,
        evidence: Vec<Evidence>,
    },
}

/// Validates gossip against the store one message at a time, in arrival order (so that
/// consecutive announcements append in order), each on the blocking pool.
async fn validator(log: Log, mut jobs: mpsc::Receiver<Validation>, done: mpsc::Sender<Done>) {
    while let Some(Validation { id, source, work }) = jobs.recv().await {
        let log = log.clone();
        let verdict = tokio::task::spawn_blocking(move || match work {
            Work::Announcement(a) => storage::apply_announcement(&log, a),
            Work::Evidence(ev) => storage::apply_evidence(&log, &ev),
        })
        .await
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "gossip validation failed");
            Verdict {
                acceptance: MessageAcceptance::Ignore,
                catch_up: false,
                evidence: Vec::new(),
            }
        });
        if done
            .send(Done::Validated {
                id,
                source,
                verdict,
            })
            .await
            .is_err()
        {
            return; // the loop has stopped
        }
    }
}

struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    /// Lets the loop make handles (for catch-up) without keeping itself alive.
    weak: mpsc::WeakSender<Command>,
    peer_id: PeerId,
    shared: Arc<Shared>,
    log: Log,
    witness: Option<Witness>,
    topics: Topics,
    pending: HashMap<OutboundRequestId, oneshot::Sender<Result<SyncResponse, LedgerError>>>,
    listen_addrs: Vec<Multiaddr>,
    /// Gossip waiting for the validator.
    jobs: mpsc::Sender<Validation>,
    /// Validations queued or running (at most [`MAX_VALIDATIONS`]).
    validating: usize,
    /// Sync requests being served (at most [`MAX_SERVING`]).
    serving: usize,
    done_tx: mpsc::Sender<Done>,
    done: mpsc::Receiver<Done>,
}

impl EventLoop {
    async fn run(mut self) {
        loop {
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Shutdown) | None => return,
                    Some(c) => self.on_command(c),
                },
                // Never `None`: the loop holds a sender.
                Some(done) = self.done.recv() => self.on_done(done),
                ev = self.swarm.select_next_some() => self.on_event(ev),
            }
        }
    }

    fn on_command(&mut self, c: Command) {
        match c {
            Command::Dial(a, tx) => {
                let _ = tx.send(self.swarm.dial(a).map_err(LedgerError::network));
            }
            Command::ListenAddrs(tx) => {
                let _ = tx.send(self.listen_addrs.clone());
            }
            Command::Peers(tx) => {
                let _ = tx.send(self.swarm.connected_peers().copied().collect());
            }
            Command::Publish(topic, data, tx) => {
                let t = match topic {
                    Topic::Entries => self.topics.entries.clone(),
                    Topic::Evidence => self.topics.evidence.clone(),
                };
                let r = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(t, data)
                    .map(|_| ())
                    .map_err(LedgerError::network);
                let _ = tx.send(r);
            }
            Command::Request(peer, req, tx) => {
                let id = self.swarm.behaviour_mut().sync.send_request(&peer, req);
                self.pending.insert(id, tx);
            }
            Command::Shutdown => {}
        }
    }

    fn on_done(&mut self, done: Done) {
        match done {
            Done::Validated {
                id,
                source,
                verdict,
            } => {
                self.validating = self.validating.saturating_sub(1);
                self.report(&id, &source, verdict.acceptance);
                self.gossip_evidence(&verdict.evidence);
                if verdict.catch_up {
                    self.catch_up(source);
                }
            }
            Done::Respond {
                channel,
                response,
                evidence,
            } => {
                self.serving = self.serving.saturating_sub(1);
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, response);
                self.gossip_evidence(&evidence);
            }
        }
    }

    /// Starts a background catch-up from `peer` unless one is running.
    fn catch_up(&self, peer: PeerId) {
        let Some(tx) = self.weak.upgrade() else {
            return;
        };
        NodeHandle::new(tx, self.peer_id, self.log.clone(), self.shared.clone())
            .catch_up_in_background(peer);
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
                if let Err(acceptance) = self.on_gossip(&message_id, propagation_source, message) {
                    self.report(&message_id, &propagation_source, acceptance);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Sync(request_response::Event::Message {
                message,
                ..
            })) => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => self.serve(request, channel),
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
                    let _ = tx.send(Err(LedgerError::network(error)));
                }
            }
            _ => {}
        }
    }

    /// Checks a gossip message as far as it can without the store, then queues it for the
    /// validator. `Err` is the verdict to report now.
    fn on_gossip(
        &mut self,
        id: &MessageId,
        source: PeerId,
        message: gossipsub::Message,
    ) -> Result<(), MessageAcceptance> {
        let work = if message.topic == self.topics.entries.hash() {
            let checked =
                Announcement::check(&message.data, self.log.log_key()).map_err(|why| {
                    if why == Malformed::NotSignedByTheLog {
                        tracing::warn!(
                            %source,
                            "rejected an announcement whose checkpoint is not signed by the log"
                        );
                    }
                    MessageAcceptance::Reject
                })?;
            Work::Announcement(checked)
        } else if message.topic == self.topics.evidence.hash() {
            let ev = serde_json::from_slice::<Evidence>(&message.data)
                .map_err(|_| MessageAcceptance::Reject)?;
            Work::Evidence(ev)
        } else {
            return Err(MessageAcceptance::Reject);
        };
        self.validate(id.clone(), source, work)
    }

    /// Queues a message for the validator. Returns the verdict to report now if it cannot be
    /// queued (too many in flight: ignored, not queued without bound).
    fn validate(
        &mut self,
        id: MessageId,
        source: PeerId,
        work: Work,
    ) -> Result<(), MessageAcceptance> {
        if self.validating >= MAX_VALIDATIONS {
            tracing::debug!(%source, "validation queue full: message ignored");
            return Err(MessageAcceptance::Ignore);
        }
        match self.jobs.try_send(Validation { id, source, work }) {
            Ok(()) => {
                self.validating += 1;
                Ok(())
            }
            Err(_) => Err(MessageAcceptance::Ignore),
        }
    }

    /// Tells gossipsub what became of a message (forward, penalise or drop) and counts it.
    fn report(&mut self, id: &MessageId, source: &PeerId, acceptance: MessageAcceptance) {
        let stats = &self.shared.stats;
        let counter = match acceptance {
            MessageAcceptance::Accept => &stats.accepted,
            MessageAcceptance::Reject => &stats.rejected,
            MessageAcceptance::Ignore => &stats.ignored,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(id, source, acceptance);
    }

    /// Serves a sync request on the blocking pool; the response comes back as [`Done`].
    fn serve(&mut self, request: SyncRequest, channel: ResponseChannel<SyncResponse>) {
        if self.serving >= MAX_SERVING {
            let busy = SyncResponse::Refused("busy: too many requests in flight".into());
            let _ = self.swarm.behaviour_mut().sync.send_response(channel, busy);
            return;
        }
        self.serving += 1;
        let (log, witness, done) = (self.log.clone(), self.witness.clone(), self.done_tx.clone());
        tokio::spawn(async move {
            let (response, evidence) = tokio::task::spawn_blocking(move || {
                storage::serve(&log, witness.as_ref(), request)
            })
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "serving a sync request failed");
                (SyncResponse::Refused("internal error".into()), Vec::new())
            });
            let _ = done
                .send(Done::Respond {
                    channel,
                    response,
                    evidence,
                })
                .await;
        });
    }

    fn gossip_evidence(&mut self, evidence: &[Evidence]) {
        for ev in evidence {
            if let Ok(data) = serde_json::to_vec(ev) {
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(self.topics.evidence.clone(), data);
            }
        }
    }
}
