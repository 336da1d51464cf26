//! Hospitals that plan their own DP-SGD, through the real federation: each plans for its own
//! rows and budget within the task's bounds, every spend stays within the budget and is
//! recomputed by verify from the recorded figures, the coordinator weighs updates inversely to
//! their planned noise, and replay recomputes every round's aggregate and values from the
//! recorded inputs alone.

use clap::Parser;
use fedledger_coordinator::replay::{Snapshot, replay};
use fedledger_examples::run::{Options, run_federation};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hospitals_plan_for_their_own_budgets_and_rounds_replay() {
    let out = tempfile::tempdir().unwrap();
    let opts = Options::parse_from([
        "hospitals",
        "--rounds",
        "3",
        "--epsilon",
        "4",
        "--max-batch-size",
        "64",
        "--max-steps",
        "4",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    let run = run_federation(&opts).await.unwrap();
    assert_eq!(run.outcomes.len(), 3);
    let rows: std::collections::HashMap<&str, usize> = run
        .hospital_rows
        .iter()
        .map(|(name, n, _)| (name.as_str(), *n))
        .collect();
    for o in &run.outcomes {
        assert_eq!(o.aggregator, "fedavg-inverse-noise", "round {}", o.round);
        assert_eq!(o.contributions.len(), 5, "round {}", o.round);
        for c in &o.contributions {
            let p = &c.privacy;
            assert!(p.is_private(), "{}: a DP spend", c.name);
            // Each hospital plans the largest batch and the most steps the bounds allow (the
            // sampling rate as recorded: rounded up to the nano-unit).
            let n = rows[c.name.as_str()];
            assert_eq!(p.steps, 4, "{}", c.name);
            let q = (64.0 / n as f64).min(1.0);
            assert!(
                p.sampling_rate() >= q && p.sampling_rate() - q < 1.01e-9,
                "{}: {} for {q}",
                c.name,
                p.sampling_rate()
            );
            assert!(p.epsilon() <= 4.0, "{}: {p:?}", c.name);
        }
    }
    // The budget is spent over the planned rounds, not more: the last round reaches it.
    for r in &run.reports {
        assert!(
            r.epsilon_spent <= 4.0 && r.epsilon_spent > 3.9,
            "{}: {}",
            r.name,
            r.epsilon_spent
        );
    }
    assert!(
        run.ledger
            .verify_text
            .contains("ok      epsilon: every recorded cumulative epsilon is at least what"),
        "{}",
        run.ledger.verify_text
    );
    let snapshot = Snapshot::open(&run.coordinator_state).unwrap();
    for o in &run.outcomes {
        let report = replay(&run.config, &snapshot.store, o).unwrap();
        assert!(report.ok(), "round {}: {:?}", o.round, report.differences);
        assert!(
            report
                .checked
                .iter()
                .any(|c| c.starts_with("aggregate hashes to")),
            "round {}: {:?} (skipped {:?})",
            o.round,
            report.checked,
            report.skipped
        );
    }
}
