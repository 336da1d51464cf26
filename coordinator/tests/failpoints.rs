//! Faults injected at the coordinator's named points (the `failpoints` feature, which plain
//! `cargo test` turns on through the crate's dev-dependency on itself). fail-rs keeps its
//! configuration in one global registry, so these tests run one at a time (`SERIAL`).

mod common;

use std::{
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

use common::*;
use fedledger_coordinator::Phase;
use fedledger_ledger::node::{self, NodeConfig, SyncRequest, SyncResponse};
use fedledger_proto as pb;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Long enough that only a real hang fails: these tests assert that calls complete, not how
/// fast.
const PATIENCE: Duration = Duration::from_secs(60);

/// A point that, when reached, reports it and then waits until released.
struct Held {
    entered: mpsc::Receiver<()>,
    release: mpsc::Sender<()>,
}

fn hold(point: &str) -> Held {
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let release_rx = Arc::new(Mutex::new(release_rx));
    let entered_tx = Mutex::new(entered_tx);
    fail::cfg_callback(point, move || {
        let _ = entered_tx.lock().unwrap().send(());
        let _ = release_rx.lock().unwrap().recv();
    })
    .unwrap();
    Held { entered, release }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_and_gossip_go_on_while_a_close_holds_its_flush() {
    let _serial = SERIAL.lock().await;
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let (k0, k1) = (keypair(), keypair());
    let mut cfg = config(dir.path(), &[&k0, &k1], 3, 2, 2, 2);
    cfg.ledger_listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    let running = start(cfg).await;
    let coordinator_node = running.ledger_node.clone().expect("ledger node");
    let coordinator_addr = coordinator_node
        .listen_addrs(Duration::from_secs(5))
        .await
        .unwrap()
        .remove(0);
    // An auditor's replica, dialled in to the coordinator's node.
    let replica_dir = tempfile::tempdir().unwrap();
    let log_key = running.coordinator.ledger().log_key().clone();
    let replica_log = fedledger_ledger::Log::open_replica(replica_dir.path(), log_key).unwrap();
    let replica = node::spawn(
        NodeConfig {
            dial: vec![coordinator_addr],
            ..Default::default()
        },
        libp2p::identity::Keypair::generate_ed25519(),
        replica_log,
        None,
    )
    .await
    .unwrap();

    let held = hold("coordinator::close::before_flush");
    let mut c = client(&running).await;
    let fed = running.coordinator.config().federation.clone();
    let (s0, s1) = (register(&mut c, &k0).await, register(&mut c, &k1).await);
    let mut progress = running.coordinator.subscribe();
    progress.wait_for(|p| p.phase == Phase::Open).await.unwrap();
    for (k, s) in [(&k0, &s0), (&k1, &s1)] {
        submit(
            &mut c,
            update_messages(&fed, k, s, 1, 5, &[0.1, 0.2, 0.3, 0.4]),
        )
        .await
        .unwrap();
    }
    // Everyone answered: the close runs and stops inside its sled flush.
    let held = tokio::task::spawn_blocking(move || {
        held.entered.recv_timeout(PATIENCE).unwrap();
        held
    })
    .await
    .unwrap();
    // While it is held: a challenge, a task, and the ledger network all answer.
    let while_held = async {
        let ch = c
            .challenge(pb::ChallengeRequest {
                public_key: pubhex(&k0),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            ch.challenge.len(),
            fedledger_coordinator::machine::CHALLENGE_BYTES
        );
        let (header, _) = task(&mut c, &s0).await;
        assert_eq!(header.state, pb::TaskState::Wait as i32);
        assert!(header.detail.contains("closing"), "{}", header.detail);
        let peer = coordinator_node.peer_id();
        let latest = replica.request(peer, SyncRequest::Latest).await.unwrap();
        assert!(
            matches!(latest, SyncResponse::Latest(Some(_))),
            "{latest:?}"
        );
        let genesis = 1 + 2; // the federation entry and two enrolments
        assert_eq!(replica.catch_up_from(peer).await.unwrap(), genesis);
        assert!(running.coordinator.progress().closing);
    };
    tokio::time::timeout(PATIENCE, while_held)
        .await
        .expect("a call did not complete while the close's flush was held");
    held.release.send(()).unwrap();
    // Released: the round closes and the next one opens.
    tokio::time::timeout(
        PATIENCE,
        progress.wait_for(|p| p.completed == 1 && p.round == 2),
    )
    .await
    .unwrap()
    .unwrap();
    scenario.teardown();
    running.shutdown().await.unwrap();
}

/// Round summaries in the coordinator's log, by round number, with how often each appears.
fn summaries(log: &fedledger_ledger::Log) -> std::collections::BTreeMap<u64, usize> {
    let mut out = std::collections::BTreeMap::new();
    for i in 0..log.size() {
        let e = log.entry(i).unwrap();
        if let fedledger_ledger::records::Record::Round(s) =
            fedledger_ledger::records::validate_entry(i, log.origin(), &e).unwrap()
        {
            *out.entry(s.round).or_insert(0) += 1;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_stored_but_not_in_the_ledger_is_anchored_exactly_once() {
    let _serial = SERIAL.lock().await;
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let (k0, k1) = (keypair(), keypair());
    let cfg = config(dir.path(), &[&k0, &k1], 3, 2, 2, 2);
    let fed = cfg.federation.clone();
    // The ledger refuses every append: round 1 is stored (sled flushed) but not anchored, as
    // after a crash between the two.
    fail::cfg("coordinator::ledger::before_append", "return").unwrap();
    let running = start(cfg.clone()).await;
    let mut c = client(&running).await;
    let (s0, s1) = (register(&mut c, &k0).await, register(&mut c, &k1).await);
    let mut progress = running.coordinator.subscribe();
    progress.wait_for(|p| p.phase == Phase::Open).await.unwrap();
    for (k, s) in [(&k0, &s0), (&k1, &s1)] {
        submit(
            &mut c,
            update_messages(&fed, k, s, 1, 5, &[0.1, 0.2, 0.3, 0.4]),
        )
        .await
        .unwrap();
    }
    tokio::time::timeout(PATIENCE, progress.wait_for(|p| p.completed == 1))
        .await
        .unwrap()
        .unwrap();
    assert!(running.coordinator.store().outcome(1).unwrap().is_some());
    assert!(running.coordinator.anchored(1).is_none());
    assert!(summaries(running.coordinator.ledger()).is_empty());
    running.shutdown().await.unwrap();
    drop(c);

    // Restarted with a working ledger: the stored round is anchored, once.
    fail::remove("coordinator::ledger::before_append");
    // And round 2's append reports a failure after it is durable: retried, never doubled.
    fail::cfg("coordinator::ledger::after_append", "1*return").unwrap();
    let running = start(cfg.clone()).await;
    assert!(running.coordinator.anchored(1).is_some());
    let mut c = client(&running).await;
    let (s0, s1) = (register(&mut c, &k0).await, register(&mut c, &k1).await);
    for (k, s) in [(&k0, &s0), (&k1, &s1)] {
        submit(
            &mut c,
            update_messages(&fed, k, s, 2, 5, &[0.2, 0.1, 0.0, 0.3]),
        )
        .await
        .unwrap();
    }
    tokio::time::timeout(PATIENCE, running.wait_done())
        .await
        .unwrap();
    // The failed report is retried at the driver's next step.
    let coordinator = running.coordinator.clone();
    tokio::time::timeout(PATIENCE, async {
        while coordinator.anchored(2).is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    drop(coordinator);
    assert_eq!(
        summaries(running.coordinator.ledger()),
        [(1, 1), (2, 1)].into_iter().collect()
    );
    running.shutdown().await.unwrap();
    scenario.teardown();

    // A further restart adds nothing.
    let running = start(cfg).await;
    assert_eq!(
        summaries(running.coordinator.ledger()),
        [(1, 1), (2, 1)].into_iter().collect()
    );
    running.shutdown().await.unwrap();
}
