//! Properties of a participant's own DP-SGD plan (`plan.rs`) and of the gate that uses it:
//!
//! * every plan the participant can choose (any batch size and step count within the bounds,
//!   not only the one it prefers), followed round after round as planned, keeps its spend within
//!   its budget under the accountant in use, every round's gate accepts it, and the planned run
//!   is the one accounted;
//! * the plan, and the spend a trainer reports, depend on the row count, never on the values of
//!   the data.

use fedledger_ledger::records::PrivacyObject;
use fedledger_model::DpSgdConfig;
use fedledger_participant::{
    LocalTrainer, UpdateSource, Work,
    client::Task,
    config::PrivacySection,
    plan::{PlanBounds, PlanInputs, Planner, Shape, choose_shape, plan_round},
    store::SpendRecord,
};
use fedledger_privacy::{AccountantKind, PoissonGaussian, accountant::epsilon_of_history};
use fedledger_proto as pb;
use proptest::prelude::*;

fn inputs(
    rows: usize,
    budget: f64,
    bounds: PlanBounds,
    accountant: AccountantKind,
) -> PlanInputs<'static> {
    PlanInputs {
        rows,
        num_params: 650,
        clip_norm: 1.0,
        round: 1,
        bounds,
        history: &[],
        epsilon_budget: budget,
        delta: 1e-5,
        accountant,
    }
}

/// Follows `shape` for every planned round, as the participant would (each round's plan sees
/// what the earlier ones spent), checking each round's gate and the plan's own figures.
fn follow(p: &PlanInputs<'_>, shape: Shape) -> Result<(), TestCaseError> {
    let mut history: Vec<PoissonGaussian> = Vec::new();
    for round in 1..=p.bounds.rounds {
        let this = PlanInputs {
            round,
            history: &history,
            ..p.clone()
        };
        let Some(plan) = plan_round(&this, shape).unwrap() else {
            // Only a budget too small for any noise level plans nothing, and then from the start.
            prop_assert!(
                history.is_empty(),
                "round {round} planned nothing after others"
            );
            return Ok(());
        };
        prop_assert_eq!(plan.rounds_left, p.bounds.rounds - round + 1);
        prop_assert!(plan.accounted_noise_multiplier <= plan.noise_multiplier);
        prop_assert!(plan.accounted_noise_multiplier > 0.0);
        // The run accounted is exactly the one a trainer with this batch and these steps runs,
        // its sampling rate rounded up as the ledger records it.
        let (q, _) = DpSgdConfig::schedule(p.rows, plan.batch_size, 1);
        prop_assert_eq!(plan.sampling_rate, q);
        prop_assert_eq!(
            plan.run().sampling_rate,
            PrivacyObject::recorded_sampling_rate(q)
        );
        prop_assert_eq!(plan.run().steps, plan.steps);
        // The gate: every spend so far plus this round, within the budget.
        history.push(plan.run());
        let eps = epsilon_of_history(p.accountant, &history, p.delta)
            .unwrap()
            .epsilon;
        prop_assert!(
            eps <= p.epsilon_budget,
            "round {round}: epsilon {eps} over budget {} ({plan:?})",
            p.epsilon_budget
        );
    }
    // After the planned rounds, nothing more.
    let after = PlanInputs {
        round: p.bounds.rounds + 1,
        history: &history,
        ..p.clone()
    };
    prop_assert_eq!(plan_round(&after, shape).unwrap(), None);
    Ok(())
}

fn bounds() -> impl Strategy<Value = PlanBounds> {
    (1u64..5, 1u32..40, 0u32..200, 1u32..6, 0u32..12).prop_map(|(rounds, b0, db, t0, dt)| {
        PlanBounds {
            rounds,
            min_batch_size: b0,
            max_batch_size: b0 + db,
            min_steps: t0,
            max_steps: t0 + dt,
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Any shape within the bounds (the participant may choose any of them), followed as
    /// planned under RDP, stays within the budget round after round.
    #[test]
    fn every_plan_within_the_bounds_keeps_the_spend_within_the_budget(
        rows in 1usize..600,
        budget in 0.3f64..12.0,
        b in bounds(),
        pick_batch in 0.0f64..1.0,
        pick_steps in 0.0f64..1.0,
        dp_accounting in any::<bool>(),
    ) {
        let accountant = if dp_accounting {
            AccountantKind::RdpDpAccounting
        } else {
            AccountantKind::Rdp
        };
        let lo = (b.min_batch_size as usize).min(rows);
        let hi = (b.max_batch_size as usize).min(rows).max(lo);
        let batch = lo + ((hi - lo) as f64 * pick_batch) as usize;
        let steps = b.min_steps + (f64::from(b.max_steps - b.min_steps) * pick_steps) as u32;
        let (q, _) = DpSgdConfig::schedule(rows, batch, 1);
        let shape = Shape { batch_size: batch, sampling_rate: q, steps: u64::from(steps) };
        follow(&inputs(rows, budget, b, accountant), shape)?;
    }

    /// The shape the participant prefers is within the bounds, and followed as planned fits.
    #[test]
    fn the_chosen_plan_is_within_the_bounds_and_fits(
        rows in 1usize..600,
        budget in 0.3f64..12.0,
        b in bounds(),
    ) {
        let p = inputs(rows, budget, b, AccountantKind::Rdp);
        if let Some(shape) = choose_shape(&p).unwrap() {
            prop_assert!(shape.batch_size >= (b.min_batch_size as usize).min(rows));
            prop_assert!(shape.batch_size <= (b.max_batch_size as usize).min(rows));
            prop_assert!(shape.steps >= u64::from(b.min_steps));
            prop_assert!(shape.steps <= u64::from(b.max_steps));
            follow(&p, shape)?;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    /// The same under the PLD accountant for full batches (its closed form for the plain
    /// Gaussian mechanism; the subsampled case is below, once: it is slow in debug builds).
    #[test]
    fn every_full_batch_plan_keeps_the_spend_within_the_budget_under_pld(
        rows in 1usize..600,
        budget in 0.3f64..12.0,
        b in bounds(),
        pick_steps in 0.0f64..1.0,
    ) {
        let steps = b.min_steps + (f64::from(b.max_steps - b.min_steps) * pick_steps) as u32;
        let shape = Shape { batch_size: rows, sampling_rate: 1.0, steps: u64::from(steps) };
        follow(&inputs(rows, budget, b, AccountantKind::Pld), shape)?;
    }
}

#[test]
fn a_subsampled_plan_keeps_the_spend_within_the_budget_under_pld() {
    let b = PlanBounds {
        rounds: 2,
        min_batch_size: 16,
        max_batch_size: 16,
        min_steps: 2,
        max_steps: 2,
    };
    let (q, _) = DpSgdConfig::schedule(64, 16, 1);
    let shape = Shape {
        batch_size: 16,
        sampling_rate: q,
        steps: 2,
    };
    follow(&inputs(64, 1.0, b, AccountantKind::Pld), shape).unwrap();
}

/// A CSV of `rows` rows with values drawn from `seed` (three features, binary label).
fn csv(rows: usize, seed: u64) -> String {
    let mut s = String::from("a,b,c,y\n");
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((x >> 33) as f64 / (1u64 << 31) as f64) * 20.0 - 10.0
    };
    for i in 0..rows {
        s.push_str(&format!(
            "{:.4},{:.4},{:.4},{}\n",
            next(),
            next(),
            next(),
            i % 2
        ));
    }
    s
}

fn task(round: u64, planning: Option<pb::DpPlanning>) -> Task {
    Task {
        header: pb::TaskHeader {
            state: pb::TaskState::Train as i32,
            federation: "f".into(),
            round,
            model: Some(pb::ModelSpec {
                kind: "logreg".into(),
                features: 3,
                classes: 2,
                hidden: vec![],
            }),
            label_column: "y".into(),
            feature_names: vec!["a".into(), "b".into(), "c".into()],
            hyper: Some(pb::HyperParameters {
                local_epochs: 1,
                batch_size: 8,
                learning_rate: 0.1,
                clip_norm: 1.0,
                noise_multiplier: 1.5,
            }),
            num_params: 4,
            total_rounds: 3,
            planning,
            ..Default::default()
        },
        params: vec![0.0; 4],
    }
}

/// What a trainer on `data` answers in each of three rounds: the spend it reports, or why it
/// declines.
fn spends_of(
    data: &str,
    planning: Option<pb::DpPlanning>,
) -> Vec<Result<fedledger_privacy::PrivacySpend, String>> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.csv");
    std::fs::write(&path, data).unwrap();
    let privacy = PrivacySection {
        epsilon_budget: 3.0,
        ..PrivacySection::default()
    };
    let mut trainer = LocalTrainer::new(path, None, privacy);
    let mut spent: Vec<SpendRecord> = Vec::new();
    let mut out = Vec::new();
    for round in 1..=3 {
        match trainer.work(&task(round, planning), &spent).unwrap() {
            Work::Update {
                spend: Some(spend), ..
            } => {
                spent.push(SpendRecord {
                    federation: "f".into(),
                    round,
                    spend: spend.clone(),
                });
                out.push(Ok(spend));
            }
            Work::Decline(reason) => out.push(Err(reason)),
            other => panic!("round {round}: expected a private update or a decline, got {other:?}"),
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    /// Two hospitals with the same row count and different data plan and report the same
    /// spends, round after round, whether they plan for themselves or follow the task.
    #[test]
    fn the_plan_does_not_depend_on_the_data_values(
        rows in 5usize..120,
        seed_a in any::<u64>(),
        seed_b in any::<u64>(),
        max_batch in 8u32..200,
    ) {
        let planning = pb::DpPlanning {
            planned_rounds: 3,
            min_batch_size: 4,
            max_batch_size: max_batch,
            min_steps: 1,
            max_steps: 6,
        };
        let (a, b) = (csv(rows, seed_a), csv(rows, seed_b));
        let planned = spends_of(&a, Some(planning));
        prop_assert!(planned.iter().all(Result::is_ok), "{planned:?}");
        prop_assert_eq!(planned, spends_of(&b, Some(planning)));
        prop_assert_eq!(spends_of(&a, None), spends_of(&b, None));
    }
}

#[test]
fn a_planner_remembers_its_shape_only_while_its_inputs_stay_the_same() {
    let b = PlanBounds {
        rounds: 4,
        min_batch_size: 8,
        max_batch_size: 64,
        min_steps: 1,
        max_steps: 4,
    };
    let mut planner = Planner::default();
    let p = inputs(100, 2.0, b, AccountantKind::Rdp);
    let first = planner.plan(&p).unwrap().unwrap();
    assert_eq!(
        planner.plan(&p).unwrap(),
        fedledger_participant::plan::plan_dp_sgd(&p).unwrap()
    );
    // More rows: a new shape (the batch follows the rows up to the bound).
    let more = planner
        .plan(&inputs(50, 2.0, b, AccountantKind::Rdp))
        .unwrap()
        .unwrap();
    assert_eq!((first.batch_size, more.batch_size), (64, 50));
}
