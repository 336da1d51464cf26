//! A hospital shown two checkpoints of its federation's log that cannot both hold keeps the
//! evidence and stops: the log it accepted a checkpoint of, then a fork signed by the same key
//! served over the tlog-tiles API (same size with another root; or a larger tree that does not
//! extend the accepted one). Also: the genesis pin, the witness-quorum rule, and witnesses
//! changed by governance (the hospital follows the log's governance entries).

use std::time::Duration;

use fedledger_ledger::{
    Log,
    http::serve_tiles,
    merkle::sha256_bytes,
    note::NoteSigner,
    records::{
        DigestRecord, ENROLMENT_TYPE, EnrolmentEntry, FEDERATION_TYPE, FederationEntry,
        GovernanceRecord, ModelSpecRecord, PrivacyPlan, RECORD_VERSION, REWARD_RULE,
        ROLE_CONTRIBUTOR, RewardRecord, TrainingRecord, WitnessesRecord, encode_canonical,
    },
};
use fedledger_participant::{
    config::Pins,
    receipts::{ReceiptError, ReceiptSettings, Receipts},
    store::LocalStore,
};
use ring::signature::Ed25519KeyPair;

const ORIGIN: &str = "receipts-test";

fn genesis(enrolments: u64) -> Vec<u8> {
    encode_canonical(&FederationEntry {
        v: RECORD_VERSION,
        record_type: FEDERATION_TYPE.into(),
        federation: ORIGIN.into(),
        created_at: "2026-12-01T00:00:00Z".into(),
        model: ModelSpecRecord {
            kind: "logreg".into(),
            features: 3,
            classes: 2,
            hidden: vec![],
            params: 4,
        },
        training: TrainingRecord {
            rounds: 3,
            quorum: 1,
            local_epochs: 1,
            batch_size: 16,
            learning_rate: "0.1".into(),
            aggregation: "fedavg".into(),
        },
        privacy: PrivacyPlan {
            epsilon_budget: "8".into(),
            delta: "0.00001".into(),
            clip_norm: "0".into(),
            noise_multiplier: "0".into(),
            accountants: vec!["rdp".into()],
        },
        witnesses: WitnessesRecord {
            keys: vec![],
            quorum: 0,
        },
        reward: RewardRecord {
            rule: REWARD_RULE.into(),
            pool_per_round: 1000,
            period_rounds: None,
            z_milli: None,
        },
        validation: DigestRecord {
            sha256: "cc".repeat(32),
        },
        governance: GovernanceRecord::default(),
        schema: None,
        enrolments,
    })
    .unwrap()
}

fn enrolment(key: u8, name: &str) -> Vec<u8> {
    encode_canonical(&EnrolmentEntry {
        v: RECORD_VERSION,
        record_type: ENROLMENT_TYPE.into(),
        federation: ORIGIN.into(),
        participant: format!("{key:02x}").repeat(32),
        name: name.into(),
        role: ROLE_CONTRIBUTOR.into(),
    })
    .unwrap()
}

fn signer() -> NoteSigner {
    NoteSigner::log(
        ORIGIN,
        Ed25519KeyPair::from_seed_unchecked(&[5; 32]).unwrap(),
    )
    .unwrap()
}

fn settings(url: String, allow_no_witnesses: bool) -> ReceiptSettings {
    ReceiptSettings {
        url,
        link: Default::default(),
        pins: Pins {
            log_key: signer().verifier_key().clone(),
            genesis_sha256: hex::encode(sha256_bytes(&genesis(2))),
        },
        allow_no_witnesses,
        timeout: Duration::from_secs(5),
    }
}

/// A log holding `entries`, checkpointed once at their size, served over HTTP.
async fn served(
    dir: &std::path::Path,
    entries: &[Vec<u8>],
) -> (Log, fedledger_ledger::http::TilesServer) {
    let log = Log::open(dir, ORIGIN, signer()).unwrap();
    log.append_and_checkpoint(entries).unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = serve_tiles(l, log.clone()).await.unwrap();
    (log, server)
}

async fn fork_case(honest: Vec<Vec<u8>>, fork: Vec<Vec<u8>>, expect: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let store = LocalStore::open(&state).unwrap();
    // First the honest log: the genesis verifies and its checkpoint is accepted.
    let (_, server) = served(&tmp.path().join("a"), &honest).await;
    let mut r = Receipts::new(
        settings(server.url(), true),
        &state,
        ORIGIN,
        &"ab".repeat(32),
    )
    .unwrap();
    r.verify_genesis(&store).await.unwrap();
    let accepted = store.accepted_checkpoint(ORIGIN).unwrap().unwrap();
    assert!(r.dir().join("genesis.tlog-proof").exists());
    server.shutdown().await;
    // Then a fork under the same key.
    let (_, server) = served(&tmp.path().join("b"), &fork).await;
    let mut r = Receipts::new(
        settings(server.url(), true),
        &state,
        ORIGIN,
        &"ab".repeat(32),
    )
    .unwrap();
    match r.verify_genesis(&store).await {
        Err(ReceiptError::Mismatch {
            round,
            what,
            evidence,
        }) => {
            assert_eq!(round, 0);
            assert!(what.contains(expect), "{what}");
            let ev: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&evidence).unwrap()).unwrap();
            let cps = ev["checkpoints"].as_array().unwrap();
            assert_eq!(cps.len(), 2);
            assert_eq!(cps[0].as_str().unwrap().as_bytes(), &accepted[..]);
            assert_ne!(cps[0], cps[1]);
            // Both are signed by the log: the evidence holds on its own.
            for c in cps {
                fedledger_ledger::note::SignedCheckpoint::open(
                    c.as_str().unwrap().as_bytes(),
                    signer().verifier_key(),
                )
                .unwrap();
            }
        }
        other => panic!("expected a mismatch, got {:?}", other.err()),
    }
    let halt = store.halt().unwrap().expect("the agent stops");
    assert!(halt.inconsistent_log);
    // The accepted checkpoint is kept until the operator resumes.
    assert_eq!(
        store.accepted_checkpoint(ORIGIN).unwrap().unwrap(),
        accepted
    );
    store.resume().unwrap();
    assert!(store.halt().unwrap().is_none());
    assert!(store.accepted_checkpoint(ORIGIN).unwrap().is_none());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_checkpoints_of_one_size_with_different_roots_are_kept_as_evidence() {
    let honest = vec![genesis(2), enrolment(1, "a"), enrolment(2, "b")];
    let fork = vec![genesis(2), enrolment(1, "a"), enrolment(3, "c")];
    fork_case(honest, fork, "not consistent").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_larger_checkpoint_that_does_not_extend_the_accepted_one_is_kept_as_evidence() {
    let honest = vec![genesis(2), enrolment(1, "a")];
    let fork = vec![genesis(2), enrolment(3, "c"), enrolment(2, "b")];
    fork_case(honest, fork, "size 2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_genesis_or_no_witness_quorum_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let store = LocalStore::open(&state).unwrap();
    let (_, server) = served(
        &tmp.path().join("a"),
        &[genesis(2), enrolment(1, "a"), enrolment(2, "b")],
    )
    .await;
    let mut s = settings(server.url(), true);
    s.pins.genesis_sha256 = "00".repeat(32);
    let mut r = Receipts::new(s, &state, ORIGIN, &"ab".repeat(32)).unwrap();
    assert!(matches!(
        r.verify_genesis(&store).await,
        Err(ReceiptError::Refused(m)) if m.contains("not the pinned")
    ));
    let mut r = Receipts::new(
        settings(server.url(), false),
        &state,
        ORIGIN,
        &"ab".repeat(32),
    )
    .unwrap();
    assert!(matches!(
        r.verify_genesis(&store).await,
        Err(ReceiptError::Refused(m)) if m.contains("no witness quorum")
    ));
    // A pinned key of another log is refused before anything is fetched.
    let mut s = settings(server.url(), true);
    s.pins.log_key = NoteSigner::log(
        "other",
        Ed25519KeyPair::from_seed_unchecked(&[6; 32]).unwrap(),
    )
    .unwrap()
    .verifier_key()
    .clone();
    assert!(matches!(
        Receipts::new(s, &state, ORIGIN, &"ab".repeat(32)),
        Err(ReceiptError::Refused(_))
    ));
    server.shutdown().await;
}

/// A log whose genesis names witness `old` (quorum 1) and governors (2 of 3), then a
/// governance entry, signed by `signers` governors, that replaces the witnesses by `new`;
/// checkpointed once and cosigned by `cosigner`. Returns the pinned settings' genesis digest.
async fn governed_witness_change(
    dir: &std::path::Path,
    old: &NoteSigner,
    new: &NoteSigner,
    signers: usize,
    cosigner: &NoteSigner,
) -> (Log, fedledger_ledger::http::TilesServer, String) {
    use fedledger_ledger::records::{
        Change, GovernanceEntry, GovernorSignature, PROPOSAL_TYPE, Proposal,
    };
    let governors: Vec<Ed25519KeyPair> = (0..3)
        .map(|i| Ed25519KeyPair::from_seed_unchecked(&[60 + i; 32]).unwrap())
        .collect();
    let mut g: FederationEntry = serde_json::from_slice(&genesis(2)).unwrap();
    g.witnesses = WitnessesRecord {
        keys: vec![old.verifier_key().to_string()],
        quorum: 1,
    };
    let mut keys: Vec<String> = governors
        .iter()
        .map(fedledger_ledger::keys::public_key_hex)
        .collect();
    keys.sort();
    g.governance = GovernanceRecord {
        governors: keys,
        threshold: 2,
    };
    let g = encode_canonical(&g).unwrap();
    let p = Proposal {
        record_type: PROPOSAL_TYPE.into(),
        federation: ORIGIN.into(),
        previous: hex::encode(sha256_bytes(&g)),
        from_round: 1,
        expires_at: "2099-01-01T00:00:00Z".into(),
        changes: vec![Change::Witnesses {
            keys: vec![new.verifier_key().to_string()],
            quorum: 1,
        }],
    };
    let msg = p.signing_message().unwrap();
    let sigs = governors[..signers]
        .iter()
        .map(|k| GovernorSignature {
            governor: fedledger_ledger::keys::public_key_hex(k),
            signature: fedledger_ledger::note::b64_encode(k.sign(msg.as_bytes()).as_ref()),
        })
        .collect();
    let change = encode_canonical(&GovernanceEntry::new(p, sigs)).unwrap();
    let digest = hex::encode(sha256_bytes(&g));
    let (log, server) = served(dir, &[g, enrolment(1, "a"), enrolment(2, "b"), change]).await;
    let cp = log.latest_checkpoint().unwrap().unwrap();
    log.add_cosignature(
        cp.checkpoint.size,
        cosigner.verifier_key(),
        cosigner.cosign(&cp.note.text, 1_700_000_000),
    )
    .unwrap();
    (log, server, digest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hospital_follows_witnesses_changed_by_governance() {
    let witness = |seed: u8, name: &str| {
        NoteSigner::witness(
            name,
            Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap(),
        )
        .unwrap()
    };
    let (old, new) = (witness(70, "w-old.test"), witness(71, "w-new.test"));
    for (signers, cosigner, accepted) in [(2, &new, true), (2, &old, false), (1, &new, false)] {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        let store = LocalStore::open(&state).unwrap();
        let (_log, server, digest) =
            governed_witness_change(&tmp.path().join("log"), &old, &new, signers, cosigner).await;
        let mut s = settings(server.url(), false);
        s.pins.genesis_sha256 = digest;
        s.timeout = Duration::from_secs(1);
        let mut r = Receipts::new(s, &state, ORIGIN, &"ab".repeat(32)).unwrap();
        let got = r.verify_genesis(&store).await;
        if accepted {
            // Admitted change: the checkpoint holding it is judged by the new witness alone.
            got.unwrap();
            let trust: serde_json::Value =
                serde_json::from_slice(&std::fs::read(r.dir().join("trust.json")).unwrap())
                    .unwrap();
            // The trust file names the genesis's witness; the change is kept with its receipt.
            assert!(
                trust["witness_vkeys"].get("w-old.test").is_some(),
                "{trust}"
            );
            assert!(r.dir().join("governance/3.entry").exists());
            assert!(r.dir().join("governance/3.tlog-proof").exists());
            // A statement of these receipts verifies on its own: the governance entry, signed
            // by two governors, makes the new witness the judge of the genesis receipt's
            // checkpoint. Without that entry the same receipt no longer verifies.
            use fedledger_ledger::receipts::{StatementOptions, verify_statement, write_statement};
            let out = tmp.path().join("statement");
            write_statement(&r.dir(), &"ab".repeat(32), &out).unwrap();
            let opts = StatementOptions {
                log_key: Some(signer().verifier_key().clone()),
                genesis_sha256: Some(hex::encode(sha256_bytes(
                    &std::fs::read(r.dir().join("genesis.entry")).unwrap(),
                ))),
            };
            let report = verify_statement(&out, &opts);
            assert!(report.ok(), "{report:?}");
            assert!(
                report.passed.iter().any(|p| p.contains("governance: 1")),
                "{report:?}"
            );
            let bare = tmp.path().join("bare");
            std::fs::create_dir_all(r.dir().join("../kept")).unwrap();
            std::fs::rename(
                r.dir().join("governance"),
                r.dir().join("../kept/governance"),
            )
            .unwrap();
            write_statement(&r.dir(), &"ab".repeat(32), &bare).unwrap();
            let report = verify_statement(&bare, &opts);
            assert!(!report.ok(), "without the governance entry: {report:?}");
        } else {
            // Cosigned by the replaced witness, or the change lacks its governors' quorum (so
            // the old witness still rules and has not cosigned): not witnessed, by the same
            // rule on the log's side (it serves no witnessed checkpoint) as on the hospital's.
            match got {
                Err(ReceiptError::Timeout { last, .. }) => assert!(
                    last.contains("no witnessed checkpoint") || last.contains("not witnessed"),
                    "{last}"
                ),
                other => panic!("expected a timeout, got {other:?}"),
            }
        }
        server.shutdown().await;
    }
}
