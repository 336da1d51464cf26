//! Recompute a finished round from the inputs kept by digest (global model, every update, the
//! validation file) and compare with what was recorded: the aggregate's digest, every
//! `value_nano`, every reward. Replay only reads. Its inputs come through [`Inputs`]: a
//! coordinator's [`Store`] (on a [`Snapshot`], a temporary copy of a state directory's metadata
//! and ledger, blobs read in place, so the state directory may be read-only and is never
//! changed), or an audit bundle's `inputs/` folder ([`BundleInputs`]); its settings are
//! [`ReplaySettings`], from the configuration or the bundle.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use fedledger_ledger::records::{ContributionEntry, RoundSummary};

use fedledger_model::{Dataset, Standardiser};

use serde::{Deserialize, Serialize};

use crate::{
    aggregate,
    config::{FederationConfig, StrategyKind, ValuationSection},
    error::{CoordinatorError, StoreError},
    store::Store,
    types::{RoundOutcome, RoundStatus, WeightedUpdate},
    value::Valuer,
};

/// The settings that shape a round's aggregate and values (what an audit bundle carries as
/// `settings` in `audit.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplaySettings {
    pub federation: String,
    pub label_column: String,
    pub model: fedledger_model::ModelSpec,
    pub strategy: StrategyKind,
    pub byzantine: usize,
    /// The weight of earlier updates in the histories the selecting strategy compared (0 in
    /// settings written before it was recorded: updates alone).
    #[serde(default)]
    pub history: f64,
    /// The task's learning rate times its clipping norm (random-effects weights read it; 0 in
    /// settings written before it was recorded).
    #[serde(default)]
    pub noise_step: f64,
    pub valuation: ValuationSection,
    pub rewards: crate::config::RewardsSection,
}

impl From<&FederationConfig> for ReplaySettings {
    fn from(cfg: &FederationConfig) -> Self {
        Self {
            federation: cfg.federation.clone(),
            label_column: cfg.label_column.clone(),
            model: cfg.model.clone(),
            strategy: cfg.strategy,
            byzantine: cfg.byzantine,
            history: cfg.history,
            noise_step: cfg.noise_step(),
            valuation: cfg.valuation.clone(),
            rewards: cfg.rewards.clone(),
        }
    }
}

/// Where a replay reads the inputs kept by digest.
pub trait Inputs {
    /// The flat vector stored under `sha256` (an update or a model), checked against it.
    fn vector(&self, sha256: &str) -> Result<Vec<f32>, CoordinatorError>;
    /// The file stored under `sha256`, checked against it; `None` when it is not among the
    /// inputs (an audit bundle holds the validation file only if the operator opted in).
    fn blob(&self, sha256: &str) -> Result<Option<Vec<u8>>, CoordinatorError>;
}

impl Inputs for Store {
    fn vector(&self, sha256: &str) -> Result<Vec<f32>, CoordinatorError> {
        Ok(self.get_vector(sha256)?)
    }

    fn blob(&self, sha256: &str) -> Result<Option<Vec<u8>>, CoordinatorError> {
        Ok(Some(self.get_blob(sha256)?))
    }
}

/// An audit bundle's `inputs/` folder: files named by the SHA-256 of their bytes.
pub struct BundleInputs {
    dir: PathBuf,
}

impl BundleInputs {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
        }
    }

    fn read(&self, sha256: &str) -> Result<Option<Vec<u8>>, CoordinatorError> {
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(CoordinatorError::Internal(format!(
                "{sha256:?} is not a SHA-256 digest"
            )));
        }
        let path = self.dir.join(sha256);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StoreError::Io { path, source }.into()),
        };
        let actual = fedledger_model::digest::sha256_hex(&bytes);
        if actual != sha256 {
            return Err(StoreError::CorruptBlob {
                sha256: format!("inputs/{sha256}"),
                actual,
            }
            .into());
        }
        Ok(Some(bytes))
    }
}

impl Inputs for BundleInputs {
    fn vector(&self, sha256: &str) -> Result<Vec<f32>, CoordinatorError> {
        let bytes = self
            .read(sha256)?
            .ok_or_else(|| StoreError::MissingBlob(format!("inputs/{sha256}")))?;
        fedledger_model::digest::vector_from_bytes(&bytes).ok_or_else(|| {
            StoreError::Decode {
                key: format!("inputs/{sha256}"),
                reason: "not a vector of little-endian f32".into(),
            }
            .into()
        })
    }

    fn blob(&self, sha256: &str) -> Result<Option<Vec<u8>>, CoordinatorError> {
        self.read(sha256)
    }
}

/// One recomputed figure that differs from the record.
#[derive(Clone, Debug, PartialEq)]
pub struct Difference {
    pub what: String,
    pub recorded: String,
    pub recomputed: String,
}

/// The result of a replay.
#[derive(Clone, Debug)]
pub struct ReplayReport {
    pub round: u64,
    pub checked: Vec<String>,
    pub differences: Vec<Difference>,
    /// Checks that could not be made, with the reason.
    pub skipped: Vec<String>,
}

impl ReplayReport {
    pub fn ok(&self) -> bool {
        self.differences.is_empty()
    }

    /// Compares a recorded figure with the recomputed one: checked (`"{what} = {recorded}"`)
    /// when they are equal, a difference otherwise.
    fn compare(&mut self, what: String, recorded: String, recomputed: String) {
        if recorded == recomputed {
            self.checked.push(format!("{what} = {recorded}"));
        } else {
            self.differences.push(Difference {
                what,
                recorded,
                recomputed,
            });
        }
    }
}

/// A read-only view of a coordinator's state directory: its sled metadata and its ledger copied
/// into a temporary directory (removed on drop), its blobs read where they are.
pub struct Snapshot {
    pub store: Store,
    pub ledger: fedledger_ledger::Log,
    tmp: PathBuf,
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &target)?;
        } else {
            std::fs::copy(e.path(), &target)?;
        }
    }
    Ok(())
}

impl Snapshot {
    /// Copy `state_dir`'s metadata and ledger aside and open the copies. Works on a stopped
    /// coordinator's state (a running one may change it while it is copied).
    pub fn open(state_dir: &Path) -> Result<Self, CoordinatorError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| CoordinatorError::Store(StoreError::Io { path, source })
        };
        for part in ["state.sled", "ledger", "blobs"] {
            if !state_dir.join(part).is_dir() {
                return Err(CoordinatorError::Internal(format!(
                    "{} has no {part}: not a coordinator state directory",
                    state_dir.display()
                )));
            }
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let tmp =
            std::env::temp_dir().join(format!("fedledger-replay-{}-{nanos}", std::process::id()));
        let snapshot = |tmp: &Path| -> Result<(Store, fedledger_ledger::Log), CoordinatorError> {
            copy_dir(&state_dir.join("state.sled"), &tmp.join("state.sled"))
                .map_err(io(&state_dir.join("state.sled")))?;
            copy_dir(&state_dir.join("ledger"), &tmp.join("ledger"))
                .map_err(io(&state_dir.join("ledger")))?;
            let store = Store::open_parts(&tmp.join("state.sled"), state_dir.join("blobs"))?;
            let ledger = fedledger_ledger::Log::open_existing(&tmp.join("ledger"))
                .map_err(|e| CoordinatorError::Ledger(e.to_string()))?;
            Ok((store, ledger))
        };
        match snapshot(&tmp) {
            Ok((store, ledger)) => Ok(Self { store, ledger, tmp }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                Err(e)
            }
        }
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

/// What a record states about a round, to compare a replay with: from the anchored ledger
/// entries ([`Figures::from_record`]) or from the coordinator's own outcome
/// ([`Figures::from_outcome`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Figures {
    pub model_after: String,
    pub reward_pool: u64,
    /// Per contributor, by public key.
    pub contributions: BTreeMap<String, Recorded>,
}

/// One contribution as recorded.
#[derive(Clone, Debug, PartialEq)]
pub struct Recorded {
    pub update_sha256: String,
    pub examples: u64,
    pub value_nano: i64,
    /// The value's standard error (bootstrap over validation rows), nano-units.
    pub value_se_nano: u64,
    pub reward: u64,
}

impl Figures {
    pub fn from_outcome(o: &RoundOutcome) -> Self {
        Self {
            model_after: o.model_after.clone(),
            reward_pool: o.reward_pool,
            contributions: o
                .contributions
                .iter()
                .map(|c| {
                    (
                        c.public_key.clone(),
                        Recorded {
                            update_sha256: c.update_sha256.clone(),
                            examples: c.examples,
                            value_nano: c.value_nano,
                            value_se_nano: c.value_se_nano,
                            reward: c.reward,
                        },
                    )
                })
                .collect(),
        }
    }

    /// From a round's anchored summary and contribution entries.
    pub fn from_record(summary: &RoundSummary, contributions: &[ContributionEntry]) -> Self {
        Self {
            model_after: summary.model.after.clone(),
            reward_pool: summary.reward_pool,
            contributions: contributions
                .iter()
                .map(|c| {
                    (
                        c.participant.clone(),
                        Recorded {
                            update_sha256: c.update_sha256.clone(),
                            examples: c.examples,
                            value_nano: c.value_nano,
                            value_se_nano: c.value_se_nano.unwrap_or(0),
                            reward: c.reward,
                        },
                    )
                })
                .collect(),
        }
    }
}

/// Replay a round from the inputs in `store` and compare with the coordinator's own outcome.
/// The configuration round `round` ran with: the file's, with the rules the snapshot's
/// ledger had in force for that round (strategy, estimator, pool, ... may have been governed).
pub fn config_for_round(
    cfg: &FederationConfig,
    snapshot: &Snapshot,
    round: u64,
) -> Result<FederationConfig, CoordinatorError> {
    let gov = crate::governance::load(&snapshot.ledger)?;
    let order = match snapshot.store.load_order()? {
        Some(order) => order,
        None => cfg
            .participants
            .iter()
            .map(|p| p.public_key_hex.clone())
            .collect(),
    };
    crate::governance::effective(cfg, &order, &gov, round)
}

/// The one set of settings rounds `first..=last` ran with (an audit bundle records one), or
/// why there is none: governance changed what shapes aggregation or valuation within them.
pub fn settings_for_rounds(
    cfg: &FederationConfig,
    snapshot: &Snapshot,
    first: u64,
    last: u64,
) -> Result<ReplaySettings, CoordinatorError> {
    let at = |r: u64| config_for_round(cfg, snapshot, r).map(|c| ReplaySettings::from(&c));
    let settings = at(first.max(1))?;
    for r in first.max(1)..=last {
        if at(r)? != settings {
            return Err(CoordinatorError::Internal(format!(
                "round {r} ran under other governed rules than round {first} (strategy, \
                 estimator, utility or pool); export the rounds before and from {r} as two bundles"
            )));
        }
    }
    Ok(settings)
}

pub fn replay(
    cfg: &FederationConfig,
    store: &Store,
    recorded: &RoundOutcome,
) -> Result<ReplayReport, CoordinatorError> {
    replay_against(cfg, store, recorded, &Figures::from_outcome(recorded))
}

/// Replay a round from the inputs named by `recorded` and compare with `against` (the anchored
/// ledger record's figures, for an audit).
pub fn replay_against(
    cfg: &FederationConfig,
    store: &Store,
    recorded: &RoundOutcome,
    against: &Figures,
) -> Result<ReplayReport, CoordinatorError> {
    replay_from(&ReplaySettings::from(cfg), store, recorded, against)
}

/// Replay a round with `settings` from `inputs` and compare with `against`. Without the
/// validation file among the inputs only the aggregate is checked; an input that does not hash
/// to its digest fails the replay, naming the round and the participant.
pub fn replay_from(
    cfg: &ReplaySettings,
    inputs: &dyn Inputs,
    recorded: &RoundOutcome,
    against: &Figures,
) -> Result<ReplayReport, CoordinatorError> {
    let round = recorded.round;
    let mut report = ReplayReport {
        round,
        checked: Vec::new(),
        differences: Vec::new(),
        skipped: Vec::new(),
    };
    if recorded.status == RoundStatus::Abandoned {
        report.checked.push(format!(
            "round {round} was abandoned ({}); nothing to recompute",
            recorded.reason.as_deref().unwrap_or("no reason recorded")
        ));
        return Ok(report);
    }
    let global = inputs.vector(&recorded.model_before).map_err(|e| {
        CoordinatorError::Internal(format!("round {round}: the model before the round: {e}"))
    })?;

    let mut contributions = recorded.contributions.clone();
    contributions.sort_by_key(|c| c.seq);
    let deltas: Vec<Vec<f32>> = contributions
        .iter()
        .map(|c| {
            inputs.vector(&c.update_sha256).map_err(|e| {
                CoordinatorError::Internal(format!(
                    "round {round}: the update of participant {} ({}): {e}",
                    c.name, c.public_key
                ))
            })
        })
        .collect::<Result<_, _>>()?;
    for c in &contributions {
        report.checked.push(format!(
            "update of {} hashes to {}",
            c.name, c.update_sha256
        ));
        match against.contributions.get(&c.public_key) {
            Some(r) if r.update_sha256 == c.update_sha256 && r.examples == c.examples => {}
            Some(r) => report.differences.push(Difference {
                what: format!("contribution of {}", c.name),
                recorded: format!("update {} with {} examples", r.update_sha256, r.examples),
                recomputed: format!(
                    "update {} with {} examples (the inputs kept)",
                    c.update_sha256, c.examples
                ),
            }),
            None => report.differences.push(Difference {
                what: format!("contribution of {}", c.name),
                recorded: "absent".into(),
                recomputed: format!("update {} (the inputs kept)", c.update_sha256),
            }),
        }
    }
    for key in against.contributions.keys() {
        if !contributions.iter().any(|c| &c.public_key == key) {
            report.differences.push(Difference {
                what: format!("contribution of {key}"),
                recorded: "present".into(),
                recomputed: "no input kept for it".into(),
            });
        }
    }
    let views: Vec<WeightedUpdate<'_>> = contributions
        .iter()
        .zip(&deltas)
        .map(|(c, d)| WeightedUpdate {
            examples: c.examples,
            delta: d,
            privacy: Some(&c.privacy),
        })
        .collect();
    // The validators' quality rule left some updates out of the aggregate (their flag is
    // recorded, and `verify` recomputes it from the vectors): the model is the kept ones'.
    let kept: Vec<usize> = (0..contributions.len())
        .filter(|i| {
            !contributions[*i]
                .flags
                .iter()
                .any(|f| f == fedledger_ledger::records::FLAG_EXCLUDED_BY_QUALITY)
        })
        .collect();
    let kept_views: Vec<WeightedUpdate<'_>> = kept.iter().map(|i| views[*i]).collect();

    // Updates the strategy left out count as zeros in the valuation game, as at the close.
    let mut excluded = Vec::new();
    if recorded.server_dp.is_some() {
        report.skipped.push(
            "aggregate: DP-FedAvg noise is drawn fresh and not recorded, so the model digest \
             cannot be recomputed"
                .into(),
        );
    } else {
        let strategy = aggregate::strategy(cfg.strategy, cfg.byzantine, cfg.noise_step);
        let after = match &recorded.history {
            Some(h) => replay_histories(cfg, inputs, &contributions, &deltas, h, &mut report)?,
            None => Vec::new(),
        };
        let compared: Option<Vec<&[f32]>> = recorded
            .history
            .is_some()
            .then(|| kept.iter().map(|i| after[*i].as_slice()).collect());
        let aggregate = strategy.aggregate_compared(&global, &kept_views, compared.as_deref())?;
        excluded = aggregate.excluded.iter().map(|k| kept[*k]).collect();
        let after = aggregate.params;
        let sha = fedledger_model::digest::vector_sha256(&after);
        if sha == against.model_after {
            report.checked.push(format!("aggregate hashes to {sha}"));
        } else {
            report.differences.push(Difference {
                what: "model.after".into(),
                recorded: against.model_after.clone(),
                recomputed: sha,
            });
        }
    }

    let Some(val) = &recorded.valuation else {
        report.skipped.push("valuation: none recorded".into());
        return Ok(report);
    };
    if let Some(v) = &recorded.validators
        && v.record.fallback.is_none()
    {
        replay_consensus(cfg, &contributions, v, against, &mut report)?;
        return Ok(report);
    }
    let Some(validation_bytes) = inputs.blob(&recorded.validation_sha256)? else {
        report.skipped.push(format!(
            "values and rewards: the validation file ({}) is not among the inputs, so only the \
             aggregate is checked",
            recorded.validation_sha256
        ));
        return Ok(report);
    };
    let mut validation = Dataset::from_csv_reader(validation_bytes.as_slice(), &cfg.label_column)?;
    validation.classes = cfg.model.classes;
    Standardiser::fit(&validation).apply(&mut validation)?;
    let mut settings = crate::value::replay_settings(
        &cfg.valuation,
        &val.estimator,
        val.evaluations,
        contributions.len(),
    );
    settings.bootstrap_resamples = val.bootstrap_resamples;
    let valuer = Valuer::with_settings(&cfg.federation, settings)
        .with_weighting(cfg.strategy.weighting())
        .with_noise_step(cfg.noise_step)
        .with_rule(cfg.rewards.rule);
    let names: Vec<&str> = contributions.iter().map(|c| c.name.as_str()).collect();
    let keys: Vec<&str> = contributions
        .iter()
        .map(|c| c.public_key.as_str())
        .collect();
    let zeros = vec![0f32; if excluded.is_empty() { 0 } else { global.len() }];
    let views = aggregate::valuation_views(&views, &excluded, &zeros);
    let valued = valuer.value_round_seeded(
        round,
        val.seed,
        &cfg.model,
        &validation,
        &global,
        &views,
        &names,
        &keys,
        contributions.iter().any(|c| c.privacy.is_private()),
    )?;
    if valued.summary.evaluations != val.evaluations {
        report.differences.push(Difference {
            what: "valuation.evaluations".into(),
            recorded: val.evaluations.to_string(),
            recomputed: valued.summary.evaluations.to_string(),
        });
    }
    if valued.reward_pool != against.reward_pool {
        report.differences.push(Difference {
            what: "reward_pool".into(),
            recorded: against.reward_pool.to_string(),
            recomputed: valued.reward_pool.to_string(),
        });
    }
    for (i, c) in contributions.iter().enumerate() {
        let absent = || "absent".to_owned();
        let (rec_value, rec_se, rec_reward) =
            against
                .contributions
                .get(&c.public_key)
                .map_or((absent(), absent(), absent()), |r| {
                    (
                        r.value_nano.to_string(),
                        r.value_se_nano.to_string(),
                        r.reward.to_string(),
                    )
                });
        for (what, rec, got) in [
            ("value_nano", rec_value, valued.value_nano[i].to_string()),
            ("value_se_nano", rec_se, valued.value_se_nano[i].to_string()),
            ("reward", rec_reward, valued.rewards[i].to_string()),
        ] {
            report.compare(format!("{what} of {}", c.name), rec, got);
        }
    }
    Ok(report)
}

/// The hospitals' histories after the round, recomputed from the recorded ones before it and
/// the updates (in the order of `contributions`); each is checked against the recorded digest,
/// and the weight against the settings'.
fn replay_histories(
    cfg: &ReplaySettings,
    inputs: &dyn Inputs,
    contributions: &[crate::types::ContributionOutcome],
    deltas: &[Vec<f32>],
    recorded: &crate::types::HistoryOutcome,
    report: &mut ReplayReport,
) -> Result<Vec<Vec<f32>>, CoordinatorError> {
    let round = report.round;
    if recorded.weight != cfg.history {
        report.differences.push(Difference {
            what: "aggregation.history".into(),
            recorded: recorded.weight.to_string(),
            recomputed: format!("{} (the settings)", cfg.history),
        });
    }
    let keys: Vec<&str> = contributions
        .iter()
        .map(|c| c.public_key.as_str())
        .collect();
    let before = keys
        .iter()
        .map(|k| {
            recorded
                .before
                .get(*k)
                .map(|sha| {
                    inputs.vector(sha).map(|v| (sha.clone(), v)).map_err(|e| {
                        CoordinatorError::Internal(format!(
                            "round {round}: the update history of {k} before the round: {e}"
                        ))
                    })
                })
                .transpose()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let slices: Vec<&[f32]> = deltas.iter().map(|d| d.as_slice()).collect();
    let before: Vec<Option<(String, &[f32])>> = before
        .iter()
        .map(|b| b.as_ref().map(|(sha, v)| (sha.clone(), v.as_slice())))
        .collect();
    let (after, record) =
        crate::machine::close::advance_histories(recorded.weight, &keys, &before, &slices);
    for (key, sha) in &record.after {
        match recorded.after.get(key) {
            Some(r) if r == sha => report.checked.push(format!(
                "update history of {key} after the round hashes to {sha}"
            )),
            r => report.differences.push(Difference {
                what: format!("update history of {key} after the round"),
                recorded: r.cloned().unwrap_or_else(|| "absent".into()),
                recomputed: sha.clone(),
            }),
        }
    }
    Ok(after)
}

/// A round valued by its validators: the consensus values (and the per-round pay that follows)
/// recomputed from the recorded vectors, with the function the close used.
fn replay_consensus(
    cfg: &ReplaySettings,
    contributions: &[crate::types::ContributionOutcome],
    v: &crate::types::ValidatorsOutcome,
    against: &Figures,
    report: &mut ReplayReport,
) -> Result<(), CoordinatorError> {
    let r = &v.record;
    let mut players: Vec<&crate::types::ContributionOutcome> = contributions.iter().collect();
    players.sort_by(|a, b| a.public_key.cmp(&b.public_key));
    let params = crate::value::consensus_params(r, players.len());
    let keys: Vec<&str> = v.vectors.iter().map(|m| m.validator.as_str()).collect();
    let refs: Vec<&[i64]> = v.vectors.iter().map(|m| m.utilities.as_slice()).collect();
    let c = fedledger_valuation::consensus::round_consensus(&params, &keys, &refs)
        .map_err(|e| CoordinatorError::Internal(format!("validators' consensus: {e}")))?;
    let entries: Vec<fedledger_valuation::RewardEntry<'_>> = players
        .iter()
        .zip(&c.values_nano)
        .zip(&c.keep)
        .map(|((p, value), keep)| fedledger_valuation::RewardEntry {
            participant_key_hex: &p.public_key,
            value_nano: *value,
            eligible: *keep
                && !p
                    .flags
                    .iter()
                    .any(|f| f.starts_with(fedledger_valuation::FLAG_COPY_OF_PREFIX)),
        })
        .collect();
    let (rewards, _) = Valuer::with_settings(&cfg.federation, cfg.valuation.clone())
        .with_rule(cfg.rewards.rule)
        .round_rewards(&entries);
    for (i, p) in players.iter().enumerate() {
        let recorded = against.contributions.get(&p.public_key);
        for (what, rec, got) in [
            (
                "value_nano (validators' consensus)",
                recorded.map(|r| r.value_nano.to_string()),
                c.values_nano[i].to_string(),
            ),
            (
                "reward",
                recorded.map(|r| r.reward.to_string()),
                rewards[i].to_string(),
            ),
        ] {
            let rec = rec.unwrap_or_else(|| "absent".into());
            report.compare(format!("{what} of {}", p.name), rec, got);
        }
    }
    Ok(())
}
