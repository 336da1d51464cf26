//! Version 1 of the record schemas (ledgers written before v2; `verify` still checks them): the
//! federation's genesis (entry 0) and one record per round (entry i = round i).
//!
//! Every entry is canonical JSON (see [`crate::canonical`]): compact, keys sorted, integers and
//! strings only, with `v` = 1, `type` and `federation` (the log's origin). Build records from the
//! typed structs below and encode them with [`encode_canonical`]; [`validate_entry`] accepts
//! exactly those bytes and refuses anything else, naming the offending field.
//!
//! # `fedledger.federation/v1` (entry 0)
//!
//! | field | type | meaning |
//! | --- | --- | --- |
//! | `v`, `type`, `federation` | 1, `"fedledger.federation/v1"`, origin | |
//! | `created_at` | RFC 3339 UTC string | when the federation was started |
//! | `participants` | `[{name, public_key}]` sorted by `public_key` | enrolled hospitals; `public_key` = 64 lowercase hex (Ed25519); names and keys unique |
//! | `model` | `{kind, features, classes, hidden: [int], params}` | model spec and its parameter count |
//! | `training` | `{rounds, quorum, local_epochs, batch_size, learning_rate, aggregation}` | `learning_rate` a decimal string; `aggregation` names the strategy (e.g. `"fedavg"`); `quorum` = minimum contributions per round |
//! | `privacy` | `{epsilon_budget, delta, clip_norm, noise_multiplier, accountant}` | the four numbers as decimal strings; `accountant` e.g. `"rdp"` |
//! | `witnesses` | `{keys: [cosignature/v1 verifier keys], quorum}` | `quorum` <= number of keys (the k of k-of-n anchoring) |
//! | `reward` | `{rule: "shapley-proportional/v1", pool_per_round}` | integer base units |
//! | `validation` | `{sha256}` | digest of the validation file |
//!
//! # `fedledger.round/v1` (entry i >= 1, `round` = i)
//!
//! `round`, `status` (`"completed"` or `"abandoned"`), `reason` (present exactly when abandoned),
//! `opened_at`, `closed_at` (RFC 3339 UTC), `model` {`before`, `after`, `params`},
//! `validation` {`sha256`, `metric`, `score_before_nano`, `score_after_nano`}, `valuation`
//! {`estimator`, `seed`, `evaluations`}, `reward_pool`, `contributions` (sorted by `participant`,
//! unique): {`participant`, `name`, `examples`, `update_sha256`, `signature` (base64 Ed25519 over
//! [`update_signing_message`]), `value_nano` (may be negative), `reward`, `epsilon_micro`,
//! `epsilon_total_micro`, `dp` {`noise_multiplier`, `sampling_rate`, `delta` (decimal strings),
//! `steps` (integer), `accountant`}, `flags` [strings]}, `declined` [{`participant`, `reason`}]
//! (sorted, unique, disjoint from contributions). A completed round's rewards sum to
//! `reward_pool`; an abandoned round has `reward_pool` 0 and every `reward` 0 (its privacy spend
//! is still recorded). Digests are 64 lowercase hex characters.
//!
//! Checks that need more than one record (participants enrolled in the genesis, pool equal to
//! the genesis pool, model digests chained from round to round, signatures) are done by
//! [`crate::verify`].

use serde::{Deserialize, Serialize};

use super::{
    Ctx, DigestRecord, ModelDigestsRecord, ModelSpecRecord, REWARD_RULE, RewardRecord, RoundHeader,
    RoundStatus, TrainingRecord, ValidationRecord, ValuationRecord, WitnessesRecord,
    check_round_header,
};
use crate::error::LedgerError;

/// Record format version 1.
pub const RECORD_VERSION: u64 = 1;
/// `type` of the genesis record.
pub const FEDERATION_TYPE: &str = "fedledger.federation/v1";
/// `type` of a round record.
pub const ROUND_TYPE: &str = "fedledger.round/v1";

/// The message a participant signed for its update in v1 ledgers:
/// `"fedledger/update/v1\n<federation>\n<round>\n<update_sha256>\n"` (the example count and
/// privacy report were not signed; v2 signs them).
pub fn update_signing_message(federation: &str, round: u64, update_sha256: &str) -> String {
    format!("fedledger/update/v1\n{federation}\n{round}\n{update_sha256}\n")
}

/// An enrolled participant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParticipantRecord {
    /// Display name (unique).
    pub name: String,
    /// Ed25519 public key, 64 lowercase hex characters.
    pub public_key: String,
}

/// Privacy parameters of the federation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyRecord {
    /// Per-participant epsilon budget, decimal string.
    pub epsilon_budget: String,
    /// Delta, decimal string.
    pub delta: String,
    /// Per-example clipping norm, decimal string.
    pub clip_norm: String,
    /// Gaussian noise multiplier, decimal string.
    pub noise_multiplier: String,
    /// Accountant name.
    pub accountant: String,
}

/// Entry 0: `fedledger.federation/v1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationRecord {
    /// Always [`RECORD_VERSION`].
    pub v: u64,
    /// Always [`FEDERATION_TYPE`].
    #[serde(rename = "type")]
    pub record_type: String,
    /// The log's origin.
    pub federation: String,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// Enrolled participants, sorted by public key.
    pub participants: Vec<ParticipantRecord>,
    /// Model spec.
    pub model: ModelSpecRecord,
    /// Training hyper-parameters.
    pub training: TrainingRecord,
    /// Privacy parameters.
    pub privacy: PrivacyRecord,
    /// Witness keys and quorum.
    pub witnesses: WitnessesRecord,
    /// Reward rule and pool.
    pub reward: RewardRecord,
    /// Validation file digest.
    pub validation: DigestRecord,
}

/// A contribution's differential-privacy parameters for this round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpRecord {
    /// Noise multiplier, decimal string.
    pub noise_multiplier: String,
    /// Poisson sampling rate, decimal string.
    pub sampling_rate: String,
    /// DP-SGD steps taken this round.
    pub steps: u64,
    /// Delta, decimal string.
    pub delta: String,
    /// Accountant name.
    pub accountant: String,
}

/// One participant's accepted update in a round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContributionRecord {
    /// Ed25519 public key, lowercase hex.
    pub participant: String,
    /// Display name.
    pub name: String,
    /// Training examples.
    pub examples: u64,
    /// SHA-256 of the update's little-endian f32 bytes, lowercase hex.
    pub update_sha256: String,
    /// Base64 Ed25519 signature over [`update_signing_message`].
    pub signature: String,
    /// Shapley value times 1e9, rounded to nearest.
    pub value_nano: i64,
    /// Reward in base units.
    pub reward: u64,
    /// Increase of cumulative epsilon this round, times 1e6, rounded up.
    pub epsilon_micro: u64,
    /// Cumulative epsilon after this round, times 1e6, rounded up.
    pub epsilon_total_micro: u64,
    /// DP parameters used.
    pub dp: DpRecord,
    /// Flags raised while checking the update.
    pub flags: Vec<String>,
}

/// A participant that declined the round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclinedRecord {
    /// Ed25519 public key, lowercase hex.
    pub participant: String,
    /// Why.
    pub reason: String,
}

/// Entry i >= 1: `fedledger.round/v1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoundRecord {
    /// Always [`RECORD_VERSION`].
    pub v: u64,
    /// Always [`ROUND_TYPE`].
    #[serde(rename = "type")]
    pub record_type: String,
    /// The log's origin.
    pub federation: String,
    /// Round number = entry index.
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
    /// Accepted updates, sorted by participant.
    pub contributions: Vec<ContributionRecord>,
    /// Participants that declined, sorted by participant.
    pub declined: Vec<DeclinedRecord>,
}

pub(super) fn check_federation(cx: &Ctx, r: &FederationRecord) -> Result<(), LedgerError> {
    cx.timestamp("created_at", &r.created_at)?;
    if r.participants.is_empty() {
        return Err(cx.err("participants", "at least one participant must be enrolled"));
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, p) in r.participants.iter().enumerate() {
        cx.nonempty(&format!("participants[{i}].name"), &p.name)?;
        cx.hex32(&format!("participants[{i}].public_key"), &p.public_key)?;
        if i > 0 && r.participants[i - 1].public_key >= p.public_key {
            return Err(cx.err(
                format!("participants[{i}].public_key"),
                "participants must be sorted by public_key, without duplicates",
            ));
        }
        if !names.insert(p.name.as_str()) {
            return Err(cx.err(
                format!("participants[{i}].name"),
                format!("duplicate name {:?}", p.name),
            ));
        }
    }
    cx.nonempty("model.kind", &r.model.kind)?;
    if r.model.params == 0 {
        return Err(cx.err("model.params", "must be positive"));
    }
    cx.decimal("training.learning_rate", &r.training.learning_rate)?;
    cx.nonempty("training.aggregation", &r.training.aggregation)?;
    if r.training.quorum == 0 {
        return Err(cx.err("training.quorum", "must be positive"));
    }
    cx.decimal("privacy.epsilon_budget", &r.privacy.epsilon_budget)?;
    cx.decimal("privacy.delta", &r.privacy.delta)?;
    cx.decimal("privacy.clip_norm", &r.privacy.clip_norm)?;
    cx.decimal("privacy.noise_multiplier", &r.privacy.noise_multiplier)?;
    cx.nonempty("privacy.accountant", &r.privacy.accountant)?;
    let mut seen = std::collections::BTreeSet::new();
    for (i, k) in r.witnesses.keys.iter().enumerate() {
        let field = format!("witnesses.keys[{i}]");
        let vk = crate::note::VerifierKey::parse(k).map_err(|e| cx.err(&field, e.to_string()))?;
        if vk.key_type != crate::note::KEY_TYPE_COSIGNATURE {
            return Err(cx.err(
                field,
                "witness keys must be cosignature/v1 keys (type 0x04)",
            ));
        }
        if !seen.insert(vk.name.clone()) {
            return Err(cx.err(field, format!("duplicate witness name {:?}", vk.name)));
        }
    }
    if r.witnesses.quorum as usize > r.witnesses.keys.len() {
        return Err(cx.err("witnesses.quorum", "exceeds the number of witness keys"));
    }
    if r.reward.rule != REWARD_RULE {
        return Err(cx.err(
            "reward.rule",
            format!("unknown reward rule {:?}", r.reward.rule),
        ));
    }
    cx.hex32("validation.sha256", &r.validation.sha256)
}

pub(super) fn check_round(cx: &Ctx, r: &RoundRecord) -> Result<(), LedgerError> {
    if r.round != cx.index {
        return Err(cx.err(
            "round",
            format!("round {} recorded at entry {}", r.round, cx.index),
        ));
    }
    check_round_header(
        cx,
        RoundHeader {
            status: r.status,
            reason: r.reason.as_deref(),
            opened_at: &r.opened_at,
            closed_at: &r.closed_at,
            model: &r.model,
            validation: &r.validation,
            valuation: &r.valuation,
        },
    )?;
    if r.valuation.validators.is_some() {
        return Err(cx.err("valuation.validators", "format v1 has no validators"));
    }
    let mut total: u64 = 0;
    for (i, c) in r.contributions.iter().enumerate() {
        let f = |name: &str| format!("contributions[{i}].{name}");
        cx.hex32(&f("participant"), &c.participant)?;
        if i > 0 && r.contributions[i - 1].participant >= c.participant {
            return Err(cx.err(
                f("participant"),
                "contributions must be sorted by participant, without duplicates",
            ));
        }
        cx.nonempty(&f("name"), &c.name)?;
        cx.hex32(&f("update_sha256"), &c.update_sha256)?;
        match crate::note::b64_decode(&c.signature) {
            Some(s) if s.len() == 64 => {}
            _ => return Err(cx.err(f("signature"), "must be a base64 64-byte Ed25519 signature")),
        }
        if c.epsilon_total_micro < c.epsilon_micro {
            return Err(cx.err(
                f("epsilon_total_micro"),
                "smaller than this round's epsilon_micro",
            ));
        }
        cx.decimal(&f("dp.noise_multiplier"), &c.dp.noise_multiplier)?;
        cx.decimal(&f("dp.sampling_rate"), &c.dp.sampling_rate)?;
        cx.decimal(&f("dp.delta"), &c.dp.delta)?;
        cx.nonempty(&f("dp.accountant"), &c.dp.accountant)?;
        for (j, flag) in c.flags.iter().enumerate() {
            cx.nonempty(&f(&format!("flags[{j}]")), flag)?;
        }
        if r.status == RoundStatus::Abandoned && c.reward != 0 {
            return Err(cx.err(f("reward"), "an abandoned round pays no rewards"));
        }
        total = total
            .checked_add(c.reward)
            .ok_or_else(|| cx.err(f("reward"), "rewards overflow"))?;
    }
    match r.status {
        RoundStatus::Completed if total != r.reward_pool => {
            return Err(cx.err(
                "reward_pool",
                format!("rewards sum to {total}, not the pool {}", r.reward_pool),
            ));
        }
        RoundStatus::Abandoned if r.reward_pool != 0 => {
            return Err(cx.err("reward_pool", "an abandoned round has a zero pool"));
        }
        _ => {}
    }
    for (i, d) in r.declined.iter().enumerate() {
        let field = format!("declined[{i}].participant");
        cx.hex32(&field, &d.participant)?;
        if i > 0 && r.declined[i - 1].participant >= d.participant {
            return Err(cx.err(
                field,
                "declined must be sorted by participant, without duplicates",
            ));
        }
        if r.contributions
            .binary_search_by(|c| c.participant.cmp(&d.participant))
            .is_ok()
        {
            return Err(cx.err(field, "a participant cannot both contribute and decline"));
        }
        cx.nonempty(&format!("declined[{i}].reason"), &d.reason)?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::{Record, encode_canonical, validate_entry};
    use super::*;

    pub(crate) fn genesis(origin: &str) -> FederationRecord {
        FederationRecord {
            v: 1,
            record_type: FEDERATION_TYPE.into(),
            federation: origin.into(),
            created_at: "2026-11-25T00:00:00Z".into(),
            participants: vec![
                ParticipantRecord {
                    name: "hospital-a".into(),
                    public_key: "aa".repeat(32),
                },
                ParticipantRecord {
                    name: "hospital-b".into(),
                    public_key: "bb".repeat(32),
                },
            ],
            model: ModelSpecRecord {
                kind: "mlp".into(),
                features: 8,
                classes: 2,
                hidden: vec![16],
                params: 178,
            },
            training: TrainingRecord {
                rounds: 10,
                quorum: 2,
                local_epochs: 1,
                batch_size: 32,
                learning_rate: "0.05".into(),
                aggregation: "fedavg".into(),
            },
            privacy: PrivacyRecord {
                epsilon_budget: "8".into(),
                delta: "1e-5".into(),
                clip_norm: "1.0".into(),
                noise_multiplier: "1.1".into(),
                accountant: "rdp".into(),
            },
            witnesses: WitnessesRecord {
                keys: vec![],
                quorum: 0,
            },
            reward: RewardRecord {
                rule: REWARD_RULE.into(),
                pool_per_round: 1000,
                period_rounds: None,
                z_milli: None,
            },
            validation: DigestRecord {
                sha256: "cc".repeat(32),
            },
        }
    }

    pub(crate) fn round(origin: &str, n: u64) -> RoundRecord {
        let c = |p: &str, reward| ContributionRecord {
            participant: p.repeat(32),
            name: format!("h-{p}"),
            examples: 100,
            update_sha256: "dd".repeat(32),
            signature: crate::note::b64_encode(&[7u8; 64]),
            value_nano: -5,
            reward,
            epsilon_micro: 10,
            epsilon_total_micro: 10 * n,
            dp: DpRecord {
                noise_multiplier: "1.1".into(),
                sampling_rate: "0.01".into(),
                steps: 100,
                delta: "1e-5".into(),
                accountant: "rdp".into(),
            },
            flags: vec![],
        };
        RoundRecord {
            v: 1,
            record_type: ROUND_TYPE.into(),
            federation: origin.into(),
            round: n,
            status: RoundStatus::Completed,
            reason: None,
            opened_at: "2026-11-25T00:00:01Z".into(),
            closed_at: "2026-11-25T00:00:02.5Z".into(),
            model: ModelDigestsRecord {
                before: "ee".repeat(32),
                after: "ee".repeat(32),
                params: 178,
            },
            validation: ValidationRecord {
                sha256: "cc".repeat(32),
                metric: "accuracy".into(),
                score_before_nano: 500_000_000,
                score_after_nano: 600_000_000,
            },
            valuation: ValuationRecord {
                estimator: "exact".into(),
                seed: 42,
                evaluations: 4,
                uncertainty: None,
                validators: None,
            },
            reward_pool: 1000,
            contributions: vec![c("aa", 600), c("bb", 400)],
            declined: vec![],
        }
    }

    fn reject(index: u64, bytes: &[u8], field: &str) {
        match validate_entry(index, "o", bytes) {
            Err(LedgerError::Schema { field: f, .. }) => {
                assert_eq!(f, field, "{}", String::from_utf8_lossy(bytes))
            }
            other => panic!("expected schema error on {field}, got {other:?}"),
        }
    }

    #[test]
    fn typed_records_round_trip_through_the_validator() {
        let g = encode_canonical(&genesis("o")).unwrap();
        assert_eq!(
            crate::records::validated_fast("o", 0, &g),
            Record::V1Federation(Box::new(genesis("o")))
        );
        let r = encode_canonical(&round("o", 3)).unwrap();
        assert_eq!(
            crate::records::validated_fast("o", 3, &r),
            Record::V1Round(Box::new(round("o", 3)))
        );
        let mut a = round("o", 1);
        a.status = RoundStatus::Abandoned;
        a.reason = Some("quorum not reached".into());
        a.reward_pool = 0;
        for c in &mut a.contributions {
            c.reward = 0;
        }
        validate_entry(1, "o", &encode_canonical(&a).unwrap()).unwrap();
    }

    #[test]
    fn rejects_what_is_not_exactly_a_record() {
        let r = encode_canonical(&round("o", 3)).unwrap();
        let s = String::from_utf8(r.clone()).unwrap();
        reject(4, &r, "round");
        reject(0, &r, "type");
        reject(
            3,
            s.replace(
                r#""type":"fedledger.round/v1""#,
                r#""type":"fedledger.other/v1""#,
            )
            .as_bytes(),
            "type",
        );
        reject(
            3,
            s.replace(r#""examples":100"#, r#""examples":100.0"#)
                .as_bytes(),
            "contributions[0].examples",
        );
        reject(3, s.replacen('{', "{ ", 1).as_bytes(), "$");
        reject(3, s.replace(r#""v":1"#, r#""v":2"#).as_bytes(), "type");
        reject(3, s.replace(r#""v":1"#, r#""v":3"#).as_bytes(), "v");
        // unsorted keys: move "v" to the front
        let unsorted = format!("{{\"v\":1,{}", s[1..].replace(r#","v":1"#, ""));
        reject(3, unsorted.as_bytes(), "$");
        reject(
            3,
            s.replace(r#""reward":600"#, r#""reward":601"#).as_bytes(),
            "reward_pool",
        );
        reject(
            3,
            s.replace(r#""federation":"o""#, r#""federation":"p""#)
                .as_bytes(),
            "federation",
        );
        reject(
            3,
            s.replace(r#""examples":100,"#, "").as_bytes(),
            "examples",
        );
        reject(
            3,
            s.replace(r#""examples":100,"#, r#""examples":100,"extra":1,"#)
                .as_bytes(),
            "extra",
        );
        let mut bad = round("o", 3);
        bad.contributions.swap(0, 1);
        reject(
            3,
            &encode_canonical(&bad).unwrap(),
            "contributions[1].participant",
        );
        let mut bad = round("o", 3);
        bad.status = RoundStatus::Abandoned;
        reject(3, &encode_canonical(&bad).unwrap(), "reason");
        bad.reason = Some("timeout".into());
        reject(
            3,
            &encode_canonical(&bad).unwrap(),
            "contributions[0].reward",
        );
        let mut bad = round("o", 3);
        bad.contributions[1].dp.delta = "1e".into();
        reject(
            3,
            &encode_canonical(&bad).unwrap(),
            "contributions[1].dp.delta",
        );
        let mut bad = genesis("o");
        bad.witnesses.quorum = 1;
        reject(0, &encode_canonical(&bad).unwrap(), "witnesses.quorum");
        bad.witnesses.keys.push("not-a-key".into());
        reject(0, &encode_canonical(&bad).unwrap(), "witnesses.keys[0]");
    }
}
