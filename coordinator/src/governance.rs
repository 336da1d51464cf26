//! Governance at the coordinator: the ledger's governance state read back at start, the
//! configuration a round runs with (the operator's file with the governed rules in force laid
//! over it), and the start-up check that the file does not contradict the governed state.
//!
//! The acceptance rule itself is the ledger's ([`Governance::check`]), so `verify` admits
//! exactly what the coordinator did; here are only what needs the clock and the round:
//! expiry and `from_round` after the open round ([`check_timing`]).

use std::time::Duration;

use fedledger_ledger::{
    Log,
    records::{
        Change, EnrolmentEntry, FederationEntry, Governance, Proposal, ROLE_CONTRIBUTOR,
        ROLE_VALIDATOR, Record, Refusal, Rules, validate_entry,
    },
};

use crate::{
    anchor::decimal,
    config::{
        Enrolled, FederationConfig, GovernanceConfig, RewardsSection, StrategyKind, UtilityKind,
        ValidatorsSection, decode_public_key,
    },
    error::CoordinatorError,
};

fn ledger_err(e: fedledger_ledger::LedgerError) -> CoordinatorError {
    CoordinatorError::Ledger(e.to_string())
}

/// The governance state of the log: its genesis, then every governance entry in ledger order,
/// each admitted by the acceptance rule (an entry the rule refuses cannot have been written by
/// this coordinator; the log is refused).
pub fn load(log: &Log) -> Result<Governance, CoordinatorError> {
    let origin = log.origin().to_owned();
    let size = log.size();
    let genesis_bytes = log
        .entries(0, 1)
        .map_err(ledger_err)?
        .into_iter()
        .next()
        .ok_or_else(|| CoordinatorError::Ledger("the log has no genesis".into()))?;
    let Record::Federation(g) = validate_entry(0, &origin, &genesis_bytes).map_err(ledger_err)?
    else {
        return Err(CoordinatorError::Ledger(
            "entry 0 is not a v2 federation".into(),
        ));
    };
    let g: FederationEntry = *g;
    let mut enrolments: Vec<EnrolmentEntry> = Vec::new();
    let mut entries = Vec::new();
    let mut start = 1;
    while start < size {
        let end = (start + 4096).min(size);
        for (i, e) in (start..end).zip(log.entries(start, end).map_err(ledger_err)?) {
            match validate_entry(i, &origin, &e).map_err(ledger_err)? {
                Record::Enrolment(en) if i <= g.enrolments => enrolments.push(*en),
                Record::Governance(ge) => entries.push((i, e, ge)),
                _ => {}
            }
        }
        start = end;
    }
    let refs: Vec<&EnrolmentEntry> = enrolments.iter().collect();
    let mut gov = Governance::new(&genesis_bytes, &g, &refs);
    for (i, bytes, entry) in entries {
        gov.admit(i, &bytes, &entry).map_err(|e| {
            CoordinatorError::Ledger(format!("governance entry {i} does not admit: {e}"))
        })?;
    }
    Ok(gov)
}

/// The refusals that need the clock and the round: expired, or starting no later than the
/// open round (`open_round` is 0 before the first round).
pub fn check_timing(p: &Proposal, now_ms: u64, open_round: u64) -> Result<(), Refusal> {
    let expires = humantime::parse_rfc3339(&p.expires_at)
        .map_err(|e| Refusal::Malformed(format!("expires_at: {e}")))?
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    if expires <= now_ms {
        return Err(Refusal::Malformed(format!(
            "the proposal expired at {}",
            p.expires_at
        )));
    }
    if p.from_round <= open_round {
        return Err(Refusal::Malformed(format!(
            "from_round {} is not after the open round {open_round}",
            p.from_round
        )));
    }
    // A change of the reward rule or period ends the running settlement period at round
    // from_round - 1, whose configuration is laid when it opens: that round must not be open
    // yet. (Before the first round, round 1 may start under any rule.)
    let rule_change = p
        .changes
        .iter()
        .any(|c| matches!(c, Change::RewardRule { .. }));
    if rule_change && open_round > 0 && p.from_round < open_round.saturating_add(2) {
        return Err(Refusal::Malformed(format!(
            "from_round {} changes the reward rule: it must be at least two after the open round {open_round} \
             (the running settlement period ends at round from_round - 1, which must not have opened yet), \
             so at least {}",
            p.from_round,
            open_round.saturating_add(2)
        )));
    }
    Ok(())
}

fn strategy(name: &str) -> Option<StrategyKind> {
    [
        StrategyKind::Fedavg,
        StrategyKind::FedavgInverseNoise,
        StrategyKind::FedavgRandomEffects,
        StrategyKind::Median,
        StrategyKind::TrimmedMean,
        StrategyKind::MultiKrum,
        StrategyKind::Bulyan,
    ]
    .into_iter()
    .find(|s| s.as_str() == name)
}

fn number(field: &str, s: &str) -> Result<f64, CoordinatorError> {
    s.parse::<f64>()
        .ok()
        .filter(|x| x.is_finite())
        .ok_or_else(|| CoordinatorError::Ledger(format!("governed {field} {s:?} is not a number")))
}

/// The participants in stable order: the genesis participants in `order` (the file's order at
/// the first start, kept in the store), the rest of the genesis in ledger order, then every
/// key a governance entry enrolled, in ledger order. A key not enrolled as a contributor in
/// `rules` is marked removed (indices never move, so persisted answers stay valid).
fn participants(order: &[String], gov: &Governance, rules: &Rules) -> Vec<Enrolled> {
    let mut out: Vec<Enrolled> = Vec::new();
    let genesis = gov.rules_for(0);
    let mut push = |key_hex: &str, name: &str| {
        if out.iter().any(|p| p.public_key_hex == key_hex) {
            return;
        }
        let Ok(key) = decode_public_key(key_hex) else {
            return;
        };
        let member = rules.members.get(key_hex);
        out.push(Enrolled {
            name: member.map_or(name, |m| m.name.as_str()).to_owned(),
            public_key: key,
            public_key_hex: key_hex.to_owned(),
            removed: !rules.is_contributor(key_hex),
        });
    };
    for key in order {
        if let Some(m) = genesis.members.get(key) {
            push(key, &m.name);
        }
    }
    for (key, m) in &genesis.members {
        push(key, &m.name);
    }
    for prop in gov.anchored() {
        for c in &prop.changes {
            if let Change::Enrol {
                participant, name, ..
            } = c
            {
                push(participant, name);
            }
        }
    }
    out
}

/// The validators enrolled under `rules`, sorted by key.
fn validators(rules: &Rules) -> Result<Vec<Enrolled>, CoordinatorError> {
    rules
        .members
        .iter()
        .filter(|(_, m)| m.role == ROLE_VALIDATOR)
        .map(|(key_hex, m)| {
            let key = decode_public_key(key_hex).map_err(CoordinatorError::Ledger)?;
            Ok(Enrolled {
                name: m.name.clone(),
                public_key: key,
                public_key_hex: key_hex.clone(),
                removed: false,
            })
        })
        .collect()
}

/// The configuration round `round` runs with: `base` with the governed rules in force for it;
/// `order` is the genesis participants' index order (see `participants`).
pub fn effective(
    base: &FederationConfig,
    order: &[String],
    gov: &Governance,
    round: u64,
) -> Result<FederationConfig, CoordinatorError> {
    let rules = gov.rules_for(round);
    let mut cfg = base.clone();
    cfg.participants = participants(order, gov, &rules);
    cfg.validators = validators(&rules)?;
    cfg.training.local_epochs = u32::try_from(rules.local_epochs)
        .map_err(|_| CoordinatorError::Ledger("governed local_epochs too large".into()))?;
    cfg.training.batch_size = u32::try_from(rules.batch_size)
        .map_err(|_| CoordinatorError::Ledger("governed batch_size too large".into()))?;
    cfg.training.learning_rate = number("learning_rate", &rules.learning_rate)?;
    cfg.training.clip_norm = number("clip_norm", &rules.clip_norm)?;
    cfg.training.noise_multiplier = number("noise_multiplier", &rules.noise_multiplier)?;
    if base.server_dp.is_none() {
        cfg.strategy = strategy(&rules.aggregation).ok_or_else(|| {
            CoordinatorError::Ledger(format!(
                "governed strategy {:?} is not one this coordinator knows",
                rules.aggregation
            ))
        })?;
    } else if rules.aggregation != "dp-fedavg" {
        return Err(CoordinatorError::Ledger(format!(
            "governed strategy {:?}: this federation runs DP-FedAvg, whose guarantee assumes a mean",
            rules.aggregation
        )));
    }
    cfg.quorum = u32::try_from(rules.quorum)
        .map_err(|_| CoordinatorError::Ledger("governed quorum too large".into()))?;
    if let Some(d) = rules.deadline_secs {
        cfg.deadline = Duration::from_secs(d);
    }
    cfg.valuation.reward_pool_per_round = rules.reward.pool_per_round;
    if rules.reward.is_settled() {
        cfg.rewards = RewardsSection::from_record(&rules.reward).ok_or_else(|| {
            CoordinatorError::Ledger(format!(
                "governed reward rule {:?} is not one this coordinator knows",
                rules.reward.rule
            ))
        })?;
    }
    // The round after this one is known when this one opens: a change of the reward rule is
    // refused unless it takes effect two rounds after the open one (`check_timing`).
    cfg.reward_segments = gov.reward_segments(round.saturating_add(1));
    if let Some(e) = &rules.estimator {
        cfg.valuation.estimator = e.clone();
    }
    if let Some(u) = &rules.utility {
        cfg.valuation.utility = [UtilityKind::NegLogLoss, UtilityKind::Accuracy]
            .into_iter()
            .find(|k| k.as_str() == u)
            .ok_or_else(|| {
                CoordinatorError::Ledger(format!(
                    "governed utility {u:?} is not one this coordinator knows"
                ))
            })?;
    }
    if let Some(v) = &rules.validators {
        cfg.validating = Some(ValidatorsSection::from_rules(v).ok_or_else(|| {
            CoordinatorError::Ledger("governed validators' rules too large for this machine".into())
        })?);
    }
    cfg.governance = GovernanceConfig {
        governors: gov.governors().governors.clone(),
        threshold: gov.governors().threshold,
        schema: rules.schema.clone(),
    };
    Ok(cfg)
}

/// The checks a configuration built from governed rules must pass before a proposal that
/// leads to it is accepted (the same the file's validation makes of these fields), so a
/// change this coordinator could not run is refused rather than anchored.
pub fn check_effective(cfg: &FederationConfig) -> Result<(), Refusal> {
    let bad = |m: String| Err(Refusal::Inapplicable(m));
    let t = &cfg.training;
    if !(t.learning_rate.is_finite() && t.learning_rate > 0.0) {
        return bad(format!(
            "learning_rate must be > 0, got {}",
            t.learning_rate
        ));
    }
    if (t.noise_multiplier > 0.0) != (t.clip_norm > 0.0) {
        return bad("DP-SGD needs both clip_norm and noise_multiplier > 0 (or both 0)".into());
    }
    if t.planning.is_some() && t.clip_norm <= 0.0 {
        return bad("the federation plans DP-SGD: clip_norm must stay > 0".into());
    }
    if let Some(v) = &cfg.validating {
        v.validate().map_err(Refusal::Inapplicable)?;
        v.check_design(cfg.participants.iter().filter(|p| !p.removed).count())
            .map_err(Refusal::Inapplicable)?;
        if t.noise_multiplier <= 0.0 && t.planning.is_none() {
            return bad(
                "validators receive each update: the federation's hospitals must train with \
                 DP-SGD (noise_multiplier > 0)"
                    .into(),
            );
        }
        if cfg.server_dp.is_some() {
            return bad("validators and server-side DP (dp-fedavg) do not compose".into());
        }
    }
    cfg.valuation
        .validate()
        .map_err(|e| Refusal::Inapplicable(e.to_string()))?;
    let n = cfg.participants.iter().filter(|p| !p.removed).count();
    let f = cfg.byzantine;
    match cfg.strategy {
        StrategyKind::MultiKrum if n < 2 * f + 3 => {
            return bad(format!(
                "multi-krum with byzantine = {f} needs {} contributors, {n} would be enrolled",
                2 * f + 3
            ));
        }
        StrategyKind::Bulyan if n < 4 * f + 3 => {
            return bad(format!(
                "bulyan with byzantine = {f} needs {} contributors, {n} would be enrolled",
                4 * f + 3
            ));
        }
        _ => {}
    }
    if let Some(schema) = &cfg.governance.schema {
        if schema.features.len() != cfg.model.features {
            return bad(format!(
                "the schema names {} features but the model has {}",
                schema.features.len(),
                cfg.model.features
            ));
        }
        if schema.label != cfg.label_column {
            return bad(format!(
                "the schema's label {:?} is not the label column {:?} tasks name",
                schema.label, cfg.label_column
            ));
        }
    }
    Ok(())
}

/// After the genesis, the governed fields of the operator's file must equal the governed state
/// (the rules of the open round, or the latest anchored ones); otherwise the start is refused
/// with the field named.
pub fn check_config(
    file: &FederationConfig,
    gov: &Governance,
    open_round: u64,
) -> Result<(), CoordinatorError> {
    let states = [gov.rules_for(open_round.max(1)), gov.rules_for(u64::MAX)];
    let mut keys: Vec<&str> = file
        .participants
        .iter()
        .map(|p| p.public_key_hex.as_str())
        .collect();
    keys.sort();
    let t = &file.training;
    let aggregation = if file.server_dp.is_some() {
        "dp-fedavg"
    } else {
        file.strategy.as_str()
    };
    type Check<'a> = (&'a str, Box<dyn Fn(&Rules) -> Option<String> + 'a>);
    let differs = |a: String, b: String| (a != b).then(|| format!("{a} (governed: {b})"));
    let checks: Vec<Check<'_>> = vec![
        (
            "[[participant]]",
            Box::new(|r: &Rules| {
                if keys.is_empty() {
                    return None;
                }
                let mut governed: Vec<&str> = r
                    .members
                    .iter()
                    .filter(|(_, m)| m.role == ROLE_CONTRIBUTOR)
                    .map(|(k, _)| k.as_str())
                    .collect();
                governed.sort();
                (governed != keys).then(|| {
                    format!(
                        "the file enrols {} keys, the governed state {} ({})",
                        keys.len(),
                        governed.len(),
                        governed.join(", ")
                    )
                })
            }),
        ),
        (
            "[[validator]]",
            Box::new(|r: &Rules| {
                if file.validators.is_empty() {
                    return None;
                }
                let mut want: Vec<&str> = file
                    .validators
                    .iter()
                    .map(|v| v.public_key_hex.as_str())
                    .collect();
                want.sort();
                let governed: Vec<&str> = r
                    .members
                    .iter()
                    .filter(|(_, m)| m.role == ROLE_VALIDATOR)
                    .map(|(k, _)| k.as_str())
                    .collect();
                (governed != want).then(|| {
                    format!(
                        "the file enrols {} validators, the governed state {} ({})",
                        want.len(),
                        governed.len(),
                        governed.join(", ")
                    )
                })
            }),
        ),
        (
            "[validators]",
            Box::new(|r: &Rules| {
                let governed = r.validators.as_ref()?;
                let file = file.validating.as_ref().map(|v| v.rules());
                (file.as_ref() != Some(governed)).then(|| {
                    format!(
                        "{} (governed: {governed:?})",
                        file.map_or_else(|| "absent".to_owned(), |f| format!("{f:?}"))
                    )
                })
            }),
        ),
        (
            "training.local_epochs",
            Box::new(|r: &Rules| differs(t.local_epochs.to_string(), r.local_epochs.to_string())),
        ),
        (
            "training.batch_size",
            Box::new(|r: &Rules| differs(t.batch_size.to_string(), r.batch_size.to_string())),
        ),
        (
            "training.learning_rate",
            Box::new(|r: &Rules| differs(decimal(t.learning_rate), r.learning_rate.clone())),
        ),
        (
            "training.clip_norm",
            Box::new(|r: &Rules| differs(decimal(t.clip_norm), r.clip_norm.clone())),
        ),
        (
            "training.noise_multiplier",
            Box::new(|r: &Rules| differs(decimal(t.noise_multiplier), r.noise_multiplier.clone())),
        ),
        (
            "aggregation.strategy",
            Box::new(|r: &Rules| differs(aggregation.to_owned(), r.aggregation.clone())),
        ),
        (
            "rounds.quorum",
            Box::new(|r: &Rules| differs(file.quorum.to_string(), r.quorum.to_string())),
        ),
        (
            "rounds.deadline_secs",
            Box::new(|r: &Rules| {
                r.deadline_secs
                    .and_then(|d| differs(file.deadline.as_secs().to_string(), d.to_string()))
            }),
        ),
        (
            "valuation.reward_pool_per_round",
            Box::new(|r: &Rules| {
                differs(
                    file.valuation.reward_pool_per_round.to_string(),
                    r.reward.pool_per_round.to_string(),
                )
            }),
        ),
        (
            "rewards.rule",
            Box::new(|r: &Rules| {
                differs(
                    file.rewards.rule.recorded_name().to_owned(),
                    r.reward.rule.clone(),
                )
            }),
        ),
        (
            "rewards.period_rounds",
            Box::new(|r: &Rules| {
                r.reward
                    .period_rounds
                    .and_then(|p| differs(file.rewards.period_rounds.to_string(), p.to_string()))
            }),
        ),
        (
            "rewards.z",
            Box::new(|r: &Rules| {
                r.reward.z_milli.and_then(|z| {
                    differs(file.rewards.z_milli().to_string(), z.to_string())
                        .map(|d| format!("{d} (thousandths)"))
                })
            }),
        ),
        (
            "valuation.estimator",
            Box::new(|r: &Rules| {
                r.estimator
                    .as_ref()
                    .and_then(|e| differs(file.valuation.estimator.clone(), e.clone()))
            }),
        ),
        (
            "valuation.utility",
            Box::new(|r: &Rules| {
                r.utility
                    .as_ref()
                    .and_then(|u| differs(file.valuation.utility.as_str().to_owned(), u.clone()))
            }),
        ),
        (
            "governance.governors",
            Box::new(|r: &Rules| {
                // An absent [governance] keeps the governed governors.
                let absent = file.governance.governors.is_empty() && file.governance.threshold == 0;
                if absent {
                    return None;
                }
                differs(
                    format!(
                        "{:?} k={}",
                        file.governance.governors, file.governance.threshold
                    ),
                    format!("{:?} k={}", r.governance.governors, r.governance.threshold),
                )
            }),
        ),
        (
            "governance.schema",
            Box::new(|r: &Rules| {
                // An absent schema keeps the governed one.
                let absent = file.governance.schema.is_none();
                (!absent && file.governance.schema != r.schema).then(|| {
                    "differs from the governed schema (leave it as at genesis or as governed)"
                        .to_owned()
                })
            }),
        ),
    ];
    for (field, check) in &checks {
        let verdicts: Vec<Option<String>> = states.iter().map(check).collect();
        if verdicts.iter().all(Option::is_some) {
            return Err(CoordinatorError::Config(format!(
                "{field} in the configuration differs from the federation's governed state: {}; \
                 after the genesis it changes only by a governance proposal \
                 (`fedledger-coordinator govern submit`)",
                verdicts[0].clone().unwrap_or_default()
            )));
        }
    }
    // Witnesses take effect when anchored: the file names the set in force now, or none.
    let w = gov.witnesses_for_size(u64::MAX);
    let absent = file.witnesses.is_empty() && file.witness_quorum == 0;
    let mut named = file.witnesses.clone();
    named.sort();
    let mut governed = w.keys.clone();
    governed.sort();
    if !absent && (named != governed || file.witness_quorum != w.quorum) {
        return Err(CoordinatorError::Config(format!(
            "ledger.witnesses / ledger.witness_quorum in the configuration differ from the \
             federation's governed state: {named:?} quorum {} (governed: {governed:?} quorum {}); \
             after the genesis they change only by a governance proposal \
             (`fedledger-coordinator govern submit`)",
            file.witness_quorum, w.quorum
        )));
    }
    Ok(())
}
