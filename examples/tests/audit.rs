//! Audit bundles of the hospitals example's rounds: exported from the coordinator's state, copied
//! to a fresh directory, the state deleted, and replayed bit for bit from the bundle alone; one
//! changed byte of one update fails the replay naming the round and the participant; without the
//! validation file only the aggregate is checked, and the replay says so.

use clap::Parser;
use fedledger_coordinator::audit::{export_audit, replay_bundle};
use fedledger_coordinator::replay::{ReplaySettings, Snapshot};
use fedledger_examples::run::{Options, run_federation};

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_of_the_hospitals_rounds_replays_elsewhere_and_catches_a_changed_byte() {
    let out = tempfile::tempdir().unwrap();
    let opts = Options::parse_from([
        "hospitals",
        "--rounds",
        "2",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    let run = run_federation(&opts).await.unwrap();
    assert_eq!(run.outcomes.len(), 2);
    let bundles = tempfile::tempdir().unwrap();
    let (full, lean) = (bundles.path().join("full"), bundles.path().join("lean"));
    {
        let snapshot = Snapshot::open(&run.coordinator_state).unwrap();
        let settings = ReplaySettings::from(&run.config);
        let done = export_audit(settings.clone(), &snapshot, 1..=2, &full, true).unwrap();
        assert_eq!(done.rounds, 2);
        // Model before each round, five updates each, the validation file.
        assert_eq!(done.inputs, 2 + 2 * 5 + 1);
        export_audit(settings, &snapshot, 1..=2, &lean, false).unwrap();
        // A round that has not run cannot be exported.
        assert!(
            export_audit(
                ReplaySettings::from(&run.config),
                &snapshot,
                2..=3,
                &bundles.path().join("x"),
                false
            )
            .is_err()
        );
    }
    // Another machine: a fresh directory, and no coordinator state anywhere.
    std::fs::remove_dir_all(&run.coordinator_state).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let fresh = elsewhere.path().join("bundle");
    copy_dir(&full, &fresh);
    let report = replay_bundle(&fresh).unwrap();
    assert!(
        report.ledger_failures.is_empty(),
        "{:?}",
        report.ledger_failures
    );
    assert!(report.ok(), "{report:?}");
    for r in &report.rounds {
        assert!(
            r.checked
                .iter()
                .any(|c| c.starts_with("aggregate hashes to")),
            "round {}: {r:?}",
            r.round
        );
        assert_eq!(
            r.checked
                .iter()
                .filter(|c| c.starts_with("value_nano of"))
                .count(),
            5,
            "round {}: every value recomputed: {r:?}",
            r.round
        );
        assert_eq!(
            r.checked
                .iter()
                .filter(|c| c.starts_with("reward of"))
                .count(),
            5
        );
    }

    // Without the validation file: the aggregate only, and it says so.
    let report = replay_bundle(&lean).unwrap();
    assert!(report.ok(), "{report:?}");
    for r in &report.rounds {
        assert!(
            r.checked
                .iter()
                .any(|c| c.starts_with("aggregate hashes to"))
        );
        assert!(!r.checked.iter().any(|c| c.starts_with("value_nano")));
        assert!(
            r.skipped
                .iter()
                .any(|s| s.contains("only the aggregate is checked")),
            "{r:?}"
        );
    }

    // One changed byte of one update of round 2.
    let victim = &run.outcomes[1].contributions[2];
    let path = fresh.join("inputs").join(&victim.update_sha256);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[17] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    let err = replay_bundle(&fresh).unwrap_err().to_string();
    assert!(err.contains("round 2"), "{err}");
    assert!(
        err.contains(&format!("participant {}", victim.name)),
        "{err}"
    );
}

/// A bundle of Multi-Krum rounds carries the update histories each round started from: from
/// round 1 every history is chained and recomputed; a bundle starting later takes its first
/// histories as recorded; a round whose record swaps two hospitals' histories is caught.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_of_multi_krum_rounds_replays_its_update_histories() {
    let out = tempfile::tempdir().unwrap();
    let opts = Options::parse_from([
        "hospitals",
        "--rounds",
        "3",
        "--strategy",
        "multi-krum",
        "--no-dp",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    let run = run_federation(&opts).await.unwrap();
    assert_eq!(run.outcomes.len(), 3);
    let bundles = tempfile::tempdir().unwrap();
    let (whole, late) = (bundles.path().join("whole"), bundles.path().join("late"));
    {
        let snapshot = Snapshot::open(&run.coordinator_state).unwrap();
        let settings = ReplaySettings::from(&run.config);
        let done = export_audit(settings.clone(), &snapshot, 1..=3, &whole, false).unwrap();
        // Models before each round, five updates each, and the five histories round 3 started
        // from (round 2's are round 1's updates: a first update is its hospital's history).
        assert_eq!(done.inputs, 3 + 3 * 5 + 5);
        export_audit(settings, &snapshot, 2..=3, &late, false).unwrap();
    }
    for dir in [&whole, &late] {
        let report = replay_bundle(dir).unwrap();
        assert!(report.ok(), "{report:?}");
        for r in &report.rounds {
            assert_eq!(
                r.checked
                    .iter()
                    .filter(|c| c.starts_with("update history of"))
                    .count(),
                5,
                "round {}: {r:?}",
                r.round
            );
        }
    }
    // Round 3's record with two hospitals' histories before it swapped.
    let path = whole.join("rounds").join("3.json");
    let mut round: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let before = round["history"]["before"].as_object_mut().unwrap();
    let keys: Vec<String> = before.keys().take(2).cloned().collect();
    let (a, b) = (before[&keys[0]].clone(), before[&keys[1]].clone());
    before.insert(keys[0].clone(), b);
    before.insert(keys[1].clone(), a);
    std::fs::write(&path, serde_json::to_vec(&round).unwrap()).unwrap();
    let report = replay_bundle(&whole).unwrap();
    assert!(!report.ok());
    let r3 = &report.rounds[2];
    for k in &keys {
        assert!(
            r3.differences
                .iter()
                .any(|d| d.what == format!("round 3: the update history of {k} before the round")),
            "{:?}",
            r3.differences
        );
    }
}
