//! `fedledger-coordinator report --out DIR`: the federation's HTML page (the `fedledger-report`
//! crate) from what a state directory records: each round's outcome as stored (model quality,
//! values, rewards, recorded epsilons, declines), the settlements, and the ledger's signed
//! checkpoints. Nothing comes from a run's memory, so the page of a finished federation is the
//! same whenever it is written.

use std::path::{Path, PathBuf};

use fedledger_ledger::records::{Record, validate_entry};
use fedledger_report as report;

use crate::{
    anchor, config::FederationConfig, error::CoordinatorError, replay::Snapshot, store::Store,
    types::RoundStatus,
};

/// The page's file name inside the output folder.
pub const REPORT_FILE: &str = "report.html";

/// What the records of `store` and `ledger` say, as the report crate draws it.
pub fn federation(
    cfg: &FederationConfig,
    store: &Store,
    ledger: &fedledger_ledger::Log,
    provenance: String,
) -> Result<report::Federation, CoordinatorError> {
    let lerr = |e: fedledger_ledger::LedgerError| CoordinatorError::Ledger(e.to_string());
    let outcomes = store.outcomes()?;
    let genesis =
        validate_entry(0, ledger.origin(), &ledger.entry(0).map_err(lerr)?).map_err(lerr)?;
    let (reward_rule, epsilon_budget) = match &genesis {
        Record::Federation(f) => (
            f.reward.rule.clone(),
            f.privacy.epsilon_budget.parse::<f64>().ok(),
        ),
        _ => ("(format v1)".to_owned(), None),
    };
    let witnesses = ledger.witness_keys();
    let checkpoints = ledger
        .checkpoints()
        .map_err(lerr)?
        .into_iter()
        .map(|cp| report::Checkpoint {
            size: cp.checkpoint.size,
            root: fedledger_ledger::note::b64_encode(&cp.checkpoint.root),
            cosignatures: cp.note.valid_cosigners(&witnesses).len(),
            note: cp.note.encode(),
        })
        .collect();
    let rounds = outcomes
        .iter()
        .map(|o| report::Round {
            round: o.round,
            completed: o.status == RoundStatus::Completed,
            reason: o.reason.clone(),
            quality: o
                .metrics
                .as_ref()
                .map(|m| {
                    let mut q = vec![
                        ("accuracy".to_owned(), m.accuracy),
                        ("log-loss".to_owned(), m.log_loss),
                    ];
                    if let Some(auc) = m.auc {
                        q.push(("AUC".to_owned(), auc));
                    }
                    q
                })
                .unwrap_or_default(),
            contributions: o
                .contributions
                .iter()
                .map(|c| report::Contribution {
                    hospital: c.name.clone(),
                    examples: c.examples,
                    value: c.value,
                    value_se: (c.value_se > 0.0).then_some(c.value_se),
                    reward: c.reward,
                    epsilon: c.privacy.epsilon_micro as f64 / 1e6,
                    flags: c.flags.clone(),
                })
                .collect(),
            declines: o
                .declined
                .iter()
                .map(|d| report::Decline {
                    hospital: d.name.clone(),
                    reason: d.reason.clone(),
                })
                .collect(),
        })
        .collect();
    let settlements = outcomes
        .iter()
        .filter_map(|o| o.settlement.as_ref())
        .map(|s| report::Settlement {
            period: s.period,
            first_round: s.first_round,
            last_round: s.last_round,
            pool: s.pool,
            lines: s
                .lines
                .iter()
                .map(|l| report::SettlementLine {
                    hospital: l.name.clone(),
                    value: l.value_nano as f64 / 1e9,
                    se: l.se_nano as f64 / 1e9,
                    distinguishable: l.distinguishable,
                    payout: l.payout,
                })
                .collect(),
        })
        .collect();
    let log_key = ledger.log_key().to_string();
    let genesis_sha256 = anchor::genesis_sha256(ledger)?;
    let state = cfg.state_dir.display();
    Ok(report::Federation {
        name: cfg.federation.clone(),
        title: "Federation report".into(),
        provenance,
        rounds_planned: Some(cfg.rounds),
        epsilon_budget,
        reward_rule,
        hospitals: cfg.participants.iter().map(|p| p.name.clone()).collect(),
        rounds,
        settlements,
        checkpoints,
        how_to_verify: vec![
            (
                format!(
                    "fedledger-ledger export --store {state}/ledger --out ledger-export\n\
                     fedledger-ledger verify ledger-export --report auditor-report"
                ),
                "An auditor exports the log (from a stopped coordinator, a copy of its state, or \
                 their own replica) and verifies every entry, signature, reward, settlement and \
                 epsilon; --report writes this kind of page from what was verified."
                    .into(),
            ),
            (
                format!(
                    "fedledger-ledger monitor <the coordinator's tiles URL> --state monitor-state \
                     --log-key '{log_key}' --genesis {genesis_sha256}"
                ),
                "Anyone follows the published log and is alerted if it forks or records an \
                 invalid entry."
                    .into(),
            ),
            (
                "fedledger-coordinator replay --config coordinator.toml --round N".into(),
                "The operator recomputes a round's aggregate, values and rewards from the inputs \
                 kept by digest."
                    .into(),
            ),
            (
                format!(
                    "fedledger-ledger receipts verify statement --log-key '{log_key}' --genesis {genesis_sha256}"
                ),
                "A hospital checks its own receipts (from `fedledger-participant receipts`) \
                 offline against the log key."
                    .into(),
            ),
        ],
        log_key,
        genesis_sha256: Some(genesis_sha256),
        checks: Vec::new(),
    })
}

/// Writes `out/report.html` from the state directory of `cfg` (read through a copy, so the
/// coordinator may be stopped or, at the risk of a page a round behind, running).
pub fn write(cfg: &FederationConfig, out: &Path) -> Result<PathBuf, CoordinatorError> {
    let snapshot = Snapshot::open(&cfg.state_dir)?;
    let provenance = format!(
        "Written by fedledger-coordinator report from the state directory {} (each round's \
         stored outcome and the ledger's signed checkpoints), {} finished rounds.",
        cfg.state_dir.display(),
        snapshot.store.outcomes()?.len()
    );
    let f = federation(cfg, &snapshot.store, &snapshot.ledger, provenance)?;
    write_page(&f, out)
}

/// Renders `f` into `out/report.html` (creating `out`).
pub fn write_page(f: &report::Federation, out: &Path) -> Result<PathBuf, CoordinatorError> {
    let page = report::render(f).map_err(|e| CoordinatorError::Internal(e.to_string()))?;
    let io = |e: std::io::Error| CoordinatorError::Internal(format!("{}: {e}", out.display()));
    std::fs::create_dir_all(out).map_err(io)?;
    let path = out.join(REPORT_FILE);
    std::fs::write(&path, page).map_err(io)?;
    Ok(path)
}
