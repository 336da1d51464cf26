//! Nothing accepted is lost on a crash: an update acknowledged before a restart is still part of
//! the round afterwards, and a participant that already answered is told to wait.

mod common;

use common::*;
use fedledger_proto as pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_update_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (k0, k1) = (keypair(), keypair());
    let cfg = config(dir.path(), &[&k0, &k1], 3, 2, 1, 2);
    let fed = cfg.federation.clone();

    let running = start(cfg.clone()).await;
    let mut c = client(&running).await;
    let s0 = register(&mut c, &k0).await;
    let _s1 = register(&mut c, &k1).await;
    let (h, _) = task(&mut c, &s0).await;
    assert_eq!(h.round, 1);
    let d0 = vec![1.0f32, 2.0, 3.0, 4.0];
    submit(&mut c, update_messages(&fed, &k0, &s0, 1, 5, &d0))
        .await
        .unwrap();
    running.shutdown().await.unwrap();
    drop(c);

    // Restart from the same state directory, on a new port.
    let running = start(cfg).await;
    let mut c = client(&running).await;
    // Old sessions are gone: participants register again.
    assert_eq!(
        c.get_task(pb::TaskRequest {
            session: s0.clone()
        })
        .await
        .map(|_| ())
        .unwrap_err()
        .code(),
        tonic::Code::Unauthenticated
    );
    let s0 = register(&mut c, &k0).await;
    let s1 = register(&mut c, &k1).await;
    let (h0, _) = task_now(&mut c, &s0).await;
    assert_eq!(h0.state, pb::TaskState::Wait as i32, "{}", h0.detail);
    assert_eq!(h0.round, 1);
    let (h1, global) = task(&mut c, &s1).await;
    assert_eq!((h1.state, h1.round), (pb::TaskState::Train as i32, 1));
    let d1 = vec![0.0f32; 4];
    let r = submit(&mut c, update_messages(&fed, &k1, &s1, 1, 5, &d1))
        .await
        .unwrap();
    assert_eq!(
        r.accepted, 2,
        "the update accepted before the restart still counts"
    );
    running.wait_done().await;
    let after = running.coordinator.global();
    for i in 0..4 {
        assert!((after[i] - (global[i] + 0.5 * d0[i])).abs() < 1e-6);
    }
    running.shutdown().await.unwrap();
}

/// A task request that does not wait for the long poll to time out: the header is returned as
/// soon as the participant has nothing to do and no round change is coming.
async fn task_now(
    c: &mut pb::coordinator_client::CoordinatorClient<tonic::transport::Channel>,
    session: &[u8],
) -> (pb::TaskHeader, Vec<f32>) {
    tokio::time::timeout(std::time::Duration::from_secs(30), task(c, session))
        .await
        .expect("task answered")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_prunes_inputs_outside_the_window_only() {
    let dir = tempfile::tempdir().unwrap();
    let k = keypair();
    let mut cfg = config(dir.path(), &[&k], 3, 2, 3, 1);
    cfg.retain_rounds = 1;
    let fed = cfg.federation.clone();
    let running = start(cfg.clone()).await;
    let mut c = client(&running).await;
    let s = register(&mut c, &k).await;
    for round in 1..=3u64 {
        let (h, _) = task(&mut c, &s).await;
        assert_eq!(h.round, round);
        let d = vec![round as f32; 4];
        submit(&mut c, update_messages(&fed, &k, &s, round, 5, &d))
            .await
            .unwrap();
        let mut p = running.coordinator.subscribe();
        p.wait_for(|p| p.completed >= round).await.unwrap();
    }
    let store = running.coordinator.store();
    let outcomes = store.outcomes().unwrap();
    // Rounds 1 and 2 fell out of the one-round window: their updates are gone ...
    for o in &outcomes[..2] {
        let sha = &o.contributions[0].update_sha256;
        assert!(
            store.get_vector(sha).is_err(),
            "round {} update kept",
            o.round
        );
    }
    // ... while round 3 can still be replayed, and the models round 3 needs are kept.
    let report = fedledger_coordinator::replay::replay(&cfg, store, &outcomes[2]).unwrap();
    assert!(report.ok(), "{:?}", report.differences);
    running.shutdown().await.unwrap();
}

/// A state directory whose ledger an older fedledger wrote in record format v1 is refused with
/// what to do: formats are never mixed in one log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1_ledger_is_refused_not_mixed() {
    use fedledger_ledger::records::{v1, *};
    let dir = tempfile::tempdir().unwrap();
    let k0 = keypair();
    let cfg = config(dir.path(), &[&k0], 3, 2, 1, 1);
    std::fs::create_dir_all(&cfg.state_dir).unwrap();
    let key = fedledger_ledger::keys::load_or_generate_key(&cfg.key).unwrap();
    let log = fedledger_ledger::Log::open(
        &cfg.state_dir.join("ledger"),
        &cfg.federation,
        fedledger_ledger::note::NoteSigner::log(&cfg.federation, key).unwrap(),
    )
    .unwrap();
    let genesis = v1::FederationRecord {
        v: 1,
        record_type: v1::FEDERATION_TYPE.into(),
        federation: cfg.federation.clone(),
        created_at: "2026-11-25T00:00:00Z".into(),
        participants: vec![v1::ParticipantRecord {
            name: "h0".into(),
            public_key: pubhex(&k0),
        }],
        model: ModelSpecRecord {
            kind: "logreg".into(),
            features: 3,
            classes: 2,
            hidden: vec![],
            params: 4,
        },
        training: TrainingRecord {
            rounds: 1,
            quorum: 1,
            local_epochs: 1,
            batch_size: 16,
            learning_rate: "0.1".into(),
            aggregation: "fedavg".into(),
        },
        privacy: v1::PrivacyRecord {
            epsilon_budget: "8".into(),
            delta: "0.00001".into(),
            clip_norm: "0".into(),
            noise_multiplier: "0".into(),
            accountant: "rdp".into(),
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
            sha256: cfg.validation_sha256.clone(),
        },
    };
    log.append_and_checkpoint(&[encode_canonical(&genesis).unwrap()])
        .unwrap();
    drop(log);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = match fedledger_coordinator::serve(cfg, Some(listener)).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a v1 ledger was opened for writing v2 entries"),
    };
    assert!(
        err.contains("record format v1") && err.contains("new state directory"),
        "{err}"
    );
}

/// Multi-Krum compares each hospital's update history, and the histories survive a restart:
/// an attacker that sent a far-off update in round 1 and, after the restart, one equal to the
/// honest ones in round 2 is still left out in round 2 (its history is still far off), every
/// round's histories start where the previous round's ended, and replay recomputes histories
/// and selection from the record; a tampered history record is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_histories_survive_a_restart_and_replay() {
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<_> = (0..5).map(|_| keypair()).collect();
    let refs: Vec<&_> = keys.iter().collect();
    let mut file = config_file(dir.path(), &refs, 3, 2, 3, 5);
    file.aggregation.strategy = fedledger_coordinator::config::StrategyKind::MultiKrum;
    file.aggregation.byzantine = 1;
    file.aggregation.history = 0.5;
    let cfg = file.validate().unwrap();
    let fed = cfg.federation.clone();
    let honest = |i: usize| vec![1.0 + 0.01 * i as f32, 1.0, 1.0 - 0.01 * i as f32, 1.0];
    let mut running = start(cfg.clone()).await;
    for round in 1..=3u64 {
        let mut c = client(&running).await;
        // Round 1 opens once the quorum has registered.
        let mut sessions = Vec::new();
        for k in &keys {
            sessions.push(register(&mut c, k).await);
        }
        for (i, (k, s)) in keys.iter().zip(&sessions).enumerate() {
            let (h, _) = task(&mut c, s).await;
            assert_eq!(h.round, round);
            let d = match (i, round) {
                (4, 1) => vec![-1.0f32; 4],
                (4, _) => honest(2),
                _ => honest(i),
            };
            submit(&mut c, update_messages(&fed, k, s, round, 5, &d))
                .await
                .unwrap();
        }
        let mut p = running.coordinator.subscribe();
        p.wait_for(|p| p.completed >= round).await.unwrap();
        if round == 1 {
            running.shutdown().await.unwrap();
            running = start(cfg.clone()).await;
        }
    }
    let store = running.coordinator.store();
    let outcomes = store.outcomes().unwrap();
    let attacker = pubhex(&keys[4]);
    let excluded = |o: &fedledger_coordinator::types::RoundOutcome| -> Vec<String> {
        o.contributions
            .iter()
            .filter(|c| c.flags.iter().any(|f| f == "excluded by multi-krum"))
            .map(|c| c.public_key.clone())
            .collect()
    };
    // Round 2: the attacker's update equals an honest one, its history does not.
    assert_eq!(excluded(&outcomes[0]), vec![attacker.clone()]);
    assert_eq!(excluded(&outcomes[1]), vec![attacker.clone()]);
    let histories: Vec<_> = outcomes
        .iter()
        .map(|o| o.history.clone().expect("histories recorded"))
        .collect();
    assert!(histories[0].before.is_empty());
    assert_eq!(histories[0].after.len(), 5);
    for r in 1..3 {
        assert_eq!(histories[r].weight, 0.5);
        assert_eq!(
            histories[r].before,
            histories[r - 1].after,
            "round {}",
            r + 1
        );
    }
    for o in &outcomes {
        let report = fedledger_coordinator::replay::replay(&cfg, store, o).unwrap();
        assert!(report.ok(), "round {}: {:?}", o.round, report.differences);
        assert_eq!(
            report
                .checked
                .iter()
                .filter(|c| c.starts_with("update history of"))
                .count(),
            5,
            "round {}: {:?}",
            o.round,
            report.checked
        );
    }
    // A record claiming another history after the round is caught.
    let mut forged = outcomes[1].clone();
    let h = forged.history.as_mut().unwrap();
    let first = h.after.keys().next().unwrap().clone();
    h.after.insert(first.clone(), "00".repeat(32));
    let report = fedledger_coordinator::replay::replay(&cfg, store, &forged).unwrap();
    assert!(
        report
            .differences
            .iter()
            .any(|d| d.what == format!("update history of {first} after the round")),
        "{:?}",
        report.differences
    );
    running.shutdown().await.unwrap();
}
