//! Verification of an exported ledger directory (see [`crate::export`]), from files alone.
//!
//! Checks every signature (log, cosignatures, participants' update signatures, in parallel),
//! every inclusion proof, the recomputed root of every checkpoint, consistency between all
//! checkpoints, every record's schema, contiguous round numbers, rewards against pools, and —
//! when an [`EpsilonAccountant`] is plugged in — each contribution's epsilon figures against its
//! recorded `dp` parameters. Stored evidence of equivocation is a failure, shown with both notes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use rayon::prelude::*;

use crate::merkle::{self, MemoryTree};
use crate::note::{
    Evidence, KEY_TYPE_COSIGNATURE, KEY_TYPE_ED25519, SignedCheckpoint, TlogProof, VerifierKey,
};
use crate::records::{self, Record};

mod v1;
mod v2;
mod validators;

/// One recorded release: the Poisson-subsampled Gaussian mechanism run for `steps` steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Run {
    /// Noise standard deviation over the clipping norm.
    pub noise_multiplier: f64,
    /// Poisson sampling rate of each step.
    pub sampling_rate: f64,
    /// Steps.
    pub steps: u64,
}

/// What every round must agree on with the genesis, in either format.
struct RoundVsGenesis<'a> {
    pool_per_round: u64,
    params: u64,
    validation: &'a str,
}

/// Whether a contribution may be paid: a positive value and not flagged as a copy (the
/// valuation's `copy_of:<name>` flag). A completed round in which none may be paid records a
/// pool of 0.
fn may_be_paid(value_nano: i64, flags: &[String]) -> bool {
    value_nano > 0
        && !flags
            .iter()
            .any(|f| f.starts_with("copy_of:") || f == records::FLAG_EXCLUDED_BY_QUALITY)
}

impl RoundVsGenesis<'_> {
    /// A completed round pays the genesis pool, or nothing when no contribution may be paid
    /// (none has a positive value, or only copies do: `payable` is false); the model size and validation file are the
    /// genesis's; the model chains from the previous round's (`prev_after`, then updated).
    #[allow(clippy::too_many_arguments)]
    fn check<'r>(
        &self,
        file: &str,
        status: records::RoundStatus,
        reward_pool: u64,
        payable: bool,
        model: &'r records::ModelDigestsRecord,
        validation: &str,
        prev_after: &mut Option<&'r str>,
        r: &mut VerifyReport,
    ) {
        let due = if payable { self.pool_per_round } else { 0 };
        if status == records::RoundStatus::Completed && reward_pool != due {
            r.fail(
                file,
                if payable {
                    format!(
                        "reward_pool {reward_pool} differs from the genesis pool_per_round {} (the pool in force)",
                        self.pool_per_round
                    )
                } else {
                    format!(
                        "reward_pool {reward_pool} where no contribution has a positive value \
                         that may be paid (the pool is then 0)"
                    )
                },
            );
        }
        if model.params != self.params {
            r.fail(
                file,
                format!(
                    "model.params {} differs from the genesis model ({})",
                    model.params, self.params
                ),
            );
        }
        if validation != self.validation {
            r.fail(
                file,
                "validation.sha256 differs from the genesis validation digest",
            );
        }
        if let Some(p) = prev_after
            && *p != model.before
        {
            r.fail(file, "model.before is not the previous round's model.after");
        }
        *prev_after = Some(&model.after);
    }
}

/// Recomputes cumulative epsilon from recorded DP parameters. The ledger does not know any
/// accountant; the privacy crate provides one and the caller plugs it in.
pub trait EpsilonAccountant: Sync {
    /// Cumulative epsilon at `delta` of one participant's releases `runs` (in ledger order),
    /// by the accountant named `accountant` (`rdp`, `pld`, `rdp-dp-accounting`).
    fn cumulative_epsilon(&self, accountant: &str, delta: f64, runs: &[Run])
    -> Result<f64, String>;
}

/// One recorded contribution as a reward rule reads it.
#[derive(Debug, Clone, Copy)]
pub struct RecordedValue<'a> {
    /// The participant's key, lowercase hex.
    pub participant: &'a str,
    /// The round's value, nano-units.
    pub value_nano: i64,
    /// Its standard error, nano-units (0 when not recorded).
    pub se_nano: u64,
    /// The contribution's flags (a copy is not paid).
    pub flags: &'a [String],
}

/// One recorded round as a reward rule reads it.
#[derive(Debug, Clone)]
pub struct RecordedRound<'a> {
    pub round: u64,
    /// Completed (not abandoned).
    pub completed: bool,
    /// `score_after_nano - score_before_nano` of its summary (saturating).
    pub gain_nano: i64,
    /// Its contributions, in ledger order.
    pub values: Vec<RecordedValue<'a>>,
}

/// What a reward rule says a period's settlement must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecomputedSettlement {
    /// The rounds that count, ascending.
    pub counted_rounds: Vec<u64>,
    /// Units split.
    pub pool: u64,
    /// Lines sorted by key.
    pub lines: Vec<records::SettlementLine>,
}

/// A round's validators as the consensus rule reads them (see [`RewardRule::consensus`]).
#[derive(Debug, Clone, Copy)]
pub struct ConsensusInputs<'a> {
    /// The design's seed (announced in the round's task header).
    pub seed: u64,
    /// Exact designs up to this many players.
    pub exact_max: u64,
    /// Sampled permutations above.
    pub permutations: u64,
    /// The round's contributors (the players, sorted by key).
    pub players: usize,
    /// One utility vector per validator, in the order of `validators`.
    pub vectors: &'a [&'a [i64]],
    /// The validators' keys, ascending.
    pub validators: &'a [&'a str],
    /// Units offered to the validators.
    pub pool: u64,
    /// Distance beyond which a validator is flagged, thousandths.
    pub max_distance_milli: u64,
    /// The quality rule's `k`, when curation is on.
    pub quality_k: Option<u64>,
    /// The contributors' keys (the players, sorted).
    pub player_keys: &'a [&'a str],
    /// Each validator's standing before this round (its own and the consensus values summed
    /// per contributor over the rounds it was judged in).
    pub standing: &'a ValidatorStanding,
}

/// Per validator key, per contributor key: (own values, consensus values) summed, nano-units.
pub type ValidatorStanding =
    std::collections::BTreeMap<String, std::collections::BTreeMap<String, (i128, i128)>>;

/// What the consensus rule says a round with validators must record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecomputedConsensus {
    /// Coalitions of the design.
    pub coalitions: u64,
    /// SHA-256 of the design's canonical coalition list.
    pub coalitions_sha256: String,
    /// The consensus game's values, nano-units, one per player.
    pub values_nano: Vec<i64>,
    /// Each validator's distance from consensus, thousandths.
    pub distances_milli: Vec<u64>,
    /// Each validator's reward.
    pub rewards: Vec<u64>,
    /// Per player, whether the quality rule keeps its update in the aggregate (all true
    /// without curation).
    pub keep: Vec<bool>,
    /// Each validator's standing after this round.
    pub standing: ValidatorStanding,
}

/// Recomputes a period's settlement from the recorded round values. The ledger knows no reward
/// rule; the valuation crate provides it (through the command-line package) and the caller
/// plugs it in.
pub trait RewardRule: Sync {
    /// The settlement under `rule` of the period made of the rounds of `history` from
    /// `first_round` on; `history` holds every recorded round up to the period's end,
    /// ascending (earlier rounds inform each participant's round-to-round noise, and the
    /// cumulative rule accumulates over all of them); `paid_before` is what the earlier
    /// settlements recorded as paid, by participant key (the cumulative rule pays towards
    /// each participant's share of everything paid).
    fn settle(
        &self,
        rule: &records::RewardRecord,
        history: &[RecordedRound<'_>],
        first_round: u64,
        paid_before: &BTreeMap<&str, u64>,
    ) -> Result<RecomputedSettlement, String>;

    /// The consensus of a round's validators: the design, the consensus game's values, each
    /// validator's distance and reward, and the quality rule's verdicts. `None` (the default)
    /// when this rule cannot recompute it; `verify` then reports the recomputation as skipped.
    fn consensus(
        &self,
        _inputs: &ConsensusInputs<'_>,
    ) -> Option<Result<RecomputedConsensus, String>> {
        None
    }
}

/// Options of [`verify_dir`].
#[derive(Default, Clone, Copy)]
pub struct VerifyOptions<'a> {
    /// Cosignatures required on the latest checkpoint; default: the genesis record's quorum.
    pub quorum: Option<u64>,
    /// Accountant for the epsilon check; `None` reports that check as skipped.
    pub accountant: Option<&'a dyn EpsilonAccountant>,
    /// Reward rule for recomputing settlements; `None` checks their arithmetic (pool, counted
    /// rounds, enrolment) and reports the recomputation as skipped.
    pub rewards: Option<&'a dyn RewardRule>,
}

/// One failed check: the file concerned and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Path relative to the export directory.
    pub file: String,
    /// What failed.
    pub what: String,
}

/// The outcome of [`verify_dir`].
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Checks that passed, one line each.
    pub passed: Vec<String>,
    /// Checks that could not run, with why.
    pub skipped: Vec<String>,
    /// Failures; empty means the ledger verifies.
    pub failures: Vec<Failure>,
    /// Evidence of equivocation found (also listed as failures).
    pub evidence: Vec<Evidence>,
}

impl VerifyReport {
    /// True if nothing failed.
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }

    fn fail(&mut self, file: impl Into<String>, what: impl Into<String>) {
        self.failures.push(Failure {
            file: file.into(),
            what: what.into(),
        });
    }
}

impl std::fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for p in &self.passed {
            writeln!(f, "ok      {p}")?;
        }
        for s in &self.skipped {
            writeln!(f, "SKIPPED {s}")?;
        }
        for e in &self.evidence {
            writeln!(f, "{e}")?;
        }
        for x in &self.failures {
            writeln!(f, "FAILED  {}: {}", x.file, x.what)?;
        }
        if self.ok() {
            writeln!(f, "ledger verifies")
        } else {
            writeln!(
                f,
                "ledger does NOT verify: {} failure(s)",
                self.failures.len()
            )
        }
    }
}

fn read(dir: &Path, rel: &str, report: &mut VerifyReport) -> Option<Vec<u8>> {
    match std::fs::read(dir.join(rel)) {
        Ok(b) => Some(b),
        Err(e) => {
            report.fail(rel, format!("cannot read: {e}"));
            None
        }
    }
}

/// Numeric file names in `dir/sub`, sorted; non-numeric names are failures.
fn numbered(dir: &Path, sub: &str, report: &mut VerifyReport) -> Vec<u64> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(dir.join(sub)) {
        Ok(rd) => rd,
        Err(e) => {
            report.fail(sub, format!("cannot list: {e}"));
            return out;
        }
    };
    for ent in rd.flatten() {
        let name = ent.file_name().to_string_lossy().into_owned();
        match name.parse::<u64>() {
            Ok(n) if n.to_string() == name => out.push(n),
            _ => report.fail(
                format!("{sub}/{name}"),
                "unexpected file name (expected a decimal index)",
            ),
        }
    }
    out.sort_unstable();
    out
}

/// Verifies an export directory. Never stops at the first failure.
pub fn verify_dir(dir: &Path, opts: VerifyOptions<'_>) -> VerifyReport {
    let mut r = VerifyReport::default();
    // Keys.
    let Some(log_key) = read(dir, "log.vkey", &mut r).and_then(|b| {
        let parsed = std::str::from_utf8(&b)
            .ok()
            .map(|s| VerifierKey::parse(s.trim_end_matches('\n')));
        match parsed {
            Some(Ok(k))
                if k.key_type == KEY_TYPE_ED25519
                    && b.ends_with(b"\n")
                    && b.iter().filter(|c| **c == b'\n').count() == 1 =>
            {
                Some(k)
            }
            Some(Ok(_)) => {
                r.fail("log.vkey", "not a single type-0x01 verifier key line");
                None
            }
            Some(Err(e)) => {
                r.fail("log.vkey", e.to_string());
                None
            }
            None => {
                r.fail("log.vkey", "not UTF-8");
                None
            }
        }
    }) else {
        return r;
    };
    // Latest checkpoint.
    let Some(latest_bytes) = read(dir, "checkpoint", &mut r) else {
        return r;
    };
    let latest = match SignedCheckpoint::open(&latest_bytes, &log_key) {
        Ok(c) => c,
        Err(e) => {
            r.fail("checkpoint", e.to_string());
            return r;
        }
    };
    r.passed.push(format!(
        "checkpoint: log signature by {} (size {})",
        log_key.name, latest.checkpoint.size
    ));
    let size = latest.checkpoint.size;
    let origin = log_key.name.clone();

    // Entries and the recomputed tree.
    // Work and memory follow the files that are there, never the size the checkpoint claims.
    let indices = numbered(dir, "entries", &mut r);
    if indices.len() as u64 != size || indices.iter().enumerate().any(|(i, n)| *n != i as u64) {
        r.fail(
            "entries",
            format!(
                "the checkpoint claims {size} entries but entries/ holds {} file(s) (expected 0..{size} exactly); nothing further is checked",
                indices.len()
            ),
        );
        return r;
    }
    let mut entries: Vec<Vec<u8>> = Vec::with_capacity(indices.len());
    for i in indices {
        entries.push(read(dir, &format!("entries/{i}"), &mut r).unwrap_or_default());
    }
    let tree = MemoryTree::from_entries(&entries);
    match tree.root_at(size) {
        Ok(root) if root == latest.checkpoint.root => r
            .passed
            .push(format!("checkpoint: root recomputed from {size} entries")),
        _ => r.fail(
            "checkpoint",
            "root does not match the root recomputed from entries/",
        ),
    }

    // Records: every entry's schema on its own; the checks across entries follow below.
    let records = check_schemas(&origin, &entries, &mut r);

    // Witness keys and cosignatures: the latest checkpoint is judged by the witnesses in
    // force at its size (the genesis's, or a governed change's among its entries).
    let schedule = witness_schedule(&records, &entries);
    let in_force = records::in_force_at(&schedule, size);
    let known: Option<BTreeSet<&str>> = (!schedule.is_empty()).then(|| {
        schedule
            .iter()
            .filter(|(from, _)| *from <= size)
            .flat_map(|(_, w)| w.keys.iter().map(String::as_str))
            .collect()
    });
    let witnesses = check_witnesses(dir, known.as_ref(), &mut r);
    let quorum = opts.quorum.or(in_force.map(|w| w.quorum)).unwrap_or(0);
    check_cosignatures("checkpoint", &latest, &log_key, &witnesses, &mut r);
    let cosigners = in_force.map_or(0, |w| {
        w.verifier_keys()
            .iter()
            .filter(|k| {
                latest.note.signatures.iter().any(|s| s.is_by(k))
                    && latest.note.verify_cosignature(k).is_ok()
            })
            .count()
    });
    if (cosigners as u64) < quorum {
        r.fail(
            "checkpoint",
            format!("{cosigners} valid cosignature(s), {quorum} required"),
        );
    } else {
        r.passed.push(format!(
            "checkpoint: {cosigners} valid cosignature(s), {quorum} required"
        ));
    }

    // Every published checkpoint: signature, recomputed root, consistency with the latest.
    let sizes = numbered(dir, "checkpoints", &mut r);
    let mut cps_ok = true;
    let mut published: Vec<SignedCheckpoint> = Vec::new();
    for s in &sizes {
        let rel = format!("checkpoints/{s}");
        let Some(b) = read(dir, &rel, &mut r) else {
            continue;
        };
        let cp = match SignedCheckpoint::open(&b, &log_key) {
            Ok(c) => c,
            Err(e) => {
                cps_ok = false;
                r.fail(&rel, e.to_string());
                continue;
            }
        };
        check_cosignatures(&rel, &cp, &log_key, &witnesses, &mut r);
        if cp.checkpoint.size != *s {
            cps_ok = false;
            r.fail(
                &rel,
                format!(
                    "file name says size {s}, checkpoint says {}",
                    cp.checkpoint.size
                ),
            );
            continue;
        }
        if *s > size {
            cps_ok = false;
            r.fail(
                &rel,
                format!("size {s} beyond the latest checkpoint ({size})"),
            );
            continue;
        }
        let root = tree.root_at(*s).ok();
        if root != Some(cp.checkpoint.root) {
            cps_ok = false;
            let ev = Evidence {
                reason: format!(
                    "{rel} is signed by the log but inconsistent with the entries under checkpoint"
                ),
                first: String::from_utf8_lossy(&latest_bytes).into_owned(),
                second: cp.encode(),
            };
            r.fail(
                &rel,
                "root differs from the root recomputed from entries/ (equivocation)",
            );
            r.evidence.push(ev);
            continue;
        }
        let proof = merkle::consistency_proof(&tree, *s, size).unwrap_or_default();
        if let Err(e) = merkle::verify_consistency(
            *s,
            size,
            &cp.checkpoint.root,
            &latest.checkpoint.root,
            &proof,
        ) {
            cps_ok = false;
            r.fail(&rel, format!("not consistent with checkpoint: {e}"));
        }
        published.push(cp);
    }
    if !sizes.contains(&size) {
        cps_ok = false;
        r.fail(
            "checkpoints",
            format!("the latest checkpoint (size {size}) is not among checkpoints/"),
        );
    }
    if cps_ok {
        r.passed.push(format!(
            "checkpoints: {} signed, roots recomputed, all consistent",
            sizes.len()
        ));
    }

    // Inclusion proofs.
    let proof_indices = numbered(dir, "proofs", &mut r);
    if proof_indices.len() as u64 != size {
        r.fail(
            "proofs",
            format!(
                "expected proofs 0..{size}, found {} file(s)",
                proof_indices.len()
            ),
        );
    }
    let proof_failures: Vec<Failure> = (0..size)
        .into_par_iter()
        .filter_map(|i| {
            let rel = format!("proofs/{i}");
            let b = match std::fs::read(dir.join(&rel)) {
                Ok(b) => b,
                Err(e) => {
                    return Some(Failure {
                        file: rel,
                        what: format!("cannot read: {e}"),
                    });
                }
            };
            let what = match TlogProof::parse(&b) {
                Err(e) => e.to_string(),
                Ok(p) if p.index != i => format!("proves index {} instead of {i}", p.index),
                Ok(p) if p.checkpoint != latest_bytes => {
                    "embeds a checkpoint other than checkpoint".into()
                }
                Ok(p) => match p.verify(
                    entries.get(i as usize).map_or(&[][..], Vec::as_slice),
                    &log_key,
                ) {
                    Ok(_) => return None,
                    Err(e) => format!("entries/{i} not proven: {e}"),
                },
            };
            Some(Failure { file: rel, what })
        })
        .collect();
    if proof_failures.is_empty() && proof_indices.len() as u64 == size {
        r.passed.push(format!(
            "proofs: {size} inclusion proofs verify against checkpoint"
        ));
    }
    r.failures.extend(proof_failures);

    check_across(&records, &entries, opts.accountant, opts.rewards, &mut r);

    // Evidence recorded by the store.
    if let Ok(rd) = std::fs::read_dir(dir.join("evidence")) {
        for ent in rd.flatten() {
            let rel = format!("evidence/{}", ent.file_name().to_string_lossy());
            match std::fs::read(ent.path())
                .ok()
                .and_then(|b| serde_json::from_slice::<Evidence>(&b).ok())
            {
                Some(ev) => {
                    r.fail(&rel, format!("equivocation recorded: {}", ev.reason));
                    r.evidence.push(ev);
                }
                None => r.fail(&rel, "unreadable evidence file"),
            }
        }
    }
    r
}

/// Every entry's schema on its own (failures named `entries/<index>`); the records, `None`
/// where an entry failed.
fn check_schemas(origin: &str, entries: &[Vec<u8>], r: &mut VerifyReport) -> Vec<Option<Record>> {
    let mut records: Vec<Option<Record>> = Vec::with_capacity(entries.len());
    let mut schema_ok = true;
    for (i, e) in entries.iter().enumerate() {
        match records::validate_entry(i as u64, origin, e) {
            Ok(rec) => records.push(Some(rec)),
            Err(err) => {
                schema_ok = false;
                r.fail(format!("entries/{i}"), err.to_string());
                records.push(None);
            }
        }
    }
    if schema_ok {
        r.passed.push(format!(
            "entries: {} records match their schema",
            entries.len()
        ));
    }
    records
}

/// The checks across entries, by the format the genesis names; a log is one format throughout.
fn check_across(
    records: &[Option<Record>],
    entries: &[Vec<u8>],
    accountant: Option<&dyn EpsilonAccountant>,
    rewards: Option<&dyn RewardRule>,
    r: &mut VerifyReport,
) {
    match records.first().and_then(Option::as_ref) {
        Some(Record::V1Federation(g)) => {
            let mut rounds = Vec::new();
            for (i, rec) in records.iter().enumerate().skip(1) {
                match rec {
                    Some(Record::V1Round(rr)) => rounds.push((i as u64, (**rr).clone())),
                    Some(other) => r.fail(
                        format!("entries/{i}"),
                        format!(
                            "a format v{} entry in a v1 ledger (formats are never mixed)",
                            other.version()
                        ),
                    ),
                    None => {}
                }
            }
            v1::check_rounds(g, &rounds, accountant, r);
        }
        Some(Record::Federation(_)) => v2::check(records, entries, accountant, rewards, r),
        _ if !records.is_empty() => r.fail("entries/0", "no valid genesis record"),
        _ => {}
    }
}

/// The checks `verify_dir` makes of the entries themselves, from their bytes alone: every
/// entry's schema, then across entries (enrolment, contiguous rounds, every hospital's
/// signature, rewards against pools, model digests chained, epsilon figures and settlements
/// when an accountant and a reward rule are given). Failures are named `entries/<index>`. A monitor runs it on the copy
/// it keeps.
pub fn verify_entries(
    origin: &str,
    entries: &[Vec<u8>],
    accountant: Option<&dyn EpsilonAccountant>,
    rewards: Option<&dyn RewardRule>,
) -> VerifyReport {
    let mut r = VerifyReport::default();
    let records = check_schemas(origin, entries, &mut r);
    check_across(&records, entries, accountant, rewards, &mut r);
    r
}

/// The witness sets of a ledger, from the size each starts at: a v1 genesis's, or a v2
/// genesis's followed by each witness change of a governance entry the acceptance rule admits
/// (the rule the coordinator, the log store and the monitor apply).
fn witness_schedule(
    records: &[Option<Record>],
    entries: &[Vec<u8>],
) -> Vec<(u64, records::WitnessesRecord)> {
    let mut follower = records::WitnessFollower::default();
    for (rec, bytes) in records.iter().zip(entries) {
        follower.read_parsed(bytes, rec.as_ref());
    }
    follower.schedule().to_vec()
}

fn check_witnesses(
    dir: &Path,
    known: Option<&BTreeSet<&str>>,
    r: &mut VerifyReport,
) -> Vec<VerifierKey> {
    let mut keys = Vec::new();
    let Some(b) = read(dir, "witnesses.vkeys", r) else {
        return keys;
    };
    let Ok(text) = std::str::from_utf8(&b) else {
        r.fail("witnesses.vkeys", "not UTF-8");
        return keys;
    };
    for (n, line) in text.lines().enumerate() {
        match VerifierKey::parse(line) {
            Ok(k) if k.key_type == KEY_TYPE_COSIGNATURE && k.to_string() == line => keys.push(k),
            Ok(_) => r.fail(
                "witnesses.vkeys",
                format!("line {}: not a cosignature/v1 (0x04) key", n + 1),
            ),
            Err(e) => r.fail("witnesses.vkeys", format!("line {}: {e}", n + 1)),
        }
    }
    if let Some(known) = known {
        let listed: BTreeSet<&str> = text.lines().collect();
        if listed != *known {
            r.fail(
                "witnesses.vkeys",
                "differs from the witness keys in force (the genesis record's, entries/0, and those governance entries added)",
            );
        }
    }
    keys
}

/// Verifies the cosignatures by known witnesses; returns how many are valid. Lines by keys that
/// are neither the log's nor a known witness's are failures: an export carries no others.
fn check_cosignatures(
    rel: &str,
    cp: &SignedCheckpoint,
    log_key: &VerifierKey,
    witnesses: &[VerifierKey],
    r: &mut VerifyReport,
) -> usize {
    for s in &cp.note.signatures {
        let known = s.is_by(log_key) || witnesses.iter().any(|w| s.is_by(w));
        if !known {
            r.fail(
                rel,
                format!(
                    "signature line by unknown key {} ({})",
                    s.name,
                    hex::encode(s.key_id)
                ),
            );
        }
    }
    let mut valid = 0;
    for w in witnesses {
        if cp.note.signatures.iter().any(|s| s.is_by(w)) {
            match cp.note.verify_cosignature(w) {
                Ok(_) => valid += 1,
                Err(e) => r.fail(rel, e.to_string()),
            }
        }
    }
    valid
}
