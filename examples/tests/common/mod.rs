//! Shared set-up of the examples' end-to-end tests.
#![allow(dead_code)]

use fedledger_coordinator::{
    ConfigFile,
    config::{DataSection, ParticipantEntry, RoundsSection, StandardisationMode, TrainingSection},
};
use fedledger_examples::{BREAST_CANCER_CSV, split};
use fedledger_model::{Dataset, ModelKind, ModelSpec};
use fedledger_participant::{ParticipantConfig, config::PrivacySection, keys};

pub struct Fed {
    pub _dir: tempfile::TempDir,
    pub coordinator: ConfigFile,
    pub participants: Vec<ParticipantConfig>,
    pub test: Dataset,
    pub validation: Dataset,
}

/// `hospitals` equal shares of breast cancer; `dp = Some((epsilon_budget, noise_multiplier))`.
pub fn federation(hospitals: usize, rounds: u64, dp: Option<(f64, f64)>) -> Fed {
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
            public_key_file: None,
        });
        let csv = dir.path().join(format!("h{h}.csv"));
        data.subset(&s.pool[h * per..(h + 1) * per])
            .write_csv(&csv)
            .unwrap();
        participants.push(ParticipantConfig {
            coordinator: String::new(),
            key: key_path,
            data: Some(csv),
            validator: None,
            label_column: None,
            state_dir: dir.path().join(format!("h{h}-state")),
            privacy: PrivacySection {
                epsilon_budget: dp.map_or(1.0, |d| d.0),
                delta: 1e-5,
                require_dp: dp.is_some(),
                ..Default::default()
            },
            reconnect_patience_secs: 20,
            ledger: None,
            tls: None,
            allow_plaintext: false,
            proxy: None,
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
            grace_secs: 60,
        },
        training: TrainingSection {
            local_epochs: 2,
            batch_size: 16,
            learning_rate: 0.1,
            clip_norm: dp.map_or(0.0, |_| 1.0),
            noise_multiplier: dp.map_or(0.0, |d| d.1),
            init_seed: 1,
            planning: None,
        },
        aggregation: Default::default(),
        // Every hospital dials from 127.0.0.1 here.
        limits: fedledger_coordinator::config::LimitsSection {
            max_connections_per_ip: hospitals as u32 + 8,
            ..Default::default()
        },
        valuation: Default::default(),
        rewards: Default::default(),
        privacy: Default::default(),
        ledger: Default::default(),
        tls: None,
        metrics: Default::default(),
        governance: Default::default(),
        participants: entries,
        validators: None,
        validator_entries: Vec::new(),
    };
    Fed {
        test: data.subset(&s.test),
        validation,
        _dir: dir,
        coordinator,
        participants,
    }
}

/// Serve the federation's coordinator on a free loopback port and point every participant
/// configuration at it.
pub async fn serve(fed: &Fed) -> (fedledger_coordinator::Running, Vec<ParticipantConfig>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running =
        fedledger_coordinator::serve(fed.coordinator.clone().validate().unwrap(), Some(listener))
            .await
            .unwrap();
    let url = format!("http://{}", running.addr);
    let cfgs = fed
        .participants
        .iter()
        .cloned()
        .map(|mut p| {
            p.coordinator = url.clone();
            p
        })
        .collect();
    (running, cfgs)
}
