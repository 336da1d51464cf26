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
