//! Record schemas: what every ledger entry is, its canonical JSON encoding and its validation.
//!
//! Every entry is canonical JSON ([`encode_canonical`]: compact, keys sorted, integers and
//! strings only, no nulls or floats) carrying `v` (the format version), `type` and `federation`
//! (the log's origin). [`validate_entry`] accepts exactly the bytes the typed structs encode to
//! and refuses anything else, naming the offending field; an entry longer than
//! [`MAX_ENTRY_BYTES`] (the C2SP tlog-tiles limit, a 16-bit length) is refused too. Hashing is
//! over the stored bytes, never over a re-encoding.
//!
//! # Format v2 (new ledgers)
//!
//! Entry 0 is the federation ([`FederationEntry`], `fedledger.federation/v2`), followed by one
//! [`EnrolmentEntry`] (`fedledger.enrolment/v2`) per enrolled key: together the genesis. Then each
//! round is appended in one atomic batch: one [`ContributionEntry`]
//! (`fedledger.contribution/v2`) per accepted update, one [`DeclineEntry`]
//! (`fedledger.decline/v2`) per signed decline, then the round's [`RoundSummary`]
//! (`fedledger.round/v2`) whose `entries` field names the index range of those entries. Round
//! numbers are contiguous among summaries (1, 2, ...); the entry index is not the round number,
//! and governance entries (`fedledger.governance/v1`, see [`Governance`]) may stand between
//! rounds.
//!
//! Every claim a hospital makes is signed by it: a contribution's signature covers
//! [`update_signing_message`] = `fedledger/update/v2\n<federation>\n<round>\n<update_sha256>\n
//! <examples>\n<privacy_sha256>\n`, where `privacy_sha256` is the SHA-256 of the canonical bytes
//! of its [`PrivacyObject`] exactly as recorded (integers only: epsilon in micro-units rounded
//! up, the noise multiplier in micro-units rounded down, the sampling rate in nano-units rounded
//! up, delta in pico-units, steps, accountant). A decline's signature covers
//! [`decline_signing_message`]. The value, reward and flags of a contribution are the
//! coordinator's, checked by replay and by the valuation's recomputation.
//!
//! A contribution's `privacy.epsilon_micro` is the hospital's cumulative epsilon *in this
//! federation* (every release it made for it, including updates the coordinator then refused),
//! computed by its accountant from exactly the recorded, rounded parameters; `verify`
//! recomputes it from this ledger's rounds, which can only give as much or less, and fails when
//! a recorded figure is below it or decreases.
//!
//! # Format v1 (older ledgers)
//!
//! [`v1`] keeps the first format (one genesis record with every participant, then entry i =
//! round i with every contribution inside), so that the records of existing federations stay
//! checkable. A log is written in one version throughout.

mod governance;
mod privacy;
mod utilities;
pub mod v1;
mod v2;
mod witness_follower;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::canonical::encode_canonical;
use crate::error::LedgerError;
pub use governance::*;
pub use privacy::{ACCOUNTANT_NONE, PrivacyObject, ServerDpRecord, micro_up};
pub use utilities::*;
pub use v2::*;
pub use witness_follower::{WitnessFollower, in_force_at};

/// The largest entry the ledger accepts: entry bundles of C2SP tlog-tiles store each entry with
/// a 16-bit length.
pub const MAX_ENTRY_BYTES: usize = 65_535;

/// The first reward rule: each completed round's pool split by that round's positive values.
pub const REWARD_RULE: &str = "shapley-proportional/v1";

/// The reward rule settled over periods from accumulated values and their uncertainty, each
/// period on its own (see [`SettlementEntry`]); its parameters are `period_rounds` and
/// `z_milli`.
pub const REWARD_RULE_SETTLED: &str = "shapley-settled/v1";

/// The reward rule settled over periods from the values accumulated since round 1, each
/// period's pool paid towards every participant's share of all that was paid (see
/// [`SettlementEntry`]); the same parameters as [`REWARD_RULE_SETTLED`].
pub const REWARD_RULE_SETTLED_CUMULATIVE: &str = "shapley-settled/v2";

/// [`REWARD_RULE_SETTLED_CUMULATIVE`] with every round's values counted: a completed round whose
/// total gain is not positive still adds nothing to the pool, but each eligible participant's
/// value in it adds to its accumulated value; the same parameters and settlement lines.
pub const REWARD_RULE_SETTLED_IMPACT: &str = "shapley-settled/v3";

/// The uncertainty method of the round values: seeded bootstrap resamples of the validation
/// rows, reusing the coalition models (the valuation crate's `bootstrap_standard_errors`).
pub const UNCERTAINTY_BOOTSTRAP: &str = "bootstrap-validation-rows/v1";

/// The message a participant signs for its update (v2):
/// `"fedledger/update/v2\n<federation>\n<round>\n<update_sha256>\n<examples>\n<privacy_sha256>\n"`.
/// The one definition: the participant signs it, the coordinator checks it, `verify` checks the
/// recorded signature.
pub fn update_signing_message(
    federation: &str,
    round: u64,
    update_sha256: &str,
    examples: u64,
    privacy_sha256: &str,
) -> String {
    format!(
        "fedledger/update/v2\n{federation}\n{round}\n{update_sha256}\n{examples}\n{privacy_sha256}\n"
    )
}

/// The message a participant signs when it declines a round:
/// `"fedledger/decline/v1\n<federation>\n<round>\n<reason>\n"` (the reason is one line).
pub fn decline_signing_message(federation: &str, round: u64, reason: &str) -> String {
    format!("fedledger/decline/v1\n{federation}\n{round}\n{reason}\n")
}

/// The model's specification and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpecRecord {
    /// Architecture name, e.g. `"mlp"`.
    pub kind: String,
    /// Input features.
    pub features: u64,
    /// Output classes.
    pub classes: u64,
    /// Hidden layer widths.
    pub hidden: Vec<u64>,
    /// Number of parameters.
    pub params: u64,
}

/// Training hyper-parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingRecord {
    /// Planned number of rounds.
    pub rounds: u64,
    /// Minimum contributions for a round to complete.
    pub quorum: u64,
    /// Local epochs per round.
    pub local_epochs: u64,
    /// Local batch size.
    pub batch_size: u64,
    /// Learning rate, decimal string.
    pub learning_rate: String,
    /// Aggregation strategy name.
    pub aggregation: String,
}

/// Witnesses of the log and how many must cosign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessesRecord {
    /// cosignature/v1 verifier keys (`name+keyid+base64(0x04 || key)`).
    pub keys: Vec<String>,
    /// Cosignatures needed to call a checkpoint anchored.
    pub quorum: u64,
}

/// The reward rule and its parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardRecord {
    /// Rule name ([`REWARD_RULE`], [`REWARD_RULE_SETTLED`], [`REWARD_RULE_SETTLED_CUMULATIVE`]
    /// or [`REWARD_RULE_SETTLED_IMPACT`]).
    pub rule: String,
    /// Pool per completed round ([`REWARD_RULE`]) or per counted round
    /// ([`REWARD_RULE_SETTLED`]), integer base units.
    pub pool_per_round: u64,
    /// [`REWARD_RULE_SETTLED`]: rounds per settlement period (the last period ends with the
    /// federation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_rounds: Option<u64>,
    /// [`REWARD_RULE_SETTLED`]: an accumulated value is paid only above `z` standard errors,
    /// `z = z_milli / 1000`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub z_milli: Option<u64>,
}

impl WitnessesRecord {
    /// cosignature/v1 keys with unique names, and a quorum no larger than the keys.
    pub(crate) fn check(&self, cx: &Ctx, field: &str) -> Result<(), LedgerError> {
        let mut seen = std::collections::BTreeSet::new();
        for (i, k) in self.keys.iter().enumerate() {
            let at = format!("{field}.keys[{i}]");
            let vk = crate::note::VerifierKey::parse(k).map_err(|e| cx.err(&at, e.to_string()))?;
            if vk.key_type != crate::note::KEY_TYPE_COSIGNATURE {
                return Err(cx.err(at, "witness keys must be cosignature/v1 keys (type 0x04)"));
            }
            if !seen.insert(vk.name.clone()) {
                return Err(cx.err(at, format!("duplicate witness name {:?}", vk.name)));
            }
        }
        if self.quorum as usize > self.keys.len() {
            return Err(cx.err(
                format!("{field}.quorum"),
                "exceeds the number of witness keys",
            ));
        }
        Ok(())
    }

    /// The keys, parsed (validation checked they parse).
    pub fn verifier_keys(&self) -> Vec<crate::note::VerifierKey> {
        self.keys
            .iter()
            .filter_map(|k| crate::note::VerifierKey::parse(k).ok())
            .collect()
    }
}

impl RewardRecord {
    /// True for the rules settled over periods ([`REWARD_RULE_SETTLED`],
    /// [`REWARD_RULE_SETTLED_CUMULATIVE`], [`REWARD_RULE_SETTLED_IMPACT`]).
    pub fn is_settled(&self) -> bool {
        self.rule == REWARD_RULE_SETTLED || self.is_cumulative()
    }

    /// True for [`REWARD_RULE_SETTLED_CUMULATIVE`] and [`REWARD_RULE_SETTLED_IMPACT`], whose
    /// settlement lines accumulate from round 1 and name everyone with a contribution so far.
    pub fn is_cumulative(&self) -> bool {
        self.rule == REWARD_RULE_SETTLED_CUMULATIVE || self.rule == REWARD_RULE_SETTLED_IMPACT
    }

    /// A known rule with exactly its parameters.
    pub(crate) fn check(&self, cx: &Ctx, field: &str) -> Result<(), LedgerError> {
        match self.rule.as_str() {
            REWARD_RULE => {
                if self.period_rounds.is_some() || self.z_milli.is_some() {
                    return Err(cx.err(
                        format!("{field}.rule"),
                        format!("{REWARD_RULE} takes no period_rounds or z_milli"),
                    ));
                }
            }
            REWARD_RULE_SETTLED | REWARD_RULE_SETTLED_CUMULATIVE | REWARD_RULE_SETTLED_IMPACT => {
                if !matches!(self.period_rounds, Some(p) if p >= 1) {
                    return Err(cx.err(
                        format!("{field}.period_rounds"),
                        format!("{} needs period_rounds >= 1", self.rule),
                    ));
                }
                if self.z_milli.is_none() {
                    return Err(cx.err(
                        format!("{field}.z_milli"),
                        format!("{} needs z_milli", self.rule),
                    ));
                }
            }
            other => {
                return Err(cx.err(
                    format!("{field}.rule"),
                    format!("unknown reward rule {other:?}"),
                ));
            }
        }
        Ok(())
    }
}

/// A file identified by digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestRecord {
    /// SHA-256, lowercase hex.
    pub sha256: String,
}

/// Outcome of a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoundStatus {
    /// Aggregated, valued and paid.
    Completed,
    /// Given up (reason recorded); no rewards.
    Abandoned,
}

impl RoundStatus {
    /// `"completed"` or `"abandoned"`, as recorded.
    pub fn as_str(self) -> &'static str {
        match self {
            RoundStatus::Completed => "completed",
            RoundStatus::Abandoned => "abandoned",
        }
    }
}

/// Model digests around a round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelDigestsRecord {
    /// SHA-256 of the flat little-endian f32 parameters before the round.
    pub before: String,
    /// The same after the round.
    pub after: String,
    /// Number of parameters.
    pub params: u64,
}

/// Validation of the round's model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationRecord {
    /// Validation file digest.
    pub sha256: String,
    /// Metric name.
    pub metric: String,
    /// Score before, times 1e9.
    pub score_before_nano: i64,
    /// Score after, times 1e9.
    pub score_after_nano: i64,
}

/// How contributions were valued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValuationRecord {
    /// Estimator name.
    pub estimator: String,
    /// Seed of its sampling.
    pub seed: u64,
    /// Utility evaluations made.
    pub evaluations: u64,
    /// How the values' standard errors (`value_se_nano` of the contributions) were estimated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncertainty: Option<UncertaintyRecord>,
    /// Format v2, a federation with validators: the design they evaluated, their distances
    /// from consensus and rewards (the values are then the consensus game's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validators: Option<ValidatorsRecord>,
}

/// How a round's values' standard errors were estimated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UncertaintyRecord {
    /// [`UNCERTAINTY_BOOTSTRAP`] (validators' spread once validators exist).
    pub method: String,
    /// Bootstrap resamples (their draws are keyed by the valuation's seed).
    pub resamples: u64,
}

/// Where a schema check is (the entry's index), for precise errors.
pub(crate) struct Ctx {
    pub(crate) index: u64,
}

impl Ctx {
    pub(crate) fn err(&self, field: impl Into<String>, reason: impl Into<String>) -> LedgerError {
        LedgerError::Schema {
            index: self.index,
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn nonempty(&self, field: &str, s: &str) -> Result<(), LedgerError> {
        if s.is_empty() {
            Err(self.err(field, "must not be empty"))
        } else {
            Ok(())
        }
    }

    pub(crate) fn hex32(&self, field: &str, s: &str) -> Result<(), LedgerError> {
        if s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(())
        } else {
            Err(self.err(field, format!("{s:?} is not 64 lowercase hex characters")))
        }
    }

    pub(crate) fn decimal(&self, field: &str, s: &str) -> Result<(), LedgerError> {
        if is_decimal(s) {
            Ok(())
        } else {
            Err(self.err(field, format!("{s:?} is not a non-negative decimal string")))
        }
    }

    pub(crate) fn timestamp(&self, field: &str, s: &str) -> Result<(), LedgerError> {
        if is_rfc3339_utc(s) {
            Ok(())
        } else {
            Err(self.err(
                field,
                format!("{s:?} is not an RFC 3339 UTC timestamp (YYYY-MM-DDTHH:MM:SS[.f]Z)"),
            ))
        }
    }
}

/// `digits[.digits][e[+-]digits]`.
pub(crate) fn is_decimal(s: &str) -> bool {
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (mantissa, None),
    };
    let digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
    digits(int)
        && frac.is_none_or(digits)
        && exp.is_none_or(|e| digits(e.strip_prefix(['+', '-']).unwrap_or(e)))
}

pub(crate) fn is_rfc3339_utc(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 20 || b.last() != Some(&b'Z') {
        return false;
    }
    let d = |r: std::ops::Range<usize>| b.get(r).is_some_and(|x| x.iter().all(u8::is_ascii_digit));
    let fixed = d(0..4)
        && b[4] == b'-'
        && d(5..7)
        && b[7] == b'-'
        && d(8..10)
        && b[10] == b'T'
        && d(11..13)
        && b[13] == b':'
        && d(14..16)
        && b[16] == b':'
        && d(17..19);
    let frac = &b[19..b.len() - 1];
    fixed
        && (frac.is_empty()
            || (frac.len() >= 2 && frac[0] == b'.' && frac[1..].iter().all(u8::is_ascii_digit)))
}

/// Extracts the backquoted field name from a serde error message, if any.
pub(crate) fn serde_field(msg: &str) -> String {
    msg.split('`')
        .nth(1)
        .map_or_else(|| "$".to_owned(), str::to_owned)
}

/// What every round record says about the round itself, in either format.
pub(crate) struct RoundHeader<'a> {
    pub(crate) status: RoundStatus,
    pub(crate) reason: Option<&'a str>,
    pub(crate) opened_at: &'a str,
    pub(crate) closed_at: &'a str,
    pub(crate) model: &'a ModelDigestsRecord,
    pub(crate) validation: &'a ValidationRecord,
    pub(crate) valuation: &'a ValuationRecord,
}

/// The checks of a round's own fields: a reason exactly when abandoned, timestamps, digests,
/// metric and estimator named.
pub(crate) fn check_round_header(cx: &Ctx, r: RoundHeader<'_>) -> Result<(), LedgerError> {
    match (r.status, r.reason) {
        (RoundStatus::Completed, Some(_)) => {
            return Err(cx.err("reason", "only abandoned rounds have a reason"));
        }
        (RoundStatus::Abandoned, None) => {
            return Err(cx.err("reason", "an abandoned round must say why"));
        }
        (RoundStatus::Abandoned, Some(s)) => cx.nonempty("reason", s)?,
        (RoundStatus::Completed, None) => {}
    }
    cx.timestamp("opened_at", r.opened_at)?;
    cx.timestamp("closed_at", r.closed_at)?;
    cx.hex32("model.before", &r.model.before)?;
    cx.hex32("model.after", &r.model.after)?;
    cx.hex32("validation.sha256", &r.validation.sha256)?;
    cx.nonempty("validation.metric", &r.validation.metric)?;
    cx.nonempty("valuation.estimator", &r.valuation.estimator)
}

/// A validated entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// v2 entry 0.
    Federation(Box<FederationEntry>),
    /// v2: a key enrolled.
    Enrolment(Box<EnrolmentEntry>),
    /// v2: an accepted update.
    Contribution(Box<ContributionEntry>),
    /// v2: a signed decline.
    Decline(Box<DeclineEntry>),
    /// v2: a round's summary.
    Round(Box<RoundSummary>),
    /// v2: (a part of) a period's reward settlement.
    Settlement(Box<SettlementEntry>),
    /// v2: a governance change, anchored with its governors' signatures.
    Governance(Box<GovernanceEntry>),
    /// v2: (a part of) a validator's signed utility vector for a round.
    Utilities(Box<UtilitiesEntry>),
    /// v1 entry 0.
    V1Federation(Box<v1::FederationRecord>),
    /// v1 entry i >= 1.
    V1Round(Box<v1::RoundRecord>),
}

impl Record {
    /// The format version of the entry.
    pub fn version(&self) -> u64 {
        match self {
            Record::V1Federation(_) | Record::V1Round(_) => v1::RECORD_VERSION,
            _ => RECORD_VERSION,
        }
    }
}

/// The witnesses named by a genesis entry (either version): their cosignature/v1 keys and the
/// quorum.
pub fn genesis_witnesses(genesis: &Record) -> Option<&WitnessesRecord> {
    match genesis {
        Record::Federation(g) => Some(&g.witnesses),
        Record::V1Federation(g) => Some(&g.witnesses),
        _ => None,
    }
}

/// Where the typed form of an entry is read from: its canonical text, or (on the reference
/// path) the value parsed from it.
enum Source<'a> {
    Canonical(&'a str),
    Parsed(Value),
}

impl Source<'_> {
    fn typed<T: serde::de::DeserializeOwned>(self, cx: &Ctx) -> Result<T, LedgerError> {
        match self {
            Source::Canonical(s) => serde_json::from_str(s),
            Source::Parsed(v) => serde_json::from_value(v),
        }
        .map_err(|e| cx.err(serde_field(&e.to_string()), e.to_string()))
    }
}

/// Validates entry `index` of the log `origin`: size, canonical JSON, a known `type` for that
/// index, and every field of its schema. Returns the typed record. (Checks that need more than
/// one entry, such as enrolment, round order and signatures, are [`crate::verify`]'s.)
///
/// An entry goes the fast way first: one pass checks that its bytes are canonical
/// ([`crate::canonical::scan`]) and the typed record is read straight from them. Anything that
/// way does not accept is decided again by the reference path (parse to a `Value`, re-encode,
/// compare), which names what is wrong; so the fast way changes no verdict and no error, only
/// what an accepted entry costs (a replica checks every entry it catches up).
pub fn validate_entry(index: u64, origin: &str, bytes: &[u8]) -> Result<Record, LedgerError> {
    let cx = Ctx { index };
    if bytes.len() > MAX_ENTRY_BYTES {
        return Err(cx.err(
            "$",
            format!(
                "entry is {} bytes; at most {MAX_ENTRY_BYTES} are allowed",
                bytes.len()
            ),
        ));
    }
    if let Some(record) = validate_canonical(&cx, origin, bytes) {
        // The crate's own tests hold every entry they validate to both paths.
        #[cfg(test)]
        assert_eq!(
            validate_reference(&cx, origin, bytes).as_ref().ok(),
            Some(&record),
            "the fast way accepted what the reference path does not"
        );
        return Ok(record);
    }
    validate_reference(&cx, origin, bytes)
}

/// The reference path of [`validate_entry`]: parse to a `Value`, re-encode canonically,
/// compare, then read the typed record from the value.
fn validate_reference(cx: &Ctx, origin: &str, bytes: &[u8]) -> Result<Record, LedgerError> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| cx.err("$", format!("not JSON: {e}")))?;
    let mut canon = Vec::with_capacity(bytes.len());
    crate::canonical::write(&value, "$", &mut canon).map_err(|(f, r)| cx.err(f, r))?;
    if canon != bytes {
        let at = canon
            .iter()
            .zip(bytes)
            .position(|(a, b)| a != b)
            .unwrap_or(canon.len().min(bytes.len()));
        return Err(cx.err(
            "$",
            format!("not canonical JSON (compact, keys sorted, no duplicates): first difference at byte {at}"),
        ));
    }
    let obj = value
        .as_object()
        .ok_or_else(|| cx.err("$", "must be a JSON object"))?;
    let (version, ty) = check_header(
        cx,
        origin,
        obj.get("v").map(Value::as_u64),
        obj.get("federation").and_then(Value::as_str),
        obj.get("type").and_then(Value::as_str),
    )?;
    let ty = ty.to_owned();
    typed_record(cx, version, &ty, Source::Parsed(value))
}

/// For the crate's tests: [`validate_entry`] of a valid entry, asserting that the fast way
/// took it (an entry it refuses is only slower, so nothing else would notice).
#[cfg(test)]
pub(crate) fn validated_fast(origin: &str, index: u64, bytes: &[u8]) -> Record {
    let fast = validate_canonical(&Ctx { index }, origin, bytes);
    let record = validate_entry(index, origin, bytes).unwrap();
    assert_eq!(
        fast.as_ref(),
        Some(&record),
        "the fast way refused a valid entry"
    );
    record
}

/// The fast way of [`validate_entry`]: the record when `bytes` are canonical and it holds,
/// `None` otherwise (for the reference path to name the fault).
fn validate_canonical(cx: &Ctx, origin: &str, bytes: &[u8]) -> Option<Record> {
    let text = std::str::from_utf8(bytes).ok()?;
    let top = crate::canonical::scan(text)?;
    // Strings with escapes take the reference path: a version, origin or type never has them.
    fn plain(raw: &str) -> Option<&str> {
        raw.strip_prefix('"')
            .and_then(|r| r.strip_suffix('"'))
            .filter(|r| !r.contains('\\'))
    }
    let version = top.v.map(|raw| raw.parse::<u64>().ok());
    let federation = top.federation.map(plain)?;
    let ty = top.ty.map(plain)?;
    let (version, ty) = check_header(cx, origin, version, federation, ty).ok()?;
    typed_record(cx, version, ty, Source::Canonical(text)).ok()
}

/// The checks every entry's `v`, `federation` and `type` pass before its schema is chosen
/// (`None`: absent or not of the right JSON type). Returns the version and the type.
fn check_header<'t>(
    cx: &Ctx,
    origin: &str,
    version: Option<Option<u64>>,
    federation: Option<&str>,
    ty: Option<&'t str>,
) -> Result<(u64, &'t str), LedgerError> {
    let version = match version {
        Some(Some(v)) if v == v1::RECORD_VERSION || v == RECORD_VERSION => v,
        Some(_) => return Err(cx.err("v", "must be 1 or 2")),
        None => return Err(cx.err("v", "missing")),
    };
    match federation {
        Some(f) if f == origin => {}
        Some(f) => {
            return Err(cx.err(
                "federation",
                format!("{f:?} is not this log's origin {origin:?}"),
            ));
        }
        None => return Err(cx.err("federation", "missing or not a string")),
    }
    let ty = ty.ok_or_else(|| cx.err("type", "missing or not a string"))?;
    let is_federation = ty == FEDERATION_TYPE || ty == v1::FEDERATION_TYPE;
    if cx.index == 0 && !is_federation {
        return Err(cx.err(
            "type",
            format!(
                "entry 0 must be {FEDERATION_TYPE} (or {}), not {ty:?}",
                v1::FEDERATION_TYPE
            ),
        ));
    }
    if cx.index > 0 && is_federation {
        return Err(cx.err("type", "only entry 0 may be a federation record"));
    }
    Ok((version, ty))
}

/// Reads the record of `version` and `ty` from `source` and checks its fields.
fn typed_record(
    cx: &Ctx,
    version: u64,
    ty: &str,
    source: Source<'_>,
) -> Result<Record, LedgerError> {
    match (version, ty) {
        (1, v1::FEDERATION_TYPE) => {
            let r: v1::FederationRecord = source.typed(cx)?;
            v1::check_federation(cx, &r)?;
            Ok(Record::V1Federation(Box::new(r)))
        }
        (1, v1::ROUND_TYPE) => {
            let r: v1::RoundRecord = source.typed(cx)?;
            v1::check_round(cx, &r)?;
            Ok(Record::V1Round(Box::new(r)))
        }
        (2, FEDERATION_TYPE) => {
            let r: FederationEntry = source.typed(cx)?;
            r.check(cx)?;
            Ok(Record::Federation(Box::new(r)))
        }
        (2, ENROLMENT_TYPE) => {
            let r: EnrolmentEntry = source.typed(cx)?;
            r.check(cx)?;
            Ok(Record::Enrolment(Box::new(r)))
        }
        (2, CONTRIBUTION_TYPE) => {
            let r: ContributionEntry = source.typed(cx)?;
            r.check(cx)?;
            Ok(Record::Contribution(Box::new(r)))
        }
        (2, DECLINE_TYPE) => {
            let r: DeclineEntry = source.typed(cx)?;
            r.check(cx)?;
            Ok(Record::Decline(Box::new(r)))
        }
        (2, ROUND_TYPE) => {
            let r: RoundSummary = source.typed(cx)?;
            r.check(cx)?;
            Ok(Record::Round(Box::new(r)))
        }
        (2, SETTLEMENT_TYPE) => {
            let r: SettlementEntry = source.typed(cx)?;
            r.check(cx)?;
            Ok(Record::Settlement(Box::new(r)))
        }
        (2, UTILITIES_TYPE) => {
            let r: UtilitiesEntry = source.typed(cx)?;
            r.check(cx)?;
            Ok(Record::Utilities(Box::new(r)))
        }
        (2, GOVERNANCE_TYPE) => {
            let r: GovernanceEntry = source.typed(cx)?;
            r.check(cx)?;
            Ok(Record::Governance(Box::new(r)))
        }
        (v, other) => Err(cx.err(
            "type",
            format!("unknown record type {other:?} for format version {v}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_messages_match_the_design() {
        assert_eq!(
            update_signing_message("fed", 3, "ab", 120, "cd"),
            "fedledger/update/v2\nfed\n3\nab\n120\ncd\n"
        );
        assert_eq!(
            v1::update_signing_message("fed", 3, "ab"),
            "fedledger/update/v1\nfed\n3\nab\n"
        );
        assert_eq!(
            decline_signing_message("fed", 3, "budget exhausted"),
            "fedledger/decline/v1\nfed\n3\nbudget exhausted\n"
        );
    }

    #[test]
    fn decimals_and_timestamps() {
        for ok in ["0", "1.5", "1e-6", "2.5E+3", "0.000001"] {
            assert!(is_decimal(ok), "{ok}");
        }
        for bad in ["", "-1", "1.", ".5", "1e", "NaN", "inf", "1,5"] {
            assert!(!is_decimal(bad), "{bad}");
        }
        assert!(is_rfc3339_utc("2026-11-25T01:02:03Z"));
        assert!(is_rfc3339_utc("2026-11-25T01:02:03.123456Z"));
        assert!(!is_rfc3339_utc("2026-11-25T01:02:03+00:00"));
        assert!(!is_rfc3339_utc("2026-11-25 01:02:03Z"));
    }

    #[test]
    fn an_entry_over_the_tile_limit_is_refused() {
        let big = format!(
            "{{\"federation\":\"o\",\"pad\":\"{}\",\"type\":\"x\",\"v\":2}}",
            "a".repeat(MAX_ENTRY_BYTES)
        );
        match validate_entry(3, "o", big.as_bytes()) {
            Err(LedgerError::Schema { field, reason, .. }) => {
                assert_eq!(field, "$");
                assert!(reason.contains("65535"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
}
