//! Tests that hold or fail the store through named failpoints (fail-rs, the `failpoints`
//! feature, which the crate's dev-dependency on itself turns on). Failpoint configuration is
//! process-wide, so these tests live in their own test binary and each one holds a
//! `FailScenario` (a global lock) for its whole run: they never overlap.

mod common;

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use common::{Federation, ORIGIN};
use fail::FailScenario;
use fedledger_ledger::{LedgerError, Log};

/// Holds every thread that reaches a failpoint until opened, and counts arrivals. Opens when
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
            while !s.open {
                s = cv.wait(s).unwrap();
            }
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
