//! Cross-record checks of a v2 ledger: the genesis (federation entry plus its enrolments), then
//! rounds as batches of contribution and decline entries closed by a summary; signatures over
//! everything a hospital claimed; rewards, pools and model digests; and each hospital's
//! recorded cumulative epsilon against what this ledger's releases imply.

use std::collections::{BTreeMap, BTreeSet};

use super::{EpsilonAccountant, Failure, RoundVsGenesis, Run, VerifyReport};
use crate::records::{
    ContributionEntry, FederationEntry, PrivacyObject, ROLE_CONTRIBUTOR, Record, RoundStatus,
    micro_up,
};

struct Enrolled<'a> {
    name: &'a str,
    role: &'a str,
}

/// A signature to check: public key, message, signature, and where it is.
struct Signed {
    key: Vec<u8>,
    message: String,
    signature: Vec<u8>,
    file: String,
    what: String,
}

fn signed(key_hex: &str, message: String, sig_b64: &str, file: String, what: String) -> Signed {
    Signed {
        key: hex::decode(key_hex).unwrap_or_default(),
        message,
        signature: crate::note::b64_decode(sig_b64).unwrap_or_default(),
        file,
        what,
    }
}

pub(super) fn check(
    records: &[Option<Record>],
    accountant: Option<&dyn EpsilonAccountant>,
    r: &mut VerifyReport,
) {
    let Some(Some(Record::Federation(g))) = records.first() else {
        return;
    };
    let before = r.failures.len();
    let enrolled = genesis(g, records, r);
    let mut signatures = Vec::new();
    let mut releases: BTreeMap<&str, Vec<(u64, &ContributionEntry)>> = BTreeMap::new();
    let mut next_round = 1u64;
    let mut prev_after: Option<&str> = None;
    // The round being recorded: its entries so far (index, participant).
    let mut pending: Vec<(u64, &str)> = Vec::new();
    let mut paid = 0u64;
    let mut payable = false;
    let first_after_genesis = g.enrolments.saturating_add(1);
    for (i, rec) in records
        .iter()
        .enumerate()
        .skip(first_after_genesis as usize)
    {
        let i = i as u64;
        let file = format!("entries/{i}");
        let Some(rec) = rec else { continue };
        match rec {
            Record::Contribution(c) => {
                member(
                    &enrolled,
                    &file,
                    c.round,
                    next_round,
                    &c.participant,
                    &c.name,
                    &pending,
                    r,
                );
                pending.push((i, &c.participant));
                paid = paid.saturating_add(c.reward);
                // Copies are never paid; anyone else with a positive value may be.
                payable |= c.value_nano > 0 && !c.flags.iter().any(|f| f.starts_with("copy_of:"));
                signatures.push(signed(
                    &c.participant,
                    c.signing_message(),
                    &c.signature,
                    file.clone(),
                    format!("the contribution's signature does not verify for {} (examples, digest or privacy object changed?)", c.participant),
                ));
                releases.entry(&c.participant).or_default().push((i, c));
            }
            Record::Decline(d) => {
                member(
                    &enrolled,
                    &file,
                    d.round,
                    next_round,
                    &d.participant,
                    &d.name,
                    &pending,
                    r,
                );
                pending.push((i, &d.participant));
                signatures.push(signed(
                    &d.participant,
                    d.signing_message(),
                    &d.signature,
                    file.clone(),
                    format!(
                        "the decline's signature does not verify for {}",
                        d.participant
                    ),
                ));
            }
            Record::Round(s) => {
                if s.round != next_round {
                    r.fail(
                        &file,
                        format!("summary of round {} where round {next_round} comes next (rounds are contiguous)", s.round),
                    );
                }
                let first = pending.first().map_or(i, |(k, _)| *k);
                let contiguous = pending
                    .iter()
                    .enumerate()
                    .all(|(n, (k, _))| *k == first + n as u64);
                if !contiguous
                    || s.entries.first != first
                    || s.entries.count != pending.len() as u64
                {
                    r.fail(
                        &file,
                        format!(
                            "entries {}..+{} named by the summary are not the round's {} entries before it",
                            s.entries.first, s.entries.count, pending.len()
                        ),
                    );
                }
                match s.status {
                    RoundStatus::Completed if paid != s.reward_pool => r.fail(
                        &file,
                        format!(
                            "the round's rewards sum to {paid}, not its pool {}",
                            s.reward_pool
                        ),
                    ),
                    RoundStatus::Abandoned if paid != 0 => {
                        r.fail(&file, "an abandoned round paid rewards")
                    }
                    _ => {}
                }
                RoundVsGenesis {
                    pool_per_round: g.reward.pool_per_round,
                    params: g.model.params,
                    validation: &g.validation.sha256,
                }
                .check(
                    &file,
                    s.status,
                    s.reward_pool,
                    payable,
                    &s.model,
                    &s.validation.sha256,
                    &mut prev_after,
                    r,
                );
                next_round = s.round.saturating_add(1);
                pending.clear();
                paid = 0;
                payable = false;
            }
            Record::Enrolment(_) => r.fail(
                &file,
                "an enrolment outside the genesis (keys are enrolled at genesis in this version)",
            ),
            other => r.fail(
                &file,
                format!(
                    "a format v{} entry in a v2 ledger (formats are never mixed)",
                    other.version()
                ),
            ),
        }
    }
    if let Some((k, _)) = pending.first() {
        r.fail(
            format!("entries/{k}"),
            "entries after the last round summary belong to no recorded round",
        );
    }
    let rounds = next_round - 1;
    if r.failures.len() == before {
        r.passed.push(format!(
            "rounds: {rounds} rounds, contiguous; every contributor and decliner enrolled; each round's entries named by its summary; rewards sum to their pools; model digests chained"
        ));
    }
    check_signatures(&signatures, r);
    check_epsilon(&releases, accountant, r);
}

/// The genesis: entries 1..=enrolments are enrolments, with unique keys and names.
fn genesis<'a>(
    g: &FederationEntry,
    records: &'a [Option<Record>],
    r: &mut VerifyReport,
) -> BTreeMap<&'a str, Enrolled<'a>> {
    let mut enrolled = BTreeMap::new();
    let mut names = BTreeSet::new();
    if (records.len() as u64) <= g.enrolments {
        r.fail(
            "entries/0",
            format!(
                "the genesis names {} enrolments but the log holds {} entries after it",
                g.enrolments,
                records.len().saturating_sub(1)
            ),
        );
    }
    for (i, rec) in records
        .iter()
        .enumerate()
        .skip(1)
        .take(g.enrolments as usize)
    {
        let file = format!("entries/{i}");
        match rec {
            Some(Record::Enrolment(e)) => {
                if !names.insert(e.name.as_str()) {
                    r.fail(&file, format!("name {:?} enrolled twice", e.name));
                }
                if enrolled
                    .insert(
                        e.participant.as_str(),
                        Enrolled {
                            name: &e.name,
                            role: &e.role,
                        },
                    )
                    .is_some()
                {
                    r.fail(&file, format!("key {} enrolled twice", e.participant));
                }
            }
            Some(_) => r.fail(
                &file,
                "the genesis's enrolments must follow the federation entry",
            ),
            None => {}
        }
    }
    enrolled
}

/// A contribution or decline: of the round being recorded, by an enrolled contributor under its
/// enrolled name, once per round.
#[allow(clippy::too_many_arguments)]
fn member(
    enrolled: &BTreeMap<&str, Enrolled<'_>>,
    file: &str,
    round: u64,
    next_round: u64,
    participant: &str,
    name: &str,
    pending: &[(u64, &str)],
    r: &mut VerifyReport,
) {
    if round != next_round {
        r.fail(
            file,
            format!("an entry of round {round} while round {next_round} is being recorded"),
        );
    }
    match enrolled.get(participant) {
        None => r.fail(file, format!("{participant} is not enrolled")),
        Some(e) if e.role != ROLE_CONTRIBUTOR => r.fail(
            file,
            format!(
                "{participant} is enrolled as a {}, not a contributor",
                e.role
            ),
        ),
        Some(e) if e.name != name => r.fail(
            file,
            format!("name {name:?} differs from the enrolled name {:?}", e.name),
        ),
        Some(_) => {}
    }
    if pending.iter().any(|(_, p)| *p == participant) {
        r.fail(file, format!("{participant} answers round {round} twice"));
    }
}

fn check_signatures(signatures: &[Signed], r: &mut VerifyReport) {
    let items: Vec<(&[u8], &[u8], &[u8])> = signatures
        .iter()
        .map(|s| (&s.key[..], s.message.as_bytes(), &s.signature[..]))
        .collect();
    let verdicts = crate::keys::verify_ed25519_many(&items);
    let failures: Vec<Failure> = signatures
        .iter()
        .zip(verdicts)
        .filter(|(_, ok)| !ok)
        .map(|(s, _)| Failure {
            file: s.file.clone(),
            what: s.what.clone(),
        })
        .collect();
    if failures.is_empty() {
        r.passed.push(format!(
            "signatures: {} contribution and decline signatures verify (examples and privacy objects included)",
            signatures.len()
        ));
    }
    r.failures.extend(failures);
}

fn run(p: &PrivacyObject) -> Run {
    Run {
        noise_multiplier: p.noise_multiplier(),
        sampling_rate: p.sampling_rate(),
        steps: p.steps,
    }
}

/// Each hospital's recorded cumulative epsilon never decreases, keeps one accountant and delta,
/// and is never below what its releases recorded in this ledger imply (it may be above: a
/// release the coordinator refused was still spent).
fn check_epsilon(
    releases: &BTreeMap<&str, Vec<(u64, &ContributionEntry)>>,
    accountant: Option<&dyn EpsilonAccountant>,
    r: &mut VerifyReport,
) {
    let before = r.failures.len();
    for (who, list) in releases {
        let mut prev = 0u64;
        let mut kind: Option<&str> = None;
        let mut delta: Option<u64> = None;
        let mut runs = Vec::new();
        for (i, c) in list {
            let file = format!("entries/{i}");
            let p = &c.privacy;
            if p.epsilon_micro < prev {
                r.fail(
                    &file,
                    format!(
                        "{who}'s recorded cumulative epsilon decreased: {} after {prev} (micro-units)",
                        p.epsilon_micro
                    ),
                );
            }
            prev = prev.max(p.epsilon_micro);
            if !p.is_private() {
                continue;
            }
            if kind.is_some_and(|k| k != p.accountant) || delta.is_some_and(|d| d != p.delta_pico) {
                r.fail(
                    &file,
                    format!("{who}'s accountant or delta changes within the federation"),
                );
                continue;
            }
            kind = Some(&p.accountant);
            delta = Some(p.delta_pico);
            runs.push(run(p));
            let Some(acc) = accountant else { continue };
            match acc.cumulative_epsilon(&p.accountant, p.delta(), &runs) {
                Ok(eps) => {
                    let implied = micro_up(eps);
                    if p.epsilon_micro < implied {
                        r.fail(
                            &file,
                            format!(
                                "{who}'s recorded cumulative epsilon {} (micro) is below the {implied} that its {} recorded release(s) imply",
                                p.epsilon_micro,
                                runs.len()
                            ),
                        );
                    }
                }
                Err(e) => r.fail(&file, format!("privacy: the accountant refused: {e}")),
            }
        }
    }
    if r.failures.len() == before {
        match accountant {
            Some(_) => r.passed.push(
                "epsilon: every recorded cumulative epsilon is at least what this ledger's releases imply, and never decreases"
                    .into(),
            ),
            None => r.skipped.push(
                "epsilon: no accountant plugged in; recorded epsilons were checked for monotonicity only"
                    .into(),
            ),
        }
    }
}
