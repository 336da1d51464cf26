//! Rounds with validators (format v2): each validator's utility vector is reassembled from its
//! parts, signed by a key enrolled as a validator under the rules in force, and evaluated the
//! design the summary records; with a consensus rule plugged in ([`RewardRule::consensus`]),
//! the design's digest, the consensus values the contributions record, each validator's
//! distance and reward, and the quality rule's exclusions are recomputed from the vectors
//! alone.

use std::collections::BTreeMap;

use super::{ConsensusInputs, RecordedValue, RewardRule, VerifyReport};
use crate::records::{
    FLAG_EXCLUDED_BY_QUALITY, ROLE_VALIDATOR, RoundSummary, Rules, UtilitiesEntry,
    utility_vector_sha256,
};

/// What the validators' checks saw over the whole ledger, for the report.
#[derive(Default)]
pub(super) struct Seen {
    rounds: u64,
    vectors: u64,
    fallbacks: u64,
    recomputed: u64,
    failures_before: usize,
    /// The validators' standing so far (distances are judged on it); `None` once a round's
    /// consensus could not be recomputed, after which later distances cannot be either.
    standing: Option<super::ValidatorStanding>,
}

/// The utility entries of the round being recorded.
#[derive(Default)]
pub(super) struct RoundUtilities<'a> {
    parts: Vec<(String, &'a UtilitiesEntry)>,
}

impl<'a> RoundUtilities<'a> {
    /// An entry of the round being recorded, by a key enrolled as a validator under `rules`.
    /// Returns the signature to check (once per vector: every part carries the same one).
    pub(super) fn push(
        &mut self,
        rules: &Rules,
        file: &str,
        u: &'a UtilitiesEntry,
        next_round: u64,
        r: &mut VerifyReport,
    ) -> Option<(String, String, String)> {
        if u.round != next_round {
            r.fail(
                file,
                format!(
                    "a utility vector of round {} while round {next_round} is being recorded",
                    u.round
                ),
            );
        }
        match rules.members.get(&u.validator) {
            None => r.fail(
                file,
                format!(
                    "{} is not enrolled in round {} (not yet, or removed)",
                    u.validator, u.round
                ),
            ),
            Some(m) if m.role != ROLE_VALIDATOR => r.fail(
                file,
                format!(
                    "{} is enrolled as a {}, not a validator",
                    u.validator, m.role
                ),
            ),
            Some(m) if m.name != u.name => r.fail(
                file,
                format!(
                    "name {:?} differs from the enrolled name {:?}",
                    u.name, m.name
                ),
            ),
            Some(_) => {}
        }
        self.parts.push((file.to_owned(), u));
        (u.part == 1).then(|| {
            (
                u.validator.clone(),
                u.signing_message(),
                u.signature.clone(),
            )
        })
    }

    /// The round's summary closes it: its validators record against the vectors recorded
    /// before it.
    pub(super) fn close(
        &mut self,
        s: &RoundSummary,
        summary_file: &str,
        values: &[RecordedValue<'_>],
        rule: Option<&dyn RewardRule>,
        seen: &mut Seen,
        r: &mut VerifyReport,
    ) {
        let parts = std::mem::take(&mut self.parts);
        let Some(v) = &s.valuation.validators else {
            if let Some((file, _)) = parts.first() {
                r.fail(
                    file,
                    format!(
                        "a utility vector in round {}, whose summary records no validators",
                        s.round
                    ),
                );
            }
            return;
        };
        seen.rounds += 1;
        // Reassemble each validator's vector from its parts, in ledger order.
        let mut vectors: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
        let mut by_validator: BTreeMap<&str, Vec<&(String, &UtilitiesEntry)>> = BTreeMap::new();
        for p in &parts {
            by_validator
                .entry(p.1.validator.as_str())
                .or_default()
                .push(p);
        }
        for (key, ps) in by_validator {
            let head = ps[0].1;
            let mut whole = Vec::new();
            let mut ok = true;
            for (k, (file, u)) in ps.iter().enumerate() {
                let same = u.parts == head.parts
                    && u.count == head.count
                    && u.utilities_sha256 == head.utilities_sha256
                    && u.coalitions_sha256 == head.coalitions_sha256
                    && u.signature == head.signature;
                if u.part != k as u64 + 1 || !same {
                    r.fail(
                        file,
                        format!(
                            "part {} of {key}'s vector is out of order or differs from its part 1 (a validator records one vector per round, its parts in order)",
                            u.part
                        ),
                    );
                    ok = false;
                    break;
                }
                whole.extend_from_slice(&u.utilities);
            }
            if !ok {
                continue;
            }
            let file = &ps[0].0;
            if ps.len() as u64 != head.parts {
                r.fail(
                    file,
                    format!(
                        "{key}'s vector has {} of its {} parts",
                        ps.len(),
                        head.parts
                    ),
                );
                continue;
            }
            if utility_vector_sha256(&whole) != head.utilities_sha256 {
                r.fail(
                    file,
                    format!("{key}'s utilities do not hash to the utilities_sha256 it signed"),
                );
                continue;
            }
            if head.coalitions_sha256 != v.coalitions_sha256 || head.count != v.coalitions {
                r.fail(
                    file,
                    format!(
                        "{key} evaluated {} coalitions listed as {}, not the round's design ({} coalitions, {})",
                        head.count, head.coalitions_sha256, v.coalitions, v.coalitions_sha256
                    ),
                );
                continue;
            }
            vectors.insert(key, whole);
        }
        seen.vectors += vectors.len() as u64;
        if v.fallback.is_some() {
            seen.fallbacks += 1;
            if !parts.is_empty() {
                r.fail(
                    summary_file,
                    format!(
                        "round {} records a fallback to the coordinator's validation file although validators' vectors are recorded before it",
                        s.round
                    ),
                );
            }
            return;
        }
        let lines: Vec<&str> = v.lines.iter().map(|l| l.validator.as_str()).collect();
        let with_vectors: Vec<&str> = vectors.keys().copied().collect();
        if lines != with_vectors {
            r.fail(
                summary_file,
                format!(
                    "round {} names validators {lines:?}, but the vectors recorded before it are by {with_vectors:?}",
                    s.round
                ),
            );
            return;
        }
        let mut players: Vec<&RecordedValue<'_>> = values.iter().collect();
        players.sort_by_key(|p| p.participant);
        for p in &players {
            let excluded = p.flags.iter().any(|f| f == FLAG_EXCLUDED_BY_QUALITY);
            if excluded && v.quality_k.is_none() {
                r.fail(
                    summary_file,
                    format!(
                        "{} is flagged {FLAG_EXCLUDED_BY_QUALITY} in round {}, which applies no quality rule",
                        p.participant, s.round
                    ),
                );
            }
        }
        let Some(rule) = rule else { return };
        let Some(standing) = seen.standing.take() else {
            r.fail(
                summary_file,
                format!(
                    "round {}: the validators' distances cannot be recomputed (an earlier round's consensus was not)",
                    s.round
                ),
            );
            return;
        };
        let refs: Vec<&[i64]> = vectors.values().map(Vec::as_slice).collect();
        let player_keys: Vec<&str> = players.iter().map(|p| p.participant).collect();
        let inputs = ConsensusInputs {
            seed: v.seed,
            exact_max: v.exact_max,
            permutations: v.permutations,
            players: players.len(),
            vectors: &refs,
            validators: &lines,
            pool: v.pool,
            max_distance_milli: v.max_distance_milli,
            quality_k: v.quality_k,
            player_keys: &player_keys,
            standing: &standing,
        };
        let c = match rule.consensus(&inputs) {
            None => {
                seen.standing = Some(standing);
                return;
            }
            Some(Err(why)) => {
                r.fail(
                    summary_file,
                    format!(
                        "round {}: the consensus cannot be recomputed: {why}",
                        s.round
                    ),
                );
                return;
            }
            Some(Ok(c)) => c,
        };
        seen.recomputed += 1;
        seen.standing = Some(c.standing.clone());
        if c.coalitions != v.coalitions || c.coalitions_sha256 != v.coalitions_sha256 {
            r.fail(
                summary_file,
                format!(
                    "round {}: the design of seed {} for {} contributors is {} coalitions listed as {}, not the recorded {} ({})",
                    s.round,
                    v.seed,
                    players.len(),
                    c.coalitions,
                    c.coalitions_sha256,
                    v.coalitions,
                    v.coalitions_sha256
                ),
            );
            return;
        }
        for (p, want) in players.iter().zip(&c.values_nano) {
            if p.value_nano != *want {
                r.fail(
                    summary_file,
                    format!(
                        "round {}: {} records value {} nano, but the validators' consensus gives {want}",
                        s.round, p.participant, p.value_nano
                    ),
                );
            }
        }
        for (l, (d, reward)) in v.lines.iter().zip(c.distances_milli.iter().zip(&c.rewards)) {
            if l.distance_milli != *d || l.reward != *reward {
                r.fail(
                    summary_file,
                    format!(
                        "round {}: validator {} records distance {} and reward {}, but its vector gives distance {d} and reward {reward}",
                        s.round, l.validator, l.distance_milli, l.reward
                    ),
                );
            }
        }
        if v.quality_k.is_some() {
            for (p, keep) in players.iter().zip(&c.keep) {
                let excluded = p.flags.iter().any(|f| f == FLAG_EXCLUDED_BY_QUALITY);
                if excluded == *keep {
                    r.fail(
                        summary_file,
                        format!(
                            "round {}: the quality rule {} {}'s update, but the round records the opposite",
                            s.round,
                            if *keep { "keeps" } else { "excludes" },
                            p.participant
                        ),
                    );
                }
            }
        }
    }
}

impl Seen {
    pub(super) fn start(r: &VerifyReport) -> Self {
        Self {
            failures_before: r.failures.len(),
            standing: Some(Default::default()),
            ..Self::default()
        }
    }

    /// The report's line: passed when nothing failed since [`Seen::start`], and skipped when
    /// no rule recomputed the consensus of a round that had validators.
    pub(super) fn report(&self, r: &mut VerifyReport) {
        if self.rounds == 0 {
            return;
        }
        if r.failures.len() == self.failures_before {
            r.passed.push(format!(
                "validators: {} round(s) with validators ({} fell back to the coordinator's validation file), {} signed vector(s) complete and of the recorded design; consensus recomputed in {} round(s)",
                self.rounds, self.fallbacks, self.vectors, self.recomputed
            ));
        }
        if self.recomputed < self.rounds - self.fallbacks {
            r.skipped.push(
                "validators' consensus: no consensus rule given (the command-line verify plugs in the valuation crate's)"
                    .into(),
            );
        }
    }
}
