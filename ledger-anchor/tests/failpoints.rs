//! Tests that hold or fail the store through named failpoints (fail-rs, the `failpoints`
//! feature, which the crate's dev-dependency on itself turns on). Failpoint configuration is
//! process-wide, so these tests live in their own test binary and each one holds a
//! `FailScenario` (a global lock) for its whole run: they never overlap.

mod common;

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use common::{ORIGIN, v1::Federation};
use fail::FailScenario;
use fedledger_ledger::node::{
    self, Announcement, NodeConfig, NodeHandle, SyncRequest, SyncResponse,
};
use fedledger_ledger::note::NoteSigner;
use fedledger_ledger::witness::Witness;
use fedledger_ledger::{LedgerError, Log};
use libp2p::Multiaddr;
use libp2p::identity::Keypair;

/// Longest a gate holds a thread.
const HOLD_LIMIT: Duration = Duration::from_secs(30);

/// Holds every thread that reaches a failpoint until opened (or [`HOLD_LIMIT`]), and counts
/// arrivals. Opens when
/// dropped, so a failing test releases what it held instead of hanging.
struct Gate {
    state: Arc<(Mutex<GateState>, Condvar)>,
}

#[derive(Default)]
struct GateState {
    arrived: usize,
    open: bool,
}

impl Gate {
    fn install(failpoint: &str) -> Self {
        let state = Arc::new((Mutex::new(GateState::default()), Condvar::new()));
        let held = state.clone();
        fail::cfg_callback(failpoint, move || {
            let (m, cv) = &*held;
            let mut s = m.lock().unwrap();
            s.arrived += 1;
            cv.notify_all();
            // Bounded, so that a regression (a held disk stalling the only runtime thread)
            // fails the test's timeout instead of hanging it.
            let _held = cv.wait_timeout_while(s, HOLD_LIMIT, |s| !s.open).unwrap();
        })
        .unwrap();
        Self { state }
    }

    /// How many threads have reached the point so far.
    fn arrived(&self) -> usize {
        self.state.0.lock().unwrap().arrived
    }

    /// Blocks the calling thread until someone reaches the point (false on timeout).
    fn wait_arrival(&self, limit: Duration) -> bool {
        let (m, cv) = &*self.state;
        let s = m.lock().unwrap();
        let (s, _) = cv.wait_timeout_while(s, limit, |s| s.arrived == 0).unwrap();
        s.arrived > 0
    }

    fn open(&self) {
        let (m, cv) = &*self.state;
        m.lock().unwrap().open = true;
        cv.notify_all();
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.open();
    }
}

#[test]
fn failpoints_are_compiled_in() {
    let _scenario = FailScenario::setup();
    assert!(fail::has_failpoints());
}

#[test]
fn a_failed_flush_leaves_the_size_and_an_interrupted_append_is_durable() {
    let scenario = FailScenario::setup();
    let fed = Federation::new(2, 1);
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), ORIGIN, fed.log_signer.clone()).unwrap();
    log.append(&fed.genesis()).unwrap();

    fail::cfg("ledger::store::before_flush", "return").unwrap();
    assert!(matches!(
        log.append(&fed.round(1)),
        Err(LedgerError::Io { .. })
    ));
    assert_eq!(log.size(), 1, "an append whose flush failed is not counted");
    fail::remove("ledger::store::before_flush");
    assert_eq!(log.append(&fed.round(1)).unwrap(), 1, "the log carries on");

    // The process dies right after an append is durable: the caller never heard of it, but
    // the entry survives a restart.
    fail::cfg("ledger::store::after_append", "return").unwrap();
    assert!(log.append(&fed.round(2)).is_err());
    fail::remove("ledger::store::after_append");
    let root = log.root();
    drop(log);
    let log = Log::open(dir.path(), ORIGIN, fed.log_signer.clone()).unwrap();
    assert_eq!((log.size(), log.root()), (3, root));
    scenario.teardown();
}

#[test]
fn readers_do_not_wait_for_a_held_flush() {
    let scenario = FailScenario::setup();
    let fed = Federation::new(2, 1);
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), ORIGIN, fed.log_signer.clone()).unwrap();
    log.append(&fed.genesis()).unwrap();
    log.checkpoint().unwrap();

    let gate = Gate::install("ledger::store::before_flush");
    let writer = {
        let (log, round) = (log.clone(), fed.round(1));
        std::thread::spawn(move || log.append(&round))
    };
    assert!(
        gate.wait_arrival(Duration::from_secs(10)),
        "the append reached its flush"
    );
    // While that flush is held, readers get the durable log without queueing behind it.
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let reader = log.clone();
    std::thread::spawn(move || {
        let read = (
            reader.size(),
            reader.entries(0, 1).map(|e| e.len()).ok(),
            reader.consistency_proof(1, 1).is_ok(),
            reader
                .latest_checkpoint()
                .ok()
                .flatten()
                .map(|c| c.checkpoint.size),
        );
        let _ = tx.send(read);
    });
    let read = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("readers waited for the held flush");
    assert_eq!(read, (1, Some(1), true, Some(1)));
    assert_eq!(gate.arrived(), 1);
    gate.open();
    assert_eq!(writer.join().unwrap().unwrap(), 1);
    assert_eq!(log.size(), 2);
    scenario.teardown();
}

// ---- nodes whose store is held: the event loop must not notice ----

fn cfg() -> NodeConfig {
    NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        heartbeat: Duration::from_millis(100),
        request_timeout: Duration::from_secs(10),
        ..NodeConfig::default()
    }
}

async fn wait_until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn addr(n: &NodeHandle) -> Multiaddr {
    n.listen_addrs(Duration::from_secs(5)).await.unwrap()[0].clone()
}

/// A writer holding genesis, serving on loopback.
async fn writer(fed: &Federation, dir: &tempfile::TempDir) -> NodeHandle {
    let log = Log::open(dir.path(), ORIGIN, fed.log_signer.clone()).unwrap();
    log.append(&fed.genesis()).unwrap();
    log.checkpoint().unwrap();
    node::spawn(cfg(), Keypair::generate_ed25519(), log, None)
        .await
        .unwrap()
}

/// A replica (a witness when `witness` names one of the federation's) that dials `peer` and
/// has caught up from it.
async fn replica(
    fed: &Federation,
    dir: &tempfile::TempDir,
    witness: Option<usize>,
    peer: &NodeHandle,
) -> NodeHandle {
    let key = fed.log_signer.verifier_key().clone();
    let log = Log::open_replica(&dir.path().join("log"), key.clone()).unwrap();
    let w = witness.map(|i| {
        let s = NoteSigner::witness(fed.witnesses[i].name(), common::key(100 + i as u8)).unwrap();
        Witness::open(&dir.path().join("witness"), s, key.clone()).unwrap()
    });
    let n = node::spawn(cfg(), Keypair::generate_ed25519(), log, w)
        .await
        .unwrap();
    n.dial(addr(peer).await).await.unwrap();
    let size = peer.log().size();
    wait_until("catch-up", async || n.log().size() == size).await;
    n
}

/// Waits until `a` and `b` are connected and their gossip meshes have had time to form.
async fn connected(a: &NodeHandle, b: &NodeHandle) {
    let id = b.peer_id();
    wait_until("connection", async || {
        a.peers().await.unwrap().contains(&id)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
}

/// One runtime thread: if anything on the runtime waited for the held disk, nothing else
/// could run and the test would time out.
#[tokio::test(flavor = "current_thread")]
async fn a_replica_whose_flush_is_held_still_serves_and_gossips() {
    let scenario = FailScenario::setup();
    tokio::time::timeout(Duration::from_secs(90), async {
        let fed = Federation::new(2, 1);
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let w = writer(&fed, &dirs[0]).await;
        let r = replica(&fed, &dirs[1], None, &w).await;
        // P's only peer is R: whatever gossip P gets, R forwarded.
        let p = replica(&fed, &dirs[2], None, &r).await;
        connected(&w, &r).await;
        connected(&p, &r).await;

        // The writer appends round 1 (its own flush is not held), then R's flush is held.
        let wlog = w.log().clone();
        wlog.append(&fed.round(1)).unwrap();
        wlog.checkpoint().unwrap();
        let gate = Gate::install("ledger::store::before_flush");
        w.publish_since(1).await.unwrap();
        wait_until("R's append to reach its flush", async || gate.arrived() > 0).await;

        // Meanwhile R answers requests, serves another peer, and its gossip flows.
        let rid = r.peer_id();
        let latest = p.request(rid, SyncRequest::Latest).await.unwrap();
        assert!(
            matches!(latest, SyncResponse::Latest(Some(_))),
            "{latest:?}"
        );
        let entries = SyncRequest::Entries {
            start: 0,
            end: 1,
            proof_to: 1,
        };
        match p.request(rid, entries).await.unwrap() {
            SyncResponse::Entries { entries, .. } => assert_eq!(entries.len(), 1),
            other => panic!("{other:?}"),
        }
        assert_eq!(r.peers().await.unwrap().len(), 2);
        let again = Announcement {
            first: 0,
            entries: vec![String::from_utf8(fed.genesis()).unwrap()],
            checkpoint: wlog.checkpoint_at(1).unwrap().unwrap().encode(),
            consistency: vec![],
        };
        let before = p.stats().accepted;
        r.publish_raw(serde_json::to_vec(&again).unwrap())
            .await
            .unwrap();
        wait_until("P to accept what R published", async || {
            p.stats().accepted > before
        })
        .await;
        assert_eq!(r.log().size(), 1, "R's append is not durable yet");
        assert_eq!(
            r.stats().accepted,
            0,
            "R has not judged W's announcement yet"
        );

        // Released: R's verdict comes back to its loop, which accepts and forwards it to P.
        gate.open();
        wait_until("R to append", async || r.log().size() == 2).await;
        wait_until("R to accept", async || r.stats().accepted == 1).await;
        wait_until("P to get round 1 through R", async || p.log().size() == 2).await;
        assert_eq!(p.log().root(), wlog.root());
        assert_eq!(r.stats().rejected + p.stats().rejected, 0);
        for n in [&w, &r, &p] {
            n.shutdown().await;
        }
    })
    .await
    .expect("the node stalled while its disk was held");
    scenario.teardown();
}

#[tokio::test(flavor = "current_thread")]
async fn a_witness_whose_persist_is_held_still_answers_other_requests() {
    let scenario = FailScenario::setup();
    tokio::time::timeout(Duration::from_secs(90), async {
        let fed = Federation::new(2, 1);
        let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
        let w = writer(&fed, &dirs[0]).await;
        let r = replica(&fed, &dirs[1], Some(0), &w).await;
        connected(&w, &r).await;
        let (witnesses, quorum) = w.log().witness_policy(w.log().size());

        let gate = Gate::install("ledger::witness::before_persist");
        let collecting = tokio::spawn({
            let (w, witnesses) = (w.clone(), witnesses.clone());
            async move { w.collect_cosignatures(1, &witnesses).await }
        });
        wait_until("the witness to reach its persist", async || {
            gate.arrived() > 0
        })
        .await;
        for _ in 0..3 {
            let latest = w.request(r.peer_id(), SyncRequest::Latest).await.unwrap();
            assert!(
                matches!(latest, SyncResponse::Latest(Some(_))),
                "{latest:?}"
            );
        }
        assert!(
            !collecting.is_finished(),
            "no cosignature before the state is stored"
        );

        gate.open();
        let cosigned = collecting.await.unwrap().unwrap();
        assert_eq!(cosigned as u64, quorum);
        for n in [&w, &r] {
            n.shutdown().await;
        }
    })
    .await
    .expect("the node stalled while its witness was held");
    scenario.teardown();
}

#[tokio::test(flavor = "current_thread")]
async fn a_failed_flush_is_this_nodes_problem_not_the_senders() {
    let scenario = FailScenario::setup();
    tokio::time::timeout(Duration::from_secs(90), async {
        let fed = Federation::new(2, 1);
        let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
        let w = writer(&fed, &dirs[0]).await;
        let r = replica(&fed, &dirs[1], None, &w).await;
        connected(&w, &r).await;
        let wlog = w.log().clone();

        wlog.append(&fed.round(1)).unwrap();
        wlog.checkpoint().unwrap();
        fail::cfg("ledger::store::before_flush", "return").unwrap();
        w.publish_since(1).await.unwrap();
        wait_until("R to give up on the announcement", async || {
            r.stats().ignored > 0
        })
        .await;
        assert_eq!(r.stats().rejected, 0, "the sender is not penalised");
        assert_eq!(r.log().size(), 1);

        // The disk is back: the next announcement leaves a gap, which R closes by catch-up.
        fail::remove("ledger::store::before_flush");
        wlog.append(&fed.round(2)).unwrap();
        wlog.checkpoint().unwrap();
        w.publish_since(2).await.unwrap();
        wait_until("R to catch up", async || r.log().size() == 3).await;
        assert_eq!(r.log().root(), wlog.root());
        for n in [&w, &r] {
            n.shutdown().await;
        }
    })
    .await
    .expect("scenario timed out");
    scenario.teardown();
}

#[tokio::test(flavor = "current_thread")]
async fn a_full_validation_queue_ignores_gossip_instead_of_queueing_it() {
    const EXTRA: u64 = 100; // more than the node keeps waiting for validation
    let scenario = FailScenario::setup();
    tokio::time::timeout(Duration::from_secs(90), async {
        let fed = Federation::new(2, 1);
        let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
        let w = writer(&fed, &dirs[0]).await;
        let r = replica(&fed, &dirs[1], None, &w).await;
        connected(&w, &r).await;
        let wlog = w.log().clone();

        // R's validator is held in the append of round 1 ...
        wlog.append(&fed.round(1)).unwrap();
        wlog.checkpoint().unwrap();
        let gate = Gate::install("ledger::store::before_flush");
        w.publish_since(1).await.unwrap();
        wait_until("R's append to reach its flush", async || gate.arrived() > 0).await;
        // ... while W gossips many more valid messages (re-announcements of genesis).
        let again = Announcement {
            first: 0,
            entries: vec![String::from_utf8(fed.genesis()).unwrap()],
            checkpoint: wlog.checkpoint_at(1).unwrap().unwrap().encode(),
            consistency: vec![],
        };
        for _ in 0..EXTRA {
            w.publish_raw(serde_json::to_vec(&again).unwrap())
                .await
                .unwrap();
        }
        // Past the bound they are ignored at once, not queued; the loop still answers.
        wait_until("R to ignore what it cannot queue", async || {
            r.stats().ignored > 0
        })
        .await;
        let latest = w.request(r.peer_id(), SyncRequest::Latest).await.unwrap();
        assert!(
            matches!(latest, SyncResponse::Latest(Some(_))),
            "{latest:?}"
        );
        assert_eq!(r.stats().accepted, 0);

        gate.open();
        wait_until("every message to be judged", async || {
            let s = r.stats();
            s.accepted + s.ignored == 1 + EXTRA
        })
        .await;
        let s = r.stats();
        assert!(s.ignored > 0 && s.accepted > 1 && s.rejected == 0, "{s:?}");
        assert_eq!(r.log().size(), 2);
        for n in [&w, &r] {
            n.shutdown().await;
        }
    })
    .await
    .expect("scenario timed out");
    scenario.teardown();
}
