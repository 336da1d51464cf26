//! End to end: a coordinator and three participant agents over loopback gRPC, on real data,
//! with the real binaries' `run` functions.

use std::sync::Arc;

use fedledger_coordinator::{
    ConfigFile, Phase,
    config::{DataSection, ParticipantEntry, RoundsSection, StandardisationMode, TrainingSection},
};
use fedledger_examples::{BREAST_CANCER_CSV, split};
use fedledger_model::{Dataset, ModelKind, ModelSpec, Standardiser};
use fedledger_participant::{ParticipantConfig, config::PrivacySection, keys};

struct Fed {
    _dir: tempfile::TempDir,
    coordinator: ConfigFile,
    participants: Vec<ParticipantConfig>,
    test: Dataset,
    validation: Dataset,
}

fn federation(hospitals: usize, rounds: u64, dp: Option<(f64, f64)>) -> Fed {
    let dir = tempfile::tempdir().unwrap();
    let data = Dataset::from_csv_reader(BREAST_CANCER_CSV.as_bytes(), "malignant").unwrap();
    let s = split::stratified(&data, 0.2, 0.15, 11);
    let per = s.pool.len() / hospitals;
    let validation = data.subset(&s.validation);
    let vpath = dir.path().join("validation.csv");
    validation.write_csv(&vpath).unwrap();
    let mut entries = Vec::new();
    let mut participants = Vec::new();
    for h in 0..hospitals {
        let key_path = dir.path().join(format!("h{h}.key"));
        let key = keys::generate_key_file(&key_path).unwrap();
        entries.push(ParticipantEntry {
            name: format!("h{h}"),
            public_key: keys::public_key_hex(&key),
        });
        let csv = dir.path().join(format!("h{h}.csv"));
        data.subset(&s.pool[h * per..(h + 1) * per])
            .write_csv(&csv)
            .unwrap();
        participants.push(ParticipantConfig {
            coordinator: String::new(),
            key: key_path,
            data: csv,
            label_column: None,
            state_dir: dir.path().join(format!("h{h}-state")),
            privacy: PrivacySection {
                epsilon_budget: dp.map_or(1.0, |d| d.0),
                delta: 1e-5,
                require_dp: dp.is_some(),
            },
            reconnect_patience_secs: 20,
        });
    }
    let coordinator = ConfigFile {
        federation: "e2e".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        state_dir: dir.path().join("coordinator"),
        key: None,
        model: ModelSpec {
            kind: ModelKind::Logreg,
            features: 30,
            classes: 2,
            hidden: vec![],
        },
        data: DataSection {
            label_column: "malignant".into(),
            validation: vpath,
            standardisation: StandardisationMode::Reference,
        },
        rounds: RoundsSection {
            total: rounds,
            quorum: hospitals as u32,
            deadline_secs: 120,
        },
        training: TrainingSection {
            local_epochs: 2,
            batch_size: 16,
            learning_rate: 0.1,
            clip_norm: dp.map_or(0.0, |_| 1.0),
            noise_multiplier: dp.map_or(0.0, |d| d.1),
            init_seed: 1,
        },
        aggregation: Default::default(),
        limits: Default::default(),
        valuation: Default::default(),
        privacy: Default::default(),
        ledger: Default::default(),
        participants: entries,
    };
    Fed {
        test: data.subset(&s.test),
        validation,
        _dir: dir,
        coordinator,
        participants,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hospitals_train_a_good_model_over_loopback() {
    let fed = federation(3, 5, None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running =
        fedledger_coordinator::serve(fed.coordinator.clone().validate().unwrap(), Some(listener))
            .await
            .unwrap();
    let url = format!("http://{}", running.addr);
    let agents: Vec<_> = fed
        .participants
        .iter()
        .cloned()
        .map(|mut p| {
            p.coordinator = url.clone();
            tokio::spawn(fedledger_participant::run(p, false))
        })
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running =
        fedledger_coordinator::serve(fed.coordinator.clone().validate().unwrap(), Some(listener))
            .await
            .unwrap();
    let url = format!("http://{}", running.addr);
    let mut reports = Vec::new();
    let agents: Vec<_> = fed
        .participants
        .iter()
        .cloned()
        .map(|mut p| {
            p.coordinator = url.clone();
            tokio::spawn(fedledger_participant::run(p, false))
        })
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
