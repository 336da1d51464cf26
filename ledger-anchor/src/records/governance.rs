//! Governance: the federation's rules change only by k-of-n governors' signatures, anchored
//! before use.
//!
//! # Proposals
//!
//! A [`Proposal`] is canonical JSON: `type` (`"fedledger.proposal/v1"`), `federation`,
//! `previous` (SHA-256, lowercase hex, of the bytes of the latest governance entry, or of
//! entry 0 when there is none yet: proposals form a chain, so a replayed one no longer
//! chains), `from_round` (the first round the changes apply to), `expires_at` (RFC 3339 UTC;
//! the coordinator refuses it afterwards) and `changes` (a list of [`Change`], applied in
//! order). Each governor signs [`governance_signing_message`] =
//! `fedledger/governance/v1\n<federation>\n<sha256 of the proposal's canonical bytes>\n`.
//!
//! # `fedledger.governance/v1` entries
//!
//! `v` (2, the record format), `type`, `federation`, `proposal` (the proposal exactly as
//! signed), `signatures` (`[{governor, signature}]`, sorted by governor key, unique; base64
//! Ed25519). Its acceptance rule ([`Governance::admit`], the same for the coordinator and
//! `verify`): chains from the latest governance entry (or the genesis), every signature by a
//! governor in force and valid, at least `threshold` of them. A change of governors takes
//! effect when anchored; every other change from `from_round` on: the rules of round r are
//! the genesis's with the changes of every entry whose `from_round <= r` applied in ledger
//! order ([`Governance::rules_for`]).
//!
//! A change of the reward rule or its period ([`Change::RewardRule`]) also moves where
//! settlements fall: the running period ends at round `from_round - 1`, and periods of the new
//! settings start at `from_round` ([`period_ending`], from [`Governance::reward_segments`]).
//! Whoever closes round `from_round - 1` must know that, so such a change must be anchored
//! before that round's summary (`verify` fails a later one; the coordinator asks for one more
//! round of margin: `from_round` at least two after the open round).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    Ctx, EnrolmentEntry, FederationEntry, GovernanceRecord, RECORD_VERSION, ROLE_CONTRIBUTOR,
    ROLE_VALIDATOR, RewardRecord, WitnessesRecord, encode_canonical, is_decimal,
};
use crate::error::LedgerError;

/// `type` of a governance entry.
pub const GOVERNANCE_TYPE: &str = "fedledger.governance/v1";
/// `type` of a proposal (inside a governance entry, and as signed).
pub const PROPOSAL_TYPE: &str = "fedledger.proposal/v1";
/// The utilities a round may be valued with (recorded as the summary's `validation.metric`).
pub const UTILITIES: [&str; 2] = ["neg_log_loss", "accuracy"];
/// Most changes in one proposal (keeps an entry well within the size limit).
pub const MAX_CHANGES: usize = 64;

/// The message each governor signs:
/// `"fedledger/governance/v1\n<federation>\n<proposal_sha256>\n"`.
pub fn governance_signing_message(federation: &str, proposal_sha256: &str) -> String {
    format!("fedledger/governance/v1\n{federation}\n{proposal_sha256}\n")
}

/// SHA-256 of bytes, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

/// One governed feature: its column name and, optionally, the range its values are clamped to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureRecord {
    /// Column name.
    pub name: String,
    /// Lowest accepted value (signed decimal string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<String>,
    /// Highest accepted value (signed decimal string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<String>,
}

/// The accepted data schema: the label column and the feature columns, in model order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaRecord {
    /// Label column.
    pub label: String,
    /// Feature columns.
    pub features: Vec<FeatureRecord>,
}

/// One change of the rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Change {
    /// Enrol a key (or re-enrol a removed one) as a contributor or a validator.
    Enrol {
        /// Ed25519 public key, 64 lowercase hex.
        participant: String,
        /// Display name, unique among the enrolled.
        name: String,
        /// [`ROLE_CONTRIBUTOR`] or [`ROLE_VALIDATOR`].
        role: String,
    },
    /// Remove an enrolled key.
    Remove {
        /// Ed25519 public key, 64 lowercase hex.
        participant: String,
    },
    /// Training hyper-parameters.
    Training {
        /// Local epochs per round.
        local_epochs: u64,
        /// Local batch size.
        batch_size: u64,
        /// Learning rate, decimal string.
        learning_rate: String,
    },
    /// The DP-SGD parameters asked of hospitals.
    Privacy {
        /// Clipping norm, decimal string.
        clip_norm: String,
        /// Noise multiplier, decimal string.
        noise_multiplier: String,
    },
    /// The aggregation strategy.
    Aggregation {
        /// Strategy name, as the genesis records it.
        strategy: String,
    },
    /// Quorum and deadline of rounds.
    Rounds {
        /// Contributions a round needs to complete.
        quorum: u64,
        /// Seconds a round stays open.
        deadline_secs: u64,
    },
    /// The reward pool per round.
    RewardPool {
        /// Integer base units.
        pool_per_round: u64,
    },
    /// The reward rule and its settlement parameters (the pool is [`Change::RewardPool`]'s).
    /// Only among the rules settled over periods, and only in a federation whose rule is
    /// settled: a federation paid per round stays so. A change of the rule, `period_rounds`
    /// or `z_milli` ends the running settlement period at round `from_round - 1` (settled at
    /// that round's close under the rule then in force) and starts the first period of the
    /// new settings at `from_round` ([`period_ending`]).
    RewardRule {
        /// `shapley-settled/v1`, `/v2` or `/v3`.
        rule: String,
        /// Rounds per settlement period, at least 1.
        period_rounds: u64,
        /// `z` times 1000.
        z_milli: u64,
    },
    /// The valuation estimator.
    Estimator {
        /// Estimator name (`exact`, `gtg`, `kernelshap`, `loo`).
        estimator: String,
    },
    /// The valuation's utility (what a coalition's model is scored by).
    Utility {
        /// [`UTILITIES`]: `neg_log_loss` or `accuracy`.
        utility: String,
    },
    /// The accepted data schema.
    Schema {
        /// The schema.
        schema: SchemaRecord,
    },
    /// The witnesses of the log and how many must cosign (in force once anchored: a
    /// checkpoint that contains the entry is judged by the new set).
    Witnesses {
        /// cosignature/v1 verifier keys (`name+keyid+base64(0x04 || key)`), unique names.
        keys: Vec<String>,
        /// Cosignatures needed, at most the keys.
        quorum: u64,
    },
    /// How validators judge rounds (in force from `from_round`): the game's size, the
    /// validators' deadline, quorum, pool and distance limit, and the quality rule.
    Validators {
        /// The validators' rules.
        rules: ValidatorsRules,
    },
    /// The governors and the threshold (in force once anchored).
    Governors {
        /// Ed25519 keys, 64 lowercase hex, sorted, unique.
        governors: Vec<String>,
        /// Signatures needed, 1..=governors.
        threshold: u64,
    },
}

/// The validators' rules a governance change sets (the coordinator's `[validators]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidatorsRules {
    /// Seconds validators have once contributions close, 1 to a year.
    pub deadline_secs: u64,
    /// Vectors a round needs to be valued by consensus, at least 1.
    pub quorum: u64,
    /// Exact games up to this many contributors, at most 12.
    pub exact_max: u64,
    /// Sampled permutations above, 1 to 10,000.
    pub permutations: u64,
    /// Units split among the validators near consensus, each round.
    pub pool_per_round: u64,
    /// Distance from consensus beyond which a validator is flagged, thousandths.
    pub max_distance_milli: u64,
    /// The quality rule's `k` (absent: every update aggregated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality_k: Option<u64>,
}

impl ValidatorsRules {
    pub(crate) fn check(&self, cx: &Ctx, field: &str) -> Result<(), LedgerError> {
        let f = |s: &str| format!("{field}.{s}");
        if !(1..=366 * 24 * 3600).contains(&self.deadline_secs) {
            return Err(cx.err(f("deadline_secs"), "must be 1 second to a year"));
        }
        if self.quorum == 0 {
            return Err(cx.err(f("quorum"), "must be at least 1"));
        }
        if self.exact_max > 12 {
            return Err(cx.err(f("exact_max"), "at most 12 (4,096 coalitions)"));
        }
        if !(1..=10_000).contains(&self.permutations) {
            return Err(cx.err(f("permutations"), "must be 1 to 10000"));
        }
        Ok(())
    }
}

/// A proposed set of changes, as the governors sign it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proposal {
    /// Always [`PROPOSAL_TYPE`].
    #[serde(rename = "type")]
    pub record_type: String,
    /// The federation (log origin).
    pub federation: String,
    /// SHA-256 of the latest governance entry's bytes, or of entry 0.
    pub previous: String,
    /// First round the changes apply to.
    pub from_round: u64,
    /// RFC 3339 UTC; refused after it.
    pub expires_at: String,
    /// The changes, applied in order.
    pub changes: Vec<Change>,
}

impl Proposal {
    /// The canonical bytes the governors' signatures cover (through their digest).
    pub fn canonical(&self) -> Result<Vec<u8>, LedgerError> {
        encode_canonical(self)
    }

    /// SHA-256 of [`Self::canonical`], lowercase hex.
    pub fn sha256_hex(&self) -> Result<String, LedgerError> {
        Ok(sha256_hex(&self.canonical()?))
    }

    /// The message each governor signs.
    pub fn signing_message(&self) -> Result<String, LedgerError> {
        Ok(governance_signing_message(
            &self.federation,
            &self.sha256_hex()?,
        ))
    }

    /// Schema checks of the proposal alone (field names relative to `field`).
    pub(crate) fn check(&self, cx: &Ctx, field: &str) -> Result<(), LedgerError> {
        let f = |s: &str| format!("{field}{s}");
        if self.record_type != PROPOSAL_TYPE {
            return Err(cx.err(f("type"), format!("must be {PROPOSAL_TYPE}")));
        }
        cx.hex32(&f("previous"), &self.previous)?;
        if self.from_round == 0 {
            return Err(cx.err(f("from_round"), "rounds start at 1"));
        }
        cx.timestamp(&f("expires_at"), &self.expires_at)?;
        if self.changes.is_empty() || self.changes.len() > MAX_CHANGES {
            return Err(cx.err(
                f("changes"),
                format!("must hold 1 to {MAX_CHANGES} changes"),
            ));
        }
        for (i, c) in self.changes.iter().enumerate() {
            c.check(cx, &f(&format!("changes[{i}]")))?;
        }
        Ok(())
    }
}

/// A signed, self-contained check of a proposal outside a ledger entry (the coordinator runs
/// it on what `govern submit` hands it): the same schema checks as in an entry.
pub fn check_proposal(p: &Proposal) -> Result<(), LedgerError> {
    p.check(&Ctx { index: 0 }, "proposal.")
}

/// The schema checks of a data schema outside a ledger entry (the coordinator's config).
pub fn check_schema(s: &SchemaRecord) -> Result<(), LedgerError> {
    s.check(&Ctx { index: 0 }, "schema")
}

fn signed_decimal(s: &str) -> bool {
    is_decimal(s.strip_prefix('-').unwrap_or(s))
}

impl Change {
    fn check(&self, cx: &Ctx, field: &str) -> Result<(), LedgerError> {
        let f = |s: &str| format!("{field}.{s}");
        match self {
            Change::Enrol {
                participant,
                name,
                role,
            } => {
                cx.hex32(&f("participant"), participant)?;
                if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
                    return Err(cx.err(f("name"), "must be 1-64 printable characters"));
                }
                if !matches!(role.as_str(), ROLE_CONTRIBUTOR | ROLE_VALIDATOR) {
                    return Err(cx.err(
                        f("role"),
                        format!("must be {ROLE_CONTRIBUTOR:?} or {ROLE_VALIDATOR:?}"),
                    ));
                }
            }
            Change::Remove { participant } => cx.hex32(&f("participant"), participant)?,
            Change::Training {
                local_epochs,
                batch_size,
                learning_rate,
            } => {
                if *local_epochs == 0 || *batch_size == 0 {
                    return Err(cx.err(
                        f("local_epochs"),
                        "local_epochs and batch_size must be at least 1",
                    ));
                }
                cx.decimal(&f("learning_rate"), learning_rate)?;
            }
            Change::Privacy {
                clip_norm,
                noise_multiplier,
            } => {
                cx.decimal(&f("clip_norm"), clip_norm)?;
                cx.decimal(&f("noise_multiplier"), noise_multiplier)?;
            }
            Change::Aggregation { strategy } => cx.nonempty(&f("strategy"), strategy)?,
            Change::Rounds {
                quorum,
                deadline_secs,
            } => {
                if *quorum == 0 {
                    return Err(cx.err(f("quorum"), "must be at least 1"));
                }
                if !(1..=366 * 24 * 3600).contains(deadline_secs) {
                    return Err(cx.err(f("deadline_secs"), "must be 1 second to a year"));
                }
            }
            Change::RewardPool { .. } => {}
            Change::RewardRule {
                rule,
                period_rounds,
                z_milli,
            } => {
                let record = RewardRecord {
                    rule: rule.clone(),
                    pool_per_round: 0,
                    period_rounds: Some(*period_rounds),
                    z_milli: Some(*z_milli),
                };
                record.check(cx, field)?;
                if !record.is_settled() {
                    return Err(cx.err(
                        f("rule"),
                        "only a rule settled over periods can be governed",
                    ));
                }
            }
            Change::Estimator { estimator } => cx.nonempty(&f("estimator"), estimator)?,
            Change::Utility { utility } => {
                if !UTILITIES.contains(&utility.as_str()) {
                    return Err(cx.err(f("utility"), format!("must be one of {UTILITIES:?}")));
                }
            }
            Change::Schema { schema } => schema.check(cx, &f("schema"))?,
            Change::Validators { rules } => rules.check(cx, &f("rules"))?,
            Change::Witnesses { keys, quorum } => WitnessesRecord {
                keys: keys.clone(),
                quorum: *quorum,
            }
            .check(cx, field)?,
            Change::Governors {
                governors,
                threshold,
            } => check_governors(
                cx,
                &f("governors"),
                &f("threshold"),
                governors,
                *threshold,
                false,
            )?,
        }
        Ok(())
    }
}

impl SchemaRecord {
    pub(crate) fn check(&self, cx: &Ctx, field: &str) -> Result<(), LedgerError> {
        cx.nonempty(&format!("{field}.label"), &self.label)?;
        if self.features.is_empty() {
            return Err(cx.err(format!("{field}.features"), "must name at least one"));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, feat) in self.features.iter().enumerate() {
            let at = format!("{field}.features[{i}]");
            cx.nonempty(&format!("{at}.name"), &feat.name)?;
            if feat.name == self.label || !names.insert(feat.name.as_str()) {
                return Err(cx.err(
                    format!("{at}.name"),
                    "feature names must be unique and differ from the label",
                ));
            }
            let mut bounds = [None, None];
            for (j, (which, v)) in [("min", &feat.min), ("max", &feat.max)]
                .into_iter()
                .enumerate()
            {
                if let Some(v) = v {
                    match v.parse::<f64>() {
                        Ok(x) if signed_decimal(v) && x.is_finite() => bounds[j] = Some(x),
                        _ => {
                            return Err(cx.err(
                                format!("{at}.{which}"),
                                format!("{v:?} is not a decimal string"),
                            ));
                        }
                    }
                }
            }
            if let [Some(lo), Some(hi)] = bounds
                && lo > hi
            {
                return Err(cx.err(format!("{at}.min"), "exceeds max"));
            }
        }
        Ok(())
    }
}

pub(crate) fn check_governors(
    cx: &Ctx,
    field: &str,
    threshold_field: &str,
    governors: &[String],
    threshold: u64,
    may_be_empty: bool,
) -> Result<(), LedgerError> {
    for (i, g) in governors.iter().enumerate() {
        let at = format!("{field}[{i}]");
        cx.hex32(&at, g)?;
        if i > 0 && governors[i - 1] >= *g {
            return Err(cx.err(at, "governors must be sorted, without duplicates"));
        }
    }
    if threshold as usize > governors.len() {
        return Err(cx.err(threshold_field, "exceeds the number of governors"));
    }
    if threshold == 0 && !(may_be_empty && governors.is_empty()) {
        return Err(cx.err(
            threshold_field,
            "must be at least 1 when governors are named",
        ));
    }
    Ok(())
}

/// A governor's signature over a proposal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GovernorSignature {
    /// Ed25519 public key, 64 lowercase hex.
    pub governor: String,
    /// Base64 Ed25519 signature over [`governance_signing_message`].
    pub signature: String,
}

/// A proposal anchored with its signatures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GovernanceEntry {
    /// Always [`RECORD_VERSION`].
    pub v: u64,
    /// Always [`GOVERNANCE_TYPE`].
    #[serde(rename = "type")]
    pub record_type: String,
    /// The log's origin.
    pub federation: String,
    /// The proposal as signed.
    pub proposal: Proposal,
    /// Sorted by governor, unique.
    pub signatures: Vec<GovernorSignature>,
}

impl GovernanceEntry {
    /// An entry for `proposal` with `signatures` (sorted here).
    pub fn new(proposal: Proposal, mut signatures: Vec<GovernorSignature>) -> Self {
        signatures.sort_by(|a, b| a.governor.cmp(&b.governor));
        Self {
            v: RECORD_VERSION,
            record_type: GOVERNANCE_TYPE.into(),
            federation: proposal.federation.clone(),
            proposal,
            signatures,
        }
    }

    pub(crate) fn check(&self, cx: &Ctx) -> Result<(), LedgerError> {
        if self.v != RECORD_VERSION {
            return Err(cx.err("v", format!("must be {RECORD_VERSION}")));
        }
        if self.record_type != GOVERNANCE_TYPE {
            return Err(cx.err("type", format!("must be {GOVERNANCE_TYPE}")));
        }
        if self.proposal.federation != self.federation {
            return Err(cx.err("proposal.federation", "differs from the entry's federation"));
        }
        self.proposal.check(cx, "proposal.")?;
        if self.signatures.is_empty() {
            return Err(cx.err("signatures", "must hold at least one signature"));
        }
        for (i, s) in self.signatures.iter().enumerate() {
            let at = format!("signatures[{i}]");
            cx.hex32(&format!("{at}.governor"), &s.governor)?;
            if i > 0 && self.signatures[i - 1].governor >= s.governor {
                return Err(cx.err(
                    format!("{at}.governor"),
                    "signatures must be sorted by governor, without duplicates",
                ));
            }
            match crate::note::b64_decode(&s.signature) {
                Some(sig) if sig.len() == 64 => {}
                _ => {
                    return Err(cx.err(
                        format!("{at}.signature"),
                        "must be a base64 64-byte Ed25519 signature",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// One enrolled key in the rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberRecord {
    /// Display name.
    pub name: String,
    /// [`ROLE_CONTRIBUTOR`] or [`ROLE_VALIDATOR`].
    pub role: String,
}

/// The federation's rules in force for a round: the genesis with the governance changes applied.
/// Its canonical JSON's SHA-256 is what a round summary's `rules_sha256` records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// Enrolled keys (removed ones are absent).
    pub members: BTreeMap<String, MemberRecord>,
    /// Local epochs per round.
    pub local_epochs: u64,
    /// Local batch size.
    pub batch_size: u64,
    /// Learning rate, decimal string.
    pub learning_rate: String,
    /// DP-SGD clipping norm asked of hospitals.
    pub clip_norm: String,
    /// DP-SGD noise multiplier asked of hospitals.
    pub noise_multiplier: String,
    /// Aggregation strategy.
    pub aggregation: String,
    /// Contributions a round needs.
    pub quorum: u64,
    /// Round deadline, when governed (the genesis does not record it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_secs: Option<u64>,
    /// Reward rule and pool.
    pub reward: RewardRecord,
    /// Valuation estimator, when governed (each round records the one it used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimator: Option<String>,
    /// Valuation utility, when governed (each round records it as `validation.metric`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utility: Option<String>,
    /// Accepted data schema, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<SchemaRecord>,
    /// Witnesses and quorum, once governed (the genesis's until then, which the rules leave
    /// out so that the digests of rounds before any witness change stay as they were).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witnesses: Option<WitnessesRecord>,
    /// Governors and threshold.
    pub governance: GovernanceRecord,
    /// The validators' rules, once governed (absent until then, so the digests of rounds
    /// before any such change stay as they were).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validators: Option<ValidatorsRules>,
}

impl Rules {
    /// The genesis's rules.
    pub fn genesis(g: &FederationEntry, enrolments: &[&EnrolmentEntry]) -> Self {
        Self {
            members: enrolments
                .iter()
                .map(|e| {
                    (
                        e.participant.clone(),
                        MemberRecord {
                            name: e.name.clone(),
                            role: e.role.clone(),
                        },
                    )
                })
                .collect(),
            local_epochs: g.training.local_epochs,
            batch_size: g.training.batch_size,
            learning_rate: g.training.learning_rate.clone(),
            clip_norm: g.privacy.clip_norm.clone(),
            noise_multiplier: g.privacy.noise_multiplier.clone(),
            aggregation: g.training.aggregation.clone(),
            quorum: g.training.quorum,
            deadline_secs: None,
            reward: g.reward.clone(),
            estimator: None,
            utility: None,
            schema: g.schema.clone(),
            witnesses: None,
            validators: None,
            governance: g.governance.clone(),
        }
    }

    /// SHA-256 of the canonical JSON, lowercase hex.
    pub fn sha256_hex(&self) -> String {
        encode_canonical(self)
            .map(|b| sha256_hex(&b))
            .unwrap_or_default()
    }

    /// True when `key` is enrolled as a contributor.
    pub fn is_contributor(&self, key: &str) -> bool {
        self.members
            .get(key)
            .is_some_and(|m| m.role == ROLE_CONTRIBUTOR)
    }

    /// Apply `changes` in order. Refuses (naming the change) what cannot apply: enrolling a
    /// key or name already enrolled, removing a key that is not.
    pub fn apply(&mut self, changes: &[Change]) -> Result<(), String> {
        for (i, c) in changes.iter().enumerate() {
            self.apply_one(c)
                .map_err(|e| format!("changes[{i}]: {e}"))?;
        }
        Ok(())
    }

    fn apply_one(&mut self, c: &Change) -> Result<(), String> {
        match c {
            Change::Enrol {
                participant,
                name,
                role,
            } => {
                if self.members.contains_key(participant) {
                    return Err(format!("{participant} is already enrolled"));
                }
                if self.members.values().any(|m| m.name == *name) {
                    return Err(format!("the name {name:?} is already enrolled"));
                }
                self.members.insert(
                    participant.clone(),
                    MemberRecord {
                        name: name.clone(),
                        role: role.clone(),
                    },
                );
            }
            Change::Remove { participant } => {
                if self.members.remove(participant).is_none() {
                    return Err(format!("{participant} is not enrolled"));
                }
            }
            Change::Training {
                local_epochs,
                batch_size,
                learning_rate,
            } => {
                self.local_epochs = *local_epochs;
                self.batch_size = *batch_size;
                self.learning_rate = learning_rate.clone();
            }
            Change::Privacy {
                clip_norm,
                noise_multiplier,
            } => {
                self.clip_norm = clip_norm.clone();
                self.noise_multiplier = noise_multiplier.clone();
            }
            Change::Aggregation { strategy } => self.aggregation = strategy.clone(),
            Change::Rounds {
                quorum,
                deadline_secs,
            } => {
                self.quorum = *quorum;
                self.deadline_secs = Some(*deadline_secs);
            }
            Change::RewardPool { pool_per_round } => self.reward.pool_per_round = *pool_per_round,
            Change::RewardRule {
                rule,
                period_rounds,
                z_milli,
            } => {
                if !self.reward.is_settled() {
                    return Err(format!(
                        "the federation pays per round ({}); its reward rule cannot become one settled over periods",
                        self.reward.rule
                    ));
                }
                self.reward.rule = rule.clone();
                self.reward.period_rounds = Some(*period_rounds);
                self.reward.z_milli = Some(*z_milli);
            }
            Change::Estimator { estimator } => self.estimator = Some(estimator.clone()),
            Change::Utility { utility } => self.utility = Some(utility.clone()),
            Change::Schema { schema } => self.schema = Some(schema.clone()),
            Change::Validators { rules } => self.validators = Some(rules.clone()),
            Change::Witnesses { keys, quorum } => {
                self.witnesses = Some(WitnessesRecord {
                    keys: keys.clone(),
                    quorum: *quorum,
                });
            }
            Change::Governors {
                governors,
                threshold,
            } => {
                self.governance = GovernanceRecord {
                    governors: governors.clone(),
                    threshold: *threshold,
                };
            }
        }
        if !matches!(c, Change::Remove { .. } | Change::Rounds { .. }) {
            return Ok(());
        }
        let contributors = self
            .members
            .values()
            .filter(|m| m.role == ROLE_CONTRIBUTOR)
            .count() as u64;
        if self.quorum > contributors {
            return Err(format!(
                "the quorum {} would exceed the {contributors} enrolled contributors",
                self.quorum
            ));
        }
        Ok(())
    }
}

/// Why a proposal is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The proposal names another federation.
    #[error("the proposal is for federation {got:?}, not {expected:?}")]
    OtherFederation {
        /// This federation.
        expected: String,
        /// The proposal's.
        got: String,
    },
    /// It does not chain from the latest governance entry (replayed, or built on another).
    #[error(
        "the proposal does not chain: previous is {got}, the latest governance entry (or genesis) is {expected} (replayed or out of date)"
    )]
    Unchained {
        /// The chain head.
        expected: String,
        /// The proposal's `previous`.
        got: String,
    },
    /// A signature by a key that is not a governor in force.
    #[error("{0} is not a governor in force")]
    NotGovernor(String),
    /// A signature that does not verify.
    #[error("the signature of governor {0} does not verify")]
    BadSignature(String),
    /// Fewer valid governor signatures than the threshold.
    #[error("{valid} valid governor signature(s), {threshold} needed")]
    UnderSigned {
        /// Valid signatures.
        valid: u64,
        /// The threshold in force.
        threshold: u64,
    },
    /// The federation has no governors.
    #[error("the federation has no governors: its rules cannot change")]
    NoGovernors,
    /// Its changes do not apply to the rules they would take effect in.
    #[error("the changes do not apply: {0}")]
    Inapplicable(String),
    /// The proposal failed its schema checks.
    #[error("malformed proposal: {0}")]
    Malformed(String),
}

/// The governance state of a ledger: the genesis rules, the anchored proposals in ledger
/// order, the chain head and the governors in force. The coordinator and `verify` build it
/// the same way and admit entries with the same rule.
#[derive(Debug, Clone)]
pub struct Governance {
    federation: String,
    genesis: Rules,
    head: String,
    governors: GovernanceRecord,
    /// The witnesses in force from a log size on: the genesis's from size 0, then each
    /// anchored change from the size that first contains its entry (its index + 1).
    witnesses: Vec<(u64, WitnessesRecord)>,
    /// Anchored proposals, ledger order.
    anchored: Vec<Proposal>,
}

/// A settlement period: its number (from 1, counted on across changes of the reward rule) and
/// its first and last rounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettlementPeriod {
    /// From 1.
    pub number: u64,
    /// Its first round.
    pub first: u64,
    /// Its last round (the round whose close settles it).
    pub last: u64,
}

/// The settlement period that `round` ends, if it ends one, in a federation of `total_rounds`
/// rounds whose reward settings run in `segments`: `(first round, period_rounds)` of each
/// stretch of rounds under one rule, `period_rounds` and `z_milli`, ascending from round 1
/// ([`Governance::reward_segments`]). Within a segment, periods of `period_rounds` rounds
/// start at its first round; a period also ends at the segment's last round (the round before
/// a change takes effect) and at the federation's last round.
pub fn period_ending(
    segments: &[(u64, u64)],
    round: u64,
    total_rounds: u64,
) -> Option<SettlementPeriod> {
    let mut number = 0u64;
    for (i, &(start, p)) in segments.iter().enumerate() {
        let p = p.max(1);
        if round < start {
            return None;
        }
        let next = segments.get(i + 1).map(|s| s.0);
        if let Some(next) = next
            && round >= next
        {
            number = number.saturating_add(next.saturating_sub(start).div_ceil(p));
            continue;
        }
        let k = (round - start) / p;
        let ends = round == total_rounds
            || (round - start + 1).is_multiple_of(p)
            || next == Some(round.saturating_add(1));
        return ends.then(|| SettlementPeriod {
            number: number.saturating_add(k + 1),
            first: start + k * p,
            last: round,
        });
    }
    None
}

impl Governance {
    /// From the genesis entry's bytes, its record and its enrolments.
    pub fn new(genesis_bytes: &[u8], g: &FederationEntry, enrolments: &[&EnrolmentEntry]) -> Self {
        Self {
            federation: g.federation.clone(),
            genesis: Rules::genesis(g, enrolments),
            head: sha256_hex(genesis_bytes),
            governors: g.governance.clone(),
            witnesses: vec![(0, g.witnesses.clone())],
            anchored: Vec::new(),
        }
    }

    /// The witnesses and quorum a checkpoint of `size` entries is judged by: the genesis's,
    /// or those of the last witness change among its entries.
    pub fn witnesses_for_size(&self, size: u64) -> &WitnessesRecord {
        super::in_force_at(&self.witnesses, size).unwrap_or(&self.witnesses[0].1)
    }

    /// Every witness set in force at some size, with the size it starts at, ascending.
    pub fn witness_schedule(&self) -> &[(u64, WitnessesRecord)] {
        &self.witnesses
    }

    /// The SHA-256 a new proposal's `previous` must name.
    pub fn head(&self) -> &str {
        &self.head
    }

    /// The governors and threshold in force now.
    pub fn governors(&self) -> &GovernanceRecord {
        &self.governors
    }

    /// The anchored proposals, ledger order.
    pub fn anchored(&self) -> &[Proposal] {
        &self.anchored
    }

    /// The rules of round `round`: the genesis's, with the changes of every anchored proposal
    /// whose `from_round <= round` applied in ledger order.
    pub fn rules_for(&self, round: u64) -> Rules {
        let mut rules = self.genesis.clone();
        for p in self.anchored.iter().filter(|p| p.from_round <= round) {
            // Admission checked that every proposal applies where it takes effect; a change
            // that stops applying because of a later-anchored one with an earlier from_round
            // is skipped rather than applied half.
            let mut next = rules.clone();
            if next.apply(&p.changes).is_ok() {
                rules = next;
            }
        }
        rules
    }

    /// The segments of rounds 1 to `through` under one reward rule, `period_rounds` and
    /// `z_milli`, as [`period_ending`] reads them: round 1, then every `from_round` where the
    /// rules in force change one of them (a change of the pool alone starts none).
    pub fn reward_segments(&self, through: u64) -> Vec<(u64, u64)> {
        let settings = |r: &Rules| {
            (
                r.reward.rule.clone(),
                r.reward.period_rounds,
                r.reward.z_milli,
            )
        };
        let first = self.rules_for(1);
        let mut prev = settings(&first);
        let mut segments = vec![(1, first.reward.period_rounds.unwrap_or(1))];
        let mut starts: Vec<u64> = self
            .anchored
            .iter()
            .map(|p| p.from_round)
            .filter(|r| (2..=through).contains(r))
            .collect();
        starts.sort_unstable();
        starts.dedup();
        for start in starts {
            let rules = self.rules_for(start);
            let now = settings(&rules);
            if now != prev {
                segments.push((start, rules.reward.period_rounds.unwrap_or(1)));
                prev = now;
            }
        }
        segments
    }

    /// Checks `proposal` and `signatures` against the acceptance rule: this federation,
    /// chained from the head, every signature by a governor in force and valid, at least the
    /// threshold of them, and changes that apply. (Expiry and `from_round` against the open
    /// round are the coordinator's, which knows the clock and the round.)
    pub fn check(
        &self,
        proposal: &Proposal,
        signatures: &[GovernorSignature],
    ) -> Result<(), Refusal> {
        self.check_signed(proposal, signatures)?;
        // The changes must apply to the rules of the round they start from, as anchored so
        // far, and leave every proposal that applies later applicable too.
        self.applicable_with(proposal)
            .map_err(Refusal::Inapplicable)
    }

    /// [`Self::check`] without the rules: this federation, chained from the head, the
    /// threshold of valid signatures by governors in force. What a holder of the governance
    /// entries alone (without the genesis enrolments the rules start from) can check, such as
    /// an auditor of a hospital's statement.
    pub fn check_signed(
        &self,
        proposal: &Proposal,
        signatures: &[GovernorSignature],
    ) -> Result<(), Refusal> {
        if proposal.federation != self.federation {
            return Err(Refusal::OtherFederation {
                expected: self.federation.clone(),
                got: proposal.federation.clone(),
            });
        }
        check_proposal(proposal).map_err(|e| Refusal::Malformed(e.to_string()))?;
        if proposal.previous != self.head {
            return Err(Refusal::Unchained {
                expected: self.head.clone(),
                got: proposal.previous.clone(),
            });
        }
        if self.governors.governors.is_empty() {
            return Err(Refusal::NoGovernors);
        }
        if let Some(s) = signatures
            .iter()
            .find(|s| !self.governors.governors.contains(&s.governor))
        {
            return Err(Refusal::NotGovernor(s.governor.clone()));
        }
        // At most one signature per governor is worth checking (bounds the work a request
        // can ask for).
        if signatures.len() > self.governors.governors.len() {
            return Err(Refusal::Malformed(format!(
                "{} signatures for {} governors",
                signatures.len(),
                self.governors.governors.len()
            )));
        }
        let message = proposal
            .signing_message()
            .map_err(|e| Refusal::Malformed(e.to_string()))?;
        let mut seen = std::collections::BTreeSet::new();
        for s in signatures {
            if !self.governors.governors.contains(&s.governor) {
                return Err(Refusal::NotGovernor(s.governor.clone()));
            }
            let key = hex::decode(&s.governor).unwrap_or_default();
            let sig = crate::note::b64_decode(&s.signature).unwrap_or_default();
            if !crate::keys::verify_ed25519(&key, message.as_bytes(), &sig) {
                return Err(Refusal::BadSignature(s.governor.clone()));
            }
            seen.insert(s.governor.as_str());
        }
        let valid = seen.len() as u64;
        if valid < self.governors.threshold {
            return Err(Refusal::UnderSigned {
                valid,
                threshold: self.governors.threshold,
            });
        }
        Ok(())
    }

    /// With `extra` anchored next: the rules of every round from `extra.from_round` on that
    /// some proposal starts, built strictly (every change applies).
    fn applicable_with(&self, extra: &Proposal) -> Result<(), String> {
        let all: Vec<&Proposal> = self.anchored.iter().chain([extra]).collect();
        let mut starts: Vec<u64> = all
            .iter()
            .map(|p| p.from_round)
            .filter(|r| *r >= extra.from_round)
            .collect();
        starts.sort_unstable();
        starts.dedup();
        for round in starts {
            let mut rules = self.genesis.clone();
            for p in all.iter().filter(|p| p.from_round <= round) {
                rules.apply(&p.changes).map_err(|e| {
                    if std::ptr::eq(*p, extra) {
                        e
                    } else {
                        format!(
                            "an anchored proposal from round {} would no longer apply at round {round}: {e}",
                            p.from_round
                        )
                    }
                })?;
            }
        }
        Ok(())
    }

    /// Admit the entry anchored at `index` (its bytes and record) after [`Self::check`]: the
    /// chain head moves to it, a change of governors takes effect, a change of witnesses
    /// judges every checkpoint that contains the entry, its changes apply from `from_round`.
    pub fn admit(
        &mut self,
        index: u64,
        entry_bytes: &[u8],
        entry: &GovernanceEntry,
    ) -> Result<(), Refusal> {
        self.check(&entry.proposal, &entry.signatures)?;
        self.record(index, entry_bytes, entry);
        Ok(())
    }

    /// [`Self::admit`] by [`Self::check_signed`] alone (see there).
    pub fn admit_signed(
        &mut self,
        index: u64,
        entry_bytes: &[u8],
        entry: &GovernanceEntry,
    ) -> Result<(), Refusal> {
        self.check_signed(&entry.proposal, &entry.signatures)?;
        self.record(index, entry_bytes, entry);
        Ok(())
    }

    fn record(&mut self, index: u64, entry_bytes: &[u8], entry: &GovernanceEntry) {
        self.head = sha256_hex(entry_bytes);
        for c in &entry.proposal.changes {
            match c {
                Change::Governors {
                    governors,
                    threshold,
                } => {
                    self.governors = GovernanceRecord {
                        governors: governors.clone(),
                        threshold: *threshold,
                    };
                }
                Change::Witnesses { keys, quorum } => self.witnesses.push((
                    index.saturating_add(1),
                    WitnessesRecord {
                        keys: keys.clone(),
                        quorum: *quorum,
                    },
                )),
                _ => {}
            }
        }
        self.anchored.push(entry.proposal.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Record, v2::tests as v2t};
    use super::*;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    fn key(seed: u8) -> Ed25519KeyPair {
        Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap()
    }

    fn hexkey(k: &Ed25519KeyPair) -> String {
        hex::encode(k.public_key().as_ref())
    }

    fn sign(k: &Ed25519KeyPair, p: &Proposal) -> GovernorSignature {
        GovernorSignature {
            governor: hexkey(k),
            signature: crate::note::b64_encode(
                k.sign(p.signing_message().unwrap().as_bytes()).as_ref(),
            ),
        }
    }

    fn setup() -> (Governance, Vec<Ed25519KeyPair>, Vec<u8>) {
        let govs = vec![key(1), key(2), key(3)];
        let mut g = v2t::federation(1);
        let mut keys: Vec<String> = govs.iter().map(hexkey).collect();
        keys.sort();
        g.governance = GovernanceRecord {
            governors: keys,
            threshold: 2,
        };
        let bytes = encode_canonical(&g).unwrap();
        let e = v2t::enrolment(&"aa".repeat(32), "a");
        (Governance::new(&bytes, &g, &[&e]), govs, bytes)
    }

    fn proposal(previous: &str) -> Proposal {
        Proposal {
            record_type: PROPOSAL_TYPE.into(),
            federation: v2t::ORIGIN.into(),
            previous: previous.into(),
            from_round: 3,
            expires_at: "2030-01-01T00:00:00Z".into(),
            changes: vec![
                Change::Enrol {
                    participant: "bb".repeat(32),
                    name: "b".into(),
                    role: ROLE_CONTRIBUTOR.into(),
                },
                Change::RewardPool {
                    pool_per_round: 500,
                },
            ],
        }
    }

    #[test]
    fn the_signing_message_matches_the_issue() {
        assert_eq!(
            governance_signing_message("fed", "ab"),
            "fedledger/governance/v1\nfed\nab\n"
        );
    }

    #[test]
    fn k_of_n_admits_and_applies_from_the_named_round() {
        let (mut gov, govs, genesis) = setup();
        assert_eq!(gov.head(), sha256_hex(&genesis));
        let p = proposal(gov.head());
        let entry = GovernanceEntry::new(p.clone(), vec![sign(&govs[2], &p), sign(&govs[0], &p)]);
        let bytes = encode_canonical(&entry).unwrap();
        assert_eq!(
            crate::records::validated_fast(v2t::ORIGIN, 4, &bytes),
            Record::Governance(Box::new(entry.clone()))
        );
        gov.admit(9, &bytes, &entry).unwrap();
        assert_eq!(gov.head(), sha256_hex(&bytes));
        assert!(!gov.rules_for(2).is_contributor(&"bb".repeat(32)));
        assert_eq!(gov.rules_for(2).reward.pool_per_round, 1000);
        assert!(gov.rules_for(3).is_contributor(&"bb".repeat(32)));
        assert_eq!(gov.rules_for(3).reward.pool_per_round, 500);
        assert_ne!(gov.rules_for(2).sha256_hex(), gov.rules_for(3).sha256_hex());
        // Replayed: no longer chains.
        assert!(matches!(
            gov.check(&p, &entry.signatures),
            Err(Refusal::Unchained { .. })
        ));
    }

    #[test]
    fn refusals_say_why() {
        let (gov, govs, _) = setup();
        let p = proposal(gov.head());
        assert_eq!(
            gov.check(&p, &[sign(&govs[0], &p)]),
            Err(Refusal::UnderSigned {
                valid: 1,
                threshold: 2
            })
        );
        // The same governor twice counts once; more signatures than governors are not read.
        assert!(matches!(
            gov.check(&p, &[sign(&govs[0], &p), sign(&govs[0], &p)]),
            Err(Refusal::UnderSigned { valid: 1, .. })
        ));
        assert!(matches!(
            gov.check(&p, &vec![sign(&govs[0], &p); 4]),
            Err(Refusal::Malformed(_))
        ));
        let outsider = key(9);
        assert_eq!(
            gov.check(&p, &[sign(&govs[0], &p), sign(&outsider, &p)]),
            Err(Refusal::NotGovernor(hexkey(&outsider)))
        );
        let mut other = p.clone();
        other.federation = "elsewhere".into();
        assert!(matches!(
            gov.check(&other, &[sign(&govs[0], &other), sign(&govs[1], &other)]),
            Err(Refusal::OtherFederation { .. })
        ));
        // A signature over another proposal does not verify for this one.
        let mut changed = p.clone();
        changed.from_round = 4;
        assert_eq!(
            gov.check(&changed, &[sign(&govs[0], &p), sign(&govs[1], &changed)]),
            Err(Refusal::BadSignature(hexkey(&govs[0])))
        );
        let unchained = proposal(&"ab".repeat(32));
        assert!(matches!(
            gov.check(
                &unchained,
                &[sign(&govs[0], &unchained), sign(&govs[1], &unchained)]
            ),
            Err(Refusal::Unchained { .. })
        ));
        let mut bad = p.clone();
        bad.changes = vec![Change::Remove {
            participant: "cc".repeat(32),
        }];
        assert!(matches!(
            gov.check(&bad, &[sign(&govs[0], &bad), sign(&govs[1], &bad)]),
            Err(Refusal::Inapplicable(_))
        ));
    }

    #[test]
    fn a_change_of_governors_takes_effect_when_anchored() {
        let (mut gov, govs, _) = setup();
        let newcomer = key(7);
        let mut p = proposal(gov.head());
        p.from_round = 50;
        p.changes = vec![Change::Governors {
            governors: vec![hexkey(&newcomer)],
            threshold: 1,
        }];
        let entry = GovernanceEntry::new(p.clone(), vec![sign(&govs[0], &p), sign(&govs[1], &p)]);
        let bytes = encode_canonical(&entry).unwrap();
        gov.admit(9, &bytes, &entry).unwrap();
        let q = proposal(gov.head());
        assert_eq!(
            gov.check(&q, &[sign(&govs[0], &q), sign(&govs[1], &q)]),
            Err(Refusal::NotGovernor(hexkey(&govs[0])))
        );
        gov.check(&q, &[sign(&newcomer, &q)]).unwrap();
    }

    #[test]
    fn a_change_of_witnesses_judges_every_checkpoint_that_contains_it() {
        let (mut gov, govs, _) = setup();
        let genesis = gov.witnesses_for_size(1).clone();
        let w = crate::note::NoteSigner::witness("w-new.test", key(40)).unwrap();
        let mut p = proposal(gov.head());
        p.from_round = 50;
        p.changes = vec![Change::Witnesses {
            keys: vec![w.verifier_key().to_string()],
            quorum: 1,
        }];
        let entry = GovernanceEntry::new(p.clone(), vec![sign(&govs[0], &p), sign(&govs[1], &p)]);
        gov.admit(9, &encode_canonical(&entry).unwrap(), &entry)
            .unwrap();
        // Entry 9 is in checkpoints of 10 entries or more, whatever its from_round.
        assert_eq!(*gov.witnesses_for_size(9), genesis);
        let new = gov.witnesses_for_size(10);
        assert_eq!((new.keys.len(), new.quorum), (1, 1));
        assert_eq!(gov.witnesses_for_size(u64::MAX), new);
        assert_eq!(gov.witness_schedule().len(), 2);
        // The rules record the governed set from the proposal's round on.
        assert_eq!(gov.rules_for(49).witnesses, None);
        assert_eq!(gov.rules_for(50).witnesses.as_ref(), Some(new));
        // Malformed sets are refused with the field named.
        for (keys, quorum, field) in [
            (vec![w.verifier_key().to_string()], 2, "quorum"),
            (vec!["not a key".to_string()], 1, "keys[0]"),
            (
                vec![w.verifier_key().to_string(), w.verifier_key().to_string()],
                1,
                "keys[1]",
            ),
        ] {
            let mut bad = proposal(gov.head());
            bad.changes = vec![Change::Witnesses { keys, quorum }];
            let err = check_proposal(&bad).unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
    }

    #[test]
    fn a_proposal_that_would_break_a_later_one_is_refused() {
        let (mut gov, govs, _) = setup();
        let mut later = proposal(gov.head());
        later.from_round = 5;
        later.changes = vec![Change::Enrol {
            participant: "bb".repeat(32),
            name: "b".into(),
            role: ROLE_CONTRIBUTOR.into(),
        }];
        let e = GovernanceEntry::new(
            later.clone(),
            vec![sign(&govs[0], &later), sign(&govs[1], &later)],
        );
        gov.admit(9, &encode_canonical(&e).unwrap(), &e).unwrap();
        // Enrolling the same key from an earlier round: at round 5 both apply, in ledger
        // order, and the second finds the key enrolled.
        let mut earlier = proposal(gov.head());
        earlier.from_round = 3;
        earlier.changes = later.changes.clone();
        match gov.check(
            &earlier,
            &[sign(&govs[0], &earlier), sign(&govs[1], &earlier)],
        ) {
            Err(Refusal::Inapplicable(why)) => {
                assert!(why.contains("is already enrolled"), "{why}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn periods_follow_the_reward_segments() {
        let ends = |segments: &[(u64, u64)], total: u64| -> Vec<(u64, u64, u64)> {
            (1..=total)
                .filter_map(|r| period_ending(segments, r, total))
                .map(|p| (p.number, p.first, p.last))
                .collect()
        };
        // One rule: every 5 rounds and the last.
        assert_eq!(
            ends(&[(1, 5)], 12),
            vec![(1, 1, 5), (2, 6, 10), (3, 11, 12)]
        );
        // A change from round 8 to periods of 2: the running period ends at round 7.
        assert_eq!(
            ends(&[(1, 5), (8, 2)], 12),
            vec![(1, 1, 5), (2, 6, 7), (3, 8, 9), (4, 10, 11), (5, 12, 12)]
        );
        // A change exactly at a period's start changes nothing but the rule after it.
        assert_eq!(ends(&[(1, 3), (4, 3)], 6), vec![(1, 1, 3), (2, 4, 6)]);
        assert_eq!(period_ending(&[(1, 5), (8, 2)], 0, 12), None);
    }

    #[test]
    fn a_reward_rule_change_starts_a_segment_and_is_checked() {
        use crate::records::{REWARD_RULE_SETTLED_CUMULATIVE, REWARD_RULE_SETTLED_IMPACT};
        let (mut gov, keys, genesis_bytes) = setup();
        let mut g = gov.rules_for(1);
        // The test genesis pays per round: a settled rule cannot be governed in.
        g.reward.rule = crate::records::REWARD_RULE.into();
        let change = Change::RewardRule {
            rule: REWARD_RULE_SETTLED_IMPACT.into(),
            period_rounds: 2,
            z_milli: 1500,
        };
        assert!(g.clone().apply(std::slice::from_ref(&change)).is_err());
        // In a settled federation it applies and starts a segment at its from_round.
        gov.genesis.reward = RewardRecord {
            rule: REWARD_RULE_SETTLED_CUMULATIVE.into(),
            pool_per_round: 7,
            period_rounds: Some(5),
            z_milli: Some(2000),
        };
        let mut p = proposal(&sha256_hex(&genesis_bytes));
        p.from_round = 8;
        p.changes = vec![change];
        let entry = GovernanceEntry::new(p.clone(), vec![sign(&keys[0], &p), sign(&keys[1], &p)]);
        gov.admit(9, &encode_canonical(&entry).unwrap(), &entry)
            .unwrap();
        assert_eq!(gov.reward_segments(7), vec![(1, 5)]);
        assert_eq!(gov.reward_segments(100), vec![(1, 5), (8, 2)]);
        let r = gov.rules_for(8).reward;
        assert_eq!(
            (
                r.rule.as_str(),
                r.pool_per_round,
                r.period_rounds,
                r.z_milli
            ),
            (REWARD_RULE_SETTLED_IMPACT, 7, Some(2), Some(1500))
        );
        // Unknown rules and the per-round rule are refused by the schema checks.
        for (rule, period_rounds) in [
            ("shapley-settled/v9", 2),
            (crate::records::REWARD_RULE, 2),
            (REWARD_RULE_SETTLED_IMPACT, 0),
        ] {
            let mut bad = p.clone();
            bad.changes = vec![Change::RewardRule {
                rule: rule.into(),
                period_rounds,
                z_milli: 0,
            }];
            assert!(check_proposal(&bad).is_err(), "{rule} {period_rounds}");
        }
    }

    #[test]
    fn schemas_are_checked() {
        let cx = Ctx { index: 0 };
        let s = |min: &str, max: &str| SchemaRecord {
            label: "y".into(),
            features: vec![FeatureRecord {
                name: "x".into(),
                min: Some(min.into()),
                max: Some(max.into()),
            }],
        };
        s("-3.5", "2").check(&cx, "schema").unwrap();
        assert!(s("3", "2").check(&cx, "schema").is_err());
        assert!(s("nan", "2").check(&cx, "schema").is_err());
        assert!(s("--1", "2").check(&cx, "schema").is_err());
    }
}
