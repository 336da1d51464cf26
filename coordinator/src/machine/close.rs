//! Closing a round as a pure function of its inputs: the model it started from, the accepted
//! updates, the declines, the validation data, the strategy, the valuation settings and (for
//! the settled reward rule) the outcomes of the period's earlier rounds. It aggregates (or
//! abandons below quorum), evaluates, values, and splits the round's pool (per-round rule) or,
//! when the round ends a period, settles the period (settled rule); it writes nothing. The engine persists what it returns; replay calls the same pieces to
//! recompute a recorded round.

use fedledger_ledger::records::period_ending;
use fedledger_model::{Dataset, digest::vector_sha256};

use super::CloseJob;
use crate::{
    aggregate::{Aggregator, federation_epsilon},
    config::FederationConfig,
    error::CoordinatorError,
    types::{
        ContributionOutcome, DeclinedOutcome, HistoryOutcome, PersistedState, Phase, RoundOutcome,
        RoundStatus, UpdateMeta, ValidatorsOutcome, WeightedUpdate,
    },
    value::{Valuer, judge, settle_period},
};

/// Everything a close reads.
#[derive(Clone, Copy)]
pub struct CloseInputs<'a> {
    pub cfg: &'a FederationConfig,
    /// The validation data, standardised as the participants' data is.
    pub validation: &'a Dataset,
    pub job: &'a CloseJob,
    /// The global parameters the round started from.
    pub global: &'a [f32],
    /// The update vectors, in the order of `job.updates`.
    pub deltas: &'a [&'a [f32]],
    pub aggregator: &'a dyn Aggregator,
    pub valuer: &'a Valuer,
    /// Effective noise multipliers of the earlier rounds aggregated with server-side DP.
    pub server_dp_history: &'a [f64],
    /// The outcomes of the earlier rounds (settled rule: a settlement reads the history).
    pub earlier_rounds: &'a [RoundOutcome],
    /// The validators' standing before the round (with validators: the latest judged round's).
    pub standing: &'a fedledger_valuation::consensus::Standing,
    /// When the strategy compares histories ([`compares_histories`]): in the order of
    /// `job.updates`, each hospital's history before the round with its digest (`None`: its
    /// first update). Otherwise empty.
    pub histories: &'a [Option<(String, &'a [f32])>],
    /// When the strategy compares histories: in the order of `job.updates`, each hospital's
    /// history after the round with its digest, advanced by the caller
    /// ([`crate::aggregate::history::advance`]; the engine stores each before the outcome names
    /// it, and holds none in anonymous memory). Otherwise empty.
    pub advanced: &'a [(String, &'a [f32])],
}

/// A round's outcome and, when it completed, the new global parameters.
pub struct Closed {
    pub outcome: RoundOutcome,
    pub new_global: Option<Vec<f32>>,
}

/// True when the round's selection compares the hospitals' update histories instead of the
/// updates alone: a selecting strategy (Multi-Krum, Bulyan) with `[aggregation] history` above 0.
pub fn compares_histories(cfg: &FederationConfig, aggregator: &dyn Aggregator) -> bool {
    cfg.history > 0.0 && aggregator.selects()
}

/// The hospitals' histories after the round (`before[i]` advanced by `deltas[i]`) and the
/// record naming them, keyed by `keys[i]`.
pub fn advance_histories(
    weight: f64,
    keys: &[&str],
    before: &[Option<(String, &[f32])>],
    deltas: &[&[f32]],
) -> (Vec<Vec<f32>>, HistoryOutcome) {
    let after: Vec<Vec<f32>> = before
        .iter()
        .zip(deltas)
        .map(|(b, d)| crate::aggregate::history::advance(weight, b.as_ref().map(|b| b.1), d))
        .collect();
    let digests: Vec<String> = after.iter().map(|a| vector_sha256(a)).collect();
    let record = history_record(weight, keys, before, &digests);
    (after, record)
}

/// The record of the hospitals' histories: before the round (`before[i]`, by digest; none
/// for a first update) and after it (`after[i]`'s digest), keyed by `keys[i]`.
pub fn history_record(
    weight: f64,
    keys: &[&str],
    before: &[Option<(String, &[f32])>],
    after: &[String],
) -> HistoryOutcome {
    HistoryOutcome {
        weight,
        before: keys
            .iter()
            .zip(before)
            .filter_map(|(k, b)| b.as_ref().map(|b| ((*k).to_owned(), b.0.clone())))
            .collect(),
        after: keys
            .iter()
            .zip(after)
            .map(|(k, a)| ((*k).to_owned(), a.clone()))
            .collect(),
    }
}

/// The record line of one accepted update.
pub fn contribution(
    cfg: &FederationConfig,
    m: &UpdateMeta,
    value: (f64, i64),
    se: (f64, u64),
    reward: u64,
    flags: Vec<String>,
) -> ContributionOutcome {
    let p = &cfg.participants[m.participant];
    ContributionOutcome {
        participant: m.participant,
        seq: m.seq,
        name: p.name.clone(),
        public_key: p.public_key_hex.clone(),
        examples: m.examples,
        update_sha256: m.update_sha256.clone(),
        signature: m.signature.clone(),
        privacy: m.privacy.clone(),
        value: value.0,
        value_nano: value.1,
        value_se: se.0,
        value_se_nano: se.1,
        reward,
        flags,
    }
}

/// The record lines of updates that were seen but not valued (an abandoned round), unpaid,
/// sorted by key.
fn unpaid(cfg: &FederationConfig, updates: &[UpdateMeta]) -> Vec<ContributionOutcome> {
    let mut lines: Vec<ContributionOutcome> = updates
        .iter()
        .map(|m| contribution(cfg, m, (0.0, 0), (0.0, 0), 0, Vec::new()))
        .collect();
    lines.sort_by(|a, b| a.public_key.cmp(&b.public_key));
    lines
}

/// True when any update carries DP-SGD noise (then only zero or near-zero updates count as free
/// riding).
pub fn noisy(updates: &[UpdateMeta]) -> bool {
    updates.iter().any(|m| m.privacy.is_private())
}

/// Close the round: abandon it below quorum, else aggregate, evaluate and value; then, under the
/// settled rule, settle the period if the round ends one.
pub fn close_round(i: CloseInputs<'_>) -> Result<Closed, CoordinatorError> {
    let mut closed = match aggregate_round(i)? {
        Stage::Abandoned(outcome) => Closed {
            outcome: *outcome,
            new_global: None,
        },
        Stage::Aggregated(mut a) => {
            let new_global = a.take_model();
            Closed {
                outcome: value_aggregated(i, *a)?,
                new_global: Some(new_global),
            }
        }
    };
    settle(i, &mut closed.outcome);
    Ok(closed)
}

/// Under the settled rule, when the round ends a settlement period: the period's settlement,
/// from the earlier rounds' outcomes and this one's.
pub fn settle(i: CloseInputs<'_>, outcome: &mut RoundOutcome) {
    let (cfg, earlier_rounds) = (i.cfg, i.earlier_rounds);
    let rule = cfg
        .rewards
        .settlement_rule(cfg.valuation.reward_pool_per_round);
    if let Some(rule) = rule
        && let Some(period) = period_ending(&cfg.reward_segments, outcome.round, cfg.rounds)
    {
        let mut rounds: Vec<&RoundOutcome> = earlier_rounds
            .iter()
            .filter(|o| o.round < outcome.round)
            .collect();
        rounds.sort_by_key(|o| o.round);
        rounds.push(outcome);
        outcome.settlement = Some(settle_period(cfg, &rule, period, &rounds));
    }
}

/// How far [`aggregate_round`] took a round.
pub enum Stage {
    /// Abandoned (below quorum, or the validators left out every update): the outcome is
    /// final but for a settlement ([`settle`]).
    Abandoned(Box<RoundOutcome>),
    /// Aggregated and evaluated, to be valued ([`value_aggregated`]).
    Aggregated(Box<Aggregated>),
}

/// A completed round's aggregate, before its valuation. The valuation reads only the round's
/// starting model and updates, so the engine makes the new model durable and drops it
/// ([`Aggregated::take_model`]) before it values: the close never holds the new model and the
/// valuation's working models at once.
pub struct Aggregated {
    /// Completed, with the new model's digest and metrics; contributions still to come.
    outcome: RoundOutcome,
    new_global: Vec<f32>,
    /// Updates the strategy left out, as indices into the round's updates.
    excluded: Vec<usize>,
    judged: Option<crate::value::Judgement>,
}

impl Aggregated {
    /// The new global parameters (the outcome names them by digest). Empty once taken.
    pub fn take_model(&mut self) -> Vec<f32> {
        std::mem::take(&mut self.new_global)
    }
}

/// The first half of a close: abandon the round below quorum (or when the validators' quality
/// rule keeps no update), else aggregate and evaluate the new model.
pub fn aggregate_round(i: CloseInputs<'_>) -> Result<Stage, CoordinatorError> {
    let CloseInputs {
        cfg,
        validation,
        job,
        global,
        deltas,
        aggregator,
        valuer: _,
        server_dp_history,
        earlier_rounds: _,
        standing,
        histories,
        advanced,
    } = i;
    if deltas.len() != job.updates.len() {
        return Err(CoordinatorError::Internal(format!(
            "close of round {}: {} update vectors for {} updates",
            job.round,
            deltas.len(),
            job.updates.len()
        )));
    }
    let declined: Vec<DeclinedOutcome> = job
        .declines
        .iter()
        .map(|d| {
            let p = &cfg.participants[d.participant];
            DeclinedOutcome {
                participant: d.participant,
                name: p.name.clone(),
                public_key: p.public_key_hex.clone(),
                reason: d.reason.clone(),
                signature: d.signature.clone(),
            }
        })
        .collect();
    let metrics_before = Some(fedledger_model::evaluate(&cfg.model, global, validation)?);
    let mut outcome = RoundOutcome {
        round: job.round,
        status: RoundStatus::Abandoned,
        reason: None,
        opened_at_ms: job.opened_at_ms,
        closed_at_ms: job.now_ms,
        model_before: job.model_before.clone(),
        model_after: job.model_before.clone(),
        validation_sha256: cfg.validation_sha256.clone(),
        aggregator: aggregator.name().to_owned(),
        params: global.len() as u64,
        metrics_before,
        metrics: None,
        contributions: Vec::new(),
        declined,
        valuation: None,
        server_dp: None,
        reward_pool: 0,
        close_micros: 0,
        settlement: None,
        rules_sha256: None,
        validators: None,
        history: None,
    };
    if job.updates.len() < cfg.quorum as usize {
        outcome.reason = Some(format!(
            "{} update(s) by the deadline, quorum is {}",
            job.updates.len(),
            cfg.quorum
        ));
        // The updates that did arrive are still recorded (their privacy was spent), unpaid.
        outcome.contributions = unpaid(cfg, &job.updates);
        return Ok(Stage::Abandoned(Box::new(outcome)));
    }
    let views = weighted_views(job, deltas);
    // With validators: their consensus values the round, and the quality rule decides which
    // updates enter the aggregate (the kept ones, with the strategy's usual weights).
    let judged = judge(cfg, job.round, &job.updates, &job.vectors, standing)?;
    let kept: Vec<usize> = (0..views.len())
        .filter(|i| judged.as_ref().is_none_or(|j| j.keep[*i]))
        .collect();
    if kept.is_empty() {
        outcome.reason = Some(format!(
            "the validators' quality rule left out all {} update(s)",
            job.updates.len()
        ));
        outcome.contributions = unpaid(cfg, &job.updates);
        return Ok(Stage::Abandoned(Box::new(outcome)));
    }
    let kept_views: Vec<WeightedUpdate<'_>> = kept.iter().map(|i| views[*i]).collect();
    let keys = update_keys(cfg, job);
    // Every update of a completed round enters its hospital's history; the selection compares
    // the kept ones'.
    let history = if compares_histories(cfg, aggregator) {
        if histories.len() != deltas.len() {
            return Err(CoordinatorError::Internal(format!(
                "close of round {}: {} histories for {} updates",
                job.round,
                histories.len(),
                deltas.len()
            )));
        }
        if advanced.len() != deltas.len() {
            return Err(CoordinatorError::Internal(format!(
                "close of round {}: {} advanced histories for {} updates",
                job.round,
                advanced.len(),
                deltas.len()
            )));
        }
        let digests: Vec<String> = advanced.iter().map(|(sha, _)| sha.clone()).collect();
        Some(history_record(cfg.history, &keys, histories, &digests))
    } else {
        None
    };
    let compared: Option<Vec<&[f32]>> = history
        .is_some()
        .then(|| kept.iter().map(|&i| advanced[i].1).collect());
    let aggregate = aggregator.aggregate_compared(global, &kept_views, compared.as_deref())?;
    // The strategy's exclusions, as indices into the round's updates.
    let excluded: Vec<usize> = aggregate.excluded.iter().map(|k| kept[*k]).collect();
    let new_global = aggregate.params;
    outcome.server_dp = match aggregate.server_dp {
        Some(mut report) => {
            let mut history = server_dp_history.to_vec();
            history.push(report.noise_multiplier);
            report.epsilon = federation_epsilon(&history, report.delta)?;
            Some(report)
        }
        None => None,
    };
    outcome.metrics = Some(fedledger_model::evaluate(
        &cfg.model,
        &new_global,
        validation,
    )?);
    outcome.status = RoundStatus::Completed;
    outcome.model_after = vector_sha256(&new_global);
    outcome.history = history;
    Ok(Stage::Aggregated(Box::new(Aggregated {
        outcome,
        new_global,
        excluded,
        judged,
    })))
}

/// The second half of a close: value the aggregated round's updates, pay its pool and record
/// each contribution.
pub fn value_aggregated(
    i: CloseInputs<'_>,
    aggregated: Aggregated,
) -> Result<RoundOutcome, CoordinatorError> {
    let CloseInputs {
        cfg,
        validation,
        job,
        global,
        deltas,
        aggregator,
        valuer,
        ..
    } = i;
    let Aggregated {
        mut outcome,
        excluded,
        judged,
        ..
    } = aggregated;
    let views = weighted_views(job, deltas);
    let keys = update_keys(cfg, job);
    let names: Vec<&str> = job
        .updates
        .iter()
        .map(|m| cfg.participants[m.participant].name.as_str())
        .collect();
    let zeros = if excluded.is_empty() {
        Vec::new()
    } else {
        vec![0f32; global.len()]
    };
    let mut valuation = valuer.value_round(
        job.round,
        &cfg.model,
        validation,
        global,
        &crate::aggregate::valuation_views(&views, &excluded, &zeros),
        &names,
        &keys,
        noisy(&job.updates),
    )?;
    for &i in &excluded {
        valuation.flags[i].push(crate::aggregate::excluded_flag(aggregator.name()));
    }
    if let Some(j) = &judged {
        valuer.apply_consensus(&mut valuation, &keys, j);
    }
    let mut contributions: Vec<ContributionOutcome> = job
        .updates
        .iter()
        .enumerate()
        .map(|(i, m)| {
            contribution(
                cfg,
                m,
                (valuation.values[i], valuation.value_nano[i]),
                (valuation.value_se[i], valuation.value_se_nano[i]),
                valuation.rewards[i],
                valuation.flags[i].clone(),
            )
        })
        .collect();
    contributions.sort_by(|a, b| a.public_key.cmp(&b.public_key));
    outcome.reward_pool = valuation.reward_pool;
    outcome.valuation = Some(valuation.summary);
    outcome.contributions = contributions;
    outcome.validators = judged.map(|j| ValidatorsOutcome {
        record: j.record,
        vectors: j.vectors,
        standing: j.standing,
    });
    Ok(outcome)
}

/// The round's updates with their example counts and privacy, in the order of `job.updates`.
fn weighted_views<'a>(job: &'a CloseJob, deltas: &[&'a [f32]]) -> Vec<WeightedUpdate<'a>> {
    job.updates
        .iter()
        .zip(deltas)
        .map(|(m, d)| WeightedUpdate {
            examples: m.examples,
            delta: d,
            privacy: Some(&m.privacy),
        })
        .collect()
}

/// Each update's hospital key, in the order of `job.updates`.
fn update_keys<'a>(cfg: &'a FederationConfig, job: &CloseJob) -> Vec<&'a str> {
    job.updates
        .iter()
        .map(|m| cfg.participants[m.participant].public_key_hex.as_str())
        .collect()
}

/// The state that follows a closed round: the next round opens at `now_ms` from the round's
/// resulting model, or the federation is done after the last round.
pub fn next_state(cfg: &FederationConfig, outcome: &RoundOutcome, now_ms: u64) -> PersistedState {
    if outcome.round >= cfg.rounds {
        PersistedState {
            phase: Phase::Done,
            round: outcome.round,
            global_sha256: outcome.model_after.clone(),
            opened_at_ms: 0,
            deadline_ms: 0,
        }
    } else {
        PersistedState {
            phase: Phase::Open,
            round: outcome.round + 1,
            global_sha256: outcome.model_after.clone(),
            opened_at_ms: now_ms,
            deadline_ms: now_ms + cfg.deadline.as_millis() as u64,
        }
    }
}
