//! Anchoring: the federation's genesis record and one record per finished round, appended to
//! the coordinator's signed Merkle log (`fedledger-ledger`), each followed by a signed
//! checkpoint. The round's outcome is stored first; anchoring is idempotent and catches up after
//! a crash, so every finished round ends up in the log exactly once, in order.

use std::time::{Duration, UNIX_EPOCH};

use fedledger_ledger::{
    Log,
    keys::load_or_generate_key,
    note::{NoteSigner, SignedCheckpoint},
    records::{
        ContributionRecord, DeclinedRecord, DigestRecord, DpRecord, FEDERATION_TYPE,
        FederationRecord, ModelDigestsRecord, ModelSpecRecord, ParticipantRecord, PrivacyRecord,
        RECORD_VERSION, REWARD_RULE, ROUND_TYPE, RewardRecord, RoundRecord, RoundStatus,
        TrainingRecord, ValidationRecord, ValuationRecord, WitnessesRecord, encode_canonical,
        validate_entry,
    },
};

use crate::{config::FederationConfig, error::CoordinatorError, types::RoundOutcome};

fn ledger_err(e: fedledger_ledger::LedgerError) -> CoordinatorError {
    CoordinatorError::Ledger(e.to_string())
}

/// RFC 3339 UTC with milliseconds.
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// A non-negative decimal string as the ledger records numbers (no floats in records).
pub fn decimal(x: f64) -> String {
    if x.is_finite() && x > 0.0 {
        format!("{x}")
    } else {
        "0".to_owned()
    }
}

/// `ceil(x * 1e6)` as an integer (epsilons are rounded up: never under-reported).
pub fn micro_up(x: f64) -> u64 {
    if x.is_finite() && x > 0.0 {
        (x * 1e6).ceil() as u64
    } else {
        0
    }
}

fn nano(x: f64) -> i64 {
    fedledger_valuation::value_nano(x)
}

/// The coordinator's log.
pub struct Anchor {
    log: Log,
}

impl Anchor {
    /// Open (or create, with its genesis record) the log in `<state_dir>/ledger`, signed with
    /// the coordinator's key (created on first start).
    pub fn open(cfg: &FederationConfig, now_ms: u64) -> Result<Self, CoordinatorError> {
        let key = load_or_generate_key(&cfg.key).map_err(ledger_err)?;
        let signer = NoteSigner::log(&cfg.federation, key).map_err(ledger_err)?;
        let log = Log::open(&cfg.state_dir.join("ledger"), &cfg.federation, signer)
            .map_err(ledger_err)?;
        let anchor = Self { log };
        if anchor.log.size() == 0 {
            let bytes = encode_canonical(&genesis(cfg, now_ms)).map_err(ledger_err)?;
            validate_entry(0, &cfg.federation, &bytes).map_err(ledger_err)?;
            anchor
                .log
                .append_and_checkpoint(&[bytes])
                .map_err(ledger_err)?;
        }
        Ok(anchor)
    }

    /// The log (for export, proofs and replication).
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Append the record of a finished round, unless it is already there. Returns the entry's
    /// bytes and the checkpoint that covers it.
    pub fn anchor(
        &self,
        cfg: &FederationConfig,
        outcome: &RoundOutcome,
    ) -> Result<(Vec<u8>, SignedCheckpoint), CoordinatorError> {
        let size = self.log.size();
        if outcome.round < size {
            let bytes = self.log.entry(outcome.round).map_err(ledger_err)?;
            let cp = self.log.checkpoint().map_err(ledger_err)?;
            return Ok((bytes, cp));
        }
        if outcome.round != size {
            return Err(CoordinatorError::Ledger(format!(
                "cannot anchor round {} into a log of {size} entries (rounds are contiguous)",
                outcome.round
            )));
        }
        let bytes = encode_canonical(&round_record(cfg, outcome)).map_err(ledger_err)?;
        validate_entry(outcome.round, &cfg.federation, &bytes).map_err(ledger_err)?;
        fail::fail_point!("coordinator::ledger::before_append", |_| Err(
            CoordinatorError::Ledger("injected failure: coordinator::ledger::before_append".into())
        ));
        let (_, cp) = self
            .log
            .append_and_checkpoint(std::slice::from_ref(&bytes))
            .map_err(ledger_err)?;
        fail::fail_point!("coordinator::ledger::after_append", |_| Err(
            CoordinatorError::Ledger("injected failure: coordinator::ledger::after_append".into())
        ));
        Ok((bytes, cp))
    }

    /// Anchor every stored outcome the log does not have yet (after a crash between storing a
    /// round and anchoring it).
    pub fn catch_up(
        &self,
        cfg: &FederationConfig,
        outcomes: &[RoundOutcome],
    ) -> Result<u64, CoordinatorError> {
        let mut added = 0;
        for o in outcomes {
            if o.round >= self.log.size() {
                self.anchor(cfg, o)?;
                added += 1;
            }
        }
        Ok(added)
    }
}

/// Entry 0: the federation as configured, created at `created_at_ms`.
pub fn genesis(cfg: &FederationConfig, created_at_ms: u64) -> FederationRecord {
    let mut participants: Vec<ParticipantRecord> = cfg
        .participants
        .iter()
        .map(|p| ParticipantRecord {
            name: p.name.clone(),
            public_key: p.public_key_hex.clone(),
        })
        .collect();
    participants.sort_by(|a, b| a.public_key.cmp(&b.public_key));
    let t = &cfg.training;
    FederationRecord {
        v: RECORD_VERSION,
        record_type: FEDERATION_TYPE.into(),
        federation: cfg.federation.clone(),
        created_at: rfc3339(created_at_ms),
        participants,
        model: ModelSpecRecord {
            kind: cfg.model.kind.as_str().into(),
            features: cfg.model.features as u64,
            classes: cfg.model.classes as u64,
            hidden: cfg.model.hidden.iter().map(|h| *h as u64).collect(),
            params: cfg.model.num_params() as u64,
        },
        training: TrainingRecord {
            rounds: cfg.rounds,
            quorum: u64::from(cfg.quorum),
            local_epochs: u64::from(t.local_epochs),
            batch_size: u64::from(t.batch_size),
            learning_rate: decimal(t.learning_rate),
            aggregation: if cfg.server_dp.is_some() {
                "dp-fedavg".into()
            } else {
                cfg.strategy.as_str().into()
            },
        },
        privacy: PrivacyRecord {
            epsilon_budget: decimal(cfg.privacy_plan.epsilon_budget),
            delta: decimal(cfg.privacy_plan.delta),
            clip_norm: decimal(t.clip_norm),
            noise_multiplier: decimal(t.noise_multiplier),
            // The accountants whose spends this federation records, comma-separated.
            accountant: cfg
                .privacy_plan
                .accountants
                .iter()
                .map(|a| a.name())
                .collect::<Vec<_>>()
                .join(","),
        },
        witnesses: WitnessesRecord {
            keys: cfg.witnesses.clone(),
            quorum: cfg.witness_quorum,
        },
        reward: RewardRecord {
            rule: REWARD_RULE.into(),
            pool_per_round: cfg.valuation.reward_pool_per_round,
        },
        validation: DigestRecord {
            sha256: cfg.validation_sha256.clone(),
        },
    }
}

/// Entry `round`: what the round produced, who contributed, what each was paid and spent.
pub fn round_record(cfg: &FederationConfig, o: &RoundOutcome) -> RoundRecord {
    let completed = o.status == RoundStatus::Completed;
    let mut contributions: Vec<ContributionRecord> = o
        .contributions
        .iter()
        .map(|c| {
            let p = c.privacy.as_ref();
            ContributionRecord {
                participant: c.public_key.clone(),
                name: c.name.clone(),
                examples: c.examples,
                update_sha256: c.update_sha256.clone(),
                signature: base64_signature(&c.signature),
                value_nano: if completed { c.value_nano } else { 0 },
                reward: if completed { c.reward } else { 0 },
                epsilon_micro: p.map_or(0, |p| micro_up(p.epsilon_round)),
                epsilon_total_micro: p.map_or(0, |p| micro_up(p.epsilon_total)),
                dp: DpRecord {
                    noise_multiplier: decimal(p.map_or(0.0, |p| p.noise_multiplier)),
                    sampling_rate: decimal(p.map_or(0.0, |p| p.sampling_rate)),
                    steps: p.map_or(0, |p| p.steps),
                    delta: decimal(p.map_or(0.0, |p| p.delta)),
                    accountant: p.map_or("none", |p| p.accountant.name()).into(),
                },
                flags: c.flags.clone(),
            }
        })
        .collect();
    contributions.sort_by(|a, b| a.participant.cmp(&b.participant));
    let mut declined: Vec<DeclinedRecord> = o
        .declined
        .iter()
        .map(|d| DeclinedRecord {
            participant: d.public_key.clone(),
            reason: d.reason.clone(),
        })
        .collect();
    declined.sort_by(|a, b| a.participant.cmp(&b.participant));
    let utility = o
        .valuation
        .as_ref()
        .map_or(cfg.valuation.utility_name(), |v| v.utility.clone());
    let score = |m: Option<&fedledger_model::Metrics>| {
        m.map_or(0, |m| {
            if utility == "accuracy" {
                nano(m.accuracy)
            } else {
                nano(-m.log_loss)
            }
        })
    };
    RoundRecord {
        v: RECORD_VERSION,
        record_type: ROUND_TYPE.into(),
        federation: cfg.federation.clone(),
        round: o.round,
        status: o.status,
        reason: if completed {
            None
        } else {
            Some(o.reason.clone().unwrap_or_else(|| "abandoned".into()))
        },
        opened_at: rfc3339(o.opened_at_ms),
        closed_at: rfc3339(o.closed_at_ms),
        model: ModelDigestsRecord {
            before: o.model_before.clone(),
            after: o.model_after.clone(),
            params: o.params,
        },
        validation: ValidationRecord {
            sha256: o.validation_sha256.clone(),
            metric: utility.clone(),
            score_before_nano: score(o.metrics_before.as_ref()),
            score_after_nano: score(o.metrics.as_ref().or(o.metrics_before.as_ref())),
        },
        valuation: match &o.valuation {
            Some(v) => ValuationRecord {
                estimator: v.estimator.clone(),
                seed: v.seed,
                evaluations: v.evaluations,
            },
            None => ValuationRecord {
                estimator: "none".into(),
                seed: 0,
                evaluations: 0,
            },
        },
        reward_pool: if completed { o.reward_pool } else { 0 },
        contributions,
        declined,
    }
}

fn base64_signature(hex_sig: &str) -> String {
    use base64::Engine;
    let bytes = hex::decode(hex_sig).unwrap_or_default();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
