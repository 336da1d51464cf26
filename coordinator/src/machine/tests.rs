//! The round machine driven directly: no socket, no disk, no sleep. Time is a number passed in;
//! keys are derived from fixed seeds.

use std::sync::Arc;

use chacha20::ChaCha20Rng;
use fedledger_model::{ModelKind, ModelSpec, digest::vector_sha256};
use fedledger_privacy::AccountantKind;
use rand::SeedableRng;
use ring::signature::{Ed25519KeyPair, KeyPair};

use super::{
    CloseJob, Job, Received, RoundMachine, UploadTicket, Verification,
    close::{CloseInputs, close_round, next_state},
};
use crate::{
    aggregate,
    config::{
        ConfigFile, DataSection, FederationConfig, ParticipantEntry, PrivacyPlanSection,
        RoundsSection, StandardisationMode, StrategyKind,
    },
    error::CoordinatorError,
    types::{PersistedState, Phase, PrivacyObject, RoundStatus, UpdateHeader, UpdateMeta},
    value::Valuer,
};

const T0: u64 = 1_700_000_000_000;
const FEATURES: usize = 3;
const PARAMS: u64 = FEATURES as u64 + 1;

fn key(i: u8) -> Ed25519KeyPair {
    Ed25519KeyPair::from_seed_unchecked(&[i + 1; 32]).unwrap()
}

fn hex_of(k: &Ed25519KeyPair) -> String {
    hex::encode(k.public_key().as_ref())
}

fn validation_csv() -> Vec<u8> {
    let mut s = String::from("a,b,c,label\n");
    for i in 0..12 {
        s.push_str(&format!(
            "{},{},{},{}\n",
            (i % 5) as f32 / 5.0,
            (i % 3) as f32,
            (i * 7 % 11) as f32 / 11.0,
            i % 2
        ));
    }
    s.into_bytes()
}

/// Three enrolled keys, quorum 2, 3 rounds, deadline 60 s, norm bound 100.
fn config() -> Arc<FederationConfig> {
    let file = ConfigFile {
        federation: "machine-test".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        state_dir: "unused".into(),
        key: None,
        model: ModelSpec {
            kind: ModelKind::Logreg,
            features: FEATURES,
            classes: 2,
            hidden: vec![],
        },
        data: DataSection {
            label_column: "label".into(),
            validation: "validation.csv".into(),
            standardisation: StandardisationMode::Site,
        },
        rounds: RoundsSection {
            total: 3,
            quorum: 2,
            deadline_secs: 60,
            grace_secs: 60,
        },
        training: Default::default(),
        aggregation: crate::config::AggregationSection {
            max_update_norm: 100.0,
            ..Default::default()
        },
        limits: Default::default(),
        valuation: Default::default(),
        rewards: Default::default(),
        privacy: PrivacyPlanSection {
            accountants: vec![AccountantKind::Rdp, AccountantKind::Pld],
            ..Default::default()
        },
        ledger: Default::default(),
        tls: None,
        metrics: Default::default(),
        governance: Default::default(),
        participants: (0..3)
            .map(|i| ParticipantEntry {
                name: format!("h{i}"),
                public_key: hex_of(&key(i)),
                public_key_file: None,
            })
            .collect(),
        validators: None,
        validator_entries: Vec::new(),
    };
    Arc::new(file.validate_with(&validation_csv()).unwrap())
}

fn fresh() -> RoundMachine {
    waiting(config())
}

/// A machine of `cfg` before anyone registered.
fn waiting(cfg: Arc<FederationConfig>) -> RoundMachine {
    RoundMachine::new(
        cfg,
        PersistedState {
            phase: Phase::Waiting,
            round: 0,
            global_sha256: vector_sha256(&[0.0; PARAMS as usize]),
            opened_at_ms: 0,
            deadline_ms: 0,
        },
        Vec::new(),
        Vec::new(),
        0,
        ChaCha20Rng::seed_from_u64(1),
        [7; 32],
    )
}

fn register(m: &mut RoundMachine, i: u8, now: u64) -> [u8; 32] {
    let k = key(i);
    let c = m.challenge(now, &hex_of(&k)).unwrap();
    let msg = fedledger_proto::register_message("machine-test", &c.challenge);
    let sig = k.sign(msg.as_bytes());
    m.register(now, &hex_of(&k), &c.challenge, sig.as_ref())
        .unwrap()
        .session
}

/// A machine with round 1 open (h0 and h1 registered; h2 registered too when `all`).
fn open(all: bool) -> (RoundMachine, Vec<[u8; 32]>) {
    let mut m = fresh();
    let mut sessions = vec![register(&mut m, 0, T0), register(&mut m, 1, T0)];
    if all {
        sessions.push(register(&mut m, 2, T0));
    }
    match m.poll(T0) {
        Some(Job::Open(state)) => m.opened(state),
        other => panic!("expected the first round to open, got {other:?}"),
    }
    (m, sessions)
}

fn delta(i: u8) -> Vec<f32> {
    (0..PARAMS)
        .map(|j| (i as f32 + 1.0) * 0.01 * j as f32)
        .collect()
}

fn header(i: u8, round: u64, d: &[f32]) -> UpdateHeader {
    signed_header(i, round, d, 10, PrivacyObject::none())
}

/// A header signed by h`i` over everything it claims.
fn signed_header(
    i: u8,
    round: u64,
    d: &[f32],
    examples: u64,
    privacy: PrivacyObject,
) -> UpdateHeader {
    let sha = vector_sha256(d);
    let msg = fedledger_ledger::records::update_signing_message(
        "machine-test",
        round,
        &sha,
        examples,
        &privacy.sha256_hex(),
    );
    UpdateHeader {
        round,
        examples,
        num_params: PARAMS,
        update_sha256: sha,
        signature: key(i).sign(msg.as_bytes()).as_ref().to_vec(),
        privacy,
    }
}

fn received(d: &[f32]) -> Received {
    Received {
        sha256: vector_sha256(d),
        norm: d
            .iter()
            .map(|v| f64::from(*v) * f64::from(*v))
            .sum::<f64>()
            .sqrt(),
    }
}

/// Send and commit h`i`'s update for the open round.
fn submit(m: &mut RoundMachine, session: &[u8; 32], i: u8, now: u64) -> UpdateMeta {
    let d = delta(i);
    let round = m.state().round;
    let ticket = m.begin_upload(T0, session, header(i, round, &d)).unwrap();
    let meta = m.finish_upload(now, &ticket, &received(&d)).unwrap();
    m.commit_update(meta.clone());
    meta
}

fn decline(
    m: &mut RoundMachine,
    session: &[u8; 32],
    i: u8,
    round: u64,
    reason: &str,
) -> Result<super::DeclineMeta, CoordinatorError> {
    let msg = fedledger_ledger::records::decline_signing_message("machine-test", round, reason);
    let sig = key(i).sign(msg.as_bytes());
    m.decline(T0, session, round, reason, sig.as_ref())
}

/// What a refusal must leave unchanged.
fn snapshot(
    m: &RoundMachine,
) -> (
    PersistedState,
    Vec<UpdateMeta>,
    usize,
    crate::types::Progress,
) {
    (
        m.state().clone(),
        m.updates().to_vec(),
        m.declines.len(),
        m.progress(),
    )
}

#[test]
fn registration_refusals_name_what_is_wrong_and_change_nothing() {
    let mut m = fresh();
    let k0 = key(0);
    assert!(matches!(
        m.challenge(T0, "not hex"),
        Err(CoordinatorError::MalformedKey(_))
    ));
    let stranger = key(9);
    assert!(matches!(
        m.challenge(T0, &hex_of(&stranger)),
        Err(CoordinatorError::NotEnrolled { .. })
    ));
    let c = m.challenge(T0, &hex_of(&k0)).unwrap();
    assert_eq!(c.expires_ms, T0 + super::CHALLENGE_TTL.as_millis() as u64);
    assert_eq!(c.challenge.len(), super::CHALLENGE_BYTES);
    let sig = |k: &Ed25519KeyPair, ch: &[u8]| {
        k.sign(fedledger_proto::register_message("machine-test", ch).as_bytes())
            .as_ref()
            .to_vec()
    };
    // Someone else's signature over the right challenge.
    assert!(matches!(
        m.register(T0, &hex_of(&k0), &c.challenge, &sig(&key(1), &c.challenge)),
        Err(CoordinatorError::BadRegistrationSignature { .. })
    ));
    // The challenge of another key.
    assert!(matches!(
        m.register(
            T0,
            &hex_of(&key(1)),
            &c.challenge,
            &sig(&key(1), &c.challenge)
        ),
        Err(CoordinatorError::BadChallenge)
    ));
    // Not the right length; not issued here; any byte changed (nonce, expiry, tag).
    assert!(matches!(
        m.register(T0, &hex_of(&k0), &[1, 2, 3], &sig(&k0, &[1, 2, 3])),
        Err(CoordinatorError::BadChallenge)
    ));
    let forged = [7u8; super::CHALLENGE_BYTES];
    assert!(matches!(
        m.register(T0, &hex_of(&k0), &forged, &sig(&k0, &forged)),
        Err(CoordinatorError::BadChallenge)
    ));
    for i in 0..super::CHALLENGE_BYTES {
        let mut tampered = c.challenge.clone();
        tampered[i] ^= 1;
        assert!(
            matches!(
                m.register(T0, &hex_of(&k0), &tampered, &sig(&k0, &tampered)),
                Err(CoordinatorError::BadChallenge)
            ),
            "byte {i}"
        );
    }
    // A challenge from another machine (another secret) is not this one's.
    let mut other = RoundMachine::new(
        config(),
        m.state().clone(),
        Vec::new(),
        Vec::new(),
        0,
        ChaCha20Rng::seed_from_u64(1),
        [9; 32],
    );
    let theirs = other.challenge(T0, &hex_of(&k0)).unwrap().challenge;
    assert!(matches!(
        m.register(T0, &hex_of(&k0), &theirs, &sig(&k0, &theirs)),
        Err(CoordinatorError::BadChallenge)
    ));
    // Expired.
    let late = T0 + super::CHALLENGE_TTL.as_millis() as u64;
    assert!(matches!(
        m.register(late, &hex_of(&k0), &c.challenge, &sig(&k0, &c.challenge)),
        Err(CoordinatorError::BadChallenge)
    ));
    // None of that registered anyone or used the challenge.
    assert_eq!(m.registered.len(), 0);
    let s1 = m
        .register(T0, &hex_of(&k0), &c.challenge, &sig(&k0, &c.challenge))
        .unwrap();
    assert_eq!(s1.name, "h0");
    // A challenge is single-use.
    assert!(matches!(
        m.register(T0, &hex_of(&k0), &c.challenge, &sig(&k0, &c.challenge)),
        Err(CoordinatorError::BadChallenge)
    ));
    // Registering again replaces the session.
    let s2 = register(&mut m, 0, T0);
    assert!(matches!(
        m.task(T0, &s1.session),
        Err(CoordinatorError::NoSession)
    ));
    assert!(m.task(T0, &s2).is_ok());
    assert!(matches!(
        m.task(T0, &[0; 5]),
        Err(CoordinatorError::NoSession)
    ));
}

#[test]
fn no_flood_of_challenges_blocks_an_honest_registration() {
    let mut m = fresh();
    let k0 = key(0);
    let honest = m.challenge(T0, &hex_of(&k0)).unwrap();
    // Anyone may ask for challenges for enrolled keys (they are public): nothing is kept.
    for i in 0..10_000 {
        m.challenge(T0 + i, &hex_of(&k0)).unwrap();
    }
    assert!(m.used_challenges.is_empty());
    let sig =
        k0.sign(fedledger_proto::register_message("machine-test", &honest.challenge).as_bytes());
    assert!(
        m.register(T0 + 10_000, &hex_of(&k0), &honest.challenge, sig.as_ref())
            .is_ok()
    );
    // Only successful registrations are remembered, and only until their challenge expires.
    assert_eq!(m.used_challenges.len(), 1);
    let later = T0 + super::CHALLENGE_TTL.as_millis() as u64 + 1;
    register(&mut m, 1, later);
    assert_eq!(m.used_challenges.len(), 1);
}

#[test]
fn sessions_expire_and_registering_again_renews_them() {
    let mut m = fresh();
    let ttl = m.cfg.limits.session_ttl.as_millis() as u64;
    let s = register(&mut m, 0, T0);
    assert!(m.task(T0 + ttl - 1, &s).is_ok());
    assert!(matches!(
        m.task(T0 + ttl, &s),
        Err(CoordinatorError::NoSession)
    ));
    let d = delta(0);
    assert!(matches!(
        m.begin_upload(T0 + ttl, &s, header(0, 1, &d)),
        Err(CoordinatorError::NoSession)
    ));
    assert!(matches!(
        m.decline(T0 + ttl, &s, 1, "late", &[0; 64]),
        Err(CoordinatorError::NoSession)
    ));
    let renewed = register(&mut m, 0, T0 + ttl);
    assert!(m.task(T0 + ttl, &renewed).is_ok());
    assert!(m.task(T0 + 2 * ttl - 1, &renewed).is_ok());
}

#[test]
fn the_first_round_opens_at_quorum_once_its_state_is_durable() {
    let mut m = fresh();
    let s0 = register(&mut m, 0, T0);
    assert_eq!(m.poll(T0), None, "one of quorum 2");
    let t = m.task(T0, &s0).unwrap();
    assert!(!t.train && t.phase == Phase::Waiting && t.detail.contains("1 of quorum 2"));
    register(&mut m, 1, T0);
    let Some(Job::Open(state)) = m.poll(T0 + 5) else {
        panic!("quorum reached")
    };
    assert_eq!((state.phase, state.round), (Phase::Open, 1));
    assert_eq!(state.deadline_ms, T0 + 5 + 60_000);
    // One job at a time; a failed one is handed out again.
    assert_eq!(m.poll(T0 + 5), None);
    m.job_failed();
    assert_eq!(m.state().phase, Phase::Waiting);
    let Some(Job::Open(state)) = m.poll(T0 + 6) else {
        panic!("retried")
    };
    m.opened(state);
    assert_eq!(m.state().phase, Phase::Open);
    assert!(m.task(T0, &s0).unwrap().train);
    assert_eq!(m.next_wake(T0 + 6), Some(60_000));
}

/// A signature verified before the lock stands in for the machine's own verification only
/// when it is this header's, by this session's participant; any other falls back to the
/// machine's check, which refuses what does not verify.
#[test]
fn a_signature_verified_outside_the_lock_counts_only_for_its_own_header_and_key() {
    let (mut m, s) = open(false);
    let d = delta(0);
    let key = |i: u8| -> [u8; 32] { key(i).public_key().as_ref().try_into().unwrap() };
    assert_eq!(m.session_key(T0, &s[0]).unwrap(), key(0));
    // h1's header, verified against h1's key, sent on h0's session: not h0's signature.
    let h1 = header(1, 1, &d);
    let theirs = Verification::update("machine-test", &key(1), &h1);
    assert!(theirs.is_valid(), "h1 signed it");
    assert!(matches!(
        m.begin_upload_verified(T0, &s[0], h1, Some(theirs.clone())),
        Err(CoordinatorError::BadUpdateSignature { .. })
    ));
    // h0's header with a claim changed after it was verified: the message differs.
    let mut changed = header(0, 1, &d);
    let verified = Verification::update("machine-test", &key(0), &changed);
    changed.examples += 1;
    assert!(matches!(
        m.begin_upload_verified(T0, &s[0], changed, Some(verified.clone())),
        Err(CoordinatorError::BadUpdateSignature { .. })
    ));
    assert!(m.in_flight.is_empty(), "a refusal leaves no reservation");
    // A forged signature's failed verification refuses it (without verifying again); a
    // failed verification of another header does not refuse a good one.
    let mut forged = header(0, 1, &d);
    forged.signature[0] ^= 1;
    let failed = Verification::update("machine-test", &key(0), &forged);
    assert!(!failed.is_valid());
    assert!(matches!(
        m.begin_upload_verified(T0, &s[0], forged, Some(failed.clone())),
        Err(CoordinatorError::BadUpdateSignature { .. })
    ));
    assert!(m.in_flight.is_empty(), "a refusal leaves no reservation");
    let ticket = m
        .begin_upload_verified(T0, &s[0], header(0, 1, &d), Some(failed))
        .unwrap();
    assert_eq!(ticket.participant, 0);
    m.release(0);
    // Its own header, by its own key: accepted, as without the token.
    let ticket = m
        .begin_upload_verified(T0, &s[0], header(0, 1, &d), Some(verified))
        .unwrap();
    assert_eq!(ticket.participant, 0);
    assert_eq!(ticket.claimed_sha256, vector_sha256(&d));
}

/// Registrations and declines verified outside the lock: a verification counts only for the
/// very key, message and signature it was made for; any other request is verified by the
/// machine, which refuses what does not verify.
#[test]
fn registrations_and_declines_verified_outside_the_lock_count_only_for_themselves() {
    let mut m = fresh();
    let (k0, k1) = (key(0), key(1));
    let sign = |k: &Ed25519KeyPair, ch: &[u8]| {
        k.sign(fedledger_proto::register_message("machine-test", ch).as_bytes())
            .as_ref()
            .to_vec()
    };
    let c0 = m.challenge(T0, &hex_of(&k0)).unwrap();
    let c1 = m.challenge(T0, &hex_of(&k1)).unwrap();
    let good1 = sign(&k1, &c1.challenge);
    let theirs =
        Verification::registration("machine-test", &hex_of(&k1), &c1.challenge, &good1).unwrap();
    assert!(theirs.is_valid());
    // h1's verified registration offered with h0's request, whose own signature is h1's.
    let bad = sign(&k1, &c0.challenge);
    assert!(matches!(
        m.register_verified(T0, &hex_of(&k0), &c0.challenge, &bad, Some(&theirs)),
        Err(CoordinatorError::BadRegistrationSignature { .. })
    ));
    let failed =
        Verification::registration("machine-test", &hex_of(&k0), &c0.challenge, &bad).unwrap();
    assert!(!failed.is_valid());
    assert!(matches!(
        m.register_verified(T0, &hex_of(&k0), &c0.challenge, &bad, Some(&failed)),
        Err(CoordinatorError::BadRegistrationSignature { .. })
    ));
    // No verification for a key that is not 32 bytes of hex.
    assert!(Verification::registration("machine-test", "zz", &c1.challenge, &good1).is_none());
    // A failed verification of another request does not refuse a good one; its own does not
    // stand in for anyone else's.
    m.register_verified(T0, &hex_of(&k1), &c1.challenge, &good1, Some(&failed))
        .unwrap();
    let c1 = m.challenge(T0, &hex_of(&k1)).unwrap();
    let good1 = sign(&k1, &c1.challenge);
    let own =
        Verification::registration("machine-test", &hex_of(&k1), &c1.challenge, &good1).unwrap();
    m.register_verified(T0, &hex_of(&k1), &c1.challenge, &good1, Some(&own))
        .unwrap();

    let (mut m, s) = open(false);
    let k = |i: u8| -> [u8; 32] { key(i).public_key().as_ref().try_into().unwrap() };
    let sig = |i: u8, reason: &str| {
        let msg = fedledger_ledger::records::decline_signing_message("machine-test", 1, reason);
        key(i).sign(msg.as_bytes()).as_ref().to_vec()
    };
    let of = |i: u8, reason: &str, sig: &[u8]| {
        Verification::decline("machine-test", &k(i), 1, reason, sig)
    };
    // h1's verified decline offered on h0's session; then h0's, for another reason.
    let h1 = of(1, "busy", &sig(1, "busy"));
    assert!(h1.is_valid());
    assert!(matches!(
        m.decline_verified(T0, &s[0], 1, "busy", &sig(1, "busy"), Some(&h1)),
        Err(CoordinatorError::BadDeclineSignature { .. })
    ));
    let own = of(0, "busy", &sig(0, "busy"));
    assert!(matches!(
        m.decline_verified(T0, &s[0], 1, "budget", &sig(1, "budget"), Some(&own)),
        Err(CoordinatorError::BadDeclineSignature { .. })
    ));
    // A forged decline's failed verification refuses it.
    let forged = of(0, "busy", &sig(1, "busy"));
    assert!(!forged.is_valid());
    assert!(matches!(
        m.decline_verified(T0, &s[0], 1, "busy", &sig(1, "busy"), Some(&forged)),
        Err(CoordinatorError::BadDeclineSignature { .. })
    ));
    assert!(m.in_flight.is_empty(), "a refusal leaves no reservation");
    let meta = m
        .decline_verified(T0, &s[0], 1, "busy", &sig(0, "busy"), Some(&own))
        .unwrap();
    assert_eq!(meta.participant, 0);
}

#[test]
fn every_update_refusal_names_the_request_and_changes_nothing() {
    let (mut m, s) = open(false);
    let before = snapshot(&m);
    let d = delta(0);
    let refuse = |m: &mut RoundMachine, session: &[u8], h: UpdateHeader| {
        let e = m.begin_upload(T0, session, h).unwrap_err();
        assert!(!m.in_flight.contains_key(&0), "{e}: left a reservation");
        e
    };
    assert!(matches!(
        refuse(&mut m, &[9; 32], header(0, 1, &d)),
        CoordinatorError::NoSession
    ));
    let e = refuse(&mut m, &s[0], header(0, 2, &d));
    assert!(
        matches!(
            e,
            CoordinatorError::WrongRound {
                got: 2,
                open: 1,
                ..
            }
        ) && e.to_string().starts_with("update is for round 2"),
        "{e}"
    );
    let mut h = header(0, 1, &d);
    h.num_params = PARAMS + 1;
    assert!(matches!(
        refuse(&mut m, &s[0], h),
        CoordinatorError::DimensionMismatch { .. }
    ));
    for examples in [0, 100_000_001] {
        let mut h = header(0, 1, &d);
        h.examples = examples;
        assert!(matches!(
            refuse(&mut m, &s[0], h),
            CoordinatorError::BadExampleCount { .. }
        ));
    }
    let mut h = header(0, 1, &d);
    h.update_sha256 = h.update_sha256.to_uppercase();
    assert!(matches!(
        refuse(&mut m, &s[0], h),
        CoordinatorError::InvalidField {
            field: "update_sha256",
            ..
        }
    ));
    let spend = PrivacyObject::conservative("rdp", 1.0, 0.1, 10, 1e-5).with_epsilon(1.0, 1.0);
    let mut bad = spend.clone();
    bad.delta_pico = 0;
    assert!(matches!(
        refuse(&mut m, &s[0], signed_header(0, 1, &d, 10, bad)),
        CoordinatorError::BadPrivacyReport(_)
    ));
    // An accountant the federation does not record.
    let mut other = spend.clone();
    other.accountant = "rdp-dp-accounting".into();
    let e = refuse(&mut m, &s[0], signed_header(0, 1, &d, 10, other));
    assert!(e.to_string().contains("rdp-dp-accounting"), "{e}");
    // Signed by someone else; signed over another digest.
    let mut h = header(0, 1, &d);
    h.signature = header(1, 1, &d).signature;
    assert!(matches!(
        refuse(&mut m, &s[0], h),
        CoordinatorError::BadUpdateSignature { .. }
    ));
    let mut h = header(0, 1, &d);
    h.update_sha256 = vector_sha256(&delta(5));
    assert!(matches!(
        refuse(&mut m, &s[0], h),
        CoordinatorError::BadUpdateSignature { .. }
    ));
    // Every claim is signed: another example count or privacy object than signed is refused.
    let mut h = signed_header(0, 1, &d, 10, spend.clone());
    h.examples = 11;
    assert!(matches!(
        refuse(&mut m, &s[0], h),
        CoordinatorError::BadUpdateSignature { .. }
    ));
    let mut h = signed_header(0, 1, &d, 10, spend.clone());
    h.privacy.steps += 1;
    assert!(matches!(
        refuse(&mut m, &s[0], h),
        CoordinatorError::BadUpdateSignature { .. }
    ));
    assert_eq!(snapshot(&m), before);
    // A privacy object the federation records is fine.
    assert!(
        m.begin_upload(T0, &s[0], signed_header(0, 1, &d, 10, spend))
            .is_ok()
    );
}

#[test]
fn one_answer_in_flight_per_participant_and_refused_uploads_release_it() {
    let (mut m, s) = open(false);
    let d = delta(0);
    let ticket = m.begin_upload(T0, &s[0], header(0, 1, &d)).unwrap();
    // A second upload, or a decline, while the first is in flight.
    assert!(matches!(
        m.begin_upload(T0, &s[0], header(0, 1, &d)),
        Err(CoordinatorError::InFlight { .. })
    ));
    assert!(matches!(
        decline(&mut m, &s[0], 0, 1, "busy"),
        Err(CoordinatorError::InFlight { .. })
    ));
    assert!(!m.task(T0, &s[0]).unwrap().train);
    // The bytes do not hash to the signed digest: refused, and the reservation is gone.
    let before = snapshot(&m);
    assert!(matches!(
        m.finish_upload(T0, &ticket, &received(&delta(3))),
        Err(CoordinatorError::DigestMismatch { .. })
    ));
    assert_eq!(snapshot(&m), before);
    assert!(m.task(T0, &s[0]).unwrap().train);
    // Too large a norm.
    let big: Vec<f32> = vec![100.0; PARAMS as usize];
    let t = m.begin_upload(T0, &s[0], header(0, 1, &big)).unwrap();
    assert!(matches!(
        m.finish_upload(T0, &t, &received(&big)),
        Err(CoordinatorError::NormTooLarge { .. })
    ));
    assert_eq!(snapshot(&m), before);
    // A broken-off upload is released by the engine.
    let t = m.begin_upload(T0, &s[0], header(0, 1, &d)).unwrap();
    m.release(t.participant);
    // Persisting failed after the checks: released, nothing counted.
    let t = m.begin_upload(T0, &s[0], header(0, 1, &d)).unwrap();
    let meta = m.finish_upload(T0, &t, &received(&d)).unwrap();
    m.release(meta.participant);
    assert_eq!(snapshot(&m), before);
    // Then it goes through, and a second answer is refused.
    let meta = submit(&mut m, &s[0], 0, T0);
    assert_eq!(meta.round, 1);
    assert!(matches!(
        m.begin_upload(T0, &s[0], header(0, 1, &d)),
        Err(CoordinatorError::AlreadySubmitted { .. })
    ));
    assert!(matches!(
        decline(&mut m, &s[0], 0, 1, "changed my mind"),
        Err(CoordinatorError::AlreadySubmitted { .. })
    ));
}

#[test]
fn decline_refusals_name_the_decline() {
    let (mut m, s) = open(false);
    let before = snapshot(&m);
    for reason in ["", "two\nlines", &"x".repeat(1025)] {
        let e = decline(&mut m, &s[0], 0, 1, reason).unwrap_err();
        assert!(e.to_string().contains("decline"), "{e}");
    }
    let e = decline(&mut m, &s[0], 0, 4, "budget").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("decline is for round 4 but round 1"),
        "{e}"
    );
    let msg = fedledger_ledger::records::decline_signing_message("machine-test", 1, "budget");
    let forged = key(1).sign(msg.as_bytes());
    assert!(matches!(
        m.decline(T0, &s[0], 1, "budget", forged.as_ref()),
        Err(CoordinatorError::BadDeclineSignature { .. })
    ));
    assert_eq!(snapshot(&m), before);
    let meta = decline(&mut m, &s[0], 0, 1, "budget").unwrap();
    m.commit_decline(meta);
    assert!(!m.task(T0, &s[0]).unwrap().train);
}

#[test]
fn a_round_closes_when_everyone_has_answered() {
    let (mut m, s) = open(true);
    submit(&mut m, &s[0], 0, T0 + 1);
    assert_eq!(m.poll(T0 + 2), None);
    let d = decline(&mut m, &s[2], 2, 1, "no budget").unwrap();
    m.commit_decline(d);
    assert_eq!(m.poll(T0 + 3), None, "h1 has not answered");
    // h1's update is being persisted: the round may not close under it.
    let ticket = m.begin_upload(T0, &s[1], header(1, 1, &delta(1))).unwrap();
    let meta = m
        .finish_upload(T0 + 4, &ticket, &received(&delta(1)))
        .unwrap();
    assert_eq!(
        m.poll(T0 + 61_000),
        None,
        "not while an answer is committing"
    );
    m.commit_update(meta);
    let Some(Job::Close(job)) = m.poll(T0 + 5) else {
        panic!("all answered")
    };
    assert_eq!(job.round, 1);
    assert_eq!(
        job.updates
            .iter()
            .map(|u| u.participant)
            .collect::<Vec<_>>(),
        [0, 1]
    );
    assert_eq!(job.updates[1].seq, 1);
    assert_eq!(job.declines.len(), 1);
    // While closing: no new answers, tasks say so, progress shows it.
    assert!(m.progress().closing);
    let t = m.task(T0, &s[0]).unwrap();
    assert!(!t.train && t.detail.contains("closing"));
    assert!(matches!(
        m.begin_upload(T0, &s[2], header(2, 1, &delta(2))),
        Err(CoordinatorError::NoOpenRound { state: "closing" })
    ));
    assert_eq!(m.poll(T0 + 6), None);
}

#[test]
fn a_round_closes_at_its_deadline_and_is_abandoned_below_quorum() {
    let (mut m, s) = open(true);
    submit(&mut m, &s[0], 0, T0 + 1);
    assert_eq!(m.poll(T0 + 59_999), None);
    let Some(Job::Close(job)) = m.poll(T0 + 60_000) else {
        panic!("deadline")
    };
    let cfg = config();
    let closed = close(&cfg, &job);
    assert_eq!(closed.outcome.status, RoundStatus::Abandoned);
    assert_eq!(
        closed.outcome.reason.as_deref(),
        Some("1 update(s) by the deadline, quorum is 2")
    );
    assert!(closed.new_global.is_none());
    assert_eq!(closed.outcome.model_after, closed.outcome.model_before);
    // The update that arrived is recorded (its privacy was spent), unpaid.
    assert_eq!(closed.outcome.contributions.len(), 1);
    assert_eq!(closed.outcome.contributions[0].reward, 0);
    // The next round starts from the same model.
    let next = next_state(&cfg, &closed.outcome, T0 + 60_010);
    assert_eq!((next.phase, next.round), (Phase::Open, 2));
    assert_eq!(next.global_sha256, job.model_before);
    m.closed(next);
    assert_eq!(m.progress().completed, 1);
    assert!(m.updates().is_empty());
    assert!(m.task(T0, &s[0]).unwrap().train);
}

fn close(cfg: &FederationConfig, job: &CloseJob) -> super::close::Closed {
    let deltas: Vec<Vec<f32>> = job
        .updates
        .iter()
        .map(|u| delta(u.participant as u8))
        .collect();
    let slices: Vec<&[f32]> = deltas.iter().map(|d| d.as_slice()).collect();
    let agg = aggregate::build(
        StrategyKind::Fedavg,
        0,
        0.1,
        None,
        ChaCha20Rng::seed_from_u64(0),
    )
    .unwrap();
    close_round(CloseInputs {
        cfg,
        validation: &cfg.validation,
        job,
        global: &[0.0; PARAMS as usize],
        deltas: &slices,
        aggregator: agg.as_ref(),
        valuer: &Valuer::from_config(cfg),
        server_dp_history: &[],
        earlier_rounds: &[],
        standing: &Default::default(),
        histories: &[],
        advanced: &[],
    })
    .unwrap()
}

#[test]
fn a_completed_round_aggregates_values_and_pays_the_pool() {
    let (mut m, s) = open(false);
    submit(&mut m, &s[0], 0, T0 + 1);
    submit(&mut m, &s[1], 1, T0 + 2);
    let Some(Job::Close(job)) = m.poll(T0 + 60_000) else {
        panic!("deadline")
    };
    let cfg = config();
    let closed = close(&cfg, &job);
    let o = &closed.outcome;
    assert_eq!(o.status, RoundStatus::Completed);
    let expect: Vec<f32> = (0..PARAMS as usize)
        .map(|j| (delta(0)[j] + delta(1)[j]) / 2.0)
        .collect();
    assert_eq!(closed.new_global.as_deref(), Some(expect.as_slice()));
    assert_eq!(o.model_after, vector_sha256(&expect));
    assert_eq!(o.contributions.len(), 2);
    let paid: u64 = o.contributions.iter().map(|c| c.reward).sum();
    assert_eq!(paid, o.reward_pool);
    // Closing is a function of its inputs: the same job gives the same outcome.
    assert_eq!(close(&cfg, &job).outcome, closed.outcome);
    // After the last round the federation is done.
    let mut last = o.clone();
    last.round = 3;
    let done = next_state(&cfg, &last, T0);
    assert_eq!((done.phase, done.round), (Phase::Done, 3));
    m.closed(done);
    let t = m.task(T0, &s[0]).unwrap();
    assert_eq!((t.phase, t.train), (Phase::Done, false));
    assert_eq!(m.poll(T0 + 10_000_000), None);
    assert_eq!(m.next_wake(T0), None);
}

#[test]
fn a_restarted_machine_resumes_the_round_in_flight() {
    let (mut m, s) = open(false);
    let first = submit(&mut m, &s[0], 0, T0 + 1);
    let state = m.state().clone();
    // As the engine restores it from the store: state, the round's updates, no sessions.
    let mut r = RoundMachine::new(
        config(),
        state,
        vec![first.clone()],
        Vec::new(),
        0,
        ChaCha20Rng::seed_from_u64(2),
        [8; 32],
    );
    assert!(matches!(
        r.task(T0, &s[0]),
        Err(CoordinatorError::NoSession)
    ));
    let s0 = register(&mut r, 0, T0 + 2);
    let s1 = register(&mut r, 1, T0 + 2);
    assert_eq!(r.poll(T0 + 2), None, "the round is open already");
    assert!(
        !r.task(T0, &s0).unwrap().train,
        "h0 answered before the restart"
    );
    assert!(matches!(
        r.begin_upload(T0, &s0, header(0, 1, &delta(0))),
        Err(CoordinatorError::AlreadySubmitted { .. })
    ));
    let second = submit(&mut r, &s1, 1, T0 + 3);
    assert_eq!(second.seq, first.seq + 1);
    let Some(Job::Close(job)) = r.poll(T0 + 60_000) else {
        panic!("deadline")
    };
    assert_eq!(job.updates, vec![first, second]);
}

#[test]
fn updates_keep_arrival_order_whatever_order_their_commits_finish_in() {
    let (mut m, s) = open(false);
    let t0 = m.begin_upload(T0, &s[0], header(0, 1, &delta(0))).unwrap();
    let t1 = m.begin_upload(T0, &s[1], header(1, 1, &delta(1))).unwrap();
    let first = m.finish_upload(T0, &t0, &received(&delta(0))).unwrap();
    let second = m.finish_upload(T0, &t1, &received(&delta(1))).unwrap();
    m.commit_update(second.clone());
    m.commit_update(first.clone());
    let Some(Job::Close(job)) = m.poll(T0 + 60_000) else {
        panic!("deadline")
    };
    assert_eq!(job.updates, vec![first, second]);
}

#[test]
fn an_upload_that_outlives_its_round_is_refused() {
    let (mut m, s) = open(false);
    let ticket: UploadTicket = m.begin_upload(T0, &s[1], header(1, 1, &delta(1))).unwrap();
    submit(&mut m, &s[0], 0, T0 + 1);
    let Some(Job::Close(job)) = m.poll(T0 + 60_000) else {
        panic!("deadline")
    };
    let closed = close(&config(), &job);
    m.closed(next_state(&config(), &closed.outcome, T0 + 60_001));
    let e = m
        .finish_upload(T0 + 60_002, &ticket, &received(&delta(1)))
        .unwrap_err();
    assert!(
        matches!(
            e,
            CoordinatorError::WrongRound {
                got: 1,
                open: 2,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        m.task(T0, &s[1]).unwrap().train,
        "released: h1 may answer round 2"
    );
}

#[test]
fn governed_rules_installed_between_rounds_remove_a_participant_without_moving_indices() {
    let (mut m, s) = open(true);
    submit(&mut m, &s[0], 0, T0 + 1);
    submit(&mut m, &s[1], 1, T0 + 1);
    submit(&mut m, &s[2], 2, T0 + 1);
    let Some(Job::Close(job)) = m.poll(T0 + 2) else {
        panic!("all answered")
    };
    // The engine installs round 2's rules (h1 removed) before the round opens.
    let mut cfg = (*config()).clone();
    cfg.participants[1].removed = true;
    m.set_config(Arc::new(cfg));
    m.closed(PersistedState {
        phase: Phase::Open,
        round: 2,
        global_sha256: job.model_before.clone(),
        opened_at_ms: T0 + 3,
        deadline_ms: T0 + 60_000,
    });
    // h1's session is gone and it cannot register again; the others keep their indices.
    assert!(matches!(
        m.task(T0 + 4, &s[1]),
        Err(CoordinatorError::NoSession)
    ));
    assert!(matches!(
        m.challenge(T0 + 4, &hex_of(&key(1))),
        Err(CoordinatorError::NotEnrolled { .. })
    ));
    assert!(m.task(T0 + 4, &s[2]).unwrap().train);
    let u0 = submit(&mut m, &s[0], 0, T0 + 5);
    assert_eq!(m.poll(T0 + 6), None, "h2 has not answered");
    let u2 = submit(&mut m, &s[2], 2, T0 + 7);
    assert_eq!((u0.participant, u2.participant), (0, 2));
    // Everyone enrolled has answered: the removed hospital is not waited for.
    let Some(Job::Close(job)) = m.poll(T0 + 8) else {
        panic!("every enrolled participant answered")
    };
    assert_eq!(job.round, 2);
    assert_eq!(job.updates.len(), 2);
}

/// [`config`] with two validators (keys 10 and 11), quorum 1, exact up to 8 players, and DP-SGD
/// asked of the hospitals; the quality rule on with `quality_k`.
fn config_with_validators(quality_k: Option<u64>) -> Arc<FederationConfig> {
    let mut file: ConfigFile = toml::from_str(&format!(
        "federation = \"machine-test\"\nstate_dir = \"unused\"\n\
         [model]\nkind = \"logreg\"\nfeatures = {FEATURES}\nclasses = 2\n\
         [data]\nlabel_column = \"label\"\nvalidation = \"validation.csv\"\n\
         [rounds]\ntotal = 3\nquorum = 2\n\
         [training]\nnoise_multiplier = 1.0\nclip_norm = 1.0\n\
         [privacy]\naccountants = [\"rdp\"]\n\
         [validators]\ndeadline_secs = 30\nquorum = 1\npool_per_round = 100\n"
    ))
    .unwrap();
    file.validators.as_mut().unwrap().quality_k = quality_k;
    for i in 0..3u8 {
        file.participants.push(ParticipantEntry {
            name: format!("h{i}"),
            public_key: hex_of(&key(i)),
            public_key_file: None,
        });
    }
    for i in 10..12u8 {
        file.validator_entries.push(ParticipantEntry {
            name: format!("lab{i}"),
            public_key: hex_of(&key(i)),
            public_key_file: None,
        });
    }
    Arc::new(file.validate_with(&validation_csv()).unwrap())
}

fn private() -> PrivacyObject {
    PrivacyObject::conservative("rdp", 1.0, 0.1, 10, 1e-5).with_epsilon(1.0, 1.0)
}

/// Round 1 of [`config_with_validators`] open with every hospital and both validators
/// registered: (machine, hospitals' sessions, validators' sessions).
fn open_with_validators(quality_k: Option<u64>) -> (RoundMachine, Vec<[u8; 32]>, Vec<[u8; 32]>) {
    let mut m = waiting(config_with_validators(quality_k));
    let hs: Vec<[u8; 32]> = (0..3).map(|i| register(&mut m, i, T0)).collect();
    let vs: Vec<[u8; 32]> = (10..12).map(|i| register(&mut m, i, T0)).collect();
    let Some(Job::Open(state)) = m.poll(T0) else {
        panic!("the first round opens at quorum")
    };
    m.opened(state);
    (m, hs, vs)
}

fn submit_private(m: &mut RoundMachine, session: &[u8; 32], i: u8, now: u64) {
    let d = delta(i);
    let h = signed_header(i, m.state().round, &d, 10 + u64::from(i), private());
    let ticket = m.begin_upload(now, session, h).unwrap();
    let meta = m.finish_upload(now, &ticket, &received(&d)).unwrap();
    m.commit_update(meta);
}

/// Validator `i`'s signed vector for the round's game, scoring coalition `c` by `score(c)`.
fn vector(
    m: &RoundMachine,
    i: u8,
    score: impl Fn(fedledger_valuation::Coalition) -> i64,
) -> (String, Vec<i64>, Vec<u8>) {
    let game = m.game().expect("validating").clone();
    let (_, design) = crate::value::validators_design(
        &config_with_validators(None),
        game.round,
        game.players.len(),
    )
    .unwrap();
    let utilities: Vec<i64> = design.coalitions.iter().map(|c| score(*c)).collect();
    let msg = fedledger_ledger::records::utilities_signing_message(
        "machine-test",
        game.round,
        &game.coalitions_sha256,
        &fedledger_ledger::records::utility_vector_sha256(&utilities),
    );
    let sig = key(i).sign(msg.as_bytes()).as_ref().to_vec();
    (game.coalitions_sha256, utilities, sig)
}

#[test]
fn with_validators_a_round_is_validated_before_it_closes_and_every_refusal_changes_nothing() {
    let (mut m, hs, vs) = open_with_validators(None);
    // Validators see each update: one without DP noise is refused.
    let d = delta(0);
    let e = m
        .begin_upload(
            T0,
            &hs[0],
            signed_header(0, 1, &d, 10, PrivacyObject::none()),
        )
        .unwrap_err();
    assert!(e.to_string().contains("DP-SGD noise"), "{e}");
    // A validator's session is not a hospital's, nor the reverse.
    assert!(matches!(
        m.task(T0, &vs[0]),
        Err(CoordinatorError::NoSession)
    ));
    assert!(matches!(
        m.candidates(T0, &hs[0]),
        Err(CoordinatorError::NoSession)
    ));
    assert!(
        !m.candidates(T0, &vs[0]).unwrap().validate,
        "round 1 is open"
    );
    for i in 0..3u8 {
        submit_private(&mut m, &hs[i as usize], i, T0 + 1);
    }
    // Everyone answered: the updates go to the validators, with their own deadline.
    let Some(Job::Validate(state)) = m.poll(T0 + 2) else {
        panic!("validate first")
    };
    assert_eq!(
        (state.phase, state.deadline_ms),
        (Phase::Validating, T0 + 2 + 30_000)
    );
    m.validating(state).unwrap();
    let c = m.candidates(T0 + 3, &vs[0]).unwrap();
    assert!(c.validate);
    let keys: Vec<String> = c
        .candidates
        .iter()
        .map(|u| hex_of(&key(u.participant as u8)))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "candidates in key order (the game's players)");
    let t = m.task(T0 + 3, &hs[0]).unwrap();
    assert!(!t.train && t.detail.contains("validators"), "{}", t.detail);
    let e = m
        .begin_upload(T0, &hs[0], signed_header(0, 1, &d, 10, private()))
        .unwrap_err();
    assert!(matches!(e, CoordinatorError::NoOpenRound { .. }), "{e}");

    // Refusals: partial vector, another design, wrong round, a forged signature.
    let (sha, u, sig) = vector(&m, 10, |c| c.len() as i64 * 1_000);
    let refuse = |m: &mut RoundMachine, round, sha: &str, u: &[i64], sig: &[u8]| {
        let e = m
            .begin_utilities(T0 + 4, &vs[0], round, sha, u.to_vec(), sig)
            .unwrap_err();
        assert!(
            m.vectors().is_empty() && m.vectors_in_flight.is_empty(),
            "{e}"
        );
        e.to_string()
    };
    assert!(refuse(&mut m, 1, &sha, &u[1..], &sig).contains("partial vectors are refused"));
    assert!(refuse(&mut m, 1, &"00".repeat(32), &u, &sig).contains("coalitions_sha256"));
    assert!(refuse(&mut m, 2, &sha, &u, &sig).contains("round 2"));
    let mut other = u.clone();
    other[3] += 1;
    assert!(refuse(&mut m, 1, &sha, &other, &sig).contains("does not verify"));
    // Validator 11 cannot send validator 10's vector as its own.
    assert!(
        m.begin_utilities(T0 + 4, &vs[1], 1, &sha, u.clone(), &sig)
            .unwrap_err()
            .to_string()
            .contains("does not verify")
    );

    let meta = m
        .begin_utilities(T0 + 5, &vs[0], 1, &sha, u.clone(), &sig)
        .unwrap();
    // Not while a vector is being persisted, even past the deadline.
    assert_eq!(m.poll(T0 + 100_000), None);
    assert_eq!(m.commit_utilities(meta), (1, 1));
    // One vector per validator and round.
    assert!(matches!(
        m.begin_utilities(T0 + 6, &vs[0], 1, &sha, u, &sig),
        Err(CoordinatorError::AlreadySubmitted { .. })
    ));
    assert!(!m.candidates(T0 + 6, &vs[0]).unwrap().validate);
    assert_eq!(m.poll(T0 + 7), None, "validator 11 has not answered");
    let (sha, u, sig) = vector(&m, 11, |c| c.len() as i64 * 2_000);
    let meta = m.begin_utilities(T0 + 8, &vs[1], 1, &sha, u, &sig).unwrap();
    m.commit_utilities(meta);
    let Some(Job::Close(job)) = m.poll(T0 + 9) else {
        panic!("every validator answered")
    };
    assert_eq!(job.vectors.len(), 2);
    assert!(job.vectors[0].validator < job.vectors[1].validator);
}

#[test]
fn the_consensus_values_the_round_and_the_quality_rule_leaves_out_a_harmful_update() {
    let (mut m, hs, vs) = open_with_validators(Some(1));
    for i in 0..3u8 {
        submit_private(&mut m, &hs[i as usize], i, T0 + 1);
    }
    let Some(Job::Validate(state)) = m.poll(T0 + 2) else {
        panic!("validate")
    };
    m.validating(state).unwrap();
    // Player 0 (the lowest key) harms every coalition it is in; the others help.
    let harmful = m.game().unwrap().players[0];
    let score = |v: i64| {
        move |c: fedledger_valuation::Coalition| {
            c.members()
                .map(|p| if p == 0 { -5_000_000 } else { 3_000_000 + v })
                .sum::<i64>()
        }
    };
    for (j, i) in [10u8, 11].into_iter().enumerate() {
        let (sha, u, sig) = vector(&m, i, score(j as i64 * 100_000));
        let meta = m.begin_utilities(T0 + 3, &vs[j], 1, &sha, u, &sig).unwrap();
        m.commit_utilities(meta);
    }
    let Some(Job::Close(job)) = m.poll(T0 + 4) else {
        panic!("close")
    };
    let cfg = config_with_validators(Some(1));
    let closed = close(&cfg, &job);
    let o = &closed.outcome;
    let v = o.validators.as_ref().expect("judged by validators");
    assert!(v.record.fallback.is_none());
    assert_eq!(v.vectors.len(), 2);
    assert_eq!(v.record.lines.iter().map(|l| l.reward).sum::<u64>(), 100);
    let bad = &o
        .contributions
        .iter()
        .find(|c| c.participant == job.updates[harmful].participant)
        .unwrap();
    assert!(bad.value_nano < 0 && bad.reward == 0);
    assert!(
        bad.flags
            .iter()
            .any(|f| f == fedledger_ledger::records::FLAG_EXCLUDED_BY_QUALITY)
    );
    // The model is the FedAvg of the two kept updates alone (examples 10 + i).
    let kept: Vec<&UpdateMeta> = job
        .updates
        .iter()
        .enumerate()
        .filter(|(k, _)| *k != harmful)
        .map(|(_, u)| u)
        .collect();
    let n: f64 = kept.iter().map(|u| u.examples as f64).sum();
    let expect: Vec<f32> = (0..PARAMS as usize)
        .map(|j| {
            kept.iter()
                .map(|u| delta(u.participant as u8)[j] as f64 * u.examples as f64 / n)
                .sum::<f64>() as f32
        })
        .collect();
    let got = closed.new_global.as_ref().unwrap();
    for (a, b) in got.iter().zip(&expect) {
        assert!((a - b).abs() < 1e-6, "{got:?} vs {expect:?}");
    }
    assert_eq!(o.valuation.as_ref().unwrap().estimator, "validators-median");
}

#[test]
fn without_a_vector_by_the_validators_deadline_the_round_falls_back_and_says_so() {
    let (mut m, hs, _vs) = open_with_validators(Some(1));
    for i in 0..3u8 {
        submit_private(&mut m, &hs[i as usize], i, T0 + 1);
    }
    let Some(Job::Validate(state)) = m.poll(T0 + 2) else {
        panic!("validate")
    };
    m.validating(state).unwrap();
    assert_eq!(m.next_wake(T0 + 2), Some(30_000));
    assert_eq!(m.poll(T0 + 30_001), None);
    let Some(Job::Close(job)) = m.poll(T0 + 30_002) else {
        panic!("the validators' deadline")
    };
    assert!(job.vectors.is_empty());
    let cfg = config_with_validators(Some(1));
    let closed = close(&cfg, &job);
    let v = closed.outcome.validators.as_ref().unwrap();
    assert_eq!(
        v.record.fallback.as_deref(),
        Some(
            "0 validator vector(s) by the validators' deadline, quorum is 1; valued on the coordinator's validation file"
        )
    );
    assert!(v.record.lines.is_empty());
    // Valued on the validation file, every update aggregated.
    assert_ne!(
        closed.outcome.valuation.as_ref().unwrap().estimator,
        "validators-median"
    );
    assert!(closed.outcome.contributions.iter().all(|c| {
        !c.flags
            .iter()
            .any(|f| f == fedledger_ledger::records::FLAG_EXCLUDED_BY_QUALITY)
    }));
}

#[test]
fn a_restarted_machine_resumes_validating_with_the_vectors_it_had() {
    let (mut m, hs, vs) = open_with_validators(None);
    for i in 0..3u8 {
        submit_private(&mut m, &hs[i as usize], i, T0 + 1);
    }
    let Some(Job::Validate(state)) = m.poll(T0 + 2) else {
        panic!("validate")
    };
    m.validating(state.clone()).unwrap();
    let (sha, u, sig) = vector(&m, 10, |c| c.len() as i64);
    let meta = m.begin_utilities(T0 + 3, &vs[0], 1, &sha, u, &sig).unwrap();
    m.commit_utilities(meta);
    let mut again = RoundMachine::new(
        config_with_validators(None),
        state,
        m.updates().to_vec(),
        Vec::new(),
        0,
        ChaCha20Rng::seed_from_u64(2),
        [8; 32],
    );
    again.resume_validating(m.vectors().to_vec()).unwrap();
    assert_eq!(again.game(), m.game());
    let v11 = register(&mut again, 11, T0 + 4);
    let v10 = register(&mut again, 10, T0 + 4);
    assert!(
        !again.candidates(T0 + 4, &v10).unwrap().validate,
        "10 answered before"
    );
    assert!(again.candidates(T0 + 4, &v11).unwrap().validate);
    let (sha, u, sig) = vector(&again, 11, |c| c.len() as i64);
    let meta = again
        .begin_utilities(T0 + 5, &v11, 1, &sha, u, &sig)
        .unwrap();
    again.commit_utilities(meta);
    let Some(Job::Close(job)) = again.poll(T0 + 6) else {
        panic!("both vectors in")
    };
    assert_eq!(job.vectors.len(), 2);
}
