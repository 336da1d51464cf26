//! `verify` against governance: it passes on an honest ledger with several governance entries
//! between rounds, and fails where a round used a contributor before its enrolment, where a
//! round's pool differs from the one in force, and where a governance entry lacks its quorum.

mod common;

use common::*;
use fedledger_ledger::keys;
use fedledger_ledger::records::*;
use fedledger_ledger::verify::{VerifyReport, verify_entries};
use ring::signature::Ed25519KeyPair;

fn governors() -> Vec<Ed25519KeyPair> {
    (0..3).map(|i| key(200 + i)).collect()
}

/// What a test varies about the governance of a three-round ledger whose genesis enrols two
/// hospitals and whose first governance entry enrols the third.
struct Plan {
    /// `from_round` of the enrolment.
    enrol_from: u64,
    /// Governors signing the enrolment.
    enrol_signers: usize,
    /// A pool change from round 2 (the rounds keep paying the genesis pool).
    pool_from_2: Option<u64>,
    /// The utility governed from round 3 (the rounds record neg_log_loss).
    utility_from_3: &'static str,
    /// Validators' rules governed from round 3 (the rounds record no validators).
    validators_from_3: bool,
}

const HONEST: Plan = Plan {
    enrol_from: 1,
    enrol_signers: 2,
    pool_from_2: None,
    utility_from_3: "neg_log_loss",
    validators_from_3: false,
};

/// Entries: genesis (governors, k = 2), the enrolment, round 1, two more governance entries,
/// rounds 2 and 3; each summary records the digest of the rules the governance entries put in
/// force for it. Returns the entries and the enrolment's index.
fn ledger(plan: &Plan) -> (Vec<Vec<u8>>, u64) {
    let fed = Federation::new(3, 0);
    let govs = governors();
    let (mut genesis, mut g) = governed_genesis(&fed, &govs, 2);
    g.enrolments = 2;
    genesis[0] = encode_canonical(&g).unwrap();
    genesis.truncate(3);
    let mut gov = governance_of(&genesis, &g);
    let mut entries = genesis;

    let propose = |entries: &mut Vec<Vec<u8>>,
                   gov: &mut Governance,
                   from_round: u64,
                   signers: usize,
                   changes: Vec<Change>| {
        let signers: Vec<&Ed25519KeyPair> = govs[..signers].iter().collect();
        let (bytes, e) = governance_entry(gov.head(), from_round, changes, &signers);
        // An under-signed entry is written anyway (a lying coordinator); the verifier's
        // reading of the rules skips it, as verify does.
        let _ = gov.admit(entries.len() as u64, &bytes, &e);
        entries.push(bytes);
    };
    let (newcomer_name, newcomer) = &fed.participants[2];
    let enrol_at = entries.len() as u64;
    propose(
        &mut entries,
        &mut gov,
        plan.enrol_from,
        plan.enrol_signers,
        vec![Change::Enrol {
            participant: keys::public_key_hex(newcomer),
            name: newcomer_name.clone(),
            role: ROLE_CONTRIBUTOR.into(),
        }],
    );
    let round = |entries: &mut Vec<Vec<u8>>, gov: &Governance, n: u64| {
        let batch = governed_round(&fed, n, entries.len() as u64, gov);
        entries.extend(batch);
    };
    round(&mut entries, &gov, 1);
    let mut changes = vec![Change::Training {
        local_epochs: 2,
        batch_size: 16,
        learning_rate: "0.02".into(),
    }];
    if let Some(pool) = plan.pool_from_2 {
        changes.push(Change::RewardPool {
            pool_per_round: pool,
        });
    }
    propose(&mut entries, &mut gov, 2, 3, changes);
    propose(
        &mut entries,
        &mut gov,
        3,
        2,
        vec![
            Change::Estimator {
                estimator: "exact".into(),
            },
            Change::Utility {
                utility: plan.utility_from_3.into(),
            },
        ]
        .into_iter()
        .chain(plan.validators_from_3.then_some(Change::Validators {
            rules: ValidatorsRules {
                deadline_secs: 60,
                quorum: 1,
                exact_max: 8,
                permutations: 20,
                pool_per_round: 0,
                max_distance_milli: 1000,
                quality_k: None,
            },
        }))
        .collect(),
    );
    round(&mut entries, &gov, 2);
    round(&mut entries, &gov, 3);
    (entries, enrol_at)
}

fn verify(entries: &[Vec<u8>]) -> VerifyReport {
    verify_entries(ORIGIN, entries, None, None)
}

fn fails_with(r: &VerifyReport, what: &str) -> bool {
    r.failures.iter().any(|f| f.what.contains(what))
}

#[test]
fn honest_ledger_with_several_governance_entries_between_rounds_passes() {
    let (entries, _) = ledger(&HONEST);
    let r = verify(&entries);
    assert!(r.ok(), "{:?}", r.failures);
    assert!(
        r.passed.iter().any(|p| p.starts_with("governance: 3")),
        "{:?}",
        r.passed
    );
}

#[test]
fn a_round_that_used_a_contributor_before_its_enrolment_fails() {
    let (entries, _) = ledger(&Plan {
        enrol_from: 2,
        ..HONEST
    });
    let r = verify(&entries);
    assert!(
        fails_with(&r, "is not enrolled in round 1"),
        "{:?}",
        r.failures
    );
}

#[test]
fn a_round_whose_pool_differs_from_the_one_in_force_fails() {
    let (entries, _) = ledger(&Plan {
        pool_from_2: Some(5),
        ..HONEST
    });
    let r = verify(&entries);
    assert!(fails_with(&r, "(the pool in force)"), "{:?}", r.failures);
    // Round 1 ran before the change and pays the genesis pool: only rounds 2 and 3 fail.
    let pool_failures = r
        .failures
        .iter()
        .filter(|f| f.what.contains("(the pool in force)"))
        .count();
    assert_eq!(pool_failures, 2, "{:?}", r.failures);
}

#[test]
fn a_governance_entry_without_its_quorum_fails() {
    let (entries, at) = ledger(&Plan {
        enrol_signers: 1,
        ..HONEST
    });
    let r = verify(&entries);
    assert!(
        r.failures.iter().any(|f| f.file == format!("entries/{at}")
            && f.what.contains("1 valid governor signature(s), 2 needed")),
        "{:?}",
        r.failures
    );
}

#[test]
fn a_round_recording_other_rules_fails() {
    let (mut entries, _) = ledger(&HONEST);
    // Round 3's summary is the last entry: claim it ran under round 1's rules.
    let last = entries.len() - 1;
    let mut s: RoundSummary = serde_json::from_slice(&entries[last]).unwrap();
    s.rules_sha256 = Some("00".repeat(32));
    entries[last] = encode_canonical(&s).unwrap();
    let r = verify(&entries);
    assert!(
        fails_with(&r, "but the rules in force for it are"),
        "{:?}",
        r.failures
    );
}

#[test]
fn a_round_scored_by_another_utility_than_the_one_in_force_fails() {
    let (entries, _) = ledger(&Plan {
        utility_from_3: "accuracy",
        ..HONEST
    });
    let r = verify(&entries);
    assert!(
        fails_with(&r, "not the utility in force \"accuracy\""),
        "{:?}",
        r.failures
    );
}

#[test]
fn a_reward_rule_change_anchored_after_the_round_that_ends_the_running_period_fails() {
    // Settled in periods of 2 rounds; after round 1's summary, a change of the rule from round
    // 2 would end the running period at round 1, which is already recorded.
    let mut fed = Federation::new(2, 0);
    fed.reward = RewardRecord {
        rule: REWARD_RULE_SETTLED_CUMULATIVE.into(),
        pool_per_round: 1_000_000,
        period_rounds: Some(2),
        z_milli: Some(2000),
    };
    let govs = governors();
    let (genesis, g) = governed_genesis(&fed, &govs, 2);
    let gov = governance_of(&genesis, &g);
    let mut entries = genesis;
    let batch = governed_round(&fed, 1, entries.len() as u64, &gov);
    entries.extend(batch);
    let change = vec![Change::RewardRule {
        rule: REWARD_RULE_SETTLED_IMPACT.into(),
        period_rounds: 3,
        z_milli: 2000,
    }];
    let (bytes, _) = governance_entry(gov.head(), 2, change, &[&govs[0], &govs[1]]);
    let at = entries.len();
    entries.push(bytes);
    let r = verify(&entries);
    assert!(
        r.failures.iter().any(|f| f.file == format!("entries/{at}")
            && f.what.contains("is already recorded: a change of the reward rule must be anchored before that round's summary")),
        "{:?}",
        r.failures
    );
}

#[test]
fn a_round_without_validators_under_governed_validators_rules_fails() {
    let (entries, _) = ledger(&Plan {
        validators_from_3: true,
        ..HONEST
    });
    let r = verify(&entries);
    assert!(
        fails_with(
            &r,
            "round 3 records no validators, but the rules in force for it have them"
        ),
        "{:?}",
        r.failures
    );
    assert!(
        !fails_with(&r, "round 2 records no validators"),
        "{:?}",
        r.failures
    );
}
