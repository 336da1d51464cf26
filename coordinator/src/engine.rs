//! The one place that performs effects, in order: an update's blob (fsynced), then its sled
//! record (flushed), then the acknowledgement; a closed round's model blob, then its outcome and
//! the next state in one sled transaction, then the ledger append. It feeds the round state
//! machine ([`crate::machine`]) with requests and the clock and carries out what it asks.
//!
//! The machine's lock is held only for its pure calls (microseconds): never across a blob
//! write, a sled flush, a signature or a ledger append, so a handler never waits on disk work of
//! another request or of a close. Every method here may block on disk: async callers run them
//! with `spawn_blocking`.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex, MutexGuard, RwLock},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use chacha20::ChaCha20Rng;
use fedledger_memory::StoredVector;
use fedledger_model::{Dataset, Standardiser};
use rand::{SeedableRng, TryRng};
use tokio::sync::{Notify, watch};
use tracing::{info, info_span, warn};

use crate::{
    aggregate::{self, Aggregator},
    anchor::Anchor,
    config::FederationConfig,
    error::CoordinatorError,
    governance,
    machine::{
        Job, Received, RoundMachine, TaskInfo, UploadTicket,
        close::{CloseInputs, Stage, aggregate_round, next_state, settle, value_aggregated},
    },
    refusal::Refusals,
    store::Store,
    transfer::{Assembler, upload_hasher},
    types::{PersistedState, Phase, Progress, Receipt, RoundOutcome, UpdateHeader},
    value::Valuer,
};

/// Largest model (in bytes) whose hospitals' histories a close advances in parallel (one per
/// core in anonymous memory at once); larger ones are advanced one at a time.
const PARALLEL_HISTORY_BYTES: usize = 8 << 20;

/// Milliseconds since the Unix epoch (the engine's clock; the machine is handed it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn os_rng() -> Result<ChaCha20Rng, CoordinatorError> {
    ChaCha20Rng::try_from_rng(&mut rand::rngs::SysRng)
        .map_err(|e| CoordinatorError::Internal(format!("OS randomness unavailable: {e}")))
}

/// A fresh secret from the operating system (the key of the registration challenges' tags).
fn os_secret() -> Result<[u8; 32], CoordinatorError> {
    let mut secret = [0u8; 32];
    rand::rngs::SysRng
        .try_fill_bytes(&mut secret)
        .map_err(|e| CoordinatorError::Internal(format!("OS randomness unavailable: {e}")))?;
    Ok(secret)
}

/// What one [`Engine::step`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// The first round opened.
    Opened { round: u64 },
    /// A round's updates went to the validators.
    Validating { round: u64 },
    /// A round closed (its outcome is durable; anchored unless the ledger refused, in which
    /// case anchoring is retried at the next step).
    Closed(Box<RoundOutcome>),
}

/// A running federation's state and effects.
pub struct Engine {
    /// The operator's configuration file, validated.
    base: Arc<FederationConfig>,
    /// The genesis participants' index order (kept in the store).
    order: Vec<String>,
    /// The configuration the open round runs with: `base` with the governed rules in force.
    cfg: RwLock<Arc<FederationConfig>>,
    machine: Mutex<RoundMachine>,
    store: Store,
    anchor: Anchor,
    aggregator: Mutex<Box<dyn Aggregator>>,
    valuer: RwLock<Arc<Valuer>>,
    /// The ledger's governance state. Taken before the machine's lock, and held from the
    /// moment a round's successor rules are computed until that round is open (and while a
    /// proposal is checked and anchored), so a proposal never lands between the two.
    governance: Mutex<fedledger_ledger::records::Governance>,
    validation: Dataset,
    /// The current global parameters (their digest is the machine's `global_sha256`), read
    /// through a map of their blob: file-backed pages, not anonymous memory.
    global: RwLock<Arc<StoredVector>>,
    /// Effective noise multipliers of the rounds aggregated with server-side DP so far.
    server_dp_history: Mutex<Vec<f64>>,
    /// The validators' standing after the latest round they judged (the next close starts
    /// from it).
    standing: Mutex<fedledger_valuation::consensus::Standing>,
    /// Each hospital's latest update history (key to blob digest), which a selecting strategy
    /// compares (`aggregate::history`); loaded once at start, advanced at each close.
    histories: Mutex<std::collections::BTreeMap<String, String>>,
    /// Rounds stored but not yet in the ledger (the ledger refused an append).
    unanchored: Mutex<Vec<u64>>,
    progress: watch::Sender<Progress>,
    wake: Notify,
    refusals: Refusals,
    /// When each enrolled participant (by index) last made a call with a live session, in
    /// milliseconds since the Unix epoch (0: not since start).
    /// Grows when governance enrols more participants.
    last_seen: Mutex<Vec<u64>>,
    farewell: Mutex<Hearers>,
}

/// Who has heard that the federation finished, and when anyone last asked anything: what
/// `serve` waits for before it exits after the last round.
#[derive(Debug)]
struct Hearers {
    told_done: BTreeSet<usize>,
    last_request: Instant,
}

/// The end of a federation as the engine sees it: for deciding when to stop serving.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Goodbye {
    /// Enrolled hospitals not yet told DONE, by name.
    pub not_told: Vec<String>,
    /// Time since the last task or round-result request.
    pub quiet: std::time::Duration,
    /// Whether the latest checkpoint, covering every entry, carries the genesis witness quorum.
    pub witnessed: bool,
}

/// What a running engine knows beyond its store: sessions, presence, the open round.
#[derive(Clone, Debug, PartialEq)]
pub struct Presence {
    /// Per enrolled participant: holds a live session.
    pub registered: Vec<bool>,
    /// Per enrolled participant: when it last made a call with its session (ms since the epoch).
    pub last_seen_ms: Vec<Option<u64>>,
    /// The open round's accepted updates and signed declines so far.
    pub open_updates: u64,
    pub open_declines: u64,
    /// When the open round's deadline falls (ms since the epoch; 0 when no round is open).
    pub deadline_ms: u64,
    pub now_ms: u64,
}

impl Engine {
    /// Open the store and resume where the federation was, or start it.
    pub fn open(base: FederationConfig) -> Result<Self, CoordinatorError> {
        let base = Arc::new(base);
        let cfg = base.clone();
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
                let global = store.map_vector(&state.global_sha256)?;
                let (updates, declines) = if matches!(state.phase, Phase::Open | Phase::Validating)
                {
                    (
                        store.updates_for(state.round)?,
                        store.declines_for(state.round)?,
                    )
                } else {
                    (Vec::new(), Vec::new())
                };
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
                drop(global);
                let global = store.map_vector_written(&sha)?;
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
        // Blobs made durable whose record never was (a crash or a failed sled write between
        // the two) are no one's: removed before anything new is written.
        let removed = store
            .remove_unreferenced_blobs(&[cfg.validation_sha256.clone()].into_iter().collect())?;
        if removed > 0 {
            warn!(
                removed,
                "removed blobs no record refers to (written before a crash)"
            );
        }
        let outcomes = store.outcomes()?;
        let standing = outcomes
            .iter()
            .rev()
            .find_map(|o| o.validators.as_ref().map(|v| v.standing.clone()))
            .unwrap_or_default();
        let server_dp_history: Vec<f64> = outcomes
            .iter()
            .filter_map(|o| o.server_dp.as_ref().map(|d| d.noise_multiplier))
            .collect();
        let mut histories = std::collections::BTreeMap::new();
        for o in &outcomes {
            if let Some(h) = &o.history {
                histories.extend(h.after.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        let anchor = Anchor::open(&base, now_ms())?;
        // Governance: what the ledger says the rules are; the file may not contradict them.
        let gov = governance::load(anchor.log())?;
        governance::check_config(&base, &gov, state.round)?;
        let order = match store.load_order()? {
            Some(order) => order,
            None => {
                let order: Vec<String> = base
                    .participants
                    .iter()
                    .map(|p| p.public_key_hex.clone())
                    .collect();
                store.save_order(&order)?;
                order
            }
        };
        let cfg = Arc::new(governance::effective(
            &base,
            &order,
            &gov,
            state.round.max(1),
        )?);
        // Rounds stored but not in the ledger (a crash between the sled flush and the ledger
        // append): anchor them now, by round number; what the ledger still refuses is retried
        // at every step.
        let mut unanchored: Vec<u64> = outcomes
            .iter()
            .map(|o| o.round)
            .filter(|r| anchor.anchored(*r).is_none())
            .collect();
        while let Some(&round) = unanchored.first() {
            let Some(o) = outcomes.iter().find(|o| o.round == round) else {
                break;
            };
            match anchor.anchor(&cfg, o) {
                Ok(_) => {
                    warn!(
                        round,
                        "anchored a round that was stored but not yet in the ledger"
                    );
                    unanchored.remove(0);
                }
                Err(e) => {
                    warn!(round, error = %e, "anchoring a stored round failed; retrying at the next step");
                    break;
                }
            }
        }
        // The open round's updates are checked against their digests once, here; every later
        // one is hashed as it arrives, so the close reads them all without hashing again.
        for u in &updates {
            store.map_vector(&u.update_sha256)?;
        }
        let vectors = if state.phase == Phase::Validating {
            store.utilities_for(state.round)?
        } else {
            Vec::new()
        };
        let mut machine = RoundMachine::new(
            cfg.clone(),
            state,
            updates,
            declines,
            outcomes.len() as u64,
            os_rng()?,
            os_secret()?,
        );
        machine.resume_validating(vectors)?;
        let progress = watch::Sender::new(machine.progress());
        Ok(Self {
            aggregator: Mutex::new(aggregate::build(
                cfg.strategy,
                cfg.byzantine,
                cfg.noise_step(),
                cfg.server_dp.as_ref(),
                os_rng()?,
            )?),
            valuer: RwLock::new(Arc::new(Valuer::from_config(&cfg))),
            governance: Mutex::new(gov),
            order,
            base,
            machine: Mutex::new(machine),
            anchor,
            validation,
            store,
            global: RwLock::new(Arc::new(global)),
            server_dp_history: Mutex::new(server_dp_history),
            standing: Mutex::new(standing),
            histories: Mutex::new(histories),
            unanchored: Mutex::new(unanchored),
            progress,
            wake: Notify::new(),
            refusals: Refusals::new(),
            farewell: Mutex::new(Hearers {
                told_done: BTreeSet::new(),
                last_request: Instant::now(),
            }),
            last_seen: Mutex::new(vec![0; cfg.participants.len()]),
            cfg: RwLock::new(cfg),
        })
    }

    fn machine(&self) -> MutexGuard<'_, RoundMachine> {
        // Every machine call leaves it consistent before returning; a panic elsewhere while
        // holding the lock cannot leave it half-changed.
        self.machine.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, m: &RoundMachine) {
        let now = m.progress();
        self.progress.send_if_modified(|p| {
            let changed = *p != now;
            *p = now;
            changed
        });
    }

    /// The configuration the open round runs with (the file's, with the governed rules in
    /// force laid over it).
    pub fn config(&self) -> Arc<FederationConfig> {
        self.cfg.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn governance(&self) -> MutexGuard<'_, fedledger_ledger::records::Governance> {
        self.governance.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Install the rules of `round` (about to open): the machine's configuration, and the
    /// aggregator and valuer when what they are built from changed. Called with the governance
    /// lock held and the machine's lock passed in.
    fn install_rules(
        &self,
        gov: &fedledger_ledger::records::Governance,
        m: &mut RoundMachine,
        round: u64,
    ) -> Result<(), CoordinatorError> {
        let next = Arc::new(governance::effective(&self.base, &self.order, gov, round)?);
        let old = self.config();
        if next.strategy != old.strategy || next.noise_step() != old.noise_step() {
            *self.aggregator.lock().unwrap_or_else(|p| p.into_inner()) = aggregate::build(
                next.strategy,
                next.byzantine,
                next.noise_step(),
                next.server_dp.as_ref(),
                os_rng()?,
            )?;
            info!(
                round,
                strategy = next.strategy.as_str(),
                "governed aggregation strategy in force"
            );
        }
        *self.valuer.write().unwrap_or_else(|p| p.into_inner()) =
            Arc::new(Valuer::from_config(&next));
        m.set_config(next.clone());
        *self.cfg.write().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(())
    }

    /// Check a governance proposal and its signatures against the acceptance rule, anchor it
    /// (durably, with a new checkpoint) and admit it; it applies from its `from_round`, when
    /// that round opens. Returns the entry's index in the log. A refused proposal changes
    /// nothing.
    pub fn submit_proposal(
        &self,
        proposal: &[u8],
        signatures: Vec<fedledger_ledger::records::GovernorSignature>,
    ) -> Result<u64, CoordinatorError> {
        use fedledger_ledger::records::{GovernanceEntry, Proposal, Refusal, encode_canonical};
        let proposal: Proposal = serde_json::from_slice(proposal)
            .map_err(|e| Refusal::Malformed(format!("not a proposal: {e}")))?;
        let mut gov = self.governance();
        let state = self.machine().state().clone();
        if state.phase == Phase::Done {
            return Err(Refusal::Malformed("the federation has finished".into()).into());
        }
        governance::check_timing(&proposal, now_ms(), state.round)?;
        gov.check(&proposal, &signatures)?;
        let entry = GovernanceEntry::new(proposal, signatures);
        let bytes = encode_canonical(&entry).map_err(|e| Refusal::Malformed(e.to_string()))?;
        // The rules it leads to must be ones this coordinator can run, from its round on.
        let mut trial = gov.clone();
        trial.admit(self.anchor.log().size(), &bytes, &entry)?;
        let from = entry.proposal.from_round;
        for round in trial
            .anchored()
            .iter()
            .map(|p| p.from_round)
            .filter(|r| *r >= from)
            .chain([from])
        {
            let cfg = governance::effective(&self.base, &self.order, &trial, round)
                .map_err(|e| Refusal::Inapplicable(e.to_string()))?;
            governance::check_effective(&cfg)?;
        }
        let log = self.anchor.log();
        fedledger_ledger::records::validate_entry(log.size(), log.origin(), &bytes)
            .map_err(|e| Refusal::Malformed(e.to_string()))?;
        let (index, _) = log
            .append_and_checkpoint(std::slice::from_ref(&bytes))
            .map_err(|e| CoordinatorError::Ledger(e.to_string()))?;
        gov.admit(index, &bytes, &entry)?;
        info!(
            index,
            from_round = entry.proposal.from_round,
            changes = entry.proposal.changes.len(),
            "governance proposal anchored"
        );
        Ok(index)
    }

    /// The anchored proposals (ledger order), the open round and the chain head a new
    /// proposal must name.
    pub fn proposals(&self) -> (Vec<fedledger_ledger::records::Proposal>, u64, String) {
        let gov = self.governance();
        let round = self.machine().state().round;
        (gov.anchored().to_vec(), round, gov.head().to_owned())
    }

    /// Refusals counted by reason (every request, connection or call refused so far).
    pub fn refusals(&self) -> &Refusals {
        &self.refusals
    }

    /// Sessions, presence and the open round, for status and metrics.
    pub fn presence(&self) -> Presence {
        let now = now_ms();
        let m = self.machine();
        Presence {
            registered: m.live_sessions(now),
            last_seen_ms: {
                let seen = self.last_seen.lock().unwrap_or_else(|p| p.into_inner());
                (0..self.config().participants.len())
                    .map(|i| seen.get(i).copied().filter(|&t| t > 0))
                    .collect()
            },
            open_updates: m.updates().len() as u64,
            open_declines: m.declines().len() as u64,
            deadline_ms: if m.state().phase == Phase::Open {
                m.state().deadline_ms
            } else {
                0
            },
            now_ms: now,
        }
    }

    fn seen(&self, participant: usize) {
        let mut seen = self.last_seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() <= participant {
            seen.resize(participant + 1, 0);
        }
        seen[participant] = now_ms();
    }

    /// The store (for replay and reporting).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The validation data, standardised as the participants' data is.
    pub fn validation(&self) -> &Dataset {
        &self.validation
    }

    /// The ledger (the coordinator's log).
    pub fn ledger(&self) -> &fedledger_ledger::Log {
        self.anchor.log()
    }

    /// Watch the federation's progress.
    pub fn subscribe(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    /// The current progress.
    pub fn progress(&self) -> Progress {
        *self.progress.borrow()
    }

    /// The current global parameters.
    pub fn global(&self) -> Arc<StoredVector> {
        self.global
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Resolves when something may be due (everyone answered; a job may be ready).
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    /// Milliseconds until the open round's deadline, when one is running.
    pub fn next_wake(&self) -> Option<u64> {
        self.machine().next_wake(now_ms())
    }

    /// Step 1 of registration.
    pub fn challenge(&self, key_hex: &str) -> Result<crate::machine::Challenge, CoordinatorError> {
        self.machine().challenge(now_ms(), key_hex)
    }

    /// Step 2 of registration.
    pub fn register(
        &self,
        key_hex: &str,
        challenge: &[u8],
        signature: &[u8],
    ) -> Result<crate::machine::Registered, CoordinatorError> {
        // Verified before the machine's lock is taken (see `Verification`).
        let pre = crate::machine::Verification::registration(
            &self.config().federation,
            key_hex,
            challenge,
            signature,
        );
        let r = self.machine().register_verified(
            now_ms(),
            key_hex,
            challenge,
            signature,
            pre.as_ref(),
        )?;
        info!(participant = %r.name, "registered");
        self.wake.notify_one();
        Ok(r)
    }

    /// Check a session token (for calls that only read); returns the participant's name.
    pub fn check_session(&self, session: &[u8]) -> Result<String, CoordinatorError> {
        let m = self.machine();
        let idx = m.session(now_ms(), session)?;
        self.seen(idx);
        Ok(m.enrolled(idx).name.clone())
    }

    /// What the participant behind `session` should do now, with the global parameters and
    /// the configuration (the rules) of that round.
    #[allow(clippy::type_complexity)]
    pub fn task(
        &self,
        session: &[u8],
    ) -> Result<(TaskInfo, Arc<StoredVector>, Arc<FederationConfig>), CoordinatorError> {
        let m = self.machine();
        let info = m.task(now_ms(), session)?;
        if let Ok(idx) = m.session(now_ms(), session) {
            self.seen(idx);
        }
        // Read under the machine's lock: the parameters match the digest in `info`, and the
        // rules are those of its round (they change only under this lock).
        let global = self.global();
        let cfg = self.config();
        drop(m);
        let mut f = self.farewell();
        f.last_request = Instant::now();
        if info.phase == Phase::Done {
            f.told_done.insert(info.participant);
        }
        Ok((info, global, cfg))
    }

    fn farewell(&self) -> MutexGuard<'_, Hearers> {
        self.farewell.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Who has not heard DONE yet, how long nobody has asked anything, and whether the log's
    /// latest entries are witnessed.
    pub fn goodbye(&self) -> Result<Goodbye, CoordinatorError> {
        let cfg = self.config();
        let (not_told, quiet) = {
            let f = self.farewell();
            // Hospitals the governors removed need not hear it.
            let not_told = (0..cfg.participants.len())
                .filter(|i| !f.told_done.contains(i) && !cfg.participants[*i].removed)
                .map(|i| cfg.participants[i].name.clone())
                .collect();
            (not_told, f.last_request.elapsed())
        };
        let log = self.ledger();
        let err = |e: fedledger_ledger::LedgerError| CoordinatorError::Ledger(e.to_string());
        let witnessed = log
            .latest_witnessed_in_force()
            .map_err(err)?
            .is_some_and(|cp| cp.checkpoint.size == log.size());
        Ok(Goodbye {
            not_told,
            quiet,
            witnessed,
        })
    }

    /// Check an update's header; the returned upload collects its chunks.
    pub fn begin_upload(
        self: &Arc<Self>,
        session: &[u8],
        header: UpdateHeader,
    ) -> Result<Upload, CoordinatorError> {
        // The signature is verified before the machine's lock is taken; the machine checks
        // that what was verified is this header, by this session's participant.
        let now = now_ms();
        let key = self.machine().session_key(now, session);
        let pre = key
            .ok()
            .map(|k| crate::machine::Verification::update(&self.config().federation, &k, &header));
        let ticket = self
            .machine()
            .begin_upload_verified(now, session, header, pre)?;
        self.seen(ticket.participant);
        // The size the model implies (the machine checked the header's against it).
        let bytes = ticket.num_params.saturating_mul(4);
        Ok(Upload {
            assembler: Assembler::new(ticket.num_params, fedledger_proto::CHUNK_FLOATS),
            hasher: upload_hasher(bytes),
            blob: Some(self.store.blob_writer(bytes)),
            engine: self.clone(),
            ticket,
            reserved: true,
        })
    }

    /// What the validator behind `session` should do now, with the round's starting
    /// parameters and rules; the candidates' vectors are read with [`Engine::candidate`].
    #[allow(clippy::type_complexity)]
    pub fn candidates(
        &self,
        session: &[u8],
    ) -> Result<
        (
            crate::machine::CandidatesInfo,
            Option<crate::machine::Game>,
            Arc<StoredVector>,
            Arc<FederationConfig>,
        ),
        CoordinatorError,
    > {
        let m = self.machine();
        let info = m.candidates(now_ms(), session)?;
        let game = m.game().cloned();
        let global = self.global();
        let cfg = self.config();
        drop(m);
        self.farewell().last_request = Instant::now();
        Ok((info, game, global, cfg))
    }

    /// A candidate update's vector, mapped from its blob.
    pub fn candidate(&self, update_sha256: &str) -> Result<StoredVector, CoordinatorError> {
        Ok(self.store.map_vector_written(update_sha256)?)
    }

    /// Record a validator's signed vector for the round being validated, durably; returns the
    /// round's vectors so far and the validators' quorum.
    pub fn submit_utilities(
        &self,
        session: &[u8],
        round: u64,
        coalitions_sha256: &str,
        utilities: Vec<i64>,
        signature: &[u8],
    ) -> Result<(String, u32, u32), CoordinatorError> {
        // Verified before the machine's lock is taken (see `Verification`).
        let now = now_ms();
        let key = self.machine().validator_key(now, session);
        let pre = key.ok().map(|k| {
            crate::machine::Verification::utilities(
                &self.config().federation,
                &k,
                round,
                coalitions_sha256,
                &utilities,
                signature,
            )
        });
        let meta = self.machine().begin_utilities_verified(
            now,
            session,
            round,
            coalitions_sha256,
            utilities,
            signature,
            pre.as_ref(),
        )?;
        if let Err(e) = self.store.record_utilities(&meta) {
            self.machine().release_validator(&meta.validator);
            return Err(e.into());
        }
        let digest = fedledger_ledger::records::utility_vector_sha256(&meta.utilities);
        let name = meta.name.clone();
        let (received, quorum) = self.machine().commit_utilities(meta);
        info!(round, validator = %name, received, "utilities accepted");
        self.wake.notify_one();
        Ok((digest, received, quorum))
    }

    /// Record a signed decline of the open round, durably.
    pub fn decline(
        &self,
        session: &[u8],
        round: u64,
        reason: &str,
        signature: &[u8],
    ) -> Result<(), CoordinatorError> {
        // Verified before the machine's lock is taken (see `Verification`).
        let now = now_ms();
        let key = self.machine().session_key(now, session);
        let pre = key.ok().map(|k| {
            crate::machine::Verification::decline(
                &self.config().federation,
                &k,
                round,
                reason,
                signature,
            )
        });
        let meta = self.machine().decline_verified(
            now,
            session,
            round,
            reason,
            signature,
            pre.as_ref(),
        )?;
        self.seen(meta.participant);
        if let Err(e) = self.store.record_decline(&meta) {
            self.machine().release(meta.participant);
            return Err(e.into());
        }
        let mut m = self.machine();
        info!(round, participant = %m.enrolled(meta.participant).name, reason, "round declined");
        m.commit_decline(meta);
        drop(m);
        self.wake.notify_one();
        Ok(())
    }

    /// A finished round's outcome.
    pub fn outcome(&self, round: u64) -> Result<RoundOutcome, CoordinatorError> {
        self.farewell().last_request = Instant::now();
        if let Some(o) = self.store.outcome(round)? {
            return Ok(o);
        }
        let st = self.machine().state().clone();
        if round >= 1 && round <= st.round && st.phase != Phase::Done {
            Err(CoordinatorError::RoundNotFinished { round })
        } else {
            Err(CoordinatorError::NoSuchRound { round })
        }
    }

    /// The anchored summary entry of `round` and its index, when the round is in the log.
    pub fn ledger_record(&self, round: u64) -> Option<(Vec<u8>, u64)> {
        let at = self.anchor.anchored(round)?;
        let bytes = self.anchor.log().entry(at.summary).ok()?;
        Some((bytes, at.summary))
    }

    /// Where `round` is in the ledger, once anchored.
    pub fn anchored(&self, round: u64) -> Option<crate::anchor::Anchored> {
        self.anchor.anchored(round)
    }

    /// Carry out the phase change that is due now, if any: open the first round, or close the
    /// open one (compute, then model blob, then sled, then ledger). Also retries anchoring that
    /// the ledger refused earlier.
    pub fn step(&self) -> Result<Option<Step>, CoordinatorError> {
        self.retry_anchoring();
        let now = now_ms();
        let job = {
            let mut m = self.machine();
            let job = m.poll(now);
            if job.is_some() {
                self.publish(&m);
            }
            job
        };
        let result = match job {
            None => return Ok(None),
            Some(Job::Open(state)) => self.open_round(state),
            Some(Job::Validate(state)) => self.start_validating(state),
            Some(Job::Close(job)) => self.close(job),
        };
        if result.is_err() {
            let mut m = self.machine();
            m.job_failed();
            self.publish(&m);
        }
        result.map(Some)
    }

    fn open_round(&self, state: PersistedState) -> Result<Step, CoordinatorError> {
        let gov = self.governance();
        self.store.save_state(&state)?;
        let round = state.round;
        let mut m = self.machine();
        self.install_rules(&gov, &mut m, round)?;
        m.opened(state);
        info!(round, "round opened");
        self.publish(&m);
        Ok(Step::Opened { round })
    }

    /// The open round's updates go to the validators: persist the phase, then validate.
    fn start_validating(&self, state: PersistedState) -> Result<Step, CoordinatorError> {
        self.store.save_state(&state)?;
        let round = state.round;
        let mut m = self.machine();
        m.validating(state)?;
        let players = m.game().map_or(0, |g| g.players.len());
        info!(round, candidates = players, "round validating");
        self.publish(&m);
        Ok(Step::Validating { round })
    }

    fn close(&self, job: crate::machine::CloseJob) -> Result<Step, CoordinatorError> {
        let span = info_span!("close", round = job.round);
        let _enter = span.enter();
        let started = Instant::now();
        // What the uploads left free in the allocator's heaps goes back to the system before
        // the close allocates its own (fedledger_memory::alloc).
        fedledger_memory::trim();
        let cfg = self.config();
        let global = self.global();
        // Every update of the round was checked against its digest, as it arrived or at start.
        // Mapped, not read: the updates stay in the page cache (file-backed, reclaimable), so
        // the close's anonymous memory does not grow with updates x model size.
        let deltas = job
            .updates
            .iter()
            .map(|u| self.store.map_vector_written(&u.update_sha256))
            .collect::<Result<Vec<_>, _>>()?;
        let slices: Vec<&[f32]> = deltas.iter().map(|d| d.values()).collect();
        let history = self
            .server_dp_history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        // The earlier rounds when this round ends a settlement period (settled rule: the
        // settlement reads the history), from the store.
        let ends_period = cfg.rewards.rule.is_settled()
            && fedledger_ledger::records::period_ending(
                &cfg.reward_segments,
                job.round,
                cfg.rounds,
            )
            .is_some();
        let earlier_rounds = if ends_period {
            self.store
                .outcomes()?
                .into_iter()
                .filter(|o| o.round < job.round)
                .collect()
        } else {
            Vec::new()
        };
        let standing = self
            .standing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let valuer = self
            .valuer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let aggregator = self.aggregator.lock().unwrap_or_else(|p| p.into_inner());
        // The hospitals' histories before the round, when the strategy compares them.
        let compares = crate::machine::close::compares_histories(&cfg, aggregator.as_ref());
        let histories = if compares {
            let known = self
                .histories
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            job.updates
                .iter()
                .map(|u| {
                    known
                        .get(&cfg.participants[u.participant].public_key_hex)
                        .map(|sha| Ok((sha.clone(), self.store.map_vector(sha)?)))
                        .transpose()
                })
                .collect::<Result<Vec<_>, CoordinatorError>>()?
        } else {
            Vec::new()
        };
        let history_slices: Vec<Option<(String, &[f32])>> = histories
            .iter()
            .map(|h| h.as_ref().map(|(sha, v)| (sha.clone(), v.values())))
            .collect();
        // Each history after the round, advanced, stored and mapped back one hospital at a
        // time: a history is the model's size, and the close holds none of them in anonymous
        // memory. Stored before the outcome names them; when the round is abandoned after all
        // (the validators' quality rule kept no update), no record names them and the start-up
        // sweep removes them, as it does after a crash.
        let write = Instant::now();
        let advance = |(before, delta): (&Option<(String, &[f32])>, &&[f32])| {
            let after = crate::aggregate::history::advance(
                cfg.history,
                before.as_ref().map(|b| b.1),
                delta,
            );
            let sha = self.store.put_vector(&after)?;
            drop(after);
            Ok::<_, CoordinatorError>((sha.clone(), self.store.map_vector_written(&sha)?))
        };
        let advanced: Vec<(String, StoredVector)> =
            if !compares || job.updates.len() < cfg.quorum as usize {
                Vec::new()
            } else if global.len() * 4 <= PARALLEL_HISTORY_BYTES {
                // Small models: in parallel, so the blobs' fsyncs overlap and their folder fsyncs
                // are shared (a round of many hospitals would otherwise wait for each in turn).
                use rayon::prelude::*;
                history_slices
                    .par_iter()
                    .zip(slices.par_iter())
                    .map(advance)
                    .collect::<Result<_, _>>()?
            } else {
                history_slices
                    .iter()
                    .zip(&slices)
                    .map(advance)
                    .collect::<Result<_, _>>()?
            };
        let mut writing = write.elapsed();
        let advanced_slices: Vec<(String, &[f32])> = advanced
            .iter()
            .map(|(sha, v)| (sha.clone(), v.values()))
            .collect();
        let inputs = CloseInputs {
            cfg: &cfg,
            validation: &self.validation,
            job: &job,
            global: global.values(),
            deltas: &slices,
            aggregator: aggregator.as_ref(),
            valuer: &valuer,
            server_dp_history: &history,
            earlier_rounds: &earlier_rounds,
            standing: &standing,
            histories: &history_slices,
            advanced: &advanced_slices,
        };
        let mut outcome = match aggregate_round(inputs)? {
            Stage::Abandoned(outcome) => *outcome,
            Stage::Aggregated(mut aggregated) => {
                // The new model is made durable now, before the valuation, and dropped: the
                // valuation's working models never share memory with it. Until the outcome
                // below names it it is no one's (a crash leaves it to the start-up sweep).
                let new_global = aggregated.take_model();
                let write = Instant::now();
                self.store.put_vector(&new_global)?;
                writing += write.elapsed();
                drop(new_global);
                fedledger_memory::trim();
                value_aggregated(inputs, *aggregated)?
            }
        };
        settle(inputs, &mut outcome);
        drop(aggregator);
        outcome.close_micros = started.elapsed().saturating_sub(writing).as_micros() as u64;
        // From here until the next round is open, no proposal may be anchored: the next
        // round's rules are those anchored now.
        let gov = self.governance();
        outcome.rules_sha256 = Some(gov.rules_for(job.round).sha256_hex());
        let next = next_state(&cfg, &outcome, now_ms());
        // Effects in order: the history and model blobs (above), then the outcome and next
        // state in sled, then the ledger.
        let new_global = (outcome.status == crate::types::RoundStatus::Completed)
            .then(|| self.store.map_vector_written(&outcome.model_after))
            .transpose()?;
        self.store.finish_round(&outcome, &next)?;
        self.prune(outcome.round);
        self.anchor_round(&outcome);
        if let Some(v) = &outcome.validators {
            *self.standing.lock().unwrap_or_else(|p| p.into_inner()) = v.standing.clone();
        }
        if let Some(h) = &outcome.history {
            self.histories
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(h.after.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        if let Some(d) = &outcome.server_dp {
            self.server_dp_history
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(d.noise_multiplier);
        }
        let mut m = self.machine();
        if let Some(g) = new_global {
            *self.global.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(g);
        }
        let done = next.phase == Phase::Done;
        if !done && let Err(e) = self.install_rules(&gov, &mut m, next.round) {
            warn!(round = next.round, error = %e, "the governed rules could not be installed; the round runs with the previous ones");
        }
        m.closed(next);
        self.publish(&m);
        drop(m);
        log_close(&outcome, done);
        fedledger_memory::trim();
        Ok(Step::Closed(Box::new(outcome)))
    }

    fn prune(&self, round: u64) {
        let keep = self.base.retain_rounds;
        if keep > 0 && round > keep {
            let old = round - keep;
            let current = self
                .histories
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .cloned()
                .collect();
            match self.store.prune_round(old, round, &current) {
                Ok(n) => info!(
                    round = old,
                    blobs = n,
                    "pruned inputs past the retention window"
                ),
                Err(e) => warn!(round = old, error = %e, "pruning old inputs failed"),
            }
        }
    }

    /// Append the round to the ledger; a refusal is logged and retried at the next step (and
    /// at the next start), since the outcome is durable in the store.
    fn anchor_round(&self, outcome: &RoundOutcome) {
        let mut backlog = self.unanchored.lock().unwrap_or_else(|p| p.into_inner());
        if !backlog.is_empty() {
            backlog.push(outcome.round);
            return;
        }
        match self.anchor.anchor(&self.config(), outcome) {
            Ok((at, cp)) => info!(
                size = cp.checkpoint.size,
                summary = at.summary,
                entries = at.entries.count,
                "round anchored in the ledger"
            ),
            Err(e) => {
                warn!(error = %e, "anchoring the round failed; retrying at the next step");
                backlog.push(outcome.round);
            }
        }
    }

    fn retry_anchoring(&self) {
        let mut backlog = self.unanchored.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(&round) = backlog.first() {
            let anchored = self
                .store
                .outcome(round)
                .map_err(CoordinatorError::from)
                .and_then(|o| {
                    o.ok_or(CoordinatorError::NoSuchRound { round })
                        .and_then(|o| self.anchor.anchor(&self.config(), &o))
                });
            match anchored {
                Ok(_) => {
                    info!(round, "anchored a round the ledger refused earlier");
                    backlog.remove(0);
                }
                Err(e) => {
                    warn!(round, error = %e, "anchoring still fails");
                    return;
                }
            }
        }
    }
}

fn log_close(outcome: &RoundOutcome, done: bool) {
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
            valuation = outcome
                .valuation
                .as_ref()
                .map(|v| {
                    let spread = v
                        .sampling_rel_se
                        .map(|s| format!(", sampling error {:.1}%", s * 100.0))
                        .unwrap_or_default();
                    format!("{} ({} evaluations{spread})", v.estimator, v.evaluations)
                })
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
        info!(round = outcome.round + 1, "round opened");
    }
}

/// An update whose header was accepted, its chunks checked as they arrive and streamed to its
/// file ([`crate::store::BlobWriter`]), so no upload is ever held whole in memory. Dropping it
/// before [`Upload::finish`] (the stream broke off, a chunk was refused) releases the
/// participant's reservation, so it can send again, and removes the partial file.
pub struct Upload {
    engine: Arc<Engine>,
    ticket: UploadTicket,
    assembler: Assembler,
    hasher: fedledger_model::digest::StreamHasher,
    blob: Option<crate::store::BlobWriter>,
    reserved: bool,
}

impl Upload {
    /// Check the chunk (little-endian f32 bytes) that starts at value `offset`, then queue it
    /// for the update's file (waiting while the file's writer is behind).
    pub async fn push(&mut self, offset: u64, bytes: bytes::Bytes) -> Result<(), CoordinatorError> {
        self.assembler.push(offset, &bytes)?;
        self.hasher.push(bytes.clone()).await?;
        match &mut self.blob {
            Some(b) => Ok(b.write(bytes).await?),
            None => Err(CoordinatorError::Internal(
                "a chunk arrived after the upload finished".into(),
            )),
        }
    }

    /// Refused before it was complete: release the reservation and remove the partial file,
    /// waiting until it is gone. Blocks on disk.
    pub fn abandon(mut self) {
        if let Some(b) = self.blob.take() {
            b.abandon();
        }
    }

    /// All chunks are in: check, make the blob durable (fsync, then its name), record the
    /// update (flush), then acknowledge. Blocks on disk.
    pub fn finish(mut self) -> Result<Receipt, CoordinatorError> {
        let assembler = std::mem::replace(&mut self.assembler, Assembler::new(0, 1));
        let hasher = std::mem::take(&mut self.hasher);
        let blob = self
            .blob
            .take()
            .ok_or_else(|| CoordinatorError::Internal("an upload finished twice".into()))?;
        let engine = self.engine.clone();
        let checked = assembler.finish().and_then(|norm| {
            let sha256 = hasher.finish()?;
            // From here on the machine owns the reservation (a refusal drops it there).
            self.reserved = false;
            let received = Received { sha256, norm };
            engine
                .machine()
                .finish_upload(now_ms(), &self.ticket, &received)
        });
        let meta = match checked {
            Ok(m) => m,
            Err(e) => {
                blob.abandon();
                return Err(e);
            }
        };
        let persisted = blob
            .commit(&meta.update_sha256)
            .and_then(|_| engine.store.record_update(&meta));
        if let Err(e) = persisted {
            engine.machine().release(meta.participant);
            return Err(e.into());
        }
        let mut m = engine.machine();
        let name = m.enrolled(meta.participant).name.clone();
        let norm = meta.norm;
        let receipt = m.commit_update(meta);
        drop(m);
        let _span = info_span!("update", round = receipt.round, participant = %name).entered();
        info!(
            examples = self.ticket.examples,
            norm = format!("{norm:.4}"),
            "update accepted"
        );
        engine.wake.notify_one();
        Ok(receipt)
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if self.reserved {
            self.engine.machine().release(self.ticket.participant);
        }
    }
}
