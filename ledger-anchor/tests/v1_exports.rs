//! Ledgers in the first record format (v1) still verify: export then verify, tampering caught
//! and named, epsilon recomputed from the recorded `dp` parameters.

mod common;

use std::path::Path;

use common::{names, v1::Federation};
use fedledger_ledger::export::export;
use fedledger_ledger::verify::{EpsilonAccountant, Run, VerifyOptions, VerifyReport, verify_dir};

fn exported(rounds: u64) -> (tempfile::TempDir, tempfile::TempDir, Federation) {
    let (store, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let fed = Federation::new(3, 2);
    let log = fed.build_log(store.path(), rounds);
    let s = export(&log, out.path()).unwrap();
    assert_eq!(s.entries, rounds + 1);
    (store, out, fed)
}

fn verify(dir: &Path) -> VerifyReport {
    verify_dir(dir, VerifyOptions::default())
}

#[test]
fn a_fresh_export_verifies() {
    let (_s, out, _) = exported(4);
    let r = verify(out.path());
    assert!(r.ok(), "{r}");
    assert!(
        r.skipped.iter().any(|s| s.contains("epsilon")),
        "epsilon check reported as skipped"
    );
    let text = r.to_string();
    assert!(
        text.contains("signatures: 12 participant update signatures verify"),
        "{text}"
    );
    // Quorum beyond the two witnesses fails.
    let r = verify_dir(
        out.path(),
        VerifyOptions {
            quorum: Some(3),
            accountant: None,
            rewards: None,
        },
    );
    assert!(!r.ok());
}

#[test]
fn tampering_with_any_exported_file_fails_naming_it() {
    let (_s, out, _) = exported(3);
    let checked = common::tamper_every_file(out.path(), 40, verify);
    assert!(checked > 300, "{checked}");
}

#[test]
fn a_bad_update_signature_and_a_missing_file_are_reported() {
    let (store, out, fed) = exported(2);
    drop(store);
    std::fs::remove_file(out.path().join("proofs/1")).unwrap();
    let r = verify(out.path());
    assert!(names(&r, "proofs/1"), "{r}");
    // A participant signature over a different round is caught even though the schema holds.
    let (store2, out2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let log =
        fedledger_ledger::Log::open(store2.path(), common::ORIGIN, fed.log_signer.clone()).unwrap();
    log.append(&fed.genesis()).unwrap();
    let r1 = fed.round(1);
    let r2 = String::from_utf8(fed.round(2)).unwrap();
    let r1s = String::from_utf8(r1.clone()).unwrap();
    // Take round 2's record but keep round 1's digests and signatures: signatures then cover round 1.
    let v1: serde_json::Value = serde_json::from_str(&r1s).unwrap();
    let mut v2: serde_json::Value = serde_json::from_str(&r2).unwrap();
    v2["contributions"] = v1["contributions"].clone();
    v2["model"]["before"] = v1["model"]["after"].clone();
    log.append(&r1).unwrap();
    log.append(&fedledger_ledger::records::encode_canonical(&v2).unwrap())
        .unwrap();
    log.checkpoint().unwrap();
    fed.cosign_latest(&log, 5);
    export(&log, out2.path()).unwrap();
    let r = verify(out2.path());
    assert!(
        r.failures
            .iter()
            .any(|f| f.file == "entries/2" && f.what.contains("signature")),
        "{r}"
    );
}

/// Epsilon = 0.001 per step, composed by summation: enough to test the hook's plumbing.
struct LinearAccountant;

impl EpsilonAccountant for LinearAccountant {
    fn cumulative_epsilon(&self, _: &str, _: f64, runs: &[Run]) -> Result<f64, String> {
        Ok(runs.iter().map(|d| d.steps as f64 * 0.001).sum())
    }
}

struct DoubleAccountant;

impl EpsilonAccountant for DoubleAccountant {
    fn cumulative_epsilon(&self, _: &str, _: f64, runs: &[Run]) -> Result<f64, String> {
        Ok(runs.iter().map(|d| d.steps as f64 * 0.002).sum())
    }
}

#[test]
fn epsilon_check_uses_the_plugged_accountant() {
    let (_s, out, _) = exported(3);
    let r = verify_dir(
        out.path(),
        VerifyOptions {
            quorum: None,
            accountant: Some(&LinearAccountant),
            rewards: None,
        },
    );
    assert!(r.ok() && r.skipped.is_empty(), "{r}");
    let r = verify_dir(
        out.path(),
        VerifyOptions {
            quorum: None,
            accountant: Some(&DoubleAccountant),
            rewards: None,
        },
    );
    assert!(
        r.failures
            .iter()
            .any(|f| f.what.contains("epsilon_total_micro")),
        "{r}"
    );
}
