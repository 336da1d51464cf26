//! The round state machine, sans-IO: requests and the clock go in, replies and the jobs to
//! perform come out. No sockets, no disk, no async, no sleeping: the engine feeds it and carries
//! out what it asks, in order, and every rule is unit-tested here without any of those.
//!
//! Life of a federation: `Waiting` until `quorum` enrolled participants have registered, then
//! rounds `1..=total` are `Open` one after another, then `Done`. A round closes as soon as every
//! enrolled participant has either sent an update or declined, or at its deadline: with at least
//! `quorum` updates it completes (aggregate, evaluate, value: [`close`]), otherwise it is
//! abandoned and the next round starts from the same model.
//!
//! Anything that must be durable before it is acknowledged happens in two steps. A request is
//! first checked and reserved (`begin_upload` / `finish_upload`, `decline`): the participant has
//! one answer *in flight* and may not send another; the engine persists it; then `commit_*`
//! applies it (or `release` drops the reservation when persisting failed, leaving the state as
//! before). Phase changes are jobs: [`RoundMachine::poll`] hands out at most one at a time (open
//! a round, close a round), the engine persists and performs it, then reports back with
//! [`RoundMachine::opened`] / [`RoundMachine::closed`] or [`RoundMachine::job_failed`]. A round
//! never starts closing while an answer is being persisted, so an acknowledged update always
//! belongs to the round that records it.

pub mod close;

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use chacha20::ChaCha20Rng;
use rand::RngExt;
use ring::{
    hmac,
    signature::{ED25519, UnparsedPublicKey},
};

use crate::{
    config::{Enrolled, FederationConfig, decode_public_key},
    error::CoordinatorError,
    types::{
        DeclineMeta, PersistedState, Phase, PrivacyObject, Progress, Receipt, UpdateHeader,
        UpdateMeta, UtilitiesMeta,
    },
};

/// How long a registration challenge stays valid.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(60);

/// Bytes of a challenge: a random nonce, its expiry (milliseconds since the Unix epoch, big
/// endian) and an HMAC-SHA256 tag binding both to the key it was issued for.
pub const CHALLENGE_BYTES: usize = NONCE_BYTES + 8 + 32;
const NONCE_BYTES: usize = 16;
/// Domain separation of the challenge tag.
const CHALLENGE_DOMAIN: &[u8] = b"fedledger/challenge/v1\n";

/// A registration challenge handed to a participant. Challenges are stateless: the machine
/// keeps nothing when it issues one (so no flood of requests can evict another's), and checks
/// its tag, key and expiry when it comes back. Only a challenge that registered successfully is
/// remembered (as used) until it expires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    pub challenge: Vec<u8>,
    pub expires_ms: u64,
}

/// A session: the participant it belongs to and when it expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Session {
    participant: usize,
    expires_ms: u64,
}

/// A successful registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registered {
    pub session: [u8; 32],
    pub name: String,
}

/// What a participant is told to do next (the engine adds the parameters).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskInfo {
    /// The asking participant's index among the enrolled.
    pub participant: usize,
    pub phase: Phase,
    /// True when this participant should train now (round open and it has not answered).
    pub train: bool,
    pub round: u64,
    pub global_sha256: String,
    pub deadline_ms: u64,
    pub detail: String,
}

/// An upload whose header was accepted; its chunks may now arrive.
#[derive(Clone, Debug, PartialEq)]
pub struct UploadTicket {
    pub participant: usize,
    pub round: u64,
    pub examples: u64,
    pub claimed_sha256: String,
    pub signature: Vec<u8>,
    pub privacy: PrivacyObject,
    /// Values the update must carry.
    pub num_params: u64,
}

/// What the chunks of an upload added up to.
#[derive(Clone, Debug, PartialEq)]
pub struct Received {
    pub sha256: String,
    pub norm: f64,
}

/// A phase change for the engine to carry out.
#[derive(Clone, Debug, PartialEq)]
pub enum Job {
    /// Persist `state` (the first round opening), then report [`RoundMachine::opened`].
    Open(PersistedState),
    /// Persist `state` (the open round's updates are in and go to the validators), then
    /// report [`RoundMachine::validating`].
    Validate(PersistedState),
    /// Close the round: compute its outcome from these inputs ([`close`]), persist it with the
    /// state that follows ([`close::next_state`]), anchor it, then report
    /// [`RoundMachine::closed`].
    Close(CloseJob),
}

/// The inputs of closing a round, frozen when the close starts.
#[derive(Clone, Debug, PartialEq)]
pub struct CloseJob {
    pub round: u64,
    pub opened_at_ms: u64,
    /// Digest of the model the round started from.
    pub model_before: String,
    /// Accepted updates in arrival order.
    pub updates: Vec<UpdateMeta>,
    pub declines: Vec<DeclineMeta>,
    /// The validators' vectors received in time, sorted by validator key (a federation with
    /// validators; empty otherwise).
    pub vectors: Vec<UtilitiesMeta>,
    /// When the close started.
    pub now_ms: u64,
}

/// Where an answer of a participant stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flight {
    /// An upload's chunks are arriving.
    Receiving,
    /// An update or decline is being persisted; the round may not close meanwhile.
    Committing,
}

/// One federation's rules and state.
pub struct RoundMachine {
    cfg: Arc<FederationConfig>,
    state: PersistedState,
    updates: Vec<UpdateMeta>,
    declines: Vec<DeclineMeta>,
    /// Who is in `updates` or `declines` (so "has it answered?" costs no scan of the round).
    answered: HashSet<usize>,
    /// Enrolled contributors not removed, by key, and how many there are: rebuilt with the
    /// configuration, so no request scans the enrolment.
    by_key: HashMap<[u8; 32], usize>,
    active: usize,
    next_seq: u64,
    in_flight: HashMap<usize, Flight>,
    /// A job handed out and not yet reported back.
    busy: bool,
    completed: u64,
    /// Key of the challenge tags (handed in; the engine draws it at start).
    challenge_key: hmac::Key,
    /// Tags of challenges that registered, until they expire (only key holders add to it).
    used_challenges: HashMap<[u8; 32], u64>,
    /// The same tags by expiry, so expired ones are dropped without a scan.
    challenge_expiries: BTreeSet<(u64, [u8; 32])>,
    /// At most one per participant.
    sessions: HashMap<[u8; 32], Session>,
    /// Each participant's session token (the key of its entry in `sessions`).
    session_of: HashMap<usize, [u8; 32]>,
    registered: HashSet<usize>,
    /// Validators' sessions, by the validator's key (hex); at most one per validator.
    validator_sessions: HashMap<[u8; 32], (String, u64)>,
    /// The round being validated: its game and the vectors received.
    game: Option<Game>,
    vectors: Vec<UtilitiesMeta>,
    /// Validators whose vector is being persisted.
    vectors_in_flight: HashSet<String>,
    rng: ChaCha20Rng,
}

/// The game validators evaluate in the round being validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Game {
    pub round: u64,
    pub seed: u64,
    /// The contributors (players), sorted by key: indices into the round's updates.
    pub players: Vec<usize>,
    pub coalitions: u64,
    pub coalitions_sha256: String,
}

/// What a validator is told to do next.
#[derive(Clone, Debug, PartialEq)]
pub struct CandidatesInfo {
    pub phase: Phase,
    /// True when this validator should evaluate the round now.
    pub validate: bool,
    pub round: u64,
    pub global_sha256: String,
    /// The round's updates in player order (sorted by contributor key).
    pub candidates: Vec<UpdateMeta>,
    pub deadline_ms: u64,
    pub detail: String,
}

/// The enrolled contributors not removed, by key (the first index of a key listed twice, as a
/// scan in order would find), and how many are not removed.
fn enrolment(cfg: &FederationConfig) -> (HashMap<[u8; 32], usize>, usize) {
    let mut by_key = HashMap::with_capacity(cfg.participants.len());
    let mut active = 0;
    for (i, p) in cfg
        .participants
        .iter()
        .enumerate()
        .filter(|(_, p)| !p.removed)
    {
        by_key.entry(p.public_key).or_insert(i);
        active += 1;
    }
    (by_key, active)
}

fn verify(public_key: &[u8; 32], msg: &[u8], signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(msg, signature)
        .is_ok()
}

/// The message an update header's signature covers.
fn update_message(federation: &str, header: &UpdateHeader) -> String {
    fedledger_ledger::records::update_signing_message(
        federation,
        header.round,
        &header.update_sha256,
        header.examples,
        &header.privacy.sha256_hex(),
    )
}

/// The message a validator's vector of `utilities` for `round`'s design signs.
fn utilities_message(
    federation: &str,
    round: u64,
    coalitions_sha256: &str,
    utilities: &[i64],
) -> String {
    fedledger_ledger::records::utilities_signing_message(
        federation,
        round,
        coalitions_sha256,
        &fedledger_ledger::records::utility_vector_sha256(utilities),
    )
}

/// A signature verified before the machine's lock is taken, with its outcome (an Ed25519
/// verification is tens of microseconds: a thousand registrations, updates or declines each
/// round need not queue behind one another, nor behind a flood of forged ones). The machine
/// takes its outcome, valid or not, in place of its own verification only when it names the
/// very key, message and signature the machine would check ([`verified`]): verification is
/// deterministic, so the outcome is the same; for any other request it verifies itself.
#[derive(Clone, Debug)]
pub struct Verification {
    key: [u8; 32],
    message: String,
    signature: Vec<u8>,
    valid: bool,
}

impl Verification {
    /// Verify `signature` by `key` over `message`.
    pub fn of(key: &[u8; 32], message: String, signature: &[u8]) -> Self {
        Self {
            valid: verify(key, message.as_bytes(), signature),
            key: *key,
            message,
            signature: signature.to_vec(),
        }
    }

    /// Whether the signature verified.
    pub fn is_valid(&self) -> bool {
        self.valid
    }

    /// An update header's signature, by `key`.
    pub fn update(federation: &str, key: &[u8; 32], header: &UpdateHeader) -> Self {
        Self::of(key, update_message(federation, header), &header.signature)
    }

    /// A decline's signature, by `key`.
    pub fn decline(
        federation: &str,
        key: &[u8; 32],
        round: u64,
        reason: &str,
        signature: &[u8],
    ) -> Self {
        let message = fedledger_ledger::records::decline_signing_message(federation, round, reason);
        Self::of(key, message, signature)
    }

    /// A validator's signature over its vector of `utilities`, by `key`.
    pub fn utilities(
        federation: &str,
        key: &[u8; 32],
        round: u64,
        coalitions_sha256: &str,
        utilities: &[i64],
        signature: &[u8],
    ) -> Self {
        let message = utilities_message(federation, round, coalitions_sha256, utilities);
        Self::of(key, message, signature)
    }

    /// A registration's signature over `challenge` by the key `key_hex` names; `None` when
    /// `key_hex` is not 32 bytes of hex (the machine refuses such a key by name).
    pub fn registration(
        federation: &str,
        key_hex: &str,
        challenge: &[u8],
        signature: &[u8],
    ) -> Option<Self> {
        let key: [u8; 32] = hex::decode(key_hex).ok()?.try_into().ok()?;
        let message = fedledger_proto::register_message(federation, challenge);
        Some(Self::of(&key, message, signature))
    }
}

/// Whether `signature` by `key` over `message` verifies: the outcome of `pre` when it is that
/// very verification, made outside the lock; verified here otherwise.
fn verified(pre: Option<&Verification>, key: &[u8; 32], message: &str, signature: &[u8]) -> bool {
    match pre {
        Some(v) if v.key == *key && v.message == message && v.signature == signature => v.valid,
        _ => verify(key, message.as_bytes(), signature),
    }
}

impl RoundMachine {
    /// A machine in `state` (fresh, or as persisted), with the open round's accepted updates and
    /// declines as persisted, and `completed` rounds behind it. `rng` makes challenge nonces and
    /// session tokens and `challenge_secret` keys the challenges' tags (the engine draws both
    /// from the operating system at start, so challenges do not outlive a restart).
    pub fn new(
        cfg: Arc<FederationConfig>,
        state: PersistedState,
        mut updates: Vec<UpdateMeta>,
        declines: Vec<DeclineMeta>,
        completed: u64,
        rng: ChaCha20Rng,
        challenge_secret: [u8; 32],
    ) -> Self {
        updates.sort_by_key(|u| u.seq);
        let next_seq = updates.last().map_or(0, |u| u.seq + 1);
        let answered = updates
            .iter()
            .map(|u| u.participant)
            .chain(declines.iter().map(|d| d.participant))
            .collect();
        let (by_key, active) = enrolment(&cfg);
        Self {
            cfg,
            state,
            updates,
            declines,
            answered,
            by_key,
            active,
            next_seq,
            in_flight: HashMap::new(),
            busy: false,
            completed,
            challenge_key: hmac::Key::new(hmac::HMAC_SHA256, &challenge_secret),
            used_challenges: HashMap::new(),
            challenge_expiries: BTreeSet::new(),
            sessions: HashMap::new(),
            session_of: HashMap::new(),
            registered: HashSet::new(),
            validator_sessions: HashMap::new(),
            game: None,
            vectors: Vec::new(),
            vectors_in_flight: HashSet::new(),
            rng,
        }
    }

    /// Resume a round being validated (after a restart): the vectors received before it.
    pub fn resume_validating(
        &mut self,
        vectors: Vec<UtilitiesMeta>,
    ) -> Result<(), CoordinatorError> {
        if self.state.phase == Phase::Validating {
            self.game = Some(self.game_of(self.state.round)?);
            self.vectors = vectors;
        }
        Ok(())
    }

    /// The game of `round` over the open round's updates.
    fn game_of(&self, round: u64) -> Result<Game, CoordinatorError> {
        let players = crate::value::players_by_key(&self.cfg, &self.updates);
        let (seed, design) = crate::value::validators_design(&self.cfg, round, players.len())?;
        Ok(Game {
            round,
            seed,
            players,
            coalitions: design.coalitions.len() as u64,
            coalitions_sha256: fedledger_model::digest::sha256_hex(&design.canonical()),
        })
    }

    /// The game of the round being validated, if any.
    pub fn game(&self) -> Option<&Game> {
        self.game.as_ref()
    }

    /// The vectors received for the round being validated, sorted by validator key.
    pub fn vectors(&self) -> &[UtilitiesMeta] {
        &self.vectors
    }

    /// The durable part of the state.
    pub fn state(&self) -> &PersistedState {
        &self.state
    }

    /// The open round's accepted updates, in arrival order.
    pub fn updates(&self) -> &[UpdateMeta] {
        &self.updates
    }

    /// The open round's signed declines.
    pub fn declines(&self) -> &[DeclineMeta] {
        &self.declines
    }

    /// Per enrolled participant (by index): whether it holds a session that has not expired.
    pub fn live_sessions(&self, now_ms: u64) -> Vec<bool> {
        let mut live = vec![false; self.cfg.participants.len()];
        for s in self.sessions.values() {
            if s.expires_ms > now_ms
                && let Some(l) = live.get_mut(s.participant)
            {
                *l = true;
            }
        }
        live
    }

    /// What waiting participants watch.
    pub fn progress(&self) -> Progress {
        Progress {
            phase: self.state.phase,
            round: self.state.round,
            completed: self.completed,
            closing: self.closing(),
        }
    }

    fn closing(&self) -> bool {
        self.busy && matches!(self.state.phase, Phase::Open | Phase::Validating)
    }

    fn participant(&self, idx: usize) -> &Enrolled {
        &self.cfg.participants[idx]
    }

    /// The enrolled participant behind `idx`.
    pub fn enrolled(&self, idx: usize) -> &Enrolled {
        self.participant(idx)
    }

    fn enrolled_index(&self, key_hex: &str) -> Result<usize, CoordinatorError> {
        let key = decode_public_key(key_hex).map_err(CoordinatorError::MalformedKey)?;
        self.by_key
            .get(&key)
            .copied()
            .ok_or_else(|| CoordinatorError::NotEnrolled {
                key: hex::encode(key),
                federation: self.cfg.federation.clone(),
            })
    }

    /// The participant a live session token belongs to.
    pub fn session(&self, now_ms: u64, token: &[u8]) -> Result<usize, CoordinatorError> {
        let token: [u8; 32] = token.try_into().map_err(|_| CoordinatorError::NoSession)?;
        match self.sessions.get(&token) {
            Some(s) if s.expires_ms > now_ms && !self.participant(s.participant).removed => {
                Ok(s.participant)
            }
            _ => Err(CoordinatorError::NoSession),
        }
    }

    /// What a challenge's tag authenticates: the federation, the key, the nonce, the expiry.
    fn challenge_message(&self, key: &[u8; 32], nonce: &[u8], expires: &[u8]) -> Vec<u8> {
        let mut m = Vec::with_capacity(CHALLENGE_DOMAIN.len() + 128);
        m.extend_from_slice(CHALLENGE_DOMAIN);
        m.extend_from_slice(self.cfg.federation.as_bytes());
        m.push(b'\n');
        m.extend_from_slice(key);
        m.extend_from_slice(nonce);
        m.extend_from_slice(expires);
        m
    }

    /// The enrolled validator behind `key_hex`, if it is one.
    fn validator_index(&self, key_hex: &str) -> Option<usize> {
        let key = decode_public_key(key_hex).ok()?;
        self.cfg.validators.iter().position(|v| v.public_key == key)
    }

    /// Step 1 of registration: a fresh challenge for an enrolled key. Nothing is stored.
    pub fn challenge(&mut self, now_ms: u64, key_hex: &str) -> Result<Challenge, CoordinatorError> {
        let key = self.who(key_hex)?.1.public_key;
        Ok(self.issue_challenge(now_ms, &key))
    }

    /// Who `key_hex` is: an enrolled validator (`None`), or else an enrolled contributor (its
    /// index); refused when it is neither.
    fn who(&self, key_hex: &str) -> Result<(Option<usize>, &Enrolled), CoordinatorError> {
        Ok(match self.validator_index(key_hex) {
            Some(v) => (None, &self.cfg.validators[v]),
            None => {
                let idx = self.enrolled_index(key_hex)?;
                (Some(idx), self.participant(idx))
            }
        })
    }

    fn issue_challenge(&mut self, now_ms: u64, key: &[u8; 32]) -> Challenge {
        let nonce: [u8; NONCE_BYTES] = self.rng.random();
        let expires_ms = now_ms.saturating_add(CHALLENGE_TTL.as_millis() as u64);
        let expires = expires_ms.to_be_bytes();
        let tag = hmac::sign(
            &self.challenge_key,
            &self.challenge_message(key, &nonce, &expires),
        );
        let mut challenge = Vec::with_capacity(CHALLENGE_BYTES);
        challenge.extend_from_slice(&nonce);
        challenge.extend_from_slice(&expires);
        challenge.extend_from_slice(tag.as_ref());
        Challenge {
            challenge,
            expires_ms,
        }
    }

    /// Check that `challenge` was issued by this machine for `idx` and has not expired; returns
    /// its tag.
    fn check_challenge(
        &self,
        now_ms: u64,
        key: &[u8; 32],
        challenge: &[u8],
    ) -> Result<[u8; 32], CoordinatorError> {
        if challenge.len() != CHALLENGE_BYTES {
            return Err(CoordinatorError::BadChallenge);
        }
        let (nonce, rest) = challenge.split_at(NONCE_BYTES);
        let (expires, tag) = rest.split_at(8);
        let tag: [u8; 32] = tag.try_into().map_err(|_| CoordinatorError::BadChallenge)?;
        // Compared in constant time: a forger learns nothing from how fast a tag is refused.
        hmac::verify(
            &self.challenge_key,
            &self.challenge_message(key, nonce, expires),
            &tag,
        )
        .map_err(|_| CoordinatorError::BadChallenge)?;
        let expires_ms = u64::from_be_bytes(
            expires
                .try_into()
                .map_err(|_| CoordinatorError::BadChallenge)?,
        );
        if expires_ms <= now_ms || self.used_challenges.contains_key(&tag) {
            return Err(CoordinatorError::BadChallenge);
        }
        Ok(tag)
    }

    /// Step 2: check the challenge and the signature over it and open a session bound to the
    /// key (replacing any earlier one), valid for `limits.session_ttl_secs`. The challenge is
    /// used up only by a successful registration. The first round opens (a [`Job::Open`] from
    /// [`Self::poll`]) once a quorum has registered.
    pub fn register(
        &mut self,
        now_ms: u64,
        key_hex: &str,
        challenge: &[u8],
        signature: &[u8],
    ) -> Result<Registered, CoordinatorError> {
        self.register_verified(now_ms, key_hex, challenge, signature, None)
    }

    /// As [`Self::register`], with the signature possibly verified already
    /// ([`Verification::registration`]).
    pub fn register_verified(
        &mut self,
        now_ms: u64,
        key_hex: &str,
        challenge: &[u8],
        signature: &[u8],
        pre: Option<&Verification>,
    ) -> Result<Registered, CoordinatorError> {
        let (contributor, enrolled) = self.who(key_hex)?;
        let (key, key_hex, name) = (
            enrolled.public_key,
            enrolled.public_key_hex.clone(),
            enrolled.name.clone(),
        );
        let tag = self.check_challenge(now_ms, &key, challenge)?;
        let msg = fedledger_proto::register_message(&self.cfg.federation, challenge);
        if !verified(pre, &key, &msg, signature) {
            return Err(CoordinatorError::BadRegistrationSignature { key: key_hex });
        }
        while let Some(&(exp, old)) = self.challenge_expiries.first()
            && exp <= now_ms
        {
            self.challenge_expiries.pop_first();
            self.used_challenges.remove(&old);
        }
        let expires_ms = u64::from_be_bytes(
            challenge[NONCE_BYTES..NONCE_BYTES + 8]
                .try_into()
                .map_err(|_| CoordinatorError::BadChallenge)?,
        );
        self.used_challenges.insert(tag, expires_ms);
        self.challenge_expiries.insert((expires_ms, tag));
        let session: [u8; 32] = self.rng.random();
        let ttl = self.cfg.limits.session_ttl.as_millis() as u64;
        let Some(idx) = contributor else {
            self.validator_sessions.retain(|_, (k, _)| *k != key_hex);
            self.validator_sessions
                .insert(session, (key_hex, now_ms.saturating_add(ttl)));
            return Ok(Registered { session, name });
        };
        if let Some(old) = self.session_of.insert(idx, session) {
            self.sessions.remove(&old);
        }
        self.sessions.insert(
            session,
            Session {
                participant: idx,
                expires_ms: now_ms.saturating_add(ttl),
            },
        );
        self.registered.insert(idx);
        Ok(Registered { session, name })
    }

    fn responded(&self, idx: usize) -> bool {
        self.answered.contains(&idx)
    }

    /// What the participant behind `session` should do now.
    pub fn task(&self, now_ms: u64, session: &[u8]) -> Result<TaskInfo, CoordinatorError> {
        let idx = self.session(now_ms, session)?;
        let st = &self.state;
        let (train, detail) = match st.phase {
            Phase::Waiting => (
                false,
                format!(
                    "waiting for registrations ({} of quorum {})",
                    self.registered.len(),
                    self.cfg.quorum
                ),
            ),
            Phase::Open if self.closing() => (false, format!("round {} is closing", st.round)),
            Phase::Open if self.responded(idx) || self.in_flight.contains_key(&idx) => (
                false,
                format!("round {} answered; waiting for the next round", st.round),
            ),
            Phase::Open => (true, format!("round {} open", st.round)),
            Phase::Validating => (
                false,
                format!(
                    "round {}: the validators are evaluating its updates",
                    st.round
                ),
            ),
            Phase::Done => (false, "federation finished".to_owned()),
        };
        Ok(TaskInfo {
            participant: idx,
            phase: st.phase,
            train,
            round: st.round,
            global_sha256: st.global_sha256.clone(),
            deadline_ms: st.deadline_ms,
            detail,
        })
    }

    fn check_open_round(
        &self,
        request: &'static str,
        idx: usize,
        round: u64,
    ) -> Result<(), CoordinatorError> {
        if self.state.phase != Phase::Open || self.closing() {
            return Err(CoordinatorError::NoOpenRound {
                state: if self.closing() {
                    "closing"
                } else {
                    self.state.phase.as_str()
                },
            });
        }
        if round != self.state.round {
            return Err(CoordinatorError::WrongRound {
                request,
                got: round,
                open: self.state.round,
            });
        }
        if self.responded(idx) {
            return Err(CoordinatorError::AlreadySubmitted {
                name: self.participant(idx).name.clone(),
                round,
            });
        }
        Ok(())
    }

    fn check_not_in_flight(&self, idx: usize, round: u64) -> Result<(), CoordinatorError> {
        if self.in_flight.contains_key(&idx) {
            return Err(CoordinatorError::InFlight {
                name: self.participant(idx).name.clone(),
                round,
            });
        }
        Ok(())
    }

    /// Check an update's header before any chunk is accepted: session, round, one answer per
    /// participant, dimension, example count, privacy report, and the signature over the
    /// claimed digest. On success the participant's answer is in flight until
    /// [`Self::commit_update`] or [`Self::release`].
    pub fn begin_upload(
        &mut self,
        now_ms: u64,
        session: &[u8],
        header: UpdateHeader,
    ) -> Result<UploadTicket, CoordinatorError> {
        self.begin_upload_verified(now_ms, session, header, None)
    }

    /// The key of the participant behind `session` (to verify its header outside the lock).
    pub fn session_key(&self, now_ms: u64, session: &[u8]) -> Result<[u8; 32], CoordinatorError> {
        Ok(self.participant(self.session(now_ms, session)?).public_key)
    }

    /// As [`Self::begin_upload`], with the header's signature possibly verified already
    /// ([`Verification::update`]): used when it names the session's key, this header's signature
    /// and the message this header signs; otherwise the signature is verified here.
    pub fn begin_upload_verified(
        &mut self,
        now_ms: u64,
        session: &[u8],
        header: UpdateHeader,
        pre: Option<Verification>,
    ) -> Result<UploadTicket, CoordinatorError> {
        let idx = self.session(now_ms, session)?;
        self.check_open_round("update", idx, header.round)?;
        self.check_not_in_flight(idx, header.round)?;
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
        let p = &header.privacy;
        p.validate().map_err(CoordinatorError::BadPrivacyReport)?;
        if self.cfg.validating.is_some() && !p.is_private() {
            return Err(CoordinatorError::BadPrivacyReport(
                "this federation has validators, who receive each update: an update must \
                 carry DP-SGD noise (accountant \"none\" is refused)"
                    .into(),
            ));
        }
        if p.is_private()
            && !self
                .cfg
                .privacy_plan
                .accountants
                .iter()
                .any(|a| a.name() == p.accountant)
        {
            return Err(CoordinatorError::BadPrivacyReport(format!(
                "accountant {} is not one this federation records ({})",
                p.accountant,
                self.accountant_names()
            )));
        }
        let msg = update_message(&self.cfg.federation, &header);
        let who = self.participant(idx);
        if !verified(pre.as_ref(), &who.public_key, &msg, &header.signature) {
            return Err(CoordinatorError::BadUpdateSignature {
                name: who.name.clone(),
                round: header.round,
                digest: header.update_sha256,
            });
        }
        self.in_flight.insert(idx, Flight::Receiving);
        Ok(UploadTicket {
            participant: idx,
            round: header.round,
            examples: header.examples,
            claimed_sha256: header.update_sha256,
            signature: header.signature,
            privacy: header.privacy,
            num_params: expected,
        })
    }

    /// The accountants the federation records, comma-separated.
    pub fn accountant_names(&self) -> String {
        self.cfg.privacy_plan.accountant_names().join(", ")
    }

    /// All chunks have arrived: check the digest and the norm, and that the round is still
    /// open. Returns the metadata to persist (the participant's answer stays in flight, and the
    /// round cannot close, until [`Self::commit_update`] or [`Self::release`]). On a refusal the
    /// reservation is dropped.
    pub fn finish_upload(
        &mut self,
        now_ms: u64,
        ticket: &UploadTicket,
        received: &Received,
    ) -> Result<UpdateMeta, CoordinatorError> {
        let refused = |m: &mut Self, e| {
            m.release(ticket.participant);
            Err(e)
        };
        if self.in_flight.get(&ticket.participant) != Some(&Flight::Receiving) {
            return Err(CoordinatorError::Internal(
                "an upload finished without its reservation".into(),
            ));
        }
        if received.sha256 != ticket.claimed_sha256 {
            return refused(
                self,
                CoordinatorError::DigestMismatch {
                    claimed: ticket.claimed_sha256.clone(),
                    actual: received.sha256.clone(),
                },
            );
        }
        if let Some(bound) = self.cfg.max_update_norm
            && received.norm > bound
        {
            return refused(
                self,
                CoordinatorError::NormTooLarge {
                    norm: received.norm,
                    bound,
                },
            );
        }
        // The round may have moved on while the chunks arrived.
        if let Err(e) = self.check_open_round("update", ticket.participant, ticket.round) {
            return refused(self, e);
        }
        self.in_flight
            .insert(ticket.participant, Flight::Committing);
        let seq = self.next_seq;
        self.next_seq += 1;
        Ok(UpdateMeta {
            round: ticket.round,
            participant: ticket.participant,
            examples: ticket.examples,
            update_sha256: received.sha256.clone(),
            signature: hex::encode(&ticket.signature),
            privacy: ticket.privacy.clone(),
            received_at_ms: now_ms,
            seq,
            norm: received.norm,
        })
    }

    /// The update is durable: count it and acknowledge it.
    pub fn commit_update(&mut self, meta: UpdateMeta) -> Receipt {
        self.in_flight.remove(&meta.participant);
        let receipt = Receipt {
            round: meta.round,
            update_sha256: meta.update_sha256.clone(),
            accepted: self.updates.len() as u32 + 1,
            quorum: self.cfg.quorum,
        };
        // Arrival order is `seq` (given when the bytes were checked); commits may finish in
        // another order, and aggregation sums in this one.
        self.answered.insert(meta.participant);
        let at = self.updates.partition_point(|u| u.seq < meta.seq);
        self.updates.insert(at, meta);
        receipt
    }

    /// Drop a participant's answer in flight (its upload broke off, or persisting failed):
    /// the state is as before it started.
    pub fn release(&mut self, participant: usize) {
        self.in_flight.remove(&participant);
    }

    /// Check a signed decline of the open round. Returns the record to persist; the
    /// participant's answer is in flight until [`Self::commit_decline`] or [`Self::release`].
    pub fn decline(
        &mut self,
        now_ms: u64,
        session: &[u8],
        round: u64,
        reason: &str,
        signature: &[u8],
    ) -> Result<DeclineMeta, CoordinatorError> {
        self.decline_verified(now_ms, session, round, reason, signature, None)
    }

    /// As [`Self::decline`], with the signature possibly verified already
    /// ([`Verification::decline`], against [`Self::session_key`]).
    pub fn decline_verified(
        &mut self,
        now_ms: u64,
        session: &[u8],
        round: u64,
        reason: &str,
        signature: &[u8],
        pre: Option<&Verification>,
    ) -> Result<DeclineMeta, CoordinatorError> {
        if reason.is_empty() || reason.len() > 1024 || reason.chars().any(|c| c == '\n') {
            return Err(CoordinatorError::InvalidField {
                field: "reason",
                reason: "a decline's reason must be 1-1024 bytes on one line".into(),
            });
        }
        let idx = self.session(now_ms, session)?;
        self.check_open_round("decline", idx, round)?;
        self.check_not_in_flight(idx, round)?;
        let who = self.participant(idx);
        let msg =
            fedledger_ledger::records::decline_signing_message(&self.cfg.federation, round, reason);
        if !verified(pre, &who.public_key, &msg, signature) {
            return Err(CoordinatorError::BadDeclineSignature {
                name: who.name.clone(),
                round,
            });
        }
        self.in_flight.insert(idx, Flight::Committing);
        Ok(DeclineMeta {
            round,
            participant: idx,
            reason: reason.to_owned(),
            signature: hex::encode(signature),
            received_at_ms: now_ms,
        })
    }

    /// The decline is durable: count it.
    pub fn commit_decline(&mut self, meta: DeclineMeta) {
        self.in_flight.remove(&meta.participant);
        self.answered.insert(meta.participant);
        self.declines.push(meta);
    }

    /// The validator behind a live validator session (its key, hex).
    pub fn validator_session(&self, now_ms: u64, token: &[u8]) -> Result<String, CoordinatorError> {
        let token: [u8; 32] = token.try_into().map_err(|_| CoordinatorError::NoSession)?;
        match self.validator_sessions.get(&token) {
            Some((key, expires)) if *expires > now_ms && self.validator_index(key).is_some() => {
                Ok(key.clone())
            }
            _ => Err(CoordinatorError::NoSession),
        }
    }

    /// The enrolled validator with key `key_hex`.
    pub fn validator(&self, key_hex: &str) -> Option<&Enrolled> {
        self.validator_index(key_hex)
            .map(|v| &self.cfg.validators[v])
    }

    fn validator_answered(&self, key_hex: &str) -> bool {
        self.vectors.iter().any(|v| v.validator == key_hex)
            || self.vectors_in_flight.contains(key_hex)
    }

    /// What the validator behind `session` should do now.
    pub fn candidates(
        &self,
        now_ms: u64,
        session: &[u8],
    ) -> Result<CandidatesInfo, CoordinatorError> {
        let key = self.validator_session(now_ms, session)?;
        let st = &self.state;
        let mut info = CandidatesInfo {
            phase: st.phase,
            validate: false,
            round: st.round,
            global_sha256: st.global_sha256.clone(),
            candidates: Vec::new(),
            deadline_ms: st.deadline_ms,
            detail: String::new(),
        };
        info.detail = match (st.phase, &self.game) {
            (Phase::Validating, Some(game)) if !self.closing_validation() => {
                if self.validator_answered(&key) {
                    format!("round {} validated; waiting for the next round", st.round)
                } else {
                    info.validate = true;
                    info.candidates = game
                        .players
                        .iter()
                        .map(|i| self.updates[*i].clone())
                        .collect();
                    format!(
                        "round {}: {} candidates to evaluate",
                        st.round,
                        game.players.len()
                    )
                }
            }
            (Phase::Done, _) => "federation finished".to_owned(),
            (Phase::Waiting, _) => "waiting for registrations".to_owned(),
            _ => format!("round {} is not being validated", st.round),
        };
        Ok(info)
    }

    fn closing_validation(&self) -> bool {
        self.busy && self.state.phase == Phase::Validating
    }

    /// Check a validator's vector for the round being validated: its session, the round, one
    /// vector per validator, the whole design (its digest and one utility per coalition) and
    /// the signature. Returns the record to persist; the validator's answer is in flight until
    /// [`Self::commit_utilities`] or [`Self::release_validator`].
    pub fn begin_utilities(
        &mut self,
        now_ms: u64,
        session: &[u8],
        round: u64,
        coalitions_sha256: &str,
        utilities: Vec<i64>,
        signature: &[u8],
    ) -> Result<UtilitiesMeta, CoordinatorError> {
        self.begin_utilities_verified(
            now_ms,
            session,
            round,
            coalitions_sha256,
            utilities,
            signature,
            None,
        )
    }

    /// The key of the validator behind `session` (to verify its vector outside the lock).
    pub fn validator_key(&self, now_ms: u64, session: &[u8]) -> Result<[u8; 32], CoordinatorError> {
        let key = self.validator_session(now_ms, session)?;
        self.validator(&key)
            .map(|v| v.public_key)
            .ok_or(CoordinatorError::NoSession)
    }

    /// As [`Self::begin_utilities`], with the signature possibly verified already
    /// ([`Verification::utilities`], against [`Self::validator_key`]).
    #[allow(clippy::too_many_arguments)]
    pub fn begin_utilities_verified(
        &mut self,
        now_ms: u64,
        session: &[u8],
        round: u64,
        coalitions_sha256: &str,
        utilities: Vec<i64>,
        signature: &[u8],
        pre: Option<&Verification>,
    ) -> Result<UtilitiesMeta, CoordinatorError> {
        let key = self.validator_session(now_ms, session)?;
        let game = match (&self.game, self.state.phase) {
            (Some(g), Phase::Validating) if !self.closing_validation() => g,
            _ => {
                return Err(CoordinatorError::NoOpenRound {
                    state: if self.closing_validation() {
                        "closing"
                    } else {
                        "not validating"
                    },
                });
            }
        };
        if round != game.round {
            return Err(CoordinatorError::WrongRound {
                request: "utilities",
                got: round,
                open: game.round,
            });
        }
        let v = self
            .validator(&key)
            .ok_or(CoordinatorError::NoSession)?
            .clone();
        if self.validator_answered(&key) {
            return Err(CoordinatorError::AlreadySubmitted {
                name: v.name.clone(),
                round,
            });
        }
        if coalitions_sha256 != game.coalitions_sha256 {
            return Err(CoordinatorError::InvalidField {
                field: "coalitions_sha256",
                reason: format!(
                    "the round's design is listed as {}, not {coalitions_sha256}",
                    game.coalitions_sha256
                ),
            });
        }
        if utilities.len() as u64 != game.coalitions {
            return Err(CoordinatorError::InvalidField {
                field: "utilities",
                reason: format!(
                    "{} utilities for a design of {} coalitions (partial vectors are refused)",
                    utilities.len(),
                    game.coalitions
                ),
            });
        }
        let msg = utilities_message(&self.cfg.federation, round, coalitions_sha256, &utilities);
        if !verified(pre, &v.public_key, &msg, signature) {
            return Err(CoordinatorError::InvalidField {
                field: "signature",
                reason: format!(
                    "{}'s signature over its round {round} utilities does not verify",
                    v.name
                ),
            });
        }
        self.vectors_in_flight.insert(key.clone());
        Ok(UtilitiesMeta {
            round,
            validator: key,
            name: v.name,
            coalitions_sha256: coalitions_sha256.to_owned(),
            utilities,
            signature: fedledger_ledger::note::b64_encode(signature),
            received_at_ms: now_ms,
        })
    }

    /// The vector is durable: count it. Returns how many the round has and the quorum.
    pub fn commit_utilities(&mut self, meta: UtilitiesMeta) -> (u32, u32) {
        self.vectors_in_flight.remove(&meta.validator);
        let at = self
            .vectors
            .partition_point(|v| v.validator < meta.validator);
        self.vectors.insert(at, meta);
        let quorum = self.cfg.validating.as_ref().map_or(0, |v| v.quorum);
        (self.vectors.len() as u32, quorum)
    }

    /// Drop a validator's answer in flight (persisting failed).
    pub fn release_validator(&mut self, key_hex: &str) {
        self.vectors_in_flight.remove(key_hex);
    }

    fn all_answered(&self) -> bool {
        self.updates.len() + self.declines.len() >= self.active
    }

    /// The rules of the round about to open (governance): a new configuration whose
    /// participants extend the old list (indices never move; removed ones are marked), so
    /// sessions and persisted answers stay valid. Registrations of removed keys are forgotten.
    pub fn set_config(&mut self, cfg: Arc<FederationConfig>) {
        (self.by_key, self.active) = enrolment(&cfg);
        self.cfg = cfg;
        let cfg = self.cfg.clone();
        let gone = |i: &usize| cfg.participants.get(*i).is_none_or(|p| p.removed);
        self.registered.retain(|i| !gone(i));
        self.sessions.retain(|_, s| !gone(&s.participant));
        self.session_of.retain(|i, _| !gone(i));
    }

    fn committing(&self) -> bool {
        self.in_flight.values().any(|f| *f == Flight::Committing)
    }

    /// The next phase change to carry out now, if any (at most one at a time): open the first
    /// round once a quorum has registered; close the open round when everyone has answered or
    /// its deadline has passed (never while an answer is being persisted).
    pub fn poll(&mut self, now_ms: u64) -> Option<Job> {
        if self.busy {
            return None;
        }
        let job = match self.state.phase {
            Phase::Waiting if self.registered.len() >= self.cfg.quorum as usize => {
                Job::Open(self.open_state(1, self.state.global_sha256.clone(), now_ms))
            }
            Phase::Open
                if (self.all_answered() || now_ms >= self.state.deadline_ms)
                    && !self.committing() =>
            {
                match &self.cfg.validating {
                    // Below quorum the round is abandoned without validators.
                    Some(v) if self.updates.len() >= self.cfg.quorum as usize => {
                        Job::Validate(PersistedState {
                            phase: Phase::Validating,
                            deadline_ms: now_ms
                                .saturating_add(v.deadline_secs.saturating_mul(1000)),
                            ..self.state.clone()
                        })
                    }
                    _ => self.close_job(now_ms),
                }
            }
            Phase::Validating
                if (self.all_validated() || now_ms >= self.state.deadline_ms)
                    && self.vectors_in_flight.is_empty() =>
            {
                self.close_job(now_ms)
            }
            _ => return None,
        };
        self.busy = true;
        Some(job)
    }

    fn close_job(&self, now_ms: u64) -> Job {
        Job::Close(CloseJob {
            round: self.state.round,
            opened_at_ms: self.state.opened_at_ms,
            model_before: self.state.global_sha256.clone(),
            updates: self.updates.clone(),
            declines: self.declines.clone(),
            vectors: self.vectors.clone(),
            now_ms,
        })
    }

    /// Every enrolled validator has sent its vector.
    fn all_validated(&self) -> bool {
        self.cfg
            .validators
            .iter()
            .all(|v| self.vectors.iter().any(|m| m.validator == v.public_key_hex))
    }

    /// Milliseconds until something may become due without a request (the open round's or
    /// the validators' deadline); None when only a request can change anything.
    pub fn next_wake(&self, now_ms: u64) -> Option<u64> {
        (matches!(self.state.phase, Phase::Open | Phase::Validating) && !self.busy)
            .then(|| self.state.deadline_ms.saturating_sub(now_ms))
    }

    /// The open round's updates are durably handed to the validators: validate.
    pub fn validating(&mut self, state: PersistedState) -> Result<(), CoordinatorError> {
        let game = self.game_of(state.round)?;
        self.busy = false;
        self.state = state;
        self.game = Some(game);
        self.vectors.clear();
        Ok(())
    }

    fn open_state(&self, round: u64, global_sha256: String, now_ms: u64) -> PersistedState {
        PersistedState {
            phase: Phase::Open,
            round,
            global_sha256,
            opened_at_ms: now_ms,
            deadline_ms: now_ms + self.cfg.deadline.as_millis() as u64,
        }
    }

    /// The first round's state is durable: the round is open.
    pub fn opened(&mut self, state: PersistedState) {
        self.busy = false;
        self.state = state;
        self.updates.clear();
        self.declines.clear();
        self.answered.clear();
        self.next_seq = 0;
    }

    /// The close's outcome and `next` state are durable: move on.
    pub fn closed(&mut self, next: PersistedState) {
        self.busy = false;
        self.state = next;
        self.updates.clear();
        self.declines.clear();
        self.answered.clear();
        self.game = None;
        self.vectors.clear();
        self.next_seq = 0;
        self.completed += 1;
    }

    /// The job handed out could not be carried out; the state is as before and a later
    /// [`Self::poll`] hands it out again.
    pub fn job_failed(&mut self) {
        self.busy = false;
    }
}

#[cfg(test)]
mod tests;
