//! The checks of a chunked vector arriving from the wire, made chunk by chunk before the whole
//! vector has arrived: chunk size, order, total length, finiteness and the norm
//! ([`Assembler`]); the digest is computed as the chunks pass too ([`StreamHasher`]), on a
//! thread of its own for a large vector of several chunks, so a vector is never hashed twice and
//! never held whole (the chunks go on to the update's file as they pass).

use bytes::Bytes;
use fedledger_model::digest::VectorHasher;

use crate::error::CoordinatorError;

/// Chunks waiting for a [`StreamHasher`]'s thread: what an upload holds beyond the chunk being
/// received and those queued for its file.
pub const HASH_QUEUE: usize = 2;

/// Vectors smaller than this are hashed where their chunks arrive ([`StreamHasher::for_bytes`]):
/// hashing 16 MiB takes about 10 ms, and a hundred sites uploading 4 MiB updates at once
/// measured a higher memory peak with a thread each (chunks wait for it after the file has
/// them) than without.
pub const THREAD_HASH_MIN_BYTES: u64 = 16 << 20;

/// The SHA-256 of a vector's chunks, computed as they pass: the first chunk where it arrives,
/// and from the second on, on a thread of the vector's own (a small model's update, one chunk,
/// costs no thread; [`Self::for_bytes`] keeps vectors under [`THREAD_HASH_MIN_BYTES`] off
/// threads altogether). Hashing 64 MB takes about 40 ms here; on the receiving task it held up
/// the receiving, on its own thread it runs beside the receiving and the file's writing
/// (measured: a single 64 MB upload 91.7-101.3 ms before, 77.0-88.2 ms after).
pub struct StreamHasher {
    state: Hashing,
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
        tx: tokio::sync::mpsc::Sender<Bytes>,
        worker: std::thread::JoinHandle<VectorHasher>,
    },
}

impl Default for StreamHasher {
    /// A hasher that takes a thread from the second chunk on, whatever the vector's size.
    fn default() -> Self {
        Self {
            state: Hashing::Here {
                hasher: VectorHasher::default(),
                first: false,
                stay: false,
            },
        }
    }
}

impl StreamHasher {
    /// The hasher of a vector of `bytes`: one below [`THREAD_HASH_MIN_BYTES`] is hashed where
    /// its chunks arrive.
    pub fn for_bytes(bytes: u64) -> Self {
        Self {
            state: Hashing::Here {
                hasher: VectorHasher::default(),
                first: false,
                stay: bytes < THREAD_HASH_MIN_BYTES,
            },
        }
    }

    /// Hash `bytes` next (a shared chunk: not copied). Waits while the thread has
    /// [`HASH_QUEUE`] chunks queued.
    pub async fn push(&mut self, bytes: Bytes) -> Result<(), CoordinatorError> {
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
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(HASH_QUEUE);
            let mut moved = std::mem::take(hasher);
            let worker = std::thread::Builder::new()
                .name("upload-hasher".into())
                .stack_size(256 << 10)
                .spawn(move || {
                    while let Some(b) = rx.blocking_recv() {
                        moved.update_bytes(&b);
                    }
                    moved
                })
                .map_err(|e| {
                    CoordinatorError::Internal(format!("start an upload's hashing thread: {e}"))
                })?;
            self.state = Hashing::Thread { tx, worker };
        }
        let Hashing::Thread { tx, .. } = &self.state else {
            return Err(CoordinatorError::Internal(
                "an upload's hashing thread did not start".into(),
            ));
        };
        tx.send(bytes)
            .await
            .map_err(|_| CoordinatorError::Internal("an upload's hashing thread stopped".into()))
    }

    /// The digest (lowercase hex) of everything pushed. Blocks until the thread has hashed
    /// what is queued.
    pub fn finish(self) -> Result<String, CoordinatorError> {
        match self.state {
            Hashing::Here { hasher, .. } => Ok(hasher.finish_hex()),
            Hashing::Thread { tx, worker } => {
                drop(tx);
                worker.join().map(VectorHasher::finish_hex).map_err(|_| {
                    CoordinatorError::Internal("an upload's hashing thread panicked".into())
                })
            }
        }
    }
}

/// Checks the chunks of one vector of known length as they pass.
pub struct Assembler {
    expected: u64,
    max_chunk: usize,
    /// Values accepted so far.
    have: u64,
    sum_sq: f64,
}

impl Assembler {
    /// Expect exactly `expected` values in chunks of at most `max_chunk`.
    pub fn new(expected: u64, max_chunk: usize) -> Self {
        Self {
            expected,
            max_chunk,
            have: 0,
            sum_sq: 0.0,
        }
    }

    /// Check the chunk (little-endian f32 bytes) that starts at value `offset` and count it.
    pub fn push(&mut self, offset: u64, bytes: &[u8]) -> Result<(), CoordinatorError> {
        let have = self.have;
        if !bytes.len().is_multiple_of(4) {
            return Err(CoordinatorError::InvalidField {
                field: "data",
                reason: format!(
                    "chunk at offset {offset} has {} bytes, not a whole number of f32 values",
                    bytes.len()
                ),
            });
        }
        if bytes.len() / 4 > self.max_chunk {
            return Err(CoordinatorError::ChunkTooLarge {
                offset,
                len: bytes.len() / 4,
                max: self.max_chunk,
            });
        }
        let len = bytes.len() / 4;
        if offset != have {
            return Err(CoordinatorError::ChunkOutOfOrder {
                got: offset,
                expected: have,
            });
        }
        if have + len as u64 > self.expected {
            return Err(CoordinatorError::DimensionMismatch {
                got: have + len as u64,
                expected: self.expected,
            });
        }
        let (sq, finite) = sum_of_squares(bytes);
        if !finite {
            let i = bytes
                .chunks_exact(4)
                .position(|c| !f32::from_le_bytes([c[0], c[1], c[2], c[3]]).is_finite())
                .unwrap_or(0);
            return Err(CoordinatorError::NonFinite {
                index: have + i as u64,
            });
        }
        self.sum_sq += sq;
        self.have += len as u64;
        Ok(())
    }

    /// The complete vector's L2 norm.
    pub fn finish(self) -> Result<f64, CoordinatorError> {
        let got = self.have;
        if got != self.expected {
            return Err(CoordinatorError::Truncated {
                got,
                expected: self.expected,
            });
        }
        Ok(self.sum_sq.sqrt())
    }
}

/// The sum of the squares of the little-endian f32 values in `bytes` (a whole number of them),
/// and whether every value is finite. Eight independent sums and no early exit, so the loop
/// runs at the speed of memory rather than of one chain of additions (a non-finite value is
/// looked for again only when there is one).
fn sum_of_squares(bytes: &[u8]) -> (f64, bool) {
    const LANES: usize = 8;
    let mut lanes = [0.0f64; LANES];
    let mut finite = true;
    let mut blocks = bytes.chunks_exact(4 * LANES);
    for block in &mut blocks {
        for (lane, c) in lanes.iter_mut().zip(block.chunks_exact(4)) {
            let v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            finite &= v.is_finite();
            *lane += f64::from(v) * f64::from(v);
        }
    }
    for c in blocks.remainder().chunks_exact(4) {
        let v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        finite &= v.is_finite();
        lanes[0] += f64::from(v) * f64::from(v);
    }
    (lanes.iter().sum(), finite)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedledger_model::digest::vector_sha256;

    fn bytes(v: &[f32]) -> Vec<u8> {
        fedledger_model::digest::vector_to_bytes(v)
    }

    #[test]
    fn reassembles_in_order() {
        let v: Vec<f32> = (0..10).map(|i| i as f32).collect();
        let mut a = Assembler::new(10, 4);
        for (i, c) in v.chunks(4).enumerate() {
            a.push((i * 4) as u64, &bytes(c)).unwrap();
        }
        assert!((a.finish().unwrap() - 285f64.sqrt()).abs() < 1e-9);
    }

    /// One chunk (hashed where it arrives), several (on a thread) and none hash to the
    /// vector's digest.
    #[tokio::test]
    async fn chunks_hash_to_the_vectors_digest_here_or_on_a_thread() {
        let v: Vec<f32> = (0..1000).map(|i| i as f32 * 0.5).collect();
        for chunk in [1000, 300, 7, 1] {
            let mut h = StreamHasher::default();
            for c in v.chunks(chunk) {
                h.push(Bytes::from(bytes(c))).await.unwrap();
            }
            let threaded = matches!(h.state, Hashing::Thread { .. });
            assert_eq!(threaded, chunk < 1000, "chunk {chunk}");
            let sha = tokio::task::spawn_blocking(move || h.finish())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(sha, vector_sha256(&v), "chunk {chunk}");
        }
        assert_eq!(
            StreamHasher::default().finish().unwrap(),
            vector_sha256(&[])
        );
        // A vector below the threshold stays on the receiving task, chunk after chunk.
        let mut h = StreamHasher::for_bytes(4000);
        for c in v.chunks(7) {
            h.push(Bytes::from(bytes(c))).await.unwrap();
        }
        assert!(matches!(h.state, Hashing::Here { .. }));
        assert_eq!(h.finish().unwrap(), vector_sha256(&v));
        assert!(matches!(
            StreamHasher::for_bytes(THREAD_HASH_MIN_BYTES).state,
            Hashing::Here { stay: false, .. }
        ));
    }

    /// The lanes add up to the plain sum, and a non-finite value anywhere (in a block of eight
    /// or in the remainder) is reported at its own index.
    #[test]
    fn lanes_sum_and_find_non_finite_values() {
        let v: Vec<f32> = (0..1003).map(|i| (i as f32 - 500.0) * 0.01).collect();
        let plain: f64 = v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum();
        let mut a = Assembler::new(v.len() as u64, 2048);
        a.push(0, &bytes(&v)).unwrap();
        assert!((a.finish().unwrap() - plain.sqrt()).abs() < 1e-9);
        for (at, bad) in [
            (517, f32::NAN),
            (1001, f32::INFINITY),
            (8, f32::NEG_INFINITY),
        ] {
            let mut w = v.clone();
            w[at] = bad;
            let mut a = Assembler::new(w.len() as u64, 2048);
            assert!(matches!(
                a.push(0, &bytes(&w)),
                Err(CoordinatorError::NonFinite { index }) if index == at as u64
            ));
        }
    }

    #[test]
    fn refuses_bad_chunks() {
        let mut a = Assembler::new(10, 4);
        assert!(matches!(
            a.push(0, &[0u8; 7]),
            Err(CoordinatorError::InvalidField { .. })
        ));
        assert!(matches!(
            a.push(0, &bytes(&[0.0; 5])),
            Err(CoordinatorError::ChunkTooLarge { .. })
        ));
        assert!(matches!(
            a.push(4, &bytes(&[0.0; 4])),
            Err(CoordinatorError::ChunkOutOfOrder {
                got: 4,
                expected: 0
            })
        ));
        assert!(matches!(
            a.push(0, &bytes(&[0.0, f32::NAN])),
            Err(CoordinatorError::NonFinite { index: 1 })
        ));
        a.push(0, &bytes(&[0.0; 4])).unwrap();
        a.push(4, &bytes(&[0.0; 4])).unwrap();
        assert!(matches!(
            a.push(8, &bytes(&[0.0; 4])),
            Err(CoordinatorError::DimensionMismatch {
                got: 12,
                expected: 10
            })
        ));
        assert!(matches!(
            a.finish(),
            Err(CoordinatorError::Truncated {
                got: 8,
                expected: 10
            })
        ));
    }
}
