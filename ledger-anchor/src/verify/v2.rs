//! Cross-record checks of a v2 ledger: the genesis (federation entry plus its enrolments), then
//! rounds as batches of contribution and decline entries closed by a summary; signatures over
//! everything a hospital claimed; rewards, pools and model digests; settlements (under the
//! settled reward rule: where they must be, their arithmetic, and with a [`RewardRule`]
//! plugged in, every line recomputed from the recorded round values); and each hospital's
//! recorded cumulative epsilon against what this ledger's releases imply.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    EpsilonAccountant, Failure, RecordedRound, RecordedValue, RewardRule, RoundVsGenesis, Run,
    VerifyReport,
};
use crate::records::{
    Change, ContributionEntry, EnrolmentEntry, FederationEntry, Governance, PrivacyObject,
    ROLE_CONTRIBUTOR, Record, RoundStatus, Rules, SettlementEntry, SettlementLine, micro_up,
    period_ending,
};

struct Enrolled<'a> {
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

/// A settlement that must follow: the period that just ended, and its parts so far.
struct Due<'a> {
    period: u64,
    first: u64,
    last: u64,
    /// The summary's file (where a missing settlement is reported).
    summary_file: String,
    /// The reward rule in force at the period's last round (the genesis's, with the pool
    /// governance set by then).
    reward: crate::records::RewardRecord,
    parts: Vec<(String, &'a SettlementEntry)>,
}

pub(super) fn check(
    records: &[Option<Record>],
    entries: &[Vec<u8>],
    accountant: Option<&dyn EpsilonAccountant>,
    rewards: Option<&dyn RewardRule>,
    r: &mut VerifyReport,
) {
    let Some(Some(Record::Federation(g))) = records.first() else {
        return;
    };
    let before = r.failures.len();
    let mut enrolled = genesis(g, records, r);
    // Governance: the genesis's rules, then each governance entry admitted by the same rule
    // the coordinator applies (chained, k valid governor signatures); the rules of the round
    // being recorded follow from them.
    let genesis_enrolments: Vec<&EnrolmentEntry> = records
        .iter()
        .skip(1)
        .take(g.enrolments as usize)
        .filter_map(|rec| match rec {
            Some(Record::Enrolment(e)) => Some(&**e),
            _ => None,
        })
        .collect();
    let mut governance = Governance::new(
        entries.first().map_or(&[][..], Vec::as_slice),
        g,
        &genesis_enrolments,
    );
    let mut governance_entries = 0u64;
    let mut rules: Rules = governance.rules_for(1);
    let mut signatures = Vec::new();
    let mut releases: BTreeMap<&str, Vec<(u64, &ContributionEntry)>> = BTreeMap::new();
    let mut next_round = 1u64;
    let mut prev_after: Option<&str> = None;
    // The round being recorded: its entries so far (index, participant).
    let mut pending: Vec<(u64, &str)> = Vec::new();
    let mut paid = 0u64;
    let mut payable = false;
    // Governance changes the reward rule only among the rules settled over periods.
    let settled = g.reward.is_settled();
    // The settled rule's history (every recorded round so far) and the round being recorded.
    let mut period: Vec<RecordedRound<'_>> = Vec::new();
    let mut values: Vec<RecordedValue<'_>> = Vec::new();
    let mut due: Option<Due<'_>> = None;
    let mut settlements = Settlements::default();
    let mut utilities = super::validators::RoundUtilities::default();
    let mut validators_seen = super::validators::Seen::start(r);
    let first_after_genesis = g.enrolments.saturating_add(1);
    for (i, rec) in records
        .iter()
        .enumerate()
        .skip(first_after_genesis as usize)
    {
        let i = i as u64;
        let file = format!("entries/{i}");
        let Some(rec) = rec else { continue };
        if let Some(d) = due.take() {
            match rec {
                Record::Settlement(st) => {
                    let mut d = d;
                    d.parts.push((file.clone(), st));
                    if st.part < st.parts && (d.parts.len() as u64) < st.parts {
                        due = Some(d);
                    } else {
                        settlements.close(&enrolled, &d, &period, rewards, r);
                    }
                    continue;
                }
                _ => {
                    if d.parts.is_empty() {
                        r.fail(
                            &d.summary_file,
                            format!(
                                "round {} ends period {} but no settlement follows its summary",
                                d.last, d.period
                            ),
                        );
                    } else {
                        settlements.close(&enrolled, &d, &period, rewards, r);
                    }
                }
            }
        }
        match rec {
            Record::Settlement(_) => r.fail(
                &file,
                if settled {
                    "a settlement where no period ends (settlements follow the summary of a period's last round)".to_owned()
                } else {
                    format!(
                        "a settlement in a ledger whose reward rule is {} (paid per round)",
                        g.reward.rule
                    )
                },
            ),
            Record::Contribution(c) => {
                values.push(RecordedValue {
                    participant: &c.participant,
                    value_nano: c.value_nano,
                    se_nano: c.value_se_nano.unwrap_or(0),
                    flags: &c.flags,
                });
                member(
                    &rules,
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
                payable |= super::may_be_paid(c.value_nano, &c.flags);
                signatures.push(signed(
                    &c.participant,
                    c.signing_message(),
                    &c.signature,
                    file.clone(),
                    format!("the contribution's signature does not verify for {} (examples, digest or privacy object changed?)", c.participant),
                ));
                releases.entry(&c.participant).or_default().push((i, c));
            }
            Record::Utilities(u) => {
                pending.push((i, &u.validator));
                if let Some((key, message, signature)) =
                    utilities.push(&rules, &file, u, next_round, r)
                {
                    signatures.push(signed(
                        &key,
                        message,
                        &signature,
                        file.clone(),
                        format!("the utility vector's signature does not verify for {key}"),
                    ));
                }
            }
            Record::Decline(d) => {
                member(
                    &rules,
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
                check_rules(g, &rules, s, &file, r);
                utilities.close(s, &file, &values, rewards, &mut validators_seen, r);
                let reward_in_force = rules.reward.clone();
                RoundVsGenesis {
                    // Under the settled rule a round pays nothing itself; otherwise the pool
                    // in force (the genesis's, or the last governed one).
                    pool_per_round: if settled { 0 } else { rules.reward.pool_per_round },
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
                rules = governance.rules_for(next_round);
                pending.clear();
                paid = 0;
                payable = false;
                if settled {
                    let v = &s.validation;
                    period.push(RecordedRound {
                        round: s.round,
                        completed: s.status == RoundStatus::Completed,
                        gain_nano: v.score_after_nano.saturating_sub(v.score_before_nano),
                        values: std::mem::take(&mut values),
                    });
                    // Periods as the rules in force run them (a change of the reward rule
                    // or period starts new ones at its `from_round`); a change that takes
                    // effect next round was anchored before this summary (checked below).
                    let segments = governance.reward_segments(s.round.saturating_add(1));
                    if let Some(p) = period_ending(&segments, s.round, g.training.rounds) {
                        due = Some(Due {
                            period: p.number,
                            first: p.first,
                            last: p.last,
                            summary_file: file.clone(),
                            reward: reward_in_force,
                            parts: Vec::new(),
                        });
                    }
                } else {
                    values.clear();
                }
            }
            Record::Governance(e) => {
                governance_entries += 1;
                if !pending.is_empty() {
                    r.fail(&file, "a governance entry inside a round's entries");
                }
                if e.proposal.from_round < next_round {
                    r.fail(
                        &file,
                        format!(
                            "the proposal applies from round {}, which is already recorded (round {next_round} comes next)",
                            e.proposal.from_round
                        ),
                    );
                }
                let rule_change = e
                    .proposal
                    .changes
                    .iter()
                    .any(|c| matches!(c, Change::RewardRule { .. }));
                if rule_change && e.proposal.from_round == next_round && next_round > 1 {
                    r.fail(
                        &file,
                        format!(
                            "the proposal changes the reward rule from round {}, but round {}, which ends the running settlement period, is already recorded: a change of the reward rule must be anchored before that round's summary",
                            e.proposal.from_round,
                            next_round - 1
                        ),
                    );
                }
                let bytes = entries.get(i as usize).map_or(&[][..], Vec::as_slice);
                match governance.admit(i, bytes, e) {
                    Ok(()) => {
                        for c in &e.proposal.changes {
                            if let Change::Enrol {
                                participant,
                                name: _,
                                role,
                            } = c
                            {
                                enrolled.entry(participant.as_str()).or_insert(Enrolled {
                                    role: role.as_str(),
                                });
                            }
                        }
                        rules = governance.rules_for(next_round);
                    }
                    Err(why) => r.fail(&file, format!("governance entry refused: {why}")),
                }
            }
            Record::Enrolment(_) => r.fail(
                &file,
                "an enrolment outside the genesis (keys are enrolled later only by governance entries)",
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
    if let Some(d) = due {
        if d.parts.is_empty() {
            r.fail(
                &d.summary_file,
                format!(
                    "round {} ends period {} but no settlement follows its summary",
                    d.last, d.period
                ),
            );
        } else {
            settlements.close(&enrolled, &d, &period, rewards, r);
        }
    }
    if let Some((k, _)) = pending.first() {
        r.fail(
            format!("entries/{k}"),
            "entries after the last round summary belong to no recorded round",
        );
    }
    settlements.report(settled, rewards.is_some(), r);
    validators_seen.report(r);
    let rounds = next_round - 1;
    if r.failures.len() == before {
        r.passed.push(format!(
            "rounds: {rounds} rounds, contiguous; every contributor and decliner enrolled; each round's entries named by its summary; rewards sum to their pools; model digests chained"
        ));
    }
    if governance_entries > 0 && r.failures.len() == before {
        r.passed.push(format!(
            "governance: {governance_entries} governance entries chained and signed by the governors in force; every round ran under the rules in force"
        ));
    }
    check_signatures(&signatures, r);
    check_epsilon(&releases, accountant, r);
}

/// A round's summary against the rules in force for it: the digest it records (which covers
/// hyper-parameters, strategy, pool, schema and enrolment) and the estimator when governed.
fn check_rules(
    g: &FederationEntry,
    rules: &Rules,
    s: &crate::records::RoundSummary,
    file: &str,
    r: &mut VerifyReport,
) {
    match &s.rules_sha256 {
        Some(d) if *d != rules.sha256_hex() => r.fail(
            file,
            format!(
                "round {} records rules {d}, but the rules in force for it are {} (hyper-parameters, strategy, pool, schema or enrolment differ)",
                s.round,
                rules.sha256_hex()
            ),
        ),
        None if !g.governance.governors.is_empty() => r.fail(
            file,
            format!(
                "round {} does not record the rules it ran under (a governed federation's rounds must)",
                s.round
            ),
        ),
        _ => {}
    }
    if let Some(want) = &rules.validators
        && s.status == RoundStatus::Completed
    {
        match &s.valuation.validators {
            None => r.fail(
                file,
                format!(
                    "round {} records no validators, but the rules in force for it have them",
                    s.round
                ),
            ),
            Some(v)
                if (
                    v.exact_max,
                    v.permutations,
                    v.pool,
                    v.max_distance_milli,
                    v.quality_k,
                ) != (
                    want.exact_max,
                    want.permutations,
                    want.pool_per_round,
                    want.max_distance_milli,
                    want.quality_k,
                ) =>
            {
                r.fail(
                    file,
                    format!(
                        "round {}'s validators ran with exact_max {}, permutations {}, pool {}, max_distance_milli {}, quality_k {:?}, not the rules in force ({want:?})",
                        s.round,
                        v.exact_max,
                        v.permutations,
                        v.pool,
                        v.max_distance_milli,
                        v.quality_k
                    ),
                );
            }
            Some(_) => {}
        }
    }
    if let Some(u) = &rules.utility
        && *u != s.validation.metric
    {
        r.fail(
            file,
            format!(
                "round {} was scored by {:?}, not the utility in force {u:?}",
                s.round, s.validation.metric
            ),
        );
    }
    if let Some(e) = &rules.estimator
        && s.status == RoundStatus::Completed
        && e != "auto"
        && *e != s.valuation.estimator
        // A round its validators valued records their consensus instead of an estimator.
        && s.valuation.validators.as_ref().is_none_or(|v| v.fallback.is_some())
    {
        r.fail(
            file,
            format!(
                "round {} was valued with {:?}, not the estimator in force {e:?}",
                s.round, s.valuation.estimator
            ),
        );
    }
}

/// What the settlement checks found, for the report.
#[derive(Default)]
struct Settlements {
    checked: u64,
    failed: bool,
    /// What the settlements so far recorded as paid, by participant key (the cumulative rule
    /// pays towards each participant's share of everything paid).
    paid: BTreeMap<String, u64>,
}

impl Settlements {
    /// Checks one period's settlement (all its parts) against the genesis rule, the enrolment,
    /// the recorded rounds of the period and, when plugged in, the rule's recomputation from
    /// the recorded history.
    fn close(
        &mut self,
        enrolled: &BTreeMap<&str, Enrolled<'_>>,
        d: &Due<'_>,
        history: &[RecordedRound<'_>],
        rewards: Option<&dyn RewardRule>,
        r: &mut VerifyReport,
    ) {
        let from = history.partition_point(|p| p.round < d.first);
        let period = &history[from..];
        self.checked += 1;
        let before = r.failures.len();
        let (file, first) = (&d.parts[0].0, d.parts[0].1);
        let parts = d.parts.len() as u64;
        for (k, (f, st)) in d.parts.iter().enumerate() {
            if st.part != k as u64 + 1 || st.parts != first.parts {
                r.fail(
                    f,
                    format!(
                        "settlement part {} of {} where part {} of {} comes next",
                        st.part,
                        st.parts,
                        k + 1,
                        first.parts
                    ),
                );
            }
            if st.period != d.period || st.rounds.first != d.first || st.rounds.last != d.last {
                r.fail(
                    f,
                    format!(
                        "settles period {} (rounds {}..={}) where period {} (rounds {}..={}) ended",
                        st.period, st.rounds.first, st.rounds.last, d.period, d.first, d.last
                    ),
                );
            }
            if st.rule != d.reward {
                r.fail(
                    f,
                    "the settlement's rule differs from the reward rule in force for its last round (the genesis's, as governed)",
                );
            }
            if st.pool != first.pool || st.counted_rounds != first.counted_rounds {
                r.fail(
                    f,
                    "the parts of one settlement disagree on the pool or the counted rounds",
                );
            }
        }
        if first.parts != parts {
            r.fail(
                file,
                format!(
                    "the settlement has {parts} part(s), it says {}",
                    first.parts
                ),
            );
        }
        let lines: Vec<(&str, &SettlementLine)> = d
            .parts
            .iter()
            .flat_map(|(f, st)| st.participants.iter().map(move |l| (f.as_str(), l)))
            .collect();
        for w in lines.windows(2) {
            if w[0].1.participant >= w[1].1.participant {
                r.fail(
                    w[1].0,
                    "settlement lines must be sorted by key across parts, without duplicates",
                );
            }
        }
        for (f, l) in &lines {
            match enrolled.get(l.participant.as_str()) {
                Some(e) if e.role == ROLE_CONTRIBUTOR => {}
                _ => r.fail(
                    *f,
                    format!("{} is not an enrolled contributor", l.participant),
                ),
            }
        }
        let paid: u128 = lines.iter().map(|(_, l)| u128::from(l.payout)).sum();
        if paid != u128::from(first.pool) {
            r.fail(
                file,
                format!(
                    "the settlement's payouts sum to {paid}, not its pool {}",
                    first.pool
                ),
            );
        }
        let counted: Vec<u64> = period
            .iter()
            .filter(|p| p.completed && p.gain_nano > 0)
            .map(|p| p.round)
            .collect();
        if counted != first.counted_rounds {
            r.fail(
                file,
                format!(
                    "counted_rounds {:?} are not the period's completed rounds with a positive gain {counted:?}",
                    first.counted_rounds
                ),
            );
        }
        let full = u128::from(d.reward.pool_per_round) * counted.len() as u128;
        if first.pool != 0 && u128::from(first.pool) != full {
            r.fail(
                file,
                format!(
                    "pool {} is neither 0 nor pool_per_round x {} counted round(s) = {full}",
                    first.pool,
                    counted.len()
                ),
            );
        }
        // Each period's contributors; the cumulative rule has a line for everyone so far.
        let named_rounds = if d.reward.is_cumulative() {
            history
        } else {
            period
        };
        let contributors: BTreeSet<&str> = named_rounds
            .iter()
            .flat_map(|p| p.values.iter().map(|v| v.participant))
            .collect();
        let named: BTreeSet<&str> = lines.iter().map(|(_, l)| l.participant.as_str()).collect();
        if contributors != named {
            r.fail(
                file,
                if d.reward.is_cumulative() {
                    "the settlement's lines are not exactly the contributors up to the period's end"
                } else {
                    "the settlement's lines are not exactly the period's contributors"
                },
            );
        }
        if let Some(rule) = rewards {
            let paid_before: BTreeMap<&str, u64> =
                self.paid.iter().map(|(k, &v)| (k.as_str(), v)).collect();
            match rule.settle(&d.reward, history, d.first, &paid_before) {
                Err(e) => r.fail(file, format!("the reward rule refused the period: {e}")),
                Ok(want) => {
                    if want.pool != first.pool || want.counted_rounds != first.counted_rounds {
                        r.fail(
                            file,
                            format!(
                                "period {}: recorded pool {} over rounds {:?}; recomputed from the recorded values: {} over {:?}",
                                d.period, first.pool, first.counted_rounds, want.pool, want.counted_rounds
                            ),
                        );
                    }
                    let got: BTreeMap<&str, (&str, &SettlementLine)> = lines
                        .iter()
                        .map(|(f, l)| (l.participant.as_str(), (*f, *l)))
                        .collect();
                    for w in &want.lines {
                        match got.get(w.participant.as_str()) {
                            Some((f, l)) if *l != w => r.fail(
                                *f,
                                format!(
                                    "period {}: {} recorded value {} se {} rounds {} {} payout {}; recomputed from the recorded values: value {} se {} rounds {} {} payout {}",
                                    d.period, w.participant, l.value_nano, l.se_nano, l.rounds, l.verdict, l.payout,
                                    w.value_nano, w.se_nano, w.rounds, w.verdict, w.payout
                                ),
                            ),
                            Some(_) => {}
                            None => r.fail(
                                file,
                                format!("period {}: no line for {}, which the rule pays {}", d.period, w.participant, w.payout),
                            ),
                        }
                    }
                }
            }
        }
        for (_, l) in &lines {
            let p = self.paid.entry(l.participant.clone()).or_insert(0);
            *p = p.saturating_add(l.payout);
        }
        if r.failures.len() != before {
            self.failed = true;
        }
    }

    fn report(&self, settled: bool, recomputed: bool, r: &mut VerifyReport) {
        if !settled || self.failed {
            return;
        }
        r.passed.push(format!(
            "settlements: {} period(s) settled where they end; payouts sum to their pools; counted rounds are those that improved the model",
            self.checked
        ));
        if recomputed {
            r.passed.push(format!(
                "settlements: {} recomputed from the recorded round values and standard errors, line by line",
                self.checked
            ));
        } else if self.checked > 0 {
            r.skipped.push(
                "settlements: no reward rule plugged in; payouts were not recomputed from the recorded values"
                    .into(),
            );
        }
    }
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
                    .insert(e.participant.as_str(), Enrolled { role: &e.role })
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
    rules: &Rules,
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
    match rules.members.get(participant) {
        None => r.fail(
            file,
            format!("{participant} is not enrolled in round {round} (not yet, or removed)"),
        ),
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
            "signatures: {} contribution, decline and utility-vector signatures verify (examples and privacy objects included)",
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
