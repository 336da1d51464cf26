//! End to end: a coordinator and three participant agents over loopback gRPC, on real data,
//! with the real binaries' `run` functions.

mod common;

use std::sync::Arc;

use common::{federation, serve};
use fedledger_coordinator::Phase;
use fedledger_model::Standardiser;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hospitals_train_a_good_model_over_loopback() {
    let fed = federation(3, 5, None);
    let (running, cfgs) = serve(&fed).await;
    let agents: Vec<_> = cfgs
        .iter()
        .cloned()
        .map(|p| tokio::spawn(fedledger_participant::run(p, false)))
        .collect();
    for a in agents {
        let report = a.await.unwrap().unwrap();
        assert_eq!(report.rounds_sent, vec![1, 2, 3, 4, 5], "{}", report.name);
        assert!(report.rounds_declined.is_empty());
        assert_eq!(report.final_params.len(), 31);
    }
    running.wait_done().await;
    assert_eq!(running.coordinator.progress().phase, Phase::Done);
    let outcomes = running.coordinator.store().outcomes().unwrap();
    assert_eq!(outcomes.len(), 5);
    for o in &outcomes {
        assert_eq!(o.status.as_str(), "completed");
        assert_eq!(o.contributions.len(), 3);
        assert_ne!(o.model_before, o.model_after);
    }
    let final_params = Arc::clone(&running.coordinator.global());
    running.shutdown().await.unwrap();

    let mut test = fed.test;
    Standardiser::fit(&fed.validation).apply(&mut test).unwrap();
    let m = fedledger_model::evaluate(&fed.coordinator.model, &final_params, &test).unwrap();
    assert!(m.accuracy >= 0.93, "federated test accuracy {}", m.accuracy);
    assert!(m.auc.unwrap() >= 0.97, "AUC {:?}", m.auc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hospital_that_requires_dp_declines_a_non_private_task() {
    let mut fed = federation(2, 1, None);
    fed.participants[1].privacy.require_dp = true;
    fed.coordinator.rounds.quorum = 1;
    let (running, cfgs) = serve(&fed).await;
    let mut reports = Vec::new();
    let agents: Vec<_> = cfgs
        .iter()
        .cloned()
        .map(|p| tokio::spawn(fedledger_participant::run(p, false)))
        .collect();
    for a in agents {
        reports.push(a.await.unwrap().unwrap());
    }
    let o = running.coordinator.outcome(1).unwrap();
    running.shutdown().await.unwrap();
    assert_eq!(o.contributions.len(), 1);
    assert_eq!(o.declined.len(), 1);
    assert_eq!(o.declined[0].name, "h1");
    assert!(
        o.declined[0].reason.contains("requires DP"),
        "{}",
        o.declined[0].reason
    );
    assert_eq!(reports[1].rounds_declined.len(), 1);
}

/// A hospital whose accountant the federation does not record learns it from the task and
/// declines before spending anything; where the federation records it, its updates are accepted
/// and recorded under its own accountant; the genesis entry names the accountants recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_federations_accountants_are_checked_before_any_spend() {
    use fedledger_privacy::AccountantKind;

    // Recorded: rdp and pld only. h1 accounts with rdp-dp-accounting.
    let mut fed = federation(2, 1, Some((8.0, 1.0)));
    fed.coordinator.privacy.accountants = vec![AccountantKind::Rdp, AccountantKind::Pld];
    fed.coordinator.rounds.quorum = 1;
    fed.participants[1].privacy.accountant = AccountantKind::RdpDpAccounting;
    let (running, cfgs) = serve(&fed).await;
    let genesis = running.coordinator.ledger().entry(0).unwrap();
    let genesis = String::from_utf8(genesis).unwrap();
    assert!(
        genesis.contains("\"accountants\":[\"rdp\",\"pld\"]"),
        "{genesis}"
    );
    let agents: Vec<_> = cfgs
        .iter()
        .cloned()
        .map(|p| tokio::spawn(fedledger_participant::run(p, false)))
        .collect();
    let mut reports = Vec::new();
    for a in agents {
        reports.push(a.await.unwrap().unwrap());
    }
    let o = running.coordinator.outcome(1).unwrap();
    running.shutdown().await.unwrap();
    assert_eq!(o.declined.len(), 1, "{:?}", o.declined);
    assert_eq!(o.declined[0].name, "h1");
    let reason = &o.declined[0].reason;
    assert!(
        reason.contains("rdp-dp-accounting") && reason.contains("rdp, pld"),
        "{reason}"
    );
    assert_eq!(reports[1].epsilon_spent, 0.0);
    let store = fedledger_participant::store::LocalStore::open(&cfgs[1].state_dir).unwrap();
    assert!(
        store.spends().unwrap().is_empty(),
        "no spend before the decline"
    );
    drop(store);

    // The default federation records all three: the same hospital takes part, and its
    // contribution names its accountant.
    let mut fed = federation(2, 1, Some((8.0, 1.0)));
    fed.participants[1].privacy.accountant = AccountantKind::RdpDpAccounting;
    let (running, cfgs) = serve(&fed).await;
    let agents: Vec<_> = cfgs
        .iter()
        .cloned()
        .map(|p| tokio::spawn(fedledger_participant::run(p, false)))
        .collect();
    for a in agents {
        let r = a.await.unwrap().unwrap();
        assert_eq!(r.rounds_sent, vec![1], "{}", r.name);
    }
    let o = running.coordinator.outcome(1).unwrap();
    let at = running.coordinator.anchored(1).expect("round 1 anchored");
    let entries = running
        .coordinator
        .ledger()
        .entries(at.entries.first, at.entries.first + at.entries.count)
        .unwrap();
    running.shutdown().await.unwrap();
    assert!(
        entries.iter().any(|e| {
            let e = String::from_utf8_lossy(e);
            e.contains("\"name\":\"h1\"") && e.contains("\"accountant\":\"rdp-dp-accounting\"")
        }),
        "h1's contribution entry names its accountant"
    );
    let h1 = o.contributions.iter().find(|c| c.name == "h1").unwrap();
    assert_eq!(
        h1.privacy.accountant,
        AccountantKind::RdpDpAccounting.name()
    );
}
