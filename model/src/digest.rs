//! SHA-256 digests in the forms the protocol and the ledger use.

use ring::digest::{Context, SHA256};

/// SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&SHA256, bytes))
}

/// Incremental SHA-256 over the little-endian bytes of f32 values, fed in chunks.
pub struct VectorHasher(Context);

impl Default for VectorHasher {
    fn default() -> Self {
        Self(Context::new(&SHA256))
    }
}

impl VectorHasher {
    pub fn update(&mut self, values: &[f32]) {
        let mut buf = [0u8; 4096];
        for chunk in values.chunks(buf.len() / 4) {
            for (dst, v) in buf.chunks_exact_mut(4).zip(chunk) {
                dst.copy_from_slice(&v.to_le_bytes());
            }
            self.0.update(&buf[..chunk.len() * 4]);
        }
    }

    /// Feed bytes that are already the little-endian encoding of f32 values.
    pub fn update_bytes(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub fn finish_hex(self) -> String {
        hex::encode(self.0.finish())
    }
}

/// Vectors smaller than this are hashed where their chunks arrive ([`StreamHasher::for_bytes`]):
/// hashing 16 MiB takes about 10 ms, and a hundred sites uploading 4 MiB updates at once
/// measured a higher memory peak at the coordinator with a thread each (chunks wait for it after
/// the file has them) than without.
pub const THREAD_HASH_MIN_BYTES: u64 = 16 << 20;

/// A [`StreamHasher`]'s thread could not start, stopped or panicked.
#[derive(Debug, thiserror::Error)]
pub enum HashingError {
    #[error("start a vector's hashing thread: {0}")]
    Start(std::io::Error),
    #[error("a vector's hashing thread stopped")]
    Stopped,
    #[error("a vector's hashing thread panicked")]
    Panicked,
}

/// The SHA-256 of a vector's chunks (little-endian f32 bytes) computed as they pass, as both
/// ends of a transfer need it: the coordinator of an upload, the participant of the model it
/// downloads. The first chunk is hashed where it arrives and, from the second on, on a thread
/// of the vector's own with at most `queue` chunks waiting for it (a small model's vector, one
/// chunk, costs no thread; [`Self::for_bytes`] keeps vectors under [`THREAD_HASH_MIN_BYTES`]
/// off threads altogether). Hashing 64 MB takes about 40 ms here; on the receiving task it held
/// up the receiving, on its own thread it runs beside the receiving and the file's writing
/// (measured at the coordinator: a single 64 MB upload 91.7-101.3 ms before, 77.0-88.2 ms
/// after). The chunks are shared, never copied.
pub struct StreamHasher {
    state: Hashing,
    queue: usize,
}

enum Hashing {
    /// No thread yet: the hasher, whether the first chunk has come, and whether every chunk
    /// is hashed here.
    Here {
        hasher: VectorHasher,
        first: bool,
        stay: bool,
    },
    /// The thread and its queue.
    Thread {
        tx: tokio::sync::mpsc::Sender<bytes::Bytes>,
        worker: std::thread::JoinHandle<VectorHasher>,
    },
}

impl Default for StreamHasher {
    /// A hasher that takes a thread from the second chunk on, whatever the vector's size,
    /// with two chunks queued at most.
    fn default() -> Self {
        Self::for_bytes(THREAD_HASH_MIN_BYTES, 2)
    }
}

impl StreamHasher {
    /// The hasher of a vector of `bytes` with at most `queue` chunks (at least one) waiting for
    /// its thread: one below [`THREAD_HASH_MIN_BYTES`] is hashed where its chunks arrive.
    pub fn for_bytes(bytes: u64, queue: usize) -> Self {
        Self {
            state: Hashing::Here {
                hasher: VectorHasher::default(),
                first: false,
                stay: bytes < THREAD_HASH_MIN_BYTES,
            },
            queue: queue.max(1),
        }
    }

    /// Whether the chunks go to a thread (for tests and logs).
    pub fn on_thread(&self) -> bool {
        matches!(self.state, Hashing::Thread { .. })
    }

    /// Hash `bytes` next (a shared chunk: not copied). Waits while the thread has its queue
    /// full.
    pub async fn push(&mut self, bytes: bytes::Bytes) -> Result<(), HashingError> {
        if let Hashing::Here {
            hasher,
            first,
            stay,
        } = &mut self.state
        {
            if !*first || *stay {
                hasher.update_bytes(&bytes);
                *first = true;
                return Ok(());
            }
            let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(self.queue);
            let mut moved = std::mem::take(hasher);
            let worker = std::thread::Builder::new()
                .name("vector-hasher".into())
                .stack_size(256 << 10)
                .spawn(move || {
                    while let Some(b) = rx.blocking_recv() {
                        moved.update_bytes(&b);
                    }
                    moved
                })
                .map_err(HashingError::Start)?;
            self.state = Hashing::Thread { tx, worker };
        }
        let Hashing::Thread { tx, .. } = &self.state else {
            return Err(HashingError::Stopped);
        };
        tx.send(bytes).await.map_err(|_| HashingError::Stopped)
    }

    /// The digest (lowercase hex) of everything pushed. Blocks until the thread has hashed
    /// what is queued: call it where blocking is allowed.
    pub fn finish(self) -> Result<String, HashingError> {
        match self.state {
            Hashing::Here { hasher, .. } => Ok(hasher.finish_hex()),
            Hashing::Thread { tx, worker } => {
                drop(tx);
                worker
                    .join()
                    .map(VectorHasher::finish_hex)
                    .map_err(|_| HashingError::Panicked)
            }
        }
    }
}

/// SHA-256 (lowercase hex) of a flat parameter vector's little-endian f32 bytes.
pub fn vector_sha256(values: &[f32]) -> String {
    let mut h = VectorHasher::default();
    h.update(values);
    h.finish_hex()
}

/// The little-endian bytes of a flat parameter vector.
pub fn vector_to_bytes(values: &[f32]) -> Vec<u8> {
    // Written in place rather than collected from an iterator of arrays, which the compiler
    // cannot size up front: this loop compiles to a plain copy on little-endian machines.
    let mut out = vec![0u8; values.len() * 4];
    for (dst, v) in out.chunks_exact_mut(4).zip(values) {
        dst.copy_from_slice(&v.to_le_bytes());
    }
    out
}

/// Parse little-endian f32 bytes; `None` when the length is not a multiple of 4.
pub fn vector_from_bytes(bytes: &[u8]) -> Option<Vec<f32>> {
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incremental_matches_one_shot() {
        let v: Vec<f32> = (0..5000).map(|i| i as f32 * 0.25 - 7.0).collect();
        let mut h = VectorHasher::default();
        h.update(&v[..1234]);
        h.update(&v[1234..]);
        assert_eq!(h.finish_hex(), sha256_hex(&vector_to_bytes(&v)));
    }

    /// One chunk (hashed where it arrives), several (on a thread) and none hash to the
    /// vector's digest; a vector below the threshold stays where its chunks arrive.
    #[test]
    fn chunks_hash_to_the_vectors_digest_here_or_on_a_thread() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let v: Vec<f32> = (0..1000).map(|i| i as f32 * 0.5).collect();
        let chunks = |k: usize| -> Vec<bytes::Bytes> {
            v.chunks(k)
                .map(|c| bytes::Bytes::from(vector_to_bytes(c)))
                .collect()
        };
        for (chunk, queue) in [(1000, 2), (300, 1), (7, 2), (1, 4)] {
            let mut h = StreamHasher::for_bytes(THREAD_HASH_MIN_BYTES, queue);
            for c in chunks(chunk) {
                rt.block_on(h.push(c)).unwrap();
            }
            assert_eq!(h.on_thread(), chunk < 1000, "chunk {chunk}");
            assert_eq!(h.finish().unwrap(), vector_sha256(&v), "chunk {chunk}");
        }
        assert_eq!(
            StreamHasher::default().finish().unwrap(),
            vector_sha256(&[])
        );
        let mut h = StreamHasher::for_bytes(4000, 2);
        for c in chunks(7) {
            rt.block_on(h.push(c)).unwrap();
        }
        assert!(!h.on_thread());
        assert_eq!(h.finish().unwrap(), vector_sha256(&v));
        // A zero queue is one chunk, not a channel that cannot be made.
        let mut h = StreamHasher::for_bytes(THREAD_HASH_MIN_BYTES, 0);
        for c in chunks(100) {
            rt.block_on(h.push(c)).unwrap();
        }
        assert!(h.on_thread());
        assert_eq!(h.finish().unwrap(), vector_sha256(&v));
    }

    #[test]
    fn bytes_roundtrip_little_endian() {
        let v = [1.0f32, -0.5, f32::MIN_POSITIVE, 3.25e7];
        let b = vector_to_bytes(&v);
        assert_eq!(&b[..4], &[0x00, 0x00, 0x80, 0x3f]);
        assert_eq!(vector_from_bytes(&b).unwrap(), v);
    }

    #[test]
    fn known_digest_of_one_float() {
        // 1.0f32 little-endian = 00 00 80 3f
        assert_eq!(vector_sha256(&[1.0]), sha256_hex(&[0x00, 0x00, 0x80, 0x3f]));
        assert_eq!(vector_from_bytes(&[0, 0, 0x80, 0x3f]), Some(vec![1.0]));
        assert_eq!(vector_from_bytes(&[0, 0, 0x80]), None);
    }
}
