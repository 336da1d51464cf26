//! A coalition of players as a fixed-size bit set ([`MAX_PLAYERS`] bits, copied by value).

use serde::{Deserialize, Serialize};

use super::ValuationError;

/// 64-bit words of a coalition.
const WORDS: usize = 16;

/// The largest number of players a game may have (one bit per player): a thousand sites per
/// coordinator fit.
pub const MAX_PLAYERS: usize = WORDS * 64;

/// A set of players: bit `i` is set when player `i` is in the coalition.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct Coalition([u64; WORDS]);

impl Coalition {
    /// The empty coalition.
    pub const EMPTY: Self = Self([0; WORDS]);

    /// The coalition whose members are the set bits of `bits` (players 0 to 63).
    pub const fn from_bits(bits: u64) -> Self {
        let mut w = [0; WORDS];
        w[0] = bits;
        Self(w)
    }

    /// The mask of players 0 to 63: bit `i` is set when player `i` is a member.
    pub const fn bits(self) -> u64 {
        self.0[0]
    }

    /// The grand coalition of `players` players; refuses more than [`MAX_PLAYERS`].
    pub fn full(players: usize) -> Result<Self, ValuationError> {
        if players > MAX_PLAYERS {
            return Err(ValuationError::TooManyPlayers {
                players,
                max: MAX_PLAYERS,
            });
        }
        let mut w = [0u64; WORDS];
        for (k, word) in w.iter_mut().enumerate() {
            let lo = k * 64;
            *word = match players.saturating_sub(lo) {
                0 => 0,
                n if n >= 64 => u64::MAX,
                n => (1u64 << n) - 1,
            };
        }
        Ok(Self(w))
    }

    /// Whether player `i` is a member (`false` for `i >= MAX_PLAYERS`).
    pub const fn contains(self, i: usize) -> bool {
        i < MAX_PLAYERS && self.0[i / 64] & (1u64 << (i % 64)) != 0
    }

    /// This coalition with player `i` added.
    ///
    /// # Panics
    /// If `i >= MAX_PLAYERS`: a coalition cannot hold such a player.
    pub const fn with(self, i: usize) -> Self {
        assert!(i < MAX_PLAYERS, "player index out of range");
        let mut w = self.0;
        w[i / 64] |= 1u64 << (i % 64);
        Self(w)
    }

    /// This coalition with player `i` removed (unchanged for `i >= MAX_PLAYERS`).
    pub const fn without(self, i: usize) -> Self {
        if i < MAX_PLAYERS {
            let mut w = self.0;
            w[i / 64] &= !(1u64 << (i % 64));
            Self(w)
        } else {
            self
        }
    }

    /// The number of members.
    pub fn len(self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether the coalition has no member.
    pub fn is_empty(self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }

    /// The members in ascending order.
    pub fn members(self) -> impl Iterator<Item = usize> {
        self.0.into_iter().enumerate().flat_map(|(k, word)| {
            let mut rest = word;
            std::iter::from_fn(move || {
                if rest == 0 {
                    None
                } else {
                    let i = rest.trailing_zeros() as usize;
                    rest &= rest - 1;
                    Some(k * 64 + i)
                }
            })
        })
    }

    /// The members of `self` not in `other`.
    pub fn minus(self, other: Self) -> Self {
        let mut w = self.0;
        for (a, b) in w.iter_mut().zip(other.0) {
            *a &= !b;
        }
        Self(w)
    }

    /// The members of either coalition.
    pub fn union(self, other: Self) -> Self {
        let mut w = self.0;
        for (a, b) in w.iter_mut().zip(other.0) {
            *a |= b;
        }
        Self(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_and_members() {
        assert_eq!(Coalition::full(0).unwrap(), Coalition::EMPTY);
        assert_eq!(Coalition::full(3).unwrap().bits(), 0b111);
        assert_eq!(Coalition::full(64).unwrap().len(), 64);
        assert_eq!(Coalition::full(65).unwrap().len(), 65);
        assert_eq!(Coalition::full(MAX_PLAYERS).unwrap().len(), MAX_PLAYERS);
        assert!(matches!(
            Coalition::full(MAX_PLAYERS + 1),
            Err(ValuationError::TooManyPlayers { players, max }) if players == MAX_PLAYERS + 1 && max == MAX_PLAYERS
        ));
        let c = Coalition::EMPTY.with(5).with(0).with(63).with(64).with(999);
        assert_eq!(c.members().collect::<Vec<_>>(), vec![0, 5, 63, 64, 999]);
        assert!(c.contains(63) && c.contains(64) && !c.contains(65) && !c.contains(1));
        assert!(!c.contains(MAX_PLAYERS));
        assert_eq!(c.without(5).len(), 4);
        assert_eq!(c.without(MAX_PLAYERS + 3), c);
        let d = Coalition::EMPTY.with(64).with(7);
        assert_eq!(
            c.minus(d).members().collect::<Vec<_>>(),
            vec![0, 5, 63, 999]
        );
        assert_eq!(c.union(d).len(), 6);
        assert!(c.minus(c).is_empty() && !c.is_empty());
        assert_eq!(Coalition::full(130).unwrap().members().last(), Some(129));
    }
}
