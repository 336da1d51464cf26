//! Format v2: the federation entry, enrolment entries, and per round its contribution and
//! decline entries and a summary (see the module docs of [`super`] for how they fit together).
//!
//! # `fedledger.federation/v2` (entry 0)
//!
//! | field | type | meaning |
//! | --- | --- | --- |
//! | `v`, `type`, `federation` | 2, `"fedledger.federation/v2"`, origin | |
//! | `created_at` | RFC 3339 UTC | when the federation was started |
//! | `model` | `{kind, features, classes, hidden, params}` | model spec and its parameter count |
//! | `training` | `{rounds, quorum, local_epochs, batch_size, learning_rate, aggregation}` | as in v1 |
//! | `privacy` | `{epsilon_budget, delta, clip_norm, noise_multiplier, accountants}` | decimal strings; `accountants`: the accountants whose spends the federation records |
//! | `witnesses` | `{keys, quorum}` | cosignature/v1 keys; `quorum` <= keys |
//! | `reward` | `{rule, pool_per_round[, period_rounds, z_milli]}` | [`REWARD_RULE`] (per round), [`REWARD_RULE_SETTLED`], [`REWARD_RULE_SETTLED_CUMULATIVE`] or [`REWARD_RULE_SETTLED_IMPACT`] (over periods, with their parameters) |
//! | `validation` | `{sha256}` | digest of the coordinator's validation file |
//! | `governance` | `{governors, threshold}` | Ed25519 keys (hex, sorted) of the governors and the k of k-of-n; both may be empty/0 |
//! | `schema` | `{label, features: [{name[, min, max]}]}`, optional | the accepted data schema (governed) |
//! | `enrolments` | integer >= 1 | how many enrolment entries follow: the genesis is entries `0..=enrolments` |
//!
//! # `fedledger.enrolment/v2`
//!
//! `participant` (64 hex Ed25519 key), `name` (1-64 printable characters), `role`
//! (`contributor` or `validator`).
//!
//! # `fedledger.contribution/v2`
//!
//! `round`, `participant`, `name`, `examples` (>= 1), `update_sha256`, `privacy`
//! ([`PrivacyObject`]), `signature` (base64 Ed25519 over [`super::update_signing_message`]),
//! `value_nano` (may be negative), `value_se_nano` (its standard error; absent in ledgers
//! written before uncertainty was recorded), `reward` (0 under the settled rules: paid by
//! the settlement), `flags` (strings).
//!
//! # `fedledger.decline/v2`
//!
//! `round`, `participant`, `name`, `reason` (1-1024 bytes, one line), `signature` (base64 Ed25519
//! over [`super::decline_signing_message`]).
//!
//! # `fedledger.round/v2` (the round's summary)
//!
//! `round`, `status` (`completed` or `abandoned`), `reason` (exactly when abandoned), `opened_at`,
//! `closed_at`, `model {before, after, params}`, `validation {sha256, metric, score_before_nano,
//! score_after_nano}`, `valuation {estimator, seed, evaluations[, uncertainty {method,
//! resamples}]}`, `reward_pool` (0 when abandoned, and under the settled rules),
//! `server_dp` (only with DP-FedAvg: [`ServerDpRecord`]), `rules_sha256` (the SHA-256 of the
//! canonical JSON of the [`super::Rules`] in force for the round; written since governance,
//! required when the genesis names governors), `entries {first, count}`:
//! the index range of the round's contribution and decline entries, which immediately precede
//! the summary in the same atomic batch.
//!
//! # `fedledger.settlement/v2` (a period's rewards, [`REWARD_RULE_SETTLED`], [`REWARD_RULE_SETTLED_CUMULATIVE`] or [`REWARD_RULE_SETTLED_IMPACT`])
//!
//! Written in the batch of the round that ends a period (every `period_rounds` rounds and the
//! federation's last round), right after its summary, in `parts` consecutive entries of at
//! most [`MAX_SETTLEMENT_LINES`] lines each (one entry up to that many participants):
//! `period` (from 1), `rounds {first, last}`, `rule` (the [`RewardRecord`] applied),
//! `counted_rounds` (the completed rounds with a positive gain, ascending), `pool` (the units
//! split: `pool_per_round` x counted rounds, or 0 when nobody is paid), `part` (from 1),
//! `parts`, and `participants`: per participant with a contribution in the period, sorted by
//! key across parts, `participant`, `value_nano` (accumulated over the counted rounds it was
//! not flagged a copy in), `se_nano` (its standard error: the larger of the bootstrap one,
//! `sqrt(sum of value_se_nano^2)`, and the round-to-round one the rule estimates from the
//! participant's recorded history; rounded down), `rounds` (those rounds), `verdict`
//! (`distinguishable` when `value_nano > z x se`, tested exactly, else `not_distinguishable`)
//! and `payout`. Payouts over all parts sum to `pool`. The valuation crate's `settle` is the
//! rule; `verify` recomputes it from the recorded rounds.
//!
//! Under [`REWARD_RULE_SETTLED_CUMULATIVE`] the lines are cumulative: one per participant with
//! a contribution in any round up to the period's end, `value_nano`, `se_nano`, `rounds` and
//! `verdict` over every counted round since round 1, and `payout` this period's share of the
//! pool (towards the participant's share of everything paid so far; the valuation crate's
//! `settle_cumulative`, which `verify` recomputes from the recorded rounds and the recorded
//! payouts of the earlier settlements). `counted_rounds` and `pool` are the period's, as
//! under [`REWARD_RULE_SETTLED`].
//!
//! Under [`REWARD_RULE_SETTLED_IMPACT`] the lines are cumulative as under
//! [`REWARD_RULE_SETTLED_CUMULATIVE`], but `value_nano` also holds the participant's values in
//! the completed rounds that did not improve the model, and `rounds` and `se_nano` cover those
//! rounds too (the valuation crate's `settle_impact`). `counted_rounds` and `pool` are still the period's improving rounds.

use serde::{Deserialize, Serialize};

use super::{
    Ctx, DigestRecord, ModelDigestsRecord, ModelSpecRecord, PrivacyObject, RewardRecord,
    RoundHeader, RoundStatus, ServerDpRecord, TrainingRecord, UNCERTAINTY_BOOTSTRAP,
    ValidationRecord, ValuationRecord, WitnessesRecord, check_round_header,
};
use crate::error::LedgerError;

/// Record format version 2.
pub const RECORD_VERSION: u64 = 2;
/// `type` of entry 0.
pub const FEDERATION_TYPE: &str = "fedledger.federation/v2";
/// `type` of an enrolment.
pub const ENROLMENT_TYPE: &str = "fedledger.enrolment/v2";
/// `type` of an accepted update.
pub const CONTRIBUTION_TYPE: &str = "fedledger.contribution/v2";
/// `type` of a signed decline.
pub const DECLINE_TYPE: &str = "fedledger.decline/v2";
/// `type` of a round's summary.
pub const ROUND_TYPE: &str = "fedledger.round/v2";
/// `type` of (a part of) a period's reward settlement.
pub const SETTLEMENT_TYPE: &str = "fedledger.settlement/v2";
/// Most participant lines in one settlement entry (a line is under 200 bytes, so an entry
/// stays far below the 65,535-byte limit; more participants take more parts).
pub const MAX_SETTLEMENT_LINES: usize = 256;
/// `verdict` of a settlement line whose accumulated value is paid.
pub const VERDICT_DISTINGUISHABLE: &str = "distinguishable";
/// `verdict` of a settlement line whose accumulated value is not above `z` standard errors.
pub const VERDICT_NOT_DISTINGUISHABLE: &str = "not_distinguishable";
/// Role of a hospital that contributes updates.
pub const ROLE_CONTRIBUTOR: &str = "contributor";
/// Role of a party that evaluates contributions on its own data.
pub const ROLE_VALIDATOR: &str = "validator";
/// Longest decline reason.
pub const MAX_REASON_BYTES: usize = 1024;

/// The federation's privacy plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyPlan {
    /// Per-participant epsilon budget the federation is planned for, decimal string.
    pub epsilon_budget: String,
    /// Delta, decimal string.
    pub delta: String,
    /// DP-SGD clipping norm asked of hospitals, decimal string.
    pub clip_norm: String,
    /// DP-SGD noise multiplier asked of hospitals, decimal string.
    pub noise_multiplier: String,
    /// The accountants whose spends this federation records.
    pub accountants: Vec<String>,
}

/// Who may change the federation's rules (the governance issue): Ed25519 keys and how many
/// must sign. Empty with threshold 0 when nobody may.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct GovernanceRecord {
    /// Governors' Ed25519 public keys, 64 lowercase hex, sorted, unique.
    pub governors: Vec<String>,
    /// Signatures needed (k of k-of-n).
    pub threshold: u64,
}

/// Entry 0 of a v2 log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationEntry {
    /// Always [`RECORD_VERSION`].
    pub v: u64,
    /// Always [`FEDERATION_TYPE`].
    #[serde(rename = "type")]
    pub record_type: String,
    /// The log's origin.
    pub federation: String,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// Model spec.
    pub model: ModelSpecRecord,
    /// Training hyper-parameters.
    pub training: TrainingRecord,
    /// Privacy plan.
    pub privacy: PrivacyPlan,
    /// Witness keys and quorum.
    pub witnesses: WitnessesRecord,
    /// Reward rule and pool.
    pub reward: RewardRecord,
    /// Validation file digest.
    pub validation: DigestRecord,
    /// Governors and threshold.
    pub governance: GovernanceRecord,
    /// The accepted data schema, when the federation governs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<super::SchemaRecord>,
    /// Enrolment entries that follow (entries `1..=enrolments`).
    pub enrolments: u64,
}

/// A key enrolled in the federation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrolmentEntry {
    /// Always [`RECORD_VERSION`].
    pub v: u64,
    /// Always [`ENROLMENT_TYPE`].
    #[serde(rename = "type")]
    pub record_type: String,
    /// The log's origin.
    pub federation: String,
    /// Ed25519 public key, 64 lowercase hex.
    pub participant: String,
    /// Display name (unique in the federation).
    pub name: String,
    /// [`ROLE_CONTRIBUTOR`] or [`ROLE_VALIDATOR`].
    pub role: String,
}

/// An accepted update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContributionEntry {
    /// Always [`RECORD_VERSION`].
    pub v: u64,
    /// Always [`CONTRIBUTION_TYPE`].
    #[serde(rename = "type")]
    pub record_type: String,
    /// The log's origin.
    pub federation: String,
    /// The round.
    pub round: u64,
    /// Ed25519 public key, 64 lowercase hex.
    pub participant: String,
    /// Display name.
    pub name: String,
    /// Training examples claimed (the FedAvg weight), signed.
    pub examples: u64,
    /// SHA-256 of the update's little-endian f32 bytes, signed.
    pub update_sha256: String,
    /// Privacy cost of the release, signed (through its digest).
    pub privacy: PrivacyObject,
    /// Base64 Ed25519 signature over the v2 update message.
    pub signature: String,
    /// Shapley value times 1e9 (the coordinator's).
    pub value_nano: i64,
    /// The value's standard error times 1e9 (the coordinator's; see the summary's
    /// `valuation.uncertainty`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_se_nano: Option<u64>,
    /// Reward in base units (the coordinator's).
    pub reward: u64,
    /// Flags raised while checking the update (the coordinator's).
    pub flags: Vec<String>,
}

impl ContributionEntry {
    /// The message the participant signed.
    pub fn signing_message(&self) -> String {
        super::update_signing_message(
            &self.federation,
            self.round,
            &self.update_sha256,
            self.examples,
            &self.privacy.sha256_hex(),
        )
    }
}

/// A signed decline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclineEntry {
    /// Always [`RECORD_VERSION`].
    pub v: u64,
    /// Always [`DECLINE_TYPE`].
    #[serde(rename = "type")]
    pub record_type: String,
    /// The log's origin.
    pub federation: String,
    /// The round.
    pub round: u64,
    /// Ed25519 public key, 64 lowercase hex.
    pub participant: String,
    /// Display name.
    pub name: String,
    /// Why, one line.
    pub reason: String,
    /// Base64 Ed25519 signature over the decline message.
    pub signature: String,
}

impl DeclineEntry {
    /// The message the participant signed.
    pub fn signing_message(&self) -> String {
        super::decline_signing_message(&self.federation, self.round, &self.reason)
    }
}

/// Where a round's contribution and decline entries are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryRange {
    /// Index of the first.
    pub first: u64,
    /// How many.
    pub count: u64,
}

/// A round's summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoundSummary {
    /// Always [`RECORD_VERSION`].
    pub v: u64,
    /// Always [`ROUND_TYPE`].
    #[serde(rename = "type")]
    pub record_type: String,
    /// The log's origin.
    pub federation: String,
    /// Round number (contiguous among summaries, from 1).
    pub round: u64,
    /// Outcome.
    pub status: RoundStatus,
    /// Why the round was abandoned (only then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// RFC 3339 UTC.
    pub opened_at: String,
    /// RFC 3339 UTC.
    pub closed_at: String,
    /// Model digests.
    pub model: ModelDigestsRecord,
    /// Validation scores.
    pub validation: ValidationRecord,
    /// Valuation parameters.
    pub valuation: ValuationRecord,
    /// Reward pool of this round.
    pub reward_pool: u64,
    /// DP-FedAvg at the coordinator, when on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_dp: Option<ServerDpRecord>,
    /// The round's contribution and decline entries.
    pub entries: EntryRange,
    /// SHA-256 of the canonical JSON of the rules in force for the round
    /// ([`super::Rules`]); absent in ledgers written before governance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules_sha256: Option<String>,
}

/// The rounds a settlement covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoundRange {
    /// First round of the period.
    pub first: u64,
    /// Last round of the period (the round whose batch holds the settlement).
    pub last: u64,
}

/// One participant's line in a settlement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettlementLine {
    /// Ed25519 public key, 64 lowercase hex.
    pub participant: String,
    /// Accumulated value over the counted rounds, times 1e9.
    pub value_nano: i64,
    /// Its standard error, times 1e9.
    pub se_nano: u64,
    /// Counted rounds whose value it accumulated.
    pub rounds: u64,
    /// [`VERDICT_DISTINGUISHABLE`] or [`VERDICT_NOT_DISTINGUISHABLE`].
    pub verdict: String,
    /// Units paid.
    pub payout: u64,
}

/// (A part of) a period's reward settlement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettlementEntry {
    /// Always [`RECORD_VERSION`].
    pub v: u64,
    /// Always [`SETTLEMENT_TYPE`].
    #[serde(rename = "type")]
    pub record_type: String,
    /// The log's origin.
    pub federation: String,
    /// The period, from 1.
    pub period: u64,
    /// Its rounds.
    pub rounds: RoundRange,
    /// The rule applied, with its parameters.
    pub rule: RewardRecord,
    /// Rounds that counted (completed with a positive gain), ascending.
    pub counted_rounds: Vec<u64>,
    /// Units split among the participants (0 when nobody is paid).
    pub pool: u64,
    /// This entry's part, from 1.
    pub part: u64,
    /// How many parts the settlement has.
    pub parts: u64,
    /// Lines sorted by participant key.
    pub participants: Vec<SettlementLine>,
}

pub(crate) fn header(cx: &Ctx, ty: &str, v: u64, record_type: &str) -> Result<(), LedgerError> {
    if v != RECORD_VERSION {
        return Err(cx.err("v", format!("must be {RECORD_VERSION}")));
    }
    if record_type != ty {
        return Err(cx.err("type", format!("must be {ty}")));
    }
    Ok(())
}

pub(crate) fn name(cx: &Ctx, field: &str, s: &str) -> Result<(), LedgerError> {
    if s.is_empty() || s.len() > 64 || s.chars().any(char::is_control) {
        return Err(cx.err(field, "must be 1-64 printable characters"));
    }
    Ok(())
}

fn signature(cx: &Ctx, field: &str, s: &str) -> Result<(), LedgerError> {
    match crate::note::b64_decode(s) {
        Some(sig) if sig.len() == 64 => Ok(()),
        _ => Err(cx.err(field, "must be a base64 64-byte Ed25519 signature")),
    }
}

impl FederationEntry {
    pub(crate) fn check(&self, cx: &Ctx) -> Result<(), LedgerError> {
        header(cx, FEDERATION_TYPE, self.v, &self.record_type)?;
        cx.timestamp("created_at", &self.created_at)?;
        cx.nonempty("model.kind", &self.model.kind)?;
        if self.model.params == 0 {
            return Err(cx.err("model.params", "must be positive"));
        }
        cx.decimal("training.learning_rate", &self.training.learning_rate)?;
        cx.nonempty("training.aggregation", &self.training.aggregation)?;
        if self.training.quorum == 0 {
            return Err(cx.err("training.quorum", "must be positive"));
        }
        let p = &self.privacy;
        cx.decimal("privacy.epsilon_budget", &p.epsilon_budget)?;
        cx.decimal("privacy.delta", &p.delta)?;
        cx.decimal("privacy.clip_norm", &p.clip_norm)?;
        cx.decimal("privacy.noise_multiplier", &p.noise_multiplier)?;
        if p.accountants.is_empty() {
            return Err(cx.err("privacy.accountants", "must name at least one accountant"));
        }
        for (i, a) in p.accountants.iter().enumerate() {
            if !matches!(a.as_str(), "rdp" | "pld" | "rdp-dp-accounting") {
                return Err(cx.err(
                    format!("privacy.accountants[{i}]"),
                    format!("unknown accountant {a:?}"),
                ));
            }
        }
        self.witnesses.check(cx, "witnesses")?;
        self.reward.check(cx, "reward")?;
        cx.hex32("validation.sha256", &self.validation.sha256)?;
        for (i, g) in self.governance.governors.iter().enumerate() {
            let field = format!("governance.governors[{i}]");
            cx.hex32(&field, g)?;
            if i > 0 && self.governance.governors[i - 1] >= *g {
                return Err(cx.err(field, "governors must be sorted, without duplicates"));
            }
        }
        if self.governance.threshold as usize > self.governance.governors.len() {
            return Err(cx.err("governance.threshold", "exceeds the number of governors"));
        }
        if !self.governance.governors.is_empty() && self.governance.threshold == 0 {
            return Err(cx.err(
                "governance.threshold",
                "must be at least 1 when governors are named",
            ));
        }
        if let Some(schema) = &self.schema {
            schema.check(cx, "schema")?;
        }
        if self.enrolments == 0 {
            return Err(cx.err("enrolments", "at least one key must be enrolled"));
        }
        Ok(())
    }
}

impl EnrolmentEntry {
    pub(crate) fn check(&self, cx: &Ctx) -> Result<(), LedgerError> {
        header(cx, ENROLMENT_TYPE, self.v, &self.record_type)?;
        cx.hex32("participant", &self.participant)?;
        name(cx, "name", &self.name)?;
        if !matches!(self.role.as_str(), ROLE_CONTRIBUTOR | ROLE_VALIDATOR) {
            return Err(cx.err(
                "role",
                format!("must be {ROLE_CONTRIBUTOR:?} or {ROLE_VALIDATOR:?}"),
            ));
        }
        Ok(())
    }
}

impl ContributionEntry {
    pub(crate) fn check(&self, cx: &Ctx) -> Result<(), LedgerError> {
        header(cx, CONTRIBUTION_TYPE, self.v, &self.record_type)?;
        if self.round == 0 {
            return Err(cx.err("round", "rounds start at 1"));
        }
        cx.hex32("participant", &self.participant)?;
        name(cx, "name", &self.name)?;
        if self.examples == 0 {
            return Err(cx.err("examples", "must be at least 1"));
        }
        cx.hex32("update_sha256", &self.update_sha256)?;
        self.privacy.check(cx, "privacy")?;
        signature(cx, "signature", &self.signature)?;
        for (j, flag) in self.flags.iter().enumerate() {
            cx.nonempty(&format!("flags[{j}]"), flag)?;
        }
        Ok(())
    }
}

impl DeclineEntry {
    pub(crate) fn check(&self, cx: &Ctx) -> Result<(), LedgerError> {
        header(cx, DECLINE_TYPE, self.v, &self.record_type)?;
        if self.round == 0 {
            return Err(cx.err("round", "rounds start at 1"));
        }
        cx.hex32("participant", &self.participant)?;
        name(cx, "name", &self.name)?;
        if self.reason.is_empty()
            || self.reason.len() > MAX_REASON_BYTES
            || self.reason.contains('\n')
        {
            return Err(cx.err(
                "reason",
                format!("must be 1-{MAX_REASON_BYTES} bytes on one line"),
            ));
        }
        signature(cx, "signature", &self.signature)
    }
}

impl RoundSummary {
    pub(crate) fn check(&self, cx: &Ctx) -> Result<(), LedgerError> {
        header(cx, ROUND_TYPE, self.v, &self.record_type)?;
        if self.round == 0 {
            return Err(cx.err("round", "rounds start at 1"));
        }
        check_round_header(
            cx,
            RoundHeader {
                status: self.status,
                reason: self.reason.as_deref(),
                opened_at: &self.opened_at,
                closed_at: &self.closed_at,
                model: &self.model,
                validation: &self.validation,
                valuation: &self.valuation,
            },
        )?;
        if let Some(u) = &self.valuation.uncertainty
            && u.method != UNCERTAINTY_BOOTSTRAP
        {
            return Err(cx.err(
                "valuation.uncertainty.method",
                format!("unknown uncertainty method {:?}", u.method),
            ));
        }
        if self.status == RoundStatus::Abandoned && self.reward_pool != 0 {
            return Err(cx.err("reward_pool", "an abandoned round has a zero pool"));
        }
        if let Some(v) = &self.valuation.validators {
            if self.status == RoundStatus::Abandoned {
                return Err(cx.err("valuation.validators", "an abandoned round is not valued"));
            }
            v.check(cx, "valuation.validators")?;
        }
        if let Some(r) = &self.rules_sha256 {
            cx.hex32("rules_sha256", r)?;
        }
        if let Some(d) = &self.server_dp {
            cx.decimal("server_dp.clip_norm", &d.clip_norm)?;
            if d.delta_pico == 0 || d.delta_pico >= 1_000_000_000_000 {
                return Err(cx.err("server_dp.delta_pico", "must be in (0, 1e12)"));
            }
        }
        // The round's entries come right before its summary.
        if self.entries.first.checked_add(self.entries.count) != Some(cx.index) {
            return Err(cx.err(
                "entries",
                format!(
                    "the round's entries {}..+{} do not end right before the summary at {}",
                    self.entries.first, self.entries.count, cx.index
                ),
            ));
        }
        Ok(())
    }
}

impl SettlementEntry {
    pub(crate) fn check(&self, cx: &Ctx) -> Result<(), LedgerError> {
        header(cx, SETTLEMENT_TYPE, self.v, &self.record_type)?;
        if self.period == 0 {
            return Err(cx.err("period", "periods start at 1"));
        }
        if self.rounds.first == 0 || self.rounds.first > self.rounds.last {
            return Err(cx.err("rounds", "must be 1 <= first <= last"));
        }
        self.rule.check(cx, "rule")?;
        if !self.rule.is_settled() {
            return Err(cx.err(
                "rule.rule",
                format!(
                    "a settlement applies {}, {} or {}",
                    super::REWARD_RULE_SETTLED,
                    super::REWARD_RULE_SETTLED_CUMULATIVE,
                    super::REWARD_RULE_SETTLED_IMPACT
                ),
            ));
        }
        for (j, r) in self.counted_rounds.iter().enumerate() {
            let in_range = (self.rounds.first..=self.rounds.last).contains(r);
            if !in_range || (j > 0 && self.counted_rounds[j - 1] >= *r) {
                return Err(cx.err(
                    format!("counted_rounds[{j}]"),
                    "counted rounds must be ascending, within the period",
                ));
            }
        }
        if self.parts == 0 || self.part == 0 || self.part > self.parts {
            return Err(cx.err("part", "must be 1 <= part <= parts"));
        }
        if self.participants.len() > MAX_SETTLEMENT_LINES {
            return Err(cx.err(
                "participants",
                format!("at most {MAX_SETTLEMENT_LINES} lines per part"),
            ));
        }
        let mut paid: u128 = 0;
        for (j, l) in self.participants.iter().enumerate() {
            let field = format!("participants[{j}]");
            cx.hex32(&format!("{field}.participant"), &l.participant)?;
            if j > 0 && self.participants[j - 1].participant >= l.participant {
                return Err(cx.err(
                    format!("{field}.participant"),
                    "lines must be sorted by key, without duplicates",
                ));
            }
            if !matches!(
                l.verdict.as_str(),
                VERDICT_DISTINGUISHABLE | VERDICT_NOT_DISTINGUISHABLE
            ) {
                return Err(cx.err(
                    format!("{field}.verdict"),
                    format!(
                        "must be {VERDICT_DISTINGUISHABLE:?} or {VERDICT_NOT_DISTINGUISHABLE:?}"
                    ),
                ));
            }
            if l.payout > 0 && l.verdict != VERDICT_DISTINGUISHABLE {
                return Err(cx.err(
                    format!("{field}.payout"),
                    "only a distinguishable value is paid",
                ));
            }
            paid += u128::from(l.payout);
        }
        if paid > u128::from(self.pool) {
            return Err(cx.err("pool", "the payouts exceed the pool"));
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::{Record, encode_canonical, validate_entry};
    use super::*;

    pub(crate) const ORIGIN: &str = "o";

    pub(crate) fn federation(enrolments: u64) -> FederationEntry {
        FederationEntry {
            v: RECORD_VERSION,
            record_type: FEDERATION_TYPE.into(),
            federation: ORIGIN.into(),
            created_at: "2026-12-01T00:00:00Z".into(),
            model: ModelSpecRecord {
                kind: "logreg".into(),
                features: 30,
                classes: 2,
                hidden: vec![],
                params: 31,
            },
            training: TrainingRecord {
                rounds: 3,
                quorum: 2,
                local_epochs: 1,
                batch_size: 16,
                learning_rate: "0.1".into(),
                aggregation: "fedavg".into(),
            },
            privacy: PrivacyPlan {
                epsilon_budget: "8".into(),
                delta: "0.00001".into(),
                clip_norm: "1".into(),
                noise_multiplier: "1.1".into(),
                accountants: vec!["rdp".into(), "pld".into()],
            },
            witnesses: WitnessesRecord {
                keys: vec![],
                quorum: 0,
            },
            reward: RewardRecord {
                rule: super::super::REWARD_RULE.into(),
                pool_per_round: 1000,
                period_rounds: None,
                z_milli: None,
            },
            validation: DigestRecord {
                sha256: "cc".repeat(32),
            },
            governance: GovernanceRecord::default(),
            schema: None,
            enrolments,
        }
    }

    pub(crate) fn enrolment(key: &str, name: &str) -> EnrolmentEntry {
        EnrolmentEntry {
            v: RECORD_VERSION,
            record_type: ENROLMENT_TYPE.into(),
            federation: ORIGIN.into(),
            participant: key.into(),
            name: name.into(),
            role: ROLE_CONTRIBUTOR.into(),
        }
    }

    pub(crate) fn contribution(round: u64, key: &str, reward: u64) -> ContributionEntry {
        ContributionEntry {
            v: RECORD_VERSION,
            record_type: CONTRIBUTION_TYPE.into(),
            federation: ORIGIN.into(),
            round,
            participant: key.into(),
            name: "h".into(),
            examples: 100,
            update_sha256: "dd".repeat(32),
            privacy: PrivacyObject::conservative("rdp", 1.1, 0.01, 100, 1e-5)
                .with_epsilon(0.5, 0.5),
            signature: crate::note::b64_encode(&[7u8; 64]),
            value_nano: -5,
            value_se_nano: Some(3),
            reward,
            flags: vec![],
        }
    }

    pub(crate) fn summary(round: u64, first: u64, count: u64) -> RoundSummary {
        RoundSummary {
            v: RECORD_VERSION,
            record_type: ROUND_TYPE.into(),
            federation: ORIGIN.into(),
            round,
            status: RoundStatus::Completed,
            reason: None,
            opened_at: "2026-12-01T00:00:01Z".into(),
            closed_at: "2026-12-01T00:00:02.5Z".into(),
            model: ModelDigestsRecord {
                before: "ee".repeat(32),
                after: "ef".repeat(32),
                params: 31,
            },
            validation: ValidationRecord {
                sha256: "cc".repeat(32),
                metric: "neg_log_loss".into(),
                score_before_nano: -700_000_000,
                score_after_nano: -600_000_000,
            },
            valuation: ValuationRecord {
                estimator: "exact".into(),
                seed: 42,
                evaluations: 4,
                uncertainty: Some(super::super::UncertaintyRecord {
                    method: UNCERTAINTY_BOOTSTRAP.into(),
                    resamples: 200,
                }),
                validators: None,
            },
            reward_pool: 1000,
            server_dp: None,
            entries: EntryRange { first, count },
            rules_sha256: None,
        }
    }

    pub(crate) fn settled_rule() -> RewardRecord {
        RewardRecord {
            rule: super::super::REWARD_RULE_SETTLED.into(),
            pool_per_round: 1000,
            period_rounds: Some(2),
            z_milli: Some(2000),
        }
    }

    pub(crate) fn settlement(period: u64, lines: Vec<SettlementLine>) -> SettlementEntry {
        let pool = lines.iter().map(|l| l.payout).sum();
        SettlementEntry {
            v: RECORD_VERSION,
            record_type: SETTLEMENT_TYPE.into(),
            federation: ORIGIN.into(),
            period,
            rounds: RoundRange {
                first: 2 * period - 1,
                last: 2 * period,
            },
            rule: settled_rule(),
            counted_rounds: vec![2 * period - 1],
            pool,
            part: 1,
            parts: 1,
            participants: lines,
        }
    }

    pub(crate) fn line(key: &str, value_nano: i64, payout: u64) -> SettlementLine {
        SettlementLine {
            participant: key.into(),
            value_nano,
            se_nano: 10,
            rounds: 1,
            verdict: if payout > 0 {
                VERDICT_DISTINGUISHABLE
            } else {
                VERDICT_NOT_DISTINGUISHABLE
            }
            .into(),
            payout,
        }
    }

    #[test]
    fn settlements_round_trip_and_refusals_name_the_field() {
        let st = settlement(
            1,
            vec![
                line(&"aa".repeat(32), 700, 1000),
                line(&"bb".repeat(32), 5, 0),
            ],
        );
        assert_eq!(
            super::super::validated_fast(ORIGIN, 9, &encode_canonical(&st).unwrap()),
            Record::Settlement(Box::new(st.clone()))
        );
        let f = |g: fn(&mut SettlementEntry)| {
            let mut e = st.clone();
            g(&mut e);
            field_of(9, &encode_canonical(&e).unwrap())
        };
        assert_eq!(f(|e| e.period = 0), "period");
        assert_eq!(f(|e| e.rounds.first = 3), "rounds");
        assert_eq!(f(|e| e.counted_rounds = vec![3]), "counted_rounds[0]");
        assert_eq!(f(|e| e.counted_rounds = vec![2, 1]), "counted_rounds[1]");
        assert_eq!(f(|e| e.part = 2), "part");
        assert_eq!(f(|e| e.pool = 999), "pool");
        assert_eq!(f(|e| e.rule.z_milli = None), "rule.z_milli");
        assert_eq!(f(|e| e.rule.period_rounds = Some(0)), "rule.period_rounds");
        assert_eq!(
            f(|e| e.participants.swap(0, 1)),
            "participants[1].participant"
        );
        assert_eq!(
            f(|e| e.participants[1].verdict = "maybe".into()),
            "participants[1].verdict"
        );
        assert_eq!(
            f(|e| e.participants[0].verdict = VERDICT_NOT_DISTINGUISHABLE.into()),
            "participants[0].payout"
        );
        let mut per_round = settled_rule();
        per_round.rule = super::super::REWARD_RULE.into();
        per_round.period_rounds = None;
        per_round.z_milli = None;
        let mut e = st.clone();
        e.rule = per_round;
        assert_eq!(field_of(9, &encode_canonical(&e).unwrap()), "rule.rule");
        // The genesis's rule is checked the same way.
        let mut g = federation(1);
        g.reward = settled_rule();
        g.reward.period_rounds = None;
        assert_eq!(
            field_of(0, &encode_canonical(&g).unwrap()),
            "reward.period_rounds"
        );
        // A full part of 256 lines stays within the entry limit.
        let lines: Vec<SettlementLine> = (0..MAX_SETTLEMENT_LINES)
            .map(|k| SettlementLine {
                participant: format!("{k:064x}"),
                value_nano: i64::MIN,
                se_nano: u64::MAX,
                rounds: u64::MAX,
                verdict: VERDICT_NOT_DISTINGUISHABLE.into(),
                payout: 0,
            })
            .collect();
        let mut big = settlement(1, lines);
        big.period = u64::MAX;
        big.counted_rounds = vec![];
        let bytes = encode_canonical(&big).unwrap();
        assert!(
            bytes.len() < super::super::MAX_ENTRY_BYTES,
            "{}",
            bytes.len()
        );
        validate_entry(9, ORIGIN, &bytes).unwrap();
    }

    fn field_of(index: u64, bytes: &[u8]) -> String {
        match validate_entry(index, ORIGIN, bytes) {
            Err(LedgerError::Schema { field, .. }) => field,
            other => panic!("expected a schema error, got {other:?}"),
        }
    }

    #[test]
    fn every_entry_type_round_trips_through_the_validator() {
        let f = federation(2);
        assert_eq!(
            super::super::validated_fast(ORIGIN, 0, &encode_canonical(&f).unwrap()),
            Record::Federation(Box::new(f))
        );
        let e = enrolment(&"aa".repeat(32), "hospital-a");
        assert_eq!(
            super::super::validated_fast(ORIGIN, 1, &encode_canonical(&e).unwrap()),
            Record::Enrolment(Box::new(e))
        );
        let c = contribution(1, &"aa".repeat(32), 1000);
        assert_eq!(
            super::super::validated_fast(ORIGIN, 3, &encode_canonical(&c).unwrap()),
            Record::Contribution(Box::new(c))
        );
        let d = DeclineEntry {
            v: RECORD_VERSION,
            record_type: DECLINE_TYPE.into(),
            federation: ORIGIN.into(),
            round: 1,
            participant: "bb".repeat(32),
            name: "hospital-b".into(),
            reason: "privacy budget exhausted".into(),
            signature: crate::note::b64_encode(&[9u8; 64]),
        };
        assert_eq!(
            super::super::validated_fast(ORIGIN, 4, &encode_canonical(&d).unwrap()),
            Record::Decline(Box::new(d))
        );
        let mut s = summary(1, 3, 2);
        s.server_dp = Some(ServerDpRecord::new("0.5", 1.0, 3.2, 1e-5));
        assert_eq!(
            super::super::validated_fast(ORIGIN, 5, &encode_canonical(&s).unwrap()),
            Record::Round(Box::new(s))
        );
    }

    #[test]
    fn refusals_name_the_field() {
        let c = |f: fn(&mut ContributionEntry)| {
            let mut c = contribution(1, &"aa".repeat(32), 0);
            f(&mut c);
            field_of(3, &encode_canonical(&c).unwrap())
        };
        assert_eq!(c(|c| c.round = 0), "round");
        assert_eq!(c(|c| c.examples = 0), "examples");
        assert_eq!(c(|c| c.participant = "AA".repeat(32)), "participant");
        assert_eq!(c(|c| c.privacy.delta_pico = 0), "privacy");
        assert_eq!(c(|c| c.signature = "short".into()), "signature");
        assert_eq!(c(|c| c.name = String::new()), "name");
        let s = |f: fn(&mut RoundSummary)| {
            let mut s = summary(2, 3, 2);
            f(&mut s);
            field_of(5, &encode_canonical(&s).unwrap())
        };
        assert_eq!(s(|s| s.entries.count = 1), "entries");
        assert_eq!(s(|s| s.status = RoundStatus::Abandoned), "reason");
        assert_eq!(
            s(|s| {
                s.status = RoundStatus::Abandoned;
                s.reason = Some("quorum".into());
            }),
            "reward_pool"
        );
        let f = |g: fn(&mut FederationEntry)| {
            let mut e = federation(1);
            g(&mut e);
            field_of(0, &encode_canonical(&e).unwrap())
        };
        assert_eq!(f(|e| e.enrolments = 0), "enrolments");
        assert_eq!(f(|e| e.privacy.accountants.clear()), "privacy.accountants");
        assert_eq!(
            f(|e| e.privacy.accountants.push("gdp".into())),
            "privacy.accountants[2]"
        );
        assert_eq!(
            f(|e| e.governance.governors = vec!["bb".repeat(32), "aa".repeat(32)]),
            "governance.governors[1]"
        );
        assert_eq!(f(|e| e.governance.threshold = 1), "governance.threshold");
        // A federation entry anywhere but 0, and anything else at 0.
        let fed = encode_canonical(&federation(1)).unwrap();
        assert_eq!(field_of(1, &fed), "type");
        let enr = encode_canonical(&enrolment(&"aa".repeat(32), "a")).unwrap();
        assert_eq!(field_of(0, &enr), "type");
        let mut e = enrolment(&"aa".repeat(32), "a");
        e.role = "auditor".into();
        assert_eq!(field_of(1, &encode_canonical(&e).unwrap()), "role");
    }
}
