//! Colluding attackers against Multi-Krum, through the real federation: two hospitals send
//! sign-flipped updates scaled to the honest norm; Multi-Krum leaves them out of every round's
//! aggregate, the ledger records them as contributions (their privacy was spent) flagged as
//! excluded, worth exactly nothing and paid nothing, and replay recomputes every round,
//! exclusions and the update histories Multi-Krum compared included, from the recorded inputs
//! alone.

use clap::Parser;
use fedledger_coordinator::replay::{Snapshot, replay};
use fedledger_examples::run::{Options, run_federation};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_krum_leaves_sign_flippers_out_and_they_earn_nothing() {
    let out = tempfile::tempdir().unwrap();
    let scenario = out.path().join("attack.toml");
    let mut text = String::new();
    for i in 0..5 {
        text.push_str(&format!("[[hospital]]\nname = \"H{i}\"\nrows = 60\n\n"));
    }
    for i in 0..2 {
        text.push_str(&format!(
            "[[hospital]]\nname = \"X{i}\"\nrows = 60\nbehaviour = \"sign-flip\"\n\n"
        ));
    }
    std::fs::write(&scenario, text).unwrap();
    let opts = Options::parse_from([
        "hospitals",
        "--scenario",
        scenario.to_str().unwrap(),
        "--strategy",
        "multi-krum",
        "--byzantine",
        "2",
        "--rounds",
        "2",
        "--no-dp",
        "--out",
        out.path().join("run").to_str().unwrap(),
    ]);
    let run = run_federation(&opts).await.unwrap();
    assert_eq!(run.outcomes.len(), 2);
    for o in &run.outcomes {
        assert_eq!(o.aggregator, "multi-krum", "round {}", o.round);
        assert_eq!(o.contributions.len(), 7, "round {}", o.round);
        for c in &o.contributions {
            let excluded = c.flags.iter().any(|f| f == "excluded by multi-krum");
            if c.name.starts_with('X') {
                assert!(
                    excluded,
                    "round {}: {} kept: {:?}",
                    o.round, c.name, c.flags
                );
                assert_eq!((c.value, c.reward), (0.0, 0), "round {}: {c:?}", o.round);
            } else {
                assert!(!excluded, "round {}: honest {} left out", o.round, c.name);
            }
        }
        let paid: u64 = o.contributions.iter().map(|c| c.reward).sum();
        assert_eq!(paid, o.reward_pool, "round {}", o.round);
    }
    // Multi-Krum compared the hospitals' update histories (the default), chained round to round.
    let h1 = run.outcomes[0].history.as_ref().expect("round 1 histories");
    let h2 = run.outcomes[1].history.as_ref().expect("round 2 histories");
    assert!(h1.before.is_empty());
    assert_eq!(h1.after.len(), 7);
    assert_eq!(h2.before, h1.after);
    let snapshot = Snapshot::open(&run.coordinator_state).unwrap();
    for o in &run.outcomes {
        let report = replay(&run.config, &snapshot.store, o).unwrap();
        assert!(report.ok(), "round {}: {:?}", o.round, report.differences);
        assert!(
            report
                .checked
                .iter()
                .any(|c| c.starts_with("aggregate hashes to"))
                && report
                    .checked
                    .iter()
                    .any(|c| c.starts_with("update history of")),
            "round {}: {:?}",
            o.round,
            report.checked
        );
    }
}
