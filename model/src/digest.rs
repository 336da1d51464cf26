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
