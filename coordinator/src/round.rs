//! The round state machine: registration, tasks, updates, declines, closing rounds. Plain Rust
//! with no sockets, so tests drive it directly; the gRPC service only translates to and from it.
//!
//! Life of a federation: `Waiting` until `quorum` enrolled participants have registered, then
//! rounds `1..=total` are `Open` one after another, then `Done`. A round closes as soon as every
//! enrolled participant has either sent an update or declined, or at its deadline: with at least
//! `quorum` updates it completes (aggregate, evaluate, value), otherwise it is abandoned and the
//! next round starts from the same model.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use fedledger_model::{Dataset, Metrics, Standardiser};
use rand::RngExt;
use ring::signature::{ED25519, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{info, info_span, warn};

use crate::{
    aggregate::{Aggregator, WeightedUpdate},
    config::{Enrolled, FederationConfig, decode_public_key},
    contrib::{RoundValuation, Valuer},
    error::CoordinatorError,
    store::Store,
    transfer::{Assembler, Received},
};

/// How long a registration challenge stays valid.
const CHALLENGE_TTL: Duration = Duration::from_secs(60);
/// Outstanding challenges kept at most (older ones are dropped first).
const MAX_CHALLENGES: usize = 4096;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Where the federation is.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Waiting for a quorum of participants to register.
    Waiting,
    /// `round` is open for updates.
    Open,
    /// All rounds have run.
    Done,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Waiting => "waiting for registrations",
            Phase::Open => "open",
            Phase::Done => "done",
        }
    }
}

/// The part of the state that survives restarts (with the updates and results in the store).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PersistedState {
    pub phase: Phase,
    /// The open round (or the last one when done; 0 before the first).
    pub round: u64,
    /// SHA-256 of the current global parameters (stored as a blob).
    pub global_sha256: String,
    pub opened_at_ms: u64,
    pub deadline_ms: u64,
}

pub use fedledger_privacy::PrivacySpend;

/// An accepted update's metadata (the vector is a blob named by `update_sha256`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct UpdateMeta {
    pub round: u64,
    pub participant: usize,
    pub examples: u64,
    pub update_sha256: String,
    /// Hex of the Ed25519 signature.
    pub signature: String,
    pub privacy: Option<PrivacySpend>,
    pub received_at_ms: u64,
    /// Arrival order within the round (0-based).
    pub seq: u64,
    pub norm: f64,
}

/// A recorded decline.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DeclineMeta {
    pub round: u64,
    pub participant: usize,
    pub reason: String,
    pub signature: String,
    pub received_at_ms: u64,
}

pub use fedledger_ledger::records::RoundStatus;

/// One participant's line in a finished round.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ContributionOutcome {
    pub participant: usize,
    /// Arrival order within the round (0-based): the valuation game's player order.
    pub seq: u64,
    pub name: String,
    pub public_key: String,
    pub examples: u64,
    pub update_sha256: String,
    pub signature: String,
    pub privacy: Option<PrivacySpend>,
    pub value: f64,
    pub value_nano: i64,
    pub reward: u64,
    pub flags: Vec<String>,
}

/// A participant that declined the round.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DeclinedOutcome {
    pub participant: usize,
    pub name: String,
    pub public_key: String,
    pub reason: String,
}

/// Everything the coordinator knows about a finished round.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RoundOutcome {
    pub round: u64,
    pub status: RoundStatus,
    pub reason: Option<String>,
    pub opened_at_ms: u64,
    pub closed_at_ms: u64,
    pub model_before: String,
    pub model_after: String,
    /// SHA-256 of the validation file the round was evaluated and valued on (kept as a blob).
    pub validation_sha256: String,
    pub aggregator: String,
    pub params: u64,
    /// Validation metrics of the model before and after the round.
    pub metrics_before: Option<Metrics>,
    pub metrics: Option<Metrics>,
    /// Contributions sorted by public key.
    pub contributions: Vec<ContributionOutcome>,
    pub declined: Vec<DeclinedOutcome>,
    pub valuation: Option<RoundValuation>,
    /// Participant-level DP applied by the coordinator this round, if any.
    pub server_dp: Option<crate::dp_fedavg::ServerDpReport>,
    pub reward_pool: u64,
    /// Wall time spent closing the round (aggregation, evaluation, valuation), microseconds.
    pub close_micros: u64,
}

/// What a participant is told to do next.
#[derive(Clone, Debug)]
pub struct TaskView {
    pub phase: Phase,
    /// true when this participant should train now (round open and it has not responded).
    pub train: bool,
    pub round: u64,
    pub global: Arc<Vec<f32>>,
    pub global_sha256: String,
    pub deadline_ms: u64,
    pub detail: String,
}

/// A change a waiting participant may want to hear about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub phase: Phase,
    pub round: u64,
    pub completed: u64,
}

/// An update whose header has been checked, waiting for its chunks.
pub struct PendingUpdate {
    participant: usize,
    round: u64,
    examples: u64,
    claimed_sha256: String,
    signature: Vec<u8>,
    privacy: Option<PrivacySpend>,
    /// The chunk reassembler.
    pub assembler: Assembler,
}

/// Receipt for an accepted update.
#[derive(Clone, Debug, PartialEq)]
pub struct Receipt {
    pub round: u64,
    pub update_sha256: String,
    pub accepted: u32,
    pub quorum: u32,
}

/// The header fields of an update, as domain values.
#[derive(Clone, Debug)]
pub struct UpdateHeader {
    pub round: u64,
    pub examples: u64,
    pub num_params: u64,
    pub update_sha256: String,
    pub signature: Vec<u8>,
    pub privacy: Option<PrivacySpend>,
}

struct Accepted {
    meta: UpdateMeta,
    delta: Arc<Vec<f32>>,
}

struct Inner {
    state: PersistedState,
    global: Arc<Vec<f32>>,
    updates: Vec<Accepted>,
    declines: Vec<DeclineMeta>,
    closing: bool,
    completed: u64,
    challenges: HashMap<[u8; 32], (usize, u64)>,
    sessions: HashMap<[u8; 32], usize>,
    registered: HashSet<usize>,
}

impl Inner {
    fn responded(&self, participant: usize) -> bool {
        self.updates
            .iter()
            .any(|u| u.meta.participant == participant)
            || self.declines.iter().any(|d| d.participant == participant)
    }
}

/// One federation's coordinator logic and state.
pub struct Coordinator {
    cfg: FederationConfig,
    validation: Dataset,
    store: Store,
    aggregator: Box<dyn Aggregator>,
    valuer: Valuer,
    anchor: crate::anchor::Anchor,
    inner: Mutex<Inner>,
    progress: watch::Sender<Progress>,
}

impl Coordinator {
    /// Open the store and resume where the federation was, or start it.
    pub fn open(cfg: FederationConfig) -> Result<Self, CoordinatorError> {
        let store = Store::open(&cfg.state_dir)?;
        let mut validation = cfg.validation.clone();
        let standardiser = cfg
            .standardisation
            .clone()
            .unwrap_or_else(|| Standardiser::fit(&validation));
        standardiser.apply(&mut validation)?;
        store.put_blob(&std::fs::read(&cfg.validation_path).map_err(|e| {
            CoordinatorError::Internal(format!(
                "read validation file {}: {e}",
                cfg.validation_path.display()
            ))
        })?)?;

        let (state, global, updates, declines) = match store.load_state()? {
            Some(state) => {
                let global = store.get_vector(&state.global_sha256)?;
                let mut updates = Vec::new();
                let mut declines = Vec::new();
                if state.phase == Phase::Open {
                    for meta in store.updates_for(state.round)? {
                        let delta = Arc::new(store.get_vector(&meta.update_sha256)?);
                        updates.push(Accepted { meta, delta });
                    }
                    updates.sort_by_key(|u| u.meta.seq);
                    declines = store.declines_for(state.round)?;
                }
                info!(
                    round = state.round,
                    phase = state.phase.as_str(),
                    updates = updates.len(),
                    "resumed federation from store"
                );
                (state, global, updates, declines)
            }
            None => {
                let global = fedledger_model::init_params(&cfg.model, cfg.training.init_seed);
                let sha = store.put_vector(&global)?;
                let state = PersistedState {
                    phase: Phase::Waiting,
                    round: 0,
                    global_sha256: sha,
                    opened_at_ms: 0,
                    deadline_ms: 0,
                };
                store.save_state(&state)?;
                (state, global, Vec::new(), Vec::new())
            }
        };
        let outcomes = store.outcomes()?;
        let completed = outcomes.len() as u64;
        let anchor = crate::anchor::Anchor::open(&cfg)?;
        let caught_up = anchor.catch_up(&cfg, &outcomes)?;
        if caught_up > 0 {
            warn!(
                rounds = caught_up,
                "anchored rounds that were stored but not yet in the ledger"
            );
        }
        let progress = watch::Sender::new(Progress {
            phase: state.phase,
            round: state.round,
            completed,
        });
        Ok(Self {
            aggregator: match &cfg.server_dp {
                Some(dp) => Box::new(
                    crate::dp_fedavg::DpAggregator::new(cfg.strategy.build(), dp)
                        .map_err(CoordinatorError::Internal)?,
                ),
                None => cfg.strategy.build(),
            },
            valuer: Valuer::from_config(&cfg),
            anchor,
            validation,
            store,
            inner: Mutex::new(Inner {
                state,
                global: Arc::new(global),
                updates,
                declines,
                closing: false,
                completed,
                challenges: HashMap::new(),
                sessions: HashMap::new(),
                registered: HashSet::new(),
            }),
            progress,
            cfg,
        })
    }

    /// The validated configuration.
    pub fn config(&self) -> &FederationConfig {
        &self.cfg
    }

    /// The store (for replay and reporting).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The validation data, standardised as the participants' data is.
    pub fn validation(&self) -> &Dataset {
        &self.validation
    }

    /// Watch the federation's progress.
    pub fn subscribe(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the in-memory state as the last committed one:
        // every mutation persists before it changes memory.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn enrolled_index(&self, key_hex: &str) -> Result<usize, CoordinatorError> {
        let key = decode_public_key(key_hex).map_err(CoordinatorError::MalformedKey)?;
        self.cfg
            .participants
            .iter()
            .position(|p| p.public_key == key)
            .ok_or_else(|| CoordinatorError::NotEnrolled {
                key: hex::encode(key),
                federation: self.cfg.federation.clone(),
            })
    }

    fn participant(&self, idx: usize) -> &Enrolled {
        &self.cfg.participants[idx]
    }

    fn session(&self, inner: &Inner, token: &[u8]) -> Result<usize, CoordinatorError> {
        let token: [u8; 32] = token.try_into().map_err(|_| CoordinatorError::NoSession)?;
        inner
            .sessions
            .get(&token)
            .copied()
            .ok_or(CoordinatorError::NoSession)
    }

    /// Step 1 of registration: a fresh single-use challenge for an enrolled key.
    pub fn challenge(&self, key_hex: &str) -> Result<([u8; 32], u64), CoordinatorError> {
        let idx = self.enrolled_index(key_hex)?;
        let challenge: [u8; 32] = rand::rng().random();
        let expires = now_ms() + CHALLENGE_TTL.as_millis() as u64;
        let mut inner = self.lock();
        let now = now_ms();
        inner.challenges.retain(|_, (_, exp)| *exp > now);
        if inner.challenges.len() >= MAX_CHALLENGES {
            let oldest = inner
                .challenges
                .iter()
                .min_by_key(|(_, (_, exp))| *exp)
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                inner.challenges.remove(&k);
            }
        }
        inner.challenges.insert(challenge, (idx, expires));
        Ok((challenge, expires))
    }

    /// Step 2: check the signature over the challenge and open a session bound to the key.
    pub fn register(
        &self,
        key_hex: &str,
        challenge: &[u8],
        signature: &[u8],
    ) -> Result<([u8; 32], String), CoordinatorError> {
        let idx = self.enrolled_index(key_hex)?;
        let challenge: [u8; 32] = challenge
            .try_into()
            .map_err(|_| CoordinatorError::BadChallenge)?;
        let mut inner = self.lock();
        match inner.challenges.get(&challenge) {
            Some(&(owner, exp)) if owner == idx && exp > now_ms() => {}
            _ => return Err(CoordinatorError::BadChallenge),
        }
        let msg = fedledger_proto::register_message(&self.cfg.federation, &challenge);
        if !verify(&self.participant(idx).public_key, msg.as_bytes(), signature) {
            return Err(CoordinatorError::BadRegistrationSignature {
                key: self.participant(idx).public_key_hex.clone(),
            });
        }
        inner.challenges.remove(&challenge);
        let token: [u8; 32] = rand::rng().random();
        inner.sessions.retain(|_, p| *p != idx);
        inner.sessions.insert(token, idx);
        inner.registered.insert(idx);
        let name = self.participant(idx).name.clone();
        info!(participant = %name, "registered");
        if inner.state.phase == Phase::Waiting && inner.registered.len() >= self.cfg.quorum as usize
        {
            self.open_round(&mut inner, 1)?;
        }
        Ok((token, name))
    }

    fn open_round(&self, inner: &mut Inner, round: u64) -> Result<(), CoordinatorError> {
        let now = now_ms();
        let state = PersistedState {
            phase: Phase::Open,
            round,
            global_sha256: inner.state.global_sha256.clone(),
            opened_at_ms: now,
            deadline_ms: now + self.cfg.deadline.as_millis() as u64,
        };
        self.store.save_state(&state)?;
        inner.state = state;
        inner.updates.clear();
        inner.declines.clear();
        info!(round, "round opened");
        self.notify(inner);
        Ok(())
    }

    fn notify(&self, inner: &Inner) {
        self.progress.send_replace(Progress {
            phase: inner.state.phase,
            round: inner.state.round,
            completed: inner.completed,
        });
    }

    /// What the participant behind `session` should do now.
    pub fn task(&self, session: &[u8]) -> Result<TaskView, CoordinatorError> {
        let inner = self.lock();
        let idx = self.session(&inner, session)?;
        let st = &inner.state;
        let (train, detail) = match st.phase {
            Phase::Waiting => (
                false,
                format!(
                    "waiting for registrations ({} of quorum {})",
                    inner.registered.len(),
                    self.cfg.quorum
                ),
            ),
            Phase::Open if inner.closing => (false, format!("round {} is closing", st.round)),
            Phase::Open if inner.responded(idx) => (
                false,
                format!("round {} answered; waiting for the next round", st.round),
            ),
            Phase::Open => (true, format!("round {} open", st.round)),
            Phase::Done => (false, "federation finished".to_owned()),
        };
        Ok(TaskView {
            phase: st.phase,
            train,
            round: st.round,
            global: inner.global.clone(),
            global_sha256: st.global_sha256.clone(),
            deadline_ms: st.deadline_ms,
            detail,
        })
    }

    fn check_open_round(
        &self,
        inner: &Inner,
        idx: usize,
        round: u64,
    ) -> Result<(), CoordinatorError> {
        if inner.state.phase != Phase::Open || inner.closing {
            return Err(CoordinatorError::NoOpenRound {
                state: if inner.closing {
                    "closing"
                } else {
                    inner.state.phase.as_str()
                },
            });
        }
        if round != inner.state.round {
            return Err(CoordinatorError::WrongRound {
                got: round,
                open: inner.state.round,
            });
        }
        if inner.responded(idx) {
            return Err(CoordinatorError::AlreadySubmitted {
                name: self.participant(idx).name.clone(),
                round,
            });
        }
        Ok(())
    }

    /// Check an update's header before any chunk is accepted: session, round, dimension,
    /// example count, privacy report, and the signature over the claimed digest.
    pub fn begin_update(
        &self,
        session: &[u8],
        header: UpdateHeader,
    ) -> Result<PendingUpdate, CoordinatorError> {
        let inner = self.lock();
        let idx = self.session(&inner, session)?;
        self.check_open_round(&inner, idx, header.round)?;
        drop(inner);
        let expected = self.cfg.model.num_params() as u64;
        if header.num_params != expected {
            return Err(CoordinatorError::DimensionMismatch {
                got: header.num_params,
                expected,
            });
        }
        if header.examples == 0 || header.examples > self.cfg.max_examples {
            return Err(CoordinatorError::BadExampleCount {
                got: header.examples,
                max: self.cfg.max_examples,
            });
        }
        let sha = &header.update_sha256;
        if sha.len() != 64
            || !sha
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return Err(CoordinatorError::InvalidField {
                field: "update_sha256",
                reason: "must be 64 lowercase hex digits".into(),
            });
        }
        if let Some(p) = &header.privacy {
            check_privacy(p)?;
        }
        let msg = fedledger_ledger::records::update_signing_message(
            &self.cfg.federation,
            header.round,
            &header.update_sha256,
        );
        let who = self.participant(idx);
        if !verify(&who.public_key, msg.as_bytes(), &header.signature) {
            return Err(CoordinatorError::BadUpdateSignature {
                name: who.name.clone(),
                round: header.round,
                digest: header.update_sha256,
            });
        }
        Ok(PendingUpdate {
            participant: idx,
            round: header.round,
            examples: header.examples,
            claimed_sha256: header.update_sha256,
            signature: header.signature,
            privacy: header.privacy,
            assembler: Assembler::new(expected, fedledger_proto::CHUNK_FLOATS),
        })
    }

    /// Accept a fully received update: check digest and norm, persist it, then acknowledge.
    /// Returns true in the receipt's second field when the round can now close.
    pub fn commit_update(
        &self,
        pending: PendingUpdate,
    ) -> Result<(Receipt, bool), CoordinatorError> {
        let PendingUpdate {
            participant,
            round,
            examples,
            claimed_sha256,
            signature,
            privacy,
            assembler,
        } = pending;
        let Received {
            values,
            sha256,
            norm,
        } = assembler.finish()?;
        if sha256 != claimed_sha256 {
            return Err(CoordinatorError::DigestMismatch {
                claimed: claimed_sha256,
                actual: sha256,
            });
        }
        if let Some(bound) = self.cfg.max_update_norm
            && norm > bound
        {
            return Err(CoordinatorError::NormTooLarge { norm, bound });
        }
        // The blob is content-addressed, so writing it before taking the lock is harmless even
        // if the update is then refused.
        self.store.put_vector(&values)?;
        let mut inner = self.lock();
        self.check_open_round(&inner, participant, round)?;
        let meta = UpdateMeta {
            round,
            participant,
            examples,
            update_sha256: sha256.clone(),
            signature: hex::encode(&signature),
            privacy,
            received_at_ms: now_ms(),
            seq: inner.updates.len() as u64,
            norm,
        };
        self.store.record_update(&meta)?;
        inner.updates.push(Accepted {
            meta,
            delta: Arc::new(values),
        });
        let _span = info_span!("update", round, participant = %self.participant(participant).name)
            .entered();
        info!(examples, norm = format!("{norm:.4}"), "update accepted");
        let receipt = Receipt {
            round,
            update_sha256: sha256,
            accepted: inner.updates.len() as u32,
            quorum: self.cfg.quorum,
        };
        Ok((receipt, self.all_responded(&inner)))
    }

    /// Record a signed decline of the open round.
    pub fn decline(
        &self,
        session: &[u8],
        round: u64,
        reason: &str,
        signature: &[u8],
    ) -> Result<bool, CoordinatorError> {
        if reason.is_empty() || reason.len() > 1024 || reason.chars().any(|c| c == '\n') {
            return Err(CoordinatorError::InvalidField {
                field: "reason",
                reason: "must be 1-1024 bytes on one line".into(),
            });
        }
        let mut inner = self.lock();
        let idx = self.session(&inner, session)?;
        self.check_open_round(&inner, idx, round)?;
        let who = self.participant(idx);
        let msg =
            fedledger_ledger::records::decline_signing_message(&self.cfg.federation, round, reason);
        if !verify(&who.public_key, msg.as_bytes(), signature) {
            return Err(CoordinatorError::BadDeclineSignature {
                name: who.name.clone(),
                round,
            });
        }
        let meta = DeclineMeta {
            round,
            participant: idx,
            reason: reason.to_owned(),
            signature: hex::encode(signature),
            received_at_ms: now_ms(),
        };
        self.store.record_decline(&meta)?;
        info!(round, participant = %who.name, reason, "round declined");
        inner.declines.push(meta);
        Ok(self.all_responded(&inner))
    }

    fn all_responded(&self, inner: &Inner) -> bool {
        inner.updates.len() + inner.declines.len() >= self.cfg.participants.len()
    }

    fn is_due(&self, inner: &Inner, now_ms: u64) -> bool {
        inner.state.phase == Phase::Open
            && !inner.closing
            && (self.all_responded(inner) || now_ms >= inner.state.deadline_ms)
    }

    /// Whether the open round should close now (everyone answered, or the deadline passed).
    pub fn due(&self, now_ms: u64) -> bool {
        self.is_due(&self.lock(), now_ms)
    }

    /// Milliseconds until the open round's deadline (None when no round is open).
    pub fn until_deadline(&self, now_ms: u64) -> Option<u64> {
        let inner = self.lock();
        (inner.state.phase == Phase::Open).then(|| inner.state.deadline_ms.saturating_sub(now_ms))
    }

    /// Close the open round if it is due: aggregate (or abandon), evaluate, value, persist, and
    /// open the next round. Heavy work runs without holding the lock. Returns the outcome.
    pub fn close_if_due(&self) -> Result<Option<RoundOutcome>, CoordinatorError> {
        let now = now_ms();
        let (round, opened_at_ms, global, global_sha, updates, declines) = {
            let mut inner = self.lock();
            if !self.is_due(&inner, now) {
                return Ok(None);
            }
            inner.closing = true;
            self.notify(&inner);
            let ups: Vec<(UpdateMeta, Arc<Vec<f32>>)> = inner
                .updates
                .iter()
                .map(|a| (a.meta.clone(), a.delta.clone()))
                .collect();
            (
                inner.state.round,
                inner.state.opened_at_ms,
                inner.global.clone(),
                inner.state.global_sha256.clone(),
                ups,
                inner.declines.clone(),
            )
        };
        let _span = info_span!("close", round).entered();
        let started = std::time::Instant::now();
        let result = self.compute_outcome(
            round,
            opened_at_ms,
            &global,
            &global_sha,
            &updates,
            &declines,
        );
        let mut inner = self.lock();
        let (outcome, new_global) = match result {
            Ok(v) => v,
            Err(e) => {
                inner.closing = false;
                self.notify(&inner);
                return Err(e);
            }
        };
        let mut outcome = outcome;
        outcome.close_micros = started.elapsed().as_micros() as u64;
        let next_round = round + 1;
        let done = round >= self.cfg.rounds;
        let now = now_ms();
        let next = PersistedState {
            phase: if done { Phase::Done } else { Phase::Open },
            round: if done { round } else { next_round },
            global_sha256: outcome.model_after.clone(),
            opened_at_ms: if done { 0 } else { now },
            deadline_ms: if done {
                0
            } else {
                now + self.cfg.deadline.as_millis() as u64
            },
        };
        if let Err(e) = self.store.finish_round(&outcome, &next) {
            inner.closing = false;
            self.notify(&inner);
            return Err(e.into());
        }
        if self.cfg.retain_rounds > 0 && round > self.cfg.retain_rounds {
            let old = round - self.cfg.retain_rounds;
            match self.store.prune_round(old, round) {
                Ok(n) => info!(
                    round = old,
                    blobs = n,
                    "pruned inputs past the retention window"
                ),
                Err(e) => warn!(round = old, error = %e, "pruning old inputs failed"),
            }
        }
        // The outcome is durable; the ledger follows it (and catches up at the next start if
        // this fails).
        match self.anchor.anchor(&self.cfg, &outcome) {
            Ok((_, cp)) => info!(size = cp.checkpoint.size, "round anchored in the ledger"),
            Err(e) => warn!(error = %e, "anchoring the round failed; will retry at restart"),
        }
        inner.state = next;
        if let Some(g) = new_global {
            inner.global = Arc::new(g);
        }
        inner.updates.clear();
        inner.declines.clear();
        inner.closing = false;
        inner.completed += 1;
        match &outcome.metrics {
            Some(m) => info!(
                status = outcome.status.as_str(),
                updates = outcome.contributions.len(),
                accuracy = format!("{:.4}", m.accuracy),
                log_loss = format!("{:.4}", m.log_loss),
                auc = m
                    .auc
                    .map(|a| format!("{a:.4}"))
                    .unwrap_or_else(|| "-".into()),
                "round closed"
            ),
            None => warn!(
                status = outcome.status.as_str(),
                reason = outcome.reason.as_deref().unwrap_or(""),
                "round closed"
            ),
        }
        if !done {
            info!(round = next_round, "round opened");
        }
        self.notify(&inner);
        Ok(Some(outcome))
    }

    fn compute_outcome(
        &self,
        round: u64,
        opened_at_ms: u64,
        global: &[f32],
        global_sha: &str,
        updates: &[(UpdateMeta, Arc<Vec<f32>>)],
        declines: &[DeclineMeta],
    ) -> Result<(RoundOutcome, Option<Vec<f32>>), CoordinatorError> {
        let declined: Vec<DeclinedOutcome> = declines
            .iter()
            .map(|d| {
                let p = self.participant(d.participant);
                DeclinedOutcome {
                    participant: d.participant,
                    name: p.name.clone(),
                    public_key: p.public_key_hex.clone(),
                    reason: d.reason.clone(),
                }
            })
            .collect();
        let metrics_before = Some(fedledger_model::evaluate(
            &self.cfg.model,
            global,
            &self.validation,
        )?);
        let mut outcome = RoundOutcome {
            round,
            status: RoundStatus::Abandoned,
            reason: None,
            opened_at_ms,
            closed_at_ms: now_ms(),
            model_before: global_sha.to_owned(),
            model_after: global_sha.to_owned(),
            validation_sha256: self.cfg.validation_sha256.clone(),
            aggregator: self.aggregator.name().to_owned(),
            params: global.len() as u64,
            metrics_before,
            metrics: None,
            contributions: Vec::new(),
            declined,
            valuation: None,
            server_dp: None,
            reward_pool: 0,
            close_micros: 0,
        };
        if updates.len() < self.cfg.quorum as usize {
            outcome.reason = Some(format!(
                "{} update(s) by the deadline, quorum is {}",
                updates.len(),
                self.cfg.quorum
            ));
            // The updates that did arrive are still recorded (their privacy was spent), unpaid.
            outcome.contributions = updates
                .iter()
                .map(|(m, _)| self.contribution(m, 0.0, 0, 0, Vec::new()))
                .collect();
            outcome
                .contributions
                .sort_by(|a, b| a.public_key.cmp(&b.public_key));
            return Ok((outcome, None));
        }
        let views: Vec<WeightedUpdate<'_>> = updates
            .iter()
            .map(|(m, d)| WeightedUpdate {
                examples: m.examples,
                delta: d.as_slice(),
            })
            .collect();
        let new_global = self.aggregator.aggregate(global, &views);
        outcome.server_dp = self.aggregator.server_dp();
        let after_sha = self.store.put_vector(&new_global)?;
        let metrics = fedledger_model::evaluate(&self.cfg.model, &new_global, &self.validation)?;
        let names: Vec<&str> = updates
            .iter()
            .map(|(m, _)| self.participant(m.participant).name.as_str())
            .collect();
        let valuation = self.valuer.value_round(
            round,
            &self.cfg.model,
            &self.validation,
            global,
            &views,
            &names,
            updates
                .iter()
                .map(|(m, _)| self.participant(m.participant).public_key_hex.as_str())
                .collect::<Vec<_>>()
                .as_slice(),
            updates
                .iter()
                .any(|(m, _)| m.privacy.as_ref().is_some_and(|p| p.noise_multiplier > 0.0)),
        )?;
        let mut contributions: Vec<ContributionOutcome> = updates
            .iter()
            .enumerate()
            .map(|(i, (m, _))| {
                self.contribution(
                    m,
                    valuation.values[i],
                    valuation.value_nano[i],
                    valuation.rewards[i],
                    valuation.flags[i].clone(),
                )
            })
            .collect();
        contributions.sort_by(|a, b| a.public_key.cmp(&b.public_key));
        outcome.status = RoundStatus::Completed;
        outcome.model_after = after_sha;
        outcome.metrics = Some(metrics);
        outcome.reward_pool = valuation.reward_pool;
        outcome.valuation = Some(valuation.summary);
        outcome.contributions = contributions;
        Ok((outcome, Some(new_global)))
    }

    fn contribution(
        &self,
        m: &UpdateMeta,
        value: f64,
        value_nano: i64,
        reward: u64,
        flags: Vec<String>,
    ) -> ContributionOutcome {
        let p = self.participant(m.participant);
        ContributionOutcome {
            participant: m.participant,
            seq: m.seq,
            name: p.name.clone(),
            public_key: p.public_key_hex.clone(),
            examples: m.examples,
            update_sha256: m.update_sha256.clone(),
            signature: m.signature.clone(),
            privacy: m.privacy.clone(),
            value,
            value_nano,
            reward,
            flags,
        }
    }

    /// The ledger (the coordinator's log).
    pub fn ledger(&self) -> &fedledger_ledger::Log {
        self.anchor.log()
    }

    /// The anchored record of `round`, when it is in the log.
    pub fn ledger_record(&self, round: u64) -> Option<Vec<u8>> {
        (round < self.anchor.log().size())
            .then(|| self.anchor.log().entry(round).ok())
            .flatten()
    }

    /// A finished round's outcome.
    pub fn outcome(&self, round: u64) -> Result<RoundOutcome, CoordinatorError> {
        if let Some(o) = self.store.outcome(round)? {
            return Ok(o);
        }
        let inner = self.lock();
        if round >= 1 && round <= inner.state.round && inner.state.phase != Phase::Done {
            Err(CoordinatorError::RoundNotFinished { round })
        } else {
            Err(CoordinatorError::NoSuchRound { round })
        }
    }

    /// Check a session token (for calls that only read).
    pub fn check_session(&self, session: &[u8]) -> Result<String, CoordinatorError> {
        let inner = self.lock();
        let idx = self.session(&inner, session)?;
        Ok(self.participant(idx).name.clone())
    }

    /// The current progress.
    pub fn progress(&self) -> Progress {
        *self.progress.borrow()
    }

    /// The current global parameters.
    pub fn global(&self) -> Arc<Vec<f32>> {
        self.lock().global.clone()
    }
}

fn verify(public_key: &[u8; 32], msg: &[u8], signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(msg, signature)
        .is_ok()
}

fn check_privacy(p: &PrivacySpend) -> Result<(), CoordinatorError> {
    p.validate()
        .map_err(|e| CoordinatorError::BadPrivacyReport(e.to_string()))
}
