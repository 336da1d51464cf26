//! The governed data schema end to end: every task carries it; a hospital whose data lacks a
//! governed feature refuses to take part before any round, naming the feature, while a
//! hospital with every column trains on its data held to the schema.

mod common;

use common::{federation, serve};
use fedledger_coordinator::config::{FeatureSection, SchemaSection};
use fedledger_model::Dataset;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hospital_whose_data_lacks_a_governed_feature_refuses_before_any_round() {
    let mut fed = federation(2, 2, None);
    fed.coordinator.rounds.quorum = 1;
    // The refusing hospital never answers: rounds close at their deadline.
    fed.coordinator.rounds.deadline_secs = 2;
    let names = fed.validation.feature_names.clone();
    fed.coordinator.governance.schema = Some(SchemaSection {
        label: "malignant".into(),
        features: names
            .iter()
            .map(|n| FeatureSection {
                name: n.clone(),
                min: Some(0.0),
                max: Some(5000.0),
            })
            .collect(),
    });
    // Hospital 1's data lacks one governed column.
    let missing = names[3].clone();
    let path = fed.participants[1].data.clone().unwrap();
    let data = Dataset::load_csv(&path, "malignant").unwrap();
    let keep: Vec<usize> = (0..names.len()).filter(|&j| j != 3).collect();
    let d = data.n_features();
    let trimmed = Dataset {
        feature_names: keep.iter().map(|&j| names[j].clone()).collect(),
        label_column: data.label_column.clone(),
        x: data
            .x
            .chunks_exact(d)
            .flat_map(|row| keep.iter().map(move |&j| row[j]))
            .collect(),
        y: data.y.clone(),
        classes: data.classes,
    };
    trimmed.write_csv(&path).unwrap();

    let (running, cfgs) = serve(&fed).await;
    let agents: Vec<_> = cfgs
        .iter()
        .cloned()
        .map(|p| tokio::spawn(fedledger_participant::run(p, false)))
        .collect();
    let mut results = Vec::new();
    for a in agents {
        results.push(a.await.unwrap());
    }
    let ok = results.remove(0).unwrap();
    assert_eq!(ok.rounds_sent, vec![1, 2]);
    let err = results.remove(0).unwrap_err().to_string();
    assert!(err.contains("refusing to take part"), "{err}");
    assert!(err.contains(&format!("{missing:?}")), "{err}");
    running.wait_done().await;
    // Nothing of the refusing hospital in any round: no update, no decline.
    for o in running.coordinator.store().outcomes().unwrap() {
        assert!(o.contributions.iter().all(|c| c.name == "h0"));
        assert!(o.declined.is_empty());
    }
    running.shutdown().await.unwrap();
}
