//! Tests that hold or fail the store through named failpoints (fail-rs, the `failpoints`
//! feature, which the crate's dev-dependency on itself turns on). Failpoint configuration is
//! process-wide, so these tests live in their own test binary and each one holds a
//! `FailScenario` (a global lock) for its whole run: they never overlap.

mod common;

use common::{Federation, ORIGIN};
use fail::FailScenario;
use fedledger_ledger::{LedgerError, Log};

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
