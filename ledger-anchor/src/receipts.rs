//! Receipts and statements: what a hospital keeps to prove, offline, what the ledger recorded
//! for it.
//!
//! A *receipt* is a C2SP tlog-proof@v1 file (an inclusion proof of one entry under a checkpoint
//! signed by the log and cosigned by the witnesses it relied on) kept with the entry itself.
//! [`verify_receipt`] checks one against a [`TrustPolicy`] (the log key, the witness keys and
//! how many must cosign): the log's signature, every cosignature line by a known witness (each
//! must verify; lines by keys the policy does not know are ignored, as the signed-note
//! specification says), the quorum of distinct witnesses, and the inclusion of the entry.
//!
//! A *statement* is a directory a hospital hands to anyone who asks ([`write_statement`]):
//!
//! - `trust.json`: the log's origin and verifier key, the genesis digest, the witness keys and
//!   quorum of the genesis (canonical JSON);
//! - `genesis.entry` and `genesis.tlog-proof`: entry 0 (whose SHA-256 is the genesis digest the
//!   operator gave the hospital) and its receipt;
//! - `rounds/<r>.entry` and `rounds/<r>.tlog-proof`: the hospital's contribution or decline
//!   entry of round `r` and its receipt;
//! - `settlements/<p>.entry` and `settlements/<p>.tlog-proof` (settled reward rule): the part of
//!   period `p`'s settlement that holds the hospital's line, and its receipt;
//! - `statement.json`: the summary (per round: kind, index, update digest, examples, epsilon,
//!   value, reward or the decline's reason; per settlement: the hospital's accumulated value,
//!   its standard error, the verdict and the payout; totals) and the SHA-256 of every other
//!   file, in canonical JSON.
//!
//! [`verify_statement`] checks such a directory with nothing but its files (and, when given,
//! the log key and genesis digest the verifier obtained from the operator): every receipt,
//! every entry's schema and the hospital's signature on it, the genesis against the trust
//! file, and the summary recomputed from the entries byte for byte. A file whose digest differs
//! from the summary's list is named when it fails on its own, and the summary when the file
//! still verifies, so a one-byte change anywhere is reported against the file it was made in.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::LedgerError;
use crate::keys;
use crate::merkle::{self, Hash, sha256_bytes};
use crate::note::{
    KEY_TYPE_COSIGNATURE, KEY_TYPE_ED25519, SignedCheckpoint, TlogProof, VerifierKey,
    verify_cosignature_payload,
};
use crate::records::{self, Record};

/// `format` of `statement.json`.
pub const STATEMENT_FORMAT: &str = "fedledger.statement/v1";

/// Whose signatures a receipt must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustPolicy {
    /// The log's key (type 0x01; its name is the origin).
    pub log_key: VerifierKey,
    /// Witnesses' cosignature/v1 keys (type 0x04).
    pub witnesses: Vec<VerifierKey>,
    /// Distinct witnesses that must cosign.
    pub quorum: u64,
}

/// A receipt that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedReceipt {
    /// The entry's index.
    pub index: u64,
    /// The checkpoint it is proven under.
    pub checkpoint: SignedCheckpoint,
    /// Names of the witnesses whose cosignature verified.
    pub cosigners: Vec<String>,
}

/// `trust.json`: the keys a statement (or a single receipt) is checked against. The outside
/// reference data's `trust.json` reads as one too (its extra fields are ignored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustFile {
    /// The log's origin (the name of its key).
    pub origin: String,
    /// The log's verifier key.
    pub log_vkey: String,
    /// Witness name to cosignature/v1 verifier key.
    pub witness_vkeys: BTreeMap<String, String>,
    /// Distinct witnesses that must cosign.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<u64>,
    /// SHA-256 of entry 0, lowercase hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub genesis_sha256: Option<String>,
}

impl TrustFile {
    /// The policy it describes; `quorum` overrides the file's (the reference file has none).
    pub fn policy(&self, quorum: Option<u64>) -> Result<TrustPolicy, LedgerError> {
        let bad = |r: String| LedgerError::malformed("trust file", r);
        let log_key = VerifierKey::parse(&self.log_vkey)?;
        if log_key.key_type != KEY_TYPE_ED25519 {
            return Err(bad("log_vkey is not a type-0x01 note key".into()));
        }
        if log_key.name != self.origin {
            return Err(bad(format!(
                "log_vkey is named {:?}, not the origin {:?}",
                log_key.name, self.origin
            )));
        }
        let mut witnesses = Vec::new();
        for (name, k) in &self.witness_vkeys {
            let w = VerifierKey::parse(k)?;
            if w.key_type != KEY_TYPE_COSIGNATURE || &w.name != name {
                return Err(bad(format!(
                    "witness {name:?}: not a cosignature/v1 key by that name"
                )));
            }
            witnesses.push(w);
        }
        let quorum = quorum
            .or(self.quorum)
            .ok_or_else(|| bad("no quorum given".into()))?;
        if quorum as usize > witnesses.len() {
            return Err(bad(format!(
                "quorum {quorum} exceeds the {} witnesses",
                witnesses.len()
            )));
        }
        Ok(TrustPolicy {
            log_key,
            witnesses,
            quorum,
        })
    }

    /// Parses `trust.json`.
    pub fn parse(bytes: &[u8]) -> Result<Self, LedgerError> {
        serde_json::from_slice(bytes)
            .map_err(|e| LedgerError::malformed("trust file", e.to_string()))
    }
}

/// Checks one receipt (`proof`, a tlog-proof@v1 text) for `entry` against `policy`.
pub fn verify_receipt(
    proof: &[u8],
    entry: &[u8],
    policy: &TrustPolicy,
) -> Result<VerifiedReceipt, LedgerError> {
    let p = TlogProof::parse(proof)?;
    let cp = SignedCheckpoint::open(&p.checkpoint, &policy.log_key)?;
    let cosigners = check_cosignatures(&cp, policy)?;
    merkle::verify_inclusion(
        &merkle::leaf_hash(entry),
        p.index,
        cp.checkpoint.size,
        &p.proof,
        &cp.checkpoint.root,
    )?;
    Ok(VerifiedReceipt {
        index: p.index,
        checkpoint: cp,
        cosigners,
    })
}

/// Every line of the checkpoint by a policy witness must verify; at least `quorum` distinct
/// witnesses must have one. Lines by unknown keys are ignored. Returns the cosigners' names.
pub fn check_cosignatures(
    cp: &SignedCheckpoint,
    policy: &TrustPolicy,
) -> Result<Vec<String>, LedgerError> {
    let mut cosigners: Vec<String> = Vec::new();
    for s in &cp.note.signatures {
        if let Some(w) = policy.witnesses.iter().find(|w| s.is_by(w)) {
            verify_cosignature_payload(w, &cp.note.text, &s.payload)?;
            if !cosigners.contains(&w.name) {
                cosigners.push(w.name.clone());
            }
        }
    }
    if (cosigners.len() as u64) < policy.quorum {
        return Err(LedgerError::Signature(format!(
            "{} valid cosignature(s) by known witnesses, {} required",
            cosigners.len(),
            policy.quorum
        )));
    }
    Ok(cosigners)
}

/// A receipt of entry `index` under `checkpoint`, keeping only the log's signature and the
/// first `quorum` valid cosignatures by the policy's witnesses (in the policy's order): the
/// ones it relies on.
pub fn make_receipt(
    index: u64,
    proof: Vec<Hash>,
    checkpoint: &SignedCheckpoint,
    policy: &TrustPolicy,
) -> Result<TlogProof, LedgerError> {
    let mut cp = checkpoint.clone();
    let mut kept: Vec<_> = cp
        .note
        .signatures
        .iter()
        .filter(|s| s.is_by(&policy.log_key))
        .cloned()
        .collect();
    let mut cosigned = 0;
    for w in &policy.witnesses {
        if cosigned >= policy.quorum {
            break;
        }
        if let Some(s) = cp.note.signatures.iter().find(|s| {
            s.is_by(w) && verify_cosignature_payload(w, &cp.note.text, &s.payload).is_ok()
        }) {
            kept.push(s.clone());
            cosigned += 1;
        }
    }
    if cosigned < policy.quorum {
        return Err(LedgerError::Signature(format!(
            "{cosigned} valid cosignature(s), {} required",
            policy.quorum
        )));
    }
    cp.note.signatures = kept;
    Ok(TlogProof {
        extra: None,
        index,
        proof,
        checkpoint: cp.encode().into_bytes(),
    })
}

/// One round of a statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatementRound {
    /// The round.
    pub round: u64,
    /// `contribution` or `decline`.
    pub kind: String,
    /// The entry's index in the log.
    pub index: u64,
    /// Update digest (contributions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_sha256: Option<String>,
    /// Examples claimed (contributions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub examples: Option<u64>,
    /// Accountant of the privacy object (contributions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accountant: Option<String>,
    /// Cumulative epsilon in this federation, micro-units (contributions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epsilon_micro: Option<u64>,
    /// This release's epsilon, micro-units (contributions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epsilon_round_micro: Option<u64>,
    /// Shapley value times 1e9 (contributions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_nano: Option<i64>,
    /// Reward in base units (contributions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward: Option<u64>,
    /// Why (declines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Totals of a statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatementTotals {
    /// Rounds with a receipt.
    pub rounds: u64,
    /// Of which contributions.
    pub contributions: u64,
    /// Of which declines.
    pub declines: u64,
    /// Sum of rewards.
    pub reward: u64,
    /// The largest cumulative epsilon recorded, micro-units.
    pub epsilon_micro: u64,
    /// Sum of settlement payouts (settled reward rule; absent when there are none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub paid: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The hospital's line of one period's settlement (settled reward rule).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatementSettlement {
    /// The period.
    pub period: u64,
    /// Index of the settlement entry (the part holding the line) in the log.
    pub index: u64,
    /// First round of the period.
    pub first_round: u64,
    /// Last round of the period.
    pub last_round: u64,
    /// Accumulated value over the counted rounds, times 1e9.
    pub value_nano: i64,
    /// Its standard error, times 1e9.
    pub se_nano: u64,
    /// Whether the value was distinguishable from zero.
    pub verdict: String,
    /// Units paid.
    pub payout: u64,
}

/// `statement.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    /// Always [`STATEMENT_FORMAT`].
    pub format: String,
    /// The federation (the log's origin).
    pub federation: String,
    /// The hospital's Ed25519 key, 64 lowercase hex.
    pub participant: String,
    /// Its enrolled name, as its entries record it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// SHA-256 of entry 0.
    pub genesis_sha256: String,
    /// Per round, in round order.
    pub rounds: Vec<StatementRound>,
    /// Per settlement period, in period order (settled reward rule).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub settlements: Vec<StatementSettlement>,
    /// Totals.
    pub totals: StatementTotals,
    /// SHA-256 of every other file of the statement, by relative path.
    pub files: BTreeMap<String, String>,
}

/// Where a statement's files are, relative to its directory.
pub fn round_files(round: u64) -> (String, String) {
    (
        format!("rounds/{round}.entry"),
        format!("rounds/{round}.tlog-proof"),
    )
}

/// Where a statement keeps the governance entry at `index` (each one the hospital followed,
/// so that its witness changes and the governors who signed them can be checked).
pub fn governance_files(index: u64) -> (String, String) {
    (
        format!("governance/{index}.entry"),
        format!("governance/{index}.tlog-proof"),
    )
}

/// Where a statement keeps the settlement of `period` holding the hospital's line.
pub fn settlement_files(period: u64) -> (String, String) {
    (
        format!("settlements/{period}.entry"),
        format!("settlements/{period}.tlog-proof"),
    )
}

/// `participant`'s line of `rec`, which must be a part of `period`'s settlement.
pub fn settlement_line<'a>(
    rec: &'a Record,
    participant: &str,
    period: u64,
) -> Result<&'a crate::records::SettlementLine, String> {
    let Record::Settlement(s) = rec else {
        return Err("not a settlement entry".into());
    };
    if s.period != period {
        return Err(format!(
            "the entry settles period {}, not {period}",
            s.period
        ));
    }
    s.participants
        .iter()
        .find(|l| l.participant == participant)
        .ok_or_else(|| format!("the settlement holds no line of {participant}"))
}

fn sha_hex(b: &[u8]) -> String {
    hex::encode(sha256_bytes(b))
}

/// The statement of `participant` made of `rounds` (round, entry bytes), whose files hash to
/// `files`.
fn summarise(
    origin: &str,
    participant: &str,
    genesis_sha256: &str,
    rounds: &[(u64, u64, Record)],
    settled: &[(u64, u64, Record)],
    files: BTreeMap<String, String>,
) -> Statement {
    let mut out = Vec::new();
    let mut totals = StatementTotals {
        rounds: 0,
        contributions: 0,
        declines: 0,
        reward: 0,
        epsilon_micro: 0,
        paid: 0,
    };
    let mut name = None;
    for (round, index, rec) in rounds {
        let mut r = StatementRound {
            round: *round,
            kind: String::new(),
            index: *index,
            update_sha256: None,
            examples: None,
            accountant: None,
            epsilon_micro: None,
            epsilon_round_micro: None,
            value_nano: None,
            reward: None,
            reason: None,
        };
        match rec {
            Record::Contribution(c) => {
                r.kind = "contribution".into();
                r.update_sha256 = Some(c.update_sha256.clone());
                r.examples = Some(c.examples);
                r.accountant = Some(c.privacy.accountant.clone());
                r.epsilon_micro = Some(c.privacy.epsilon_micro);
                r.epsilon_round_micro = Some(c.privacy.epsilon_round_micro);
                r.value_nano = Some(c.value_nano);
                r.reward = Some(c.reward);
                totals.contributions += 1;
                totals.reward = totals.reward.saturating_add(c.reward);
                totals.epsilon_micro = totals.epsilon_micro.max(c.privacy.epsilon_micro);
                name.get_or_insert_with(|| c.name.clone());
            }
            Record::Decline(d) => {
                r.kind = "decline".into();
                r.reason = Some(d.reason.clone());
                totals.declines += 1;
                name.get_or_insert_with(|| d.name.clone());
            }
            _ => {}
        }
        totals.rounds += 1;
        out.push(r);
    }
    let mut settlements = Vec::new();
    for (period, index, rec) in settled {
        if let (Record::Settlement(s), Ok(line)) = (rec, settlement_line(rec, participant, *period))
        {
            totals.paid = totals.paid.saturating_add(line.payout);
            settlements.push(StatementSettlement {
                period: *period,
                index: *index,
                first_round: s.rounds.first,
                last_round: s.rounds.last,
                value_nano: line.value_nano,
                se_nano: line.se_nano,
                verdict: line.verdict.clone(),
                payout: line.payout,
            });
        }
    }
    Statement {
        format: STATEMENT_FORMAT.into(),
        federation: origin.to_owned(),
        participant: participant.to_owned(),
        name,
        genesis_sha256: genesis_sha256.to_owned(),
        rounds: out,
        settlements,
        totals,
        files,
    }
}

/// Checks that `rec` is `participant`'s contribution or decline of `round`, signed by it.
fn check_own_entry(rec: &Record, participant: &str, round: u64) -> Result<(), String> {
    let key = hex::decode(participant).map_err(|_| "participant key is not hex".to_owned())?;
    let (who, r, msg, sig) = match rec {
        Record::Contribution(c) => (&c.participant, c.round, c.signing_message(), &c.signature),
        Record::Decline(d) => (&d.participant, d.round, d.signing_message(), &d.signature),
        _ => return Err("neither a contribution nor a decline".into()),
    };
    if who != participant {
        return Err(format!("the entry is {who}'s, not {participant}'s"));
    }
    if r != round {
        return Err(format!("the entry is of round {r}, not {round}"));
    }
    let sig = crate::note::b64_decode(sig).unwrap_or_default();
    if !keys::verify_ed25519(&key, msg.as_bytes(), &sig) {
        return Err("the hospital's signature on the entry does not verify".into());
    }
    Ok(())
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> LedgerError {
    move |e| LedgerError::io(context, e)
}

/// The numbers `<n>` of the files `<dir>/<n>.entry`, ascending (none when `dir` is absent).
fn numbered_entries(dir: &Path) -> Result<Vec<u64>, LedgerError> {
    let mut out = Vec::new();
    if dir.exists() {
        for e in std::fs::read_dir(dir).map_err(io(format!("list {}", dir.display())))? {
            let name = e
                .map_err(io(format!("list {}", dir.display())))?
                .file_name()
                .to_string_lossy()
                .into_owned();
            if let Some(n) = name
                .strip_suffix(".entry")
                .and_then(|r| r.parse::<u64>().ok())
            {
                out.push(n);
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Writes the statement of the receipts kept in `receipts` (a hospital's receipts folder of
/// one federation: `trust.json`, `genesis.*`, `rounds/*`, `settlements/*`) for `participant`
/// to `out`.
pub fn write_statement(
    receipts: &Path,
    participant: &str,
    out: &Path,
) -> Result<Statement, LedgerError> {
    let read = |rel: &str| {
        std::fs::read(receipts.join(rel))
            .map_err(io(format!("read {}", receipts.join(rel).display())))
    };
    let trust_bytes = read("trust.json")?;
    let trust = TrustFile::parse(&trust_bytes)?;
    let genesis = read("genesis.entry")?;
    let genesis_proof = read("genesis.tlog-proof")?;
    let rounds = numbered_entries(&receipts.join("rounds"))?;
    let periods = numbered_entries(&receipts.join("settlements"))?;
    let governance = numbered_entries(&receipts.join("governance"))?;
    std::fs::create_dir_all(out.join("rounds")).map_err(io(format!("create {}", out.display())))?;
    if !periods.is_empty() {
        std::fs::create_dir_all(out.join("settlements"))
            .map_err(io(format!("create {}", out.display())))?;
    }
    let mut files = BTreeMap::new();
    let mut put = |rel: String, bytes: &[u8]| -> Result<(), LedgerError> {
        std::fs::write(out.join(&rel), bytes).map_err(io(format!("write {rel}")))?;
        files.insert(rel, sha_hex(bytes));
        Ok(())
    };
    put("trust.json".into(), &trust_bytes)?;
    put("genesis.entry".into(), &genesis)?;
    put("genesis.tlog-proof".into(), &genesis_proof)?;
    if !governance.is_empty() {
        std::fs::create_dir_all(out.join("governance"))
            .map_err(io(format!("create {}", out.display())))?;
    }
    for n in governance {
        let (e, p) = governance_files(n);
        let entry = read(&e)?;
        let proof = read(&p)?;
        put(e, &entry)?;
        put(p, &proof)?;
    }
    let mut recs = Vec::new();
    for r in rounds {
        let (e, p) = round_files(r);
        let entry = read(&e)?;
        let proof = read(&p)?;
        let index = TlogProof::parse(&proof)?.index;
        recs.push((
            r,
            index,
            records::validate_entry(index, &trust.origin, &entry)?,
        ));
        put(e, &entry)?;
        put(p, &proof)?;
    }
    let mut settled = Vec::new();
    for period in periods {
        let (e, p) = settlement_files(period);
        let entry = read(&e)?;
        let proof = read(&p)?;
        let index = TlogProof::parse(&proof)?.index;
        settled.push((
            period,
            index,
            records::validate_entry(index, &trust.origin, &entry)?,
        ));
        put(e, &entry)?;
        put(p, &proof)?;
    }
    let statement = summarise(
        &trust.origin,
        participant,
        &sha_hex(&genesis),
        &recs,
        &settled,
        files,
    );
    let bytes = records::encode_canonical(&statement)?;
    std::fs::write(out.join("statement.json"), &bytes)
        .map_err(io("write statement.json".into()))?;
    Ok(statement)
}

/// What the verifier of a statement was told from outside the directory.
#[derive(Debug, Clone, Default)]
pub struct StatementOptions {
    /// The log's verifier key, as the operator published it.
    pub log_key: Option<VerifierKey>,
    /// The genesis digest the operator gave the hospital.
    pub genesis_sha256: Option<String>,
}

/// The outcome of [`verify_statement`]: the checks that passed and the failures by file.
#[derive(Debug, Clone, Default)]
pub struct StatementReport {
    /// The keys the statement was checked against and what passed.
    pub passed: Vec<String>,
    /// `(file, what)`; empty means the statement verifies.
    pub failures: Vec<(String, String)>,
    /// The verified summary (when `statement.json` parsed).
    pub statement: Option<Statement>,
}

impl StatementReport {
    /// True when nothing failed.
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }

    fn fail(&mut self, file: impl Into<String>, what: impl Into<String>) {
        self.failures.push((file.into(), what.into()));
    }

    /// The files named by failures.
    pub fn failed_files(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.failures.iter().map(|(f, _)| f.as_str()).collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

impl std::fmt::Display for StatementReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for p in &self.passed {
            writeln!(f, "ok      {p}")?;
        }
        for (file, what) in &self.failures {
            writeln!(f, "FAILED  {file}: {what}")?;
        }
        if self.ok() {
            writeln!(f, "statement verifies")
        } else {
            writeln!(
                f,
                "statement does NOT verify: {} failure(s)",
                self.failures.len()
            )
        }
    }
}

/// Files of a statement directory, relative (`statement.json` included).
fn listed_files(dir: &Path, report: &mut StatementReport) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_owned(), String::new())];
    while let Some((d, rel)) = stack.pop() {
        let rd = match std::fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) => {
                report.fail(
                    if rel.is_empty() { ".".into() } else { rel },
                    format!("cannot list: {e}"),
                );
                continue;
            }
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let r = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if e.path().is_dir() {
                stack.push((e.path(), r));
            } else {
                out.push(r);
            }
        }
    }
    out.sort();
    out
}

/// Verifies a statement directory (see the module docs) from its files alone.
pub fn verify_statement(dir: &Path, opts: &StatementOptions) -> StatementReport {
    let mut r = StatementReport::default();
    let present = listed_files(dir, &mut r);
    let read = |rel: &str| std::fs::read(dir.join(rel));
    // The summary first: it lists every other file's digest, which says where a change is.
    let statement_bytes = match read("statement.json") {
        Ok(b) => b,
        Err(e) => {
            r.fail("statement.json", format!("cannot read: {e}"));
            return r;
        }
    };
    let statement: Option<Statement> = match serde_json::from_slice::<Statement>(&statement_bytes) {
        Ok(s) if records::encode_canonical(&s).ok().as_deref() == Some(&statement_bytes[..]) => {
            Some(s)
        }
        Ok(_) => {
            r.fail("statement.json", "not in canonical JSON form");
            None
        }
        Err(e) => {
            r.fail("statement.json", format!("does not parse: {e}"));
            None
        }
    };
    let listed: BTreeMap<String, String> = statement
        .as_ref()
        .map(|s| s.files.clone())
        .unwrap_or_default();
    for f in &present {
        if f != "statement.json" && statement.is_some() && !listed.contains_key(f) {
            r.fail(f.clone(), "a file the statement does not list");
        }
    }
    // Each file: read, and whether its digest is the one listed.
    let mut contents: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut digest_ok: BTreeMap<String, bool> = BTreeMap::new();
    for f in listed.keys() {
        match read(f) {
            Ok(b) => {
                digest_ok.insert(f.clone(), listed.get(f) == Some(&sha_hex(&b)));
                contents.insert(f.clone(), b);
            }
            Err(e) => r.fail(
                "statement.json",
                format!("lists {f}, which cannot be read: {e}"),
            ),
        }
    }
    // A file that fails on its own is named; one that verifies but whose digest differs means
    // the summary's list was changed.
    let mut own_failures: BTreeMap<String, String> = BTreeMap::new();

    // Trust.
    let trust = contents.get("trust.json").and_then(|b| {
        let parsed = TrustFile::parse(b).and_then(|t| {
            if records::encode_canonical(&t)? != *b {
                return Err(LedgerError::malformed(
                    "trust file",
                    "not in canonical JSON form",
                ));
            }
            let p = t.policy(None)?;
            Ok((t, p))
        });
        match parsed {
            Ok(x) => Some(x),
            Err(e) => {
                own_failures.insert("trust.json".into(), e.to_string());
                None
            }
        }
    });
    if let (Some((_, p)), Some(k)) = (&trust, &opts.log_key)
        && &p.log_key != k
    {
        own_failures.insert(
            "trust.json".into(),
            format!("its log key {} is not the one given ({k})", p.log_key),
        );
    }
    if let (Some((t, _)), Some(g)) = (&trust, &opts.genesis_sha256)
        && t.genesis_sha256.as_deref() != Some(g.as_str())
    {
        own_failures.insert(
            "trust.json".into(),
            format!("its genesis digest is not the one given ({g})"),
        );
    }
    let policy = trust.as_ref().map(|(_, p)| p.clone());
    let origin = trust.as_ref().map(|(t, _)| t.origin.clone());

    // The witness sets the receipts are judged by: the trust file's (the genesis's), then
    // each governed change among the statement's governance entries, admitted in ledger order
    // by the governors in force (chained from the genesis, their threshold of valid
    // signatures). Each governance entry's own receipt is checked with the others below.
    let governance_numbers = {
        let mut v: Vec<u64> = listed
            .keys()
            .filter_map(|f| {
                let stem = f.strip_prefix("governance/")?.strip_suffix(".entry")?;
                stem.parse::<u64>().ok().filter(|n| n.to_string() == stem)
            })
            .collect();
        v.sort_unstable();
        v
    };
    let policies: Vec<(u64, TrustPolicy)> = match (&trust, &origin, contents.get("genesis.entry")) {
        (Some((_, base)), Some(origin), Some(g_bytes)) => governed_policies(
            base,
            origin,
            g_bytes,
            &governance_numbers,
            &contents,
            &mut own_failures,
        ),
        (Some((_, base)), _, _) => vec![(0, base.clone())],
        _ => Vec::new(),
    };
    // Genesis: its digest, its receipt, and the witnesses it names.
    let genesis_sha = contents.get("genesis.entry").map(|b| sha_hex(b));
    if let (Some((t, _)), Some(g)) = (&trust, contents.get("genesis.entry")) {
        if t.genesis_sha256.as_deref() != genesis_sha.as_deref() {
            // Which one changed: the entry if it no longer proves, else the trust file.
            let proves = contents.get("genesis.tlog-proof").is_some_and(|pr| {
                policy_for(&policies, pr)
                    .and_then(|p| verify_receipt(pr, g, p))
                    .is_ok()
            });
            let file = if proves {
                "trust.json"
            } else {
                "genesis.entry"
            };
            own_failures.insert(
                file.into(),
                "genesis digest differs between trust.json and genesis.entry".into(),
            );
        }
        match records::validate_entry(0, &t.origin, g) {
            Ok(Record::Federation(f)) => {
                let mut named: Vec<String> = f.witnesses.keys.clone();
                named.sort();
                let mut trusted: Vec<String> = t.witness_vkeys.values().cloned().collect();
                trusted.sort();
                if named != trusted || Some(f.witnesses.quorum) != t.quorum {
                    own_failures.insert(
                        "trust.json".into(),
                        "its witnesses or quorum differ from the genesis entry's".into(),
                    );
                } else {
                    r.passed.push(format!(
                        "genesis: witnesses {:?}, quorum {}",
                        t.witness_vkeys.keys().collect::<Vec<_>>(),
                        f.witnesses.quorum
                    ));
                }
            }
            Ok(_) => {
                own_failures.insert("genesis.entry".into(), "not a v2 federation entry".into());
            }
            Err(e) => {
                own_failures.insert("genesis.entry".into(), e.to_string());
            }
        }
        match contents.get("genesis.tlog-proof") {
            Some(pr) => match policy_for(&policies, pr).and_then(|p| verify_receipt(pr, g, p)) {
                Ok(v) if v.index == 0 => {}
                Ok(v) => {
                    own_failures.insert(
                        "genesis.tlog-proof".into(),
                        format!("proves index {}, not 0", v.index),
                    );
                }
                Err(e) => {
                    let file = blame(&digest_ok, "genesis.entry", "genesis.tlog-proof");
                    own_failures.insert(file, e.to_string());
                }
            },
            None => r.fail("genesis.tlog-proof", "missing"),
        }
    }

    // Rounds and settlements.
    let participant = statement.as_ref().map(|s| s.participant.clone());
    let mut recs: Vec<(u64, u64, Record)> = Vec::new();
    let mut settled: Vec<(u64, u64, Record)> = Vec::new();
    let mut seen_roots: BTreeMap<u64, (Hash, String)> = BTreeMap::new();
    let numbered = |dir: &str, f: &str| -> Option<u64> {
        let rest = f.strip_prefix(dir)?.strip_prefix('/')?;
        let stem = rest
            .strip_suffix(".entry")
            .or_else(|| rest.strip_suffix(".tlog-proof"))?;
        stem.parse::<u64>().ok().filter(|n| n.to_string() == stem)
    };
    let numbers = |dir: &str| -> Vec<u64> {
        let mut v: Vec<u64> = listed.keys().filter_map(|f| numbered(dir, f)).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let (round_numbers, periods) = (numbers("rounds"), numbers("settlements"));
    for f in listed.keys() {
        let ok = f == "trust.json"
            || f == "genesis.entry"
            || f == "genesis.tlog-proof"
            || numbered("rounds", f).is_some()
            || numbered("settlements", f).is_some()
            || numbered("governance", f).is_some();
        if !ok {
            r.fail(f.clone(), "not a file a statement holds");
        }
    }
    if let (Some(policy), Some(origin), Some(participant)) = (&policy, &origin, &participant) {
        let mut proven = Proven {
            contents: &contents,
            digest_ok: &digest_ok,
            policies: policies.clone(),
            origin,
            seen_roots: &mut seen_roots,
            own_failures: &mut own_failures,
            report: &mut r,
        };
        // Each governance entry (admitted above) with its receipt.
        for n in &governance_numbers {
            let (ef, pf) = governance_files(*n);
            if let Some((index, _)) = proven.check(&ef, &pf, |rec| match rec {
                Record::Governance(_) => Ok(()),
                _ => Err("not a governance entry".into()),
            }) && index != *n
            {
                proven
                    .own_failures
                    .insert(pf.clone(), format!("proves index {index}, not {n}"));
            }
        }
        if !governance_numbers.is_empty() {
            proven.report.passed.push(format!(
                "governance: {} entr(y/ies) chained from the genesis and signed by the governors in force; {} witness set(s)",
                governance_numbers.len(),
                proven.policies.len()
            ));
        }
        for round in &round_numbers {
            let (ef, pf) = round_files(*round);
            if let Some(x) = proven.check(&ef, &pf, |rec| check_own_entry(rec, participant, *round))
            {
                recs.push((*round, x.0, x.1));
            }
        }
        for period in &periods {
            let (ef, pf) = settlement_files(*period);
            if let Some(x) = proven.check(&ef, &pf, |rec| {
                settlement_line(rec, participant, *period).map(|_| ())
            }) {
                settled.push((*period, x.0, x.1));
            }
        }
        r.passed.push(format!(
            "log key {} (compare it with the one the operator published)",
            policy.log_key
        ));
    }
    // Digests: a changed file that still verifies points at the summary's list.
    for (f, ok) in &digest_ok {
        if !ok && !own_failures.contains_key(f) {
            r.fail(
                "statement.json",
                format!("lists another SHA-256 for {f}, which verifies"),
            );
        }
    }
    // A file that is as listed but fails was failed by its context: the trust file when that
    // changed, else the summary (which names the hospital).
    let trust_changed = digest_ok.get("trust.json") == Some(&false);
    for (f, what) in own_failures {
        if f != "trust.json" && digest_ok.get(&f) == Some(&true) {
            let blamed = if trust_changed {
                "trust.json"
            } else {
                "statement.json"
            };
            r.fail(blamed, format!("{f} fails against it: {what}"));
        } else {
            r.fail(f, what);
        }
    }
    // The summary, recomputed from the entries.
    if let (Some(s), Some(origin), Some(g)) = (&statement, &origin, &genesis_sha)
        && r.ok()
    {
        let again = summarise(origin, &s.participant, g, &recs, &settled, s.files.clone());
        if &again != s {
            r.fail(
                "statement.json",
                "its summary differs from what the entries record",
            );
        } else {
            r.passed.push(format!(
                "{} round(s) of {}: {} contribution(s), {} decline(s), reward {}, epsilon {} \
                 (micro), {} settlement(s) paying {}",
                s.totals.rounds,
                s.participant,
                s.totals.contributions,
                s.totals.declines,
                s.totals.reward,
                s.totals.epsilon_micro,
                s.settlements.len(),
                s.totals.paid
            ));
        }
    }
    r.statement = statement;
    r
}

/// The policy a receipt's checkpoint is judged by: of `policies` (by the size each starts
/// at, ascending), the one in force at its size.
fn policy_for<'a>(
    policies: &'a [(u64, TrustPolicy)],
    proof: &[u8],
) -> Result<&'a TrustPolicy, LedgerError> {
    let first = policies
        .first()
        .ok_or_else(|| LedgerError::malformed("statement", "no trust policy"))?;
    let p = TlogProof::parse(proof)?;
    let size = SignedCheckpoint::open(&p.checkpoint, &first.1.log_key)?
        .checkpoint
        .size;
    Ok(records::in_force_at(policies, size).unwrap_or(&first.1))
}

/// The trust file's policy `base` (the genesis's witnesses), then one per governed witness
/// change among the statement's governance entries `numbers`, each admitted in ledger order
/// by the governors in force ([`records::Governance::admit_signed`]); an entry that is not
/// admitted is a failure of its file and changes nothing.
fn governed_policies(
    base: &TrustPolicy,
    origin: &str,
    genesis: &[u8],
    numbers: &[u64],
    contents: &BTreeMap<String, Vec<u8>>,
    own_failures: &mut BTreeMap<String, String>,
) -> Vec<(u64, TrustPolicy)> {
    let Ok(Record::Federation(g)) = records::validate_entry(0, origin, genesis) else {
        return vec![(0, base.clone())];
    };
    let mut gov = records::Governance::new(genesis, &g, &[]);
    for n in numbers {
        let (ef, _) = governance_files(*n);
        let Some(bytes) = contents.get(&ef) else {
            continue;
        };
        match records::validate_entry(*n, origin, bytes) {
            Ok(Record::Governance(e)) => {
                if let Err(why) = gov.admit_signed(*n, bytes, &e) {
                    own_failures.insert(ef, format!("not admitted: {why}"));
                }
            }
            Ok(_) => {
                own_failures.insert(ef, "not a governance entry".into());
            }
            Err(e) => {
                own_failures.insert(ef, e.to_string());
            }
        }
    }
    let mut out = vec![(0, base.clone())];
    out.extend(gov.witness_schedule().iter().skip(1).map(|(from, w)| {
        (
            *from,
            TrustPolicy {
                log_key: base.log_key.clone(),
                witnesses: w.verifier_keys(),
                quorum: w.quorum,
            },
        )
    }));
    out
}

/// What checks one entry of a statement and its receipt.
struct Proven<'a> {
    contents: &'a BTreeMap<String, Vec<u8>>,
    digest_ok: &'a BTreeMap<String, bool>,
    /// The policies by the checkpoint size each starts at, ascending: the trust file's (the
    /// genesis's witnesses), then each governed witness change among the statement's
    /// governance entries.
    policies: Vec<(u64, TrustPolicy)>,
    origin: &'a str,
    /// Checkpoint roots seen, by size, and the receipt each came from.
    seen_roots: &'a mut BTreeMap<u64, (Hash, String)>,
    own_failures: &'a mut BTreeMap<String, String>,
    report: &'a mut StatementReport,
}

impl Proven<'_> {
    /// The entry `ef` proven by the receipt `pf`, parsed, when it verifies and `own` accepts
    /// it; otherwise the failure is noted against the file to blame.
    fn check(
        &mut self,
        ef: &str,
        pf: &str,
        own: impl FnOnce(&Record) -> Result<(), String>,
    ) -> Option<(u64, Record)> {
        let (Some(entry), Some(proof)) = (self.contents.get(ef), self.contents.get(pf)) else {
            self.report.fail(
                if self.contents.contains_key(ef) {
                    pf
                } else {
                    ef
                },
                "missing (an entry comes with its receipt)",
            );
            return None;
        };
        let v =
            match policy_for(&self.policies, proof).and_then(|p| verify_receipt(proof, entry, p)) {
                Ok(v) => v,
                Err(e) => {
                    self.own_failures
                        .insert(blame(self.digest_ok, ef, pf), e.to_string());
                    return None;
                }
            };
        let cp = &v.checkpoint.checkpoint;
        if let Some((root, other)) = self.seen_roots.get(&cp.size)
            && *root != cp.root
        {
            self.own_failures.insert(
                pf.to_owned(),
                format!(
                    "its checkpoint of size {} has another root than {other}'s: the log \
                     equivocated",
                    cp.size
                ),
            );
        }
        self.seen_roots.insert(cp.size, (cp.root, pf.to_owned()));
        match records::validate_entry(v.index, self.origin, entry) {
            Ok(rec) => match own(&rec) {
                Ok(()) => Some((v.index, rec)),
                Err(e) => {
                    self.own_failures.insert(ef.to_owned(), e);
                    None
                }
            },
            Err(e) => {
                self.own_failures.insert(ef.to_owned(), e.to_string());
                None
            }
        }
    }
}

/// Of an entry and its receipt that do not verify together, the one whose digest changed (the
/// receipt when both or neither did).
fn blame(digest_ok: &BTreeMap<String, bool>, entry: &str, proof: &str) -> String {
    match (digest_ok.get(entry), digest_ok.get(proof)) {
        (Some(false), Some(true)) => entry.to_owned(),
        _ => proof.to_owned(),
    }
}
