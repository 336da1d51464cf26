//! The checks of a chunked vector arriving from the wire, made chunk by chunk before the whole
//! vector has arrived: chunk size, order, total length, finiteness and the norm
//! ([`Assembler`]); the digest is computed as the chunks pass too ([`upload_hasher`], the
//! [`StreamHasher`] both ends of a transfer share), on a thread of its own for a large vector of
//! several chunks, so a vector is never hashed twice and never held whole (the chunks go on to
//! the update's file as they pass).

use crate::error::CoordinatorError;
use fedledger_model::digest::{HashingError, StreamHasher};

/// Chunks waiting for an upload's [`StreamHasher`] thread: what an upload holds beyond the chunk
/// being received and those queued for its file.
pub const HASH_QUEUE: usize = 2;

/// The hasher of an upload of `bytes`: hashed where its chunks arrive below
/// [`fedledger_model::digest::THREAD_HASH_MIN_BYTES`], else from the second chunk on by a
/// thread with [`HASH_QUEUE`] chunks queued at most.
pub fn upload_hasher(bytes: u64) -> StreamHasher {
    StreamHasher::for_bytes(bytes, HASH_QUEUE)
}

impl From<HashingError> for CoordinatorError {
    fn from(e: HashingError) -> Self {
        CoordinatorError::Internal(e.to_string())
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

    /// An upload's hasher keeps a small update where its chunks arrive and gives a large one a
    /// thread from its second chunk on, and both hash to the vector's digest.
    #[tokio::test]
    async fn uploads_hash_small_vectors_here_and_large_ones_on_a_thread() {
        let v: Vec<f32> = (0..1000).map(|i| i as f32 * 0.5).collect();
        for (bytes_claimed, threaded) in [
            (4000, false),
            (fedledger_model::digest::THREAD_HASH_MIN_BYTES, true),
        ] {
            let mut h = upload_hasher(bytes_claimed);
            for c in v.chunks(7) {
                h.push(bytes::Bytes::from(bytes(c))).await.unwrap();
            }
            assert_eq!(h.on_thread(), threaded);
            let sha = tokio::task::spawn_blocking(move || h.finish())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(sha, vector_sha256(&v));
        }
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
