//! What the benchmark examples share: a folder of `n` hospitals that do no training (each
//! sends a zero update, or a small update of its own, so the figures are the system's cost
//! alone) against the coordinator's breast-cancer validation subset, and their agents.

use std::path::{Path, PathBuf};

use fedledger_coordinator::config::ParticipantEntry;
use fedledger_model::Dataset;
use fedledger_participant::{
    AgentReport, ParticipantConfig, RunError, SourceError, UpdateSource, Work, client::Task,
    config::PrivacySection, keys, store::SpendRecord,
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

/// Sends a small update of its own each round, claiming `rows` examples: values uniform in
/// [-0.001, 0.001] drawn from `site` and the round, so no two sites (and no two rounds) send the
/// same bytes. Identical updates let the coordinator skip storing all but the first copy and
/// make every site a null player of the valuation game; these measure the cost of distinct
/// ones, as a real federation's are.
pub struct DistinctSource {
    pub rows: u64,
    pub site: u64,
}

impl UpdateSource for DistinctSource {
    fn work(&mut self, task: &Task, _spent: &[SpendRecord]) -> Result<Work, SourceError> {
        // splitmix64 over (site, round, index): cheap, and the same every run.
        let mix = |mut z: u64| {
            z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let base = mix(self.site) ^ mix(task.header.round.wrapping_mul(0x1_0000_0001));
        let delta = (0..task.params.len() as u64)
            .map(|i| {
                let u = (mix(base ^ i) >> 40) as f32 / (1u64 << 24) as f32;
                (u - 0.5) * 0.002
            })
            .collect();
        Ok(Work::Update {
            delta,
            examples: self.rows,
            spend: None,
        })
    }
}

/// Runs one agent of `cfg` (its `coordinator` set) that answers every round with a small
/// update of its own ([`DistinctSource`], `site` picks it) of 50 claimed rows.
pub fn spawn_distinct_agent(
    cfg: ParticipantConfig,
    site: u64,
) -> tokio::task::JoinHandle<Result<AgentReport, RunError>> {
    tokio::spawn(fedledger_participant::run_with_source(
        cfg,
        false,
        Box::new(DistinctSource { rows: 50, site }),
    ))
}

/// The median of `v` (the upper one of an even count), sorting `v`.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// User + system CPU seconds of process `pid` so far (Linux, `/proc/<pid>/stat`).
pub fn cpu_secs(pid: u32) -> anyhow::Result<f64> {
    use anyhow::Context;
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &s[s.rfind(')').context("stat format")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    // The clock tick is 100 Hz on Linux (USER_HZ).
    Ok(ticks as f64 / 100.0)
}
