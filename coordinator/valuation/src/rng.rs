//! The seeded random stream of the estimators and the few draws they make from it.

use chacha20::ChaCha20Rng;
use rand::{Rng, SeedableRng};

/// Domain tag filling the key bytes after the seed, so valuation streams differ from any other
/// ChaCha20 use of the same seed.
const KEY_TAG: &[u8; 24] = b"fedledger/valuation/v1\0\0";

/// The ChaCha20 generator of a valuation with this seed: key = the seed's 8 little-endian bytes
/// followed by the 24-byte tag `"fedledger/valuation/v1\0\0"`, nonce 0. Defined here rather than
/// through `seed_from_u64` so that an auditor can rebuild the stream from the record alone.
pub fn rng_for_seed(seed: u64) -> ChaCha20Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..].copy_from_slice(KEY_TAG);
    ChaCha20Rng::from_seed(key)
}

/// A uniform integer in `0..bound` by rejection (no modulo bias). `bound` must be positive.
pub(crate) fn below(rng: &mut ChaCha20Rng, bound: u64) -> u64 {
    debug_assert!(bound > 0);
    let zone = u64::MAX - (u64::MAX % bound + 1) % bound;
    loop {
        let x = rng.next_u64();
        if x <= zone {
            return x % bound;
        }
    }
}

/// Fisher-Yates shuffle of `items` (from the last position down).
pub(crate) fn shuffle<T>(rng: &mut ChaCha20Rng, items: &mut [T]) {
    for i in (1..items.len()).rev() {
        let j = below(rng, i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_stays_in_range_and_is_reproducible() {
        let mut a = rng_for_seed(7);
        let mut b = rng_for_seed(7);
        for bound in [1u64, 2, 3, 7, 1 << 40, u64::MAX] {
            for _ in 0..50 {
                let x = below(&mut a, bound);
                assert!(x < bound);
                assert_eq!(x, below(&mut b, bound));
            }
        }
        let mut c = rng_for_seed(8);
        assert_ne!(rng_for_seed(7).next_u64(), c.next_u64());
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut rng = rng_for_seed(1);
        let mut v: Vec<usize> = (0..20).collect();
        shuffle(&mut rng, &mut v);
        let mut sorted = v.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..20).collect::<Vec<_>>());
        assert_ne!(v, sorted);
    }
}
