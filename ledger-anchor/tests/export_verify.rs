//! Export then verify, record format v2: every claim a hospital made is signed, so a changed
//! example count or privacy object fails naming the entry; tampering with any exported file is
//! caught and named; epsilon figures are checked against what the ledger's releases imply; a
//! hostile export is refused by what it holds; the largest federations still fit the entry
//! limit.

mod common;

use std::path::Path;

use common::{EPSILON_PER_RELEASE, Federation, names};
use fedledger_ledger::export::export;
use fedledger_ledger::records::{
    self, ContributionEntry, MAX_ENTRY_BYTES, Record, encode_canonical, validate_entry,
};
use fedledger_ledger::verify::{EpsilonAccountant, Run, VerifyOptions, VerifyReport, verify_dir};

fn exported(rounds: u64) -> (tempfile::TempDir, tempfile::TempDir, Federation) {
    let (store, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let fed = Federation::new(3, 2);
    let log = fed.build_log(store.path(), rounds);
    let s = export(&log, out.path()).unwrap();
    assert_eq!(s.entries, fed.entries(rounds));
    (store, out, fed)
}

fn verify(dir: &Path) -> VerifyReport {
    verify_dir(dir, VerifyOptions::default())
}

fn verify_with(dir: &Path, acc: &dyn EpsilonAccountant) -> VerifyReport {
    verify_dir(
        dir,
        VerifyOptions {
            quorum: None,
            accountant: Some(acc),
            rewards: None,
        },
    )
}

/// Epsilon = 0.001 per step, composed by summation (the sample's releases are 100 steps).
struct LinearAccountant;

impl EpsilonAccountant for LinearAccountant {
    fn cumulative_epsilon(&self, _: &str, _: f64, runs: &[Run]) -> Result<f64, String> {
        Ok(runs.iter().map(|d| d.steps as f64 * 0.001).sum())
    }
}

/// An accountant that says every release cost twice as much as recorded.
struct DoubleAccountant;

impl EpsilonAccountant for DoubleAccountant {
    fn cumulative_epsilon(&self, _: &str, _: f64, runs: &[Run]) -> Result<f64, String> {
        Ok(runs.iter().map(|d| d.steps as f64 * 0.002).sum())
    }
}

#[test]
fn a_fresh_export_verifies() {
    let (_s, out, _) = exported(4);
    let r = verify_with(out.path(), &LinearAccountant);
    assert!(r.ok(), "{r}");
    let text = r.to_string();
    // 4 rounds of 3 participants, one declining in the even rounds: 10 contributions, 2
    // declines, all signed.
    assert!(
        text.contains("signatures: 12 contribution, decline and utility-vector signatures verify"),
        "{text}"
    );
    assert!(text.contains("rounds: 4 rounds"), "{text}");
    assert!(
        text.contains("epsilon: every recorded cumulative epsilon"),
        "{text}"
    );
    let r = verify(out.path());
    assert!(r.ok(), "{r}");
    assert!(
        r.skipped.iter().any(|s| s.contains("epsilon")),
        "without an accountant the recomputation is reported as skipped"
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
    let (_s, out, _) = exported(2);
    let checked = common::tamper_every_file(out.path(), 25, verify);
    assert!(checked > 300, "{checked}");
}

/// Build a log whose round 1 has one contribution changed by `change` (the entry stays valid
/// schema-wise; only the signature can tell), export it and verify it.
fn forged_round(change: fn(&mut ContributionEntry)) -> VerifyReport {
    let fed = Federation::new(3, 0);
    let (store, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let log =
        fedledger_ledger::Log::open(store.path(), common::ORIGIN, fed.log_signer.clone()).unwrap();
    log.append_batch(&fed.genesis()).unwrap();
    let mut batch = fed.round(1, log.size());
    let mut c: ContributionEntry = serde_json::from_slice(&batch[1]).unwrap();
    change(&mut c);
    batch[1] = encode_canonical(&c).unwrap();
    log.append_batch(&batch).unwrap();
    log.checkpoint().unwrap();
    export(&log, out.path()).unwrap();
    verify_with(out.path(), &LinearAccountant)
}

#[test]
fn a_one_field_change_of_what_a_hospital_signed_fails_naming_the_entry() {
    // Entries 0-3 are the genesis; round 1's contributions are entries 4-6: the second is 5.
    let signature_named = |r: &VerifyReport| {
        r.failures
            .iter()
            .any(|f| f.file == "entries/5" && f.what.contains("signature does not verify"))
    };
    type Change = fn(&mut ContributionEntry);
    let cases: [(&str, Change); 6] = [
        ("examples", |c| c.examples += 1),
        ("privacy.epsilon_micro", |c| c.privacy.epsilon_micro += 1),
        ("privacy.steps", |c| c.privacy.steps -= 1),
        ("privacy.noise_multiplier_micro", |c| {
            c.privacy.noise_multiplier_micro += 1
        }),
        ("privacy.accountant", |c| {
            c.privacy.accountant = "pld".into()
        }),
        ("update_sha256", |c| c.update_sha256 = "ff".repeat(32)),
    ];
    for (what, change) in cases {
        let r = forged_round(change);
        assert!(signature_named(&r), "{what}:\n{r}");
    }
    // The coordinator's own figures (value, reward) are not signed by the hospital: a change
    // there is for the valuation recomputation, and here only breaks the pool sum.
    let r = forged_round(|c| c.value_nano += 1);
    assert!(r.ok(), "{r}");
    let r = forged_round(|c| c.reward += 1);
    assert!(!signature_named(&r) && names(&r, "entries/7"), "{r}");
}

#[test]
fn epsilon_figures_are_checked_against_what_the_ledger_implies() {
    let (_s, out, _) = exported(3);
    // Recorded figures below what the releases imply are under-reported.
    let r = verify_with(out.path(), &DoubleAccountant);
    assert!(
        r.failures.iter().any(|f| f.what.contains("is below")),
        "{r}"
    );
    // A hospital that spent on an update the coordinator refused records more than the
    // ledger's releases imply: that passes.
    let fed = Federation::new(2, 0);
    let (store, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let log =
        fedledger_ledger::Log::open(store.path(), common::ORIGIN, fed.log_signer.clone()).unwrap();
    log.append_batch(&fed.genesis()).unwrap();
    log.append_batch(&fed.round(1, log.size())).unwrap();
    let first = log.size();
    let mut batch = fed.round(2, first);
    // Round 2: participant 0 had one extra, refused release before this one.
    let mut c: ContributionEntry = serde_json::from_slice(&batch[0]).unwrap();
    let spent = 3.0 * EPSILON_PER_RELEASE;
    c = resigned(&fed, 0, c, |c| {
        c.privacy.epsilon_micro = records::micro_up(spent);
    });
    batch[0] = encode_canonical(&c).unwrap();
    log.append_batch(&batch).unwrap();
    // Round 3: back to the honest sequence (recorded figures carry the extra release on).
    let mut batch = fed.round(3, log.size());
    let mut c: ContributionEntry = serde_json::from_slice(&batch[0]).unwrap();
    c = resigned(&fed, 0, c, |c| {
        c.privacy.epsilon_micro = records::micro_up(spent + EPSILON_PER_RELEASE);
    });
    batch[0] = encode_canonical(&c).unwrap();
    log.append_batch(&batch).unwrap();
    log.checkpoint().unwrap();
    export(&log, out.path()).unwrap();
    let r = verify_with(out.path(), &LinearAccountant);
    assert!(r.ok(), "an honest hospital with a refused release:\n{r}");

    // A recorded cumulative epsilon that goes down fails, naming the entry.
    let (store, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let log =
        fedledger_ledger::Log::open(store.path(), common::ORIGIN, fed.log_signer.clone()).unwrap();
    log.append_batch(&fed.genesis()).unwrap();
    let mut batch = fed.round(1, log.size());
    let c: ContributionEntry = serde_json::from_slice(&batch[0]).unwrap();
    let c = resigned(&fed, 0, c, |c| {
        c.privacy.epsilon_micro = records::micro_up(5.0 * EPSILON_PER_RELEASE);
    });
    batch[0] = encode_canonical(&c).unwrap();
    log.append_batch(&batch).unwrap();
    let at = log.size();
    log.append_batch(&fed.round(2, at)).unwrap();
    log.checkpoint().unwrap();
    export(&log, out.path()).unwrap();
    let r = verify_with(out.path(), &LinearAccountant);
    assert!(
        r.failures
            .iter()
            .any(|f| f.file == format!("entries/{at}") && f.what.contains("decreased")),
        "{r}"
    );
}

/// The entry changed by `change` and signed again by participant `i` (an honest hospital's
/// own figures).
fn resigned(
    fed: &Federation,
    i: usize,
    mut c: ContributionEntry,
    change: impl FnOnce(&mut ContributionEntry),
) -> ContributionEntry {
    change(&mut c);
    let sig = fed.participants[i].1.sign(c.signing_message().as_bytes());
    c.signature = fedledger_ledger::note::b64_encode(sig.as_ref());
    c
}

#[test]
fn round_structure_is_checked_across_entries() {
    let fed = Federation::new(3, 0);
    let build = |rounds: &[Vec<Vec<u8>>]| {
        let (store, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let log = fedledger_ledger::Log::open(store.path(), common::ORIGIN, fed.log_signer.clone())
            .unwrap();
        log.append_batch(&fed.genesis()).unwrap();
        for b in rounds {
            log.append_batch(b).unwrap();
        }
        log.checkpoint().unwrap();
        export(&log, out.path()).unwrap();
        (store, out)
    };
    // Round 2 recorded before round 1: not contiguous.
    let g = fed.genesis().len() as u64;
    let r2 = fed.round(2, g);
    let (_s, out) = build(&[r2]);
    let r = verify(out.path());
    assert!(
        r.failures
            .iter()
            .any(|f| f.what.contains("round 1 is being recorded")),
        "{r}"
    );
    // A round's entries without their summary belong to no round.
    let mut r1 = fed.round(1, g);
    r1.pop();
    let (_s, out) = build(&[r1]);
    let r = verify(out.path());
    assert!(
        r.failures
            .iter()
            .any(|f| f.what.contains("belong to no recorded round")),
        "{r}"
    );
}

#[test]
fn an_export_that_claims_more_entries_than_it_holds_is_refused_at_once() {
    let (_s, out, _) = exported(1);
    // Remove the last entry: the signed checkpoint now claims one more than is there.
    let last = Federation::new(3, 2).entries(1) - 1;
    std::fs::remove_file(out.path().join(format!("entries/{last}"))).unwrap();
    let r = verify(out.path());
    assert!(!r.ok());
    assert!(
        r.failures
            .iter()
            .any(|f| f.file == "entries" && f.what.contains("claims")),
        "{r}"
    );
}

#[test]
fn a_thousand_participants_fit_the_entry_limit_and_verify() {
    let fed = Federation::new(1000, 0);
    let (store, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let log = fed.build_log(store.path(), 1);
    let mut largest = 0;
    for i in 0..log.size() {
        let e = log.entry(i).unwrap();
        largest = largest.max(e.len());
        if i == 0 {
            assert!(matches!(
                validate_entry(0, common::ORIGIN, &e).unwrap(),
                Record::Federation(_)
            ));
        }
    }
    assert!(largest < MAX_ENTRY_BYTES, "largest entry {largest} bytes");
    export(&log, out.path()).unwrap();
    let r = verify_with(out.path(), &LinearAccountant);
    assert!(r.ok(), "{r}");
    assert!(
        r.to_string().contains(
            "signatures: 1000 contribution, decline and utility-vector signatures verify"
        ),
        "{r}"
    );
}

/// A round in which no contribution has a positive value pays nothing and records a pool of 0
/// (the valuation's rule); verify accepts that, and refuses a pool of 0 when someone had a
/// positive value, or the genesis pool when nobody could be paid.
#[test]
fn a_round_without_positive_values_records_a_pool_of_zero() {
    let fed = Federation::new(3, 0);
    let g = fed.genesis().len() as u64;
    let with = |value_nano: i64, pool: u64| {
        let entries: Vec<Vec<u8>> = fed
            .round(1, g)
            .into_iter()
            .enumerate()
            .map(
                |(i, bytes)| match validate_entry(g + i as u64, common::ORIGIN, &bytes).unwrap() {
                    Record::Contribution(mut c) => {
                        c.value_nano = value_nano;
                        c.reward = if pool == 0 || c.name != "hospital-0" {
                            0
                        } else {
                            pool
                        };
                        encode_canonical(&c).unwrap()
                    }
                    Record::Round(mut s) => {
                        s.reward_pool = pool;
                        encode_canonical(&s).unwrap()
                    }
                    _ => bytes,
                },
            )
            .collect();
        let (store, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let log = fedledger_ledger::Log::open(store.path(), common::ORIGIN, fed.log_signer.clone())
            .unwrap();
        log.append_batch(&fed.genesis()).unwrap();
        log.append_batch(&entries).unwrap();
        log.checkpoint().unwrap();
        export(&log, out.path()).unwrap();
        verify(out.path())
    };
    let pool_failures = |r: &VerifyReport| {
        r.failures
            .iter()
            .filter(|f| f.what.contains("reward_pool"))
            .count()
    };
    let r = with(-5, 0);
    assert_eq!(pool_failures(&r), 0, "{r}");
    let r = with(-5, 1_000_000);
    assert!(
        r.failures
            .iter()
            .any(|f| f.what.contains("no contribution has a positive value")),
        "{r}"
    );
    let r = with(5, 0);
    assert!(
        r.failures
            .iter()
            .any(|f| f.what.contains("differs from the genesis pool_per_round")),
        "{r}"
    );
}
