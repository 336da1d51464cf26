//! RFC 9162 Merkle tree hashing, inclusion and consistency proofs (section 2.1).
//!
//! Hashes are computed over entry bytes exactly as stored. Trees are described by a
//! [`SubtreeSource`]: anything that can return the hash of a *perfect* subtree, i.e. the
//! `2^level` leaves starting at `index * 2^level`. Every subtree that RFC 9162 proofs mention is
//! either perfect or the right edge of the tree, which is folded from perfect ones, so a store
//! that keeps perfect subtree hashes answers any proof with O(log n) lookups.

use ring::digest::{SHA256, digest};

use crate::error::LedgerError;

/// A SHA-256 digest.
pub type Hash = [u8; 32];

fn sha256(parts: &[&[u8]]) -> Hash {
    let mut ctx = ring::digest::Context::new(&SHA256);
    for part in parts {
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// SHA-256 of arbitrary bytes.
pub fn sha256_bytes(data: &[u8]) -> Hash {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, data).as_ref());
    out
}

/// Root of the empty tree: SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    sha256(&[])
}

/// Leaf hash: SHA-256(0x00 || entry).
pub fn leaf_hash(entry: &[u8]) -> Hash {
    sha256(&[&[0u8], entry])
}

/// Interior node hash: SHA-256(0x01 || left || right).
pub fn node_hash(left: &[u8], right: &[u8]) -> Hash {
    sha256(&[&[1u8], left, right])
}

/// The root of a perfect subtree from the hashes of its lowest layer, whose count is a power
/// of two (one hash is its own root; an empty layer has none).
pub fn perfect_root(mut layer: Vec<Hash>) -> Option<Hash> {
    debug_assert!(layer.len() <= 1 || layer.len().is_power_of_two());
    while layer.len() > 1 {
        layer = layer
            .chunks_exact(2)
            .map(|pair| node_hash(&pair[0], &pair[1]))
            .collect();
    }
    layer.pop()
}

/// Largest power of two strictly smaller than `n` (n >= 2).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// Something that knows the hashes of perfect subtrees of one tree.
pub trait SubtreeSource {
    /// Hash of the perfect subtree of height `level` whose first leaf is `index << level`.
    fn perfect(&self, level: u32, index: u64) -> Result<Hash, LedgerError>;
}

/// MTH of leaves `[start, end)`; `start` must be aligned as RFC 9162 recursion guarantees.
pub fn subtree_hash<S: SubtreeSource + ?Sized>(
    src: &S,
    start: u64,
    end: u64,
) -> Result<Hash, LedgerError> {
    let n = end - start;
    if n == 0 {
        return Ok(empty_root());
    }
    if n.is_power_of_two() && start.is_multiple_of(n) {
        return src.perfect(n.trailing_zeros(), start / n);
    }
    // Decompose into perfect subtrees from the left, then fold from the right.
    let mut parts = Vec::with_capacity(64);
    let mut pos = start;
    while pos < end {
        let k = if end - pos == 1 {
            1
        } else {
            let rest = end - pos;
            if rest.is_power_of_two() {
                rest
            } else {
                split_point(rest)
            }
        };
        if !pos.is_multiple_of(k) {
            return Err(LedgerError::Corrupt(format!(
                "unaligned subtree [{start}, {end}) requested"
            )));
        }
        parts.push(src.perfect(k.trailing_zeros(), pos / k)?);
        pos += k;
    }
    let mut acc = parts
        .pop()
        .ok_or_else(|| LedgerError::Corrupt("empty range".into()))?;
    while let Some(left) = parts.pop() {
        acc = node_hash(&left, &acc);
    }
    Ok(acc)
}

/// Root hash of the first `size` leaves.
pub fn root<S: SubtreeSource + ?Sized>(src: &S, size: u64) -> Result<Hash, LedgerError> {
    subtree_hash(src, 0, size)
}

/// Inclusion proof of leaf `index` in the tree of `size` leaves (RFC 9162 2.1.3.1, PATH).
pub fn inclusion_proof<S: SubtreeSource + ?Sized>(
    src: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, LedgerError> {
    if index >= size {
        return Err(LedgerError::OutOfRange { index, size });
    }
    let mut proof = Vec::new();
    let (mut start, mut end, mut m) = (0u64, size, index);
    // Walk down from the root collecting siblings, then reverse (proof is leaf-to-root).
    while end - start > 1 {
        let k = split_point(end - start);
        if m < k {
            proof.push(subtree_hash(src, start + k, end)?);
            end = start + k;
        } else {
            proof.push(subtree_hash(src, start, start + k)?);
            start += k;
            m -= k;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// Consistency proof from `old` to `new` leaves (RFC 9162 2.1.4.1, PROOF/SUBPROOF).
/// Empty when `old == new` or `old == 0`.
pub fn consistency_proof<S: SubtreeSource + ?Sized>(
    src: &S,
    old: u64,
    new: u64,
) -> Result<Vec<Hash>, LedgerError> {
    if old > new {
        return Err(LedgerError::OutOfRange {
            index: old,
            size: new,
        });
    }
    if old == 0 || old == new {
        return Ok(Vec::new());
    }
    let mut proof = Vec::new();
    let (mut start, mut end, mut m, mut b) = (0u64, new, old, true);
    loop {
        let n = end - start;
        if m == n {
            if !b {
                proof.push(subtree_hash(src, start, end)?);
            }
            break;
        }
        let k = split_point(n);
        if m <= k {
            proof.push(subtree_hash(src, start + k, end)?);
            end = start + k;
        } else {
            proof.push(subtree_hash(src, start, start + k)?);
            start += k;
            m -= k;
            b = false;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// Verifies an inclusion proof (RFC 9162 2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), LedgerError> {
    if index >= size {
        return Err(LedgerError::ProofInvalid(format!(
            "leaf index {index} not below tree size {size}"
        )));
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return Err(LedgerError::ProofInvalid("inclusion proof too long".into()));
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(LedgerError::ProofInvalid(
            "inclusion proof too short".into(),
        ));
    }
    if &r != root {
        return Err(LedgerError::ProofInvalid(
            "inclusion proof does not lead to the root".into(),
        ));
    }
    Ok(())
}

/// Verifies a consistency proof between two tree heads (RFC 9162 2.1.4.2).
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), LedgerError> {
    if old_size > new_size {
        return Err(LedgerError::ProofInvalid(format!(
            "old size {old_size} exceeds new size {new_size}"
        )));
    }
    if old_size == new_size {
        if !proof.is_empty() {
            return Err(LedgerError::ProofInvalid(
                "consistency proof between equal sizes must be empty".into(),
            ));
        }
        if old_root != new_root {
            return Err(LedgerError::ProofInvalid(format!(
                "two different roots for size {old_size}"
            )));
        }
        return Ok(());
    }
    if old_size == 0 {
        if !proof.is_empty() {
            return Err(LedgerError::ProofInvalid(
                "consistency proof from the empty tree must be empty".into(),
            ));
        }
        return Ok(());
    }
    if proof.is_empty() {
        return Err(LedgerError::ProofInvalid("empty consistency proof".into()));
    }
    let mut path: Vec<&Hash> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(old_root);
    }
    path.extend(proof.iter());
    let (mut fnode, mut snode) = (old_size - 1, new_size - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let first = path[0];
    let (mut fr, mut sr) = (*first, *first);
    for c in &path[1..] {
        if snode == 0 {
            return Err(LedgerError::ProofInvalid(
                "consistency proof too long".into(),
            ));
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c.as_slice(), &fr);
            sr = node_hash(c.as_slice(), &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c.as_slice());
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(LedgerError::ProofInvalid(
            "consistency proof too short".into(),
        ));
    }
    if &fr != old_root {
        return Err(LedgerError::ProofInvalid(
            "consistency proof does not lead to the old root".into(),
        ));
    }
    if &sr != new_root {
        return Err(LedgerError::ProofInvalid(
            "consistency proof does not lead to the new root".into(),
        ));
    }
    Ok(())
}

/// An in-memory tree keeping every perfect subtree hash, level by level.
#[derive(Debug, Clone, Default)]
pub struct MemoryTree {
    levels: Vec<Vec<Hash>>,
}

impl MemoryTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a tree from entry bytes.
    pub fn from_entries<I, B>(entries: I) -> Self
    where
        I: IntoIterator<Item = B>,
        B: AsRef<[u8]>,
    {
        let mut t = Self::new();
        for e in entries {
            t.push_leaf(leaf_hash(e.as_ref()));
        }
        t
    }

    /// Appends a leaf hash and completes every perfect subtree it closes.
    pub fn push_leaf(&mut self, leaf: Hash) {
        let mut level = 0usize;
        let mut h = leaf;
        loop {
            if self.levels.len() <= level {
                self.levels.push(Vec::new());
            }
            self.levels[level].push(h);
            let len = self.levels[level].len();
            if len % 2 == 1 {
                break;
            }
            h = node_hash(&self.levels[level][len - 2], &self.levels[level][len - 1]);
            level += 1;
        }
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// Root of the first `size` leaves.
    pub fn root_at(&self, size: u64) -> Result<Hash, LedgerError> {
        if size > self.size() {
            return Err(LedgerError::OutOfRange {
                index: size,
                size: self.size(),
            });
        }
        root(self, size)
    }
}

impl SubtreeSource for MemoryTree {
    fn perfect(&self, level: u32, index: u64) -> Result<Hash, LedgerError> {
        self.levels
            .get(level as usize)
            .and_then(|l| usize::try_from(index).ok().and_then(|i| l.get(i)))
            .copied()
            .ok_or(LedgerError::Corrupt(format!(
                "missing subtree hash at level {level} index {index}"
            )))
    }
}

/// Reference MTH over leaf hashes, straight from the RFC's recursive definition (for tests).
pub fn reference_root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split_point(n as u64) as usize;
            node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_perfect_layer_reduces_to_the_reference_root() {
        assert_eq!(perfect_root(Vec::new()), None);
        for n in [1u64, 2, 4, 8, 16] {
            let (_, leaves) = tree(n);
            assert_eq!(
                perfect_root(leaves.clone()),
                Some(reference_root(&leaves)),
                "{n} leaves"
            );
        }
    }

    fn tree(n: u64) -> (MemoryTree, Vec<Hash>) {
        let entries: Vec<Vec<u8>> = (0..n).map(|i| format!("entry {i}").into_bytes()).collect();
        let leaves = entries.iter().map(|e| leaf_hash(e)).collect();
        (MemoryTree::from_entries(&entries), leaves)
    }

    #[test]
    fn roots_match_the_recursive_definition() {
        let (t, leaves) = tree(70);
        for n in 0..=70u64 {
            assert_eq!(
                t.root_at(n).unwrap(),
                reference_root(&leaves[..n as usize]),
                "size {n}"
            );
        }
    }

    #[test]
    fn all_proofs_up_to_33_verify() {
        let (t, leaves) = tree(33);
        for n in 1..=33u64 {
            let r = t.root_at(n).unwrap();
            for i in 0..n {
                let p = inclusion_proof(&t, i, n).unwrap();
                verify_inclusion(&leaves[i as usize], i, n, &p, &r).unwrap();
            }
            for m in 0..=n {
                let p = consistency_proof(&t, m, n).unwrap();
                verify_consistency(m, n, &t.root_at(m).unwrap(), &r, &p).unwrap();
            }
        }
    }

    fn flip(h: &mut Hash, bit: usize) {
        h[bit / 8 % 32] ^= 1 << (bit % 8);
    }

    proptest! {
        #[test]
        fn inclusion_verifies_and_any_bit_flip_fails(n in 1u64..300, i in 0u64..300, bit in 0usize..256, which in 0usize..64) {
            let i = i % n;
            let (t, leaves) = tree(n);
            let r = t.root_at(n).unwrap();
            let p = inclusion_proof(&t, i, n).unwrap();
            prop_assert!(verify_inclusion(&leaves[i as usize], i, n, &p, &r).is_ok());
            let mut leaf = leaves[i as usize];
            flip(&mut leaf, bit);
            prop_assert!(verify_inclusion(&leaf, i, n, &p, &r).is_err());
            let mut bad_root = r;
            flip(&mut bad_root, bit);
            prop_assert!(verify_inclusion(&leaves[i as usize], i, n, &p, &bad_root).is_err());
            if !p.is_empty() {
                let mut bad = p.clone();
                let j = which % bad.len();
                flip(&mut bad[j], bit);
                prop_assert!(verify_inclusion(&leaves[i as usize], i, n, &bad, &r).is_err());
            }
            // A changed entry byte changes the leaf hash and fails too.
            let mut entry = format!("entry {i}").into_bytes();
            let k = which % entry.len();
            entry[k] ^= 1 << (bit % 8);
            prop_assert!(verify_inclusion(&leaf_hash(&entry), i, n, &p, &r).is_err());
        }

        #[test]
        fn consistency_verifies_and_any_bit_flip_fails(n in 1u64..300, m in 1u64..300, bit in 0usize..256, which in 0usize..64) {
            let m = 1 + (m - 1) % n;
            let (t, _) = tree(n);
            let (r1, r2) = (t.root_at(m).unwrap(), t.root_at(n).unwrap());
            let p = consistency_proof(&t, m, n).unwrap();
            prop_assert!(verify_consistency(m, n, &r1, &r2, &p).is_ok());
            let (mut b1, mut b2) = (r1, r2);
            flip(&mut b1, bit);
            flip(&mut b2, bit);
            prop_assert!(verify_consistency(m, n, &b1, &r2, &p).is_err());
            prop_assert!(verify_consistency(m, n, &r1, &b2, &p).is_err());
            if !p.is_empty() {
                let mut bad = p.clone();
                let j = which % bad.len();
                flip(&mut bad[j], bit);
                prop_assert!(verify_consistency(m, n, &r1, &r2, &bad).is_err());
            }
        }
    }
}
