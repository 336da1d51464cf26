//! A coalition of players as a 64-bit mask.

use serde::{Deserialize, Serialize};

use super::ValuationError;

/// The largest number of players a game may have (one bit of a `u64` per player).
pub const MAX_PLAYERS: usize = 64;

/// A set of players: bit `i` is set when player `i` is in the coalition.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct Coalition(u64);

impl Coalition {
    /// The empty coalition.
    pub const EMPTY: Self = Self(0);

    /// The coalition whose members are the set bits of `bits`.
    pub const fn from_bits(bits: u64) -> Self {
        Self(bits)
    }

    /// The mask: bit `i` is set when player `i` is a member.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// The grand coalition of `players` players; refuses more than [`MAX_PLAYERS`].
    pub fn full(players: usize) -> Result<Self, ValuationError> {
        match players {
            MAX_PLAYERS => Ok(Self(u64::MAX)),
            p if p < MAX_PLAYERS => Ok(Self((1u64 << p) - 1)),
            p => Err(ValuationError::TooManyPlayers {
                players: p,
                max: MAX_PLAYERS,
            }),
        }
    }

    /// Whether player `i` is a member (`false` for `i >= 64`).
    pub const fn contains(self, i: usize) -> bool {
        i < MAX_PLAYERS && self.0 & (1u64 << i) != 0
    }

    /// This coalition with player `i` added.
    ///
    /// # Panics
    /// If `i >= 64`: a coalition cannot hold such a player.
    pub const fn with(self, i: usize) -> Self {
        assert!(i < MAX_PLAYERS, "player index out of range");
        Self(self.0 | (1u64 << i))
    }

    /// This coalition with player `i` removed (unchanged for `i >= 64`).
    pub const fn without(self, i: usize) -> Self {
        if i < MAX_PLAYERS {
            Self(self.0 & !(1u64 << i))
        } else {
            self
        }
    }

    /// The number of members.
    pub const fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// Whether the coalition has no member.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The members in ascending order.
    pub fn members(self) -> impl Iterator<Item = usize> {
        let mut rest = self.0;
        std::iter::from_fn(move || {
            if rest == 0 {
                None
            } else {
                let i = rest.trailing_zeros() as usize;
                rest &= rest - 1;
                Some(i)
            }
        })
    }

    /// The members of `self` not in `other`.
    pub const fn minus(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }

    /// The members of either coalition.
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
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
        assert!(matches!(
            Coalition::full(65),
            Err(ValuationError::TooManyPlayers {
                players: 65,
                max: 64
            })
        ));
        let c = Coalition::EMPTY.with(5).with(0).with(63);
        assert_eq!(c.members().collect::<Vec<_>>(), vec![0, 5, 63]);
        assert!(c.contains(63) && !c.contains(64) && !c.contains(1));
        assert_eq!(c.without(5).len(), 2);
        assert_eq!(c.without(70), c);
    }
}
