//! `verify` on a round valued by validators: it reassembles each validator's signed utility
//! vector from its parts and recomputes the consensus values, distances, validators' rewards and
//! quality verdicts with the valuation crate (the command-line package's rule), failing where a
//! record does not follow from the vectors or a vector is not what its validator signed.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::{Federation, ORIGIN, key};
use fedledger_ledger::keys;
use fedledger_ledger::records::*;
use fedledger_ledger::verify::{VerifyReport, verify_entries};
use fedledger_valuation::consensus::{RoundParams, round_consensus};
use ring::signature::Ed25519KeyPair;

/// Twelve contributors (an exact design of 4,096 coalitions, two parts per vector).
const CONTRIBUTORS: usize = 12;
const VALIDATOR_POOL: u64 = 90_001;

fn validators() -> Vec<Ed25519KeyPair> {
    let mut v: Vec<Ed25519KeyPair> = (0..3).map(|i| key(150 + i)).collect();
    v.sort_by_key(keys::public_key_hex);
    v
}

/// The round's pieces before they are encoded, so a test can change any of them.
struct Round {
    contributions: Vec<ContributionEntry>,
    /// Per validator (ascending key), the parts of its vector.
    vectors: Vec<Vec<UtilitiesEntry>>,
    summary: RoundSummary,
}

/// Validator `v`'s utility of a coalition (bit mask of sorted contributors): contributor `i`
/// adds `(i + 1)` thousandths, on a holdout-level offset per validator, with a small
/// per-validator interaction; validator `inverted` reports the negation.
fn utility(v: usize, mask: u64, inverted: Option<usize>) -> i64 {
    let mut u: i64 = -600_000_000 - 7_000_000 * v as i64;
    for i in 0..CONTRIBUTORS {
        if mask & (1 << i) != 0 {
            u += 1_000_000 * (i as i64 + 1);
        }
    }
    if mask & 0b11 == 0b11 {
        u += 100_000 * (v as i64 + 1);
    }
    if inverted == Some(v) { -u } else { u }
}

fn signed_vector(
    k: &Ed25519KeyPair,
    name: &str,
    coalitions_sha256: &str,
    u: &[i64],
) -> Vec<UtilitiesEntry> {
    let validator = keys::public_key_hex(k);
    let message =
        utilities_signing_message(ORIGIN, 1, coalitions_sha256, &utility_vector_sha256(u));
    let signature = fedledger_ledger::note::b64_encode(k.sign(message.as_bytes()).as_ref());
    UtilitiesClaim {
        federation: ORIGIN,
        round: 1,
        validator: &validator,
        name,
        coalitions_sha256,
        utilities: u,
        signature: &signature,
    }
    .entries()
}

/// The genesis (contributors, then three validators enrolled) and round 1 valued by the
/// validators' consensus, as the coordinator records it; validator 1 (in key order) reports
/// inverted utilities.
fn federation() -> (Vec<Vec<u8>>, Round) {
    let fed = Federation::new(CONTRIBUTORS, 0);
    let vals = validators();
    let genesis = fed.genesis_with_validators(&vals);
    let first = genesis.len() as u64;
    let batch = fed.round(1, first);
    let (summary, contributions) = batch.split_last().unwrap();
    let mut contributions: Vec<ContributionEntry> = contributions
        .iter()
        .map(|e| serde_json::from_slice(e).unwrap())
        .collect();
    contributions.sort_by(|a, b| a.participant.cmp(&b.participant));
    let summary: RoundSummary = serde_json::from_slice(summary).unwrap();
    let params = RoundParams {
        seed: 77,
        players: CONTRIBUTORS,
        exact_max: 12,
        permutations: 0,
        pool: VALIDATOR_POOL,
        max_distance_milli: 500,
        quality_k: Some(2),
    };
    let keys_hex: Vec<String> = vals.iter().map(keys::public_key_hex).collect();
    let key_refs: Vec<&str> = keys_hex.iter().map(String::as_str).collect();
    let design = fedledger_valuation::consensus::design(77, CONTRIBUTORS, 12, 0).unwrap();
    let raw: Vec<Vec<i64>> = (0..vals.len())
        .map(|v| {
            design
                .coalitions
                .iter()
                .map(|c| utility(v, c.bits(), Some(1)))
                .collect()
        })
        .collect();
    let refs: Vec<&[i64]> = raw.iter().map(Vec::as_slice).collect();
    let c = round_consensus(&params, &key_refs, &refs).unwrap();
    let coalitions_sha256 = sha256_hex(&design.canonical());
    for (entry, value) in contributions.iter_mut().zip(&c.values_nano) {
        entry.value_nano = *value;
    }
    let vectors: Vec<Vec<UtilitiesEntry>> = vals
        .iter()
        .zip(&raw)
        .enumerate()
        .map(|(j, (k, u))| signed_vector(k, &format!("lab-{j}"), &coalitions_sha256, u))
        .collect();
    let mut summary = summary;
    summary.valuation.validators = Some(ValidatorsRecord {
        seed: 77,
        exact_max: 12,
        permutations: 0,
        coalitions: design.coalitions.len() as u64,
        coalitions_sha256,
        max_distance_milli: 500,
        quality_k: Some(2),
        pool: VALIDATOR_POOL,
        fallback: None,
        lines: key_refs
            .iter()
            .zip(c.distances_milli.iter().zip(&c.rewards))
            .map(|(k, (d, r))| ValidatorLine {
                validator: (*k).into(),
                distance_milli: *d,
                reward: *r,
            })
            .collect(),
    });
    (
        genesis,
        Round {
            contributions,
            vectors,
            summary,
        },
    )
}

fn encode(genesis: &[Vec<u8>], mut round: Round) -> Vec<Vec<u8>> {
    let mut out = genesis.to_vec();
    let first = out.len() as u64;
    let mut batch: Vec<Vec<u8>> = round
        .contributions
        .iter()
        .map(|c| encode_canonical(c).unwrap())
        .collect();
    for parts in &round.vectors {
        batch.extend(parts.iter().map(|p| encode_canonical(p).unwrap()));
    }
    round.summary.entries = EntryRange {
        first,
        count: batch.len() as u64,
    };
    batch.push(encode_canonical(&round.summary).unwrap());
    out.extend(batch);
    out
}

fn verify(entries: &[Vec<u8>]) -> VerifyReport {
    verify_entries(
        ORIGIN,
        entries,
        None,
        Some(&fedledger_ledger_cli::ValuationRewards),
    )
}

fn fails_with(round: Round, genesis: &[Vec<u8>], what: &str) {
    let r = verify(&encode(genesis, round));
    assert!(
        r.failures.iter().any(|f| f.what.contains(what)),
        "expected a failure containing {what:?}:\n{r}"
    );
}

#[test]
fn an_honest_round_with_validators_verifies_and_its_consensus_is_recomputed() {
    let (genesis, round) = federation();
    let v = round.summary.valuation.validators.clone().unwrap();
    assert_eq!(
        round.vectors[0].len(),
        2,
        "4,096 utilities come in two parts"
    );
    // The inverted validator is far from consensus and unpaid; the honest ones share the pool.
    assert!(v.lines[1].distance_milli > 1500, "{:?}", v.lines);
    assert!(v.lines[0].distance_milli < 200 && v.lines[2].distance_milli < 200);
    assert_eq!(v.lines[1].reward, 0);
    assert_eq!(v.lines[0].reward + v.lines[2].reward, VALIDATOR_POOL);
    let r = verify(&encode(&genesis, round));
    assert!(r.ok(), "{r}");
    assert!(
        r.passed
            .iter()
            .any(|p| p.contains("validators: 1 round(s)") && p.contains("recomputed in 1")),
        "{r}"
    );
    // Without the valuation crate's rule the vectors are still checked; the consensus is not.
    let (genesis, round) = federation();
    let plain = verify_entries(ORIGIN, &encode(&genesis, round), None, None);
    assert!(plain.ok(), "{plain}");
    assert!(
        plain
            .skipped
            .iter()
            .any(|s| s.contains("validators' consensus")),
        "{plain}"
    );
}

#[test]
fn a_value_that_does_not_follow_from_the_vectors_fails() {
    let (genesis, mut round) = federation();
    round.contributions[3].value_nano += 1;
    fails_with(round, &genesis, "but the validators' consensus gives");
}

#[test]
fn a_changed_utility_fails_its_digest_and_a_re_hashed_one_its_signature() {
    let (genesis, mut round) = federation();
    round.vectors[0][1].utilities[5] += 1;
    fails_with(
        round,
        &genesis,
        "do not hash to the utilities_sha256 it signed",
    );

    let (genesis, mut round) = federation();
    let mut whole: Vec<i64> = round.vectors[0]
        .iter()
        .flat_map(|p| p.utilities.clone())
        .collect();
    whole[5] += 1;
    let digest = utility_vector_sha256(&whole);
    for p in &mut round.vectors[0] {
        p.utilities_sha256 = digest.clone();
    }
    round.vectors[0][0].utilities[5] += 1;
    fails_with(
        round,
        &genesis,
        "the utility vector's signature does not verify",
    );
}

#[test]
fn a_reward_or_distance_that_does_not_follow_fails() {
    let (genesis, mut round) = federation();
    let v = round.summary.valuation.validators.as_mut().unwrap();
    // Same sum, another split: the pool check passes, the recomputation does not.
    v.lines[0].reward -= 1;
    v.lines[2].reward += 1;
    fails_with(round, &genesis, "but its vector gives distance");

    let (genesis, mut round) = federation();
    let v = round.summary.valuation.validators.as_mut().unwrap();
    v.lines[1].distance_milli = 100;
    fails_with(round, &genesis, "but its vector gives distance");
}

#[test]
fn the_quality_rule_verdicts_are_recomputed() {
    let (genesis, mut round) = federation();
    round.contributions[0]
        .flags
        .push(FLAG_EXCLUDED_BY_QUALITY.into());
    fails_with(round, &genesis, "the quality rule keeps");
}

#[test]
fn a_vector_by_a_contributor_a_missing_part_or_another_design_fails() {
    // Signed by a contributor's key (enrolled, but not as a validator).
    let (genesis, mut round) = federation();
    let fed = Federation::new(CONTRIBUTORS, 0);
    let (name, k) = &fed.participants[0];
    let u: Vec<i64> = round.vectors[0]
        .iter()
        .flat_map(|p| p.utilities.clone())
        .collect();
    let sha = round.vectors[0][0].coalitions_sha256.clone();
    round.vectors[0] = signed_vector(k, name, &sha, &u);
    fails_with(round, &genesis, "not a validator");

    let (genesis, mut round) = federation();
    round.vectors[2].pop();
    fails_with(round, &genesis, "has 1 of its 2 parts");

    // Another design than the one recorded: its parameters say sampled permutations, so the
    // list of 4,096 coalitions the vectors and the record name is not the design's.
    let (genesis, mut round) = federation();
    let v = round.summary.valuation.validators.as_mut().unwrap();
    v.exact_max = 11;
    v.permutations = 10;
    fails_with(round, &genesis, "the consensus cannot be recomputed");
}
