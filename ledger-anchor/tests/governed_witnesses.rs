//! Witnesses changed by governance: once the entry is anchored, every checkpoint that contains
//! it is judged by the new set — by the log store (which cosignatures it keeps, what it calls
//! witnessed), by the export (which keys it lists) and by `verify` — and a checkpoint that only
//! the replaced witnesses cosigned is not witnessed.

mod common;

use common::{
    Federation, ORIGIN, governance_entry, governance_of, governed_genesis, governed_round, key,
};
use fedledger_ledger::Log;
use fedledger_ledger::export::export;
use fedledger_ledger::note::NoteSigner;
use fedledger_ledger::records::*;
use fedledger_ledger::verify::{VerifyOptions, verify_dir};
use ring::signature::Ed25519KeyPair;

fn governors() -> Vec<Ed25519KeyPair> {
    (0..3).map(|i| key(210 + i)).collect()
}

/// A governed federation (2 of 3 governors, witness-0 with quorum 1) whose first governance
/// entry replaces the witnesses by `new` (quorum 1), followed by round 1; every checkpoint up to
/// the change is cosigned by witness-0. Returns the log and the change's index.
fn ledger(dir: &std::path::Path, new: &NoteSigner) -> (Log, Federation, u64) {
    let fed = Federation::new(2, 1);
    let govs = governors();
    let (genesis, g) = governed_genesis(&fed, &govs, 2);
    let mut gov = governance_of(&genesis, &g);
    let log = Log::open(dir, ORIGIN, fed.log_signer.clone()).unwrap();
    log.append_batch(&genesis).unwrap();
    log.checkpoint().unwrap();
    fed.cosign_latest(&log, 1_700_000_000);

    let (bytes, e) = governance_entry(
        gov.head(),
        1,
        vec![Change::Witnesses {
            keys: vec![new.verifier_key().to_string()],
            quorum: 1,
        }],
        &[&govs[0], &govs[1]],
    );
    let at = log.size();
    gov.admit(at, &bytes, &e).unwrap();
    log.append_and_checkpoint(&[bytes]).unwrap();

    log.append_and_checkpoint(&governed_round(&fed, 1, log.size(), &gov))
        .unwrap();
    (log, fed, at)
}

fn cosign(log: &Log, w: &NoteSigner) {
    let cp = log.latest_checkpoint().unwrap().unwrap();
    log.add_cosignature(
        cp.checkpoint.size,
        w.verifier_key(),
        w.cosign(&cp.note.text, 1_700_000_100),
    )
    .unwrap();
}

#[test]
fn the_new_witnesses_judge_every_checkpoint_that_contains_the_change() {
    let (store, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let new = NoteSigner::witness("w-new.test", key(220)).unwrap();
    let (log, fed, at) = ledger(store.path(), &new);
    let old = &fed.witnesses[0];

    // The store's policy: the genesis's up to the change, the new set from the size holding it.
    let (keys_before, q_before) = log.witness_policy(at);
    assert_eq!(
        (keys_before, q_before),
        (vec![old.verifier_key().clone()], 1)
    );
    let (keys_after, _) = log.witness_policy(at + 1);
    assert_eq!(keys_after, vec![new.verifier_key().clone()]);

    // Cosigned by the replaced witness only: not witnessed; the genesis checkpoint still is.
    cosign(&log, old);
    let latest = log.latest_checkpoint().unwrap().unwrap();
    let witnessed = log.latest_witnessed_in_force().unwrap().unwrap();
    assert!(
        witnessed.checkpoint.size <= at,
        "{}",
        witnessed.checkpoint.size
    );
    export(&log, out.path()).unwrap();
    let r = verify_dir(out.path(), VerifyOptions::default());
    assert!(
        r.failures.iter().any(
            |f| f.file == "checkpoint" && f.what.contains("0 valid cosignature(s), 1 required")
        ),
        "{r}"
    );

    // Cosigned by the new witness: kept by the store, witnessed, and verify passes; the export
    // lists both keys (each was in force at some size).
    cosign(&log, &new);
    let cp = log.latest_witnessed_in_force().unwrap().unwrap();
    assert_eq!(cp.checkpoint.size, latest.checkpoint.size);
    assert!(
        cp.note
            .signatures
            .iter()
            .any(|s| s.is_by(new.verifier_key()))
    );
    let out2 = tempfile::tempdir().unwrap();
    export(&log, out2.path()).unwrap();
    let listed = std::fs::read_to_string(out2.path().join("witnesses.vkeys")).unwrap();
    assert!(listed.contains(&old.verifier_key().to_string()));
    assert!(listed.contains(&new.verifier_key().to_string()));
    let r = verify_dir(out2.path(), VerifyOptions::default());
    assert!(r.ok(), "{r}");
    assert!(
        r.passed
            .iter()
            .any(|p| p.contains("1 valid cosignature(s), 1 required")),
        "{r}"
    );
}

#[test]
fn an_under_signed_witness_change_changes_no_witness() {
    // The same change signed by one governor of the two needed: the store, like verify,
    // does not admit it, so the genesis witnesses still judge every checkpoint.
    let store = tempfile::tempdir().unwrap();
    let fed = Federation::new(2, 1);
    let govs = governors();
    let (genesis, _) = governed_genesis(&fed, &govs, 2);
    let log = Log::open(store.path(), ORIGIN, fed.log_signer.clone()).unwrap();
    log.append_batch(&genesis).unwrap();
    let new = NoteSigner::witness("w-new.test", key(221)).unwrap();
    let (bytes, _) = governance_entry(
        &sha256_hex(&genesis[0]),
        1,
        vec![Change::Witnesses {
            keys: vec![new.verifier_key().to_string()],
            quorum: 1,
        }],
        &[&govs[0]],
    );
    log.append_and_checkpoint(&[bytes]).unwrap();
    let (keys, quorum) = log.witness_policy(log.size());
    assert_eq!(
        (keys, quorum),
        (vec![fed.witnesses[0].verifier_key().clone()], 1)
    );
    assert_eq!(log.witness_schedule().len(), 1);
}
