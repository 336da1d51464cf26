//! Durable coordinator state: sled for metadata, content-addressed files for large vectors.
//!
//! Everything the coordinator acknowledges is on disk first: an update's vector is written to
//! `blobs/<sha256>` and fsynced, then its metadata is inserted into sled and flushed, and only then
//! does the participant get its receipt. Closing a round writes the round's result and the next
//! round's state in one sled transaction.
//!
//! An upload is streamed to its file as it arrives ([`BlobWriter`]): from its second chunk on, a
//! writer thread of its own creates a file under a temporary name and writes each chunk: past
//! the page cache for uploads of at least [`DIRECT_MIN_BYTES`], through it with the disk's
//! writeback started every 2 MiB otherwise, so the fsync the acknowledgement waits for finds
//! little left to do and the coordinator holds at most a few chunks of an upload in memory.
//! An update of one chunk creates no file until its commit, and none at all when the same
//! bytes are stored already; one of at most [`SMALL_BLOB_BYTES`] (a small model's) goes into
//! sled instead of a file, made durable by the flush of the record that names it: a thousand
//! small uploads cost no inode allocation and no file created only to be removed. The file
//! gets its content's name only once every check passed ([`BlobWriter::commit`]); a refused or
//! abandoned upload's file is removed, and one a crash interrupted at the next start.
//! Concurrent commits share the folder's fsync, and concurrent records share sled's flush
//! (group commit, [`GroupSync`]).

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use serde::{Serialize, de::DeserializeOwned};
use sled::Transactional;

use fedledger_memory::StoredVector;
use fedledger_model::digest::{sha256_hex, vector_from_bytes, vector_sha256};

use crate::{
    error::StoreError,
    types::{DeclineMeta, PersistedState, RoundOutcome, UpdateMeta, UtilitiesMeta},
};

/// The coordinator's store in `state_dir`.
pub struct Store {
    db: sled::Db,
    meta: sled::Tree,
    updates: sled::Tree,
    declines: sled::Tree,
    utilities: sled::Tree,
    results: sled::Tree,
    blobs: PathBuf,
    /// Blobs of at most [`SMALL_BLOB_BYTES`] uploaded in one chunk, by digest: in sled, made
    /// durable by the flush of the record that names them.
    small: sled::Tree,
    dir_sync: Arc<GroupSync>,
    /// Group commit of the records' flushes.
    flushes: GroupSync,
}

/// Largest upload kept in sled rather than in a file of its own ([`BlobWriter::commit`]): a
/// small model's update (64 KiB: 16 Ki values). A thousand sites sending such updates each
/// round made the coordinator spend about a second of CPU per round allocating, and later
/// freeing, ext4 inodes; in sled they cost an insert and share the records' flush.
pub const SMALL_BLOB_BYTES: usize = 64 * 1024;

/// Uploads of at least this many bytes are written past the page cache
/// ([`fedledger_memory::DirectFile`]): copying 64 MB into the page cache cost about as much
/// CPU as receiving and hashing it. Smaller ones go through the page cache (with writeback
/// started every 2 MiB): a direct writer holds a 2 MiB aligned buffer, which a hundred sites
/// uploading 4 MiB updates at once would multiply.
pub const DIRECT_MIN_BYTES: u64 = 16 << 20;

/// Chunks an upload's writer thread may have queued: bounds the memory of one upload in
/// flight to this many chunks whatever the disk's speed (the receiver waits for room).
const WRITER_QUEUE: usize = 4;

/// Unique temporary names: two participants may send identical updates at once (a copy, or
/// colluding attackers), and neither may rename or remove the other's file.
static WRITERS: AtomicU64 = AtomicU64::new(0);

fn temp_name(blobs: &Path, stem: &str) -> PathBuf {
    let writer = WRITERS.fetch_add(1, Ordering::Relaxed);
    blobs.join(format!("{stem}.{}-{writer}.tmp", std::process::id()))
}

/// Group commit of a durable step (the blob folder's fsync, sled's flush): a caller whose
/// write happened before a sync started waits for that sync instead of starting its own, so
/// concurrent writers finishing together pay for one sync, and one thread at a time runs it
/// (a thousand concurrent sled flushes otherwise spin against each other in sled's log).
#[derive(Default)]
pub struct GroupSync {
    state: Mutex<GroupState>,
    done: Condvar,
}

#[derive(Default)]
struct GroupState {
    /// Writes made (each takes the next number).
    requested: u64,
    /// Every write up to this number is durable.
    synced: u64,
    /// A sync is running.
    running: bool,
}

impl GroupSync {
    /// Make every write done before this call durable, running `sync` unless a sync that
    /// started after this call covers it.
    fn sync(&self, sync: impl FnOnce() -> Result<(), StoreError>) -> Result<(), StoreError> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.requested += 1;
        let mine = st.requested;
        loop {
            if st.synced >= mine {
                return Ok(());
            }
            if st.running {
                st = self.done.wait(st).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            st.running = true;
            let target = st.requested;
            drop(st);
            let result = sync();
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            st.running = false;
            if result.is_ok() {
                st.synced = st.synced.max(target);
            }
            self.done.notify_all();
            return result;
        }
    }

    /// Make every rename in `dir` done before this call durable (a folder fsync).
    fn sync_dir(&self, dir: &Path) -> Result<(), StoreError> {
        self.sync(|| {
            fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err(dir))
        })
    }
}

/// What a blob's writer thread is handed.
enum Piece {
    Bytes(bytes::Bytes),
    /// Every byte is in: make the file durable and hand it back.
    Finish,
}

/// A blob written as its bytes arrive, under a temporary name until [`Self::commit`] names it
/// by its content. Its first chunk is held; from the second on, a writer thread of the blob's
/// own creates the file and writes them (so an update of one chunk, a small model, costs no
/// thread, no queue, and no file before its commit). Dropped uncommitted (the upload broke off
/// or was refused), its file, if it has one, is removed.
pub struct BlobWriter {
    state: Writer,
    tmp: PathBuf,
    blobs: PathBuf,
    small: sled::Tree,
    dir_sync: Arc<GroupSync>,
    written: u64,
    /// Whether the file is written past the page cache (the upload declared at least
    /// [`DIRECT_MIN_BYTES`]).
    direct: bool,
}

enum Writer {
    /// No thread and no file yet: the first chunk when it has arrived.
    Held(Option<bytes::Bytes>),
    /// The writer thread and its queue.
    Threaded {
        tx: Option<tokio::sync::mpsc::Sender<Piece>>,
        worker: Option<std::thread::JoinHandle<Result<(), StoreError>>>,
    },
}

/// The writer thread: creates the file at `path` (written past the page cache if `direct`),
/// writes what it is handed, fsyncs on `Finish`; on an error, or when the queue closes
/// without `Finish`, removes the file.
fn writer_thread(
    path: PathBuf,
    direct: bool,
    mut rx: tokio::sync::mpsc::Receiver<Piece>,
) -> Result<(), StoreError> {
    let result = (|| {
        let mut file =
            fedledger_memory::DirectFile::create(&path, direct).map_err(io_err(&path))?;
        while let Some(piece) = rx.blocking_recv() {
            match piece {
                Piece::Bytes(b) => file.write(&b).map_err(io_err(&path))?,
                Piece::Finish => {
                    file.finish().map_err(io_err(&path))?;
                    return Ok(true);
                }
            }
        }
        Ok(false)
    })();
    match result {
        Ok(true) => Ok(()),
        Ok(false) => {
            // Abandoned: never acknowledged, so never needed.
            let _ = fs::remove_file(&path);
            Err(StoreError::Abandoned)
        }
        Err(e) => {
            let _ = fs::remove_file(&path);
            Err(e)
        }
    }
}

impl BlobWriter {
    fn start(blobs: &Path, small: sled::Tree, dir_sync: Arc<GroupSync>, expected: u64) -> Self {
        Self {
            direct: expected >= DIRECT_MIN_BYTES,
            state: Writer::Held(None),
            tmp: temp_name(blobs, "upload"),
            blobs: blobs.to_owned(),
            small,
            dir_sync,
            written: 0,
        }
    }

    /// Bytes handed to the writer so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Hand `bytes` on for the file: the first chunk is held, the second starts the writer
    /// thread; waits while the writer has [`WRITER_QUEUE`] chunks queued.
    pub async fn write(&mut self, bytes: bytes::Bytes) -> Result<(), StoreError> {
        let n = bytes.len() as u64;
        if let Writer::Held(held) = &mut self.state {
            match held.take() {
                None => {
                    *held = Some(bytes);
                    self.written += n;
                    return Ok(());
                }
                Some(first) => {
                    let (tx, rx) = tokio::sync::mpsc::channel::<Piece>(WRITER_QUEUE);
                    let (path, direct) = (self.tmp.clone(), self.direct);
                    let worker = std::thread::Builder::new()
                        .name("blob-writer".into())
                        .stack_size(256 << 10)
                        .spawn(move || writer_thread(path, direct, rx))
                        .map_err(io_err(&self.blobs))?;
                    // The queue is empty: the first chunk goes in without waiting.
                    let _ = tx.try_send(Piece::Bytes(first));
                    self.state = Writer::Threaded {
                        tx: Some(tx),
                        worker: Some(worker),
                    };
                }
            }
        }
        let sent = match &self.state {
            Writer::Threaded { tx: Some(tx), .. } => tx.send(Piece::Bytes(bytes)).await.is_ok(),
            _ => false,
        };
        if !sent {
            // The writer stopped on an error: its result says which.
            return Err(self.stop());
        }
        self.written += n;
        Ok(())
    }

    /// The writer's error after it stopped early.
    fn stop(&mut self) -> StoreError {
        match &mut self.state {
            Writer::Threaded { tx, worker } => {
                *tx = None;
                match worker.take().map(|w| w.join()) {
                    Some(Ok(Err(e))) => e,
                    _ => StoreError::Abandoned,
                }
            }
            Writer::Held(_) => StoreError::Abandoned,
        }
    }

    /// Drop the blob and wait until its file is gone (a refusal on a thread that may block:
    /// nothing is left behind when the refusal is answered).
    pub fn abandon(mut self) {
        match &mut self.state {
            Writer::Threaded { tx, worker } => {
                *tx = None;
                if let Some(w) = worker.take() {
                    let _ = w.join();
                }
            }
            // No file yet.
            Writer::Held(_) => {}
        }
    }

    /// Every byte is in and `sha256` is their digest (checked by the caller): fsync the file,
    /// name it `blobs/<sha256>` and make the name durable (a folder fsync shared with
    /// concurrent commits). Blocks on disk. An upload of one chunk of at most
    /// [`SMALL_BLOB_BYTES`] goes into the store's sled instead, durable with the store's next
    /// flush: the caller records the update next, and that record's flush covers it (sled
    /// recovers a prefix of its writes, so no record survives a crash without its blob).
    pub fn commit(mut self, sha256: &str) -> Result<(), StoreError> {
        if self.small.contains_key(sha256.as_bytes())? {
            // The same bytes are stored already.
            self.abandon();
            return Ok(());
        }
        if let Writer::Held(held) = &mut self.state
            && held.as_ref().is_none_or(|b| b.len() <= SMALL_BLOB_BYTES)
        {
            let bytes = held.take().unwrap_or_default();
            self.small.insert(sha256.as_bytes(), bytes.as_ref())?;
            // The same crash point as a file's: the blob is stored, nothing names it yet.
            fail::fail_point!("coordinator::blob::after_fsync", |_| Err(
                StoreError::Injected("coordinator::blob::after_fsync".into())
            ));
            return Ok(());
        }
        let path = self.blobs.join(sha256);
        if path.exists() {
            // The same bytes are stored already (a copy, or the same zero update from many
            // hospitals): drop this file unsynced (a held chunk has none), and make sure the
            // other's name is durable.
            let (blobs, dir_sync) = (self.blobs.clone(), self.dir_sync.clone());
            self.abandon();
            return dir_sync.sync_dir(&blobs);
        }
        match &mut self.state {
            Writer::Held(held) => {
                let first = held.take();
                let file = fs::File::create(&self.tmp).map_err(io_err(&self.tmp))?;
                write_synced(file, first.as_deref().unwrap_or_default(), &self.tmp)?;
            }
            Writer::Threaded { tx, worker } => {
                let tx = tx.take().ok_or(StoreError::Abandoned)?;
                if tx.blocking_send(Piece::Finish).is_err() {
                    return Err(self.stop());
                }
                drop(tx);
                match worker.take().map(|w| w.join()) {
                    Some(Ok(Ok(()))) => {}
                    Some(Ok(Err(e))) => return Err(e),
                    Some(Err(_)) | None => return Err(StoreError::Abandoned),
                }
            }
        }
        name_durably(&self.tmp, &path, &self.blobs, &self.dir_sync)
    }
}

/// Write `bytes` to `file` (at `tmp`) and fsync it; a failed write leaves nothing behind
/// (best effort: the error is what matters).
fn write_synced(mut file: fs::File, bytes: &[u8], tmp: &Path) -> Result<(), StoreError> {
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io_err(tmp));
    if written.is_err() {
        let _ = fs::remove_file(tmp);
    }
    written
}

/// The last steps of every blob write, once its file is fsynced under `tmp`: give it its
/// content's name `path` and make the name durable (a folder fsync shared with concurrent
/// writers). On a failure the temporary file is removed (best effort: the error is what
/// matters).
fn name_durably(
    tmp: &Path,
    path: &Path,
    blobs: &Path,
    dir_sync: &GroupSync,
) -> Result<(), StoreError> {
    let rename = || {
        fail::fail_point!("coordinator::blob::after_fsync", |_| Err(
            StoreError::Injected("coordinator::blob::after_fsync".into())
        ));
        fs::rename(tmp, path).map_err(io_err(path))
    };
    let named = rename();
    if named.is_err() {
        let _ = fs::remove_file(tmp);
    }
    named?;
    dir_sync.sync_dir(blobs)
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        match &mut self.state {
            // Closing the queue without `Finish` tells the writer to remove its file; it does
            // so on its own thread, so dropping never waits for the disk.
            Writer::Threaded { tx, .. } => *tx = None,
            // No file yet.
            Writer::Held(_) => {}
        }
    }
}

const STATE_KEY: &[u8] = b"state";
const ORDER_KEY: &[u8] = b"participant_order";

fn round_key(round: u64, participant: usize) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&round.to_be_bytes());
    k[8..].copy_from_slice(&(participant as u64).to_be_bytes());
    k
}

/// The blob `sha256`'s bytes still hash to its name.
fn check_digest(sha256: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let actual = sha256_hex(bytes);
    if actual != sha256 {
        return Err(StoreError::CorruptBlob {
            sha256: sha256.to_owned(),
            actual,
        });
    }
    Ok(())
}

/// The values of the blob `sha256`'s little-endian bytes.
fn decode_vector(sha256: &str, bytes: &[u8]) -> Result<Vec<f32>, StoreError> {
    vector_from_bytes(bytes).ok_or_else(|| StoreError::Decode {
        key: sha256.to_owned(),
        reason: "length is not a multiple of 4".into(),
    })
}

/// Whether a file name is a blob's: a SHA-256 in lower-case hex.
fn is_digest(name: &str) -> bool {
    name.len() == 64
        && name
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Decode {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("in-memory records always serialise")
}

impl Store {
    /// Open (or create) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let blobs = dir.join("blobs");
        fs::create_dir_all(&blobs).map_err(io_err(&blobs))?;
        // Temporary files of writes a crash interrupted: never acknowledged, so never needed.
        for entry in fs::read_dir(&blobs).map_err(io_err(&blobs))? {
            let path = entry.map_err(io_err(&blobs))?.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                fs::remove_file(&path).map_err(io_err(&path))?;
            }
        }
        Self::open_parts(&dir.join("state.sled"), blobs)
    }

    /// Open the metadata at `sled_dir` with blobs read from (and written to) `blobs`. Replay
    /// opens a copy of a state directory's metadata this way and only reads blobs in place.
    pub fn open_parts(sled_dir: &Path, blobs: PathBuf) -> Result<Self, StoreError> {
        let db = fedledger_ledger::db::open_sled(sled_dir)?;
        Ok(Self {
            meta: db.open_tree("meta")?,
            updates: db.open_tree("updates")?,
            declines: db.open_tree("declines")?,
            utilities: db.open_tree("utilities")?,
            results: db.open_tree("results")?,
            small: db.open_tree("small_blobs")?,
            db,
            blobs,
            dir_sync: Arc::default(),
            flushes: GroupSync::default(),
        })
    }

    /// Write bytes under their SHA-256, durably (fsync of the file and of the folder).
    /// Returns the digest. Writing the same content twice is a no-op.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<String, StoreError> {
        let sha = sha256_hex(bytes);
        let path = self.blobs.join(&sha);
        if path.exists() {
            return Ok(sha);
        }
        let tmp = temp_name(&self.blobs, &sha);
        write_synced(fs::File::create(&tmp).map_err(io_err(&tmp))?, bytes, &tmp)?;
        name_durably(&tmp, &path, &self.blobs, &self.dir_sync)?;
        Ok(sha)
    }

    /// A blob streamed to disk as its bytes arrive (an upload of `expected` bytes, as its
    /// header declares), named by [`BlobWriter::commit`].
    pub fn blob_writer(&self, expected: u64) -> BlobWriter {
        BlobWriter::start(
            &self.blobs,
            self.small.clone(),
            self.dir_sync.clone(),
            expected,
        )
    }

    /// Store a flat vector; its key is the SHA-256 of its little-endian bytes.
    pub fn put_vector(&self, values: &[f32]) -> Result<String, StoreError> {
        // The values' own memory as bytes (no copy of a model-sized vector).
        self.put_blob(&fedledger_memory::le_bytes(values))
    }

    /// Whether a blob of this digest is stored (in sled or as a file).
    pub fn has_blob(&self, sha256: &str) -> Result<bool, StoreError> {
        Ok(self.small.contains_key(sha256.as_bytes())? || self.blobs.join(sha256).exists())
    }

    /// The digests of every stored blob (in sled and as files), sorted.
    pub fn blob_digests(&self) -> Result<Vec<String>, StoreError> {
        let mut all = std::collections::BTreeSet::new();
        for kv in self.small.iter() {
            let (k, _) = kv?;
            all.insert(String::from_utf8_lossy(&k).into_owned());
        }
        for entry in fs::read_dir(&self.blobs).map_err(io_err(&self.blobs))? {
            let path = entry.map_err(io_err(&self.blobs))?.path();
            if let Some(name) = path.file_name().and_then(|n| n.to_str())
                && is_digest(name)
            {
                all.insert(name.to_owned());
            }
        }
        Ok(all.into_iter().collect())
    }

    /// The bytes of the blob `sha256` (from sled, or `blobs/<sha256>`), as they are.
    fn read_blob_file(&self, sha256: &str) -> Result<Vec<u8>, StoreError> {
        if let Some(b) = self.small.get(sha256.as_bytes())? {
            return Ok(b.to_vec());
        }
        let path = self.blobs.join(sha256);
        match fs::read(&path) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StoreError::MissingBlob(sha256.to_owned()))
            }
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Read a blob and check it still hashes to its name.
    pub fn get_blob(&self, sha256: &str) -> Result<Vec<u8>, StoreError> {
        let bytes = self.read_blob_file(sha256)?;
        check_digest(sha256, &bytes)?;
        Ok(bytes)
    }

    /// A stored vector this process has already checked against its digest, read through a
    /// memory map of its file (file-backed pages, not anonymous memory; see
    /// [`fedledger_memory`]), without hashing it again.
    pub fn map_vector_written(&self, sha256: &str) -> Result<StoredVector, StoreError> {
        if let Some(b) = self.small.get(sha256.as_bytes())? {
            // Small: read, not mapped.
            return decode_vector(sha256, &b).map(StoredVector::from_vec);
        }
        let path = self.blobs.join(sha256);
        StoredVector::map(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => StoreError::MissingBlob(sha256.to_owned()),
            std::io::ErrorKind::InvalidData => StoreError::Decode {
                key: sha256.to_owned(),
                reason: e.to_string(),
            },
            _ => io_err(&path)(e),
        })
    }

    /// A stored vector by digest, through a memory map of its file, checked against its digest.
    pub fn map_vector(&self, sha256: &str) -> Result<StoredVector, StoreError> {
        let v = self.map_vector_written(sha256)?;
        check_digest(sha256, &v.le_bytes(0, v.len()))?;
        Ok(v)
    }

    /// Read a stored vector by digest.
    pub fn get_vector(&self, sha256: &str) -> Result<Vec<f32>, StoreError> {
        let bytes = self.get_blob(sha256)?;
        let v = decode_vector(sha256, &bytes)?;
        debug_assert_eq!(vector_sha256(&v), sha256);
        Ok(v)
    }

    /// Delete a blob (retention). Missing blobs are fine.
    pub fn delete_blob(&self, sha256: &str) -> Result<(), StoreError> {
        self.small.remove(sha256.as_bytes())?;
        let path = self.blobs.join(sha256);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    pub fn load_state(&self) -> Result<Option<PersistedState>, StoreError> {
        self.meta
            .get(STATE_KEY)?
            .map(|b| decode("state", &b))
            .transpose()
    }

    /// The genesis participants' keys (hex) in the order their indices were first given
    /// (the file's order at the first start), so indices persisted in the store stay valid
    /// whatever the file lists later.
    pub fn load_order(&self) -> Result<Option<Vec<String>>, StoreError> {
        self.meta
            .get(ORDER_KEY)?
            .map(|b| decode("participant_order", &b))
            .transpose()
    }

    /// Record the participants' order (once, at the first start), flushed.
    pub fn save_order(&self, order: &[String]) -> Result<(), StoreError> {
        self.meta.insert(ORDER_KEY, encode(&order))?;
        self.db.flush()?;
        Ok(())
    }

    pub fn save_state(&self, state: &PersistedState) -> Result<(), StoreError> {
        self.meta.insert(STATE_KEY, encode(state))?;
        self.db.flush()?;
        Ok(())
    }

    /// Flush sled, sharing the flush with concurrent records (every insert made before this
    /// call is durable when it returns).
    fn flush_grouped(&self) -> Result<(), StoreError> {
        self.flushes.sync(|| {
            self.db.flush()?;
            Ok(())
        })
    }

    /// Record an accepted update (its vector must already be stored) and flush.
    pub fn record_update(&self, meta: &UpdateMeta) -> Result<(), StoreError> {
        self.updates
            .insert(round_key(meta.round, meta.participant), encode(meta))?;
        self.flush_grouped()?;
        fail::fail_point!("coordinator::update::after_flush", |_| Err(
            StoreError::Injected("coordinator::update::after_flush".into())
        ));
        Ok(())
    }

    /// Record a decline and flush.
    pub fn record_decline(&self, meta: &DeclineMeta) -> Result<(), StoreError> {
        self.declines
            .insert(round_key(meta.round, meta.participant), encode(meta))?;
        self.flush_grouped()
    }

    /// Record a validator's utility vector for a round and flush (one per validator and
    /// round: the key is the round, then the validator's key).
    pub fn record_utilities(&self, meta: &UtilitiesMeta) -> Result<(), StoreError> {
        let mut key = meta.round.to_be_bytes().to_vec();
        key.extend_from_slice(meta.validator.as_bytes());
        self.utilities.insert(key, encode(meta))?;
        self.flush_grouped()
    }

    /// The vectors received for `round`, sorted by validator key.
    pub fn utilities_for(&self, round: u64) -> Result<Vec<UtilitiesMeta>, StoreError> {
        Self::scan(&self.utilities, round)
    }

    fn scan<T: DeserializeOwned>(tree: &sled::Tree, round: u64) -> Result<Vec<T>, StoreError> {
        tree.scan_prefix(round.to_be_bytes())
            .map(|kv| {
                let (_, v) = kv?;
                decode(&format!("round {round}"), &v)
            })
            .collect()
    }

    /// Remove the blob files no record refers to: an update whose blob was made durable but
    /// whose record never was (the sled write failed, or the process died between the two),
    /// a model written by a close that did not finish. `referenced` are the digests the caller
    /// still needs besides those the store's records name (every update's, the state's model,
    /// every finished round's models, updates and validation file); files whose names are not
    /// digests are left alone. Returns how many were removed. Run at start, before anything
    /// writes.
    pub fn remove_unreferenced_blobs(
        &self,
        referenced: &std::collections::HashSet<String>,
    ) -> Result<usize, StoreError> {
        let mut keep = referenced.clone();
        for kv in self.updates.iter() {
            let (_, v) = kv?;
            let m: UpdateMeta = decode("update", &v)?;
            keep.insert(m.update_sha256);
        }
        if let Some(state) = self.load_state()? {
            keep.insert(state.global_sha256);
        }
        for o in self.outcomes()? {
            if let Some(h) = &o.history {
                keep.extend(h.blobs().cloned());
            }
            keep.insert(o.model_before);
            keep.insert(o.model_after);
            keep.insert(o.validation_sha256);
            keep.extend(o.contributions.into_iter().map(|c| c.update_sha256));
        }
        let mut removed = 0;
        for sha in self.blob_digests()? {
            if !keep.contains(&sha) {
                self.delete_blob(&sha)?;
                removed += 1;
            }
        }
        if removed > 0 {
            self.db.flush()?;
            self.dir_sync.sync_dir(&self.blobs)?;
        }
        Ok(removed)
    }

    pub fn updates_for(&self, round: u64) -> Result<Vec<UpdateMeta>, StoreError> {
        Self::scan(&self.updates, round)
    }

    pub fn declines_for(&self, round: u64) -> Result<Vec<DeclineMeta>, StoreError> {
        Self::scan(&self.declines, round)
    }

    /// Atomically store a finished round's outcome and the state that follows it, then flush.
    pub fn finish_round(
        &self,
        outcome: &RoundOutcome,
        next: &PersistedState,
    ) -> Result<(), StoreError> {
        let value = encode(outcome);
        let state = encode(next);
        (&self.results, &self.meta)
            .transaction(|(results, meta)| {
                results.insert(&outcome.round.to_be_bytes(), value.as_slice())?;
                meta.insert(STATE_KEY, state.as_slice())?;
                Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| StoreError::Transaction(format!("{e:?}")))?;
        fail::fail_point!("coordinator::close::before_flush", |_| Err(
            StoreError::Injected("coordinator::close::before_flush".into())
        ));
        self.db.flush()?;
        fail::fail_point!("coordinator::close::after_flush", |_| Err(
            StoreError::Injected("coordinator::close::after_flush".into())
        ));
        Ok(())
    }

    pub fn outcome(&self, round: u64) -> Result<Option<RoundOutcome>, StoreError> {
        self.results
            .get(round.to_be_bytes())?
            .map(|b| decode(&format!("result {round}"), &b))
            .transpose()
    }

    /// Delete the inputs of `round` (its updates, the model and the histories it started from)
    /// that no round
    /// after it, up to `latest`, refers to. Returns how many blobs were deleted.
    /// `current` names blobs kept whatever the records say (the hospitals' latest histories: a
    /// copycat's history can be the same blob as an older one of another hospital).
    pub fn prune_round(
        &self,
        round: u64,
        latest: u64,
        current: &std::collections::HashSet<String>,
    ) -> Result<usize, StoreError> {
        let Some(old) = self.outcome(round)? else {
            return Ok(0);
        };
        let mut keep = current.clone();
        for r in round + 1..=latest {
            if let Some(o) = self.outcome(r)? {
                keep.insert(o.model_before.clone());
                keep.insert(o.model_after.clone());
                keep.extend(o.contributions.iter().map(|c| c.update_sha256.clone()));
                if let Some(h) = &o.history {
                    keep.extend(h.blobs().cloned());
                }
            }
        }
        let mut deleted = 0;
        // A history the round started from is an input; the histories after it are not (a
        // hospital's latest is what its next round starts from, so it stays until then).
        let candidates = std::iter::once(old.model_before.clone())
            .chain(old.contributions.iter().map(|c| c.update_sha256.clone()))
            .chain(old.history.iter().flat_map(|h| h.before.values().cloned()));
        for sha in candidates {
            if !keep.contains(&sha) && self.has_blob(&sha)? {
                self.delete_blob(&sha)?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// All finished rounds, in order.
    pub fn outcomes(&self) -> Result<Vec<RoundOutcome>, StoreError> {
        self.results
            .iter()
            .map(|kv| {
                let (_, v) = kv?;
                decode("result", &v)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two participants sending identical updates at the same moment (a copy, colluding
    /// attackers) both get their blob; nothing temporary is left behind.
    #[test]
    fn identical_blobs_written_at_once_are_all_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let bytes = vec![7u8; 1 << 20];
        let shas: Vec<String> = std::thread::scope(|s| {
            let writers: Vec<_> = (0..8).map(|_| s.spawn(|| store.put_blob(&bytes))).collect();
            writers
                .into_iter()
                .map(|w| w.join().unwrap().unwrap())
                .collect()
        });
        assert!(shas.iter().all(|s| *s == shas[0]));
        assert_eq!(store.get_blob(&shas[0]).unwrap(), bytes);
        let names: Vec<String> = fs::read_dir(dir.path().join("blobs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![shas[0].clone()]);
    }

    /// A temporary file a crash left behind is removed when the store opens.
    #[test]
    fn temporary_files_of_an_interrupted_write_are_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let tmp = dir.path().join("blobs").join("abc.1-0.tmp");
        fs::write(&tmp, b"half").unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(!tmp.exists());
        drop(store);
    }

    fn blob_names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir.join("blobs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    /// Streamed in many pieces, committed under its digest: the file holds exactly the bytes
    /// (more than one writeback interval of them), and concurrent commits of different blobs
    /// all land, sharing folder fsyncs.
    #[test]
    fn streamed_blobs_are_named_by_their_digest_when_committed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let rt = runtime();
        // Three blobs of many pieces (a writer thread each: the first and last declared large
        // enough to be written past the page cache, the second not), one of a single piece
        // above SMALL_BLOB_BYTES (held and written to a file by the commit) and one below
        // (held and put in sled by the commit: no file).
        let mut contents: Vec<Vec<u8>> = (0..3u8)
            .map(|i| {
                (0..((4 << 20) + 3 * 4096 + usize::from(i)))
                    .map(|j| (j as u8) ^ i)
                    .collect()
            })
            .collect();
        contents.push(vec![7u8; SMALL_BLOB_BYTES + 4]);
        contents.push(vec![9u8; 4096]);
        let writers: Vec<(BlobWriter, String)> = contents
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let declared = if i == 1 {
                    c.len() as u64
                } else {
                    DIRECT_MIN_BYTES
                };
                let mut w = store.blob_writer(declared);
                rt.block_on(async {
                    for piece in c.chunks(1 << 20) {
                        w.write(bytes::Bytes::copy_from_slice(piece)).await.unwrap();
                    }
                });
                assert_eq!(w.written(), c.len() as u64);
                (w, sha256_hex(c))
            })
            .collect();
        std::thread::scope(|s| {
            for (w, sha) in writers {
                s.spawn(move || w.commit(&sha).unwrap());
            }
        });
        let mut expected: Vec<String> = contents.iter().map(|c| sha256_hex(c)).collect();
        expected.sort();
        assert_eq!(store.blob_digests().unwrap(), expected);
        let small = sha256_hex(&contents[4]);
        let files: Vec<String> = expected.iter().filter(|s| **s != small).cloned().collect();
        assert_eq!(blob_names(dir.path()), files);
        for c in &contents {
            assert_eq!(&store.get_blob(&sha256_hex(c)).unwrap(), c);
        }
    }

    /// A small upload lives in sled: it is read back and mapped like a file, a second commit
    /// of the same bytes is a no-op, it survives a reopen once the store flushed, and deleting
    /// it (retention) or sweeping it (no record names it) removes it.
    #[test]
    fn small_uploads_are_kept_in_sled_and_read_deleted_and_swept_like_files() {
        let dir = tempfile::tempdir().unwrap();
        let values = [0.5f32, -1.25, 3.0];
        let bytes = fedledger_model::digest::vector_to_bytes(&values);
        let sha = sha256_hex(&bytes);
        let rt = runtime();
        {
            let store = Store::open(dir.path()).unwrap();
            for _ in 0..2 {
                let mut w = store.blob_writer(bytes.len() as u64);
                rt.block_on(w.write(bytes::Bytes::copy_from_slice(&bytes)))
                    .unwrap();
                w.commit(&sha).unwrap();
            }
            assert!(store.has_blob(&sha).unwrap());
            assert_eq!(store.map_vector(&sha).unwrap().values(), &values[..]);
            assert_eq!(store.get_vector(&sha).unwrap(), values.to_vec());
            assert!(
                blob_names(dir.path()).is_empty(),
                "no file for a small upload"
            );
            store.flush_grouped().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.blob_digests().unwrap(), vec![sha.clone()]);
        store.delete_blob(&sha).unwrap();
        assert!(!store.has_blob(&sha).unwrap());
        assert!(matches!(
            store.get_blob(&sha),
            Err(StoreError::MissingBlob(s)) if s == sha
        ));
        let mut w = store.blob_writer(bytes.len() as u64);
        rt.block_on(w.write(bytes::Bytes::copy_from_slice(&bytes)))
            .unwrap();
        w.commit(&sha).unwrap();
        assert_eq!(
            store
                .remove_unreferenced_blobs(&Default::default())
                .unwrap(),
            1
        );
        assert!(store.blob_digests().unwrap().is_empty());
    }

    /// A writer dropped before its commit (an upload broken off or refused) leaves no file; a
    /// single held chunk makes none at all.
    #[test]
    fn abandoned_streamed_blobs_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let rt = runtime();
        let wait_for = |n: usize| {
            let mut waited = 0;
            while blob_names(dir.path()).len() != n && waited < 500 {
                std::thread::sleep(std::time::Duration::from_millis(10));
                waited += 1;
            }
            blob_names(dir.path())
        };
        let mut w = store.blob_writer(4);
        rt.block_on(w.write(bytes::Bytes::from_static(&[1, 2, 3, 4])))
            .unwrap();
        assert!(
            blob_names(dir.path()).is_empty(),
            "a held chunk has no file"
        );
        w.abandon();
        // Declared large: written past the page cache, removed all the same.
        let mut w = store.blob_writer(DIRECT_MIN_BYTES);
        for chunk in [[1, 2, 3, 4], [5, 6, 7, 8]] {
            rt.block_on(w.write(bytes::Bytes::copy_from_slice(&chunk)))
                .unwrap();
        }
        assert_eq!(wait_for(1).len(), 1, "the partial file exists");
        w.abandon();
        assert!(blob_names(dir.path()).is_empty());
        // Dropped (a stream broken off in an async handler): its writer removes the file on
        // its own thread, soon.
        let mut w = store.blob_writer(8);
        for chunk in [[5, 6, 7, 8], [9, 10, 11, 12]] {
            rt.block_on(w.write(bytes::Bytes::copy_from_slice(&chunk)))
                .unwrap();
        }
        assert_eq!(wait_for(1).len(), 1, "the partial file exists");
        drop(w);
        assert!(wait_for(0).is_empty());
    }

    /// A blob whose record never became durable is removed at the next start; every blob a
    /// record or the caller names stays, and so does a file that is not a digest.
    #[test]
    fn blobs_no_record_refers_to_are_removed_and_the_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let recorded = store.put_vector(&[1.0, 2.0]).unwrap();
        let orphan = store.put_vector(&[3.0, 4.0]).unwrap();
        let named = store.put_blob(b"validation").unwrap();
        let state_model = store.put_vector(&[5.0]).unwrap();
        std::fs::write(dir.path().join("blobs").join("README"), b"not a blob").unwrap();
        store
            .record_update(&UpdateMeta {
                round: 1,
                participant: 0,
                examples: 1,
                update_sha256: recorded.clone(),
                signature: String::new(),
                privacy: crate::types::PrivacyObject::none(),
                received_at_ms: 0,
                seq: 0,
                norm: 0.0,
            })
            .unwrap();
        store
            .save_state(&PersistedState {
                phase: crate::types::Phase::Open,
                round: 1,
                global_sha256: state_model.clone(),
                opened_at_ms: 0,
                deadline_ms: 0,
            })
            .unwrap();
        let keep = [named.clone()].into_iter().collect();
        assert_eq!(store.remove_unreferenced_blobs(&keep).unwrap(), 1);
        let mut left = blob_names(dir.path());
        left.sort();
        let mut want = vec![recorded, named, state_model, "README".to_owned()];
        want.sort();
        assert_eq!(left, want);
        assert!(!left.contains(&orphan));
        // Nothing else to remove the second time.
        assert_eq!(store.remove_unreferenced_blobs(&keep).unwrap(), 0);
    }
}
