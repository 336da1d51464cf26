//! What the benchmark examples share: a folder of `n` hospitals that do no training (each
//! sends a zero update, so the figures are the system's cost alone) against the coordinator's
//! breast-cancer validation subset, and their agents.

use std::path::{Path, PathBuf};

use fedledger_coordinator::config::ParticipantEntry;
use fedledger_model::Dataset;
use fedledger_participant::{
    AgentReport, ParticipantConfig, RunError, config::PrivacySection, keys,
};

use crate::{BREAST_CANCER_CSV, sources::ZeroSource};

/// `n` enrolled hospitals under one folder, with the validation file the coordinator reads.
pub struct ZeroSites {
    /// The coordinator's validation file (143 rows of breast cancer, label `malignant`).
    pub validation: PathBuf,
    /// What the coordinator enrols (`h0` .. `h{n-1}`).
    pub entries: Vec<ParticipantEntry>,
    /// Each hospital's configuration, `coordinator` left empty until the address is known.
    pub configs: Vec<ParticipantConfig>,
}

/// Keys, state folders and configurations of `n` hospitals under `dir`; each agent waits up to
/// `patience_secs` for an unreachable coordinator.
pub fn zero_sites(dir: &Path, n: usize, patience_secs: u64) -> anyhow::Result<ZeroSites> {
    let data = Dataset::from_csv_reader(BREAST_CANCER_CSV.as_bytes(), "malignant")?;
    let validation = dir.join("validation.csv");
    data.subset(&(0..143).collect::<Vec<_>>())
        .write_csv(&validation)?;
    let mut entries = Vec::with_capacity(n);
    let mut configs = Vec::with_capacity(n);
    for i in 0..n {
        let key = dir.join(format!("k{i}.key"));
        let k = keys::generate_key_file(&key)?;
        entries.push(ParticipantEntry {
            name: format!("h{i}"),
            public_key: keys::public_key_hex(&k),
            public_key_file: None,
        });
        configs.push(ParticipantConfig {
            coordinator: String::new(),
            key,
            data: Some(validation.clone()),
            validator: None,
            label_column: None,
            state_dir: dir.join(format!("h{i}")),
            privacy: PrivacySection {
                require_dp: false,
                ..Default::default()
            },
            reconnect_patience_secs: patience_secs,
            ledger: None,
            tls: None,
            allow_plaintext: false,
            proxy: None,
        });
    }
    Ok(ZeroSites {
        validation,
        entries,
        configs,
    })
}

/// Runs one agent of `cfg` (its `coordinator` set) that answers every round with a zero
/// update of 50 claimed rows.
pub fn spawn_zero_agent(
    cfg: ParticipantConfig,
) -> tokio::task::JoinHandle<Result<AgentReport, RunError>> {
    tokio::spawn(fedledger_participant::run_with_source(
        cfg,
        false,
        Box::new(ZeroSource { rows: 50 }),
    ))
}
