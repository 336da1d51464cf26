//! C2SP tlog-tiles: the log as static resources (a tree head, hash tiles and entry bundles),
//! without I/O. The HTTP server and client are [`crate::http`]; the static files are written by
//! [`crate::export::write_tiles`].
//!
//! - A *hash tile* at level `L`, index `N`, holds the Merkle tree hashes of up to 256
//!   consecutive perfect subtrees of height `8 L`: those of leaves
//!   `[(256 N + i) 256^L, (256 N + i + 1) 256^L)` for `i` in `0..width`. Tiles are served at
//!   `tile/<L>/<N>[.p/<W>]`, full tiles 256 hashes (8,192 bytes) wide, partial ones 1 to 255.
//! - An *entry bundle* `tile/entries/<N>[.p/<W>]` holds entries `256 N ..` each prefixed by its
//!   big-endian `u16` length.
//! - `<N>` is written in zero-padded groups of three digits, all but the last prefixed with
//!   `x` (1234067 is `x001/x234/067`).
//!
//! A log keeps nothing but perfect subtree hashes ([`SubtreeSource`]), from which any tile is
//! read in 256 lookups; the reading side ([`TileCache`]) does the converse and answers any
//! inclusion or consistency proof from the tiles a tree size implies, so a client computes the
//! proofs itself (and checks them against a signed checkpoint, trusting no server).

use std::collections::{BTreeSet, HashMap};

use crate::error::LedgerError;
use crate::merkle::{self, Hash, SubtreeSource};

/// Hashes in a full tile (and entries in a full bundle).
pub const TILE_WIDTH: u64 = 256;
/// Tree levels a tile spans.
pub const TILE_HEIGHT: u32 = 8;
/// Highest tile level the specification allows.
pub const MAX_LEVEL: u8 = 63;
/// `Content-Type` of `checkpoint`.
pub const CHECKPOINT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";
/// `Content-Type` of tiles and entry bundles.
pub const TILE_CONTENT_TYPE: &str = "application/octet-stream";
/// `Cache-Control` of the mutable `checkpoint` (no caching beyond a few seconds).
pub const CHECKPOINT_CACHE_CONTROL: &str = "no-cache";
/// `Cache-Control` of tiles and bundles, full or partial: their bytes never change.
pub const TILE_CACHE_CONTROL: &str = "public, max-age=31536000, immutable";
/// Largest entry an entry bundle can hold (its length prefix is 16 bits).
pub const MAX_BUNDLED_ENTRY: usize = u16::MAX as usize;

/// Which resource: a hash tile of a level, or an entry bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TileKind {
    /// A hash tile at this level (0 holds leaf hashes).
    Hashes(u8),
    /// An entry bundle.
    Entries,
}

/// One tile or entry bundle: kind, index within its level, width (256 = full).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TileId {
    /// Hash tile level or entry bundle.
    pub kind: TileKind,
    /// Index within the level.
    pub index: u64,
    /// Hashes (or entries) it holds: 256 for a full tile, 1 to 255 for a partial one.
    pub width: u16,
}

/// `256^level`, when it fits.
fn span(level: u8) -> Option<u64> {
    1u64.checked_shl(TILE_HEIGHT * u32::from(level))
}

/// `N` as path elements: `x001/x234/067`.
fn encode_index(n: u64) -> String {
    let mut groups = Vec::new();
    let mut rest = n;
    loop {
        groups.push(rest % 1000);
        rest /= 1000;
        if rest == 0 {
            break;
        }
    }
    let last = groups.len() - 1;
    groups
        .iter()
        .rev()
        .enumerate()
        .map(|(i, g)| {
            if i < last {
                format!("x{g:03}")
            } else {
                format!("{g:03}")
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// A canonical decimal without leading zeros.
fn canonical_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || (s.len() > 1 && s.starts_with('0')) || !s.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    s.parse().ok()
}

impl TileId {
    /// A full hash tile.
    pub fn hashes(level: u8, index: u64) -> Self {
        Self {
            kind: TileKind::Hashes(level),
            index,
            width: TILE_WIDTH as u16,
        }
    }

    /// A full entry bundle.
    pub fn entries(index: u64) -> Self {
        Self {
            kind: TileKind::Entries,
            index,
            width: TILE_WIDTH as u16,
        }
    }

    /// The same tile with `width` hashes (`256` for full).
    pub fn with_width(self, width: u16) -> Self {
        Self { width, ..self }
    }

    /// True for a full tile.
    pub fn is_full(&self) -> bool {
        u64::from(self.width) == TILE_WIDTH
    }

    /// The resource path under the log's prefix, e.g. `tile/0/x001/234.p/17`.
    pub fn path(&self) -> String {
        let level = match self.kind {
            TileKind::Hashes(l) => l.to_string(),
            TileKind::Entries => "entries".to_owned(),
        };
        let mut p = format!("tile/{level}/{}", encode_index(self.index));
        if !self.is_full() {
            p.push_str(&format!(".p/{}", self.width));
        }
        p
    }

    /// Parses a resource path (`tile/...`, without the prefix), accepting only the canonical
    /// form: no leading zero groups, widths 1 to 255 only for partial tiles, levels 0 to 63.
    pub fn parse(path: &str) -> Option<Self> {
        let rest = path.strip_prefix("tile/")?;
        let (level, rest) = rest.split_once('/')?;
        let kind = if level == "entries" {
            TileKind::Entries
        } else {
            let l = canonical_decimal(level)?;
            if l > u64::from(MAX_LEVEL) {
                return None;
            }
            TileKind::Hashes(l as u8)
        };
        let (index_part, width) = match rest.split_once(".p/") {
            Some((i, w)) => {
                let w = canonical_decimal(w)?;
                if w == 0 || w >= TILE_WIDTH {
                    return None;
                }
                (i, w as u16)
            }
            None => (rest, TILE_WIDTH as u16),
        };
        let groups: Vec<&str> = index_part.split('/').collect();
        if groups.len() > 7 {
            return None;
        }
        let last = groups.len() - 1;
        let mut index: u64 = 0;
        for (i, g) in groups.iter().enumerate() {
            let digits = if i < last { g.strip_prefix('x')? } else { g };
            if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let v: u64 = digits.parse().ok()?;
            if i == 0 && v == 0 && last > 0 {
                return None;
            }
            index = index.checked_mul(1000)?.checked_add(v)?;
        }
        Some(Self { kind, index, width })
    }

    /// The index of the first leaf the tile covers and one past the last, when they fit.
    pub fn leaf_range(&self) -> Option<(u64, u64)> {
        let per = match self.kind {
            TileKind::Hashes(l) => span(l)?,
            TileKind::Entries => 1,
        };
        let first = self.index.checked_mul(TILE_WIDTH)?;
        let start = first.checked_mul(per)?;
        let end = first.checked_add(u64::from(self.width))?.checked_mul(per)?;
        Some((start, end))
    }

    /// True when a tree of `size` leaves determines this tile (it lies wholly inside it).
    pub fn within(&self, size: u64) -> bool {
        self.width >= 1
            && u64::from(self.width) <= TILE_WIDTH
            && self.leaf_range().is_some_and(|(_, end)| end <= size)
    }
}

/// The tiles a tree of `size` leaves implies: every full hash tile and entry bundle, and the
/// partial ones at the right edge.
pub fn tiles_for_size(size: u64) -> Vec<TileId> {
    let mut out = full_tiles(0, size);
    out.extend(partial_tiles(size));
    out
}

/// The partial tiles (hash tiles at every level and the entry bundle) of a tree of `size`.
pub fn partial_tiles(size: u64) -> Vec<TileId> {
    let mut out = Vec::new();
    for level in 0..=MAX_LEVEL {
        let Some(per) = span(level) else { break };
        let hashes = size / per;
        if hashes == 0 {
            break;
        }
        let w = hashes % TILE_WIDTH;
        if w > 0 {
            let t = TileId::hashes(level, hashes / TILE_WIDTH).with_width(w as u16);
            out.push(t);
            if level == 0 {
                out.push(TileId::entries(hashes / TILE_WIDTH).with_width(w as u16));
            }
        }
    }
    out
}

/// The full tiles (hash tiles and entry bundles) that a tree of `new` leaves has and one of
/// `old` leaves does not.
pub fn full_tiles(old: u64, new: u64) -> Vec<TileId> {
    let mut out = Vec::new();
    for level in 0..=MAX_LEVEL {
        let Some(per) = span(level).and_then(|s| s.checked_mul(TILE_WIDTH)) else {
            break;
        };
        let (from, to) = (old / per, new / per);
        if to == 0 {
            break;
        }
        for n in from..to {
            out.push(TileId::hashes(level, n));
            if level == 0 {
                out.push(TileId::entries(n));
            }
        }
    }
    out
}

/// The tiles to publish for a log checkpointed at `sizes`: every full tile of the largest, and
/// the partial tiles of each size (a partial tile may stay next to the full one that replaced
/// it; the specification allows either).
pub fn tiles_to_publish(sizes: &[u64]) -> Vec<TileId> {
    let mut set: BTreeSet<TileId> = BTreeSet::new();
    let max = sizes.iter().copied().max().unwrap_or(0);
    set.extend(full_tiles(0, max));
    for s in sizes {
        set.extend(partial_tiles(*s));
    }
    set.into_iter().collect()
}

/// A log seen as tiles: its perfect subtree hashes and its entries.
pub trait TileSource: SubtreeSource {
    /// Entries `[start, end)`, as stored.
    fn entries(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>, LedgerError>;
}

/// The bytes of a hash tile (`width` hashes of 32 bytes) or an entry bundle.
pub fn read_tile<S: TileSource + ?Sized>(src: &S, id: TileId) -> Result<Vec<u8>, LedgerError> {
    let width = u64::from(id.width);
    let first = id
        .index
        .checked_mul(TILE_WIDTH)
        .ok_or(LedgerError::OutOfRange {
            index: id.index,
            size: 0,
        })?;
    match id.kind {
        TileKind::Hashes(level) => {
            let mut out = Vec::with_capacity(id.width as usize * 32);
            for i in 0..width {
                out.extend_from_slice(&src.perfect(TILE_HEIGHT * u32::from(level), first + i)?);
            }
            Ok(out)
        }
        TileKind::Entries => entry_bundle(&src.entries(first, first + width)?),
    }
}

/// An entry bundle: each entry prefixed by its big-endian `u16` length.
pub fn entry_bundle(entries: &[Vec<u8>]) -> Result<Vec<u8>, LedgerError> {
    let mut out = Vec::with_capacity(entries.iter().map(|e| e.len() + 2).sum());
    for (i, e) in entries.iter().enumerate() {
        let len = u16::try_from(e.len()).map_err(|_| {
            LedgerError::malformed(
                "entry bundle",
                format!(
                    "entry {i} of the bundle is {} bytes, over {MAX_BUNDLED_ENTRY}",
                    e.len()
                ),
            )
        })?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(e);
    }
    Ok(out)
}

/// The entries of a bundle that must hold exactly `count` of them.
pub fn parse_bundle(bytes: &[u8], count: usize) -> Result<Vec<Vec<u8>>, LedgerError> {
    let bad = |r: String| LedgerError::malformed("entry bundle", r);
    let mut out = Vec::with_capacity(count.min(TILE_WIDTH as usize));
    let mut rest = bytes;
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<2>()
            .ok_or_else(|| bad("truncated length prefix".into()))?;
        let len = usize::from(u16::from_be_bytes(*len));
        if tail.len() < len {
            return Err(bad(format!(
                "entry {} claims {len} bytes, {} remain",
                out.len(),
                tail.len()
            )));
        }
        out.push(tail[..len].to_vec());
        rest = &tail[len..];
        if out.len() > count {
            break;
        }
    }
    if out.len() != count {
        return Err(bad(format!(
            "holds {} entries, {count} expected",
            out.len()
        )));
    }
    Ok(out)
}

/// The width of the tile at `(kind, index)` in a tree of `size` leaves, when the tree has it:
/// 256 when it is full, its partial width at the right edge.
pub fn width_at(kind: TileKind, index: u64, size: u64) -> Option<u16> {
    let per = match kind {
        TileKind::Hashes(l) => span(l)?,
        TileKind::Entries => 1,
    };
    let hashes = size / per;
    let first = index.checked_mul(TILE_WIDTH)?;
    if hashes <= first {
        return None;
    }
    Some((hashes - first).min(TILE_WIDTH) as u16)
}

/// Records which perfect subtrees a computation asks for, answering with a placeholder.
struct Recorder(std::cell::RefCell<BTreeSet<(u32, u64)>>);

impl SubtreeSource for Recorder {
    fn perfect(&self, level: u32, index: u64) -> Result<Hash, LedgerError> {
        self.0.borrow_mut().insert((level, index));
        Ok([0; 32])
    }
}

/// The tile holding the hashes that perfect subtree `(level, index)` is computed from.
fn tile_of(level: u32, index: u64) -> (u8, u64, u64, u64) {
    let l = level / TILE_HEIGHT;
    let r = level % TILE_HEIGHT;
    let first = index << r;
    // (tile level, tile index, first position inside the tile, hashes to fold)
    (l as u8, first / TILE_WIDTH, first % TILE_WIDTH, 1u64 << r)
}

/// Hash tiles and entry bundles fetched for one tree size, answering proofs of that tree.
#[derive(Debug, Clone)]
pub struct TileCache {
    size: u64,
    hashes: HashMap<(u8, u64), Vec<Hash>>,
    bundles: HashMap<u64, Vec<Vec<u8>>>,
}

impl TileCache {
    /// An empty cache for the tree of `size` leaves.
    pub fn new(size: u64) -> Self {
        Self {
            size,
            hashes: HashMap::new(),
            bundles: HashMap::new(),
        }
    }

    /// The tree size this cache answers for.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The tiles needed to prove the inclusion of each of `indices` and the consistency from
    /// `old` (when given) to this tree, and the bundles holding the entries `indices`.
    pub fn needed(
        &self,
        indices: &[u64],
        old: Option<u64>,
    ) -> Result<BTreeSet<TileId>, LedgerError> {
        let rec = Recorder(Default::default());
        for i in indices {
            merkle::inclusion_proof(&rec, *i, self.size)?;
        }
        if let Some(m) = old {
            merkle::consistency_proof(&rec, m, self.size)?;
        }
        let mut out = BTreeSet::new();
        for (level, index) in rec.0.into_inner() {
            let (l, n, _, _) = tile_of(level, index);
            if self.hashes.contains_key(&(l, n)) {
                continue;
            }
            let kind = TileKind::Hashes(l);
            let w = width_at(kind, n, self.size).ok_or(LedgerError::OutOfRange {
                index,
                size: self.size,
            })?;
            out.insert(TileId {
                kind,
                index: n,
                width: w,
            });
        }
        for i in indices {
            let n = i / TILE_WIDTH;
            if self.bundles.contains_key(&n) {
                continue;
            }
            let w = width_at(TileKind::Entries, n, self.size).ok_or(LedgerError::OutOfRange {
                index: *i,
                size: self.size,
            })?;
            out.insert(TileId {
                kind: TileKind::Entries,
                index: n,
                width: w,
            });
        }
        Ok(out)
    }

    /// Adds a fetched tile or bundle, checking that its length fits its id and this tree.
    pub fn insert(&mut self, id: TileId, bytes: &[u8]) -> Result<(), LedgerError> {
        let expect = width_at(id.kind, id.index, self.size);
        if expect != Some(id.width) {
            return Err(LedgerError::malformed(
                "tile",
                format!(
                    "{} is not a tile of the tree of size {}",
                    id.path(),
                    self.size
                ),
            ));
        }
        match id.kind {
            TileKind::Hashes(l) => {
                if bytes.len() != usize::from(id.width) * 32 {
                    return Err(LedgerError::malformed(
                        "tile",
                        format!(
                            "{} is {} bytes, {} expected",
                            id.path(),
                            bytes.len(),
                            usize::from(id.width) * 32
                        ),
                    ));
                }
                let hashes = bytes
                    .chunks_exact(32)
                    .map(|c| {
                        let mut h = [0u8; 32];
                        h.copy_from_slice(c);
                        h
                    })
                    .collect();
                self.hashes.insert((l, id.index), hashes);
            }
            TileKind::Entries => {
                let entries = parse_bundle(bytes, usize::from(id.width))?;
                self.bundles.insert(id.index, entries);
            }
        }
        Ok(())
    }

    /// Entry `index` from a fetched bundle. Not authenticated by itself: prove its inclusion
    /// against a signed root (its leaf hash must be the level-0 tile's).
    pub fn entry(&self, index: u64) -> Result<&[u8], LedgerError> {
        self.bundles
            .get(&(index / TILE_WIDTH))
            .and_then(|b| b.get((index % TILE_WIDTH) as usize))
            .map(Vec::as_slice)
            .ok_or_else(|| LedgerError::Corrupt(format!("entry {index} was not fetched")))
    }

    /// The inclusion proof of `index` in this tree, from the tiles.
    pub fn inclusion_proof(&self, index: u64) -> Result<Vec<Hash>, LedgerError> {
        merkle::inclusion_proof(self, index, self.size)
    }

    /// The consistency proof from `old` leaves to this tree, from the tiles.
    pub fn consistency_proof(&self, old: u64) -> Result<Vec<Hash>, LedgerError> {
        merkle::consistency_proof(self, old, self.size)
    }
}

impl SubtreeSource for TileCache {
    fn perfect(&self, level: u32, index: u64) -> Result<Hash, LedgerError> {
        let (l, n, first, count) = tile_of(level, index);
        let tile = self.hashes.get(&(l, n)).ok_or_else(|| {
            LedgerError::Corrupt(format!(
                "tile {} was not fetched",
                TileId::hashes(l, n).path()
            ))
        })?;
        let (a, b) = (first as usize, (first + count) as usize);
        let slice = tile.get(a..b).ok_or_else(|| {
            LedgerError::Corrupt(format!(
                "subtree at level {level} index {index} lies beyond the tile's width"
            ))
        })?;
        merkle::perfect_root(slice.to_vec()).ok_or_else(|| {
            LedgerError::Corrupt(format!(
                "subtree at level {level} index {index} has no hashes in its tile"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::MemoryTree;
    use proptest::prelude::*;

    #[test]
    fn paths_follow_the_specification() {
        assert_eq!(TileId::hashes(0, 0).path(), "tile/0/000");
        assert_eq!(TileId::hashes(1, 1234067).path(), "tile/1/x001/x234/067");
        assert_eq!(
            TileId::hashes(0, 273).with_width(112).path(),
            "tile/0/273.p/112"
        );
        assert_eq!(
            TileId::entries(1000).with_width(5).path(),
            "tile/entries/x001/000.p/5"
        );
        for bad in [
            "tile/0/0",
            "tile/00/000",
            "tile/64/000",
            "tile/0/x000/001",
            "tile/0/001/x002",
            "tile/0/000.p/0",
            "tile/0/000.p/256",
            "tile/0/000.p/05",
            "tile/0/000.p/",
            "tile/entries/1234",
            "tile/0/",
            "tile/x/000",
            "checkpoint",
        ] {
            assert_eq!(TileId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_tree_of_70000_has_the_tiles_the_specification_lists() {
        let t = tiles_for_size(70_000);
        let hashes = |l: u8| {
            t.iter()
                .filter(|x| x.kind == TileKind::Hashes(l))
                .copied()
                .collect::<Vec<_>>()
        };
        assert_eq!(hashes(0).len(), 274);
        assert_eq!(hashes(0)[273], TileId::hashes(0, 273).with_width(112));
        assert_eq!(
            hashes(1),
            vec![TileId::hashes(1, 0), TileId::hashes(1, 1).with_width(17)]
        );
        assert_eq!(hashes(2), vec![TileId::hashes(2, 0).with_width(1)]);
        assert!(hashes(3).is_empty());
        assert_eq!(
            tiles_for_size(256),
            vec![
                TileId::hashes(0, 0),
                TileId::entries(0),
                TileId::hashes(1, 0).with_width(1)
            ]
        );
    }

    struct Mem(MemoryTree, Vec<Vec<u8>>);
    impl SubtreeSource for Mem {
        fn perfect(&self, level: u32, index: u64) -> Result<Hash, LedgerError> {
            self.0.perfect(level, index)
        }
    }
    impl TileSource for Mem {
        fn entries(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>, LedgerError> {
            Ok(self.1[start as usize..end as usize].to_vec())
        }
    }

    proptest! {
        #[test]
        fn any_index_round_trips(n in any::<u64>(), level in 0u8..64, width in 1u16..=256) {
            let id = TileId { kind: TileKind::Hashes(level), index: n, width };
            prop_assert_eq!(TileId::parse(&id.path()), Some(id));
        }

        #[test]
        fn proofs_from_tiles_equal_the_trees(n in 1u64..1400, i in 0u64..1400, m in 0u64..1400) {
            let (i, m) = (i % n, m % (n + 1));
            let entries: Vec<Vec<u8>> = (0..n).map(|k| format!("e{k}").into_bytes()).collect();
            let src = Mem(MemoryTree::from_entries(&entries), entries.clone());
            let mut cache = TileCache::new(n);
            let need = cache.needed(&[i], Some(m)).unwrap();
            for id in need {
                prop_assert!(id.within(n));
                let bytes = read_tile(&src, id).unwrap();
                cache.insert(id, &bytes).unwrap();
            }
            prop_assert_eq!(cache.inclusion_proof(i).unwrap(), merkle::inclusion_proof(&src.0, i, n).unwrap());
            prop_assert_eq!(cache.consistency_proof(m).unwrap(), merkle::consistency_proof(&src.0, m, n).unwrap());
            prop_assert_eq!(cache.entry(i).unwrap(), entries[i as usize].as_slice());
            prop_assert!(cache.needed(&[i], Some(m)).unwrap().is_empty());
        }
    }
}
