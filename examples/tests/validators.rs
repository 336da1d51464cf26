//! The README's validators scenario through the real federation (`validators-3.toml`: six
//! hospitals, F with every label flipped, three validators on disjoint holdouts, lab-3 reporting
//! inverted utilities): lab-3 is flagged and paid nothing from the first round on and leaves the
//! consensus equal to the honest validators' median; the honest validators share each round's
//! pool; the ledger verifies (consensus recomputed from the vectors), every hospital's statement
//! verifies offline with the validators' vectors among its rounds' entries, and replay recomputes
//! every round's model from the updates the quality rule kept.

use clap::Parser;
use fedledger_coordinator::replay::{Snapshot, replay};
use fedledger_examples::run::{Options, run_federation};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inverted_validator_is_flagged_unpaid_and_does_not_move_the_consensus() {
    let out = tempfile::tempdir().unwrap();
    let opts = Options::parse_from([
        "hospitals",
        "--scenario",
        concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/validators-3.toml"),
        "--rounds",
        "3",
        "--bootstrap",
        "0",
        "--seed",
        "3",
        "--out",
        out.path().join("run").to_str().unwrap(),
    ]);
    let run = run_federation(&opts).await.unwrap();
    assert!(run.ledger.verify_ok, "{}", run.ledger.verify_text);
    assert!(
        run.ledger.verify_text.contains("consensus recomputed in"),
        "{}",
        run.ledger.verify_text
    );
    for st in &run.statements {
        assert!(st.verify_ok, "{}: {}", st.name, st.verify_text);
    }
    assert_eq!(run.validators.len(), 3);
    let mut judged = 0;
    for o in &run.outcomes {
        let Some(v) = &o.validators else { continue };
        assert!(v.record.fallback.is_none(), "round {}", o.round);
        judged += 1;
        let name = |key: &str| {
            v.vectors
                .iter()
                .find(|m| m.validator == key)
                .map(|m| m.name.clone())
                .unwrap()
        };
        for l in &v.record.lines {
            let flagged = l.distance_milli > v.record.max_distance_milli;
            if name(&l.validator) == "lab-3" {
                assert!(flagged && l.reward == 0, "round {}: {l:?}", o.round);
            } else {
                assert!(!flagged && l.reward == 150, "round {}: {l:?}", o.round);
            }
        }
        // The consensus is the honest validators' median (of two: their mean, rounded down).
        let d = fedledger_valuation::consensus::design(
            v.record.seed,
            o.contributions.len(),
            v.record.exact_max as usize,
            v.record.permutations as usize,
        )
        .unwrap();
        let honest: Vec<&[i64]> = v
            .vectors
            .iter()
            .filter(|m| m.name != "lab-3")
            .map(|m| m.utilities.as_slice())
            .collect();
        let game = fedledger_valuation::consensus::consensus(&d, &honest).unwrap();
        let values = fedledger_valuation::consensus::values(&d, &game).unwrap();
        for (c, want) in o.contributions.iter().zip(&values) {
            assert_eq!(
                c.value_nano,
                fedledger_valuation::value_nano(*want),
                "round {}: {}",
                o.round,
                c.name
            );
        }
    }
    assert!(judged >= 2, "{judged} rounds judged by validators");
    let snapshot = Snapshot::open(&run.coordinator_state).unwrap();
    for o in &run.outcomes {
        let r = replay(&run.config, &snapshot.store, o).unwrap();
        assert!(
            r.differences.is_empty(),
            "round {}: {:?}",
            o.round,
            r.differences
        );
    }
}
