//! Governance over real gRPC: a hospital enrolled mid-federation by 2 of 3 governors
//! contributes from the named round without a restart; every refused proposal (one signature,
//! a non-governor's, another federation's, replayed, expired, unchained, too early) says why
//! and changes nothing; a restart with a config that contradicts the governed state is refused
//! naming the field; `verify` passes on the resulting ledger. A witness change is in force once
//! anchored, and a restart must name the new set. Governors change the reward rule and its
//! period mid-federation, and settlements follow them.

mod common;

use common::*;
use fedledger_coordinator::{ConfigFile, config::ParticipantEntry};
use fedledger_ledger::records::{Change, PROPOSAL_TYPE, Proposal, ROLE_CONTRIBUTOR};
use fedledger_proto as pb;
use pb::coordinator_client::CoordinatorClient;
use ring::signature::Ed25519KeyPair;
use tonic::transport::Channel;

fn sign(k: &Ed25519KeyPair, p: &Proposal) -> pb::GovernorSignature {
    pb::GovernorSignature {
        governor: pubhex(k),
        signature: fedledger_ledger::note::b64_encode(
            k.sign(p.signing_message().unwrap().as_bytes()).as_ref(),
        ),
    }
}

/// A proposal for `federation` chained from `previous`, from `from_round`, expiring in 2099.
fn proposal(federation: &str, previous: String, from_round: u64, changes: Vec<Change>) -> Proposal {
    Proposal {
        record_type: PROPOSAL_TYPE.into(),
        federation: federation.to_owned(),
        previous,
        from_round,
        expires_at: "2099-01-01T00:00:00Z".into(),
        changes,
    }
}

async fn submit_proposal(
    c: &mut CoordinatorClient<Channel>,
    p: &Proposal,
    sigs: Vec<pb::GovernorSignature>,
) -> Result<pb::ProposalReceipt, tonic::Status> {
    c.submit_proposal(pb::ProposalRequest {
        proposal: serde_json::to_vec(p).unwrap(),
        signatures: sigs,
    })
    .await
    .map(|r| r.into_inner())
}

async fn list(c: &mut CoordinatorClient<Channel>) -> pb::ProposalList {
    c.list_proposals(pb::ListProposalsRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// The store of a coordinator just shut down stays locked until its last connection task
/// has dropped the engine: try again while the lock is held.
fn locked(e: &fedledger_coordinator::CoordinatorError) -> bool {
    e.to_string().contains("could not acquire lock")
}

/// Start a coordinator on a state directory that must refuse it; returns why.
async fn refused_start(
    cfg: fedledger_coordinator::FederationConfig,
) -> fedledger_coordinator::CoordinatorError {
    for _ in 0..1200 {
        match fedledger_coordinator::engine::Engine::open(cfg.clone()) {
            Err(e) if locked(&e) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            Err(e) => return e,
            Ok(_) => panic!("the coordinator started"),
        }
    }
    panic!("the store stayed locked")
}

async fn start_when_released(
    cfg: fedledger_coordinator::FederationConfig,
) -> fedledger_coordinator::Running {
    for _ in 0..1200 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        match fedledger_coordinator::serve(cfg.clone(), Some(listener)).await {
            Err(e) if locked(&e) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            other => return other.unwrap(),
        }
    }
    panic!("the store stayed locked")
}

fn file(
    dir: &std::path::Path,
    keys: &[&Ed25519KeyPair],
    governors: &[&Ed25519KeyPair],
) -> ConfigFile {
    let mut f = config_file(dir, keys, 3, 2, 3, 2);
    f.valuation.reward_pool_per_round = 1000;
    f.governance.governors = governors.iter().map(|g| pubhex(g)).collect();
    f.governance.threshold = 2;
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hospital_enrolled_by_two_of_three_governors_contributes_from_the_named_round() {
    let dir = tempfile::tempdir().unwrap();
    let (h0, h1, h2) = (keypair(), keypair(), keypair());
    let governors = [keypair(), keypair(), keypair()];
    let outsider = keypair();
    let gov_refs: Vec<&Ed25519KeyPair> = governors.iter().collect();
    let base = file(dir.path(), &[&h0, &h1], &gov_refs);
    let cfg = base.clone().validate().unwrap();
    let fed = cfg.federation.clone();
    let running = start(cfg).await;
    let mut c = client(&running).await;
    let s0 = register(&mut c, &h0).await;
    let s1 = register(&mut c, &h1).await;
    let (t, _) = task(&mut c, &s0).await;
    assert_eq!(t.round, 1);

    let head = list(&mut c).await.head;
    let enrol = proposal(
        &fed,
        head.clone(),
        2,
        vec![
            Change::Enrol {
                participant: pubhex(&h2),
                name: "h2".into(),
                role: ROLE_CONTRIBUTOR.into(),
            },
            Change::RewardPool {
                pool_per_round: 600,
            },
        ],
    );
    let size = |r: &fedledger_coordinator::Running| r.coordinator.ledger().size();

    // Refused, each changing nothing.
    let before = size(&running);
    let refusals: Vec<(Proposal, Vec<pb::GovernorSignature>, tonic::Code, &str)> = vec![
        (
            enrol.clone(),
            vec![sign(&governors[0], &enrol)],
            tonic::Code::PermissionDenied,
            "1 valid governor signature(s), 2 needed",
        ),
        (
            enrol.clone(),
            vec![sign(&governors[0], &enrol), sign(&outsider, &enrol)],
            tonic::Code::PermissionDenied,
            "is not a governor in force",
        ),
        {
            let mut p = enrol.clone();
            p.federation = "another-federation".into();
            let sigs = vec![sign(&governors[0], &p), sign(&governors[1], &p)];
            (
                p,
                sigs,
                tonic::Code::FailedPrecondition,
                "another-federation",
            )
        },
        {
            let mut p = enrol.clone();
            p.expires_at = "2020-01-01T00:00:00Z".into();
            let sigs = vec![sign(&governors[0], &p), sign(&governors[1], &p)];
            (p, sigs, tonic::Code::InvalidArgument, "expired")
        },
        {
            let mut p = enrol.clone();
            p.previous = "ab".repeat(32);
            let sigs = vec![sign(&governors[0], &p), sign(&governors[1], &p)];
            (p, sigs, tonic::Code::FailedPrecondition, "does not chain")
        },
        {
            let mut p = enrol.clone();
            p.from_round = 1;
            let sigs = vec![sign(&governors[0], &p), sign(&governors[1], &p)];
            (
                p,
                sigs,
                tonic::Code::InvalidArgument,
                "not after the open round 1",
            )
        },
    ];
    for (p, sigs, code, why) in refusals {
        let e = submit_proposal(&mut c, &p, sigs).await.unwrap_err();
        assert_eq!(e.code(), code, "{}", e.message());
        assert!(
            e.message().contains(why),
            "{why:?} not in {:?}",
            e.message()
        );
        assert_eq!(
            size(&running),
            before,
            "a refused proposal changed the ledger"
        );
        assert!(list(&mut c).await.proposals.is_empty());
    }
    // Not enrolled yet: the newcomer cannot register during round 1.
    let e = c
        .challenge(pb::ChallengeRequest {
            public_key: pubhex(&h2),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);

    // Two of three governors: anchored before the answer.
    let sigs = vec![sign(&governors[2], &enrol), sign(&governors[0], &enrol)];
    let receipt = submit_proposal(&mut c, &enrol, sigs.clone()).await.unwrap();
    assert_eq!(receipt.ledger_index, before);
    assert_eq!(size(&running), before + 1);
    let listed = list(&mut c).await;
    assert_eq!(listed.proposals.len(), 1);
    assert!(!listed.proposals[0].applied);
    assert_ne!(listed.head, head);
    // Replayed: no longer chains, changes nothing.
    let e = submit_proposal(&mut c, &enrol, sigs).await.unwrap_err();
    assert!(e.message().contains("does not chain"), "{}", e.message());
    assert_eq!(size(&running), before + 1);
    // Still round 1: the enrolment is not in force yet.
    assert!(
        c.challenge(pb::ChallengeRequest {
            public_key: pubhex(&h2),
        })
        .await
        .is_err()
    );

    // Round 1 with the genesis hospitals.
    let d = vec![0.1f32, 0.2, 0.3, 0.4];
    for (k, s) in [(&h0, &s0), (&h1, &s1)] {
        submit(&mut c, update_messages(&fed, k, s, 1, 5, &d))
            .await
            .unwrap();
    }
    // Round 2 opens with the newcomer enrolled, without a restart.
    let (t, _) = task(&mut c, &s0).await;
    assert_eq!((t.state, t.round), (pb::TaskState::Train as i32, 2));
    let s2 = register(&mut c, &h2).await;
    let (t2, _) = task(&mut c, &s2).await;
    assert_eq!((t2.state, t2.round), (pb::TaskState::Train as i32, 2));
    let deltas = [
        vec![0.2f32, 0.1, 0.0, 0.3],
        vec![0.0f32, 0.3, 0.1, 0.1],
        vec![0.3f32, 0.0, 0.2, 0.2],
    ];
    for ((k, s), d) in [(&h0, &s0), (&h1, &s1), (&h2, &s2)]
        .into_iter()
        .zip(&deltas)
    {
        submit(&mut c, update_messages(&fed, k, s, 2, 5, d))
            .await
            .unwrap();
    }
    let (t, _) = task(&mut c, &s2).await;
    assert_eq!(t.round, 3);
    let o1 = running.coordinator.outcome(1).unwrap();
    let o2 = running.coordinator.outcome(2).unwrap();
    assert_eq!(o1.contributions.len(), 2);
    assert_eq!(o2.contributions.len(), 3);
    assert!(o2.contributions.iter().any(|x| x.public_key == pubhex(&h2)));
    // The governed pool is paid from round 2 (when any value is positive).
    assert!(o1.reward_pool == 1000 || o1.reward_pool == 0);
    assert!(o2.reward_pool == 600 || o2.reward_pool == 0);
    assert_ne!(o1.rules_sha256, o2.rules_sha256);
    assert!(list(&mut c).await.proposals[0].applied);

    // The ledger verifies, governance included.
    let log = running.coordinator.ledger();
    let entries = log.entries(0, log.size()).unwrap();
    let report = fedledger_ledger::verify::verify_entries(&fed, &entries, None, None);
    assert!(report.ok(), "{:?}", report.failures);
    assert!(
        report.passed.iter().any(|p| p.starts_with("governance: 1")),
        "{:?}",
        report.passed
    );
    // An answer of round 3 is persisted before the restart (by participant index).
    submit(&mut c, update_messages(&fed, &h1, &s1, 3, 5, &deltas[1]))
        .await
        .unwrap();
    running.shutdown().await.unwrap();
    drop(c);

    // Restarted with the genesis config: the governed state says otherwise; refused, naming
    // the field, changing nothing.
    // `check-config` says so too, from a copy of the state.
    let err = fedledger_coordinator::check_governed(&base.clone().validate().unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("[[participant]]"), "{err}");
    let err = refused_start(base.clone().validate().unwrap()).await;
    let size_before = {
        let log = fedledger_ledger::Log::open_existing(&dir.path().join("state/ledger")).unwrap();
        log.size()
    };
    assert!(err.to_string().contains("[[participant]]"), "{err}");
    // With the governed enrolment but an edited pool: refused naming the pool.
    let mut governed = base.clone();
    governed.participants.push(ParticipantEntry {
        name: "h2".into(),
        public_key: pubhex(&h2),
        public_key_file: None,
    });
    let mut edited = governed.clone();
    edited.valuation.reward_pool_per_round = 777;
    let err = refused_start(edited.validate().unwrap()).await;
    assert!(
        err.to_string().contains("valuation.reward_pool_per_round"),
        "{err}"
    );
    let log = fedledger_ledger::Log::open_existing(&dir.path().join("state/ledger")).unwrap();
    assert_eq!(log.size(), size_before);
    drop(log);
    // Other governors than those in force: refused naming them.
    governed.valuation.reward_pool_per_round = 600;
    let mut edited = governed.clone();
    edited.governance.threshold = 1;
    let err = refused_start(edited.validate().unwrap()).await;
    assert!(err.to_string().contains("governance.governors"), "{err}");
    // Equal to the governed state, [governance] and [[participant]] left out (absent keeps the
    // governed ones): it resumes round 3 with the answer given before the restart.
    governed.governance = Default::default();
    governed.participants.clear();
    assert_eq!(
        fedledger_coordinator::check_governed(&governed.clone().validate().unwrap()).unwrap(),
        Some(1)
    );
    let running = start_when_released(governed.validate().unwrap()).await;
    let mut c = client(&running).await;
    let s0 = register(&mut c, &h0).await;
    let s2 = register(&mut c, &h2).await;
    let (t, _) = task(&mut c, &s2).await;
    assert_eq!(t.round, 3);
    for (k, s, d) in [(&h0, &s0, &deltas[0]), (&h2, &s2, &deltas[2])] {
        submit(&mut c, update_messages(&fed, k, s, 3, 5, d))
            .await
            .unwrap();
    }
    running.wait_done().await;
    let o3 = running.coordinator.outcome(3).unwrap();
    let mut names: Vec<&str> = o3.contributions.iter().map(|x| x.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["h0", "h1", "h2"]);
    let h1_entry = o3.contributions.iter().find(|x| x.name == "h1").unwrap();
    assert_eq!(h1_entry.public_key, pubhex(&h1));
    // The auditor's command on an export: governance admitted, every round under its rules,
    // the settlement (pool in force at round 3) recomputed from the recorded values.
    let export = dir.path().join("export");
    fedledger_ledger::export::export(running.coordinator.ledger(), &export).unwrap();
    let out = std::process::Command::new(common::binaries::ledger_bin())
        .arg("verify")
        .arg(&export)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("governance: 1"), "{stdout}");
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_hospital_stops_and_governed_hyper_parameters_and_strategy_apply_from_the_named_round()
 {
    let dir = tempfile::tempdir().unwrap();
    let (h0, h1, h2) = (keypair(), keypair(), keypair());
    let governors = [keypair(), keypair(), keypair()];
    let gov_refs: Vec<&Ed25519KeyPair> = governors.iter().collect();
    let cfg = file(dir.path(), &[&h0, &h1, &h2], &gov_refs)
        .validate()
        .unwrap();
    let fed = cfg.federation.clone();
    let base = cfg.clone();
    let running = start(cfg).await;
    let mut c = client(&running).await;
    let s0 = register(&mut c, &h0).await;
    let s1 = register(&mut c, &h1).await;
    let s2 = register(&mut c, &h2).await;
    let (t, _) = task(&mut c, &s0).await;
    assert_eq!(t.round, 1);
    let epochs_before = t.hyper.unwrap().local_epochs;
    let head = list(&mut c).await.head;
    let mut p = proposal(
        &fed,
        head,
        2,
        vec![Change::Aggregation {
            strategy: "no-such-strategy".into(),
        }],
    );
    // A change this coordinator could not run is refused, changing nothing.
    let before = running.coordinator.ledger().size();
    let sigs = vec![sign(&governors[0], &p), sign(&governors[1], &p)];
    let e = submit_proposal(&mut c, &p, sigs).await.unwrap_err();
    assert!(e.message().contains("no-such-strategy"), "{}", e.message());
    assert_eq!(running.coordinator.ledger().size(), before);

    p.changes = vec![
        Change::Remove {
            participant: pubhex(&h2),
        },
        Change::Aggregation {
            strategy: "median".into(),
        },
        Change::Training {
            local_epochs: u64::from(epochs_before) + 2,
            batch_size: 8,
            learning_rate: "0.05".into(),
        },
    ];
    let sigs = vec![sign(&governors[1], &p), sign(&governors[2], &p)];
    submit_proposal(&mut c, &p, sigs).await.unwrap();

    let d = vec![0.1f32, 0.2, 0.3, 0.4];
    for (k, s) in [(&h0, &s0), (&h1, &s1), (&h2, &s2)] {
        submit(&mut c, update_messages(&fed, k, s, 1, 5, &d))
            .await
            .unwrap();
    }
    let (t, _) = task(&mut c, &s0).await;
    assert_eq!((t.state, t.round), (pb::TaskState::Train as i32, 2));
    let hyper = t.hyper.unwrap();
    assert_eq!(hyper.local_epochs, epochs_before + 2);
    assert_eq!(hyper.batch_size, 8);
    // The removed hospital's session ends and it cannot register again.
    let e = c
        .get_task(pb::TaskRequest {
            session: s2.clone(),
        })
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    let e = c
        .challenge(pb::ChallengeRequest {
            public_key: pubhex(&h2),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    for (k, s) in [(&h0, &s0), (&h1, &s1)] {
        submit(&mut c, update_messages(&fed, k, s, 2, 5, &d))
            .await
            .unwrap();
    }
    let (t, _) = task(&mut c, &s0).await;
    assert_eq!(t.round, 3);
    let o1 = running.coordinator.outcome(1).unwrap();
    let o2 = running.coordinator.outcome(2).unwrap();
    assert_eq!(
        (o1.contributions.len(), o1.aggregator.as_str()),
        (3, "fedavg")
    );
    assert_eq!(
        (o2.contributions.len(), o2.aggregator.as_str()),
        (2, "median")
    );
    let log = running.coordinator.ledger();
    let entries = log.entries(0, log.size()).unwrap();
    let report = fedledger_ledger::verify::verify_entries(&fed, &entries, None, None);
    assert!(report.ok(), "{:?}", report.failures);
    running.shutdown().await.unwrap();

    // Replay recomputes each round under the rules in force for it: round 2 by the median.
    use fedledger_coordinator::replay;
    let snapshot = replay_under_the_rules_in_force(&base, &[(1, "fedavg"), (2, "median")]);
    // An audit bundle records one set of settings: rounds under other rules are refused
    // together, each is fine alone.
    let e = replay::settings_for_rounds(&base, &snapshot, 1, 2).unwrap_err();
    assert!(e.to_string().contains("round 2 ran under other"), "{e}");
    let s = replay::settings_for_rounds(&base, &snapshot, 2, 2).unwrap();
    assert_eq!(s.strategy.as_str(), "median");
}

/// The README's commands, as separate processes: governors' keys from `keygen`, signatures
/// from `fedledger-participant govern sign`, then `fedledger-coordinator govern submit` and
/// `govern list` against the running coordinator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_govern_commands_sign_submit_and_list() {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let participant = common::binaries::participant_bin();
    let coordinator = env!("CARGO_BIN_EXE_fedledger-coordinator");
    let mut governor_keys = Vec::new();
    for g in ["a", "b", "c"] {
        let path = dir.path().join(format!("governor-{g}.key"));
        let out = Command::new(participant)
            .args(["keygen", "--out"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        governor_keys.push((
            path.clone(),
            fedledger_ledger::keys::load_key(&path).unwrap(),
        ));
    }
    let (h0, h1, newcomer) = (keypair(), keypair(), keypair());
    let refs: Vec<&Ed25519KeyPair> = governor_keys.iter().map(|(_, k)| k).collect();
    let cfg = file(dir.path(), &[&h0, &h1], &refs).validate().unwrap();
    let fed = cfg.federation.clone();
    let running = start(cfg).await;
    let url = format!("http://{}", running.addr);
    let run = |cmd: &mut Command| {
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let list_out = || {
        tokio::task::spawn_blocking({
            let url = url.clone();
            move || {
                let out = Command::new(env!("CARGO_BIN_EXE_fedledger-coordinator"))
                    .args(["govern", "list", "--coordinator", &url])
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{out:?}");
                String::from_utf8_lossy(&out.stdout).into_owned()
            }
        })
    };
    let listed = list_out().await.unwrap();
    let previous = listed
        .lines()
        .find_map(|l| l.strip_prefix("previous:"))
        .unwrap()
        .trim()
        .to_owned();
    let proposal = proposal(
        &fed,
        previous,
        2,
        vec![Change::Enrol {
            participant: pubhex(&newcomer),
            name: "hospital-d".into(),
            role: ROLE_CONTRIBUTOR.into(),
        }],
    );
    let proposal_path = dir.path().join("enrol-d.json");
    std::fs::write(
        &proposal_path,
        serde_json::to_vec_pretty(&proposal).unwrap(),
    )
    .unwrap();
    let mut sig_paths = Vec::new();
    for (g, (key, _)) in ["a", "b"].iter().zip(&governor_keys) {
        let out = dir.path().join(format!("sig-{g}.json"));
        let (ok, stdout, stderr) = run(Command::new(participant)
            .args(["govern", "sign", "--key"])
            .arg(key)
            .arg("--proposal")
            .arg(&proposal_path)
            .arg("--out")
            .arg(&out));
        assert!(ok, "{stdout}{stderr}");
        // The governor sees what it signs.
        assert!(stderr.contains("\"hospital-d\""), "{stderr}");
        sig_paths.push(out);
    }
    // One signature is refused, with the reason, by the command's exit status.
    let submit = |sigs: &[std::path::PathBuf]| {
        let mut cmd = Command::new(coordinator);
        cmd.args(["govern", "submit", "--coordinator", &url, "--proposal"])
            .arg(&proposal_path);
        for s in sigs {
            cmd.arg("--signature").arg(s);
        }
        cmd
    };
    let (ok, _, stderr) = tokio::task::spawn_blocking({
        let mut cmd = submit(&sig_paths[..1]);
        move || run(&mut cmd)
    })
    .await
    .unwrap();
    assert!(!ok);
    assert!(stderr.contains("2 needed"), "{stderr}");
    let (ok, stdout, stderr) = tokio::task::spawn_blocking({
        let mut cmd = submit(&sig_paths);
        move || run(&mut cmd)
    })
    .await
    .unwrap();
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("applies from round 2"), "{stdout}");
    let listed = list_out().await.unwrap();
    assert!(listed.contains("pending from round 2"), "{listed}");
    assert!(listed.contains("hospital-d"), "{listed}");
    running.shutdown().await.unwrap();
}

/// `govern` reaches a coordinator that serves TLS the way hospitals do: `--ca` trusts `tls
/// init`'s CA for the certificate's name; without it (public roots), and in plaintext, it is
/// refused with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn govern_reaches_a_tls_coordinator_with_its_ca_and_is_refused_without() {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let issued =
        fedledger_coordinator::tls::init(&dir.path().join("tls"), &["localhost".into()]).unwrap();
    let governors = [keypair(), keypair()];
    let (h0, h1) = (keypair(), keypair());
    let mut f = file(dir.path(), &[&h0, &h1], &[&governors[0], &governors[1]]);
    f.tls = Some(fedledger_coordinator::config::TlsSection {
        cert: issued.cert.clone(),
        key: issued.key.clone(),
    });
    let running = start(f.validate().unwrap()).await;
    let port = running.addr.port();
    let list = move |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let out = Command::new(env!("CARGO_BIN_EXE_fedledger-coordinator"))
                .args(["govern", "list"])
                .args(&args)
                .output()
                .unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
    };
    let https = format!("https://localhost:{port}");
    let ca = issued.ca_cert.to_string_lossy().into_owned();
    let (ok, stdout, stderr) = list(vec![
        "--coordinator".into(),
        https.clone(),
        "--ca".into(),
        ca,
    ])
    .await
    .unwrap();
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("open round: "), "{stdout}");
    assert!(
        stdout.lines().any(|l| l.starts_with("previous:")),
        "{stdout}"
    );
    // The trial CA is not a public root.
    let (ok, _, stderr) = list(vec!["--coordinator".into(), https]).await.unwrap();
    assert!(!ok);
    assert!(stderr.contains("certificate"), "{stderr}");
    // Plaintext to the TLS endpoint gets no answer it could take for the coordinator's.
    let (ok, stdout, _) = list(vec![
        "--coordinator".into(),
        format!("http://127.0.0.1:{port}"),
    ])
    .await
    .unwrap();
    assert!(!ok);
    assert!(!stdout.contains("open round"), "{stdout}");
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_witness_change_is_in_force_once_anchored_and_a_restart_must_name_the_new_set() {
    use fedledger_ledger::note::NoteSigner;
    let dir = tempfile::tempdir().unwrap();
    let (h0, h1) = (keypair(), keypair());
    let governors = [keypair(), keypair(), keypair()];
    let gov_refs: Vec<&Ed25519KeyPair> = governors.iter().collect();
    let witness = |seed: u8, name: &str| {
        NoteSigner::witness(
            name,
            Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap(),
        )
        .unwrap()
    };
    let (old, new) = (witness(81, "w-old.test"), witness(82, "w-new.test"));
    let mut base = file(dir.path(), &[&h0, &h1], &gov_refs);
    base.ledger.witnesses = vec![old.verifier_key().to_string()];
    base.ledger.witness_quorum = Some(1);
    let cfg = base.clone().validate().unwrap();
    let fed = cfg.federation.clone();
    let running = start(cfg).await;
    let mut c = client(&running).await;
    // Witnesses change when anchored, whatever the round named (here 3).
    let change = proposal(
        &fed,
        list(&mut c).await.head,
        3,
        vec![Change::Witnesses {
            keys: vec![new.verifier_key().to_string()],
            quorum: 1,
        }],
    );
    let log = running.coordinator.ledger().clone();
    assert_eq!(
        log.witness_policy(log.size()),
        (vec![old.verifier_key().clone()], 1)
    );
    let sigs = vec![sign(&governors[0], &change), sign(&governors[1], &change)];
    let at = submit_proposal(&mut c, &change, sigs)
        .await
        .unwrap()
        .ledger_index;
    // Every checkpoint that holds the entry is judged by the new witness.
    assert_eq!(
        log.witness_policy(at),
        (vec![old.verifier_key().clone()], 1)
    );
    assert_eq!(
        log.witness_policy(at + 1),
        (vec![new.verifier_key().clone()], 1)
    );
    running.shutdown().await.unwrap();
    drop((c, log));

    // Restarted naming the replaced set: refused, naming the fields; with the new set, it
    // starts.
    let err = refused_start(base.clone().validate().unwrap()).await;
    assert!(err.to_string().contains("ledger.witnesses"), "{err}");
    let mut governed = base.clone();
    governed.ledger.witnesses = vec![new.verifier_key().to_string()];
    let running = start_when_released(governed.validate().unwrap()).await;
    running.shutdown().await.unwrap();
}

/// Governors change the reward rule and its period mid-federation, without a restart: a change
/// that would take effect before the open round's successor has opened is refused with the
/// reason; the accepted one ends the running period at the round before its `from_round`
/// (settled there under the old rule) and settles the later periods under the new rule and
/// period. `verify` recomputes every settlement where the governed rules put it, and fails a
/// ledger whose settlement at that boundary is missing or names another rule; a restart with
/// the old rule in the file is refused naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn governors_change_the_reward_rule_and_period_and_settlements_follow() {
    use fedledger_ledger::records::{
        REWARD_RULE_SETTLED_CUMULATIVE, REWARD_RULE_SETTLED_IMPACT, Record, validate_entry,
    };
    let dir = tempfile::tempdir().unwrap();
    let (h0, h1) = (keypair(), keypair());
    let governors = [keypair(), keypair(), keypair()];
    let gov_refs: Vec<&Ed25519KeyPair> = governors.iter().collect();
    let mut base = file(dir.path(), &[&h0, &h1], &gov_refs);
    base.rounds.total = 6;
    base.rewards.rule = fedledger_coordinator::config::RewardRuleKind::Cumulative;
    base.rewards.period_rounds = 2;
    let cfg = base.clone().validate().unwrap();
    let fed = cfg.federation.clone();
    let running = start(cfg).await;
    let mut c = client(&running).await;
    let s0 = register(&mut c, &h0).await;
    let s1 = register(&mut c, &h1).await;
    let (t, _) = task(&mut c, &s0).await;
    assert_eq!(t.round, 1);

    let mut p = proposal(
        &fed,
        list(&mut c).await.head,
        2,
        vec![Change::RewardRule {
            rule: REWARD_RULE_SETTLED_IMPACT.into(),
            period_rounds: 3,
            z_milli: 0,
        }],
    );
    // From the round after the open one: its period would have to end at the open round,
    // whose configuration is already laid. Refused, naming why and the first round allowed.
    let before = running.coordinator.ledger().size();
    let sigs = vec![sign(&governors[0], &p), sign(&governors[1], &p)];
    let e = submit_proposal(&mut c, &p, sigs).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{}", e.message());
    assert!(
        e.message()
            .contains("at least two after the open round 1 (the running settlement period ends at round from_round - 1"),
        "{}",
        e.message()
    );
    assert_eq!(running.coordinator.ledger().size(), before);
    // From round 4: the period of two rounds running from round 3 ends at round 3.
    p.from_round = 4;
    let sigs = vec![sign(&governors[2], &p), sign(&governors[0], &p)];
    submit_proposal(&mut c, &p, sigs).await.unwrap();

    let deltas = [vec![0.2f32, 0.1, 0.0, 0.3], vec![0.1f32, 0.3, 0.1, 0.1]];
    for round in 1..=6u64 {
        for ((k, s), d) in [(&h0, &s0), (&h1, &s1)].into_iter().zip(&deltas) {
            submit(&mut c, update_messages(&fed, k, s, round, 5, d))
                .await
                .unwrap();
        }
        if round < 6 {
            let (t, _) = task(&mut c, &s0).await;
            assert_eq!(t.round, round + 1);
        }
    }
    running.wait_done().await;
    // Settled at rounds 2 and 3 (cumulative, the running period cut at the boundary) and at
    // round 6 (impact, periods of three from round 4).
    let settled: Vec<(u64, u64, u64, u64)> = (1..=6)
        .filter_map(|r| running.coordinator.outcome(r).unwrap().settlement)
        .map(|s| (s.period, s.first_round, s.last_round, s.lines.len() as u64))
        .collect();
    assert_eq!(settled, vec![(1, 1, 2, 2), (2, 3, 3, 2), (3, 4, 6, 2)]);
    let log = running.coordinator.ledger();
    let entries = log.entries(0, log.size()).unwrap();
    let settlement_at =
        |entries: &[Vec<u8>], i: usize| match validate_entry(i as u64, &fed, &entries[i]) {
            Ok(Record::Settlement(s)) => Some(*s),
            _ => None,
        };
    let found: Vec<(usize, String, u64)> = (0..entries.len())
        .filter_map(|i| settlement_at(&entries, i).map(|s| (i, s.rule.rule, s.rounds.last)))
        .collect();
    let rules: Vec<(&str, u64)> = found.iter().map(|(_, r, l)| (r.as_str(), *l)).collect();
    assert_eq!(
        rules,
        vec![
            (REWARD_RULE_SETTLED_CUMULATIVE, 2),
            (REWARD_RULE_SETTLED_CUMULATIVE, 3),
            (REWARD_RULE_SETTLED_IMPACT, 6)
        ]
    );
    let rewards = fedledger_ledger_cli::ValuationRewards;
    let verify = |entries: &[Vec<u8>]| {
        fedledger_ledger::verify::verify_entries(&fed, entries, None, Some(&rewards))
    };
    let report = verify(&entries);
    assert!(report.ok(), "{:?}", report.failures);
    assert!(
        report
            .passed
            .iter()
            .any(|p| p.contains("3 recomputed from the recorded round values")),
        "{:?}",
        report.passed
    );
    // The settlement at the boundary (round 3) left out: verify says where one was due.
    let at_boundary = found[1].0;
    let mut missing = entries.clone();
    missing.remove(at_boundary);
    let report = verify(&missing);
    assert!(
        report.failures.iter().any(|f| f
            .what
            .contains("round 3 ends period 2 but no settlement follows its summary")),
        "{:?}",
        report.failures
    );
    // The last settlement recorded under the old rule: refused, whatever its arithmetic.
    let mut renamed = entries.clone();
    let last = found[2].0;
    let mut st = settlement_at(&entries, last).unwrap();
    st.rule.rule = REWARD_RULE_SETTLED_CUMULATIVE.into();
    renamed[last] = fedledger_ledger::records::encode_canonical(&st).unwrap();
    let report = verify(&renamed);
    assert!(
        report
            .failures
            .iter()
            .any(|f| f.file == format!("entries/{last}")
                && f.what.contains("differs from the reward rule in force")),
        "{:?}",
        report.failures
    );
    running.shutdown().await.unwrap();
    drop(c);
    // The file still names the old rule and period: refused naming the reward rule.
    let err = fedledger_coordinator::check_governed(&base.clone().validate().unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("rewards.rule"), "{err}");
    let mut governed = base.clone();
    governed.rewards.rule = fedledger_coordinator::config::RewardRuleKind::Impact;
    let err = fedledger_coordinator::check_governed(&governed.clone().validate().unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("rewards.period_rounds"), "{err}");
    governed.rewards.period_rounds = 3;
    governed.rewards.z = 0.0;
    fedledger_coordinator::check_governed(&governed.validate().unwrap()).unwrap();
}

/// Governors give a federation validators' rules (a stricter quality rule and a larger pool)
/// from round 1: a change the coordinator could not run (validators without DP-SGD) is
/// refused with the reason; the accepted one is in the configuration of round 1 on; a restart
/// whose file still names the old `[validators]` is refused naming the section, and one naming
/// the governed rules starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn governors_set_the_validators_rules_from_the_named_round() {
    let dir = tempfile::tempdir().unwrap();
    let (h0, h1) = (keypair(), keypair());
    let governors = [keypair(), keypair(), keypair()];
    let gov_refs: Vec<&Ed25519KeyPair> = governors.iter().collect();
    let rules = fedledger_ledger::records::ValidatorsRules {
        deadline_secs: 60,
        quorum: 2,
        exact_max: 6,
        permutations: 10,
        pool_per_round: 500,
        max_distance_milli: 800,
        quality_k: Some(2),
    };
    // Without DP-SGD the federation cannot have validators: refused before it is anchored.
    let plain = file(dir.path(), &[&h0, &h1], &gov_refs);
    let running = start(plain.clone().validate().unwrap()).await;
    let mut c = client(&running).await;
    let fed = running.coordinator.config().federation.clone();
    let change = proposal(
        &fed,
        list(&mut c).await.head,
        3,
        vec![Change::Validators {
            rules: rules.clone(),
        }],
    );
    let sigs = vec![sign(&governors[0], &change), sign(&governors[1], &change)];
    let e = submit_proposal(&mut c, &change, sigs).await.unwrap_err();
    assert!(e.message().contains("DP-SGD"), "{e:?}");
    assert!(list(&mut c).await.proposals.is_empty());
    running.shutdown().await.unwrap();
    drop(c);

    // With DP-SGD and validators in the file: accepted, in force from round 3.
    let dir = tempfile::tempdir().unwrap();
    let mut base = file(dir.path(), &[&h0, &h1], &gov_refs);
    base.training.clip_norm = 1.0;
    base.training.noise_multiplier = 1.0;
    base.validators = Some(Default::default());
    let running = start(base.clone().validate().unwrap()).await;
    let mut c = client(&running).await;
    // Before the first round opens (nobody registered), a change may name round 1.
    let change = proposal(
        &fed,
        list(&mut c).await.head,
        1,
        vec![Change::Validators {
            rules: rules.clone(),
        }],
    );
    let sigs = vec![sign(&governors[0], &change), sign(&governors[2], &change)];
    submit_proposal(&mut c, &change, sigs).await.unwrap();
    let gov = fedledger_coordinator::governance::load(running.coordinator.ledger()).unwrap();
    let order: Vec<String> = [&h0, &h1].iter().map(|k| pubhex(k)).collect();
    let cfg = base.clone().validate().unwrap();
    let at = |round| {
        fedledger_coordinator::governance::effective(&cfg, &order, &gov, round)
            .unwrap()
            .validating
            .unwrap()
    };
    assert_eq!(
        at(0),
        fedledger_coordinator::config::ValidatorsSection::default()
    );
    assert_eq!(at(1).rules(), rules);
    assert_eq!(at(3).rules(), rules);
    running.shutdown().await.unwrap();
    drop(c);

    let err = refused_start(base.clone().validate().unwrap()).await;
    assert!(err.to_string().contains("[validators]"), "{err}");
    let mut governed = base.clone();
    governed.validators = fedledger_coordinator::config::ValidatorsSection::from_rules(&rules);
    let running = start_when_released(governed.validate().unwrap()).await;
    running.shutdown().await.unwrap();
}

/// Multi-Krum over histories, switched off by governance for round 2 and on again for round
/// 3: round 3 resumes each hospital's history from round 1 (no history advances in a round
/// that compares none), and replay, under the rules in force for each round, agrees with the
/// coordinator on all three; the ledger verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selecting_strategy_switched_off_and_on_resumes_the_histories_it_left() {
    let dir = tempfile::tempdir().unwrap();
    let hospitals = [keypair(), keypair(), keypair()];
    let governors = [keypair(), keypair(), keypair()];
    let refs: Vec<&Ed25519KeyPair> = hospitals.iter().collect();
    let gov_refs: Vec<&Ed25519KeyPair> = governors.iter().collect();
    let mut f = file(dir.path(), &refs, &gov_refs);
    f.aggregation.strategy = fedledger_coordinator::config::StrategyKind::MultiKrum;
    f.aggregation.byzantine = 0;
    let cfg = f.validate().unwrap();
    assert!(cfg.history > 0.0, "histories are compared");
    let fed = cfg.federation.clone();
    let base = cfg.clone();
    let running = start(cfg).await;
    let mut c = client(&running).await;
    let mut sessions = Vec::new();
    for h in &hospitals {
        sessions.push(register(&mut c, h).await);
    }
    let delta = |round: u64, i: usize| -> Vec<f32> {
        (0..4)
            .map(|j| 0.01 * (i as f32 + 1.0) * (j as f32 + round as f32))
            .collect()
    };
    for (round, next) in [(1u64, Some("fedavg")), (2, Some("multi-krum")), (3, None)] {
        // The round opens once the one before it closed.
        let mut waited = 0;
        loop {
            let (t, _) = task(&mut c, &sessions[0]).await;
            if (t.state, t.round) == (pb::TaskState::Train as i32, round) {
                break;
            }
            assert!(waited < 500, "round {round} did not open: {t:?}");
            waited += 1;
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        if let Some(strategy) = next {
            let head = list(&mut c).await.head;
            let p = proposal(
                &fed,
                head,
                round + 1,
                vec![Change::Aggregation {
                    strategy: strategy.into(),
                }],
            );
            let sigs = vec![sign(&governors[0], &p), sign(&governors[2], &p)];
            submit_proposal(&mut c, &p, sigs).await.unwrap();
        }
        for (i, (h, s)) in hospitals.iter().zip(&sessions).enumerate() {
            submit(
                &mut c,
                update_messages(&fed, h, s, round, 5, &delta(round, i)),
            )
            .await
            .unwrap();
        }
    }
    let mut waited = 0;
    while running.coordinator.outcome(3).is_err() && waited < 1000 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        waited += 1;
    }
    let outcomes: Vec<_> = (1..=3)
        .map(|r| running.coordinator.outcome(r).expect("round closed"))
        .collect();
    let names: Vec<&str> = outcomes.iter().map(|o| o.aggregator.as_str()).collect();
    assert_eq!(names, ["multi-krum", "fedavg", "multi-krum"]);
    let (h1, h3) = (
        outcomes[0]
            .history
            .as_ref()
            .expect("round 1 compared histories"),
        outcomes[2]
            .history
            .as_ref()
            .expect("round 3 compared histories"),
    );
    assert!(outcomes[1].history.is_none(), "fedavg compares none");
    assert!(h1.before.is_empty(), "no history before the first round");
    assert_eq!(
        h3.before, h1.after,
        "round 3 resumes the histories round 1 left"
    );
    assert_ne!(h3.after, h1.after);
    let log = running.coordinator.ledger();
    let entries = log.entries(0, log.size()).unwrap();
    let report = fedledger_ledger::verify::verify_entries(&fed, &entries, None, None);
    assert!(report.ok(), "{:?}", report.failures);
    running.shutdown().await.unwrap();

    replay_under_the_rules_in_force(
        &base,
        &[(1, "multi-krum"), (2, "fedavg"), (3, "multi-krum")],
    );
}

/// Replays each of `rounds` from the stopped coordinator's state under the rules in force for
/// it, which must name its strategy, and requires the recomputation to agree with the record.
fn replay_under_the_rules_in_force(
    base: &fedledger_coordinator::config::FederationConfig,
    rounds: &[(u64, &str)],
) -> fedledger_coordinator::replay::Snapshot {
    use fedledger_coordinator::replay;
    let snapshot = replay::Snapshot::open(&base.state_dir).unwrap();
    for &(round, strategy) in rounds {
        let rules = replay::config_for_round(base, &snapshot, round).unwrap();
        assert_eq!(rules.strategy.as_str(), strategy);
        let recorded = snapshot.store.outcome(round).unwrap().unwrap();
        let report = replay::replay(&rules, &snapshot.store, &recorded).unwrap();
        assert!(report.ok(), "round {round}: {:?}", report.differences);
    }
    snapshot
}
