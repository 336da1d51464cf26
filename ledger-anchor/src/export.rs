//! Export of a log store to plain files that auditors check with [`crate::verify`] or their own
//! tools.
//!
//! Layout of `OUT/`: `checkpoint` (latest, with cosignatures), `checkpoints/<size>` (every
//! checkpoint published), `log.vkey` (`<name>+<hex key id>+<base64(0x01 || key)>`),
//! `witnesses.vkeys` (one cosignature/v1 key per line: every key in force at some exported size,
//! the genesis's and those governance entries added),
//! `entries/<index>` (raw bytes), `proofs/<index>` (C2SP tlog-proof@v1 of that entry against
//! `checkpoint`) and, only if equivocation was seen, `evidence/<n>.json` (`{reason, first, second}` with both signed notes).
//!
//! [`export_tiles`] writes the same log in the C2SP tlog-tiles layout instead, as static files
//! any web server can publish: `checkpoint`, `tile/<L>/<N>` and `tile/entries/<N>` with a
//! partial tile for every checkpointed size (see [`crate::tiles`]).

use std::path::Path;

use crate::error::LedgerError;
use crate::note::TlogProof;
use crate::store::Log;
use crate::tiles::{self, TileSource};

/// What [`export`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    /// Entries (and proofs) written: the latest checkpoint's size.
    pub entries: u64,
    /// Checkpoint files written.
    pub checkpoints: usize,
    /// Evidence files written.
    pub evidence: usize,
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), LedgerError> {
    std::fs::write(path, bytes).map_err(|e| LedgerError::io(format!("write {}", path.display()), e))
}

fn mkdir(path: &Path) -> Result<(), LedgerError> {
    std::fs::create_dir_all(path)
        .map_err(|e| LedgerError::io(format!("create {}", path.display()), e))
}

/// Writes the log's entries up to its latest checkpoint, all checkpoints, keys and proofs.
pub fn export(log: &Log, out: &Path) -> Result<ExportSummary, LedgerError> {
    let latest = log
        .latest_checkpoint()?
        .ok_or_else(|| LedgerError::Corrupt("the log has no checkpoint to export".into()))?;
    let size = latest.checkpoint.size;
    for d in ["checkpoints", "entries", "proofs"] {
        mkdir(&out.join(d))?;
    }
    let latest_text = latest.encode();
    write(&out.join("checkpoint"), latest_text.as_bytes())?;
    let all = log.checkpoints()?;
    for cp in &all {
        write(
            &out.join("checkpoints").join(cp.checkpoint.size.to_string()),
            cp.encode().as_bytes(),
        )?;
    }
    write(
        &out.join("log.vkey"),
        format!("{}\n", log.log_key()).as_bytes(),
    )?;
    // Every witness key in force at some size up to the export's: the genesis's, then those
    // governance entries among the exported ones added (first appearance order).
    let mut witnesses = String::new();
    let mut listed: Vec<&str> = Vec::new();
    let schedule = if size > 0 {
        log.witness_schedule()
    } else {
        Vec::new()
    };
    for (_, w) in schedule.iter().filter(|(from, _)| *from <= size) {
        for k in &w.keys {
            if !listed.contains(&k.as_str()) {
                listed.push(k);
                witnesses.push_str(k);
                witnesses.push('\n');
            }
        }
    }
    write(&out.join("witnesses.vkeys"), witnesses.as_bytes())?;
    const CHUNK: u64 = 4096;
    let mut start = 0;
    while start < size {
        let end = (start + CHUNK).min(size);
        for (i, e) in (start..end).zip(log.entries(start, end)?) {
            write(&out.join("entries").join(i.to_string()), &e)?;
            let proof = TlogProof {
                extra: None,
                index: i,
                proof: log.inclusion_proof(i, size)?,
                checkpoint: latest_text.as_bytes().to_vec(),
            };
            write(
                &out.join("proofs").join(i.to_string()),
                proof.encode().as_bytes(),
            )?;
        }
        start = end;
    }
    let evidence = log.evidence()?;
    if !evidence.is_empty() {
        mkdir(&out.join("evidence"))?;
        for (n, ev) in evidence.iter().enumerate() {
            let json = serde_json::to_vec_pretty(ev)
                .map_err(|e| LedgerError::Corrupt(format!("encode evidence: {e}")))?;
            write(&out.join("evidence").join(format!("{n}.json")), &json)?;
        }
    }
    Ok(ExportSummary {
        entries: size,
        checkpoints: all.len(),
        evidence: evidence.len(),
    })
}

/// What [`write_tiles`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TilesSummary {
    /// Tile and bundle files written.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
    /// The largest size covered.
    pub size: u64,
}

/// Writes the tiles of `src` as static files under `out` (`tile/...`): every full tile of the
/// largest of `sizes` and the partial tiles of each size, and `checkpoint` when given.
pub fn write_tiles<S: TileSource + ?Sized>(
    src: &S,
    sizes: &[u64],
    checkpoint: Option<&[u8]>,
    out: &Path,
) -> Result<TilesSummary, LedgerError> {
    let mut summary = TilesSummary {
        files: 0,
        bytes: 0,
        size: sizes.iter().copied().max().unwrap_or(0),
    };
    mkdir(out)?;
    for id in tiles::tiles_to_publish(sizes) {
        let bytes = tiles::read_tile(src, id)?;
        let path = out.join(id.path());
        if let Some(parent) = path.parent() {
            mkdir(parent)?;
        }
        write(&path, &bytes)?;
        summary.files += 1;
        summary.bytes += bytes.len() as u64;
    }
    if let Some(cp) = checkpoint {
        write(&out.join("checkpoint"), cp)?;
    }
    Ok(summary)
}

/// Writes a store as static tlog-tiles under `out`: tiles for every checkpointed size and the
/// latest checkpoint with the cosignatures gathered.
pub fn export_tiles(log: &Log, out: &Path) -> Result<TilesSummary, LedgerError> {
    let latest = log
        .latest_checkpoint()?
        .ok_or_else(|| LedgerError::Corrupt("the log has no checkpoint to export".into()))?;
    let sizes: Vec<u64> = log
        .checkpoints()?
        .iter()
        .map(|c| c.checkpoint.size)
        .collect();
    write_tiles(log, &sizes, Some(latest.encode().as_bytes()), out)
}
