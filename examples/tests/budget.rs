//! A hospital's privacy budget holds across a kill and restart of its agent: the spend of every
//! update is on disk before the update leaves, the restarted agent accounts for it, and once the
//! next round would exceed the budget the hospital declines (and the coordinator records it).

mod common;

use common::{federation, serve};
use fedledger_model::DpSgdConfig;
use fedledger_participant::{dp::cumulative_epsilon, store::LocalStore};
use fedledger_privacy::accountant::{AccountantKind, PoissonGaussian, epsilon_of_history};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_is_never_exceeded_across_a_restart() {
    const ROUNDS: u64 = 5;
    let sigma = 1.0;
    let mut fed = federation(3, ROUNDS, Some((1.0, sigma)));
    // Every round costs the same; allow two and a half rounds' worth of budget.
    let n =
        fedledger_model::Dataset::load_csv(fed.participants[0].data.as_ref().unwrap(), "malignant")
            .unwrap()
            .len();
    let (q, steps) = DpSgdConfig::schedule(n, 16, 2);
    let eps = |rounds: usize| {
        let run = PoissonGaussian {
            noise_multiplier: sigma * (1.0 - 1e-6),
            sampling_rate: q,
            steps,
        };
        epsilon_of_history(AccountantKind::Rdp, &vec![run; rounds], 1e-5)
            .unwrap()
            .epsilon
    };
    let budget = 0.5 * (eps(2) + eps(3));
    for p in &mut fed.participants {
        p.privacy.epsilon_budget = budget;
    }
    fed.coordinator.rounds.quorum = 1;
    let (running, cfgs) = serve(&fed).await;

    // h0 runs until round 1 is closed, then is killed (its task aborted mid-flight).
    let victim = tokio::spawn(fedledger_participant::run(cfgs[0].clone(), false));
    let others: Vec<_> = cfgs[1..]
        .iter()
        .cloned()
        .map(|c| tokio::spawn(fedledger_participant::run(c, false)))
        .collect();
    let mut progress = running.coordinator.subscribe();
    progress.wait_for(|p| p.completed >= 1).await.unwrap();
    victim.abort();
    let _ = victim.await;
    // What h0 spent before the kill is on its disk.
    let spent_before = {
        let store = LocalStore::open(&cfgs[0].state_dir).unwrap();
        store.spends().unwrap().len()
    };
    assert!(
        spent_before >= 1,
        "the round-1 spend was persisted before sending"
    );

    // Restart h0 with the same state directory.
    let report = fedledger_participant::run(cfgs[0].clone(), false)
        .await
        .unwrap();
    for o in others {
        o.await.unwrap().unwrap();
    }
    running.wait_done().await;
    let outcomes = running.coordinator.store().outcomes().unwrap();
    running.shutdown().await.unwrap();

    let store = LocalStore::open(&cfgs[0].state_dir).unwrap();
    let spends = store.spends().unwrap();
    let total = cumulative_epsilon(&spends, None, 1e-5, AccountantKind::Rdp).unwrap();
    assert!(total <= budget, "spent {total} > budget {budget}");
    assert!(
        spends.len() <= 2,
        "at most two rounds fit the budget, recorded {}",
        spends.len()
    );
    // After the restart it declined rather than overspend, and the coordinator recorded it.
    assert!(!report.rounds_declined.is_empty());
    assert!(
        report
            .rounds_declined
            .iter()
            .all(|(_, r)| r.contains("privacy budget exhausted"))
    );
    let declined_rounds: Vec<u64> = outcomes
        .iter()
        .filter(|o| o.declined.iter().any(|d| d.name == "h0"))
        .map(|o| o.round)
        .collect();
    assert_eq!(declined_rounds.len(), report.rounds_declined.len());
    // Every update h0 sent reported a cumulative epsilon within the budget.
    for o in &outcomes {
        for c in o.contributions.iter().filter(|c| c.name == "h0") {
            let p = &c.privacy;
            assert!(p.is_private(), "DP spend reported");
            // Recorded in micro-units rounded up: within one unit of a figure under the budget.
            assert!(p.epsilon() <= budget + 1e-6, "{} > {budget}", p.epsilon());
            assert!(p.epsilon_round_micro > 0);
        }
    }
}
