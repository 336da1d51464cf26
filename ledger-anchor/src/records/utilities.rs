//! Validators' records: each validator's signed utility vector for a round
//! (`fedledger.utilities/v1`) and what the round's summary records of their consensus
//! ([`ValidatorsRecord`], in `valuation.validators`).
//!
//! # `fedledger.utilities/v1`
//!
//! A validator evaluates every coalition of the round's design (the valuation crate's
//! `consensus::design`: from the seed announced in the task header and the number of
//! contributors, sorted by key) on its own holdout and signs the whole vector. The vector is
//! written in `parts` consecutive entries of at most [`MAX_UTILITIES_PER_PART`] utilities,
//! among the round's entries (after its contributions and declines, before its summary):
//!
//! | field | type | meaning |
//! | --- | --- | --- |
//! | `v`, `type`, `federation` | 2, `"fedledger.utilities/v1"`, origin | |
//! | `round` | integer >= 1 | the round |
//! | `validator`, `name` | 64 hex Ed25519 key, display name | an enrolled validator |
//! | `coalitions_sha256` | 64 hex | SHA-256 of the design's canonical coalition list |
//! | `count` | integer >= 1 | the whole vector's length (one utility per coalition) |
//! | `utilities_sha256` | 64 hex | [`utility_vector_sha256`] of the whole vector |
//! | `part`, `parts` | 1 <= part <= parts | this entry's place |
//! | `first` | integer | index in the vector of this part's first utility |
//! | `utilities` | integers | this part's utilities, nano-units (`round(u * 1e9)`, may be negative) |
//! | `signature` | base64 Ed25519 | over [`utilities_signing_message`], the same in every part |
//!
//! The signature covers the digests, not the parts, so a vector split differently is the same
//! claim; `verify` reassembles the parts, recomputes both digests and checks the signature.

use serde::{Deserialize, Serialize};

use super::{
    Ctx, RECORD_VERSION, sha256_hex,
    v2::{header, name},
};
use crate::error::LedgerError;

/// The record type of a validator's utility vector (a part of it).
pub const UTILITIES_TYPE: &str = "fedledger.utilities/v1";

/// Utilities per entry: 2,048 integers of at most 20 characters stay well inside the entry
/// size limit with the rest of the record.
pub const MAX_UTILITIES_PER_PART: usize = 2048;

/// Validators' lines per round summary: one per recorded vector.
pub const MAX_VALIDATORS: usize = 256;

/// Coalitions a design may list (an exact design of 12 players lists 4,096; 10,000 sampled
/// permutations of 100 players at most 1,010,000).
pub const MAX_COALITIONS: u64 = 1 << 21;

/// The message a validator signs for its vector:
/// `"fedledger/utilities/v1\n<federation>\n<round>\n<coalitions_sha256>\n<utilities_sha256>\n"`.
pub fn utilities_signing_message(
    federation: &str,
    round: u64,
    coalitions_sha256: &str,
    utilities_sha256: &str,
) -> String {
    format!(
        "fedledger/utilities/v1\n{federation}\n{round}\n{coalitions_sha256}\n{utilities_sha256}\n"
    )
}

/// SHA-256 (lowercase hex) of a utility vector: each utility as 8 bytes, big-endian two's
/// complement, in coalition order.
pub fn utility_vector_sha256(utilities: &[i64]) -> String {
    let bytes: Vec<u8> = utilities.iter().flat_map(|u| u.to_be_bytes()).collect();
    sha256_hex(&bytes)
}

/// (A part of) a validator's signed utility vector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UtilitiesEntry {
    /// Always [`RECORD_VERSION`].
    pub v: u64,
    /// Always [`UTILITIES_TYPE`].
    #[serde(rename = "type")]
    pub record_type: String,
    /// The log's origin.
    pub federation: String,
    /// The round.
    pub round: u64,
    /// The validator's Ed25519 key, 64 lowercase hex.
    pub validator: String,
    /// Its display name.
    pub name: String,
    /// SHA-256 of the design's canonical coalition list.
    pub coalitions_sha256: String,
    /// The whole vector's length.
    pub count: u64,
    /// [`utility_vector_sha256`] of the whole vector.
    pub utilities_sha256: String,
    /// This entry's part, from 1.
    pub part: u64,
    /// How many parts the vector has.
    pub parts: u64,
    /// Index in the vector of this part's first utility.
    pub first: u64,
    /// This part's utilities, nano-units.
    pub utilities: Vec<i64>,
    /// Base64 Ed25519 signature over [`utilities_signing_message`].
    pub signature: String,
}

/// What a validator claims for a round, before it is split into entries.
#[derive(Debug, Clone, Copy)]
pub struct UtilitiesClaim<'a> {
    /// The log's origin.
    pub federation: &'a str,
    /// The round.
    pub round: u64,
    /// The validator's key, 64 lowercase hex.
    pub validator: &'a str,
    /// Its display name.
    pub name: &'a str,
    /// SHA-256 of the design's canonical coalition list.
    pub coalitions_sha256: &'a str,
    /// The whole vector.
    pub utilities: &'a [i64],
    /// Base64 signature over [`utilities_signing_message`].
    pub signature: &'a str,
}

impl UtilitiesClaim<'_> {
    /// The entries that record the claim, in order (one part per [`MAX_UTILITIES_PER_PART`]
    /// utilities; an empty vector is still one part, which validation refuses).
    pub fn entries(&self) -> Vec<UtilitiesEntry> {
        let digest = utility_vector_sha256(self.utilities);
        let chunks: Vec<&[i64]> = if self.utilities.is_empty() {
            vec![&[]]
        } else {
            self.utilities.chunks(MAX_UTILITIES_PER_PART).collect()
        };
        let parts = chunks.len() as u64;
        chunks
            .into_iter()
            .enumerate()
            .map(|(k, chunk)| UtilitiesEntry {
                v: RECORD_VERSION,
                record_type: UTILITIES_TYPE.into(),
                federation: self.federation.into(),
                round: self.round,
                validator: self.validator.into(),
                name: self.name.into(),
                coalitions_sha256: self.coalitions_sha256.into(),
                count: self.utilities.len() as u64,
                utilities_sha256: digest.clone(),
                part: k as u64 + 1,
                parts,
                first: (k * MAX_UTILITIES_PER_PART) as u64,
                utilities: chunk.to_vec(),
                signature: self.signature.into(),
            })
            .collect()
    }
}

impl UtilitiesEntry {
    /// The message the validator signed.
    pub fn signing_message(&self) -> String {
        utilities_signing_message(
            &self.federation,
            self.round,
            &self.coalitions_sha256,
            &self.utilities_sha256,
        )
    }

    pub(crate) fn check(&self, cx: &Ctx) -> Result<(), LedgerError> {
        header(cx, UTILITIES_TYPE, self.v, &self.record_type)?;
        if self.round == 0 {
            return Err(cx.err("round", "rounds start at 1"));
        }
        cx.hex32("validator", &self.validator)?;
        name(cx, "name", &self.name)?;
        cx.hex32("coalitions_sha256", &self.coalitions_sha256)?;
        cx.hex32("utilities_sha256", &self.utilities_sha256)?;
        if self.count == 0 || self.count > MAX_COALITIONS {
            return Err(cx.err(
                "count",
                format!("a vector holds 1 (the empty coalition) to {MAX_COALITIONS} utilities"),
            ));
        }
        if self.parts == 0 || self.part == 0 || self.part > self.parts {
            return Err(cx.err("part", "must be 1 <= part <= parts"));
        }
        if self.utilities.is_empty() || self.utilities.len() > MAX_UTILITIES_PER_PART {
            return Err(cx.err(
                "utilities",
                format!("1 to {MAX_UTILITIES_PER_PART} utilities per part"),
            ));
        }
        // Parts are full but for the last, so a part's place fixes where it starts.
        let expected_first = (self.part - 1).saturating_mul(MAX_UTILITIES_PER_PART as u64);
        if self.first != expected_first {
            return Err(cx.err(
                "first",
                format!("part {} starts at {expected_first}", self.part),
            ));
        }
        let end = self.first + self.utilities.len() as u64;
        let last = self.part == self.parts;
        if end > self.count
            || (last && end != self.count)
            || (!last && self.utilities.len() != MAX_UTILITIES_PER_PART)
        {
            return Err(cx.err(
                "utilities",
                format!(
                    "part {} of {} holds {} utilities from {}, which does not fit a vector of {}",
                    self.part,
                    self.parts,
                    self.utilities.len(),
                    self.first,
                    self.count
                ),
            ));
        }
        let needed = self.count.div_ceil(MAX_UTILITIES_PER_PART as u64);
        if self.parts != needed {
            return Err(cx.err(
                "parts",
                format!("a vector of {} utilities has {needed} parts", self.count),
            ));
        }
        cx.nonempty("signature", &self.signature)?;
        Ok(())
    }
}

/// What a round's summary records of its validators (`valuation.validators`): the design they
/// evaluated, the consensus rule's parameters, and per recorded vector its distance from
/// consensus and its reward. With no vector in time (`fallback` set, `lines` empty) the round
/// was valued on the coordinator's validation file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidatorsRecord {
    /// The design's seed, announced in the round's task header before any upload.
    pub seed: u64,
    /// Exact designs up to this many contributors.
    pub exact_max: u64,
    /// Sampled permutations above `exact_max`.
    pub permutations: u64,
    /// Coalitions in the design (every vector's length).
    pub coalitions: u64,
    /// SHA-256 of the design's canonical coalition list.
    pub coalitions_sha256: String,
    /// Validators further than this from consensus (thousandths, relative L2 of the values)
    /// are flagged and share nothing of the validators' pool.
    pub max_distance_milli: u64,
    /// The quality rule's `k`: an update is left out of the aggregate when its contributor's
    /// consensus value summed over the rounds judged so far (this one included) is negative
    /// and (k >= 1) its summed value is negative in at least k validators' own games too.
    /// Absent: every update is aggregated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality_k: Option<u64>,
    /// Units offered to the validators this round: paid in full among those near consensus
    /// (the lines' rewards sum to it), or not at all when none is (every reward 0).
    pub pool: u64,
    /// Why the round fell back to the coordinator's validation file (no vector in time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// One line per recorded vector, sorted by key.
    pub lines: Vec<ValidatorLine>,
}

/// A validator's outcome in a round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidatorLine {
    /// The validator's key, 64 lowercase hex.
    pub validator: String,
    /// Relative L2 distance of its own game's values from the consensus values, thousandths.
    pub distance_milli: u64,
    /// Its share of the validators' pool.
    pub reward: u64,
}

/// The flag of a contribution the quality rule left out of the aggregate.
pub const FLAG_EXCLUDED_BY_QUALITY: &str = "excluded-by-quality";

impl ValidatorsRecord {
    pub(crate) fn check(&self, cx: &Ctx, field: &str) -> Result<(), LedgerError> {
        cx.hex32(
            &format!("{field}.coalitions_sha256"),
            &self.coalitions_sha256,
        )?;
        if self.coalitions == 0 || self.coalitions > MAX_COALITIONS {
            return Err(cx.err(
                format!("{field}.coalitions"),
                format!("a design lists 1 (the empty coalition) to {MAX_COALITIONS} coalitions"),
            ));
        }
        match (&self.fallback, self.lines.is_empty()) {
            (Some(_), false) => {
                return Err(cx.err(
                    format!("{field}.fallback"),
                    "a round that fell back records no validator lines",
                ));
            }
            (None, true) => {
                return Err(cx.err(
                    format!("{field}.lines"),
                    "without a fallback, at least one validator's vector",
                ));
            }
            (Some(why), true) => cx.nonempty(&format!("{field}.fallback"), why)?,
            (None, false) => {}
        }
        if self.lines.len() > MAX_VALIDATORS {
            return Err(cx.err(
                format!("{field}.lines"),
                format!("at most {MAX_VALIDATORS} validators"),
            ));
        }
        let mut paid: u128 = 0;
        for (j, l) in self.lines.iter().enumerate() {
            let f = format!("{field}.lines[{j}].validator");
            cx.hex32(&f, &l.validator)?;
            if j > 0 && self.lines[j - 1].validator >= l.validator {
                return Err(cx.err(f, "lines must be sorted by key, without duplicates"));
            }
            paid += u128::from(l.reward);
        }
        if paid != 0 && paid != u128::from(self.pool) {
            return Err(cx.err(
                format!("{field}.pool"),
                format!(
                    "the lines' rewards sum to {paid}, neither the pool {} nor 0",
                    self.pool
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{Record, encode_canonical, validate_entry};

    fn claim(utilities: &[i64]) -> Vec<UtilitiesEntry> {
        UtilitiesClaim {
            federation: "fed",
            round: 2,
            validator: &"ab".repeat(32),
            name: "lab",
            coalitions_sha256: &"cd".repeat(32),
            utilities,
            signature: "c2ln",
        }
        .entries()
    }

    #[test]
    fn the_signing_message_and_the_vector_digest_are_as_documented() {
        assert_eq!(
            utilities_signing_message("fed", 3, "aa", "bb"),
            "fedledger/utilities/v1\nfed\n3\naa\nbb\n"
        );
        // 1 and -1 as 8-byte big-endian two's complement.
        let mut bytes = 1i64.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0xff; 8]);
        assert_eq!(utility_vector_sha256(&[1, -1]), sha256_hex(&bytes));
        assert_ne!(
            utility_vector_sha256(&[1, -1]),
            utility_vector_sha256(&[-1, 1])
        );
    }

    #[test]
    fn a_long_vector_is_split_into_parts_that_validate_and_reassemble() {
        let v: Vec<i64> = (0..(2 * MAX_UTILITIES_PER_PART as i64 + 5))
            .map(|i| i * 1_000 - 7_000_000)
            .collect();
        let parts = claim(&v);
        assert_eq!(parts.len(), 3);
        let mut back = Vec::new();
        for (k, p) in parts.iter().enumerate() {
            let bytes = encode_canonical(p).unwrap();
            assert!(bytes.len() <= crate::records::MAX_ENTRY_BYTES);
            match crate::records::validated_fast("fed", 10 + k as u64, &bytes) {
                Record::Utilities(u) => back.extend_from_slice(&u.utilities),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(back, v);
        assert!(
            parts
                .iter()
                .all(|p| p.utilities_sha256 == utility_vector_sha256(&v))
        );
    }

    #[test]
    fn malformed_parts_are_refused_naming_the_field() {
        let v: Vec<i64> = (0..(MAX_UTILITIES_PER_PART as i64 + 1)).collect();
        let good = claim(&v);
        let refuse = |e: &UtilitiesEntry, field: &str| {
            let err = validate_entry(5, "fed", &encode_canonical(e).unwrap()).unwrap_err();
            assert!(err.to_string().contains(field), "{field}: {err}");
        };
        let mut e = good[0].clone();
        e.first = 1;
        refuse(&e, "first");
        let mut e = good[1].clone();
        e.utilities.push(9);
        refuse(&e, "utilities");
        let mut e = good[0].clone();
        e.parts = 3;
        refuse(&e, "parts");
        let mut e = good[0].clone();
        e.part = 0;
        refuse(&e, "part");
        let mut e = good[0].clone();
        e.validator = "AB".repeat(32);
        refuse(&e, "validator");
        let mut e = good[0].clone();
        e.count = 0;
        refuse(&e, "count");
        let mut e = good[1].clone();
        e.signature.clear();
        refuse(&e, "signature");
    }
}
