//! Export of a log store to plain files that auditors check with [`crate::verify`] or their own
//! tools.
//!
//! Layout of `OUT/`: `checkpoint` (latest, with cosignatures), `checkpoints/<size>` (every
//! checkpoint published), `log.vkey` (`<name>+<hex key id>+<base64(0x01 || key)>`),
//! `witnesses.vkeys` (one cosignature/v1 key per line, from the genesis record),
//! `entries/<index>` (raw bytes), `proofs/<index>` (C2SP tlog-proof@v1 of that entry against
//! `checkpoint`) and, only if equivocation was seen, `evidence/<n>.json` (`{reason, first, second}` with both signed notes).

use std::path::Path;

use crate::error::LedgerError;
use crate::note::TlogProof;
use crate::records;
use crate::store::Log;

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
    let mut witnesses = String::new();
    if size > 0
        && let Some(w) =
            records::genesis_witnesses(&records::validate_entry(0, log.origin(), &log.entry(0)?)?)
    {
        for k in &w.keys {
            witnesses.push_str(k);
            witnesses.push('\n');
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
