//! Contribution accounting for a completed round: Shapley values of the round's game with their
//! standard errors (bootstrap over validation rows), abuse flags, and the reward split (per
//! round) or the settlement of a period (the settled rule), from the pure `fedledger-valuation`
//! crate and the model's evaluation on the coordinator's validation data.

use std::collections::BTreeMap;

use fedledger_ledger::records::{
    FLAG_EXCLUDED_BY_QUALITY, SettlementPeriod, ValidatorLine, ValidatorsRecord,
};
use fedledger_model::{Dataset, Metrics, ModelSpec};
use fedledger_valuation::{
    AbuseConfig, Estimator, FLAG_COPY_OF_PREFIX, LinearCombinationGame, NonImproving,
    Participation, RewardEntry, RoundValues, RowGame, SettlementRule, ValueEntry,
    bootstrap_standard_errors,
    consensus::{RoundParams, Standing, design, round_consensus_with},
    default_estimator, detect, estimator_by_name, settle, settle_accumulated, split_rewards,
    value_nano,
};

use crate::{
    config::{FederationConfig, RewardRuleKind, UtilityKind, ValuationSection},
    error::CoordinatorError,
    types::{
        RoundOutcome, RoundStatus, RoundValuation, SettlementLineOutcome, SettlementOutcome,
        UpdateMeta, UtilitiesMeta, WeightedUpdate, Weighting, fedavg_weights,
        random_effects_weights,
    },
};

/// Per-contribution results, in the order of the updates passed in.
pub struct ValuedRound {
    pub values: Vec<f64>,
    pub value_nano: Vec<i64>,
    /// Standard errors of the values (bootstrap over validation rows; 0 without resamples).
    pub value_se: Vec<f64>,
    pub value_se_nano: Vec<u64>,
    pub rewards: Vec<u64>,
    pub flags: Vec<Vec<String>>,
    pub reward_pool: u64,
    pub summary: RoundValuation,
}

/// Values contributions and splits the reward pool.
pub struct Valuer {
    settings: ValuationSection,
    federation: String,
    abuse: AbuseConfig,
    weighting: Weighting,
    /// The task's learning rate times its clipping norm (random-effects weights read it).
    noise_step: f64,
    rule: RewardRuleKind,
}

/// The estimator a round valued by its validators' consensus records.
pub const VALIDATORS_ESTIMATOR: &str = "validators-median";

/// What the validators made of a round (a federation with `[validators]`).
#[derive(Clone, Debug, PartialEq)]
pub struct Judgement {
    /// What the summary records (with a fallback reason when too few vectors came in time).
    pub record: ValidatorsRecord,
    /// The vectors it follows from, sorted by validator key (empty on a fallback).
    pub vectors: Vec<UtilitiesMeta>,
    /// The consensus values in the order of the round's updates (`None` on a fallback).
    pub values_nano: Option<Vec<i64>>,
    /// Per update (arrival order), whether the quality rule keeps it.
    pub keep: Vec<bool>,
    /// The validators' standing after the round.
    pub standing: Standing,
}

/// The consensus rule's parameters a round's validators record names, for `players`
/// contributors (the close and replay read them from the same record).
pub fn consensus_params(record: &ValidatorsRecord, players: usize) -> RoundParams {
    RoundParams {
        seed: record.seed,
        players,
        exact_max: record.exact_max as usize,
        permutations: record.permutations as usize,
        pool: record.pool,
        max_distance_milli: record.max_distance_milli,
        quality_k: record.quality_k.map(|k| k as usize),
    }
}

/// The validators' players: the round's updates (indices) sorted by their contributors' keys.
pub fn players_by_key(cfg: &FederationConfig, updates: &[UpdateMeta]) -> Vec<usize> {
    let key = |i: usize| &cfg.participants[updates[i].participant].public_key_hex;
    let mut players: Vec<usize> = (0..updates.len()).collect();
    players.sort_by(|a, b| key(*a).cmp(key(*b)));
    players
}

/// The seed of `round`'s validators' game (announced in its task header before any upload)
/// and the game's design for `players` contributors.
pub fn validators_design(
    cfg: &FederationConfig,
    round: u64,
    players: usize,
) -> Result<(u64, fedledger_valuation::consensus::Design), CoordinatorError> {
    let v = cfg.validating.as_ref().ok_or_else(|| {
        CoordinatorError::Internal("a round is validated without [validators]".into())
    })?;
    let seed = round_seed(&cfg.federation, round, cfg.valuation.seed);
    let d = design(seed, players, v.exact_max as usize, v.permutations as usize).map_err(|e| {
        CoordinatorError::Internal(format!("validators' design of round {round}: {e}"))
    })?;
    Ok((seed, d))
}

/// The validators' judgement of a round from the vectors received in time: consensus values,
/// distances, validators' pay and the quality rule's verdicts, through the valuation crate's
/// `round_consensus` (the function `verify` recomputes them with). `None` without
/// `[validators]`.
pub fn judge(
    cfg: &FederationConfig,
    round: u64,
    updates: &[UpdateMeta],
    vectors: &[UtilitiesMeta],
    before: &Standing,
) -> Result<Option<Judgement>, CoordinatorError> {
    let Some(v) = &cfg.validating else {
        return Ok(None);
    };
    let key = |i: usize| {
        cfg.participants[updates[i].participant]
            .public_key_hex
            .as_str()
    };
    let players = players_by_key(cfg, updates);
    let (seed, d) = validators_design(cfg, round, players.len())?;
    let internal = |e: fedledger_valuation::ValuationError| {
        CoordinatorError::Internal(format!("validators' consensus of round {round}: {e}"))
    };
    let mut record = ValidatorsRecord {
        seed,
        exact_max: u64::from(v.exact_max),
        permutations: u64::from(v.permutations),
        coalitions: d.coalitions.len() as u64,
        coalitions_sha256: fedledger_model::digest::sha256_hex(&d.canonical()),
        max_distance_milli: v.max_distance_milli,
        quality_k: v.quality_k,
        pool: v.pool_per_round,
        fallback: None,
        lines: Vec::new(),
    };
    let params = consensus_params(&record, players.len());
    if vectors.len() < v.quorum as usize {
        record.fallback = Some(format!(
            "{} validator vector(s) by the validators' deadline, quorum is {}; valued on the coordinator's validation file",
            vectors.len(),
            v.quorum
        ));
        return Ok(Some(Judgement {
            record,
            vectors: Vec::new(),
            values_nano: None,
            keep: vec![true; updates.len()],
            standing: before.clone(),
        }));
    }
    let mut vectors = vectors.to_vec();
    vectors.sort_by(|a, b| a.validator.cmp(&b.validator));
    let keys: Vec<&str> = vectors.iter().map(|m| m.validator.as_str()).collect();
    let refs: Vec<&[i64]> = vectors.iter().map(|m| m.utilities.as_slice()).collect();
    let player_keys: Vec<&str> = players.iter().map(|i| key(*i)).collect();
    let c = round_consensus_with(&params, &keys, &refs, &player_keys, before).map_err(internal)?;
    record.lines = keys
        .iter()
        .zip(c.distances_milli.iter().zip(&c.rewards))
        .map(|(k, (d, r))| ValidatorLine {
            validator: (*k).to_owned(),
            distance_milli: *d,
            reward: *r,
        })
        .collect();
    let mut values_nano = vec![0i64; updates.len()];
    let mut keep = vec![true; updates.len()];
    for (player, &i) in players.iter().enumerate() {
        values_nano[i] = c.values_nano[player];
        keep[i] = c.keep[player];
    }
    Ok(Some(Judgement {
        record,
        vectors,
        values_nano: Some(values_nano),
        keep,
        standing: c.standing,
    }))
}

/// The estimator seed of a round: SHA-256 of the federation, round and configured seed, so
/// anyone holding the record can recompute it.
pub fn round_seed(federation: &str, round: u64, seed: u64) -> u64 {
    let d = fedledger_model::digest::sha256_hex(
        format!("fedledger/valuation-seed/v1\n{federation}\n{round}\n{seed}\n").as_bytes(),
    );
    u64::from_str_radix(&d[..16], 16).expect("hex digest")
}

impl Valuer {
    pub fn from_config(cfg: &FederationConfig) -> Self {
        Self::with_settings(&cfg.federation, cfg.valuation.clone())
            .with_weighting(cfg.strategy.weighting())
            .with_noise_step(cfg.noise_step())
            .with_rule(cfg.rewards.rule)
    }

    /// Pay each round (`per-round`) or nothing per round (`settled`: paid by settlements).
    pub fn with_rule(mut self, rule: RewardRuleKind) -> Self {
        self.rule = rule;
        self
    }

    /// The task's learning rate times its clipping norm, for [`Weighting::RandomEffects`].
    pub fn with_noise_step(mut self, step: f64) -> Self {
        self.noise_step = step;
        self
    }

    /// Combine coalitions' updates with `weighting`'s fixed weights (default: examples).
    pub fn with_weighting(mut self, weighting: Weighting) -> Self {
        self.weighting = weighting;
        self
    }

    pub fn with_settings(federation: &str, settings: ValuationSection) -> Self {
        Self {
            abuse: AbuseConfig {
                copy_cosine: settings.copy_cosine,
                ..AbuseConfig::default()
            },
            settings,
            federation: federation.to_owned(),
            weighting: Weighting::Examples,
            noise_step: 0.0,
            rule: RewardRuleKind::PerRound,
        }
    }

    fn estimator(&self, players: usize) -> Result<Box<dyn Estimator>, CoordinatorError> {
        let budget = (self.settings.max_evaluations > 0).then_some(self.settings.max_evaluations);
        if self.settings.estimator == "auto" {
            return Ok(default_estimator(players, budget));
        }
        estimator_by_name(&self.settings.estimator, budget)
            .map_err(|e| CoordinatorError::Internal(format!("valuation: {e}")))
    }

    /// The round's pay: the pool split by value (per-round rule), or nothing (the settled
    /// rules pay in settlements).
    pub fn round_rewards(&self, entries: &[RewardEntry<'_>]) -> (Vec<u64>, u64) {
        match self.rule {
            RewardRuleKind::PerRound => {
                let split = split_rewards(self.settings.reward_pool_per_round, entries);
                (split.rewards, split.recorded_pool)
            }
            RewardRuleKind::Impact | RewardRuleKind::Cumulative | RewardRuleKind::Settled => {
                (vec![0; entries.len()], 0)
            }
        }
    }

    /// Replace a round's values by the validators' consensus (`judged`, in the order of the
    /// round's updates): the values and their (absent) standard errors, the quality rule's
    /// flags, and the pay that follows from them. `keys` are the updates' contributors.
    pub fn apply_consensus(&self, valued: &mut ValuedRound, keys: &[&str], judged: &Judgement) {
        let Some(values) = &judged.values_nano else {
            return;
        };
        for (i, v) in values.iter().enumerate() {
            valued.value_nano[i] = *v;
            valued.values[i] = *v as f64 / 1e9;
            valued.value_se[i] = 0.0;
            valued.value_se_nano[i] = 0;
            if !judged.keep[i] {
                valued.flags[i].push(FLAG_EXCLUDED_BY_QUALITY.to_owned());
            }
        }
        let entries: Vec<RewardEntry<'_>> = keys
            .iter()
            .zip(&valued.value_nano)
            .zip(&valued.flags)
            .map(|((k, v), f)| RewardEntry {
                participant_key_hex: k,
                value_nano: *v,
                eligible: !f
                    .iter()
                    .any(|f| f.starts_with(FLAG_COPY_OF_PREFIX) || f == FLAG_EXCLUDED_BY_QUALITY),
            })
            .collect();
        (valued.rewards, valued.reward_pool) = self.round_rewards(&entries);
        valued.summary.estimator = VALIDATORS_ESTIMATOR.to_owned();
        valued.summary.seed = judged.record.seed;
        valued.summary.evaluations = judged.record.coalitions * judged.vectors.len() as u64;
        valued.summary.bootstrap_resamples = 0;
        valued.summary.sampling_rel_se = None;
    }

    /// Value the round's updates (in arrival order), flag abuse, split the pool. `noisy`: the
    /// updates carry DP noise (then only zero or near-zero updates count as free riding).
    #[allow(clippy::too_many_arguments)]
    pub fn value_round(
        &self,
        round: u64,
        spec: &ModelSpec,
        validation: &Dataset,
        global: &[f32],
        updates: &[WeightedUpdate<'_>],
        names: &[&str],
        keys: &[&str],
        noisy: bool,
    ) -> Result<ValuedRound, CoordinatorError> {
        let seed = round_seed(&self.federation, round, self.settings.seed);
        self.value_round_seeded(
            round, seed, spec, validation, global, updates, names, keys, noisy,
        )
    }

    /// [`Self::value_round`] with an explicit estimator seed (replay uses the recorded one).
    #[allow(clippy::too_many_arguments)]
    pub fn value_round_seeded(
        &self,
        round: u64,
        seed: u64,
        spec: &ModelSpec,
        validation: &Dataset,
        global: &[f32],
        updates: &[WeightedUpdate<'_>],
        names: &[&str],
        keys: &[&str],
        noisy: bool,
    ) -> Result<ValuedRound, CoordinatorError> {
        let utility = self.settings.utility;
        // Coalitions are scored per validation row (the utility is their mean, the same bits
        // as the metric), so bootstrap resamples reuse every coalition's model.
        let score = |_: &[f32]| f64::NAN;
        let deltas: Vec<&[f32]> = updates.iter().map(|u| u.delta).collect();
        let examples: Vec<u64> = updates.iter().map(|u| u.examples).collect();
        let internal = |e: fedledger_valuation::ValuationError| {
            CoordinatorError::Internal(format!("valuation of round {round}: {e}"))
        };
        let game = match self.weighting {
            Weighting::Examples => LinearCombinationGame::new(global, &deltas, &examples, score),
            // The aggregate's own fixed weights: a zero update stays a null player.
            Weighting::InverseNoise => LinearCombinationGame::with_weights(
                global,
                &deltas,
                fedavg_weights(updates, Weighting::InverseNoise),
                score,
            ),
            Weighting::RandomEffects => LinearCombinationGame::with_weights(
                global,
                &deltas,
                random_effects_weights(updates, self.noise_step),
                score,
            ),
        }
        .map_err(internal)?;
        let rows = RowGame::new(
            updates.len(),
            validation.len(),
            fedledger_valuation::Utility::null_players(&game),
            |c| {
                game.with_parameters(c, |params| {
                    match fedledger_model::evaluate_rows(spec, params, validation) {
                        Ok(r) => match utility {
                            UtilityKind::NegLogLoss => r.log_loss.iter().map(|l| -l).collect(),
                            UtilityKind::Accuracy => r
                                .correct
                                .iter()
                                .map(|&c| if c { 1.0 } else { 0.0 })
                                .collect(),
                        },
                        Err(_) => Vec::new(),
                    }
                })
            },
        );
        let estimator = self.estimator(updates.len())?;
        let valuation = estimator.estimate(&rows, seed).map_err(internal)?;
        let sampling_rel_se = valuation.relative_sampling_se();
        let resamples = self.settings.bootstrap_resamples;
        let value_se = bootstrap_standard_errors(&rows, estimator.as_ref(), seed, resamples)
            .map_err(internal)?;
        if let Some(i) = valuation.values.iter().position(|v| !v.is_finite()) {
            return Err(CoordinatorError::Internal(format!(
                "valuation of round {round}: value of {} is not finite",
                names[i]
            )));
        }
        let participations: Vec<Participation<'_>> = names
            .iter()
            .zip(&deltas)
            .enumerate()
            .map(|(i, (name, d))| Participation {
                name,
                update: Some(d),
                received: i as u64,
            })
            .collect();
        let abuse = AbuseConfig {
            check_uncorrelated: !noisy,
            ..self.abuse.clone()
        };
        let flags = detect(&participations, &abuse).map_err(internal)?;
        let value_nano: Vec<i64> = valuation.values.iter().map(|v| value_nano(*v)).collect();
        let entries: Vec<RewardEntry<'_>> = keys
            .iter()
            .zip(&value_nano)
            .zip(&flags)
            .map(|((k, v), f)| RewardEntry {
                participant_key_hex: k,
                value_nano: *v,
                eligible: !f.iter().any(|f| f.starts_with(FLAG_COPY_OF_PREFIX)),
            })
            .collect();
        let (rewards, reward_pool) = self.round_rewards(&entries);
        let value_se_nano = value_se
            .iter()
            .map(|&s| fedledger_valuation::value_nano(s).max(0).unsigned_abs())
            .collect();
        Ok(ValuedRound {
            values: valuation.values,
            value_nano,
            value_se,
            value_se_nano,
            rewards,
            flags,
            reward_pool,
            summary: RoundValuation {
                estimator: valuation.estimator,
                seed,
                evaluations: valuation.evaluations,
                utility: utility.as_str().to_owned(),
                bootstrap_resamples: if resamples >= 2 { resamples } else { 0 },
                sampling_rel_se,
            },
        })
    }
}

/// The valuation settings that recompute a recorded round: its recorded estimator by name and,
/// for `gtg` when no budget is configured, the budget `max(default_budget(players), recorded
/// evaluations)`. That is the budget the default (`auto`) round ran with whenever the budget
/// bound it, and at least what an unbudgeted run used otherwise; a budget the run never
/// reached changes nothing, so either way the recomputation follows the recorded run's path.
pub fn replay_settings(
    settings: &ValuationSection,
    recorded_estimator: &str,
    recorded_evaluations: u64,
    players: usize,
) -> ValuationSection {
    let mut s = settings.clone();
    s.estimator = recorded_estimator.to_owned();
    if s.max_evaluations == 0 && recorded_estimator == "gtg" {
        s.max_evaluations = fedledger_valuation::default_budget(players).max(recorded_evaluations);
    }
    s
}

/// A model's score in the utility `utility` (`neg_log_loss` or `accuracy`), in nano-units, as
/// the round summary records it.
pub fn score_nano(utility: &str, m: Option<&Metrics>) -> i64 {
    m.map_or(0, |m| {
        if utility == "accuracy" {
            value_nano(m.accuracy)
        } else {
            value_nano(-m.log_loss)
        }
    })
}

/// The utility a round was scored in.
pub fn round_utility(cfg: &FederationConfig, o: &RoundOutcome) -> String {
    o.valuation
        .as_ref()
        .map_or(cfg.valuation.utility_name(), |v| v.utility.clone())
}

/// The round's recorded validation scores before and after, nano-units (after = before when it
/// produced no model).
pub fn recorded_scores(cfg: &FederationConfig, o: &RoundOutcome) -> (i64, i64) {
    let utility = round_utility(cfg, o);
    (
        score_nano(&utility, o.metrics_before.as_ref()),
        score_nano(&utility, o.metrics.as_ref().or(o.metrics_before.as_ref())),
    )
}

/// The settlement, under the configured settled rule with parameters `rule`, of `period`, which
/// the last of `rounds` ends; `rounds` is the federation's history up to that round,
/// ascending (the cumulative rule also reads the earlier rounds' settlements: what was paid).
/// From exactly the numbers the ledger records for those rounds, so `verify` recomputes it.
pub fn settle_period(
    cfg: &FederationConfig,
    rule: &SettlementRule,
    period: SettlementPeriod,
    rounds: &[&RoundOutcome],
) -> SettlementOutcome {
    let values: Vec<RoundValues<'_>> = rounds
        .iter()
        .map(|o| {
            let completed = o.status == RoundStatus::Completed;
            let (before, after) = recorded_scores(cfg, o);
            RoundValues {
                round: o.round,
                completed,
                gain_nano: after.saturating_sub(before),
                entries: o
                    .contributions
                    .iter()
                    .map(|c| ValueEntry {
                        participant_key_hex: &c.public_key,
                        // As recorded: an abandoned round's values are 0.
                        value_nano: if completed { c.value_nano } else { 0 },
                        se_nano: if completed { c.value_se_nano } else { 0 },
                        eligible: !c.flags.iter().any(|f| f.starts_with(FLAG_COPY_OF_PREFIX)),
                    })
                    .collect(),
            }
        })
        .collect();
    let last_round = rounds.last().map_or(0, |o| o.round);
    let cumulative = match cfg.rewards.rule {
        RewardRuleKind::Impact => Some(NonImproving::Full),
        RewardRuleKind::Cumulative => Some(NonImproving::Ignored),
        RewardRuleKind::Settled | RewardRuleKind::PerRound => None,
    };
    let s = if let Some(non_improving) = cumulative {
        let mut paid_before: BTreeMap<&str, u64> = BTreeMap::new();
        for l in rounds
            .iter()
            .filter(|o| o.round < last_round)
            .filter_map(|o| o.settlement.as_ref())
            .flat_map(|s| &s.lines)
        {
            let p = paid_before.entry(l.public_key.as_str()).or_insert(0);
            *p = p.saturating_add(l.payout);
        }
        settle_accumulated(rule, &values, period.first, &paid_before, non_improving)
    } else {
        settle(rule, &values, period.first)
    };
    let name_of = |key: &str| {
        cfg.participants
            .iter()
            .find(|p| p.public_key_hex == key)
            .map_or_else(String::new, |p| p.name.clone())
    };
    SettlementOutcome {
        period: period.number,
        first_round: period.first,
        last_round,
        rule: Some(cfg.rewards.record(cfg.valuation.reward_pool_per_round)),
        counted_rounds: s.counted_rounds,
        pool: s.pool,
        pool_per_round: Some(cfg.valuation.reward_pool_per_round),
        cumulative: cumulative.is_some(),
        lines: s
            .participants
            .into_iter()
            .map(|p| SettlementLineOutcome {
                name: name_of(&p.participant_key_hex),
                public_key: p.participant_key_hex,
                value_nano: p.value_nano,
                se_nano: p.se_nano,
                rounds: p.rounds,
                distinguishable: p.distinguishable,
                payout: p.payout,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use fedledger_ledger::records::PrivacyObject;

    use super::*;

    fn spend(noise_multiplier: f64) -> PrivacyObject {
        PrivacyObject::conservative("rdp", noise_multiplier, 1.0, 30, 1e-5)
    }

    #[test]
    fn inverse_noise_weights_keep_a_zero_update_a_null_player() {
        let csv = "a,b,y\n1.0,0.5,1\n-1.0,-0.2,0\n0.8,0.1,1\n-0.5,-0.9,0\n";
        let mut validation = Dataset::from_csv_reader(csv.as_bytes(), "y").unwrap();
        validation.classes = 2;
        let spec = ModelSpec::logreg(2, 2);
        let global = vec![0f32; 3];
        let useful = [0.5f32, 0.2, 0.0];
        let zero = [0f32; 3];
        let (quiet, loud) = (spend(2.0), spend(8.0));
        let updates = [
            WeightedUpdate {
                examples: 100,
                delta: &useful,
                privacy: Some(&quiet),
            },
            WeightedUpdate {
                examples: 400,
                delta: &zero,
                privacy: Some(&loud),
            },
        ];
        // z / (q n sqrt T): 2 / (100 sqrt 30) and 8 / (400 sqrt 30), equal: equal weights,
        // where example weights would be 1 : 4.
        let w = fedavg_weights(&updates, Weighting::InverseNoise);
        assert!(
            (w[0] - 0.5).abs() < 1e-12 && (w[1] - 0.5).abs() < 1e-12,
            "{w:?}"
        );
        let valuer = Valuer::with_settings("f", ValuationSection::default())
            .with_weighting(Weighting::InverseNoise);
        let valued = valuer
            .value_round(
                1,
                &spec,
                &validation,
                &global,
                &updates,
                &["a", "b"],
                &["ka", "kb"],
                true,
            )
            .unwrap();
        assert_eq!(valued.values[1], 0.0, "{:?}", valued.values);
        assert!(valued.values[0] > 0.0, "{:?}", valued.values);
        // Efficiency: the values add up to the aggregate's gain, U(all) - U(none).
        let all: Vec<f32> = useful.iter().map(|v| v * w[0] as f32).collect();
        let score = |p: &[f32]| {
            -fedledger_model::evaluate(&spec, p, &validation)
                .unwrap()
                .log_loss
        };
        let gain = score(&all) - score(&global);
        assert!((valued.values.iter().sum::<f64>() - gain).abs() < 1e-9);
    }

    #[test]
    fn random_effects_weights_run_from_inverse_noise_to_examples_with_the_spread() {
        let (a, b, c) = (spend(2.0), spend(3.0), spend(8.0));
        let same = [0.25f32, -0.5, 1.0, 0.0];
        let apart = [
            [1000f32, 0.0, -3.0, 7.0],
            [-800.0, 50.0, 2.0, 0.0],
            [5.0, -900.0, 0.0, 1.0],
        ];
        fn round<'a>(
            spends: [&'a PrivacyObject; 3],
            deltas: [&'a [f32]; 3],
        ) -> Vec<WeightedUpdate<'a>> {
            [100, 200, 400]
                .into_iter()
                .zip(spends)
                .zip(deltas)
                .map(|((examples, p), delta)| WeightedUpdate {
                    examples,
                    delta,
                    privacy: Some(p),
                })
                .collect()
        }
        let close = |x: &[f64], y: &[f64], tol: f64| {
            x.iter().zip(y).all(|(p, q)| (p - q).abs() < tol) && x.len() == y.len()
        };
        // Updates that agree: no spread beyond the noise, the minimum-variance weights.
        let agree = round([&a, &b, &c], [&same, &same, &same]);
        let w = random_effects_weights(&agree, 0.1);
        let inverse = fedavg_weights(&agree, Weighting::InverseNoise);
        assert!(close(&w, &inverse, 1e-12), "{w:?} vs {inverse:?}");
        // Updates far apart next to their noise: the example weights (the union's objective).
        let differ = round([&a, &b, &c], [&apart[0], &apart[1], &apart[2]]);
        let w = random_effects_weights(&differ, 1e-3);
        let examples = fedavg_weights(&differ, Weighting::Examples);
        assert!(close(&w, &examples, 1e-6), "{w:?} vs {examples:?}");
        // In between: positive, summing to 1, between the two for the largest hospital.
        let w = random_effects_weights(&differ, 3000.0);
        let inverse = fedavg_weights(&differ, Weighting::InverseNoise);
        assert!(w.iter().all(|x| *x > 0.0), "{w:?}");
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        let (lo, hi) = (examples[2].min(inverse[2]), examples[2].max(inverse[2]));
        assert!(
            lo < w[2] && w[2] < hi,
            "{w:?} between {examples:?} and {inverse:?}"
        );
        // No noisy run, or no step: example weights.
        let plain: Vec<WeightedUpdate<'_>> = differ
            .iter()
            .map(|u| WeightedUpdate {
                privacy: None,
                ..*u
            })
            .collect();
        assert!(close(
            &random_effects_weights(&plain, 0.1),
            &examples,
            1e-12
        ));
        assert!(close(
            &random_effects_weights(&differ, 0.0),
            &examples,
            1e-12
        ));
    }

    #[test]
    fn a_round_with_an_update_without_noise_falls_back_to_example_weights() {
        let d = [1f32];
        let s = spend(2.0);
        let updates = [
            WeightedUpdate {
                examples: 1,
                delta: &d,
                privacy: Some(&s),
            },
            WeightedUpdate {
                examples: 3,
                delta: &d,
                privacy: None,
            },
        ];
        assert_eq!(
            fedavg_weights(&updates, Weighting::InverseNoise),
            vec![0.25, 0.75]
        );
    }

    /// A round of 30 hospitals valued by the default (`auto`: gtg within its budget) and one
    /// valued by gtg named without a budget both recompute bit for bit from what the record
    /// keeps (estimator, seed, evaluations) through `replay_settings`.
    #[test]
    fn rounds_valued_by_sampling_recompute_from_the_record() {
        let rows: String = (0..40)
            .map(|i| {
                let x = (i as f64 * 0.37).sin();
                format!("{x},{},{}\n", (i as f64 * 0.11).cos(), u8::from(x > 0.0))
            })
            .collect();
        let mut validation =
            Dataset::from_csv_reader(format!("a,b,y\n{rows}").as_bytes(), "y").unwrap();
        validation.classes = 2;
        let spec = ModelSpec::logreg(2, 2);
        let global = vec![0f32; 3];
        let deltas: Vec<[f32; 3]> = (0..30)
            .map(|i| {
                let t = i as f32;
                [
                    (t * 0.7).sin() * 0.3,
                    (t * 1.3).cos() * 0.2,
                    (t * 0.5).sin() * 0.1,
                ]
            })
            .collect();
        let updates: Vec<WeightedUpdate<'_>> = deltas
            .iter()
            .map(|d| WeightedUpdate {
                examples: 10,
                delta: d,
                privacy: None,
            })
            .collect();
        let names: Vec<String> = (0..30).map(|i| format!("h{i}")).collect();
        let keys: Vec<String> = (0..30).map(|i| format!("{i:064x}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let base = ValuationSection {
            bootstrap_resamples: 0,
            ..ValuationSection::default()
        };
        let value = |settings: ValuationSection, seed: Option<u64>| {
            let valuer = Valuer::with_settings("f", settings);
            let (round, v) = (3, &validation);
            match seed {
                None => {
                    valuer.value_round(round, &spec, v, &global, &updates, &names, &keys, false)
                }
                Some(s) => valuer.value_round_seeded(
                    round, s, &spec, v, &global, &updates, &names, &keys, false,
                ),
            }
            .unwrap()
        };
        let mut evaluations = Vec::new();
        for estimator in ["auto", "gtg"] {
            let settings = ValuationSection {
                estimator: estimator.into(),
                ..base.clone()
            };
            let first = value(settings.clone(), None);
            let again = replay_settings(
                &settings,
                &first.summary.estimator,
                first.summary.evaluations,
                updates.len(),
            );
            let second = value(again, Some(first.summary.seed));
            assert_eq!(first.summary.estimator, "gtg");
            assert_eq!(first.value_nano, second.value_nano, "{estimator}");
            assert_eq!(first.summary.evaluations, second.summary.evaluations);
            evaluations.push(first.summary.evaluations);
        }
        // The budget bound the default round: unbudgeted, gtg went further.
        assert!(evaluations[0] <= fedledger_valuation::default_budget(30));
        assert!(evaluations[1] > evaluations[0], "{evaluations:?}");
    }
}
