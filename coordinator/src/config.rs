//! `coordinator.toml`: what an operator writes, and the validated configuration the coordinator
//! runs with.
//!
//! The complete file, every field with its default and a comment, is `config/coordinator.toml`
//! ([`DEFAULT_CONFIG`], what `fedledger-coordinator --print-default-config` prints and the
//! README's configuration reference shows); a test keeps it equal to the fields below.

use std::{collections::HashSet, net::SocketAddr, path::PathBuf, time::Duration};

use fedledger_model::{Dataset, ModelSpec, Standardiser};
use serde::{Deserialize, Serialize};

use fedledger_privacy::AccountantKind;

use crate::types::Weighting;

/// A complete `coordinator.toml`: every field with its default, commented
/// (`fedledger-coordinator --print-default-config`). Valid once the validation file and the
/// hospitals' public key files it names exist.
pub const DEFAULT_CONFIG: &str = include_str!("../config/coordinator.toml");

/// The file format, as written by an operator.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub federation: String,
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    pub model: ModelSpec,
    pub data: DataSection,
    pub rounds: RoundsSection,
    #[serde(default)]
    pub training: TrainingSection,
    #[serde(default)]
    pub aggregation: AggregationSection,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default)]
    pub valuation: ValuationSection,
    #[serde(default)]
    pub rewards: RewardsSection,
    #[serde(default)]
    pub privacy: PrivacyPlanSection,
    #[serde(default)]
    pub ledger: LedgerSection,
    /// TLS on the gRPC endpoint and the tlog-tiles server. Absent: plaintext (loopback trials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSection>,
    /// Prometheus metrics and the admin status endpoint (`fedledger-coordinator status`).
    #[serde(default)]
    pub metrics: MetricsSection,
    /// Governors and threshold (and the accepted data schema) named in the genesis.
    #[serde(default)]
    pub governance: GovernanceSection,
    #[serde(rename = "participant", default)]
    pub participants: Vec<ParticipantEntry>,
    /// Validators' rules; absent: the coordinator's validation file values every round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validators: Option<ValidatorsSection>,
    /// Validators enrolled in the genesis (`[[validator]]`, like `[[participant]]`).
    #[serde(rename = "validator", default, skip_serializing_if = "Vec::is_empty")]
    pub validator_entries: Vec<ParticipantEntry>,
}

/// `[validators]`: how validators judge each round (README: Validators). Every field is
/// recorded in each round's summary, so `verify` recomputes the consensus with them.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ValidatorsSection {
    /// Seconds validators have once contributions close.
    #[serde(default = "default_validators_deadline")]
    pub deadline_secs: u64,
    /// Vectors needed to value a round by consensus; fewer in time: the round is valued on the
    /// coordinator's validation file, and records why.
    #[serde(default = "default_one")]
    pub quorum: u32,
    /// The game is exact (every coalition) up to this many contributors (at most 12).
    #[serde(default = "default_exact_max")]
    pub exact_max: u32,
    /// Above `exact_max`: this many sampled permutations, every prefix evaluated.
    #[serde(default = "default_permutations")]
    pub permutations: u32,
    /// Units split equally among the validators near consensus, each round.
    #[serde(default)]
    pub pool_per_round: u64,
    /// A validator whose values are further than this from the consensus values (relative L2,
    /// thousandths) is flagged and paid nothing.
    #[serde(default = "default_max_distance")]
    pub max_distance_milli: u64,
    /// The quality rule: leave out of the aggregate an update whose contributor's consensus
    /// value summed over the rounds so far is negative and (k >= 1) whose summed value is
    /// negative in at least k validators' own games too. Absent: every update is aggregated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality_k: Option<u64>,
}

fn default_validators_deadline() -> u64 {
    120
}
fn default_one() -> u32 {
    1
}
fn default_exact_max() -> u32 {
    8
}
fn default_permutations() -> u32 {
    20
}
fn default_max_distance() -> u64 {
    1000
}

impl Default for ValidatorsSection {
    fn default() -> Self {
        Self {
            deadline_secs: default_validators_deadline(),
            quorum: 1,
            exact_max: default_exact_max(),
            permutations: default_permutations(),
            pool_per_round: 0,
            max_distance_milli: default_max_distance(),
            quality_k: None,
        }
    }
}

impl ValidatorsSection {
    /// The section a governed change sets.
    pub fn from_rules(r: &fedledger_ledger::records::ValidatorsRules) -> Option<Self> {
        Some(Self {
            deadline_secs: r.deadline_secs,
            quorum: u32::try_from(r.quorum).ok()?,
            exact_max: u32::try_from(r.exact_max).ok()?,
            permutations: u32::try_from(r.permutations).ok()?,
            pool_per_round: r.pool_per_round,
            max_distance_milli: r.max_distance_milli,
            quality_k: r.quality_k,
        })
    }

    /// As a governance change records it.
    pub fn rules(&self) -> fedledger_ledger::records::ValidatorsRules {
        fedledger_ledger::records::ValidatorsRules {
            deadline_secs: self.deadline_secs,
            quorum: u64::from(self.quorum),
            exact_max: u64::from(self.exact_max),
            permutations: u64::from(self.permutations),
            pool_per_round: self.pool_per_round,
            max_distance_milli: self.max_distance_milli,
            quality_k: self.quality_k,
        }
    }

    /// The largest game `contributors` could make must fit the ledger's record (at most
    /// `MAX_COALITIONS` coalitions: every prefix of every sampled permutation, plus one).
    pub fn check_design(&self, contributors: usize) -> Result<(), String> {
        let max = fedledger_ledger::records::MAX_COALITIONS;
        let coalitions = if contributors <= self.exact_max as usize {
            1u64 << contributors
        } else {
            u64::from(self.permutations) * (contributors as u64 + 1) + 1
        };
        if coalitions > max {
            return Err(format!(
                "validators: a game of {contributors} contributors and {} permutations lists up \
                 to {coalitions} coalitions, more than a round's record holds ({max}); lower \
                 validators.permutations",
                self.permutations
            ));
        }
        Ok(())
    }

    /// The checks of `[validators]` alone.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=366 * 24 * 3600).contains(&self.deadline_secs) {
            return Err(format!(
                "validators.deadline_secs must be between 1 and 31622400, got {}",
                self.deadline_secs
            ));
        }
        if self.quorum == 0 {
            return Err("validators.quorum must be at least 1".into());
        }
        if self.exact_max > fedledger_valuation::EXACT_HARD_MAX_PLAYERS as u32 {
            return Err(format!(
                "validators.exact_max must be at most {}, got {}",
                fedledger_valuation::EXACT_HARD_MAX_PLAYERS,
                self.exact_max
            ));
        }
        if self.permutations == 0 || self.permutations > 10_000 {
            return Err(format!(
                "validators.permutations must be between 1 and 10000, got {}",
                self.permutations
            ));
        }
        Ok(())
    }
}

/// `[governance]`: governors (Ed25519 keys, hex), the threshold k, and the accepted data
/// schema, as the genesis records them.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GovernanceSection {
    #[serde(default)]
    pub governors: Vec<String>,
    #[serde(default)]
    pub threshold: u64,
    #[serde(default)]
    pub schema: Option<SchemaSection>,
}

/// The accepted data schema as an operator writes it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SchemaSection {
    pub label: String,
    pub features: Vec<FeatureSection>,
}

/// One feature column and the range its values are clamped to.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FeatureSection {
    pub name: String,
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
}

/// The validated `[governance]`: keys lowercase hex, sorted.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GovernanceConfig {
    pub governors: Vec<String>,
    pub threshold: u64,
    pub schema: Option<fedledger_ledger::records::SchemaRecord>,
}

impl GovernanceSection {
    fn validate(
        &self,
        model_features: usize,
        label_column: &str,
    ) -> Result<GovernanceConfig, String> {
        let mut governors = Vec::new();
        for g in &self.governors {
            let key = decode_public_key(g).map_err(|e| format!("governance.governors: {e}"))?;
            governors.push(hex::encode(key));
        }
        governors.sort();
        governors.dedup();
        if governors.len() != self.governors.len() {
            return Err("governance.governors names a key twice".into());
        }
        let n = governors.len() as u64;
        if (n == 0 && self.threshold != 0) || (n > 0 && !(1..=n).contains(&self.threshold)) {
            return Err(format!(
                "governance.threshold must be between 1 and the {n} governors (0 without governors), got {}",
                self.threshold
            ));
        }
        let schema = match &self.schema {
            None => None,
            Some(s) => {
                if s.label != label_column {
                    return Err(format!(
                        "governance.schema.label {:?} differs from data.label_column {label_column:?}",
                        s.label
                    ));
                }
                if s.features.len() != model_features {
                    return Err(format!(
                        "governance.schema names {} features but model.features = {model_features}",
                        s.features.len()
                    ));
                }
                let bound = |x: Option<f64>, which: &str, name: &str| match x {
                    None => Ok(None),
                    Some(v) if v.is_finite() => Ok(Some(format!("{v}"))),
                    Some(v) => Err(format!(
                        "governance.schema: feature {name}: {which} {v} is not finite"
                    )),
                };
                let record = fedledger_ledger::records::SchemaRecord {
                    label: s.label.clone(),
                    features: s
                        .features
                        .iter()
                        .map(|f| {
                            Ok(fedledger_ledger::records::FeatureRecord {
                                name: f.name.clone(),
                                min: bound(f.min, "min", &f.name)?,
                                max: bound(f.max, "max", &f.name)?,
                            })
                        })
                        .collect::<Result<_, String>>()?,
                };
                fedledger_ledger::records::check_schema(&record)
                    .map_err(|e| format!("governance.schema: {e}"))?;
                Some(record)
            }
        };
        Ok(GovernanceConfig {
            governors,
            threshold: self.threshold,
            schema,
        })
    }
}

/// `[tls]`: the coordinator's certificate. Both files are read again, for new connections,
/// whenever either changes on disk, so a certificate is rotated by replacing the files.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chain, the server's certificate first (`tls init` writes `server.pem`).
    pub cert: PathBuf,
    /// PEM private key of that certificate (`server.key`).
    pub key: PathBuf,
}

/// `[metrics]`: where `GET /metrics` (Prometheus text format) and `GET /status` (the
/// federation's state as JSON, what `fedledger-coordinator status` prints) are served. Plain
/// HTTP, meant for loopback or a monitoring network: the figures name the hospitals.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Serve the endpoint at all.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Where it listens. Absent: [`DEFAULT_METRICS_LISTEN`], and a coordinator that finds that
    /// port taken (another coordinator on the machine) goes on without the endpoint, with a
    /// warning; an address given here must be free.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
}

/// Where metrics are served unless `[metrics] listen` says otherwise.
pub const DEFAULT_METRICS_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9464);

fn default_true() -> bool {
    true
}

impl Default for MetricsSection {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: None,
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 50051))
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    pub label_column: String,
    pub validation: PathBuf,
    #[serde(default)]
    pub standardisation: StandardisationMode,
}

/// How sites standardise their features.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StandardisationMode {
    /// Each site uses the statistics of its own data (nothing leaves the site).
    #[default]
    Site,
    /// The task carries reference means and standard deviations, computed by the coordinator
    /// from its own validation data; every site standardises alike.
    Reference,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoundsSection {
    pub total: u64,
    pub quorum: u32,
    #[serde(default = "default_deadline")]
    pub deadline_secs: u64,
    /// After the last round, keep answering DONE, round results and tiles for at most this many
    /// seconds: `serve` exits earlier once the final checkpoint carries the witness quorum,
    /// every enrolled hospital has been told DONE and no hospital has asked anything for
    /// [`crate::QUIET_BEFORE_EXIT`]. 0: exit as soon as the last round closes.
    #[serde(default = "default_grace")]
    pub grace_secs: u64,
}

fn default_grace() -> u64 {
    60
}

fn default_deadline() -> u64 {
    120
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingSection {
    pub local_epochs: u32,
    pub batch_size: u32,
    pub learning_rate: f64,
    /// DP-SGD clipping norm C (0: no DP-SGD).
    pub clip_norm: f64,
    /// DP-SGD noise multiplier (0: no DP-SGD). With `planning`, only participants that do not
    /// plan for themselves (older agents) use it.
    pub noise_multiplier: f64,
    /// Seed of the initial global model.
    pub init_seed: u64,
    /// Let each hospital plan its own DP-SGD (batch size, steps, noise multiplier) within these
    /// bounds for its own budget, instead of `batch_size`, `local_epochs` and
    /// `noise_multiplier`; absent: every hospital trains with those.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub planning: Option<PlanningSection>,
}

impl Default for TrainingSection {
    fn default() -> Self {
        Self {
            local_epochs: 2,
            batch_size: 32,
            learning_rate: 0.1,
            clip_norm: 0.0,
            noise_multiplier: 0.0,
            init_seed: 0,
            planning: None,
        }
    }
}

/// `[training.planning]`: the bounds each hospital plans its DP-SGD within (sent with every
/// task as `TaskHeader.planning`). A hospital picks, with its own accountant, the batch size and
/// steps in these bounds that carry the least noise per unit of signal for its budget: in
/// practice the largest batch (at most its rows) and the most steps.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PlanningSection {
    /// Rounds each hospital spreads its budget over (default: `rounds.total`).
    #[serde(default)]
    pub rounds: Option<u64>,
    /// Expected batch size bounds (a hospital with fewer rows uses all of them).
    #[serde(default = "default_min_batch")]
    pub min_batch_size: u32,
    pub max_batch_size: u32,
    /// DP-SGD steps per round.
    #[serde(default = "one_step")]
    pub min_steps: u32,
    pub max_steps: u32,
}

fn default_min_batch() -> u32 {
    16
}
fn one_step() -> u32 {
    1
}

impl PlanningSection {
    fn validate(&self) -> Result<(), String> {
        if self.rounds == Some(0)
            || self.min_batch_size == 0
            || self.min_steps == 0
            || self.min_batch_size > self.max_batch_size
            || self.min_steps > self.max_steps
        {
            return Err(format!(
                "training.planning: rounds, batch sizes and steps must be at least 1 and \
                 min <= max, got {self:?}"
            ));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AggregationSection {
    #[serde(default)]
    pub strategy: StrategyKind,
    /// Refuse updates whose L2 norm exceeds this bound (0: no bound).
    #[serde(default)]
    pub max_update_norm: f64,
    /// Participant-level DP (DP-FedAvg) around the strategy; absent: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dp: Option<ServerDpSection>,
    /// Byzantine updates per round the selecting strategies (`multi-krum`, `bulyan`) assume.
    #[serde(default = "one")]
    pub byzantine: usize,
    /// What the selecting strategies compare: each hospital's history of updates, an
    /// exponential moving average in which the history before the round weighs this much
    /// (`aggregate::history`); 0 compares the round's updates alone. In `[0, 1)`.
    #[serde(default = "default_history")]
    pub history: f64,
}

fn one() -> usize {
    1
}

fn default_history() -> f64 {
    0.9
}

impl Default for AggregationSection {
    fn default() -> Self {
        Self {
            strategy: StrategyKind::default(),
            max_update_norm: 0.0,
            dp: None,
            byzantine: one(),
            history: default_history(),
        }
    }
}

/// Which strategy a federation uses (`[aggregation] strategy`).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum StrategyKind {
    /// Weighted FedAvg by example count (McMahan et al. 2017).
    #[default]
    Fedavg,
    /// FedAvg weighted inversely to the square of each update's planned DP-SGD noise per unit
    /// of signal, from its recorded privacy spend (example weights in rounds with an update
    /// without DP-SGD noise). The valuation game uses the same weights.
    FedavgInverseNoise,
    /// FedAvg weighted between inverse noise and examples by how much the round's updates
    /// differ beyond their planned noise (a random-effects model; see
    /// `types::random_effects_weights`). The valuation game uses the same weights.
    FedavgRandomEffects,
    /// Coordinate-wise median of the deltas (robust to a minority of arbitrary updates).
    Median,
    /// Coordinate-wise mean after dropping the largest and smallest 10% per coordinate.
    TrimmedMean,
    /// The mean of the updates with the best Krum scores (Blanchard et al. 2017), assuming
    /// `[aggregation] byzantine` attackers. Quadratic in the number of updates.
    MultiKrum,
    /// Repeated Krum, then a trimmed mean around the median per coordinate (El Mhamdi et al.
    /// 2018). Quadratic in the number of updates.
    Bulyan,
}

impl StrategyKind {
    /// The name recorded in the ledger.
    pub fn as_str(self) -> &'static str {
        match self {
            StrategyKind::Fedavg => "fedavg",
            StrategyKind::FedavgInverseNoise => "fedavg-inverse-noise",
            StrategyKind::FedavgRandomEffects => "fedavg-random-effects",
            StrategyKind::Median => "median",
            StrategyKind::TrimmedMean => "trimmed-mean",
            StrategyKind::MultiKrum => "multi-krum",
            StrategyKind::Bulyan => "bulyan",
        }
    }

    /// The weights the valuation game combines updates with: the strategy's own for the FedAvg
    /// variants; example weights (a linear stand-in) for the robust ones.
    pub fn weighting(self) -> Weighting {
        match self {
            StrategyKind::FedavgInverseNoise => Weighting::InverseNoise,
            StrategyKind::FedavgRandomEffects => Weighting::RandomEffects,
            _ => Weighting::Examples,
        }
    }
}

impl std::str::FromStr for StrategyKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
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
        .find(|k| k.as_str() == s)
        .ok_or_else(|| {
            format!(
                "unknown strategy {s:?}: fedavg, fedavg-inverse-noise, fedavg-random-effects, \
                 median, trimmed-mean, multi-krum or bulyan"
            )
        })
    }
}

/// `[aggregation.dp]`: participant-level DP (DP-FedAvg) around the strategy.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerDpSection {
    /// Noise multiplier `z` of the aggregate.
    pub noise_multiplier: f64,
    /// Clipping bound `C` (initial bound when adaptive).
    pub clip_norm: f64,
    /// Follow a target quantile of the update norms instead of a fixed bound.
    #[serde(default)]
    pub adaptive: bool,
    #[serde(default = "half")]
    pub target_quantile: f64,
    #[serde(default = "point_two")]
    pub clip_learning_rate: f64,
    /// Noise on the private count of unclipped updates (adaptive only).
    #[serde(default)]
    pub count_noise_std: f64,
    /// Delta at which the federation-level epsilon is reported in each round's outcome.
    #[serde(default = "default_server_delta")]
    pub delta: f64,
}

fn half() -> f64 {
    0.5
}
fn point_two() -> f64 {
    0.2
}
fn default_server_delta() -> f64 {
    1e-5
}

impl ServerDpSection {
    fn validate(&self) -> Result<(), String> {
        let positive = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(format!("aggregation.dp.{name} must be > 0, got {v}"))
            }
        };
        positive("noise_multiplier", self.noise_multiplier)?;
        positive("clip_norm", self.clip_norm)?;
        if !(self.delta.is_finite() && self.delta > 0.0 && self.delta < 1.0) {
            return Err(format!(
                "aggregation.dp.delta must be in (0, 1), got {}",
                self.delta
            ));
        }
        if self.adaptive {
            if !(self.target_quantile > 0.0 && self.target_quantile < 1.0) {
                return Err(format!(
                    "aggregation.dp.target_quantile must be in (0, 1), got {}",
                    self.target_quantile
                ));
            }
            positive("clip_learning_rate", self.clip_learning_rate)?;
            if !(self.count_noise_std.is_finite() && self.count_noise_std >= 0.0) {
                return Err(format!(
                    "aggregation.dp.count_noise_std must be >= 0, got {}",
                    self.count_noise_std
                ));
            }
        }
        Ok(())
    }
}

/// The utility a coalition's model is scored with.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UtilityKind {
    /// Negative validation log-loss (default: accuracy is coarse and hides harm).
    #[default]
    NegLogLoss,
    /// Validation accuracy.
    Accuracy,
}

impl UtilityKind {
    /// The name recorded in the ledger.
    pub fn as_str(self) -> &'static str {
        match self {
            UtilityKind::NegLogLoss => "neg_log_loss",
            UtilityKind::Accuracy => "accuracy",
        }
    }
}

/// `[valuation]` in `coordinator.toml`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ValuationSection {
    /// `auto` (exact up to 12 participants, else gtg), `exact`, `gtg`, `kernelshap` or `loo`.
    pub estimator: String,
    /// Most distinct coalitions an approximate estimator may evaluate per round (0: its
    /// default; `auto`'s gtg: [`fedledger_valuation::default_budget`]).
    pub max_evaluations: u64,
    pub utility: UtilityKind,
    /// Integer base units split among a round's contributors.
    pub reward_pool_per_round: u64,
    /// Mixed with the federation and round number into each round's estimator seed.
    pub seed: u64,
    /// Cosine similarity at or above which the later of two updates is flagged a copy.
    pub copy_cosine: f64,
    /// Bootstrap resamples of the validation rows behind each value's standard error (0 or 1:
    /// no standard errors, recorded as 0).
    pub bootstrap_resamples: u32,
}

impl Default for ValuationSection {
    fn default() -> Self {
        Self {
            estimator: "auto".into(),
            max_evaluations: 0,
            utility: UtilityKind::NegLogLoss,
            reward_pool_per_round: 1_000_000,
            seed: 0,
            copy_cosine: fedledger_valuation::AbuseConfig::default().copy_cosine,
            bootstrap_resamples: 200,
        }
    }
}

impl ValuationSection {
    /// The utility's name as recorded (`neg_log_loss` or `accuracy`).
    pub fn utility_name(&self) -> String {
        self.utility.as_str().to_owned()
    }

    /// Check the names and ranges.
    pub fn validate(&self) -> Result<(), String> {
        if self.estimator != "auto" {
            fedledger_valuation::estimator_by_name(&self.estimator, None)
                .map_err(|e| format!("valuation.estimator: {e}"))?;
        }
        if !(self.copy_cosine > 0.0 && self.copy_cosine <= 1.0) {
            return Err(format!(
                "valuation.copy_cosine must be in (0, 1], got {}",
                self.copy_cosine
            ));
        }
        Ok(())
    }
}

/// Which reward rule a federation uses (`[rewards] rule`).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RewardRuleKind {
    /// `cumulative` with every round's values counted: a round that did not improve the model
    /// adds each hospital's value in it (and nothing to the pool) (`shapley-settled/v3`).
    #[default]
    Impact,
    /// Settled over periods from the values accumulated since round 1 and their uncertainty,
    /// each period's pool paid towards every hospital's share of all that was paid
    /// (`shapley-settled/v2`).
    Cumulative,
    /// Settled over periods, each period on its own from the values accumulated over it
    /// (`shapley-settled/v1`).
    Settled,
    /// Each completed round's pool split by that round's positive values
    /// (`shapley-proportional/v1`, the first rule).
    PerRound,
}

/// `[rewards]` in `coordinator.toml`: how the pool (`[valuation] reward_pool_per_round`) is
/// paid.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RewardsSection {
    pub rule: RewardRuleKind,
    /// `impact`, `cumulative`, `settled`: rounds per settlement period (the last period ends with the
    /// federation).
    pub period_rounds: u64,
    /// `impact`, `cumulative`, `settled`: an accumulated value is paid only when it exceeds `z` times its standard error
    /// (one-sided; 2.0 is about 97.7% under a normal approximation). Recorded in thousandths.
    pub z: f64,
}

impl RewardRuleKind {
    /// True for the rules settled over periods (`impact`, `cumulative`, `settled`).
    pub fn is_settled(self) -> bool {
        matches!(self, Self::Impact | Self::Cumulative | Self::Settled)
    }

    /// The rule's recorded name.
    pub fn recorded_name(self) -> &'static str {
        use fedledger_ledger::records::{
            REWARD_RULE, REWARD_RULE_SETTLED, REWARD_RULE_SETTLED_CUMULATIVE,
            REWARD_RULE_SETTLED_IMPACT,
        };
        match self {
            Self::Impact => REWARD_RULE_SETTLED_IMPACT,
            Self::Cumulative => REWARD_RULE_SETTLED_CUMULATIVE,
            Self::Settled => REWARD_RULE_SETTLED,
            Self::PerRound => REWARD_RULE,
        }
    }

    /// The rule a recorded name names.
    pub fn from_recorded_name(name: &str) -> Option<Self> {
        [
            Self::Impact,
            Self::Cumulative,
            Self::Settled,
            Self::PerRound,
        ]
        .into_iter()
        .find(|k| k.recorded_name() == name)
    }
}

impl Default for RewardsSection {
    fn default() -> Self {
        Self {
            rule: RewardRuleKind::Impact,
            period_rounds: 5,
            z: 2.0,
        }
    }
}

impl RewardsSection {
    fn validate(&self) -> Result<(), String> {
        if self.period_rounds == 0 {
            return Err("rewards.period_rounds must be at least 1".into());
        }
        if !(self.z.is_finite() && (0.0..=1000.0).contains(&self.z)) {
            return Err(format!("rewards.z must be in [0, 1000], got {}", self.z));
        }
        Ok(())
    }

    /// `z` in thousandths, as recorded.
    pub fn z_milli(&self) -> u64 {
        (self.z * 1000.0).round() as u64
    }

    /// `rule` recorded with `z_milli` (inverse of [`Self::z_milli`]): the section a governed
    /// reward rule stands for.
    pub fn from_record(record: &fedledger_ledger::records::RewardRecord) -> Option<Self> {
        Some(Self {
            rule: RewardRuleKind::from_recorded_name(&record.rule)?,
            period_rounds: record.period_rounds.unwrap_or(5),
            z: record.z_milli.unwrap_or(2000) as f64 / 1000.0,
        })
    }

    /// The settlement rule's parameters with `pool_per_round`, when the rule is settled over
    /// periods.
    pub fn settlement_rule(
        &self,
        pool_per_round: u64,
    ) -> Option<fedledger_valuation::SettlementRule> {
        self.rule
            .is_settled()
            .then(|| fedledger_valuation::SettlementRule {
                pool_per_round,
                period_rounds: self.period_rounds,
                z_milli: self.z_milli(),
            })
    }

    /// The rule as the genesis (and each settlement) records it.
    pub fn record(&self, pool_per_round: u64) -> fedledger_ledger::records::RewardRecord {
        use fedledger_ledger::records::RewardRecord;
        let settled = self.rule.is_settled();
        RewardRecord {
            rule: self.rule.recorded_name().into(),
            pool_per_round,
            period_rounds: settled.then_some(self.period_rounds),
            z_milli: settled.then(|| self.z_milli()),
        }
    }
}

/// `[limits]`: what a participant may claim, what is kept, and what any peer (logged in or
/// not) can make the coordinator hold. Every field has a safe default; the README's "Limits"
/// paragraph gives the memory bound they imply.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Largest example count a participant may claim.
    pub max_examples: u64,
    /// Keep the inputs (updates, models) of the last this many rounds for replay; older ones are
    /// deleted once nothing newer refers to them. 0 keeps everything.
    pub retain_rounds: u64,
    /// Concurrent HTTP/2 streams (calls) one connection may have open (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub max_streams_per_connection: u32,
    /// Open connections from one IP address; more are closed at once. Simulations that run many
    /// participants from 127.0.0.1 raise it.
    pub max_connections_per_ip: u32,
    /// Open connections in all.
    pub max_connections: u32,
    /// Every request message must arrive whole within this many seconds (a unary request from
    /// its start, each message of an upload from the previous one); a stalled call is cut.
    pub message_timeout_secs: u64,
    /// The slowest upload accepted, in KiB/s: an upload's whole-request deadline is
    /// `message_timeout_secs + model bytes / this`.
    pub min_upload_kib_per_sec: u64,
    /// HTTP/2 keepalive: ping an idle connection this often (seconds; 0: never) ...
    pub keepalive_interval_secs: u64,
    /// ... and close it when a ping is not answered within this many seconds.
    pub keepalive_timeout_secs: u64,
    /// A session (the token a registration returns) expires this many seconds after it was
    /// opened; the participant registers again to renew it.
    pub session_ttl_secs: u64,
    /// HTTP/2 flow-control window of one call, in KiB: what a hospital may send ahead of what
    /// the coordinator has read. It caps one upload at window / round-trip time (8 MiB over a
    /// 30 ms link: about 270 MB/s) and bounds what unread data the coordinator holds: up to a
    /// window per upload in flight. 0 (the default): sized when the coordinator starts, from
    /// the update's size and the enrolled sites ([`Limits::windows_for`]).
    pub stream_window_kib: u32,
    /// HTTP/2 flow-control window of a whole connection, in KiB (at least the stream window).
    /// 0 (the default): twice the call's.
    pub connection_window_kib: u32,
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            max_examples: 100_000_000,
            retain_rounds: 0,
            max_streams_per_connection: 8,
            max_connections_per_ip: 8,
            max_connections: 4096,
            message_timeout_secs: 30,
            min_upload_kib_per_sec: 64,
            keepalive_interval_secs: 30,
            keepalive_timeout_secs: 20,
            session_ttl_secs: 24 * 3600,
            stream_window_kib: 0,
            connection_window_kib: 0,
        }
    }
}

impl LimitsSection {
    fn validate(&self) -> Result<(), String> {
        let at_least_one = [
            (
                "max_streams_per_connection",
                u64::from(self.max_streams_per_connection),
            ),
            (
                "max_connections_per_ip",
                u64::from(self.max_connections_per_ip),
            ),
            ("max_connections", u64::from(self.max_connections)),
            ("message_timeout_secs", self.message_timeout_secs),
            ("min_upload_kib_per_sec", self.min_upload_kib_per_sec),
            ("keepalive_timeout_secs", self.keepalive_timeout_secs),
            ("session_ttl_secs", self.session_ttl_secs),
        ];
        for (name, v) in at_least_one {
            if v == 0 {
                return Err(format!("limits.{name} must be at least 1"));
            }
        }
        if self.max_connections_per_ip > self.max_connections {
            return Err(format!(
                "limits.max_connections_per_ip ({}) exceeds limits.max_connections ({})",
                self.max_connections_per_ip, self.max_connections
            ));
        }
        // HTTP/2 windows: 0 (sized at start), or at least the protocol's initial 64 KiB and at
        // most 2^31 - 1 bytes.
        for (name, v) in [
            ("stream_window_kib", self.stream_window_kib),
            ("connection_window_kib", self.connection_window_kib),
        ] {
            if v != 0 && !(64..=MAX_WINDOW_KIB).contains(&v) {
                return Err(format!(
                    "limits.{name} must be 0 (sized when the coordinator starts) or between 64 \
                     and {MAX_WINDOW_KIB} (KiB), got {v}"
                ));
            }
        }
        if self.connection_window_kib != 0
            && self.stream_window_kib != 0
            && self.connection_window_kib < self.stream_window_kib
        {
            return Err(format!(
                "limits.connection_window_kib ({}) is below limits.stream_window_kib ({})",
                self.connection_window_kib, self.stream_window_kib
            ));
        }
        // Durations are added to the clock in milliseconds: keep them far from overflow.
        let year = 366 * 24 * 3600;
        for (name, v) in [
            ("message_timeout_secs", self.message_timeout_secs),
            ("keepalive_interval_secs", self.keepalive_interval_secs),
            ("keepalive_timeout_secs", self.keepalive_timeout_secs),
            ("session_ttl_secs", self.session_ttl_secs),
        ] {
            if v > year {
                return Err(format!(
                    "limits.{name} must be at most {year} (a year), got {v}"
                ));
            }
        }
        Ok(())
    }
}

/// The transport and session limits, validated (`[limits]` without the round rules).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_streams_per_connection: u32,
    pub max_connections_per_ip: u32,
    pub max_connections: u32,
    pub message_timeout: Duration,
    pub min_upload_bytes_per_sec: u64,
    /// None: no keepalive pings.
    pub keepalive_interval: Option<Duration>,
    pub keepalive_timeout: Duration,
    pub session_ttl: Duration,
    /// HTTP/2 flow-control windows, in bytes; `None`: sized when the coordinator starts
    /// ([`Self::windows_for`]).
    pub stream_window_bytes: Option<u32>,
    pub connection_window_bytes: Option<u32>,
}

/// The HTTP/2 flow-control windows a coordinator serves with, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Windows {
    /// What one call (an upload) may send ahead of what the coordinator has read.
    pub stream: u32,
    /// What a whole connection may send ahead (at least `stream`).
    pub connection: u32,
}

/// The largest HTTP/2 window, 2^31 - 1 bytes, in whole KiB.
const MAX_WINDOW_KIB: u32 = (i32::MAX as u32) / 1024;

/// The smallest call window the coordinator sizes for itself: the memory the README allows
/// each site beyond the model's own copies.
pub const AUTO_WINDOW_MIN_BYTES: u32 = 1 << 20;

/// The largest call window the coordinator sizes for itself: 8 MiB keeps one upload over a
/// 30 ms link at about 270 MB/s.
pub const AUTO_WINDOW_MAX_BYTES: u32 = 8 << 20;

impl Limits {
    /// The windows to serve with, for updates of `update_bytes` from `sites` enrolled sites:
    /// the configured ones, or (unset) a call window of twice the update shared among the
    /// sites, between [`AUTO_WINDOW_MIN_BYTES`] and [`AUTO_WINDOW_MAX_BYTES`], and a connection
    /// window of twice the call's.
    ///
    /// Why: the sites of a round upload at once, so the link to the coordinator carries their
    /// windows together, and a window per site of 2 x model / sites still lets two models' worth
    /// of bytes be in flight; while what the uploads can make the coordinator hold unread
    /// (a window each) stays within twice the model plus 1 MiB per site. A single far site's
    /// upload is slowed only when many sites share the link: 1 MiB over a 30 ms link is about
    /// 35 MB/s.
    pub fn windows_for(&self, update_bytes: u64, sites: usize) -> Windows {
        let auto = (update_bytes.saturating_mul(2) / sites.max(1) as u64).clamp(
            u64::from(AUTO_WINDOW_MIN_BYTES),
            u64::from(AUTO_WINDOW_MAX_BYTES),
        ) as u32;
        let stream = match (self.stream_window_bytes, self.connection_window_bytes) {
            (Some(s), _) => s,
            (None, Some(c)) => auto.min(c),
            (None, None) => auto,
        };
        Windows {
            stream,
            connection: self
                .connection_window_bytes
                .unwrap_or_else(|| stream.saturating_mul(2).min(MAX_WINDOW_KIB * 1024)),
        }
    }

    /// The whole-request deadline of an upload of `num_params` values: the message timeout plus
    /// the time the slowest accepted link takes to carry them.
    pub fn upload_deadline(&self, num_params: usize) -> Duration {
        let bytes = (num_params as u64).saturating_mul(4);
        self.message_timeout
            + Duration::from_secs(bytes.div_ceil(self.min_upload_bytes_per_sec.max(1)))
    }
}

impl From<&LimitsSection> for Limits {
    fn from(l: &LimitsSection) -> Self {
        Self {
            max_streams_per_connection: l.max_streams_per_connection,
            max_connections_per_ip: l.max_connections_per_ip,
            max_connections: l.max_connections,
            message_timeout: Duration::from_secs(l.message_timeout_secs),
            min_upload_bytes_per_sec: l.min_upload_kib_per_sec.saturating_mul(1024),
            keepalive_interval: (l.keepalive_interval_secs > 0)
                .then(|| Duration::from_secs(l.keepalive_interval_secs)),
            keepalive_timeout: Duration::from_secs(l.keepalive_timeout_secs),
            session_ttl: Duration::from_secs(l.session_ttl_secs),
            stream_window_bytes: (l.stream_window_kib != 0)
                .then(|| l.stream_window_kib.saturating_mul(1024)),
            connection_window_bytes: (l.connection_window_kib != 0)
                .then(|| l.connection_window_kib.saturating_mul(1024)),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::from(&LimitsSection::default())
    }
}

/// The privacy budget the federation is planned for (recorded in the genesis record; every
/// hospital enforces its own budget locally whatever this says).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyPlanSection {
    pub epsilon_budget: f64,
    pub delta: f64,
    /// The accountants whose spends this federation records (and `verify` recomputes). A
    /// participant accounting with another one declines before spending; an update reporting
    /// another one is refused. Default: all three.
    #[serde(default = "all_accountants")]
    pub accountants: Vec<AccountantKind>,
}

impl PrivacyPlanSection {
    /// The recorded accountants' names, in configuration order.
    pub fn accountant_names(&self) -> Vec<String> {
        self.accountants
            .iter()
            .map(|a| a.name().to_owned())
            .collect()
    }
}

fn all_accountants() -> Vec<AccountantKind> {
    vec![
        AccountantKind::Rdp,
        AccountantKind::Pld,
        AccountantKind::RdpDpAccounting,
    ]
}

impl Default for PrivacyPlanSection {
    fn default() -> Self {
        Self {
            epsilon_budget: 8.0,
            delta: 1e-5,
            accountants: all_accountants(),
        }
    }
}

/// `[ledger]`: who witnesses the log.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LedgerSection {
    /// Witnesses' cosignature/v1 verifier keys (`name+keyid+base64(0x04 || key)`).
    #[serde(default)]
    pub witnesses: Vec<String>,
    /// Cosignatures needed to call a round anchored (default: a majority of the witnesses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness_quorum: Option<u64>,
    /// Submission prefixes of witnesses that speak C2SP tlog-witness over HTTP
    /// (`http://host:port/`), asked to cosign each new checkpoint beside the libp2p witnesses;
    /// their keys must be among `witnesses`, and the quorum counts both.
    #[serde(default)]
    pub witness_urls: Vec<String>,
    /// libp2p addresses the coordinator's ledger node listens on, for witnesses and replicas
    /// (e.g. "/ip4/0.0.0.0/tcp/4001"). Empty: the ledger is kept locally only.
    #[serde(default)]
    pub listen: Vec<String>,
    /// The ledger node's libp2p identity key file (created on first start), so its peer id is
    /// stable and peers can pin it. Default: `<state_dir>/ledger-node.key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_key: Option<PathBuf>,
    /// Address of the HTTP server that serves the log in the C2SP tlog-tiles layout, where
    /// hospitals fetch their receipts and monitors read the log (e.g. "0.0.0.0:8080"). Absent:
    /// no HTTP server (hospitals cannot check receipts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiles_listen: Option<SocketAddr>,
    /// Peer ids of the witnesses' ledger nodes allowed to dial in.
    #[serde(default)]
    pub allow_witnesses: Vec<String>,
    /// Peer ids of replicas (auditors' nodes) allowed to dial in. With both lists empty, any
    /// peer may dial in.
    #[serde(default)]
    pub allow_replicas: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ParticipantEntry {
    pub name: String,
    /// The hospital's Ed25519 public key, 64 hex digits (what `fedledger-participant keygen`
    /// printed). Give this or `public_key_file`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub public_key: String,
    /// A file holding that key (`fedledger-participant keygen --out h.key > h.pub`), relative
    /// to the config file's folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_file: Option<PathBuf>,
}

impl ParticipantEntry {
    /// The key's hex digits, from the config or from its file.
    fn key_text(&self) -> Result<String, String> {
        match (self.public_key.is_empty(), &self.public_key_file) {
            (false, None) => Ok(self.public_key.clone()),
            (true, Some(path)) => std::fs::read_to_string(path)
                .map(|t| t.trim().to_owned())
                .map_err(|e| format!("public_key_file {}: {e}", path.display())),
            (false, Some(_)) => Err("give public_key or public_key_file, not both".into()),
            (true, None) => Err("no public_key (or public_key_file): enrol the key \
                 `fedledger-participant keygen` printed"
                .into()),
        }
    }
}

/// An enrolled participant, with its key decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enrolled {
    pub name: String,
    pub public_key: [u8; 32],
    pub public_key_hex: String,
    /// Removed by governance: may no longer register, send or decline.
    pub removed: bool,
}

/// A validated configuration: everything the coordinator needs, checked once at start-up.
#[derive(Clone, Debug)]
pub struct FederationConfig {
    pub federation: String,
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    pub key: PathBuf,
    pub model: ModelSpec,
    pub label_column: String,
    pub validation_path: PathBuf,
    pub validation: Dataset,
    /// SHA-256 (hex) of the validation file's bytes.
    pub validation_sha256: String,
    pub standardisation: Option<Standardiser>,
    pub rounds: u64,
    pub quorum: u32,
    pub deadline: Duration,
    /// How long `serve` keeps answering after the last round, at most (`rounds.grace_secs`).
    pub grace: Duration,
    pub training: TrainingSection,
    pub strategy: StrategyKind,
    /// Byzantine updates per round the selecting strategies assume.
    pub byzantine: usize,
    /// The weight of a hospital's earlier updates in what the selecting strategies compare
    /// (0: this round's alone).
    pub history: f64,
    pub max_update_norm: Option<f64>,
    pub server_dp: Option<ServerDpSection>,
    pub max_examples: u64,
    pub retain_rounds: u64,
    /// Transport and session limits.
    pub limits: Limits,
    pub valuation: ValuationSection,
    pub rewards: RewardsSection,
    /// `(first round, period_rounds)` of each stretch of rounds under one reward rule and
    /// period, from round 1 up to the round after this one, as governed (the file's alone:
    /// `[(1, rewards.period_rounds)]`); where settlement periods end
    /// (`fedledger_ledger::records::period_ending`).
    pub reward_segments: Vec<(u64, u64)>,
    pub privacy_plan: PrivacyPlanSection,
    pub witnesses: Vec<String>,
    pub witness_quorum: u64,
    /// C2SP tlog-witness submission prefixes (HTTP witnesses).
    pub witness_urls: Vec<String>,
    pub ledger_listen: Vec<libp2p::Multiaddr>,
    /// The ledger node's libp2p identity key file.
    pub node_key: PathBuf,
    /// Where the tlog-tiles HTTP server listens, when it runs.
    pub tiles_listen: Option<SocketAddr>,
    /// The certificate both servers present; `None`: plaintext.
    pub tls: Option<TlsSection>,
    /// Who may dial the ledger node.
    pub ledger_allow: fedledger_ledger::node::AllowList,
    /// `[metrics]`.
    pub metrics: MetricsSection,
    /// Governors, threshold and schema of the genesis.
    pub governance: GovernanceConfig,
    /// In config order, then those enrolled by governance in ledger order; removed ones
    /// stay (indices are stable) but are marked.
    pub participants: Vec<Enrolled>,
    /// `[validators]`, when the federation has validators.
    pub validating: Option<ValidatorsSection>,
    /// Enrolled validators (the file's, then governance's), sorted by key; sessions name them
    /// by key, so their order may change between rounds.
    pub validators: Vec<Enrolled>,
}

impl FederationConfig {
    /// The task's learning rate times its clipping norm: the scale of the DP-SGD noise in an
    /// update per unit of its noise per unit of signal and step (random-effects weights).
    pub fn noise_step(&self) -> f64 {
        self.training.learning_rate * self.training.clip_norm
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read {path}: {error}")]
    Read {
        path: PathBuf,
        /// Part of the message, not a source: said once.
        error: std::io::Error,
    },
    /// The TOML did not parse or names a field that does not exist. Said once: the TOML error is
    /// part of this message, not a source of it.
    #[error(
        "{path}: {message}(every field, with its default: `fedledger-coordinator --print-default-config`)"
    )]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl ConfigFile {
    /// Read and parse a TOML file; relative paths inside it are resolved against its folder.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        let mut file: ConfigFile = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        if let Some(base) = path.parent() {
            file.resolve_paths(base);
        }
        Ok(file)
    }

    fn resolve_paths(&mut self, base: &std::path::Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.state_dir);
        fix(&mut self.data.validation);
        if let Some(k) = self.key.as_mut() {
            fix(k);
        }
        if let Some(k) = self.ledger.node_key.as_mut() {
            fix(k);
        }
        if let Some(t) = self.tls.as_mut() {
            fix(&mut t.cert);
            fix(&mut t.key);
        }
        for p in self
            .participants
            .iter_mut()
            .chain(self.validator_entries.iter_mut())
        {
            if let Some(f) = p.public_key_file.as_mut() {
                fix(f);
            }
        }
    }

    /// Check every field and load the validation data from its file.
    pub fn validate(self) -> Result<FederationConfig, ConfigError> {
        let bytes = std::fs::read(&self.data.validation).map_err(|error| ConfigError::Read {
            path: self.data.validation.clone(),
            error,
        })?;
        self.validate_with(&bytes)
    }

    /// Check every field, with the validation file's bytes already read (`data.validation`
    /// names where they came from).
    pub fn validate_with(self, bytes: &[u8]) -> Result<FederationConfig, ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if !valid_origin(&self.federation) {
            return bad(format!(
                "federation name {:?} must be 1-128 characters of letters, digits, '.', '_', '-', '/'",
                self.federation
            ));
        }
        self.model
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("model: {e}")))?;
        if self.rounds.total == 0 {
            return bad("rounds.total must be at least 1".into());
        }
        // After the genesis the participants may be left out: the governed enrolment holds
        // (a new federation without any is refused when its genesis would be written).
        let enrolled = self.participants.len();
        if self.rounds.quorum == 0 || (enrolled > 0 && self.rounds.quorum as usize > enrolled) {
            return bad(format!(
                "rounds.quorum must be between 1 and the number of participants ({}), got {}",
                self.participants.len(),
                self.rounds.quorum
            ));
        }
        // Deadlines are added to the clock in milliseconds: a year is plenty and cannot overflow.
        if !(1..=366 * 24 * 3600).contains(&self.rounds.deadline_secs) {
            return bad(format!(
                "rounds.deadline_secs must be between 1 and 31622400 (a year), got {}",
                self.rounds.deadline_secs
            ));
        }
        let t = &self.training;
        if t.local_epochs == 0 || t.batch_size == 0 {
            return bad("training.local_epochs and training.batch_size must be at least 1".into());
        }
        if !(t.learning_rate.is_finite() && t.learning_rate > 0.0) {
            return bad(format!(
                "training.learning_rate must be > 0, got {}",
                t.learning_rate
            ));
        }
        for (name, v) in [
            ("clip_norm", t.clip_norm),
            ("noise_multiplier", t.noise_multiplier),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(format!("training.{name} must be finite and >= 0, got {v}"));
            }
        }
        if (t.noise_multiplier > 0.0) != (t.clip_norm > 0.0) {
            return bad("DP-SGD needs both training.clip_norm and training.noise_multiplier > 0 (or both 0)".into());
        }
        if let Some(p) = &t.planning {
            p.validate().map_err(ConfigError::Invalid)?;
            if t.clip_norm <= 0.0 {
                return bad(
                    "training.planning plans DP-SGD: it needs training.clip_norm > 0".into(),
                );
            }
        }
        let max_norm = self.aggregation.max_update_norm;
        if !(max_norm.is_finite() && max_norm >= 0.0) {
            return bad(format!(
                "aggregation.max_update_norm must be >= 0, got {max_norm}"
            ));
        }
        self.valuation.validate().map_err(ConfigError::Invalid)?;
        // Every participant is a player of the valuation game.
        let players = self.participants.len();
        if players > fedledger_valuation::MAX_PLAYERS {
            return Err(ConfigError::Invalid(format!(
                "{players} participants: the valuation game has at most {} players",
                fedledger_valuation::MAX_PLAYERS
            )));
        }
        // The estimator must be able to value the federation, within the budget given.
        let estimator = match self.valuation.estimator.as_str() {
            "auto" => fedledger_valuation::default_estimator(players, None),
            name => fedledger_valuation::estimator_by_name(name, None)
                .map_err(|e| ConfigError::Invalid(format!("valuation.estimator: {e}")))?,
        };
        if players > estimator.max_players() {
            return Err(ConfigError::Invalid(format!(
                "valuation.estimator = \"{}\" values at most {} participants, this \
                 federation has {players}: use \"gtg\" (or \"auto\") or \"loo\"",
                self.valuation.estimator,
                estimator.max_players()
            )));
        }
        // A budget below what the estimator needs would fail every round's close.
        let budget = self.valuation.max_evaluations;
        let needed = estimator.min_evaluations(players);
        if budget > 0 && budget < needed {
            return Err(ConfigError::Invalid(format!(
                "valuation.max_evaluations = {budget} is below the {needed} coalitions the \
                 estimator needs for {players} participants (0: the estimator's default)"
            )));
        }
        self.rewards.validate().map_err(ConfigError::Invalid)?;
        self.limits.validate().map_err(ConfigError::Invalid)?;
        let plan = &self.privacy;
        let plan_ok = plan.epsilon_budget.is_finite()
            && plan.epsilon_budget >= 0.0
            && plan.delta.is_finite()
            && (0.0..1.0).contains(&plan.delta);
        if !plan_ok {
            return bad(format!(
                "privacy.epsilon_budget must be >= 0 and privacy.delta in [0, 1), got {} and {}",
                plan.epsilon_budget, plan.delta
            ));
        }
        for w in &self.ledger.witnesses {
            fedledger_ledger::note::VerifierKey::parse(w)
                .map_err(|e| ConfigError::Invalid(format!("ledger.witnesses: {w:?}: {e}")))?;
        }
        for u in &self.ledger.witness_urls {
            fedledger_ledger::http::WitnessClient::new(u)
                .map_err(|e| ConfigError::Invalid(format!("ledger.witness_urls: {u:?}: {e}")))?;
        }
        let ledger_listen = self
            .ledger
            .listen
            .iter()
            .map(|a| {
                a.parse::<libp2p::Multiaddr>()
                    .map_err(|e| ConfigError::Invalid(format!("ledger.listen: {a:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut ledger_allow = fedledger_ledger::node::AllowList::default();
        for (ids, role, field) in [
            (
                &self.ledger.allow_witnesses,
                fedledger_ledger::node::Role::Witness,
                "allow_witnesses",
            ),
            (
                &self.ledger.allow_replicas,
                fedledger_ledger::node::Role::Replica,
                "allow_replicas",
            ),
        ] {
            for id in ids {
                let peer = id.parse::<libp2p::PeerId>().map_err(|e| {
                    ConfigError::Invalid(format!("ledger.{field}: {id:?} is not a peer id: {e}"))
                })?;
                ledger_allow.allow(peer, role);
            }
        }
        let n_witnesses = self.ledger.witnesses.len() as u64;
        let witness_quorum = self
            .ledger
            .witness_quorum
            .unwrap_or(n_witnesses / 2 + u64::from(n_witnesses > 0));
        if witness_quorum > n_witnesses {
            return bad(format!(
                "ledger.witness_quorum {witness_quorum} exceeds the {n_witnesses} witnesses"
            ));
        }
        if plan.accountants.is_empty() {
            return bad("privacy.accountants must name at least one of \"rdp\", \"pld\", \"rdp-dp-accounting\"".into());
        }
        if let Some(dp) = &self.aggregation.dp {
            dp.validate().map_err(ConfigError::Invalid)?;
        }
        if self.aggregation.dp.is_some() && self.aggregation.strategy != StrategyKind::Fedavg {
            return bad(format!(
                "aggregation.dp needs strategy = \"fedavg\" (the DP guarantee assumes a mean of \
                 a fixed set; median, trimmed mean, Multi-Krum and Bulyan let one participant move \
                 the result by more than the noise covers), got {:?}",
                self.aggregation.strategy
            ));
        }
        let history = self.aggregation.history;
        if !(0.0..1.0).contains(&history) {
            return bad(format!(
                "aggregation.history must be in [0, 1) (the weight of a hospital's earlier updates \
                 in what multi-krum and bulyan compare; 0: this round's alone), got {history}"
            ));
        }
        let f = self.aggregation.byzantine;
        let n = self.participants.len();
        match self.aggregation.strategy {
            _ if n == 0 => {}
            StrategyKind::MultiKrum if n < 2 * f + 3 => {
                return bad(format!(
                    "strategy multi-krum with byzantine = {f} needs at least {} participants, \
                     {n} are enrolled",
                    2 * f + 3
                ));
            }
            StrategyKind::Bulyan if n < 4 * f + 3 => {
                return bad(format!(
                    "strategy bulyan with byzantine = {f} needs at least {} participants, {n} \
                     are enrolled",
                    4 * f + 3
                ));
            }
            _ => {}
        }
        let mut names = HashSet::new();
        let mut keys = HashSet::new();
        let mut participants = Vec::new();
        for p in &self.participants {
            if p.name.is_empty() || p.name.len() > 64 || p.name.chars().any(|c| c.is_control()) {
                return bad(format!(
                    "participant name {:?} must be 1-64 printable characters",
                    p.name
                ));
            }
            let key = p
                .key_text()
                .and_then(|k| decode_public_key(&k))
                .map_err(|e| ConfigError::Invalid(format!("participant {}: {e}", p.name)))?;
            if !names.insert(p.name.clone()) {
                return bad(format!("participant name {} enrolled twice", p.name));
            }
            if !keys.insert(key) {
                return bad(format!("participant {}: public key enrolled twice", p.name));
            }
            participants.push(Enrolled {
                name: p.name.clone(),
                public_key: key,
                public_key_hex: hex::encode(key),
                removed: false,
            });
        }
        let mut validators = Vec::new();
        for p in &self.validator_entries {
            let key = p
                .key_text()
                .and_then(|k| decode_public_key(&k))
                .map_err(|e| ConfigError::Invalid(format!("validator {}: {e}", p.name)))?;
            if p.name.is_empty() || p.name.len() > 64 || p.name.chars().any(|c| c.is_control()) {
                return bad(format!(
                    "validator name {:?} must be 1-64 printable characters",
                    p.name
                ));
            }
            if !names.insert(p.name.clone()) || !keys.insert(key) {
                return bad(format!(
                    "validator {}: its name or key is enrolled already (a key has one role)",
                    p.name
                ));
            }
            validators.push(Enrolled {
                name: p.name.clone(),
                public_key: key,
                public_key_hex: hex::encode(key),
                removed: false,
            });
        }
        validators.sort_by(|a, b| a.public_key_hex.cmp(&b.public_key_hex));
        if let Some(v) = &self.validators {
            v.validate().map_err(ConfigError::Invalid)?;
            v.check_design(self.participants.len())
                .map_err(ConfigError::Invalid)?;
            let t = &self.training;
            if t.noise_multiplier <= 0.0 && t.planning.is_none() {
                return bad(
                    "[validators] needs contributors to train with DP-SGD (validators receive each \
                     round's individual updates): set training.noise_multiplier > 0 or \
                     [training.planning]"
                        .into(),
                );
            }
            if self.aggregation.dp.is_some() {
                return bad(
                    "[validators] and aggregation.dp do not compose: server-side DP noises only \
                     the aggregate, validators see the individual updates"
                        .into(),
                );
            }
        } else if !validators.is_empty() {
            return bad("[[validator]] entries need a [validators] section (their rules)".into());
        }
        let governance = self
            .governance
            .validate(self.model.features, &self.data.label_column)
            .map_err(ConfigError::Invalid)?;
        let validation_sha256 = fedledger_model::digest::sha256_hex(bytes);
        let mut validation = Dataset::from_csv_named(
            bytes,
            &self.data.label_column,
            &self.data.validation.display().to_string(),
        )
        .map_err(|e| ConfigError::Invalid(format!("data.validation: {e}")))?;
        if validation.n_features() != self.model.features {
            return bad(format!(
                "validation file has {} feature columns but model.features = {}",
                validation.n_features(),
                self.model.features
            ));
        }
        if let Some(&y) = validation
            .y
            .iter()
            .find(|&&y| y as usize >= self.model.classes)
        {
            return bad(format!(
                "validation file has label {y} but model.classes = {}",
                self.model.classes
            ));
        }
        validation.classes = self.model.classes;
        let standardisation = match self.data.standardisation {
            StandardisationMode::Site => None,
            StandardisationMode::Reference => Some(Standardiser::fit(&validation)),
        };
        let node_key = self
            .ledger
            .node_key
            .clone()
            .unwrap_or_else(|| self.state_dir.join("ledger-node.key"));
        Ok(FederationConfig {
            key: self
                .key
                .unwrap_or_else(|| self.state_dir.join("coordinator.key")),
            federation: self.federation,
            listen: self.listen,
            state_dir: self.state_dir,
            model: self.model,
            label_column: self.data.label_column,
            validation_path: self.data.validation,
            validation,
            validation_sha256,
            standardisation,
            rounds: self.rounds.total,
            quorum: self.rounds.quorum,
            deadline: Duration::from_secs(self.rounds.deadline_secs),
            grace: Duration::from_secs(self.rounds.grace_secs),
            training: self.training,
            strategy: self.aggregation.strategy,
            byzantine: self.aggregation.byzantine,
            history: self.aggregation.history,
            max_update_norm: (max_norm > 0.0).then_some(max_norm),
            server_dp: self.aggregation.dp,
            max_examples: self.limits.max_examples,
            retain_rounds: self.limits.retain_rounds,
            limits: Limits::from(&self.limits),
            valuation: self.valuation,
            reward_segments: vec![(1, self.rewards.period_rounds)],
            rewards: self.rewards,
            privacy_plan: self.privacy,
            witnesses: self.ledger.witnesses,
            witness_quorum,
            witness_urls: self.ledger.witness_urls,
            ledger_listen,
            node_key,
            tiles_listen: self.ledger.tiles_listen,
            tls: self.tls,
            ledger_allow,
            metrics: self.metrics,
            governance,
            participants,
            validating: self.validators,
            validators,
        })
    }
}

/// A federation name is the ledger's origin line: printable, no spaces.
pub fn valid_origin(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
}

/// Decode a lowercase-or-uppercase hex Ed25519 public key.
pub fn decode_public_key(s: &str) -> Result<[u8; 32], String> {
    let bytes = hex::decode(s.trim()).map_err(|e| format!("public key is not hex: {e}"))?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("public key must be 32 bytes, got {}", b.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key path of a TOML table (`a.b.c`; arrays of tables by their first element).
    pub(crate) fn key_paths(v: &toml::Value, prefix: &str, out: &mut Vec<String>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let path = format!("{prefix}{k}");
                    out.push(path.clone());
                    key_paths(v, &format!("{path}."), out);
                }
            }
            toml::Value::Array(a) => {
                if let Some(first @ toml::Value::Table(_)) = a.first() {
                    key_paths(first, prefix, out);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn the_default_config_names_every_field_and_nothing_else() {
        let file: ConfigFile = toml::from_str(DEFAULT_CONFIG).unwrap();
        // Serialising the parsed file writes every field that has a value, defaults included:
        // had the text left one out, or named one that is ignored, the two would differ.
        let written = toml::Value::try_from(&file).unwrap();
        let text: toml::Value = toml::from_str(DEFAULT_CONFIG).unwrap();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        key_paths(&written, "", &mut a);
        key_paths(&text, "", &mut b);
        a.sort();
        b.sort();
        assert_eq!(a, b);
        // Every commented-out optional field parses when uncommented.
        let uncommented: String = DEFAULT_CONFIG
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if rest.contains(" = ") || rest.starts_with('[') => rest,
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let full: ConfigFile = toml::from_str(&uncommented).unwrap();
        assert!(full.tls.is_some() && full.key.is_some() && full.aggregation.dp.is_some());
        assert!(full.training.planning.is_some() && full.ledger.tiles_listen.is_some());
        assert!(full.ledger.node_key.is_some() && full.ledger.witness_quorum.is_some());
        assert!(full.validators.is_some() && full.validator_entries.len() == 1);
    }

    #[test]
    fn http2_windows_are_within_the_protocol_and_the_connection_holds_a_call() {
        let with = |stream, connection| LimitsSection {
            stream_window_kib: stream,
            connection_window_kib: connection,
            ..LimitsSection::default()
        };
        assert!(with(8 * 1024, 16 * 1024).validate().is_ok());
        assert!(with(64, 64).validate().is_ok());
        // 0: sized at start, alone or beside a set window of either kind.
        assert!(with(0, 0).validate().is_ok());
        assert!(with(0, 64).validate().is_ok() && with(64, 0).validate().is_ok());
        let low = with(63, 1024).validate().unwrap_err();
        assert!(
            low.contains("limits.stream_window_kib must be 0 (sized when the coordinator starts) or between 64"),
            "{low}"
        );
        let high = with(64, MAX_WINDOW_KIB + 1).validate().unwrap_err();
        assert!(high.contains("limits.connection_window_kib"), "{high}");
        let below = with(1024, 512).validate().unwrap_err();
        assert!(
            below.contains("is below limits.stream_window_kib"),
            "{below}"
        );
        let limits = Limits::from(&with(512, 2048));
        assert_eq!(
            limits.windows_for(64 << 20, 5),
            Windows {
                stream: 512 * 1024,
                connection: 2048 * 1024
            }
        );
        // The largest window in KiB is still a valid HTTP/2 window in bytes.
        assert!(MAX_WINDOW_KIB * 1024 <= i32::MAX as u32);
    }

    #[test]
    fn unset_windows_share_twice_the_update_among_the_sites_within_1_and_8_mib() {
        const MIB: u32 = 1 << 20;
        let auto = Limits::default();
        let w = |update_mib: u64, sites| auto.windows_for(update_mib << 20, sites);
        // Five sites of a 64 MiB model: 25.6 MiB each, capped at 8 MiB.
        assert_eq!(
            w(64, 5),
            Windows {
                stream: 8 * MIB,
                connection: 16 * MIB
            }
        );
        // Four sites of a 6 MiB model: 3 MiB each.
        assert_eq!(w(6, 4).stream, 3 * MIB);
        assert_eq!(w(6, 4).connection, 6 * MIB);
        // A hundred sites of a 4 MiB model: 80 KiB each, raised to the 1 MiB floor; a tiny
        // model and no sites at all take the floor too.
        assert_eq!(w(4, 100).stream, MIB);
        assert_eq!(auto.windows_for(4 << 10, 1000).stream, MIB);
        assert_eq!(w(4, 0).stream, 8 * MIB);
        // What the uploads can hold unread, a window each, stays within twice the model plus
        // 1 MiB per site.
        for (update_mib, sites) in [(1, 1), (4, 100), (16, 7), (64, 5), (64, 100), (256, 33)] {
            let unread = u64::from(w(update_mib, sites).stream) * sites as u64;
            assert!(
                unread <= 2 * (update_mib << 20) + sites as u64 * u64::from(MIB),
                "{update_mib} MiB x {sites}: {unread}"
            );
        }
        // A set connection window bounds the sized call window; a set call window is kept and
        // the connection's is twice it.
        let conn = Limits::from(&LimitsSection {
            connection_window_kib: 2048,
            ..LimitsSection::default()
        });
        assert_eq!(
            conn.windows_for(64 << 20, 5),
            Windows {
                stream: 2 * MIB,
                connection: 2 * MIB
            }
        );
        let call = Limits::from(&LimitsSection {
            stream_window_kib: 512,
            ..LimitsSection::default()
        });
        assert_eq!(
            call.windows_for(4 << 20, 100),
            Windows {
                stream: MIB / 2,
                connection: MIB
            }
        );
    }

    #[test]
    fn a_validators_game_larger_than_a_record_holds_is_refused() {
        let v = ValidatorsSection::default();
        assert!(v.check_design(8).is_ok() && v.check_design(1000).is_ok());
        let big = ValidatorsSection {
            permutations: 10_000,
            ..ValidatorsSection::default()
        };
        assert!(big.check_design(100).is_ok());
        let e = big.check_design(1000).unwrap_err();
        assert!(e.contains("validators.permutations"), "{e}");
    }

    #[test]
    fn a_minimal_config_takes_every_default_and_an_unknown_field_is_named_once() {
        let minimal = "federation = \"f\"\nstate_dir = \"s\"\n[model]\nkind = \"logreg\"\n\
            features = 2\nclasses = 2\n[data]\nlabel_column = \"y\"\nvalidation = \"v.csv\"\n\
            [rounds]\ntotal = 1\nquorum = 1\n[training]\nlearning_rate = 0.5\n[valuation]\n\
            estimator = \"exact\"\n[privacy]\ndelta = 1e-6\n";
        let f: ConfigFile = toml::from_str(minimal).unwrap();
        assert_eq!(f.training.init_seed, 0);
        assert_eq!(f.training.batch_size, TrainingSection::default().batch_size);
        assert_eq!(f.valuation.max_evaluations, 0);
        assert_eq!(f.privacy.epsilon_budget, 8.0);
        assert_eq!(f.rounds.grace_secs, 60);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("coordinator.toml");
        std::fs::write(&path, format!("{minimal}colour = 1\n")).unwrap();
        let e = ConfigFile::load(&path).unwrap_err();
        let said = e.to_string();
        assert!(said.contains("unknown field `colour`"), "{said}");
        assert!(said.contains("coordinator.toml"), "{said}");
        assert_eq!(said.matches("unknown field").count(), 1, "{said}");
        // Said once: the message is not repeated by a source below it.
        assert!(std::error::Error::source(&e).is_none());
    }

    #[test]
    fn a_hospital_is_enrolled_by_public_key_or_by_its_file_not_both_nor_neither() {
        let dir = tempfile::tempdir().unwrap();
        let hex = "ab".repeat(32);
        std::fs::write(dir.path().join("a.pub"), format!("{hex}\n")).unwrap();
        let entry = |key: &str, file: Option<&str>| ParticipantEntry {
            name: "a".into(),
            public_key: key.into(),
            public_key_file: file.map(|f| dir.path().join(f)),
        };
        assert_eq!(entry("", Some("a.pub")).key_text().unwrap(), hex);
        assert_eq!(entry(&hex, None).key_text().unwrap(), hex);
        assert!(
            entry(&hex, Some("a.pub"))
                .key_text()
                .unwrap_err()
                .contains("not both")
        );
        assert!(entry("", None).key_text().unwrap_err().contains("keygen"));
        let missing = entry("", Some("missing.pub")).key_text().unwrap_err();
        assert!(missing.contains("missing.pub"), "{missing}");
    }
}
