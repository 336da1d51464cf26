//! An export verifies with an outside implementation of RFC 9162 and the C2SP formats: the
//! Python package tlog-scales (`tests/outside/verify_export.py`). Runs when the environment
//! variable `FEDLEDGER_TLOG_SCALES_PYTHON` names a Python interpreter that has tlog-scales
//! (`.ci/run` makes a venv with it and sets the variable), so that `cargo test` on a machine
//! without Python packages still passes.

mod common;

use std::process::Command;

use common::Federation;

fn outside(python: &str, dir: &std::path::Path) -> std::process::Output {
    Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/outside/verify_export.py"
        ))
        .arg(dir)
        .output()
        .expect("run the outside verifier")
}

#[test]
fn tlog_scales_verifies_our_export() {
    let Ok(python) = std::env::var("FEDLEDGER_TLOG_SCALES_PYTHON") else {
        eprintln!(
            "FEDLEDGER_TLOG_SCALES_PYTHON is not set: the outside verification is left to .ci/run"
        );
        return;
    };
    let (store, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let fed = Federation::new(3, 2);
    // Enough rounds for more than one hash tile (256 entries) and checkpoints inside tiles.
    let log = fed.build_log(store.path(), 70);
    fedledger_ledger::export::export(&log, out.path()).unwrap();
    let run = outside(&python, out.path());
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    eprintln!("{text}");
    for line in ["ok signatures", "ok roots", "ok consistency", "ok proofs"] {
        assert!(text.contains(line), "{text}");
    }
    // And it is a real check: one changed entry byte fails it.
    let path = out.path().join("entries/100");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let run = outside(&python, out.path());
    assert!(
        !run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stdout)
    );
}
