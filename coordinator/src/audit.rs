//! Audit bundles: a coordinator's rounds handed to an auditor, who recomputes them on another
//! machine without the coordinator's state.
//!
//! `export_audit` writes, from a read-only [`Snapshot`]:
//!
//! - `ledger/`: the ledger export `fedledger-ledger verify` checks (entries, proofs,
//!   checkpoints, keys);
//! - `inputs/<sha256>`: the inputs kept by digest, the model each round started from and every
//!   update, and the validation file only when the operator opts in;
//! - `rounds/<r>.json`: the coordinator's record of each round (it gives the arrival order, the
//!   valuation game's player order; everything else is checked against the ledger);
//! - `audit.json`: the federation, the rounds, the settings that shape aggregation and
//!   valuation ([`ReplaySettings`]), whether the validation file is included, and the limits.
//!
//! [`replay_bundle`] checks the ledger export, then recomputes each round from the bundle alone
//! and compares it with the anchored entries. What it cannot check is said in [`LIMITS`] and in
//! each round's report.

use std::{
    collections::BTreeMap,
    ops::RangeInclusive,
    path::{Path, PathBuf},
};

use fedledger_ledger::records::{ContributionEntry, Record, RoundSummary, validate_entry};
use serde::{Deserialize, Serialize};

use crate::{
    error::{CoordinatorError, StoreError},
    replay::{
        BundleInputs, Difference, Figures, ReplayReport, ReplaySettings, Snapshot, replay_from,
    },
    types::RoundOutcome,
};

/// The format named in `audit.json`.
pub const AUDIT_FORMAT: &str = "fedledger.audit/v1";

/// What a replay from a bundle cannot do, printed by both commands and kept in `audit.json`.
pub const LIMITS: [&str; 4] = [
    "without the validation file (export-audit --include-validation) only the aggregate is \
     checked, not the values and rewards",
    "server-side DP noise (DP-FedAvg) is drawn from a secret seed, so a noised round's aggregate \
     cannot be recomputed unless the operator discloses the noise for the audit",
    "rounds whose inputs were pruned by [limits] retain_rounds cannot be exported",
    "the bundle hands every hospital's update to the auditor: exporting them is the operator's \
     decision under the federation's agreement",
];

/// `audit.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AuditManifest {
    pub format: String,
    pub federation: String,
    pub first_round: u64,
    pub last_round: u64,
    pub settings: ReplaySettings,
    pub validation_included: bool,
    pub limits: Vec<String>,
}

/// What `export_audit` wrote.
#[derive(Clone, Debug)]
pub struct AuditExport {
    pub rounds: u64,
    pub inputs: usize,
    pub bytes: u64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CoordinatorError + '_ {
    move |source| {
        CoordinatorError::Store(StoreError::Io {
            path: path.to_owned(),
            source,
        })
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), CoordinatorError> {
    std::fs::write(path, bytes).map_err(io(path))
}

/// Writes the bundle of `rounds` to `out` (which must not exist yet).
pub fn export_audit(
    settings: ReplaySettings,
    snapshot: &Snapshot,
    rounds: RangeInclusive<u64>,
    out: &Path,
    include_validation: bool,
) -> Result<AuditExport, CoordinatorError> {
    if out.exists() {
        return Err(CoordinatorError::Internal(format!(
            "{} exists; the bundle goes to a new directory",
            out.display()
        )));
    }
    let (first, last) = (*rounds.start(), *rounds.end());
    if first == 0 || last < first {
        return Err(CoordinatorError::Internal(format!(
            "rounds {first}..{last}: give A..B with 1 <= A <= B"
        )));
    }
    // Everything is read (and checked) before anything is written.
    let anchored = crate::anchor::index_rounds(&snapshot.ledger)?;
    let mut outcomes = Vec::new();
    let mut inputs: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for r in rounds {
        let o = snapshot
            .store
            .outcome(r)?
            .ok_or_else(|| CoordinatorError::Internal(format!("round {r} has not finished")))?;
        if !anchored.contains_key(&r) {
            return Err(CoordinatorError::Internal(format!(
                "round {r} is not anchored in the ledger yet"
            )));
        }
        let mut need: Vec<(String, String)> =
            vec![(o.model_before.clone(), "the model before it".into())];
        need.extend(
            o.contributions
                .iter()
                .map(|c| (c.update_sha256.clone(), format!("the update of {}", c.name))),
        );
        if let Some(h) = &o.history {
            need.extend(
                h.before
                    .iter()
                    .map(|(k, sha)| (sha.clone(), format!("the update history of {k}"))),
            );
        }
        if include_validation {
            need.push((o.validation_sha256.clone(), "the validation file".into()));
        }
        for (sha, what) in need {
            if inputs.contains_key(&sha) {
                continue;
            }
            let bytes = snapshot.store.get_blob(&sha).map_err(|e| match e {
                StoreError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                    CoordinatorError::Internal(format!(
                        "round {r}: {what} ({sha}) is no longer kept (pruned by [limits] \
                         retain_rounds?); this round cannot be exported"
                    ))
                }
                StoreError::MissingBlob(_) => CoordinatorError::Internal(format!(
                    "round {r}: {what} ({sha}) is no longer kept (pruned by [limits] \
                     retain_rounds?); this round cannot be exported"
                )),
                e => e.into(),
            })?;
            inputs.insert(sha, bytes);
        }
        outcomes.push(o);
    }
    let ledger = out.join("ledger");
    std::fs::create_dir_all(out.join("inputs")).map_err(io(out))?;
    std::fs::create_dir_all(out.join("rounds")).map_err(io(out))?;
    fedledger_ledger::export::export(&snapshot.ledger, &ledger)
        .map_err(|e| CoordinatorError::Ledger(format!("export the ledger: {e}")))?;
    let mut bytes = 0u64;
    for (sha, b) in &inputs {
        write(&out.join("inputs").join(sha), b)?;
        bytes += b.len() as u64;
    }
    for o in &outcomes {
        let json = serde_json::to_vec_pretty(o)
            .map_err(|e| CoordinatorError::Internal(format!("encode round {}: {e}", o.round)))?;
        write(&out.join("rounds").join(format!("{}.json", o.round)), &json)?;
    }
    let manifest = AuditManifest {
        format: AUDIT_FORMAT.into(),
        federation: settings.federation.clone(),
        first_round: first,
        last_round: last,
        settings,
        validation_included: include_validation,
        limits: LIMITS.iter().map(|s| (*s).to_owned()).collect(),
    };
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| CoordinatorError::Internal(format!("encode audit.json: {e}")))?;
    write(&out.join("audit.json"), &json)?;
    Ok(AuditExport {
        rounds: last - first + 1,
        inputs: inputs.len(),
        bytes,
    })
}

/// The replay of a bundle: the ledger export's verification, then one report per round.
#[derive(Debug)]
pub struct BundleReport {
    pub manifest: AuditManifest,
    /// Failures of the ledger export's verification (empty when it verifies).
    pub ledger_failures: Vec<String>,
    pub rounds: Vec<ReplayReport>,
}

impl BundleReport {
    pub fn ok(&self) -> bool {
        self.ledger_failures.is_empty() && self.rounds.iter().all(ReplayReport::ok)
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, CoordinatorError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        CoordinatorError::Store(StoreError::Decode {
            key: path.display().to_string(),
            reason: e.to_string(),
        })
    })
}

/// The anchored summary and contribution entries of each round, from an export's entries.
fn anchored_rounds(
    ledger: &Path,
    origin: &str,
) -> Result<BTreeMap<u64, (RoundSummary, Vec<ContributionEntry>)>, CoordinatorError> {
    let mut rounds = BTreeMap::new();
    let mut pending = Vec::new();
    for i in 0u64.. {
        let path: PathBuf = ledger.join("entries").join(i.to_string());
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(source) => return Err(StoreError::Io { path, source }.into()),
        };
        match validate_entry(i, origin, &bytes)
            .map_err(|e| CoordinatorError::Ledger(e.to_string()))?
        {
            Record::Contribution(c) => pending.push(*c),
            Record::Round(s) => {
                rounds.insert(s.round, (*s, std::mem::take(&mut pending)));
            }
            _ => {}
        }
    }
    Ok(rounds)
}

/// Where round `r`'s recorded histories do not start from the hospitals' previous ones in the
/// bundle (`known`). With the bundle starting at round 1 every history is accounted for, so a
/// history from nowhere is a difference too; otherwise the first ones are taken as recorded.
fn history_chain(
    r: u64,
    from_genesis: bool,
    known: &BTreeMap<String, String>,
    h: &crate::types::HistoryOutcome,
) -> Vec<Difference> {
    let mut out = Vec::new();
    for key in h.after.keys() {
        let before = h.before.get(key);
        let expected = known.get(key);
        let fine = match (before, expected) {
            (Some(b), Some(e)) => b == e,
            (None, None) => true,
            (Some(_), None) => !from_genesis,
            (None, Some(_)) => false,
        };
        if !fine {
            out.push(Difference {
                what: format!("round {r}: the update history of {key} before the round"),
                recorded: expected.cloned().unwrap_or_else(|| "none".into()),
                recomputed: format!(
                    "{} (rounds/{r}.json)",
                    before.map_or("none", String::as_str)
                ),
            });
        }
    }
    out
}

/// Checks the bundle in `dir`: its ledger export verifies (from files alone), and each round,
/// recomputed from `inputs/` with the bundle's settings, matches the anchored entries.
pub fn replay_bundle(dir: &Path) -> Result<BundleReport, CoordinatorError> {
    let manifest: AuditManifest = read_json(&dir.join("audit.json"))?;
    if manifest.format != AUDIT_FORMAT {
        return Err(CoordinatorError::Internal(format!(
            "audit.json: format {:?}, expected {AUDIT_FORMAT:?}",
            manifest.format
        )));
    }
    let ledger = dir.join("ledger");
    let verified = fedledger_ledger::verify::verify_dir(&ledger, Default::default());
    let ledger_failures: Vec<String> = verified
        .failures
        .iter()
        .map(|f| format!("ledger/{}: {}", f.file, f.what))
        .collect();
    let anchored = anchored_rounds(&ledger, &manifest.federation)?;
    let inputs = BundleInputs::new(&dir.join("inputs"));
    let mut rounds = Vec::new();
    // Each hospital's latest update history in the bundle so far: a round's histories must
    // start where the hospital's previous round left them (from round 1, the whole chain).
    let mut histories: BTreeMap<String, String> = BTreeMap::new();
    for r in manifest.first_round..=manifest.last_round {
        let outcome: RoundOutcome = read_json(&dir.join("rounds").join(format!("{r}.json")))?;
        let Some((summary, contributions)) = anchored.get(&r) else {
            return Err(CoordinatorError::Ledger(format!(
                "round {r} is not in the bundle's ledger"
            )));
        };
        let mut checked_outcome = outcome.clone();
        let mut early = Vec::new();
        // What the round started from and how it was valued are the ledger's, not the record's.
        for (what, recorded, claimed) in [
            ("model.before", &summary.model.before, &outcome.model_before),
            (
                "validation.sha256",
                &summary.validation.sha256,
                &outcome.validation_sha256,
            ),
        ] {
            if recorded != claimed {
                early.push(Difference {
                    what: format!("round {r}: {what}"),
                    recorded: recorded.clone(),
                    recomputed: format!("{claimed} (rounds/{r}.json)"),
                });
            }
        }
        if let Some(v) = &mut checked_outcome.valuation {
            v.seed = summary.valuation.seed;
            v.estimator = summary.valuation.estimator.clone();
            v.evaluations = summary.valuation.evaluations;
        }
        if summary.server_dp.is_none() {
            checked_outcome.server_dp = None;
        }
        checked_outcome.model_before = summary.model.before.clone();
        checked_outcome.validation_sha256 = summary.validation.sha256.clone();
        for c in &mut checked_outcome.contributions {
            if let Some(e) = contributions.iter().find(|e| e.participant == c.public_key) {
                c.privacy = e.privacy.clone();
            }
        }
        if let Some(h) = &outcome.history {
            early.extend(history_chain(r, manifest.first_round == 1, &histories, h));
            histories.extend(h.after.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        let against = Figures::from_record(summary, contributions);
        let mut report = replay_from(&manifest.settings, &inputs, &checked_outcome, &against)?;
        report.differences.splice(0..0, early);
        rounds.push(report);
    }
    Ok(BundleReport {
        manifest,
        ledger_failures,
        rounds,
    })
}
