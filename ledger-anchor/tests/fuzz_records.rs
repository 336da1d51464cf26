//! Property tests over arbitrary input (fuzzing on stable Rust) of the record schemas and of an
//! auditor's `verify`: `validate_entry` refuses what is not exactly a record and never panics,
//! on random bytes and on random edits of real entries of every type; `verify` of an export whose
//! signed checkpoint claims far more entries than it holds stops at once, bounded by the files
//! that are there.
//!
//! Plain `cargo test` runs 256 cases per property and the corpus below; a long run sets
//! `PROPTEST_CASES` (e.g. `PROPTEST_CASES=100000`).

mod common;

use common::{Federation, ORIGIN};
use fedledger_ledger::note::{Checkpoint, SignedCheckpoint};
use fedledger_ledger::records::{
    MAX_ENTRY_BYTES, RECORD_VERSION, REWARD_RULE_SETTLED, RewardRecord, RoundRange,
    SETTLEMENT_TYPE, SettlementEntry, SettlementLine, VERDICT_DISTINGUISHABLE,
    VERDICT_NOT_DISTINGUISHABLE, encode_canonical, validate_entry,
};
use fedledger_ledger::verify::{VerifyOptions, verify_dir};
use proptest::prelude::*;

/// Every kind of entry of a real round: federation, enrolments, contributions, a decline and a
/// summary; and under the settled reward rule, the same with standard errors and the period's
/// settlement.
fn samples() -> Vec<(u64, Vec<u8>)> {
    let fed = Federation::new(3, 1);
    let genesis = fed.genesis();
    let at = genesis.len() as u64;
    let mut out: Vec<(u64, Vec<u8>)> = genesis
        .into_iter()
        .chain(fed.round(2, at))
        .enumerate()
        .map(|(i, e)| (i as u64, e))
        .collect();
    let mut settled = Federation::new(3, 1);
    settled.reward = RewardRecord {
        rule: REWARD_RULE_SETTLED.into(),
        pool_per_round: 1_000_000,
        period_rounds: Some(2),
        z_milli: Some(1960),
    };
    let genesis = settled.genesis();
    let at = genesis.len() as u64;
    let mut entries = genesis;
    entries.extend(settled.round(2, at));
    let lines = settled
        .participants
        .iter()
        .enumerate()
        .map(|(i, (_, k))| SettlementLine {
            participant: fedledger_ledger::keys::public_key_hex(k),
            value_nano: 1_000_000 * (i as i64 + 1) - 1_500_000,
            se_nano: 400_000,
            rounds: 1,
            verdict: if i == 2 {
                VERDICT_DISTINGUISHABLE
            } else {
                VERDICT_NOT_DISTINGUISHABLE
            }
            .into(),
            payout: if i == 2 { 1_000_000 } else { 0 },
        })
        .collect();
    entries.push(
        encode_canonical(&SettlementEntry {
            v: RECORD_VERSION,
            record_type: SETTLEMENT_TYPE.into(),
            federation: ORIGIN.into(),
            period: 1,
            rounds: RoundRange { first: 1, last: 2 },
            rule: settled.reward.clone(),
            counted_rounds: vec![2],
            pool: 1_000_000,
            part: 1,
            parts: 1,
            participants: lines,
        })
        .unwrap(),
    );
    out.extend(entries.into_iter().enumerate().map(|(i, e)| (i as u64, e)));
    out
}

proptest! {
    #[test]
    fn arbitrary_bytes_are_refused_without_panic(
        index in 0u64..10,
        bytes in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        prop_assert!(validate_entry(index, ORIGIN, &bytes).is_err());
    }

    #[test]
    fn edited_entries_validate_only_as_records(
        pick in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let samples = samples();
        let (index, entry) = &samples[pick.index(samples.len())];
        let mut e = entry.clone();
        let i = at.index(e.len());
        e[i] = byte;
        // Either refused, or (for edits inside a string or a digit that keep it canonical) a
        // record that encodes back to exactly these bytes.
        if let Ok(rec) = validate_entry(*index, ORIGIN, &e) {
            prop_assert!(e != *entry || rec == validate_entry(*index, ORIGIN, entry).unwrap());
        }
    }
}

/// Edge inputs, kept as regression tests.
#[test]
fn corpus() {
    let too_big = vec![b'{'; MAX_ENTRY_BYTES + 1];
    for (index, bytes) in [
        (0, &b""[..]),
        (0, b"{}"),
        (1, b"null"),
        (1, b"{\"v\":2}"),
        (1, b"{\"federation\":\"fedledger.test/federation-1\",\"type\":\"fedledger.round/v2\",\"v\":2}"),
        (0, b"{\"federation\":\"fedledger.test/federation-1\",\"type\":\"fedledger.round/v2\",\"v\":2}"),
        (3, b"{\"federation\":\"fedledger.test/federation-1\",\"type\":\"fedledger.federation/v2\",\"v\":2}"),
        (1, b"{\"v\":18446744073709551616}"),
        (1, b"{\"v\":2.0}"),
        (9, b"{\"federation\":\"fedledger.test/federation-1\",\"type\":\"fedledger.settlement/v2\",\"v\":2}"),
        (9, b"{\"counted_rounds\":[],\"federation\":\"fedledger.test/federation-1\",\"part\":1,\"participants\":[],\"parts\":1,\"period\":1,\"pool\":0,\"rounds\":{\"first\":1,\"last\":1},\"rule\":{\"pool_per_round\":1,\"rule\":\"shapley-proportional/v1\"},\"type\":\"fedledger.settlement/v2\",\"v\":2}"),
        (1, &too_big),
    ] {
        assert!(validate_entry(index, ORIGIN, bytes).is_err(), "{}", String::from_utf8_lossy(bytes));
    }
}

#[test]
fn an_export_claiming_a_trillion_entries_is_refused_by_what_it_holds() {
    let (store, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let fed = Federation::new(2, 0);
    let log = fed.build_log(store.path(), 1);
    fedledger_ledger::export::export(&log, out.path()).unwrap();
    // The log's own key signs a checkpoint claiming 10^12 entries (a hostile coordinator, or a
    // stolen key): verify must not loop, read or allocate toward that count.
    let claim = SignedCheckpoint::sign(
        Checkpoint::new(ORIGIN, 1_000_000_000_000, [7; 32]),
        &fed.log_signer,
    );
    std::fs::write(out.path().join("checkpoint"), claim.encode()).unwrap();
    let r = verify_dir(out.path(), VerifyOptions::default());
    assert!(!r.ok());
    assert!(
        r.failures
            .iter()
            .any(|f| f.file == "entries" && f.what.contains("claims 1000000000000 entries")),
        "{r}"
    );
    // It did the work of a three-file check, not of a trillion entries (a bound on work, read
    // off the report: nothing beyond the entries listing was checked).
    assert!(r.passed.len() <= 1, "{r}");
}
