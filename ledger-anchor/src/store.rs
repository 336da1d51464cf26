//! The sled-backed log: entries, perfect-subtree hashes, signed checkpoints and evidence.
//!
//! One sled tree holds entries in packs of [`PACK`] consecutive ones (`p` + pack index), perfect
//! subtree hashes (`n` + level + index) and the size (`m/size`); every append writes them in
//! one atomic batch and flushes before it returns. Stores written before entries were packed
//! (one sled key per entry, `e` + index) are packed when opened, a pack per atomic batch.
//! Checkpoints live in their own tree keyed by size, each with the cosignatures gathered so
//! far; evidence of equivocation in a third.
//!
//! The size readers see ([`Log::size`]) is the size last made durable; it is read without
//! waiting for an append in progress, so readers never queue behind a slow flush.
//!
//! A `Log` opened with [`Log::open`] is the writer (it holds the log key and signs checkpoints);
//! one opened with [`Log::open_replica`] only accepts entries that come with a log-signed
//! checkpoint whose root they reproduce.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::LedgerError;
use crate::merkle::{self, Hash, SubtreeSource};
pub use crate::note::Evidence;
use crate::note::{
    Checkpoint, NoteSignature, NoteSigner, SignedCheckpoint, SignedNote, VerifierKey,
};
use crate::records;

const SIZE_KEY: &[u8] = b"m/size";
const ORIGIN_KEY: &[u8] = b"m/origin";
const LOG_KEY_KEY: &[u8] = b"m/log_key";

/// Consecutive entries stored under one sled key: the pack of entry `i` is `i / PACK`. Sled's
/// cost is mostly per key (its log records, node rewrites and consolidations), so a catch-up
/// stores 16 times fewer; an append rewrites at most `PACK - 1` entries of its last pack.
pub(crate) const PACK: u64 = 16;

fn pack_key(pack: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b'p';
    k[1..].copy_from_slice(&pack.to_be_bytes());
    k
}

/// The key an entry had before entries were packed (read only to pack an older store).
fn unpacked_key(index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b'e';
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

/// Appends `entry` to a pack's bytes: its length (2 bytes, big-endian), then the entry, as in
/// a C2SP tlog-tiles entry bundle (entries are at most [`records::MAX_ENTRY_BYTES`]).
fn pack_push(pack: &mut Vec<u8>, entry: &[u8]) -> Result<(), LedgerError> {
    let len = u16::try_from(entry.len()).map_err(|_| {
        LedgerError::Corrupt(format!(
            "an entry of {} bytes cannot be stored",
            entry.len()
        ))
    })?;
    pack.extend_from_slice(&len.to_be_bytes());
    pack.extend_from_slice(entry);
    Ok(())
}

/// The entries of pack `pack` in order; an entry that runs past the pack's end is reported as
/// corruption.
fn pack_entries(pack: u64, bytes: &[u8]) -> impl Iterator<Item = Result<&[u8], LedgerError>> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let entry = rest
            .split_first_chunk::<2>()
            .and_then(|(len, tail)| tail.split_at_checked(u16::from_be_bytes(*len) as usize));
        Some(match entry {
            Some((entry, tail)) => {
                rest = tail;
                Ok(entry)
            }
            None => {
                rest = &[];
                Err(LedgerError::Corrupt(format!("pack {pack} is truncated")))
            }
        })
    })
}

/// Entry `index` as stored in `tree`, or `None` when its pack does not hold it.
fn stored_entry(tree: &sled::Tree, index: u64) -> Result<Option<Vec<u8>>, LedgerError> {
    let pack = index / PACK;
    let Some(bytes) = tree.get(pack_key(pack))? else {
        return Ok(None);
    };
    pack_entries(pack, &bytes)
        .nth((index % PACK) as usize)
        .transpose()
        .map(|e| e.map(<[u8]>::to_vec))
}

/// The first `count` entries of pack `pack` as stored: the part of the log's last pack an
/// append keeps. Entries after them (written by an append whose flush failed, never counted)
/// are dropped, as that append's would have been overwritten; fewer than `count` is corruption.
fn stored_pack_prefix(tree: &sled::Tree, pack: u64, count: u64) -> Result<Vec<u8>, LedgerError> {
    if count == 0 {
        return Ok(Vec::new());
    }
    let bytes = tree
        .get(pack_key(pack))?
        .ok_or_else(|| LedgerError::Corrupt(format!("missing pack {pack}")))?;
    let mut len = 0;
    let mut held = 0u64;
    for e in pack_entries(pack, &bytes).take(count as usize) {
        len += 2 + e?.len();
        held += 1;
    }
    if held != count {
        return Err(LedgerError::Corrupt(format!(
            "pack {pack} holds {held} entries where the log's size implies {count}"
        )));
    }
    Ok(bytes[..len].to_vec())
}

/// Packs a store written with one key per entry: each pack's entries are written as one
/// value and their old keys removed in one atomic batch, so a crash midway leaves every entry
/// under exactly one of the two forms and the next open carries on.
fn pack_unpacked(tree: &sled::Tree) -> Result<(), LedgerError> {
    loop {
        let first = match tree.scan_prefix(b"e").next() {
            None => return Ok(()),
            Some(kv) => {
                let (k, _) = kv?;
                let index: [u8; 8] = k[1..]
                    .try_into()
                    .map_err(|_| LedgerError::Corrupt("an entry key that is not 9 bytes".into()))?;
                u64::from_be_bytes(index)
            }
        };
        let pack = first / PACK;
        if !first.is_multiple_of(PACK) || tree.contains_key(pack_key(pack))? {
            return Err(LedgerError::Corrupt(format!(
                "entry {first} is stored unpacked but its pack {pack} is not whole that way"
            )));
        }
        let mut bytes = Vec::new();
        let mut batch = sled::Batch::default();
        for kv in tree.range(unpacked_key(first)..unpacked_key(first + PACK)) {
            let (k, v) = kv?;
            pack_push(&mut bytes, &v)?;
            batch.remove(k);
        }
        batch.insert(&pack_key(pack), bytes);
        tree.apply_batch(batch)?;
    }
}

/// The lowest level of perfect subtree hashes an append stores: one per pack, and about one
/// sled key per 8 entries in all. The levels below (leaves, pairs, fours, eights) are computed
/// from the entries of one pack when read; storing them cost more sled inserts than the
/// entries themselves.
const STORED_LEVEL: u32 = 4;

// A subtree below the stored levels lies within one pack.
const _: () = assert!(PACK == 1 << STORED_LEVEL);

fn node_key(level: u32, index: u64) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[0] = b'n';
    k[1] = level as u8;
    k[2..].copy_from_slice(&index.to_be_bytes());
    k
}

/// What a replica made of a checkpoint it was shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// Consistent with what this replica holds (and covered by its entries).
    Consistent,
    /// Larger than this replica: it must fetch entries up to `size`.
    Ahead {
        /// The checkpoint's size.
        size: u64,
    },
}

struct State {
    size: u64,
    /// Pending left subtree at each level (bit `l` of `size` set).
    frontier: Vec<Option<Hash>>,
}

impl State {
    fn root(&self) -> Hash {
        let mut acc: Option<Hash> = None;
        for h in self.frontier.iter().flatten() {
            acc = Some(match acc {
                None => *h,
                Some(a) => merkle::node_hash(h, &a),
            });
        }
        acc.unwrap_or_else(merkle::empty_root)
    }

    /// Adds one leaf; pushes every perfect subtree it completes at [`STORED_LEVEL`] and up to
    /// `out` (the levels below are computed from the entries when read).
    fn push(&mut self, leaf: Hash, out: &mut Vec<(u32, u64, Hash)>) {
        let mut h = leaf;
        let mut level = 0u32;
        let mut index = self.size;
        loop {
            if level >= STORED_LEVEL {
                out.push((level, index, h));
            }
            let l = level as usize;
            if self.frontier.len() <= l {
                self.frontier.push(None);
            }
            match self.frontier[l].take() {
                Some(left) => {
                    h = merkle::node_hash(&left, &h);
                    level += 1;
                    index /= 2;
                }
                None => {
                    self.frontier[l] = Some(h);
                    break;
                }
            }
        }
        self.size += 1;
    }
}

/// One run of consecutive entries to write: their bytes, their leaf hashes and, on a replica,
/// the consistency proof from the run's end to the checkpoint they belong to.
struct Run<'a> {
    entries: Vec<&'a [u8]>,
    leaves: &'a [Hash],
    proof: &'a [Hash],
}

/// A chunk of entries a replica fetched, schema-checked and hashed ([`Log::check_entries`]),
/// waiting to be written ([`Log::append_checked`]).
#[derive(Debug)]
pub(crate) struct CheckedChunk {
    first: u64,
    entries: Vec<Vec<u8>>,
    leaves: Vec<Hash>,
    /// Consistency proof from [`Self::end`] to the checkpoint's size.
    consistency: Vec<Hash>,
}

impl CheckedChunk {
    /// One past the index of its last entry.
    pub(crate) fn end(&self) -> u64 {
        self.first + self.entries.len() as u64
    }

    /// Its entries' bytes in all.
    pub(crate) fn bytes(&self) -> usize {
        self.entries.iter().map(Vec::len).sum()
    }
}

struct Inner {
    db: sled::Db,
    log: sled::Tree,
    checkpoints: sled::Tree,
    evidence: sled::Tree,
    origin: String,
    log_key: VerifierKey,
    signer: Option<NoteSigner>,
    /// The writer's state; held for the whole of an append (validation, batch, flush).
    state: Mutex<State>,
    /// `state.size` as of the last durable append, readable while an append is in progress.
    durable_size: AtomicU64,
    /// The witness sets in force, read from the log's own entries as they are appended.
    witnesses: Mutex<records::WitnessFollower>,
}

/// A Merkle log in a sled database. Cheap to clone; all clones share one store.
#[derive(Clone)]
pub struct Log {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Log({}, size {})", self.inner.origin, self.size())
    }
}

struct Nodes<'a>(&'a sled::Tree);

impl SubtreeSource for Nodes<'_> {
    fn perfect(&self, level: u32, index: u64) -> Result<Hash, LedgerError> {
        match self.0.get(node_key(level, index))? {
            Some(v) => v.as_ref().try_into().map_err(|_| {
                LedgerError::Corrupt(format!(
                    "subtree hash at level {level} index {index} is not 32 bytes"
                ))
            }),
            // Below the stored levels a hash is computed from the entries of the one pack that
            // holds them (logs written when appends stored these levels hold them, and they are
            // read as stored).
            None if level < STORED_LEVEL => {
                let (first, count) = (index << level, 1usize << level);
                let pack = first / PACK;
                let missing = || {
                    LedgerError::Corrupt(format!(
                        "missing entries {first}..{} (for the subtree hash at level {level} \
                         index {index})",
                        first + count as u64
                    ))
                };
                let bytes = self.0.get(pack_key(pack))?.ok_or_else(missing)?;
                let leaves = pack_entries(pack, &bytes)
                    .skip((first % PACK) as usize)
                    .take(count)
                    .map(|e| e.map(merkle::leaf_hash))
                    .collect::<Result<Vec<_>, _>>()?;
                if leaves.len() != count {
                    return Err(missing());
                }
                merkle::perfect_root(leaves).ok_or_else(missing)
            }
            None => Err(LedgerError::Corrupt(format!(
                "missing subtree hash at level {level} index {index}"
            ))),
        }
    }
}

/// The log's perfect subtree hashes, within its durable size: what tiles and proofs are read
/// from.
impl SubtreeSource for Log {
    fn perfect(&self, level: u32, index: u64) -> Result<Hash, LedgerError> {
        let size = self.size();
        let end = index
            .checked_add(1)
            .and_then(|n| n.checked_shl(level))
            .filter(|_| level < 64);
        match end {
            Some(end) if end <= size => Nodes(&self.inner.log).perfect(level, index),
            _ => Err(LedgerError::OutOfRange { index, size }),
        }
    }
}

impl crate::tiles::TileSource for Log {
    fn entries(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>, LedgerError> {
        Log::entries(self, start, end)
    }
}

impl Log {
    /// Opens (or creates) the writer's log in `dir`. `signer` is the log key; its name must be
    /// the origin, i.e. the federation name.
    pub fn open(
        dir: &std::path::Path,
        origin: &str,
        signer: NoteSigner,
    ) -> Result<Self, LedgerError> {
        if signer.name() != origin {
            return Err(LedgerError::Key(format!(
                "log key is named {:?}, not the origin {origin:?}",
                signer.name()
            )));
        }
        let key = signer.verifier_key().clone();
        Self::open_inner(dir, key, Some(signer))
    }

    /// Opens (or creates) a replica of the log whose key is `log_key` (origin = key name).
    pub fn open_replica(dir: &std::path::Path, log_key: VerifierKey) -> Result<Self, LedgerError> {
        Self::open_inner(dir, log_key, None)
    }

    /// Opens an existing store read-and-replicate, taking the log key recorded in it (for
    /// tools such as `status` and `export` that are not told the key).
    pub fn open_existing(dir: &std::path::Path) -> Result<Self, LedgerError> {
        if !dir.exists() {
            return Err(LedgerError::Corrupt(format!(
                "no ledger store at {}",
                dir.display()
            )));
        }
        let db = crate::db::open_sled(dir)?;
        let key = db.open_tree("log")?.get(LOG_KEY_KEY)?.ok_or_else(|| {
            LedgerError::Corrupt(format!("{} is not a ledger store", dir.display()))
        })?;
        let key = std::str::from_utf8(&key)
            .map_err(|_| LedgerError::Corrupt("stored log key is not UTF-8".into()))?;
        let key = VerifierKey::parse(key)?;
        Self::from_db(db, key, None)
    }

    fn open_inner(
        dir: &std::path::Path,
        log_key: VerifierKey,
        signer: Option<NoteSigner>,
    ) -> Result<Self, LedgerError> {
        Self::from_db(crate::db::open_sled(dir)?, log_key, signer)
    }

    fn from_db(
        db: sled::Db,
        log_key: VerifierKey,
        signer: Option<NoteSigner>,
    ) -> Result<Self, LedgerError> {
        let log = db.open_tree("log")?;
        pack_unpacked(&log)?;
        let checkpoints = db.open_tree("checkpoints")?;
        let evidence = db.open_tree("evidence")?;
        let origin = log_key.name.clone();
        match log.get(ORIGIN_KEY)? {
            Some(o) if o.as_ref() != origin.as_bytes() => {
                return Err(LedgerError::Corrupt(format!(
                    "store holds log {:?}, not {origin:?}",
                    String::from_utf8_lossy(&o)
                )));
            }
            Some(_) => {}
            None => {
                log.insert(ORIGIN_KEY, origin.as_bytes())?;
            }
        }
        let vk = log_key.to_string();
        match log.get(LOG_KEY_KEY)? {
            Some(k) if k.as_ref() != vk.as_bytes() => {
                return Err(LedgerError::Corrupt(format!(
                    "store holds a log with key {}",
                    String::from_utf8_lossy(&k)
                )));
            }
            Some(_) => {}
            None => {
                log.insert(LOG_KEY_KEY, vk.as_bytes())?;
            }
        }
        let size = match log.get(SIZE_KEY)? {
            Some(v) => u64::from_be_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| LedgerError::Corrupt("size is not 8 bytes".into()))?,
            ),
            None => 0,
        };
        let nodes = Nodes(&log);
        let mut frontier = Vec::new();
        for level in 0..64u32 {
            if size >> level == 0 {
                break;
            }
            frontier.push(if (size >> level) & 1 == 1 {
                Some(nodes.perfect(level, (size >> level) - 1)?)
            } else {
                None
            });
        }
        db.flush()?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                log,
                checkpoints,
                evidence,
                origin,
                log_key,
                signer,
                state: Mutex::new(State { size, frontier }),
                durable_size: AtomicU64::new(size),
                witnesses: Mutex::new(records::WitnessFollower::default()),
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The log's origin.
    pub fn origin(&self) -> &str {
        &self.inner.origin
    }

    /// The log's verifier key.
    pub fn log_key(&self) -> &VerifierKey {
        &self.inner.log_key
    }

    /// Number of entries (durable ones: an append in progress is counted once it is flushed).
    pub fn size(&self) -> u64 {
        self.inner.durable_size.load(Ordering::Acquire)
    }

    /// Current root hash.
    pub fn root(&self) -> Hash {
        self.state().root()
    }

    /// Validates and appends one record; returns its index. Durable when it returns.
    pub fn append(&self, entry: &[u8]) -> Result<u64, LedgerError> {
        self.append_batch(&[entry])
    }

    /// Validates and appends records atomically (all or none); returns the first index.
    pub fn append_batch<B: AsRef<[u8]> + Sync>(&self, entries: &[B]) -> Result<u64, LedgerError> {
        let mut st = self.state();
        let first = st.size;
        let leaves = self.check(first, entries)?;
        let run = Run {
            entries: entries.iter().map(AsRef::as_ref).collect(),
            leaves: &leaves,
            proof: &[],
        };
        self.write_runs(&mut st, &[run], None)?;
        Ok(first)
    }

    /// Schema checks of entries at indices `first..` and their leaf hashes: independent per
    /// entry and of the store's state, so done in parallel and, on a replica catching up,
    /// before the store's lock is taken.
    fn check<B: AsRef<[u8]> + Sync>(
        &self,
        first: u64,
        entries: &[B],
    ) -> Result<Vec<Hash>, LedgerError> {
        use rayon::prelude::*;
        entries
            .par_iter()
            .enumerate()
            .map(|(i, e)| {
                let e = e.as_ref();
                records::validate_entry(first + i as u64, &self.inner.origin, e)?;
                Ok(merkle::leaf_hash(e))
            })
            .collect()
    }

    /// Writes consecutive runs of checked entries from the current size, plus (on a replica)
    /// the checkpoint `cp` they belong to, in one batch with one flush. With `cp`, the entries
    /// up to each run's end must be proven a prefix of it by that run's consistency proof
    /// (equal to it when the sizes match), or nothing is written.
    fn write_runs(
        &self,
        st: &mut State,
        runs: &[Run<'_>],
        cp: Option<&SignedCheckpoint>,
    ) -> Result<(), LedgerError> {
        let mut next = State {
            size: st.size,
            frontier: st.frontier.clone(),
        };
        let mut batch = sled::Batch::default();
        let count: usize = runs.iter().map(|r| r.entries.len()).sum();
        // About an eighth of a stored node per entry: one per 16 entries at level 4, per 32 at 5...
        let mut nodes = Vec::with_capacity(count / 8 + 64);
        // The log's last pack is rewritten with the entries that follow it.
        let mut pack = stored_pack_prefix(&self.inner.log, next.size / PACK, next.size % PACK)?;
        for run in runs {
            for (e, leaf) in run.entries.iter().zip(run.leaves) {
                pack_push(&mut pack, e)?;
                next.push(*leaf, &mut nodes);
                if next.size.is_multiple_of(PACK) {
                    batch.insert(&pack_key(next.size / PACK - 1), std::mem::take(&mut pack));
                }
            }
            if let Some(cp) = cp {
                let ok = if cp.checkpoint.size == next.size {
                    cp.checkpoint.root == next.root()
                } else {
                    merkle::verify_consistency(
                        next.size,
                        cp.checkpoint.size,
                        &next.root(),
                        &cp.checkpoint.root,
                        run.proof,
                    )
                    .is_ok()
                };
                if !ok {
                    return Err(LedgerError::ProofInvalid(format!(
                        "entries up to {} are not a prefix of the signed checkpoint at size {}",
                        next.size, cp.checkpoint.size
                    )));
                }
            }
        }
        if !pack.is_empty() {
            batch.insert(&pack_key(next.size / PACK), pack);
        }
        // Perfect subtrees of [`STORED_LEVEL`] and up (all `push` keeps): the levels below are
        // computed from the entries when read.
        for (level, index, h) in &nodes {
            batch.insert(&node_key(*level, *index), &h[..]);
        }
        batch.insert(SIZE_KEY, &next.size.to_be_bytes());
        self.inner.log.apply_batch(batch)?;
        if let Some(cp) = cp
            && cp.checkpoint.size == next.size
        {
            self.store_checkpoint(cp)?;
        }
        fail::fail_point!("ledger::store::before_flush", |_| Err(LedgerError::io(
            "flush the log (failpoint ledger::store::before_flush)",
            std::io::Error::other("injected failure"),
        )));
        self.inner.db.flush()?;
        self.inner.durable_size.store(next.size, Ordering::Release);
        *st = next;
        fail::fail_point!("ledger::store::after_append", |_| Err(LedgerError::io(
            "after a durable append (failpoint ledger::store::after_append)",
            std::io::Error::other("injected failure"),
        )));
        Ok(())
    }

    /// Signs (or returns the stored) checkpoint at the current size. Writer only.
    pub fn checkpoint(&self) -> Result<SignedCheckpoint, LedgerError> {
        let signer = self
            .inner
            .signer
            .as_ref()
            .ok_or_else(|| LedgerError::Key("a replica cannot sign checkpoints".into()))?;
        let st = self.state();
        if let Some(cp) = self.checkpoint_at(st.size)? {
            return Ok(cp);
        }
        let cp = SignedCheckpoint::sign(
            Checkpoint::new(&self.inner.origin, st.size, st.root()),
            signer,
        );
        self.inner
            .checkpoints
            .insert(st.size.to_be_bytes(), cp.encode().as_bytes())?;
        self.inner.db.flush()?;
        Ok(cp)
    }

    /// Test builds only (feature `failpoints`): signs a second checkpoint of the current size
    /// over a root no entries reproduce, and stores it in place of the true one, so that this
    /// log equivocates: what it serves from then on contradicts what it signed before. The
    /// coordinator's `coordinator::ledger::fork` failpoint uses it to show monitors a fork.
    #[cfg(feature = "failpoints")]
    pub fn sign_forked_checkpoint(&self) -> Result<SignedCheckpoint, LedgerError> {
        let signer = self
            .inner
            .signer
            .as_ref()
            .ok_or_else(|| LedgerError::Key("a replica cannot sign checkpoints".into()))?;
        let st = self.state();
        let root = merkle::node_hash(&st.root(), b"forked");
        let cp = SignedCheckpoint::sign(Checkpoint::new(&self.inner.origin, st.size, root), signer);
        self.inner
            .checkpoints
            .insert(st.size.to_be_bytes(), cp.encode().as_bytes())?;
        self.inner.db.flush()?;
        Ok(cp)
    }

    /// Appends a batch and signs the checkpoint covering it, in one call.
    pub fn append_and_checkpoint<B: AsRef<[u8]> + Sync>(
        &self,
        entries: &[B],
    ) -> Result<(u64, SignedCheckpoint), LedgerError> {
        let first = self.append_batch(entries)?;
        Ok((first, self.checkpoint()?))
    }

    /// Every witness key in force at some size so far (the genesis's, and those governance
    /// entries added): whose cosignatures are kept.
    pub fn witness_keys(&self) -> Vec<VerifierKey> {
        let t = self.witness_tracker();
        let mut keys: Vec<VerifierKey> = Vec::new();
        for (_, w) in t.schedule() {
            for k in w.verifier_keys() {
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
        }
        keys
    }

    /// The witnesses and quorum a checkpoint of `size` entries is judged by: the genesis's, or
    /// those of the last witness change (a governance entry admitted by the acceptance rule)
    /// among its entries. Empty and 0 before the genesis is held.
    pub fn witness_policy(&self, size: u64) -> (Vec<VerifierKey>, u64) {
        self.witness_tracker()
            .policy_at(size)
            .map_or((Vec::new(), 0), |w| (w.verifier_keys(), w.quorum))
    }

    /// The witness sets in force, from the size each starts at, ascending.
    pub fn witness_schedule(&self) -> Vec<(u64, records::WitnessesRecord)> {
        self.witness_tracker().schedule().to_vec()
    }

    /// The tracker, brought up to the durable size (each entry is read once).
    fn witness_tracker(&self) -> MutexGuard<'_, records::WitnessFollower> {
        let mut t = self
            .inner
            .witnesses
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Up to the last entry written, durable or still being flushed: a checkpoint stored
        // with its entries' batch keeps the cosignatures of witnesses those entries add. Each
        // pack is looked up once and its entries read in place.
        loop {
            let i = t.next_index();
            let pack = i / PACK;
            let Ok(Some(bytes)) = self.inner.log.get(pack_key(pack)) else {
                break;
            };
            for entry in pack_entries(pack, &bytes).skip((i % PACK) as usize) {
                let Ok(entry) = entry else {
                    return t;
                };
                t.read(&self.inner.origin, entry);
            }
            if t.next_index() == i || !t.next_index().is_multiple_of(PACK) {
                // Nothing more is written (the last pack is partial).
                break;
            }
        }
        t
    }

    /// [`Self::witness_policy`] at `size` as it will be once `pending` (entries from this log's
    /// size on, not appended yet) are: a monitor judges a checkpoint before it takes its
    /// entries.
    pub fn witness_policy_with<B: AsRef<[u8]>>(
        &self,
        pending: &[B],
        size: u64,
    ) -> (Vec<VerifierKey>, u64) {
        let mut t = self.witness_tracker().clone();
        for e in pending {
            t.read(&self.inner.origin, e.as_ref());
        }
        t.policy_at(size)
            .map_or((Vec::new(), 0), |w| (w.verifier_keys(), w.quorum))
    }

    /// Signature lines of `cp` worth keeping: the log's, and cosignatures by genesis witnesses
    /// that verify. Anything else (unknown or bad lines) is dropped before storing.
    fn trusted_lines(&self, cp: &SignedCheckpoint) -> Vec<NoteSignature> {
        let witnesses = self.witness_keys();
        cp.note
            .signatures
            .iter()
            .filter(|s| {
                s.is_by(&self.inner.log_key)
                    || witnesses.iter().any(|w| {
                        s.is_by(w)
                            && crate::note::verify_cosignature_payload(w, &cp.note.text, &s.payload)
                                .is_ok()
                    })
            })
            .cloned()
            .collect()
    }

    fn store_checkpoint(&self, cp: &SignedCheckpoint) -> Result<(), LedgerError> {
        let key = cp.checkpoint.size.to_be_bytes();
        let merged = match self.checkpoint_at(cp.checkpoint.size)? {
            Some(mut old) => {
                if old.checkpoint.root != cp.checkpoint.root {
                    let ev = Evidence {
                        reason: format!("two roots for size {}", cp.checkpoint.size),
                        first: old.encode(),
                        second: cp.encode(),
                    };
                    self.record_evidence(&ev)?;
                    return Err(LedgerError::Equivocation(ev.to_string()));
                }
                for s in self.trusted_lines(cp) {
                    old.note.add_signature(s);
                }
                old
            }
            None => {
                let mut fresh = cp.clone();
                fresh.note.signatures = self.trusted_lines(cp);
                fresh
            }
        };
        self.inner
            .checkpoints
            .insert(key, merged.encode().as_bytes())?;
        Ok(())
    }

    /// Adds a witness's cosignature to the stored checkpoint of `size` after verifying it.
    pub fn add_cosignature(
        &self,
        size: u64,
        witness: &VerifierKey,
        sig: NoteSignature,
    ) -> Result<SignedCheckpoint, LedgerError> {
        let _st = self.state();
        let mut cp = self
            .checkpoint_at(size)?
            .ok_or_else(|| LedgerError::Corrupt(format!("no checkpoint at size {size}")))?;
        if !sig.is_by(witness) {
            return Err(LedgerError::Signature(format!(
                "cosignature is not by {}",
                witness.name
            )));
        }
        crate::note::verify_cosignature_payload(witness, &cp.note.text, &sig.payload)?;
        cp.note.signatures.retain(|s| !s.is_by(witness));
        cp.note.signatures.push(sig);
        self.inner
            .checkpoints
            .insert(size.to_be_bytes(), cp.encode().as_bytes())?;
        self.inner.db.flush()?;
        Ok(cp)
    }

    /// The stored checkpoint at `size`, with the cosignatures gathered so far.
    pub fn checkpoint_at(&self, size: u64) -> Result<Option<SignedCheckpoint>, LedgerError> {
        match self.inner.checkpoints.get(size.to_be_bytes())? {
            Some(b) => Ok(Some(SignedCheckpoint::open(&b, &self.inner.log_key)?)),
            None => Ok(None),
        }
    }

    /// The largest stored checkpoint.
    pub fn latest_checkpoint(&self) -> Result<Option<SignedCheckpoint>, LedgerError> {
        match self.inner.checkpoints.last()? {
            Some((_, b)) => Ok(Some(SignedCheckpoint::open(&b, &self.inner.log_key)?)),
            None => Ok(None),
        }
    }

    /// The largest stored checkpoint that carries cosignatures by at least `quorum` of
    /// `witnesses` (the largest of all when `quorum` is 0): what a log publishes once witnessed.
    /// Stored checkpoints hold only lines that verified when they were added.
    pub fn latest_witnessed(
        &self,
        witnesses: &[VerifierKey],
        quorum: u64,
    ) -> Result<Option<SignedCheckpoint>, LedgerError> {
        for kv in self.inner.checkpoints.iter().rev() {
            let (_, b) = kv?;
            let cp = SignedCheckpoint::open(&b, &self.inner.log_key)?;
            let cosigners = witnesses
                .iter()
                .filter(|w| cp.note.signatures.iter().any(|s| s.is_by(w)))
                .count() as u64;
            if cosigners >= quorum {
                return Ok(Some(cp));
            }
        }
        Ok(None)
    }

    /// The largest stored checkpoint cosigned by the quorum of the witnesses in force at its
    /// size ([`Self::witness_policy`]): what a log publishes once witnessed.
    pub fn latest_witnessed_in_force(&self) -> Result<Option<SignedCheckpoint>, LedgerError> {
        // Keys parsed once per call, not once per checkpoint looked at.
        let schedule: Vec<(u64, (Vec<VerifierKey>, u64))> = self
            .witness_schedule()
            .into_iter()
            .map(|(from, w)| (from, (w.verifier_keys(), w.quorum)))
            .collect();
        for kv in self.inner.checkpoints.iter().rev() {
            let (_, b) = kv?;
            let cp = SignedCheckpoint::open(&b, &self.inner.log_key)?;
            let Some((keys, quorum)) = records::in_force_at(&schedule, cp.checkpoint.size) else {
                continue;
            };
            let cosigners = keys
                .iter()
                .filter(|k| cp.note.signatures.iter().any(|s| s.is_by(k)))
                .count() as u64;
            if cosigners >= *quorum {
                return Ok(Some(cp));
            }
        }
        Ok(None)
    }

    /// Every stored checkpoint, by increasing size.
    pub fn checkpoints(&self) -> Result<Vec<SignedCheckpoint>, LedgerError> {
        self.inner
            .checkpoints
            .iter()
            .map(|kv| {
                let (_, b) = kv?;
                SignedCheckpoint::open(&b, &self.inner.log_key)
            })
            .collect()
    }

    /// Entry bytes at `index`.
    pub fn entry(&self, index: u64) -> Result<Vec<u8>, LedgerError> {
        let size = self.size();
        if index >= size {
            return Err(LedgerError::OutOfRange { index, size });
        }
        stored_entry(&self.inner.log, index)?
            .ok_or_else(|| LedgerError::Corrupt(format!("missing entry {index}")))
    }

    /// Entries `[start, end)`.
    pub fn entries(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>, LedgerError> {
        let size = self.size();
        if start > end || end > size {
            return Err(LedgerError::OutOfRange { index: end, size });
        }
        let mut out = Vec::with_capacity((end - start) as usize);
        if start < end {
            let (first, last) = (start / PACK, (end - 1) / PACK);
            for kv in self.inner.log.range(pack_key(first)..=pack_key(last)) {
                let (k, bytes) = kv?;
                let pack =
                    u64::from_be_bytes(k[1..].try_into().map_err(|_| {
                        LedgerError::Corrupt("a pack key that is not 9 bytes".into())
                    })?);
                for (i, e) in pack_entries(pack, &bytes).enumerate() {
                    let index = pack * PACK + i as u64;
                    if (start..end).contains(&index) {
                        out.push(e?.to_vec());
                    }
                }
            }
        }
        if out.len() as u64 != end - start {
            return Err(LedgerError::Corrupt(format!(
                "entries {start}..{end} incomplete"
            )));
        }
        Ok(out)
    }

    /// Root hash of the first `size` entries.
    pub fn root_at(&self, size: u64) -> Result<Hash, LedgerError> {
        let cur = self.size();
        if size > cur {
            return Err(LedgerError::OutOfRange {
                index: size,
                size: cur,
            });
        }
        merkle::root(&Nodes(&self.inner.log), size)
    }

    /// Inclusion proof of `index` in the tree of `size` entries.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, LedgerError> {
        let cur = self.size();
        if size > cur {
            return Err(LedgerError::OutOfRange {
                index: size,
                size: cur,
            });
        }
        merkle::inclusion_proof(&Nodes(&self.inner.log), index, size)
    }

    /// Consistency proof from `old` to `new` entries.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, LedgerError> {
        let cur = self.size();
        if new > cur {
            return Err(LedgerError::OutOfRange {
                index: new,
                size: cur,
            });
        }
        merkle::consistency_proof(&Nodes(&self.inner.log), old, new)
    }

    /// Replica: appends `entries` starting at `first` that together reproduce the signed
    /// checkpoint `note`, atomically with it. Entries already held are compared byte for byte.
    pub fn append_verified(
        &self,
        first: u64,
        entries: &[Vec<u8>],
        note: &[u8],
    ) -> Result<SignedCheckpoint, LedgerError> {
        self.append_proven(first, entries, note, &[])
    }

    /// Replica: appends `entries` starting at `first` when, together with what is held, they
    /// form a prefix of the signed checkpoint `note`: equal to it, or proven by `consistency`
    /// (a proof from the new size to the checkpoint's size). Lets catch-up stream in chunks.
    pub fn append_proven(
        &self,
        first: u64,
        entries: &[Vec<u8>],
        note: &[u8],
        consistency: &[Hash],
    ) -> Result<SignedCheckpoint, LedgerError> {
        let cp = SignedCheckpoint::open(note, &self.inner.log_key)?;
        let mut st = self.state();
        let overlap = self.held_overlap(&st, first, entries)?;
        let fresh = &entries[overlap..];
        if fresh.is_empty() {
            drop(st);
            self.observe_checkpoint(note)?;
            return Ok(cp);
        }
        let written = self.check(st.size, fresh).and_then(|leaves| {
            let run = Run {
                entries: fresh.iter().map(Vec::as_slice).collect(),
                leaves: &leaves,
                proof: consistency,
            };
            self.write_runs(&mut st, &[run], Some(&cp))
        });
        if let Err(e) = written {
            drop(st);
            // A signed checkpoint the entries do not reproduce may be a fork: keep it if it is.
            let _ = self.observe_checkpoint(note);
            return Err(e);
        }
        Ok(cp)
    }

    /// How many of `entries`, starting at `first`, this log already holds, after comparing
    /// them byte for byte with the ones held (a difference is refused).
    fn held_overlap(
        &self,
        st: &State,
        first: u64,
        entries: &[Vec<u8>],
    ) -> Result<usize, LedgerError> {
        if first > st.size {
            return Err(LedgerError::OutOfRange {
                index: first,
                size: st.size,
            });
        }
        let overlap = usize::try_from(st.size - first)
            .unwrap_or(usize::MAX)
            .min(entries.len());
        for (i, e) in entries[..overlap].iter().enumerate() {
            let idx = first + i as u64;
            let held = stored_entry(&self.inner.log, idx)?
                .ok_or_else(|| LedgerError::Corrupt(format!("missing entry {idx}")))?;
            if held != *e {
                return Err(LedgerError::ProofInvalid(format!(
                    "entry {idx} differs from the one held"
                )));
            }
        }
        Ok(overlap)
    }

    /// Replica, first half of [`Self::append_checked`]: checks the schema of `entries` at
    /// indices `first..` and computes their leaf hashes, without taking the store's lock, so
    /// that a catch-up checks one chunk while the previous one is being written.
    pub(crate) fn check_entries(
        &self,
        first: u64,
        entries: Vec<Vec<u8>>,
        consistency: Vec<Hash>,
    ) -> Result<CheckedChunk, LedgerError> {
        let leaves = self.check(first, &entries)?;
        Ok(CheckedChunk {
            first,
            entries,
            leaves,
            consistency,
        })
    }

    /// Replica: appends consecutive checked chunks in one batch with one flush, each proven a
    /// prefix of the signed checkpoint `note` by its own consistency proof, atomically with
    /// the checkpoint when they reach its size; entries already held are compared byte for
    /// byte. All or nothing: a chunk that is not proven refuses the whole call.
    pub(crate) fn append_checked(
        &self,
        chunks: &[CheckedChunk],
        note: &[u8],
    ) -> Result<SignedCheckpoint, LedgerError> {
        let cp = SignedCheckpoint::open(note, &self.inner.log_key)?;
        let mut st = self.state();
        let mut runs = Vec::with_capacity(chunks.len());
        let mut at = chunks.first().map_or(st.size, |c| c.first);
        if at > st.size {
            return Err(LedgerError::OutOfRange {
                index: at,
                size: st.size,
            });
        }
        for c in chunks {
            if c.first != at {
                return Err(LedgerError::OutOfRange {
                    index: c.first,
                    size: at,
                });
            }
            at = c.end();
            // Only the first chunks can overlap what is held (gossip may have appended some
            // while they were fetched).
            let overlap = if c.first < st.size {
                self.held_overlap(&st, c.first, &c.entries)?
            } else {
                0
            };
            if overlap < c.entries.len() {
                runs.push(Run {
                    entries: c.entries[overlap..].iter().map(Vec::as_slice).collect(),
                    leaves: &c.leaves[overlap..],
                    proof: &c.consistency,
                });
            }
        }
        if runs.is_empty() {
            drop(st);
            self.observe_checkpoint(note)?;
            return Ok(cp);
        }
        if let Err(e) = self.write_runs(&mut st, &runs, Some(&cp)) {
            drop(st);
            let _ = self.observe_checkpoint(note);
            return Err(e);
        }
        Ok(cp)
    }

    /// Checks a log-signed checkpoint against what this store holds. Conflicts are stored as
    /// evidence and returned as [`LedgerError::Equivocation`].
    pub fn observe_checkpoint(&self, note: &[u8]) -> Result<Observation, LedgerError> {
        let cp = SignedCheckpoint::open(note, &self.inner.log_key)?;
        let size = self.size();
        if let Some(held) = self.checkpoint_at(cp.checkpoint.size)?
            && held.checkpoint.root != cp.checkpoint.root
        {
            {
                let ev = Evidence {
                    reason: format!("two roots for size {}", cp.checkpoint.size),
                    first: held.encode(),
                    second: cp.encode(),
                };
                self.record_evidence(&ev)?;
                return Err(LedgerError::Equivocation(ev.to_string()));
            }
        }
        if cp.checkpoint.size > size {
            return Ok(Observation::Ahead {
                size: cp.checkpoint.size,
            });
        }
        if self.root_at(cp.checkpoint.size)? != cp.checkpoint.root {
            // Show it against the smallest held checkpoint that covers its size.
            let held = self
                .checkpoints()?
                .into_iter()
                .find(|h| h.checkpoint.size >= cp.checkpoint.size);
            let first = held.map(|h| h.encode()).unwrap_or_default();
            let ev = Evidence {
                reason: format!(
                    "checkpoint at size {} is not consistent with the log held here",
                    cp.checkpoint.size
                ),
                first,
                second: cp.encode(),
            };
            self.record_evidence(&ev)?;
            return Err(LedgerError::Equivocation(ev.to_string()));
        }
        self.store_checkpoint(&cp)?;
        self.inner.db.flush()?;
        Ok(Observation::Consistent)
    }

    /// Stores evidence (idempotent).
    pub fn record_evidence(&self, ev: &Evidence) -> Result<(), LedgerError> {
        let bytes = serde_json::to_vec(ev)
            .map_err(|e| LedgerError::Corrupt(format!("encode evidence: {e}")))?;
        let key = merkle::sha256_bytes(&bytes);
        self.inner.evidence.insert(key, bytes)?;
        self.inner.db.flush()?;
        Ok(())
    }

    /// All stored evidence of equivocation.
    pub fn evidence(&self) -> Result<Vec<Evidence>, LedgerError> {
        self.inner
            .evidence
            .iter()
            .map(|kv| {
                let (_, v) = kv?;
                serde_json::from_slice(&v)
                    .map_err(|e| LedgerError::Corrupt(format!("evidence: {e}")))
            })
            .collect()
    }

    /// Parses the signed note of the latest checkpoint, if any (convenience for status output).
    pub fn latest_note(&self) -> Result<Option<SignedNote>, LedgerError> {
        Ok(self.latest_checkpoint()?.map(|c| c.note))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::encode_canonical;
    use crate::records::v1::tests::{genesis, round};

    pub(crate) fn signer(origin: &str) -> NoteSigner {
        let rng = ring::rand::SystemRandom::new();
        let pk = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        NoteSigner::log(
            origin,
            ring::signature::Ed25519KeyPair::from_pkcs8(pk.as_ref()).unwrap(),
        )
        .unwrap()
    }

    fn records(origin: &str, n: u64) -> Vec<Vec<u8>> {
        let mut v = vec![encode_canonical(&genesis(origin)).unwrap()];
        for i in 1..n {
            v.push(encode_canonical(&round(origin, i)).unwrap());
        }
        v
    }

    #[test]
    fn append_prove_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = signer("fed");
        let recs = records("fed", 40);
        let tree = merkle::MemoryTree::from_entries(&recs);
        {
            let log = Log::open(dir.path(), "fed", s.clone()).unwrap();
            assert_eq!(log.append(&recs[0]).unwrap(), 0);
            assert!(
                log.append(&recs[2]).is_err(),
                "round 2 at entry 1 is refused"
            );
            assert_eq!(log.append_batch(&recs[1..17]).unwrap(), 1);
            let cp = log.checkpoint().unwrap();
            assert_eq!(cp.checkpoint.size, 17);
            assert_eq!(cp.checkpoint.root, tree.root_at(17).unwrap());
        }
        let log = Log::open(dir.path(), "fed", s.clone()).unwrap();
        assert_eq!(log.size(), 17);
        assert_eq!(log.root(), tree.root_at(17).unwrap());
        log.append_batch(&recs[17..]).unwrap();
        let cp = log.checkpoint().unwrap();
        assert_eq!(cp.checkpoint.root, tree.root_at(40).unwrap());
        assert_eq!(log.checkpoints().unwrap().len(), 2);
        for n in [1u64, 17, 31, 32, 33, 40] {
            assert_eq!(log.root_at(n).unwrap(), tree.root_at(n).unwrap());
            for i in 0..n {
                assert_eq!(
                    log.inclusion_proof(i, n).unwrap(),
                    merkle::inclusion_proof(&tree, i, n).unwrap()
                );
            }
            assert_eq!(
                log.consistency_proof(n.min(17), n).unwrap(),
                merkle::consistency_proof(&tree, n.min(17), n).unwrap()
            );
        }
        assert_eq!(log.entry(5).unwrap(), recs[5]);
        assert_eq!(log.entries(3, 9).unwrap(), recs[3..9].to_vec());
        assert!(Log::open(dir.path(), "other", signer("other")).is_err());
    }

    fn keys_with_prefix(log: &Log, prefix: &[u8]) -> usize {
        log.inner.log.scan_prefix(prefix).count()
    }

    /// Entries are stored [`PACK`] to a sled key: single appends rewrite the last pack, batches
    /// fill several, and every read (one entry, a range across packs, the leaf hashes) gives
    /// back what was appended. A store written one key per entry, or packed halfway when a
    /// crash stopped it, is packed when opened and reads and grows the same.
    #[test]
    fn entries_are_packed_and_an_unpacked_store_is_packed_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let s = signer("fed");
        let recs = records("fed", 53);
        let tree = merkle::MemoryTree::from_entries(&recs);
        let check = |log: &Log, n: usize| {
            assert_eq!(log.size(), n as u64);
            assert_eq!(log.root(), tree.root_at(n as u64).unwrap());
            for (i, r) in recs[..n].iter().enumerate() {
                assert_eq!(&log.entry(i as u64).unwrap(), r, "entry {i}");
            }
            for (a, b) in [(0, 0), (0, 1), (3, 16), (15, 17), (16, 32), (5, 47), (0, n)] {
                let b = b.min(n);
                let a = a.min(b);
                assert_eq!(
                    log.entries(a as u64, b as u64).unwrap(),
                    recs[a..b].to_vec(),
                    "entries {a}..{b}"
                );
            }
            assert!(matches!(
                log.entry(n as u64),
                Err(LedgerError::OutOfRange { .. })
            ));
        };
        {
            let log = Log::open(dir.path(), "fed", s.clone()).unwrap();
            for r in &recs[..20] {
                log.append(r).unwrap();
            }
            log.append_batch(&recs[20..50]).unwrap();
            check(&log, 50);
            assert_eq!(keys_with_prefix(&log, b"p"), 4, "50 entries in 4 packs");
            assert_eq!(keys_with_prefix(&log, b"e"), 0);
            // As a store written before packing holds them, from entry 16 on (the first pack
            // packed already, as a crash after its batch would leave it).
            let t = &log.inner.log;
            for (i, r) in recs[16..50].iter().enumerate() {
                t.insert(unpacked_key(16 + i as u64), r.as_slice()).unwrap();
            }
            for pack in 1..4 {
                t.remove(pack_key(pack)).unwrap();
            }
            log.inner.db.flush().unwrap();
        }
        let log = Log::open(dir.path(), "fed", s.clone()).unwrap();
        assert_eq!(keys_with_prefix(&log, b"e"), 0, "every entry packed");
        assert_eq!(keys_with_prefix(&log, b"p"), 4);
        check(&log, 50);
        log.append_batch(&recs[50..]).unwrap();
        check(&log, 53);
        for i in 0..53 {
            assert_eq!(
                log.perfect(0, i).unwrap(),
                merkle::leaf_hash(&recs[i as usize])
            );
        }
        // A damaged last pack is named, and nothing is appended after it.
        let t = &log.inner.log;
        let last = t.get(pack_key(3)).unwrap().unwrap();
        t.insert(pack_key(3), &last[..last.len() - 1]).unwrap();
        assert!(matches!(log.entry(52), Err(LedgerError::Corrupt(m)) if m.contains("pack 3")));
        let more = records("fed", 54);
        assert!(matches!(
            log.append(&more[53]),
            Err(LedgerError::Corrupt(_))
        ));
        assert_eq!(log.size(), 53);
    }

    /// A replica's chunks of `recs[start..end]`, checked, each with its consistency proof to
    /// the writer's checkpoint at `size`.
    fn chunks(
        log: &Log,
        replica: &Log,
        recs: &[Vec<u8>],
        bounds: &[u64],
        size: u64,
    ) -> Vec<CheckedChunk> {
        bounds
            .windows(2)
            .map(|w| {
                let (start, end) = (w[0], w[1]);
                replica
                    .check_entries(
                        start,
                        recs[start as usize..end as usize].to_vec(),
                        log.consistency_proof(end, size).unwrap(),
                    )
                    .unwrap()
            })
            .collect()
    }

    /// Appends store no hashes of levels 0 to 3 (computed back from one pack's entries), and a
    /// log written when they did, whose hashes are stored, reads them as stored.
    #[test]
    fn low_level_hashes_are_read_from_entries_or_as_an_older_log_stored_them() {
        let dir = tempfile::tempdir().unwrap();
        let s = signer("fed");
        let recs = records("fed", 37);
        let log = Log::open(dir.path(), "fed", s).unwrap();
        let (_, cp) = log.append_and_checkpoint(&recs).unwrap();
        let tree = merkle::MemoryTree::from_entries(&recs);
        assert_eq!(cp.checkpoint.root, tree.root_at(37).unwrap());
        assert_eq!(merkle::root(&log, 37).unwrap(), cp.checkpoint.root);
        for level in 0..STORED_LEVEL {
            for i in 0..(37u64 >> level) {
                assert!(log.inner.log.get(node_key(level, i)).unwrap().is_none());
                assert_eq!(
                    log.perfect(level, i).unwrap(),
                    tree.perfect(level, i).unwrap(),
                    "level {level}, index {i}"
                );
            }
        }
        for i in 0..2u64 {
            assert!(log.inner.log.get(node_key(4, i)).unwrap().is_some());
        }
        for (n, i) in [(4u64, 7u64), (32, 36), (36, 0)] {
            assert_eq!(
                log.inclusion_proof(i, n.max(i + 1)).unwrap(),
                merkle::inclusion_proof(&tree, i, n.max(i + 1)).unwrap()
            );
        }
        // As an older log holds them: the stored hash is what is read.
        let stored = [7u8; 32];
        log.inner.log.insert(node_key(0, 3), &stored[..]).unwrap();
        log.inner.log.insert(node_key(2, 5), &stored[..]).unwrap();
        assert_eq!(log.perfect(0, 3).unwrap(), stored);
        assert_eq!(log.perfect(2, 5).unwrap(), stored);
        assert!(matches!(
            log.perfect(0, 37),
            Err(LedgerError::OutOfRange { .. })
        ));
        assert!(matches!(
            log.perfect(3, 4),
            Err(LedgerError::OutOfRange { .. })
        ));
    }

    #[test]
    fn checked_chunks_are_written_together_only_when_each_is_proven() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let s = signer("fed");
        let recs = records("fed", 40);
        let log = Log::open(d1.path(), "fed", s.clone()).unwrap();
        let (_, cp) = log.append_and_checkpoint(&recs).unwrap();
        let note = cp.encode();
        let replica = Log::open_replica(d2.path(), s.verifier_key().clone()).unwrap();
        // A chunk whose schema does not hold at its index is refused before any write.
        assert!(
            replica
                .check_entries(1, recs[..3].to_vec(), Vec::new())
                .is_err()
        );
        // Three chunks in one write; then a gap is refused.
        let first = chunks(&log, &replica, &recs, &[0, 5, 12, 20], 40);
        replica.append_checked(&first, note.as_bytes()).unwrap();
        assert_eq!(replica.size(), 20);
        assert_eq!(replica.root(), log.root_at(20).unwrap());
        let gap = chunks(&log, &replica, &recs, &[22, 30], 40);
        assert!(matches!(
            replica.append_checked(&gap, note.as_bytes()),
            Err(LedgerError::OutOfRange { .. })
        ));
        let mut not_consecutive = chunks(&log, &replica, &recs, &[20, 25, 27, 30], 40);
        not_consecutive.remove(1);
        assert!(matches!(
            replica.append_checked(&not_consecutive, note.as_bytes()),
            Err(LedgerError::OutOfRange { .. })
        ));
        assert_eq!(replica.size(), 20);
        // A chunk with a proof that does not hold refuses the whole write, chunks before it
        // included.
        let mut bad = chunks(&log, &replica, &recs, &[20, 25, 30], 40);
        bad[1].consistency[0][0] ^= 1;
        assert!(matches!(
            replica.append_checked(&bad, note.as_bytes()),
            Err(LedgerError::ProofInvalid(_))
        ));
        assert_eq!(replica.size(), 20);
        // Chunks that overlap what is held (gossip appended meanwhile) are compared and the
        // rest written; reaching the checkpoint's size stores it.
        replica
            .append_proven(
                20,
                &recs[20..23],
                note.as_bytes(),
                &log.consistency_proof(23, 40).unwrap(),
            )
            .unwrap();
        let rest = chunks(&log, &replica, &recs, &[18, 30, 40], 40);
        replica.append_checked(&rest, note.as_bytes()).unwrap();
        assert_eq!(replica.size(), 40);
        assert_eq!(replica.root(), log.root());
        assert_eq!(
            replica.latest_checkpoint().unwrap().unwrap().checkpoint,
            cp.checkpoint
        );
        // Held entries that differ are refused.
        let mut changed = chunks(&log, &replica, &recs, &[30, 40], 40);
        changed[0].entries[0] = recs[31].clone();
        assert!(matches!(
            replica.append_checked(&changed, note.as_bytes()),
            Err(LedgerError::ProofInvalid(_))
        ));
    }

    #[test]
    fn replica_accepts_only_what_the_checkpoint_signs_and_keeps_forks() {
        let (d1, d2, d3) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let s = signer("fed");
        let recs = records("fed", 10);
        let log = Log::open(d1.path(), "fed", s.clone()).unwrap();
        let (_, cp6) = log.append_and_checkpoint(&recs[..6]).unwrap();
        let replica = Log::open_replica(d2.path(), s.verifier_key().clone()).unwrap();
        assert!(
            replica
                .append_verified(0, &recs[..5], cp6.encode().as_bytes())
                .is_err()
        );
        assert_eq!(replica.size(), 0);
        replica
            .append_verified(0, &recs[..6], cp6.encode().as_bytes())
            .unwrap();
        assert_eq!(replica.root(), log.root());
        // A fork: the same key signs a different history of the same size.
        let fork = Log::open(d3.path(), "fed", s.clone()).unwrap();
        let mut other = recs[..6].to_vec();
        let mut r5 = round("fed", 5);
        r5.valuation.seed = 99;
        other[5] = encode_canonical(&r5).unwrap();
        let (_, bad) = fork.append_and_checkpoint(&other).unwrap();
        assert!(matches!(
            replica.observe_checkpoint(bad.encode().as_bytes()),
            Err(LedgerError::Equivocation(_))
        ));
        let ev = replica.evidence().unwrap();
        assert_eq!(ev.len(), 1);
        ev[0].check_self_evident(s.verifier_key()).unwrap();
    }
}
