//! The `fedledger-ledger` command line end to end: its `run` on a real store, and its help
//! text, which must not change unnoticed (auditors script against it).

#[path = "../../tests/common/mod.rs"]
mod common;

use clap::Parser as _;
use common::Federation;
use fedledger_ledger_cli::{Cli, run};

#[test]
fn the_command_line_exports_and_verifies() {
    let (store, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let fed = Federation::new(2, 1);
    drop(fed.build_log(store.path(), 2));
    let dest = out.path().join("ledger");
    let (s, d) = (store.path().to_str().unwrap(), dest.to_str().unwrap());
    run(
        Cli::try_parse_from(["fedledger-ledger", "status", "--store", s]).unwrap(),
        None,
    )
    .unwrap();
    run(
        Cli::try_parse_from(["fedledger-ledger", "export", "--store", s, "--out", d]).unwrap(),
        None,
    )
    .unwrap();
    run(
        Cli::try_parse_from(["fedledger-ledger", "verify", d]).unwrap(),
        None,
    )
    .unwrap();
    assert!(
        run(
            Cli::try_parse_from(["fedledger-ledger", "verify", d, "--quorum", "2"]).unwrap(),
            None
        )
        .is_err()
    );
    // The same store as static tlog-tiles: the tiles the latest size implies, and the
    // checkpoint.
    let tiles = out.path().join("tiles");
    let t = tiles.to_str().unwrap();
    run(
        Cli::try_parse_from(["fedledger-ledger", "export", "--store", s, "--tiles", t]).unwrap(),
        None,
    )
    .unwrap();
    let checkpoint = std::fs::read_to_string(tiles.join("checkpoint")).unwrap();
    let size: u64 = checkpoint.lines().nth(1).unwrap().parse().unwrap();
    assert!(size > 3 && size < 256, "{size}");
    assert!(tiles.join(format!("tile/0/000.p/{size}")).exists());
    assert!(tiles.join(format!("tile/entries/000.p/{size}")).exists());
    assert!(
        tiles.join("tile/0/000.p/3").exists(),
        "the genesis checkpoint's partial"
    );
    assert!(Cli::try_parse_from(["fedledger-ledger", "export", "--store", s]).is_err());
}

#[test]
fn check_proof_accepts_the_outside_receipt_under_its_two_of_two_policy() {
    let data = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/cosigned_checkpoint"
    );
    let dir = tempfile::tempdir().unwrap();
    let entry = dir.path().join("entry6");
    let lines = std::fs::read(format!("{data}/entries.jsonl")).unwrap();
    std::fs::write(&entry, lines.split(|b| *b == b'\n').nth(6).unwrap()).unwrap();
    let args = |quorum: &str| {
        Cli::try_parse_from([
            "fedledger-ledger",
            "receipts",
            "check-proof",
            "--proof",
            &format!("{data}/round7.tlog-proof"),
            "--entry",
            entry.to_str().unwrap(),
            "--trust",
            &format!("{data}/trust.json"),
            "--quorum",
            quorum,
        ])
        .unwrap()
    };
    run(args("2"), None).unwrap();
    assert!(run(args("3"), None).is_err(), "more than the two witnesses");
    std::fs::write(&entry, b"another entry").unwrap();
    assert!(run(args("2"), None).is_err());
}

#[test]
fn help_text_is_unchanged() {
    let want = include_str!("data/help.txt");
    let mut got = String::new();
    for args in [
        "--help",
        "keygen --help",
        "status --help",
        "export --help",
        "verify --help",
        "receipts --help",
        "receipts verify --help",
        "receipts check-proof --help",
        "monitor --help",
        "node --help",
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_fedledger-ledger"))
            .args(args.split(' '))
            .output()
            .expect("run fedledger-ledger");
        assert!(out.status.success(), "fedledger-ledger {args}");
        got.push_str(&format!("$ fedledger-ledger {args}\n"));
        got.push_str(&String::from_utf8(out.stdout).unwrap());
    }
    assert_eq!(got, want, "tests/data/help.txt holds the expected help");
}

/// With the privacy crate's accountant plugged in (as the binary does), a hospital's recorded
/// epsilon below what its recorded releases imply is caught: the sample records 0.1 per release
/// of 100 steps at sigma 1.1 and q 0.01, far below the real RDP figure.
#[test]
fn the_real_accountant_catches_an_under_reported_epsilon() {
    let (store, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let fed = Federation::new(2, 1);
    let log = fed.build_log(store.path(), 2);
    fedledger_ledger::export::export(&log, out.path()).unwrap();
    let report = fedledger_ledger::verify::verify_dir(
        out.path(),
        fedledger_ledger::verify::VerifyOptions {
            quorum: None,
            accountant: Some(&fedledger_ledger_cli::PrivacyAccountant),
        },
    );
    assert!(
        report
            .failures
            .iter()
            .any(|f| f.file.starts_with("entries/") && f.what.contains("is below")),
        "{report}"
    );
}
