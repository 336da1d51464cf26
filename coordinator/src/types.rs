//! Plain data types shared by every layer of the coordinator: what a federation's state, a
//! round's inputs and a round's outcome are. Serde only; no behaviour beyond naming.

use fedledger_model::Metrics;
use serde::{Deserialize, Serialize};

pub use fedledger_ledger::records::{PrivacyObject, RoundStatus};

/// Where the federation is.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Waiting for a quorum of participants to register.
    Waiting,
    /// `round` is open for updates.
    Open,
    /// `round`'s updates are in; validators are evaluating them (until `deadline_ms`).
    Validating,
    /// All rounds have run.
    Done,
}

impl Phase {
    /// How the phase reads in logs and refusals.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Waiting => "waiting for registrations",
            Phase::Open => "open",
            Phase::Validating => "validating",
            Phase::Done => "done",
        }
    }
}

/// The part of the state that survives restarts (with the updates and results in the store).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PersistedState {
    pub phase: Phase,
    /// The open round (or the last one when done; 0 before the first).
    pub round: u64,
    /// SHA-256 of the current global parameters (stored as a blob).
    pub global_sha256: String,
    pub opened_at_ms: u64,
    pub deadline_ms: u64,
}

/// An accepted update's metadata (the vector is a blob named by `update_sha256`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct UpdateMeta {
    pub round: u64,
    /// Index of the participant in the configuration's enrolment list.
    pub participant: usize,
    pub examples: u64,
    pub update_sha256: String,
    /// Hex of the Ed25519 signature (over the v2 update message).
    pub signature: String,
    /// The privacy object the participant signed, as the ledger records it.
    pub privacy: PrivacyObject,
    pub received_at_ms: u64,
    /// Arrival order within the round (0-based; a refused commit may leave a gap).
    pub seq: u64,
    pub norm: f64,
}

/// A validator's signed utility vector for a round, as received (recorded in the ledger as
/// `fedledger.utilities/v1` entries).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct UtilitiesMeta {
    pub round: u64,
    /// The validator's key, 64 lowercase hex, and its enrolled name.
    pub validator: String,
    pub name: String,
    /// SHA-256 of the design's canonical coalition list.
    pub coalitions_sha256: String,
    /// One utility per coalition, nano-units.
    pub utilities: Vec<i64>,
    /// Base64 Ed25519 signature over the utilities message.
    pub signature: String,
    pub received_at_ms: u64,
}

/// What a round valued by validators records beyond its contributions: the summary's
/// validators record and the vectors it was computed from.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ValidatorsOutcome {
    pub record: fedledger_ledger::records::ValidatorsRecord,
    /// Sorted by validator key (empty when the round fell back).
    pub vectors: Vec<UtilitiesMeta>,
    /// Each validator's standing after the round (what its distance was judged on; the next
    /// round's starting point).
    #[serde(default)]
    pub standing: fedledger_valuation::consensus::Standing,
}

/// A recorded decline.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DeclineMeta {
    pub round: u64,
    pub participant: usize,
    pub reason: String,
    /// Hex of the Ed25519 signature over the decline message.
    pub signature: String,
    pub received_at_ms: u64,
}

/// One accepted update as aggregation and valuation see it.
#[derive(Clone, Copy, Debug)]
pub struct WeightedUpdate<'a> {
    /// Example count the participant claimed (FedAvg weight).
    pub examples: u64,
    /// The parameter delta (local parameters minus global).
    pub delta: &'a [f32],
    /// The DP-SGD run that produced it, as the participant signed it and the ledger records it
    /// (`None`, or an object without noise: no DP-SGD).
    pub privacy: Option<&'a PrivacyObject>,
}

impl WeightedUpdate<'_> {
    /// The DP-SGD noise per unit of signal the update was planned with,
    /// `z / (q n sqrt(T))`: the standard deviation of the noise its `T` steps summed (each with
    /// noise `z C / (q n)` on a mean of clipped gradients) over the largest signal they can
    /// carry (`T C`). `None` without a DP-SGD run (or one without noise or steps).
    pub fn noise_to_signal(&self) -> Option<f64> {
        let p = self.privacy?;
        #[allow(clippy::cast_precision_loss)] // example and step counts far below 2^53
        let (n, t) = (self.examples as f64, p.steps as f64);
        let (z, q) = (p.noise_multiplier(), p.sampling_rate());
        let ok = z > 0.0 && q > 0.0 && t > 0.0 && n > 0.0;
        ok.then(|| z / (q * n * t.sqrt()))
    }
}

/// How FedAvg weighs the updates of a round (the same weights enter the valuation game).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weighting {
    /// `n_i / n`, by claimed example count.
    Examples,
    /// Inversely to the square of each update's planned noise per unit of signal
    /// ([`WeightedUpdate::noise_to_signal`]), normalised to sum to 1: the minimum-variance
    /// combination of independent noisy estimates. Used only when every update of the round
    /// reports a noisy DP-SGD run; otherwise the round falls back to [`Weighting::Examples`].
    InverseNoise,
    /// Between the two by how much the hospitals' updates differ beyond their noise
    /// ([`random_effects_weights`]): inverse noise when they agree, examples when they differ
    /// far more than their noise explains. Falls back to [`Weighting::Examples`] as
    /// `InverseNoise` does.
    RandomEffects,
}

/// The FedAvg weight of each update (they sum to 1), fixed for the round: the valuation game
/// combines any coalition's updates with these same weights, never renormalised, so an update
/// of zeros changes no coalition's model (a null player).
pub fn fedavg_weights(updates: &[WeightedUpdate<'_>], weighting: Weighting) -> Vec<f64> {
    if weighting == Weighting::InverseNoise {
        let inverse: Option<Vec<f64>> = updates
            .iter()
            .map(|u| u.noise_to_signal().map(|r| 1.0 / (r * r)))
            .collect();
        if let Some(inverse) = inverse {
            let total: f64 = inverse.iter().sum();
            if total.is_finite() && total > 0.0 {
                return inverse.iter().map(|w| w / total).collect();
            }
        }
    }
    #[allow(clippy::cast_precision_loss)] // example counts far below 2^53
    let total: f64 = updates.iter().map(|u| u.examples as f64).sum();
    updates
        .iter()
        .map(|u| {
            if total > 0.0 {
                u.examples as f64 / total
            } else {
                1.0 / updates.len() as f64
            }
        })
        .collect()
}

/// FedAvg weights by a random-effects model of the round (as in a meta-analysis, DerSimonian
/// and Laird 1986): update `i` is its hospital's own mean update `mu_i` plus DP-SGD noise of
/// known variance `s_i^2` per coordinate, and the `mu_i` spread around the federation's mean
/// with an unknown variance `tau^2` per coordinate (the hospitals' data differ). The target is
/// the example-weighted mean `sum_i p_i mu_i` (`p_i = n_i / n`, the objective on all rows). The
/// weights minimise the expected squared error of `sum_i w_i u_i` under that model,
/// `tau^2 sum_i (w_i - p_i)^2 + sum_i w_i^2 s_i^2` with `sum_i w_i = 1`:
/// `w_i = (lambda + tau^2 p_i) / (tau^2 + s_i^2)`, `lambda >= 0` normalising. With no spread
/// (`tau = 0`) they are the inverse-noise weights, the minimum-variance combination; with a
/// spread far above the noise, the example weights. `tau^2` is estimated by moments from the
/// round's own updates: `Q = sum_i p_i |u_i - u_p|^2 / d` has expectation
/// `tau^2 (1 - sum_i p_i^2) + sum_i p_i (1 - p_i) s_i^2` (clamped at 0).
///
/// `step` is the task's learning rate times its clipping norm: update `i`'s noise per
/// coordinate is `step * r_i * T_i`, its noise per unit of signal
/// ([`WeightedUpdate::noise_to_signal`]) times the `T_i C` signal of its `T_i` steps times the
/// learning rate. The weights depend only on the updates, their recorded privacy spends and
/// `step`, so replay recomputes them. Example weights when an update reports no noisy run.
pub fn random_effects_weights(updates: &[WeightedUpdate<'_>], step: f64) -> Vec<f64> {
    let examples = fedavg_weights(updates, Weighting::Examples);
    #[allow(clippy::cast_precision_loss)] // step counts far below 2^53
    let noise: Option<Vec<f64>> = updates
        .iter()
        .map(|u| {
            let t = u.privacy?.steps as f64;
            u.noise_to_signal().map(|r| (step * r * t).powi(2))
        })
        .collect();
    let (Some(s2), true) = (noise, step.is_finite() && step > 0.0) else {
        return examples;
    };
    let d = updates.first().map_or(0, |u| u.delta.len());
    if d == 0 || updates.len() < 2 {
        return fedavg_weights(updates, Weighting::InverseNoise);
    }
    let mut mean = vec![0.0f64; d];
    for (u, p) in updates.iter().zip(&examples) {
        for (m, &v) in mean.iter_mut().zip(u.delta) {
            *m += p * f64::from(v);
        }
    }
    #[allow(clippy::cast_precision_loss)] // parameter counts far below 2^53
    let q: f64 = updates
        .iter()
        .zip(&examples)
        .map(|(u, p)| {
            p * u
                .delta
                .iter()
                .zip(&mean)
                .map(|(&v, m)| (f64::from(v) - m).powi(2))
                .sum::<f64>()
        })
        .sum::<f64>()
        / d as f64;
    let noise_part: f64 = examples
        .iter()
        .zip(&s2)
        .map(|(p, s)| p * (1.0 - p) * s)
        .sum();
    let concentration = 1.0 - examples.iter().map(|p| p * p).sum::<f64>();
    let tau2 = if concentration > 0.0 {
        ((q - noise_part) / concentration).max(0.0)
    } else {
        0.0
    };
    let inverse: f64 = s2.iter().map(|s| 1.0 / (tau2 + s)).sum();
    let pulled: f64 = examples
        .iter()
        .zip(&s2)
        .map(|(p, s)| tau2 * p / (tau2 + s))
        .sum();
    let lambda = (1.0 - pulled).max(0.0) / inverse;
    let w: Vec<f64> = examples
        .iter()
        .zip(&s2)
        .map(|(p, s)| (lambda + tau2 * p) / (tau2 + s))
        .collect();
    let total: f64 = w.iter().sum();
    if total.is_finite() && total > 0.0 {
        w.iter().map(|x| x / total).collect()
    } else {
        examples
    }
}

/// What the DP-FedAvg wrapper did in a round, for the round's record.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ServerDpReport {
    pub clip_norm: f64,
    /// The effective noise multiplier accounted for (after the grid-rounding charge).
    pub noise_multiplier: f64,
    pub clipped_updates: u32,
    /// The federation-level (participant-level) epsilon after this round: every round with
    /// server-side DP so far composed, each a Gaussian mechanism over all participants.
    #[serde(default)]
    pub epsilon: f64,
    /// The delta that epsilon holds at (`[aggregation.dp] delta`).
    #[serde(default)]
    pub delta: f64,
}

/// What the ledger records about how a round was valued.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RoundValuation {
    pub estimator: String,
    pub seed: u64,
    pub evaluations: u64,
    /// The utility: `neg_log_loss` (negative validation log-loss) or `accuracy`.
    pub utility: String,
    /// Bootstrap resamples behind the values' standard errors (0: none).
    #[serde(default)]
    pub bootstrap_resamples: u32,
    /// A sampling estimator's own accuracy: the L2 norm of its values' sampling standard errors
    /// over the L2 norm of the values (`None` for exact estimators). Not in the ledger: replay
    /// recomputes it from the recorded seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling_rel_se: Option<f64>,
}

/// One participant's line in a finished round.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ContributionOutcome {
    pub participant: usize,
    /// Arrival order within the round (0-based): the valuation game's player order.
    pub seq: u64,
    pub name: String,
    pub public_key: String,
    pub examples: u64,
    pub update_sha256: String,
    pub signature: String,
    pub privacy: PrivacyObject,
    pub value: f64,
    pub value_nano: i64,
    /// The value's standard error over bootstrap resamples of the validation rows.
    #[serde(default)]
    pub value_se: f64,
    #[serde(default)]
    pub value_se_nano: u64,
    /// Paid this round (the per-round rule); 0 under the settled rule, which pays in
    /// [`RoundOutcome::settlement`].
    pub reward: u64,
    pub flags: Vec<String>,
}

/// A participant that declined the round.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DeclinedOutcome {
    pub participant: usize,
    pub name: String,
    pub public_key: String,
    pub reason: String,
    /// Hex of the Ed25519 signature over the decline message.
    pub signature: String,
}

/// Everything the coordinator knows about a finished round.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RoundOutcome {
    pub round: u64,
    pub status: RoundStatus,
    pub reason: Option<String>,
    pub opened_at_ms: u64,
    pub closed_at_ms: u64,
    pub model_before: String,
    pub model_after: String,
    /// SHA-256 of the validation file the round was evaluated and valued on (kept as a blob).
    pub validation_sha256: String,
    pub aggregator: String,
    pub params: u64,
    /// Validation metrics of the model before and after the round.
    pub metrics_before: Option<Metrics>,
    pub metrics: Option<Metrics>,
    /// Contributions sorted by public key.
    pub contributions: Vec<ContributionOutcome>,
    pub declined: Vec<DeclinedOutcome>,
    pub valuation: Option<RoundValuation>,
    /// Participant-level DP applied by the coordinator this round, if any.
    pub server_dp: Option<ServerDpReport>,
    pub reward_pool: u64,
    /// Wall time spent closing the round (aggregation, evaluation, valuation), microseconds.
    pub close_micros: u64,
    /// The settled reward rule's settlement of the period this round ends, if it ends one.
    #[serde(default)]
    pub settlement: Option<SettlementOutcome>,
    /// SHA-256 of the rules in force for the round (the ledger's `Rules`), recorded in its
    /// summary.
    #[serde(default)]
    pub rules_sha256: Option<String>,
    /// The validators' judgement of the round, in a federation with validators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validators: Option<ValidatorsOutcome>,
    /// The hospitals' histories the selecting strategy compared, when it compared histories
    /// (`[aggregation] history`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<HistoryOutcome>,
}

/// The update histories a round's selection compared ([`crate::aggregate::history`]): for each
/// hospital that sent an update, by key, the blob of its history before the round (absent for
/// its first update) and after it (this update averaged in). Replay recomputes each `after`
/// from `before` and the update, and the selection from the `after`s.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HistoryOutcome {
    /// The weight of the history before the round (`[aggregation] history`).
    pub weight: f64,
    pub before: std::collections::BTreeMap<String, String>,
    pub after: std::collections::BTreeMap<String, String>,
}

impl HistoryOutcome {
    /// Every blob the record names.
    pub fn blobs(&self) -> impl Iterator<Item = &String> {
        self.before.values().chain(self.after.values())
    }
}

/// A period's settlement (the settled reward rule), as recorded after the summary of the
/// period's last round.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SettlementOutcome {
    pub period: u64,
    pub first_round: u64,
    pub last_round: u64,
    /// Completed rounds with a positive gain, ascending.
    pub counted_rounds: Vec<u64>,
    /// Units paid out (0 when nobody's accumulated value was distinguishable from zero).
    pub pool: u64,
    /// One line per participant with a contribution in the period (the cumulative rule: up
    /// to the period's end), sorted by key.
    pub lines: Vec<SettlementLineOutcome>,
    /// The pool per counted round in force at the period's last round (governance may change
    /// it); absent in outcomes stored before governance (the configured pool then).
    #[serde(default)]
    pub pool_per_round: Option<u64>,
    /// The cumulative rules (`shapley-settled/v2`, `/v3`): each line's value, standard error and rounds
    /// are over every counted round since round 1, not only the period's; its payout is the
    /// period's. False in outcomes stored before it.
    #[serde(default)]
    pub cumulative: bool,
    /// The reward rule it was settled under, as recorded (governance may change it); absent in
    /// outcomes stored before the rule was governed (the configured rule then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<fedledger_ledger::records::RewardRecord>,
}

/// One participant's settlement.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SettlementLineOutcome {
    pub name: String,
    pub public_key: String,
    /// Accumulated value over the counted rounds it was not flagged a copy in, nano-units.
    pub value_nano: i64,
    /// Standard error of that sum, nano-units.
    pub se_nano: u64,
    /// Counted rounds accumulated.
    pub rounds: u64,
    /// Accumulated value above `z` standard errors (paid).
    pub distinguishable: bool,
    pub payout: u64,
}

/// A change a waiting participant may want to hear about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub phase: Phase,
    pub round: u64,
    /// Rounds finished (completed or abandoned).
    pub completed: u64,
    /// True while the open round is being closed.
    pub closing: bool,
}

/// The acknowledgement of an accepted update.
#[derive(Clone, Debug, PartialEq)]
pub struct Receipt {
    pub round: u64,
    pub update_sha256: String,
    pub accepted: u32,
    pub quorum: u32,
}

/// The header fields of an update, as domain values.
#[derive(Clone, Debug)]
pub struct UpdateHeader {
    pub round: u64,
    pub examples: u64,
    pub num_params: u64,
    pub update_sha256: String,
    pub signature: Vec<u8>,
    pub privacy: PrivacyObject,
}
