//! Cross-record checks of a v1 ledger (one genesis record, entry i = round i): enrolled
//! contributors, update signatures over the v1 message, rewards against pools, chained model
//! digests, and epsilon recomputed from each contribution's recorded `dp` parameters.

use std::collections::BTreeMap;

use super::{EpsilonAccountant, Failure, RoundVsGenesis, Run, VerifyReport};
use crate::records::{
    self,
    v1::{DpRecord, FederationRecord, RoundRecord},
};

/// Public key, message and signature of one update.
type SignedMessage = (Vec<u8>, String, Vec<u8>);

pub(super) fn check_rounds(
    g: &FederationRecord,
    rounds: &[(u64, RoundRecord)],
    accountant: Option<&dyn EpsilonAccountant>,
    r: &mut VerifyReport,
) {
    let enrolled: BTreeMap<&str, &str> = g
        .participants
        .iter()
        .map(|p| (p.public_key.as_str(), p.name.as_str()))
        .collect();
    let before = r.failures.len();
    // Update signatures, in parallel.
    let jobs: Vec<(u64, usize, &records::v1::ContributionRecord)> = rounds
        .iter()
        .flat_map(|(i, rr)| {
            rr.contributions
                .iter()
                .enumerate()
                .map(move |(j, c)| (*i, j, c))
        })
        .collect();
    let prepared: Vec<Option<SignedMessage>> = jobs
        .iter()
        .map(|(i, _, c)| {
            let pk = hex::decode(&c.participant).ok()?;
            let sig = crate::note::b64_decode(&c.signature)?;
            Some((
                pk,
                records::v1::update_signing_message(&g.federation, *i, &c.update_sha256),
                sig,
            ))
        })
        .collect();
    let items: Vec<(&[u8], &[u8], &[u8])> = prepared
        .iter()
        .map(|p| {
            p.as_ref()
                .map_or((&[][..], &[][..], &[][..]), |(pk, m, s)| {
                    (&pk[..], m.as_bytes(), &s[..])
                })
        })
        .collect();
    let verdicts = crate::keys::verify_ed25519_many(&items);
    let sig_failures: Vec<Failure> = jobs
        .iter()
        .zip(verdicts)
        .filter(|(_, ok)| !ok)
        .map(|((i, j, c), _)| Failure {
            file: format!("entries/{i}"),
            what: format!(
                "contributions[{j}].signature does not verify for {}",
                c.participant
            ),
        })
        .collect();
    let sig_ok = sig_failures.is_empty();
    r.failures.extend(sig_failures);
    if sig_ok {
        r.passed.push(format!(
            "signatures: {} participant update signatures verify",
            jobs.len()
        ));
    }
    let mut prev_after: Option<&str> = None;
    let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
    for (i, rr) in rounds {
        let file = format!("entries/{i}");
        for (j, c) in rr.contributions.iter().enumerate() {
            match enrolled.get(c.participant.as_str()) {
                None => r.fail(
                    &file,
                    format!("contributions[{j}].participant is not enrolled in the genesis record"),
                ),
                Some(name) if *name != c.name => r.fail(
                    &file,
                    format!(
                        "contributions[{j}].name {:?} differs from the enrolled name {name:?}",
                        c.name
                    ),
                ),
                Some(_) => {}
            }
            let prev = totals
                .insert(c.participant.as_str(), c.epsilon_total_micro)
                .unwrap_or(0);
            if c.epsilon_total_micro < prev {
                r.fail(
                    &file,
                    format!("contributions[{j}].epsilon_total_micro decreased from {prev}"),
                );
            }
        }
        for (j, d) in rr.declined.iter().enumerate() {
            if !enrolled.contains_key(d.participant.as_str()) {
                r.fail(&file, format!("declined[{j}].participant is not enrolled"));
            }
        }
        RoundVsGenesis {
            pool_per_round: g.reward.pool_per_round,
            params: g.model.params,
            validation: &g.validation.sha256,
        }
        .check(
            &file,
            rr.status,
            rr.reward_pool,
            rr.contributions
                .iter()
                .any(|c| super::may_be_paid(c.value_nano, &c.flags)),
            &rr.model,
            &rr.validation.sha256,
            &mut prev_after,
            r,
        );
    }
    if r.failures.len() == before {
        r.passed.push(format!("rounds: {} rounds, enrolled contributors, rewards sum to their pools, model digests chained", rounds.len()));
    }
    match accountant {
        None => r.skipped.push("epsilon: no accountant plugged in; epsilon figures were not recomputed from dp parameters".into()),
        Some(acc) => check_epsilon(acc, rounds, r),
    }
}

/// The runs and common accountant and delta of a v1 participant's recorded `dp` history;
/// contributions trained without DP noise (`none`, or no steps) spend nothing.
fn runs_of(history: &[DpRecord]) -> Result<Option<(String, f64, Vec<Run>)>, String> {
    let number = |field: &str, s: &str| {
        s.parse::<f64>()
            .map_err(|e| format!("dp.{field} {s:?} is not a number: {e}"))
    };
    let mut runs = Vec::new();
    let mut kind: Option<&str> = None;
    let mut delta: Option<f64> = None;
    for d in history {
        if d.accountant == "none" || d.steps == 0 {
            continue;
        }
        if kind.is_some_and(|k| k != d.accountant) {
            return Err("dp.accountant changes between rounds".into());
        }
        kind = Some(&d.accountant);
        let dl = number("delta", &d.delta)?;
        if delta.is_some_and(|p| p != dl) {
            return Err("dp.delta changes between rounds".into());
        }
        delta = Some(dl);
        runs.push(Run {
            noise_multiplier: number("noise_multiplier", &d.noise_multiplier)?,
            sampling_rate: number("sampling_rate", &d.sampling_rate)?,
            steps: d.steps,
        });
    }
    Ok(match (kind, delta) {
        (Some(k), Some(d)) => Some((k.to_owned(), d, runs)),
        _ => None,
    })
}

fn cumulative(acc: &dyn EpsilonAccountant, history: &[DpRecord]) -> Result<f64, String> {
    match runs_of(history)? {
        Some((kind, delta, runs)) => acc.cumulative_epsilon(&kind, delta, &runs),
        None => Ok(0.0),
    }
}

fn check_epsilon(acc: &dyn EpsilonAccountant, rounds: &[(u64, RoundRecord)], r: &mut VerifyReport) {
    let before = r.failures.len();
    let mut history: BTreeMap<&str, (Vec<DpRecord>, f64)> = BTreeMap::new();
    let micro = |eps: f64| (eps * 1e6).ceil();
    for (i, rr) in rounds {
        for (j, c) in rr.contributions.iter().enumerate() {
            let (h, prev) = history.entry(c.participant.as_str()).or_default();
            h.push(c.dp.clone());
            match cumulative(acc, h) {
                Ok(eps) => {
                    let total = micro(eps);
                    let inc = micro(eps - *prev);
                    // One micro-unit of slack for floating-point rounding at the ceiling.
                    if (total - c.epsilon_total_micro as f64).abs() > 1.0 {
                        r.fail(format!("entries/{i}"), format!("contributions[{j}].epsilon_total_micro {} but the accountant gives {total}", c.epsilon_total_micro));
                    }
                    if (inc - c.epsilon_micro as f64).abs() > 1.0 {
                        r.fail(format!("entries/{i}"), format!("contributions[{j}].epsilon_micro {} but the accountant gives {inc}", c.epsilon_micro));
                    }
                    *prev = eps;
                }
                Err(e) => r.fail(
                    format!("entries/{i}"),
                    format!("contributions[{j}].dp: accountant refused: {e}"),
                ),
            }
        }
    }
    if r.failures.len() == before {
        r.passed
            .push("epsilon: every contribution's epsilon recomputed from its dp parameters".into());
    }
}
