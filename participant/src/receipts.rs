//! Receipts, checked every round: after each round this hospital answered, it fetches from the
//! log's tlog-tiles API its own entry (contribution or decline), the round's summary, their
//! inclusion proofs, a checkpoint cosigned by the genesis quorum of witnesses and a consistency
//! proof from the last checkpoint it accepted, and checks that the entry holds exactly what it
//! signed (update digest, examples, privacy object, or its decline) and the value and reward the
//! coordinator reported to it. The receipt (a C2SP tlog-proof keeping only the cosignatures it
//! relied on, and the entry) is stored under `<state_dir>/receipts/<federation>/`.
//!
//! The genesis is pinned: entry 0 must hash to the digest the operator gave, be proven under a
//! checkpoint signed by the pinned log key, and name a witness quorum above zero (unless the
//! configuration allows none). A difference stops the agent: an evidence file (what was
//! expected, what was found, the checkpoints involved) is written under
//! `<state_dir>/evidence/` and the store remembers the halt until `fedledger-participant
//! resume`.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use fedledger_ledger::{
    http::TilesClient,
    merkle::{self, sha256_bytes},
    note::{SignedCheckpoint, b64_encode},
    receipts::{
        TrustFile, TrustPolicy, check_cosignatures, governance_files, make_receipt, round_files,
        settlement_files,
    },
    records::{self, Record, VERDICT_DISTINGUISHABLE, WitnessFollower, encode_canonical},
    tiles::TileCache,
};
use serde_json::json;
use tonic::Code;
use tracing::{info, warn};

use crate::{
    client::Client,
    config::Pins,
    store::{Halt, LocalStore, RoundRecord, StoreError, receipt_state},
};

/// How receipts are checked (from `[ledger]`).
#[derive(Clone, Debug)]
pub struct ReceiptSettings {
    /// The log's tlog-tiles URL prefix.
    pub url: String,
    /// How it is reached (TLS trust, plaintext, proxy).
    pub link: crate::link::LinkSettings,
    /// The pinned log key and genesis digest.
    pub pins: Pins,
    /// Accept a genesis without a witness quorum.
    pub allow_no_witnesses: bool,
    /// How long to wait for a receipt that gates the next submission.
    pub timeout: Duration,
}

/// Why receipts stop the agent.
#[derive(Debug, thiserror::Error)]
pub enum ReceiptError {
    /// The ledger does not hold what this hospital signed or was told, or its log is not
    /// consistent with what it accepted before.
    #[error("receipt of round {round} does not match: {what}; evidence written to {}", evidence.display())]
    Mismatch {
        round: u64,
        what: String,
        evidence: PathBuf,
    },
    /// The federation is not the pinned one, or names no witness quorum when one is required.
    #[error("federation refused: {0}")]
    Refused(String),
    /// A receipt that gates the next submission was not complete in time.
    #[error("the receipt of round {round} was not complete within {secs} s (last: {last})")]
    Timeout { round: u64, secs: u64, last: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

/// One completed receipt check: its time and what it fetched.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReceiptStat {
    pub round: u64,
    /// Time of the successful check.
    pub micros: u64,
    /// Bytes of tiles, bundles and checkpoint fetched by it.
    pub bytes: u64,
    /// HTTP requests made by it.
    pub requests: u64,
}

/// Not fatal: try again later (the round has not closed, the checkpoint is not witnessed yet,
/// the server is unreachable...), or fatal.
enum Failure {
    NotYet(String),
    Fatal(ReceiptError),
}

impl From<ReceiptError> for Failure {
    fn from(e: ReceiptError) -> Self {
        Failure::Fatal(e)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Fatal(e.into())
    }
}

fn not_yet(e: impl std::fmt::Display) -> Failure {
    Failure::NotYet(e.to_string())
}

/// A file or folder name for a federation (origins may hold `/`).
pub fn federation_dir(federation: &str) -> String {
    federation
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The receipts folder of `federation` in `state_dir`.
pub fn receipts_dir(state_dir: &Path, federation: &str) -> PathBuf {
    state_dir.join("receipts").join(federation_dir(federation))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ReceiptError> {
    let io = |context: String| move |source| ReceiptError::Io { context, source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(io(format!("write {}", tmp.display())))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io(format!("sync {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(io(format!("rename to {}", path.display())))
}

/// The receipts of one hospital in one federation.
pub struct Receipts {
    settings: ReceiptSettings,
    tiles: TilesClient<crate::link::Connector>,
    state_dir: PathBuf,
    federation: String,
    participant: String,
    /// The policy of the last checkpoint checked (the genesis's witnesses, or a governed
    /// change's), once the genesis is verified.
    trust: Option<TrustPolicy>,
    /// The log's witness sets, followed entry by entry from the genesis (in memory: a restart
    /// reads the log again).
    follower: WitnessFollower,
    /// Governance entries followed but not yet kept with a receipt (`governance/<index>.*`),
    /// so that a statement proves the witness sets its receipts were judged by.
    unkept: Vec<u64>,
    /// Keys the genesis enrols: no round has more contribution and decline entries.
    enrolments: u64,
    /// Completed checks of this run.
    pub stats: Vec<ReceiptStat>,
    /// Settlements checked in this run: (period, units paid to this hospital).
    pub settled: Vec<(u64, u64)>,
}

/// What a check found, for the evidence file.
struct Found {
    index: Option<u64>,
    entry: Option<String>,
}

impl Receipts {
    /// Receipts of `participant` (hex key) in `federation`, kept under `state_dir`.
    pub fn new(
        settings: ReceiptSettings,
        state_dir: &Path,
        federation: &str,
        participant: &str,
    ) -> Result<Self, ReceiptError> {
        let link = crate::link::Link::new(&settings.url, &settings.link)
            .map_err(|e| ReceiptError::Refused(format!("ledger.url: {e}")))?;
        let tiles =
            TilesClient::with_connector(&settings.url, link.connector(crate::link::ALPN_HTTP1))
                .map_err(|e| ReceiptError::Refused(format!("ledger.url: {e}")))?;
        if settings.pins.log_key.name != federation {
            return Err(ReceiptError::Refused(format!(
                "the pinned log key is for the log {:?}, but the coordinator runs the federation \
                 {federation:?}",
                settings.pins.log_key.name
            )));
        }
        Ok(Self {
            settings,
            tiles,
            state_dir: state_dir.to_owned(),
            federation: federation.to_owned(),
            participant: participant.to_owned(),
            trust: None,
            follower: WitnessFollower::default(),
            unkept: Vec::new(),
            enrolments: 0,
            stats: Vec::new(),
            settled: Vec::new(),
        })
    }

    /// This federation's receipts folder.
    pub fn dir(&self) -> PathBuf {
        receipts_dir(&self.state_dir, &self.federation)
    }

    /// Rounds of this federation whose receipt is pending, by round.
    pub fn pending(&self, store: &LocalStore) -> Result<Vec<RoundRecord>, StoreError> {
        let mut v: Vec<RoundRecord> = store
            .rounds()?
            .into_iter()
            .filter(|r| {
                r.federation == self.federation
                    && r.receipt.as_deref() == Some(receipt_state::PENDING)
            })
            .collect();
        v.sort_by_key(|r| r.round);
        Ok(v)
    }

    /// Verifies the genesis against the pins, waiting up to the timeout. Done once per run.
    pub async fn verify_genesis(&mut self, store: &LocalStore) -> Result<(), ReceiptError> {
        let deadline = Instant::now() + self.settings.timeout;
        loop {
            match self.ensure_genesis(store).await {
                Ok(()) => return Ok(()),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::NotYet(why)) if Instant::now() >= deadline => {
                    return Err(ReceiptError::Timeout {
                        round: 0,
                        secs: self.settings.timeout.as_secs(),
                        last: why,
                    });
                }
                Err(Failure::NotYet(_)) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// One attempt at every pending receipt; stops at the first that is not ready.
    pub async fn poll(
        &mut self,
        client: &mut Client,
        store: &LocalStore,
    ) -> Result<(), ReceiptError> {
        for rec in self.pending(store)? {
            match self.check(client, store, &rec).await {
                Ok(()) => {}
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::NotYet(_)) => break,
            }
        }
        Ok(())
    }

    /// Completes every pending receipt of rounds up to `up_to` (all when `None`), waiting up to
    /// the configured timeout.
    pub async fn wait(
        &mut self,
        client: &mut Client,
        store: &LocalStore,
        up_to: Option<u64>,
    ) -> Result<(), ReceiptError> {
        let deadline = Instant::now() + self.settings.timeout;
        loop {
            let due: Vec<RoundRecord> = self
                .pending(store)?
                .into_iter()
                .filter(|r| up_to.is_none_or(|u| r.round <= u))
                .collect();
            let Some(rec) = due.first() else {
                return Ok(());
            };
            match self.check(client, store, rec).await {
                Ok(()) => continue,
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::NotYet(why)) => {
                    if Instant::now() >= deadline {
                        return Err(ReceiptError::Timeout {
                            round: rec.round,
                            secs: self.settings.timeout.as_secs(),
                            last: why,
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// The served checkpoint, signed by the pinned log key.
    async fn checkpoint(&self) -> Result<(Vec<u8>, SignedCheckpoint), Failure> {
        let note = self
            .tiles
            .checkpoint()
            .await
            .map_err(not_yet)?
            .ok_or_else(|| not_yet("the log serves no witnessed checkpoint yet"))?;
        let cp = SignedCheckpoint::open(&note, &self.settings.pins.log_key)
            .map_err(|e| not_yet(format!("the served checkpoint does not verify: {e}")))?;
        Ok((note, cp))
    }

    /// Entry `index` from the tiles, proven under `cp`; with its inclusion proof.
    fn proven(
        cache: &TileCache,
        cp: &SignedCheckpoint,
        index: u64,
    ) -> Result<(Vec<u8>, Vec<merkle::Hash>), Failure> {
        let entry = cache.entry(index).map_err(not_yet)?.to_vec();
        let proof = cache.inclusion_proof(index).map_err(not_yet)?;
        merkle::verify_inclusion(
            &merkle::leaf_hash(&entry),
            index,
            cp.checkpoint.size,
            &proof,
            &cp.checkpoint.root,
        )
        .map_err(|e| not_yet(format!("the tiles do not prove entry {index}: {e}")))?;
        Ok((entry, proof))
    }

    /// Reads the entries of the log this hospital has not followed yet, up to `cp` (each
    /// proven under it), and returns the policy `cp` is judged by: the pinned log key with the
    /// witnesses in force at its size, the genesis's or those of a witness change that a
    /// governance entry among them made (admitted by the ledger's acceptance rule: chained,
    /// signed by the threshold of governors in force).
    async fn follow_witnesses(&mut self, cp: &SignedCheckpoint) -> Result<TrustPolicy, Failure> {
        // Entries are fetched in runs of whole entry bundles, each run proven and read.
        const RUN: u64 = 4096;
        let size = cp.checkpoint.size;
        while self.follower.next_index() < size {
            let start = self.follower.next_index();
            let end = (start + RUN).min(size);
            let mut cache = TileCache::new(size);
            let indices: Vec<u64> = (start..end).collect();
            self.tiles
                .fill(&mut cache, &indices, None)
                .await
                .map_err(not_yet)?;
            for i in start..end {
                let (entry, _) = Self::proven(&cache, cp, i)?;
                if self.follower.read(&self.federation, &entry)
                    && !self.dir().join(governance_files(i).0).exists()
                {
                    self.unkept.push(i);
                }
            }
        }
        let w = self
            .follower
            .policy_at(size)
            .ok_or_else(|| not_yet("the log holds no genesis yet"))?;
        if w.quorum == 0 && !self.settings.allow_no_witnesses {
            return Err(ReceiptError::Refused(
                "the log has no witness quorum in force, so its checkpoints would rest on the \
                 coordinator's signature alone (set ledger.allow_no_witnesses = true to accept \
                 it)"
                .into(),
            )
            .into());
        }
        let mut witnesses = Vec::new();
        for k in &w.keys {
            witnesses.push(
                fedledger_ledger::note::VerifierKey::parse(k)
                    .map_err(|e| ReceiptError::Refused(format!("witness key: {e}")))?,
            );
        }
        Ok(TrustPolicy {
            log_key: self.settings.pins.log_key.clone(),
            witnesses,
            quorum: w.quorum,
        })
    }

    /// Keeps each governance entry followed since the last call with its receipt under `cp`
    /// (whose cosignatures `policy` accepted): `governance/<index>.entry` and `.tlog-proof`.
    async fn keep_governance(
        &mut self,
        cp: &SignedCheckpoint,
        policy: &TrustPolicy,
    ) -> Result<(), Failure> {
        if self.unkept.is_empty() {
            return Ok(());
        }
        let mut cache = TileCache::new(cp.checkpoint.size);
        self.tiles
            .fill(&mut cache, &self.unkept, None)
            .await
            .map_err(not_yet)?;
        let dir = self.dir();
        for &i in &self.unkept {
            let (entry, proof) = Self::proven(&cache, cp, i)?;
            let receipt = make_receipt(i, proof, cp, policy).map_err(not_yet)?;
            let (ef, pf) = governance_files(i);
            write_atomically(&dir.join(ef), &entry)?;
            write_atomically(&dir.join(pf), receipt.encode().as_bytes())?;
        }
        self.unkept.clear();
        Ok(())
    }

    async fn ensure_genesis(&mut self, store: &LocalStore) -> Result<(), Failure> {
        if self.trust.is_some() {
            return Ok(());
        }
        let (note, cp) = self.checkpoint().await?;
        let mut cache = TileCache::new(cp.checkpoint.size);
        let old = self.accepted(store)?;
        self.tiles
            .fill(
                &mut cache,
                &[0],
                old.as_ref()
                    .map(|o| o.checkpoint.size)
                    .filter(|s| *s <= cp.checkpoint.size),
            )
            .await
            .map_err(not_yet)?;
        let (genesis, proof) = Self::proven(&cache, &cp, 0)?;
        let digest = hex::encode(sha256_bytes(&genesis));
        if digest != self.settings.pins.genesis_sha256 {
            return Err(ReceiptError::Refused(format!(
                "the log's genesis entry hashes to {digest}, not the pinned {}: this is not the \
                 federation the operator enrolled this hospital in",
                self.settings.pins.genesis_sha256
            ))
            .into());
        }
        let enrolments = match records::validate_entry(0, &self.federation, &genesis) {
            Ok(Record::Federation(f)) => f.enrolments,
            Ok(_) => {
                return Err(
                    ReceiptError::Refused("entry 0 is not a v2 federation entry".into()).into(),
                );
            }
            Err(e) => return Err(ReceiptError::Refused(format!("entry 0: {e}")).into()),
        };
        let policy = self.follow_witnesses(&cp).await?;
        check_cosignatures(&cp, &policy)
            .map_err(|e| not_yet(format!("checkpoint not witnessed yet: {e}")))?;
        self.extend(store, old, &note, &cp, &cache, 0)?;
        self.keep_governance(&cp, &policy).await?;
        // The trust file names the genesis's witnesses; later sets follow from the governance
        // entries kept beside the receipts.
        let genesis_set = self
            .follower
            .policy_at(0)
            .cloned()
            .ok_or_else(|| not_yet("the log holds no genesis yet"))?;
        let trust = TrustFile {
            origin: self.federation.clone(),
            log_vkey: policy.log_key.to_string(),
            witness_vkeys: genesis_set
                .verifier_keys()
                .iter()
                .map(|w| (w.name.clone(), w.to_string()))
                .collect(),
            quorum: Some(genesis_set.quorum),
            genesis_sha256: Some(digest),
        };
        let receipt = make_receipt(0, proof, &cp, &policy).map_err(not_yet)?;
        let dir = self.dir();
        write_atomically(
            &dir.join("trust.json"),
            &encode_canonical(&trust).map_err(|e| not_yet(e.to_string()))?,
        )?;
        write_atomically(&dir.join("genesis.entry"), &genesis)?;
        write_atomically(&dir.join("genesis.tlog-proof"), receipt.encode().as_bytes())?;
        info!(
            witnesses = policy.witnesses.len(),
            quorum = policy.quorum,
            "genesis verified against the pinned digest"
        );
        self.trust = Some(policy);
        self.enrolments = enrolments;
        Ok(())
    }

    /// The last checkpoint this hospital accepted for this federation.
    fn accepted(&self, store: &LocalStore) -> Result<Option<SignedCheckpoint>, Failure> {
        match store.accepted_checkpoint(&self.federation)? {
            Some(note) => SignedCheckpoint::open(&note, &self.settings.pins.log_key)
                .map(Some)
                .map_err(|e| {
                    Failure::Fatal(ReceiptError::Store(StoreError::Corrupt {
                        key: "accepted checkpoint".into(),
                        reason: e.to_string(),
                    }))
                }),
            None => Ok(None),
        }
    }

    /// Accepts `cp` after checking it extends `old` (tiles for the consistency proof must be
    /// in `cache`); writes evidence and stops when it does not.
    fn extend(
        &self,
        store: &LocalStore,
        old: Option<SignedCheckpoint>,
        note: &[u8],
        cp: &SignedCheckpoint,
        cache: &TileCache,
        round: u64,
    ) -> Result<(), Failure> {
        if let Some(old) = old {
            let (m, n) = (old.checkpoint.size, cp.checkpoint.size);
            if m > n {
                return Err(not_yet(format!(
                    "the log serves a checkpoint of size {n}, older than the one accepted ({m})"
                )));
            }
            let proof = if m == n {
                Vec::new()
            } else {
                cache.consistency_proof(m).map_err(not_yet)?
            };
            if let Err(e) =
                merkle::verify_consistency(m, n, &old.checkpoint.root, &cp.checkpoint.root, &proof)
            {
                let what = format!(
                    "the log's checkpoint of size {n} is not consistent with the checkpoint of \
                     size {m} accepted before ({e})"
                );
                let evidence = self.evidence(
                    round,
                    &what,
                    json!({"checkpoint": String::from_utf8_lossy(&old.encode().into_bytes())}),
                    json!({
                        "checkpoint": String::from_utf8_lossy(note),
                        "consistency_proof": proof.iter().map(|h| b64_encode(h)).collect::<Vec<_>>(),
                    }),
                    &[old.encode().into_bytes(), note.to_vec()],
                )?;
                store.set_halt(&Halt {
                    federation: self.federation.clone(),
                    round,
                    what: what.clone(),
                    evidence: evidence.display().to_string(),
                    inconsistent_log: true,
                })?;
                return Err(ReceiptError::Mismatch {
                    round,
                    what,
                    evidence,
                }
                .into());
            }
        }
        store.accept_checkpoint(&self.federation, Some(note))?;
        Ok(())
    }

    /// Writes an evidence file; returns its path.
    fn evidence(
        &self,
        round: u64,
        what: &str,
        expected: serde_json::Value,
        found: serde_json::Value,
        checkpoints: &[Vec<u8>],
    ) -> Result<PathBuf, ReceiptError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let doc = json!({
            "federation": self.federation,
            "participant": self.participant,
            "round": round,
            "what": what,
            "expected": expected,
            "found": found,
            "checkpoints": checkpoints.iter().map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>(),
            "log_url": self.tiles.prefix(),
            "log_key": self.settings.pins.log_key.to_string(),
            "written_at_unix": now,
        });
        let dir = self.state_dir.join("evidence");
        let mut path = dir.join(format!(
            "{}-round-{round}.json",
            federation_dir(&self.federation)
        ));
        if path.exists() {
            path = dir.join(format!(
                "{}-round-{round}-{now}.json",
                federation_dir(&self.federation)
            ));
        }
        write_atomically(
            &path,
            &serde_json::to_vec_pretty(&doc).expect("serialisable"),
        )?;
        Ok(path)
    }

    /// Stops with a mismatch of `rec`'s round: evidence, halt, error.
    fn mismatch(
        &self,
        store: &LocalStore,
        rec: &RoundRecord,
        what: String,
        reported: serde_json::Value,
        found: Found,
        note: &[u8],
    ) -> Failure {
        let expected = json!({
            "action": rec.action,
            "update_sha256": rec.update_sha256,
            "examples": rec.examples,
            "privacy": rec.privacy,
            "reason": rec.reason,
            "reported": reported,
        });
        let found = json!({"index": found.index, "entry": found.entry});
        let evidence = match self.evidence(rec.round, &what, expected, found, &[note.to_vec()]) {
            Ok(p) => p,
            Err(e) => return Failure::Fatal(e),
        };
        if let Err(e) = store.set_halt(&Halt {
            federation: self.federation.clone(),
            round: rec.round,
            what: what.clone(),
            evidence: evidence.display().to_string(),
            inconsistent_log: false,
        }) {
            return Failure::Fatal(e.into());
        }
        Failure::Fatal(ReceiptError::Mismatch {
            round: rec.round,
            what,
            evidence,
        })
    }

    /// One attempt at the receipt of `rec`'s round.
    async fn check(
        &mut self,
        client: &mut Client,
        store: &LocalStore,
        rec: &RoundRecord,
    ) -> Result<(), Failure> {
        let started = Instant::now();
        let before = self.tiles.stats();
        self.ensure_genesis(store).await?;
        let round = rec.round;
        let result = match client.round_result(round).await {
            Ok(r) => r,
            Err(e) if e.code() == Some(Code::Unauthenticated) => {
                client.register().await.map_err(not_yet)?;
                return Err(not_yet("registered again"));
            }
            Err(e) => return Err(not_yet(e)),
        };
        if result.ledger_record.is_empty() {
            return Err(not_yet(format!("round {round} is not in the ledger yet")));
        }
        let summary_index = result.ledger_index;
        let reported_c = result
            .contributions
            .iter()
            .find(|c| c.participant == self.participant);
        let reported = json!({
            "value_nano": reported_c.map(|c| c.value_nano),
            "reward": reported_c.map(|c| c.reward),
            "summary_index": summary_index,
        });
        let (note, cp) = self.checkpoint().await?;
        if cp.checkpoint.size <= summary_index {
            return Err(not_yet(format!(
                "the witnessed checkpoint (size {}) does not cover round {round} yet",
                cp.checkpoint.size
            )));
        }
        let policy = self.follow_witnesses(&cp).await?;
        self.trust = Some(policy.clone());
        check_cosignatures(&cp, &policy)
            .map_err(|e| not_yet(format!("checkpoint not witnessed: {e}")))?;
        self.keep_governance(&cp, &policy).await?;
        let old = self.accepted(store)?;
        let old_size = old
            .as_ref()
            .map(|o| o.checkpoint.size)
            .filter(|s| *s <= cp.checkpoint.size);
        let mut cache = TileCache::new(cp.checkpoint.size);
        self.tiles
            .fill(&mut cache, &[summary_index], old_size)
            .await
            .map_err(not_yet)?;
        let (summary_bytes, _) = Self::proven(&cache, &cp, summary_index)?;
        if summary_bytes != result.ledger_record {
            let what = format!(
                "the round summary the coordinator reported differs from entry {summary_index} \
                 of the log"
            );
            return Err(self.mismatch(
                store,
                rec,
                what,
                reported,
                Found {
                    index: Some(summary_index),
                    entry: Some(String::from_utf8_lossy(&summary_bytes).into_owned()),
                },
                &note,
            ));
        }
        let summary = match records::validate_entry(summary_index, &self.federation, &summary_bytes)
        {
            Ok(Record::Round(s)) if s.round == round => s,
            _ => {
                let what = format!(
                    "entry {summary_index}, named as round {round}'s summary, is not that summary"
                );
                return Err(self.mismatch(store, rec, what, reported, nothing(), &note));
            }
        };
        self.extend(store, old, &note, &cp, &cache, round)?;
        // One entry per enrolled key, and each validator's vector in its parts.
        let parts = summary.valuation.validators.as_ref().map_or(0, |v| {
            (v.lines.len() as u64).saturating_mul(
                v.coalitions
                    .div_ceil(records::MAX_UTILITIES_PER_PART as u64),
            )
        });
        let allowed = self.enrolments.saturating_add(parts);
        if summary.entries.count > allowed {
            let what = format!(
                "round {round}'s summary names {} entries, more than the {} keys the federation \
                 enrols and the {parts} parts of its validators' vectors",
                summary.entries.count, self.enrolments
            );
            return Err(self.mismatch(store, rec, what, reported, nothing(), &note));
        }
        let range: Vec<u64> =
            (summary.entries.first..summary.entries.first + summary.entries.count).collect();
        self.tiles
            .fill(&mut cache, &range, None)
            .await
            .map_err(not_yet)?;
        let mut mine = Vec::new();
        for i in &range {
            let (entry, proof) = Self::proven(&cache, &cp, *i)?;
            let rec_i = records::validate_entry(*i, &self.federation, &entry).ok();
            let who = match &rec_i {
                Some(Record::Contribution(c)) => Some(c.participant.as_str()),
                Some(Record::Decline(d)) => Some(d.participant.as_str()),
                _ => None,
            };
            if who == Some(self.participant.as_str()) {
                mine.push((*i, entry, proof, rec_i));
            }
        }
        let (index, entry, proof, parsed) = match mine.len() {
            1 => mine.remove(0),
            0 => {
                let what = format!(
                    "the ledger omits this hospital's {} of round {round} (the round's entries \
                     {}..{} hold none)",
                    if rec.action == "sent" {
                        "contribution"
                    } else {
                        "decline"
                    },
                    summary.entries.first,
                    summary.entries.first + summary.entries.count
                );
                return Err(self.mismatch(store, rec, what, reported, nothing(), &note));
            }
            n => {
                let what =
                    format!("the ledger records {n} entries of this hospital in round {round}");
                return Err(self.mismatch(store, rec, what, reported, nothing(), &note));
            }
        };
        let found = Found {
            index: Some(index),
            entry: Some(String::from_utf8_lossy(&entry).into_owned()),
        };
        if let Some(what) = differences(rec, parsed.as_ref(), reported_c) {
            return Err(self.mismatch(store, rec, what, reported, found, &note));
        }
        let receipt = make_receipt(index, proof, &cp, &policy).map_err(not_yet)?;
        self.check_settlement(store, rec, &result, (&note, &cp), &mut cache, summary_index)
            .await?;
        let dir = self.dir();
        let (ef, pf) = round_files(round);
        write_atomically(&dir.join(ef), &entry)?;
        write_atomically(&dir.join(pf), receipt.encode().as_bytes())?;
        store.set_receipt(&self.federation, round, receipt_state::DONE)?;
        let after = self.tiles.stats();
        let stat = ReceiptStat {
            round,
            micros: started.elapsed().as_micros() as u64,
            bytes: after.bytes - before.bytes,
            requests: after.requests - before.requests,
        };
        info!(
            round,
            index,
            size = cp.checkpoint.size,
            bytes = stat.bytes,
            micros = stat.micros,
            "receipt checked and stored"
        );
        self.stats.push(stat);
        Ok(())
    }
}

impl Receipts {
    /// The settlement that follows round `rec.round`'s summary in the ledger, if the round ends
    /// a period (settled reward rule; the parts of a settlement are appended with the round's
    /// entries, so a checkpoint covering the summary covers them): this hospital's line must be
    /// there when it contributed in the period, and must be what the coordinator reported. The
    /// part holding the line is kept as a receipt (`settlements/<period>.*`).
    async fn check_settlement(
        &mut self,
        store: &LocalStore,
        rec: &RoundRecord,
        result: &fedledger_proto::RoundResult,
        (note, cp): (&[u8], &SignedCheckpoint),
        cache: &mut TileCache,
        summary_index: u64,
    ) -> Result<(), Failure> {
        let round = rec.round;
        let reported = result.settlement.as_ref();
        let reported_line =
            reported.and_then(|s| s.lines.iter().find(|l| l.participant == self.participant));
        let reported_json = json!({
            "settlement_period": reported.map(|s| s.period),
            "line": reported_line.map(|l| json!({
                "value_nano": l.value_nano,
                "se_nano": l.se_nano,
                "rounds": l.rounds,
                "distinguishable": l.distinguishable,
                "payout": l.payout,
            })),
        });
        // The parts that follow the summary.
        let mut parts = Vec::new();
        let mut at = summary_index + 1;
        while at < cp.checkpoint.size {
            self.tiles.fill(cache, &[at], None).await.map_err(not_yet)?;
            let (entry, proof) = Self::proven(cache, cp, at)?;
            match records::validate_entry(at, &self.federation, &entry) {
                Ok(Record::Settlement(st)) if st.rounds.last == round => {
                    let last = st.part >= st.parts;
                    parts.push((at, entry, proof, st));
                    if last {
                        break;
                    }
                    at += 1;
                }
                _ => break,
            }
        }
        let Some(first) = parts.first().map(|p| &p.3) else {
            if let Some(s) = reported {
                let what = format!(
                    "the coordinator reported the settlement of period {} with round {round}, \
                     but no settlement entry follows the round's summary (entry {summary_index})",
                    s.period
                );
                return Err(self.mismatch(store, rec, what, reported_json, nothing(), note));
            }
            return Ok(());
        };
        let period = first.period;
        // The rounds the settlement's lines cover: the period's, or under the cumulative rule
        // every round up to the period's end.
        let first_round = if first.rule.is_cumulative() {
            1
        } else {
            first.rounds.first
        };
        // Did this hospital contribute in the rounds covered (an acknowledged update)?
        let contributed: Vec<u64> = store
            .rounds()?
            .into_iter()
            .filter(|r| {
                r.federation == self.federation
                    && r.action == "sent"
                    && (first_round..=round).contains(&r.round)
                    && (r.round == round
                        || matches!(
                            r.receipt.as_deref(),
                            Some(receipt_state::PENDING | receipt_state::DONE)
                        ))
            })
            .map(|r| r.round)
            .collect();
        let mine = parts.iter().find_map(|(i, e, p, st)| {
            st.participants
                .iter()
                .find(|l| l.participant == self.participant)
                .map(|l| (*i, e, p, l.clone()))
        });
        let found = |i: Option<u64>, e: Option<&Vec<u8>>| Found {
            index: i,
            entry: e.map(|e| String::from_utf8_lossy(e).into_owned()),
        };
        let Some((index, entry, proof, line)) = mine else {
            if !contributed.is_empty() || reported_line.is_some() {
                let what = format!(
                    "the settlement of period {period} (entries {}..{}, rule {}) holds no line \
                     of this hospital, which contributed in round(s) {contributed:?} it covers",
                    summary_index + 1,
                    summary_index + 1 + parts.len() as u64,
                    first.rule.rule
                );
                return Err(self.mismatch(store, rec, what, reported_json, nothing(), note));
            }
            return Ok(());
        };
        let recorded = (
            line.value_nano,
            line.se_nano,
            line.rounds,
            line.verdict == VERDICT_DISTINGUISHABLE,
            line.payout,
        );
        let told = reported_line.map(|l| {
            (
                l.value_nano,
                l.se_nano,
                l.rounds,
                l.distinguishable,
                l.payout,
            )
        });
        if told != Some(recorded) || reported.map(|s| s.period) != Some(period) {
            let what = match told {
                Some(t) => format!(
                    "settlement of period {period}: the coordinator reported value {} nano \
                     (se {}, {} rounds, paid: {}) and a payout of {}, the ledger records value \
                     {} nano (se {}, {} rounds, {}) and a payout of {}",
                    t.0,
                    t.1,
                    t.2,
                    t.3,
                    t.4,
                    line.value_nano,
                    line.se_nano,
                    line.rounds,
                    line.verdict,
                    line.payout
                ),
                None => format!(
                    "the ledger records this hospital's line in the settlement of period \
                     {period} (payout {}), which the coordinator did not report",
                    line.payout
                ),
            };
            return Err(self.mismatch(
                store,
                rec,
                what,
                reported_json,
                found(Some(index), Some(entry)),
                note,
            ));
        }
        let policy = self
            .trust
            .clone()
            .expect("genesis verified before a receipt");
        let receipt = make_receipt(index, proof.clone(), cp, &policy).map_err(not_yet)?;
        let dir = self.dir();
        let (ef, pf) = settlement_files(period);
        write_atomically(&dir.join(ef), entry)?;
        write_atomically(&dir.join(pf), receipt.encode().as_bytes())?;
        info!(
            period,
            index,
            value_nano = line.value_nano,
            se_nano = line.se_nano,
            verdict = %line.verdict,
            payout = line.payout,
            "settlement checked and stored"
        );
        self.settled.push((period, line.payout));
        Ok(())
    }
}

/// Nothing found (for the evidence file).
fn nothing() -> Found {
    Found {
        index: None,
        entry: None,
    }
}

/// What differs between what this hospital signed (and was told) and its entry, if anything.
fn differences(
    rec: &RoundRecord,
    entry: Option<&Record>,
    reported: Option<&fedledger_proto::Contribution>,
) -> Option<String> {
    let mut diffs = Vec::new();
    match (rec.action.as_str(), entry) {
        ("sent", Some(Record::Contribution(c))) => {
            if rec.update_sha256.as_deref() != Some(c.update_sha256.as_str()) {
                diffs.push(format!(
                    "update digest: signed {}, recorded {}",
                    rec.update_sha256.as_deref().unwrap_or("-"),
                    c.update_sha256
                ));
            }
            if rec.examples != Some(c.examples) {
                diffs.push(format!(
                    "examples: signed {}, recorded {}",
                    rec.examples.map_or("-".into(), |e| e.to_string()),
                    c.examples
                ));
            }
            if rec.privacy.as_ref() != Some(&c.privacy) {
                diffs.push(format!(
                    "privacy object: signed {}, recorded {}",
                    rec.privacy
                        .as_ref()
                        .and_then(|p| encode_canonical(p).ok())
                        .map_or("-".into(), |b| String::from_utf8_lossy(&b).into_owned()),
                    encode_canonical(&c.privacy)
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default()
                ));
            }
            match reported {
                Some(r) => {
                    if r.reward != c.reward {
                        diffs.push(format!(
                            "reward: reported {}, recorded {}",
                            r.reward, c.reward
                        ));
                    }
                    if r.value_nano != c.value_nano {
                        diffs.push(format!(
                            "value: reported {} nano, recorded {} nano",
                            r.value_nano, c.value_nano
                        ));
                    }
                }
                None => diffs.push(
                    "the coordinator reported no contribution of this hospital for the round"
                        .into(),
                ),
            }
        }
        ("declined", Some(Record::Decline(d))) => {
            if rec.reason.as_deref() != Some(d.reason.as_str()) {
                diffs.push(format!(
                    "decline reason: signed {:?}, recorded {:?}",
                    rec.reason.as_deref().unwrap_or(""),
                    d.reason
                ));
            }
        }
        (action, _) => diffs.push(format!(
            "this hospital {action} the round, but its entry is of another kind"
        )),
    }
    if diffs.is_empty() {
        None
    } else {
        warn!(round = rec.round, differences = ?diffs, "the ledger does not record what this hospital signed");
        Some(diffs.join("; "))
    }
}
