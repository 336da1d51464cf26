//! A stored vector of `f32` values read through a read-only memory map of its blob file.
//!
//! The coordinator keeps every update and model as a content-addressed file of little-endian
//! `f32` bytes. Reading one into a `Vec` puts its whole size in the process's anonymous memory,
//! so a round's close held every update at once (five 16M-parameter updates: 330 MB). Mapped,
//! the values are the file's pages in the page cache: the kernel reads them in as they are
//! touched, they count as file-backed memory, and under memory pressure they are dropped and
//! read again rather than swapped. Aggregation and valuation read the values block by block
//! through the map as they would through a slice, and a download sends slices of the map
//! without copying them.
//!
//! # Why this is sound here
//! Mapping a file is `unsafe` because the mapped bytes change if the file is written while it
//! is mapped, and reading past a truncated end faults. The coordinator's blobs are written once
//! under a temporary name, fsynced, and only then given their digest as name; a named blob is
//! never opened for writing, truncated or renamed again, only removed (retention), and a
//! removed file stays readable through an existing map. Nothing but the coordinator may write
//! its state folder (as with sled's own files).
//!
//! On a big-endian host the file's bytes are not the values' in-memory layout: the values are
//! then decoded into a vector of their own (the bytes stay mapped for downloads).

use std::{borrow::Cow, fs::File, io, ops::Deref, path::Path};

use bytes::Bytes;

/// The values of a stored vector, and their little-endian bytes (for sending as they are).
#[derive(Clone, Debug)]
pub struct StoredVector {
    /// Little-endian `f32` bytes: a memory map of the blob, or owned bytes.
    bytes: Bytes,
    /// Big-endian hosts only: the values decoded from `bytes`.
    #[cfg(target_endian = "big")]
    decoded: Vec<f32>,
}

/// An owned `Vec<f32>` seen as its bytes (4-aligned, little-endian on the hosts that use it).
#[cfg(target_endian = "little")]
struct F32Bytes(Vec<f32>);

#[cfg(target_endian = "little")]
impl AsRef<[u8]> for F32Bytes {
    fn as_ref(&self) -> &[u8] {
        bytemuck::cast_slice(&self.0)
    }
}

/// A read-only map of a blob file, seen as bytes.
struct Map(memmap2::Mmap);

impl AsRef<[u8]> for Map {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl StoredVector {
    /// Map the blob file at `path`. Refuses a file whose length is not a whole number of `f32`
    /// values (`InvalidData`).
    pub fn map(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        if len % 4 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} has {len} bytes, not a whole number of f32 values",
                    path.display()
                ),
            ));
        }
        if len == 0 {
            // An empty file cannot be mapped; it holds no values.
            return Ok(Self::from_bytes(Bytes::new()));
        }
        // SAFETY: the coordinator's blobs are immutable once named (see this module's
        // documentation): nothing writes or truncates the file while it is mapped.
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::Mmap::map(&file)? };
        Ok(Self::from_bytes(Bytes::from_owner(Map(map))))
    }

    /// Values held in memory (a model just computed, a test's vector).
    pub fn from_vec(values: Vec<f32>) -> Self {
        #[cfg(target_endian = "little")]
        {
            Self::from_bytes(Bytes::from_owner(F32Bytes(values)))
        }
        #[cfg(target_endian = "big")]
        {
            let le: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            Self {
                bytes: Bytes::from(le),
                decoded: values,
            }
        }
    }

    fn from_bytes(bytes: Bytes) -> Self {
        #[cfg(target_endian = "big")]
        let decoded = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Self {
            bytes,
            #[cfg(target_endian = "big")]
            decoded,
        }
    }

    /// The values.
    pub fn values(&self) -> &[f32] {
        #[cfg(target_endian = "little")]
        {
            if self.bytes.is_empty() {
                return &[];
            }
            // A map starts on a page boundary and an owned vector's bytes on an f32's, and the
            // length is a multiple of 4 (checked when mapped): the cast cannot fail.
            bytemuck::cast_slice(&self.bytes)
        }
        #[cfg(target_endian = "big")]
        {
            &self.decoded
        }
    }

    /// The little-endian bytes of values `start..end`, sharing the map (no copy).
    pub fn le_bytes(&self, start: usize, end: usize) -> Bytes {
        self.bytes.slice(start * 4..end * 4)
    }
}

/// The little-endian bytes of `values`: the values' own memory on a little-endian host (no
/// copy), a copy otherwise.
pub fn le_bytes(values: &[f32]) -> Cow<'_, [u8]> {
    #[cfg(target_endian = "little")]
    {
        Cow::Borrowed(bytemuck::cast_slice(values))
    }
    #[cfg(target_endian = "big")]
    {
        Cow::Owned(values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
}

impl Deref for StoredVector {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        self.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn le(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn a_mapped_file_reads_as_its_values_and_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let values: Vec<f32> = (0..10_000).map(|i| i as f32 * 0.5 - 7.25).collect();
        let path = dir.path().join("v");
        std::fs::write(&path, le(&values)).unwrap();
        let mapped = StoredVector::map(&path).unwrap();
        assert_eq!(mapped.values(), &values[..]);
        assert_eq!(&mapped.le_bytes(3, 5)[..], &le(&values[3..5])[..]);
        // Removing the file (retention) leaves the map readable.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(mapped[9_999], values[9_999]);
    }

    #[test]
    fn owned_values_read_the_same_as_mapped_ones() {
        let values = vec![1.5f32, -0.0, f32::MIN_POSITIVE, 3.0e7];
        let owned = StoredVector::from_vec(values.clone());
        assert_eq!(owned.values(), &values[..]);
        assert_eq!(&owned.le_bytes(0, 4)[..], &le(&values)[..]);
        assert_eq!(&le_bytes(&values)[..], &le(&values)[..]);
    }

    #[test]
    fn an_empty_file_holds_no_values_and_a_ragged_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        assert!(StoredVector::map(&empty).unwrap().is_empty());
        let ragged = dir.path().join("ragged");
        std::fs::write(&ragged, [0u8; 6]).unwrap();
        let err = StoredVector::map(&ragged).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("6 bytes"), "{err}");
        assert_eq!(
            StoredVector::map(&dir.path().join("missing"))
                .unwrap_err()
                .kind(),
            io::ErrorKind::NotFound
        );
    }
}
