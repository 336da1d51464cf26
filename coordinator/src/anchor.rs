//! Anchoring: the federation's genesis (a federation entry and one enrolment entry per key) and,
//! per finished round, one entry per contribution and decline followed by the round's summary,
//! appended to the coordinator's signed Merkle log (`fedledger-ledger`, record format v2) in
//! one atomic batch with a signed checkpoint. The round's outcome is stored first; anchoring is
//! idempotent by round number and catches up after a crash, so every finished round ends up in
//! the log exactly once, in order.

use std::{
    collections::BTreeMap,
    sync::Mutex,
    time::{Duration, UNIX_EPOCH},
};

use fedledger_ledger::{
    Log,
    keys::load_or_generate_key,
    note::{NoteSigner, SignedCheckpoint},
    records::{
        CONTRIBUTION_TYPE, ContributionEntry, DECLINE_TYPE, DeclineEntry, DigestRecord,
        ENROLMENT_TYPE, EnrolmentEntry, EntryRange, FEDERATION_TYPE, FederationEntry,
        GovernanceRecord, MAX_SETTLEMENT_LINES, ModelDigestsRecord, ModelSpecRecord, PrivacyPlan,
        RECORD_VERSION, ROLE_CONTRIBUTOR, ROLE_VALIDATOR, ROUND_TYPE, Record, RoundRange,
        RoundStatus, RoundSummary, SETTLEMENT_TYPE, ServerDpRecord, SettlementEntry,
        SettlementLine, TrainingRecord, UNCERTAINTY_BOOTSTRAP, UncertaintyRecord, UtilitiesClaim,
        VERDICT_DISTINGUISHABLE, VERDICT_NOT_DISTINGUISHABLE, ValidationRecord, ValuationRecord,
        WitnessesRecord, encode_canonical, validate_entry,
    },
};

use crate::{
    config::FederationConfig,
    error::CoordinatorError,
    types::{RoundOutcome, SettlementOutcome},
    value::{recorded_scores, round_utility},
};

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

/// Where an anchored round is in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Anchored {
    /// Index of the round's summary entry.
    pub summary: u64,
    /// The round's contribution and decline entries.
    pub entries: EntryRange,
}

/// The coordinator's log, and where each anchored round is in it.
pub struct Anchor {
    log: Log,
    rounds: Mutex<BTreeMap<u64, Anchored>>,
}

impl Anchor {
    /// Open (or create, with its genesis) the log in `<state_dir>/ledger`, signed with the
    /// coordinator's key (created on first start). A state directory whose log was written in
    /// the first record format is refused: formats are never mixed in one log.
    pub fn open(cfg: &FederationConfig, now_ms: u64) -> Result<Self, CoordinatorError> {
        let key = load_or_generate_key(&cfg.key).map_err(ledger_err)?;
        let signer = NoteSigner::log(&cfg.federation, key).map_err(ledger_err)?;
        let log = Log::open(&cfg.state_dir.join("ledger"), &cfg.federation, signer)
            .map_err(ledger_err)?;
        if log.size() == 0 {
            if cfg.participants.is_empty() {
                return Err(CoordinatorError::Config(
                    "no [[participant]] enrolled: a new federation's genesis needs at least one \
                     (after the genesis they may be left out; the governed enrolment holds)"
                        .into(),
                ));
            }
            log.append_and_checkpoint(&genesis(cfg, now_ms)?)
                .map_err(ledger_err)?;
        }
        let rounds = index_rounds(&log)?;
        Ok(Self {
            log,
            rounds: Mutex::new(rounds),
        })
    }

    /// The log (for export, proofs and replication).
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Where `round` is in the log, once anchored.
    pub fn anchored(&self, round: u64) -> Option<Anchored> {
        self.rounds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&round)
            .copied()
    }

    /// The last round in the log (0 before the first).
    pub fn last_round(&self) -> u64 {
        self.rounds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last_key_value()
            .map_or(0, |(r, _)| *r)
    }

    /// Append the entries of a finished round, unless the round is already in the log. Returns
    /// where it is and the checkpoint that covers it.
    pub fn anchor(
        &self,
        cfg: &FederationConfig,
        outcome: &RoundOutcome,
    ) -> Result<(Anchored, SignedCheckpoint), CoordinatorError> {
        if let Some(a) = self.anchored(outcome.round) {
            let cp = self.log.checkpoint().map_err(ledger_err)?;
            return Ok((a, cp));
        }
        let last = self.last_round();
        if outcome.round != last + 1 {
            return Err(CoordinatorError::Ledger(format!(
                "cannot anchor round {} after round {last} (rounds are contiguous)",
                outcome.round
            )));
        }
        let first = self.log.size();
        let (batch, summary_at) = round_entries(cfg, outcome, first)?;
        fail::fail_point!("coordinator::ledger::before_append", |_| Err(
            CoordinatorError::Ledger("injected failure: coordinator::ledger::before_append".into())
        ));
        let (_, cp) = self.log.append_and_checkpoint(&batch).map_err(ledger_err)?;
        // Test builds: sign a second, inconsistent checkpoint of this size and publish it
        // instead (`return` for every round, `return(<round>)` for one), so monitors see a fork.
        #[cfg(feature = "failpoints")]
        let cp = match fail::eval("coordinator::ledger::fork", |r| r) {
            Some(r) if r.as_deref().is_none_or(|r| r == outcome.round.to_string()) => {
                tracing::warn!(
                    round = outcome.round,
                    "failpoint: signing a forked checkpoint"
                );
                self.log.sign_forked_checkpoint().map_err(ledger_err)?
            }
            _ => cp,
        };
        let anchored = Anchored {
            summary: first + summary_at as u64,
            entries: EntryRange {
                first,
                count: summary_at as u64,
            },
        };
        self.rounds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(outcome.round, anchored);
        fail::fail_point!("coordinator::ledger::after_append", |_| Err(
            CoordinatorError::Ledger("injected failure: coordinator::ledger::after_append".into())
        ));
        Ok((anchored, cp))
    }

    /// Anchor every stored outcome the log does not have yet (after a crash between storing a
    /// round and anchoring it), by round number.
    pub fn catch_up(
        &self,
        cfg: &FederationConfig,
        outcomes: &[RoundOutcome],
    ) -> Result<u64, CoordinatorError> {
        let mut added = 0;
        for o in outcomes {
            if self.anchored(o.round).is_none() {
                self.anchor(cfg, o)?;
                added += 1;
            }
        }
        Ok(added)
    }
}

/// Where each round's summary and entries are, from the log itself (so recovery goes by round
/// number, whatever else stands between rounds). Refuses a log in the first record format.
pub fn index_rounds(log: &Log) -> Result<BTreeMap<u64, Anchored>, CoordinatorError> {
    let origin = log.origin().to_owned();
    let mut rounds = BTreeMap::new();
    let size = log.size();
    let mut start = 0;
    while start < size {
        let end = (start + 4096).min(size);
        for (i, e) in (start..end).zip(log.entries(start, end).map_err(ledger_err)?) {
            match validate_entry(i, &origin, &e).map_err(ledger_err)? {
                Record::V1Federation(_) | Record::V1Round(_) => {
                    return Err(CoordinatorError::Ledger(
                        "the ledger in this state directory was written in record format v1 by an \
                         older fedledger; this version writes v2 and never mixes formats in one \
                         log. Finish that federation with the version that started it (its \
                         export still verifies), or start this one in a new state directory"
                            .into(),
                    ));
                }
                Record::Round(s) => {
                    rounds.insert(
                        s.round,
                        Anchored {
                            summary: i,
                            entries: s.entries,
                        },
                    );
                }
                _ => {}
            }
        }
        start = end;
    }
    Ok(rounds)
}

/// The genesis: the federation as configured (entry 0), then one enrolment entry per key,
/// sorted by key.
pub fn genesis(
    cfg: &FederationConfig,
    created_at_ms: u64,
) -> Result<Vec<Vec<u8>>, CoordinatorError> {
    let t = &cfg.training;
    let mut participants: Vec<(&crate::config::Enrolled, &str)> = cfg
        .participants
        .iter()
        .map(|p| (p, ROLE_CONTRIBUTOR))
        .chain(cfg.validators.iter().map(|v| (v, ROLE_VALIDATOR)))
        .collect();
    participants.sort_by(|a, b| a.0.public_key_hex.cmp(&b.0.public_key_hex));
    let federation = FederationEntry {
        v: RECORD_VERSION,
        record_type: FEDERATION_TYPE.into(),
        federation: cfg.federation.clone(),
        created_at: rfc3339(created_at_ms),
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
        privacy: PrivacyPlan {
            epsilon_budget: decimal(cfg.privacy_plan.epsilon_budget),
            delta: decimal(cfg.privacy_plan.delta),
            clip_norm: decimal(t.clip_norm),
            noise_multiplier: decimal(t.noise_multiplier),
            accountants: cfg.privacy_plan.accountant_names(),
        },
        witnesses: WitnessesRecord {
            keys: cfg.witnesses.clone(),
            quorum: cfg.witness_quorum,
        },
        reward: cfg.rewards.record(cfg.valuation.reward_pool_per_round),
        validation: DigestRecord {
            sha256: cfg.validation_sha256.clone(),
        },
        governance: GovernanceRecord {
            governors: cfg.governance.governors.clone(),
            threshold: cfg.governance.threshold,
        },
        schema: cfg.governance.schema.clone(),
        enrolments: participants.len() as u64,
    };
    let mut out = vec![encode_canonical(&federation).map_err(ledger_err)?];
    for (p, role) in participants {
        out.push(
            encode_canonical(&EnrolmentEntry {
                v: RECORD_VERSION,
                record_type: ENROLMENT_TYPE.into(),
                federation: cfg.federation.clone(),
                participant: p.public_key_hex.clone(),
                name: p.name.clone(),
                role: role.into(),
            })
            .map_err(ledger_err)?,
        );
    }
    for (i, e) in out.iter().enumerate() {
        validate_entry(i as u64, &cfg.federation, e).map_err(ledger_err)?;
    }
    Ok(out)
}

fn base64_signature(hex_sig: &str) -> String {
    fedledger_ledger::note::b64_encode(&hex::decode(hex_sig).unwrap_or_default())
}

/// Test-only lies (the `failpoints` feature): true when `point` is configured to `return` for
/// the hospital `name` (`return(<name>)`) or for every hospital (`return`).
#[cfg(feature = "failpoints")]
fn lie(point: &str, name: &str) -> bool {
    fail::eval(point, |arg| arg.is_none_or(|a| a.is_empty() || a == name)).unwrap_or(false)
}

/// What a lying coordinator records instead of what the hospital signed or was told: the
/// failpoints `coordinator::record::other_digest`, `other_examples`, `other_privacy`,
/// `other_reward` change one field of the hospital's contribution entry (and
/// `other_settlement` its settlement line, see [`falsify_line`]); `omit_entry` leaves
/// its contribution or decline out of the round. Without the feature, the truth.
#[cfg(feature = "failpoints")]
fn falsify(c: &mut ContributionEntry) {
    if lie("coordinator::record::other_digest", &c.name) {
        let flipped = if c.update_sha256.ends_with('0') {
            "1"
        } else {
            "0"
        };
        c.update_sha256.replace_range(63.., flipped);
    }
    if lie("coordinator::record::other_examples", &c.name) {
        c.examples += 1;
    }
    if lie("coordinator::record::other_privacy", &c.name) {
        if c.privacy.accountant == fedledger_ledger::records::ACCOUNTANT_NONE {
            c.privacy.accountant = "rdp".into();
            c.privacy.delta_pico = 10_000_000;
        } else {
            c.privacy.noise_multiplier_micro += 1;
        }
    }
    if lie("coordinator::record::other_reward", &c.name) {
        c.reward += 1;
    }
}

/// The failpoint `coordinator::record::other_settlement` changes the hospital's settlement
/// line: one unit less paid when it is paid (the pool still covers the payouts), else one
/// nano-unit more value.
#[cfg(feature = "failpoints")]
fn falsify_line(l: &mut SettlementLine, name: &str) {
    if lie("coordinator::record::other_settlement", name) {
        if l.payout > 0 {
            l.payout -= 1;
        } else {
            l.value_nano += 1;
        }
    }
}

#[cfg(not(feature = "failpoints"))]
fn falsify_line(_: &mut SettlementLine, _: &str) {}

#[cfg(feature = "failpoints")]
fn omitted(name: &str) -> bool {
    lie("coordinator::record::omit_entry", name)
}

#[cfg(not(feature = "failpoints"))]
fn falsify(_: &mut ContributionEntry) {}

#[cfg(not(feature = "failpoints"))]
fn omitted(_: &str) -> bool {
    false
}

/// A finished round's entries when the log holds `first` entries before them: one per
/// contribution (sorted by key), one per decline (sorted by key), the summary, then the
/// settlement of the period it ends (settled rule). Returns them and the summary's position.
pub fn round_entries(
    cfg: &FederationConfig,
    o: &RoundOutcome,
    first: u64,
) -> Result<(Vec<Vec<u8>>, usize), CoordinatorError> {
    let completed = o.status == RoundStatus::Completed;
    let mut out = Vec::with_capacity(o.contributions.len() + o.declined.len() + 1);
    let mut contributions: Vec<_> = o.contributions.iter().collect();
    contributions.sort_by(|a, b| a.public_key.cmp(&b.public_key));
    for c in contributions.into_iter().filter(|c| !omitted(&c.name)) {
        let mut entry = ContributionEntry {
            v: RECORD_VERSION,
            record_type: CONTRIBUTION_TYPE.into(),
            federation: cfg.federation.clone(),
            round: o.round,
            participant: c.public_key.clone(),
            name: c.name.clone(),
            examples: c.examples,
            update_sha256: c.update_sha256.clone(),
            privacy: c.privacy.clone(),
            signature: base64_signature(&c.signature),
            value_nano: if completed { c.value_nano } else { 0 },
            value_se_nano: Some(if completed { c.value_se_nano } else { 0 }),
            reward: if completed { c.reward } else { 0 },
            flags: c.flags.clone(),
        };
        falsify(&mut entry);
        out.push(encode_canonical(&entry).map_err(ledger_err)?);
    }
    let mut declined: Vec<_> = o.declined.iter().collect();
    declined.sort_by(|a, b| a.public_key.cmp(&b.public_key));
    for d in declined.into_iter().filter(|d| !omitted(&d.name)) {
        out.push(
            encode_canonical(&DeclineEntry {
                v: RECORD_VERSION,
                record_type: DECLINE_TYPE.into(),
                federation: cfg.federation.clone(),
                round: o.round,
                participant: d.public_key.clone(),
                name: d.name.clone(),
                reason: d.reason.clone(),
                signature: base64_signature(&d.signature),
            })
            .map_err(ledger_err)?,
        );
    }
    // The validators' signed vectors the round's values follow from, each in its parts.
    if completed && let Some(v) = &o.validators {
        for m in &v.vectors {
            let claim = UtilitiesClaim {
                federation: &cfg.federation,
                round: o.round,
                validator: &m.validator,
                name: &m.name,
                coalitions_sha256: &m.coalitions_sha256,
                utilities: &m.utilities,
                signature: &m.signature,
            };
            for part in claim.entries() {
                out.push(encode_canonical(&part).map_err(ledger_err)?);
            }
        }
    }
    let utility = round_utility(cfg, o);
    let (score_before_nano, score_after_nano) = recorded_scores(cfg, o);
    let summary = RoundSummary {
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
            score_before_nano,
            score_after_nano,
        },
        valuation: match &o.valuation {
            Some(v) => ValuationRecord {
                estimator: v.estimator.clone(),
                seed: v.seed,
                evaluations: v.evaluations,
                uncertainty: (v.bootstrap_resamples >= 2).then(|| UncertaintyRecord {
                    method: UNCERTAINTY_BOOTSTRAP.into(),
                    resamples: u64::from(v.bootstrap_resamples),
                }),
                validators: o.validators.as_ref().map(|v| v.record.clone()),
            },
            None => ValuationRecord {
                estimator: "none".into(),
                seed: 0,
                evaluations: 0,
                uncertainty: None,
                validators: None,
            },
        },
        reward_pool: if completed { o.reward_pool } else { 0 },
        server_dp: o.server_dp.as_ref().map(|d| {
            ServerDpRecord::new(
                &decimal(d.clip_norm),
                d.noise_multiplier,
                d.epsilon,
                d.delta,
            )
        }),
        entries: EntryRange {
            first,
            count: out.len() as u64,
        },
        rules_sha256: o.rules_sha256.clone(),
    };
    let summary_at = out.len();
    out.push(encode_canonical(&summary).map_err(ledger_err)?);
    if let Some(st) = &o.settlement {
        out.extend(settlement_entries(cfg, st)?);
    }
    for (i, e) in out.iter().enumerate() {
        validate_entry(first + i as u64, &cfg.federation, e).map_err(ledger_err)?;
    }
    Ok((out, summary_at))
}

/// A period's settlement as ledger entries: the lines in parts of at most
/// [`MAX_SETTLEMENT_LINES`], each part repeating the period, rule, counted rounds and pool.
pub fn settlement_entries(
    cfg: &FederationConfig,
    st: &SettlementOutcome,
) -> Result<Vec<Vec<u8>>, CoordinatorError> {
    let lines: Vec<SettlementLine> = st
        .lines
        .iter()
        .map(|l| SettlementLine {
            participant: l.public_key.clone(),
            value_nano: l.value_nano,
            se_nano: l.se_nano,
            rounds: l.rounds,
            verdict: if l.distinguishable {
                VERDICT_DISTINGUISHABLE
            } else {
                VERDICT_NOT_DISTINGUISHABLE
            }
            .into(),
            payout: l.payout,
        })
        .zip(&st.lines)
        .map(|(mut line, l)| {
            falsify_line(&mut line, &l.name);
            line
        })
        .collect();
    let chunks: Vec<&[SettlementLine]> = if lines.is_empty() {
        vec![&[]]
    } else {
        lines.chunks(MAX_SETTLEMENT_LINES).collect()
    };
    let parts = chunks.len() as u64;
    chunks
        .into_iter()
        .enumerate()
        .map(|(k, chunk)| {
            encode_canonical(&SettlementEntry {
                v: RECORD_VERSION,
                record_type: SETTLEMENT_TYPE.into(),
                federation: cfg.federation.clone(),
                period: st.period,
                rounds: RoundRange {
                    first: st.first_round,
                    last: st.last_round,
                },
                rule: st.rule.clone().unwrap_or_else(|| {
                    cfg.rewards.record(
                        st.pool_per_round
                            .unwrap_or(cfg.valuation.reward_pool_per_round),
                    )
                }),
                counted_rounds: st.counted_rounds.clone(),
                pool: st.pool,
                part: k as u64 + 1,
                parts,
                participants: chunk.to_vec(),
            })
            .map_err(ledger_err)
        })
        .collect()
}

/// SHA-256 (lowercase hex) of entry 0, the federation's genesis entry: the digest the operator
/// gives each hospital to pin.
pub fn genesis_sha256(log: &Log) -> Result<String, CoordinatorError> {
    Ok(hex::encode(fedledger_ledger::merkle::sha256_bytes(
        &log.entry(0).map_err(ledger_err)?,
    )))
}

/// The round's entries as recorded: its summary and the contribution and decline entries it
/// names (for replay and for hospitals checking their own entry).
pub fn recorded_round(
    log: &Log,
    at: Anchored,
) -> Result<(RoundSummary, Vec<ContributionEntry>, Vec<DeclineEntry>), CoordinatorError> {
    let origin = log.origin().to_owned();
    let summary = match validate_entry(
        at.summary,
        &origin,
        &log.entry(at.summary).map_err(ledger_err)?,
    )
    .map_err(ledger_err)?
    {
        Record::Round(s) => *s,
        _ => {
            return Err(CoordinatorError::Ledger(format!(
                "entry {} is not a round summary",
                at.summary
            )));
        }
    };
    let mut contributions = Vec::new();
    let mut declines = Vec::new();
    let (first, end) = (at.entries.first, at.entries.first + at.entries.count);
    for (i, e) in (first..end).zip(log.entries(first, end).map_err(ledger_err)?) {
        match validate_entry(i, &origin, &e).map_err(ledger_err)? {
            Record::Contribution(c) => contributions.push(*c),
            Record::Decline(d) => declines.push(*d),
            // Validators' vectors: `verify` checks them against the summary.
            Record::Utilities(_) => {}
            _ => {
                return Err(CoordinatorError::Ledger(format!(
                    "entry {i} of round {} is neither a contribution, a decline nor a validator's vector",
                    summary.round
                )));
            }
        }
    }
    Ok((summary, contributions, declines))
}
