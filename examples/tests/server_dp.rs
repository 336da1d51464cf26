//! Participant-level DP at the coordinator (`[aggregation.dp]`): every completed round reports
//! the federation-level epsilon at the configured delta, composed over the rounds so far, in the
//! coordinator's outcome and in `summary.json`.

use clap::Parser;
use fedledger_examples::run::{Options, run_federation, summary};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dp_fedavg_reports_its_federation_level_epsilon_every_round() {
    let out = tempfile::tempdir().unwrap();
    let opts = Options::parse_from([
        "hospitals",
        "--no-dp",
        "--server-dp",
        "2.0",
        "--delta",
        "1e-6",
        "--rounds",
        "3",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    let run = run_federation(&opts).await.unwrap();
    let mut multipliers = Vec::new();
    let mut last = 0.0;
    for o in &run.outcomes {
        assert_eq!(o.aggregator, "dp-fedavg");
        let d = o
            .server_dp
            .as_ref()
            .expect("a DP-FedAvg report every round");
        assert_eq!(d.delta, 1e-6, "the configured delta is the one reported");
        assert!(d.noise_multiplier > 1.99 && d.noise_multiplier <= 2.0);
        multipliers.push(d.noise_multiplier);
        let want =
            fedledger_coordinator::aggregate::federation_epsilon(&multipliers, 1e-6).unwrap();
        assert_eq!(d.epsilon, want, "round {}", o.round);
        assert!(d.epsilon > last, "epsilon grows with the rounds");
        last = d.epsilon;
    }
    // The same figures in summary.json.
    let s = summary(&opts, &run);
    let rounds = s["rounds"].as_array().unwrap();
    for (o, r) in run.outcomes.iter().zip(rounds) {
        let d = o.server_dp.as_ref().unwrap();
        assert_eq!(r["server_dp"]["epsilon"].as_f64(), Some(d.epsilon));
        assert_eq!(r["server_dp"]["delta"].as_f64(), Some(1e-6));
    }
}
