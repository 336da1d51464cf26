//! The valuation crate's settlement rule behind the ledger's [`RewardRule`] hook, so `verify`
//! recomputes every settlement from the recorded round values with exactly the function the
//! coordinator settles with.

use std::collections::BTreeMap;

use fedledger_ledger::records::{
    RewardRecord, SettlementLine, VERDICT_DISTINGUISHABLE, VERDICT_NOT_DISTINGUISHABLE,
};
use fedledger_ledger::verify::{
    ConsensusInputs, RecomputedConsensus, RecomputedSettlement, RecordedRound, RewardRule,
};
use fedledger_valuation::{
    FLAG_COPY_OF_PREFIX, NonImproving, RULE_SETTLED, RULE_SETTLED_CUMULATIVE, RULE_SETTLED_IMPACT,
    RoundValues, SettlementRule, ValueEntry, settle, settle_accumulated,
};

/// Recomputes settlements with `fedledger_valuation::settle`, `settle_cumulative` or
/// `settle_impact`, as the settlement's rule names.
pub struct ValuationRewards;

impl RewardRule for ValuationRewards {
    fn settle(
        &self,
        rule: &RewardRecord,
        rounds: &[RecordedRound<'_>],
        first_round: u64,
        paid_before: &BTreeMap<&str, u64>,
    ) -> Result<RecomputedSettlement, String> {
        // `None`: each period on its own; else cumulative, with non-improving rounds counted so.
        let cumulative = match rule.rule.as_str() {
            RULE_SETTLED => None,
            RULE_SETTLED_CUMULATIVE => Some(NonImproving::Ignored),
            RULE_SETTLED_IMPACT => Some(NonImproving::Full),
            other => return Err(format!("{other} is not settled over periods")),
        };
        let (Some(period_rounds), Some(z_milli)) = (rule.period_rounds, rule.z_milli) else {
            return Err(format!("{} without its parameters", rule.rule));
        };
        let params = SettlementRule {
            pool_per_round: rule.pool_per_round,
            period_rounds,
            z_milli,
        };
        let rounds: Vec<RoundValues<'_>> = rounds
            .iter()
            .map(|r| RoundValues {
                round: r.round,
                completed: r.completed,
                gain_nano: r.gain_nano,
                entries: r
                    .values
                    .iter()
                    .map(|v| ValueEntry {
                        participant_key_hex: v.participant,
                        value_nano: v.value_nano,
                        se_nano: v.se_nano,
                        eligible: !v.flags.iter().any(|f| f.starts_with(FLAG_COPY_OF_PREFIX)),
                    })
                    .collect(),
            })
            .collect();
        let s = match cumulative {
            Some(non_improving) => {
                settle_accumulated(&params, &rounds, first_round, paid_before, non_improving)
            }
            None => settle(&params, &rounds, first_round),
        };
        Ok(RecomputedSettlement {
            counted_rounds: s.counted_rounds,
            pool: s.pool,
            lines: s
                .participants
                .into_iter()
                .map(|p| SettlementLine {
                    participant: p.participant_key_hex,
                    value_nano: p.value_nano,
                    se_nano: p.se_nano,
                    rounds: p.rounds,
                    verdict: if p.distinguishable {
                        VERDICT_DISTINGUISHABLE
                    } else {
                        VERDICT_NOT_DISTINGUISHABLE
                    }
                    .into(),
                    payout: p.payout,
                })
                .collect(),
        })
    }

    fn consensus(&self, i: &ConsensusInputs<'_>) -> Option<Result<RecomputedConsensus, String>> {
        let usize_of = |x: u64, what: &str| {
            usize::try_from(x).map_err(|_| format!("{what} {x} does not fit this machine"))
        };
        let params = (|| {
            Ok::<_, String>(fedledger_valuation::consensus::RoundParams {
                seed: i.seed,
                players: i.players,
                exact_max: usize_of(i.exact_max, "exact_max")?,
                permutations: usize_of(i.permutations, "permutations")?,
                pool: i.pool,
                max_distance_milli: i.max_distance_milli,
                quality_k: i.quality_k.map(|k| usize_of(k, "quality_k")).transpose()?,
            })
        })();
        Some(params.and_then(|params| {
            let c = fedledger_valuation::consensus::round_consensus_with(
                &params,
                i.validators,
                i.vectors,
                i.player_keys,
                i.standing,
            )
            .map_err(|e| e.to_string())?;
            Ok(RecomputedConsensus {
                coalitions: c.design.coalitions.len() as u64,
                coalitions_sha256: fedledger_ledger::records::sha256_hex(&c.design.canonical()),
                values_nano: c.values_nano,
                distances_milli: c.distances_milli,
                rewards: c.rewards,
                keep: c.keep,
                standing: c.standing,
            })
        }))
    }
}
