//! The valuation acceptance scenario, through the real federation (coordinator, agents, gRPC):
//! eight hospitals on breast cancer (clean 120/60/20, a copy of B, 30% and 100% flipped labels,
//! a zero update, a random update), without DP, exact Shapley values.

use clap::Parser;
use fedledger_examples::run::{Options, run_federation, totals};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_hospitals_are_valued_fairly() {
    let out = tempfile::tempdir().unwrap();
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/valuation-8.toml");
    let opts = Options::parse_from([
        "hospitals",
        "--scenario",
        scenario,
        "--no-dp",
        "--rounds",
        "4",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    let run = run_federation(&opts).await.unwrap();
    assert_eq!(run.outcomes.len(), 4);
    for o in &run.outcomes {
        assert_eq!(o.status.as_str(), "completed", "round {}", o.round);
        assert_eq!(o.contributions.len(), 8, "round {}", o.round);
        let v = o.valuation.as_ref().unwrap();
        assert_eq!(v.estimator, "exact");
        // Efficiency: values sum to U(all) - U(none) (negative validation log-loss).
        let before = o.metrics_before.as_ref().unwrap().log_loss;
        let after = o.metrics.as_ref().unwrap().log_loss;
        let sum: f64 = o.contributions.iter().map(|c| c.value).sum();
        assert!(
            (sum - (before - after)).abs() < 1e-5,
            "round {}: sum of values {sum} vs U(all) - U(none) {}",
            o.round,
            before - after
        );
        let by = |n: &str| o.contributions.iter().find(|c| c.name == n).unwrap();
        // Symmetry: D resends B's update with B's weight.
        assert!(
            (by("B").value - by("D").value).abs() < 1e-9,
            "round {}",
            o.round
        );
        // Null player: a zero update is worth exactly nothing.
        assert_eq!(by("G").value, 0.0);
        assert_eq!(by("G").reward, 0);
        // The copy is flagged and unpaid.
        assert!(
            by("D").flags.iter().any(|f| f == "copy_of:B"),
            "{:?}",
            by("D").flags
        );
        assert_eq!(by("D").reward, 0);
        assert!(by("G").flags.iter().any(|f| f == "free_rider"));
        // Rewards conserve the pool exactly.
        assert_eq!(
            o.contributions.iter().map(|c| c.reward).sum::<u64>(),
            o.reward_pool
        );
    }
    // The settled rule: one settlement at the federation's end (4 rounds, periods of 5), which
    // conserves its pool over the rounds that improved the model; the copy, the zero update and
    // the flipped labels earn nothing; the ledger's settlement recomputes in verify.
    let settlements: Vec<_> = run
        .outcomes
        .iter()
        .filter_map(|o| o.settlement.as_ref())
        .collect();
    assert_eq!(settlements.len(), 1);
    let s = settlements[0];
    assert_eq!((s.first_round, s.last_round), (1, 4));
    let improved = run
        .outcomes
        .iter()
        .filter(|o| {
            let (before, after) = fedledger_coordinator::value::recorded_scores(&run.config, o);
            after > before
        })
        .count() as u64;
    assert_eq!(s.counted_rounds.len() as u64, improved);
    assert_eq!(s.lines.iter().map(|l| l.payout).sum::<u64>(), s.pool);
    for l in &s.lines {
        if ["D", "F", "G"].contains(&l.name.as_str()) {
            assert_eq!(l.payout, 0, "{}", l.name);
        }
    }
    assert!(run.ledger.verify_ok, "{}", run.ledger.verify_text);
    assert!(
        run.ledger
            .verify_text
            .contains("recomputed from the recorded round values"),
        "{}",
        run.ledger.verify_text
    );
    // Replay: every round's aggregate, values and rewards recompute exactly from the inputs the
    // coordinator kept by digest.
    let snapshot = fedledger_coordinator::replay::Snapshot::open(&run.coordinator_state).unwrap();
    let store = &snapshot.store;
    for o in &run.outcomes {
        let report = fedledger_coordinator::replay::replay(&run.config, store, o).unwrap();
        assert!(report.ok(), "round {}: {:?}", o.round, report.differences);
        assert!(
            report
                .checked
                .iter()
                .any(|c| c.starts_with("aggregate hashes to"))
        );
    }
    // The same against the anchored ledger entries, as an auditor would.
    let rounds = fedledger_coordinator::anchor::index_rounds(&snapshot.ledger).unwrap();
    for o in &run.outcomes {
        let (summary, contributions, _) =
            fedledger_coordinator::anchor::recorded_round(&snapshot.ledger, rounds[&o.round])
                .unwrap();
        let against = fedledger_coordinator::replay::Figures::from_record(&summary, &contributions);
        let report =
            fedledger_coordinator::replay::replay_against(&run.config, store, o, &against).unwrap();
        assert!(
            report.ok(),
            "round {} vs ledger: {:?}",
            o.round,
            report.differences
        );
        // A value changed in the ledger alone is caught against the ledger.
        let mut forged = against.clone();
        if let Some(first) = forged.contributions.values_mut().next() {
            first.value_nano += 1;
        }
        let report =
            fedledger_coordinator::replay::replay_against(&run.config, store, o, &forged).unwrap();
        assert_eq!(report.differences.len(), 1, "{:?}", report.differences);
    }
    // And a tampered record is caught.
    let mut forged = run.outcomes[0].clone();
    forged.contributions[0].value_nano += 1;
    let report = fedledger_coordinator::replay::replay(&run.config, store, &forged).unwrap();
    assert_eq!(report.differences.len(), 1, "{:?}", report.differences);
    // The exported ledger verifies, epsilon figures and signatures included.
    assert!(run.ledger.verify_ok, "{}", run.ledger.verify_text);
    let t = |n: &str| totals(&run.outcomes, n).value;
    let (a, b, c, e, f) = (t("A"), t("B"), t("C"), t("E"), t("F"));
    assert!(a > b && b > c, "A {a} > B {b} > C {c}");
    assert!(b > e, "B {b} > E {e}");
    assert!(f < 0.0, "F {f} is negative");
    for other in ["A", "B", "C", "D", "E", "G", "H"] {
        assert!(f < t(other), "F {f} is lowest, below {other} {}", t(other));
    }
}
