//! Our tlog-tiles writer against tiles written by an outside implementation (tlog-scales
//! 0.0.3's `TilesWriter`, copied under `tests/data/tiles/`; see its README.md): the eight
//! entries of `cosigned_checkpoint/entries.jsonl` committed at sizes 5 and 8, and a
//! 70,000-entry log committed at 1000, 65536 and 70000 whose files are listed by SHA-256.

use std::path::{Path, PathBuf};

use fedledger_ledger::export::write_tiles;
use fedledger_ledger::merkle::{Hash, MemoryTree, SubtreeSource, sha256_bytes};
use fedledger_ledger::tiles::TileSource;
use fedledger_ledger::LedgerError;

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// Raw entries and their tree: what the tile writer reads.
struct Raw {
    tree: MemoryTree,
    entries: Vec<Vec<u8>>,
}

impl Raw {
    fn new(entries: Vec<Vec<u8>>) -> Self {
        Self {
            tree: MemoryTree::from_entries(&entries),
            entries,
        }
    }
}

impl SubtreeSource for Raw {
    fn perfect(&self, level: u32, index: u64) -> Result<Hash, LedgerError> {
        self.tree.perfect(level, index)
    }
}

impl TileSource for Raw {
    fn entries(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>, LedgerError> {
        Ok(self.entries[start as usize..end as usize].to_vec())
    }
}

/// Every file under `dir`, relative, sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(
                    p.strip_prefix(dir)
                        .unwrap()
                        .to_string_lossy()
                        .replace('\\', "/"),
                );
            }
        }
    }
    out.sort();
    out
}

#[test]
fn the_eight_entry_log_matches_the_outside_tiles_byte_for_byte() {
    let jsonl = std::fs::read(data().join("cosigned_checkpoint/entries.jsonl")).unwrap();
    let entries: Vec<Vec<u8>> = jsonl
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    assert_eq!(entries.len(), 8);
    let out = tempfile::tempdir().unwrap();
    let summary = write_tiles(&Raw::new(entries), &[5, 8], None, out.path()).unwrap();
    let reference = data().join("tiles/log-8");
    let expected: Vec<String> = files(&reference.join("tile"))
        .into_iter()
        .map(|f| format!("tile/{f}"))
        .collect();
    assert_eq!(files(out.path()), expected);
    assert_eq!(summary.files, expected.len());
    for f in &expected {
        assert_eq!(
            std::fs::read(out.path().join(f)).unwrap(),
            std::fs::read(reference.join(f)).unwrap(),
            "{f}"
        );
    }
}

#[test]
fn the_70000_entry_log_writes_every_listed_file_with_equal_bytes() {
    let entries: Vec<Vec<u8>> = (0..70_000)
        .map(|i| format!("fedledger tiles reference entry {i}\n").into_bytes())
        .collect();
    let raw = Raw::new(entries);
    let root = fedledger_ledger::merkle::root(&raw.tree, 70_000).unwrap();
    assert_eq!(
        fedledger_ledger::note::b64_encode(&root),
        "WghAxXssdMlUz+mFhLJbd3Y3I43YLPs3FtYEdWouxdU="
    );
    let out = tempfile::tempdir().unwrap();
    write_tiles(&raw, &[1000, 65536, 70000], None, out.path()).unwrap();
    let listing = std::fs::read_to_string(data().join("tiles/log-70000.sha256")).unwrap();
    let mut checked = 0;
    for line in listing.lines() {
        let (sha, path) = line.split_once(' ').unwrap();
        let path = path.trim_start_matches([' ', '*']);
        let bytes = std::fs::read(out.path().join(path))
            .unwrap_or_else(|e| panic!("{path} was not written: {e}"));
        assert_eq!(hex::encode(sha256_bytes(&bytes)), sha, "{path}");
        checked += 1;
    }
    assert_eq!(checked, 551);
    // What we write beyond the listing are partials of the earlier checkpoints only.
    let listed: std::collections::BTreeSet<String> = listing
        .lines()
        .map(|l| l.split_once(' ').unwrap().1.trim_start_matches([' ', '*']).to_owned())
        .collect();
    let extra: Vec<String> = files(out.path())
        .into_iter()
        .filter(|f| !listed.contains(f))
        .collect();
    assert_eq!(
        extra,
        ["tile/0/003.p/232", "tile/1/000.p/3", "tile/entries/003.p/232"]
    );
}
