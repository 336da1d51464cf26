//! The hospitals example with receipts: every hospital checks each round's receipt against the
//! coordinator's log (tlog-tiles over HTTP, two witnesses' cosignatures), ends with one receipt
//! per round it answered, and writes a statement that verifies offline; a one-byte change of any
//! file of a statement fails verification and names that file.

use std::path::Path;

use clap::Parser;
use fedledger_examples::run::{Options, run_federation, totals};
use fedledger_ledger::receipts::{StatementOptions, verify_statement};

/// Positions to change in a file of `len` bytes: all of a short file, else the first and last
/// 64 and every seventh in between.
fn positions(len: usize) -> Vec<usize> {
    if len <= 400 {
        return (0..len).collect();
    }
    (0..64)
        .chain((64..len - 64).step_by(7))
        .chain(len - 64..len)
        .collect()
}

fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if e.path().is_dir() {
            for f in files(&e.path()) {
                out.push(format!("{name}/{f}"));
            }
        } else {
            out.push(name);
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hospital_keeps_a_receipt_per_round_and_its_statement_verifies_offline() {
    let out = tempfile::tempdir().unwrap();
    let opts = Options::parse_from([
        "hospitals",
        "--rounds",
        "3",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    let run = run_federation(&opts).await.unwrap();
    assert!(run.ledger.verify_ok, "{}", run.ledger.verify_text);
    assert_eq!((run.ledger.witnesses, run.ledger.quorum), (2, 2));
    assert_eq!(run.statements.len(), 5);
    for (report, st) in run.reports.iter().zip(&run.statements) {
        let answered = report.rounds_sent.len() + report.rounds_declined.len();
        assert_eq!(report.receipts.len(), answered, "{}", report.name);
        assert_eq!(st.rounds as usize, answered, "{}", report.name);
        assert!(st.verify_ok, "{}: {}", st.name, st.verify_text);
        assert_eq!(
            st.reward,
            totals(&run.outcomes, &st.name).reward,
            "{}",
            st.name
        );
    }

    // Any one-byte change of any file of a statement fails, naming the file.
    let st = &run.statements[0];
    let opts = StatementOptions {
        log_key: Some(fedledger_ledger::note::VerifierKey::parse(&run.identity.log_key).unwrap()),
        genesis_sha256: None,
    };
    assert!(verify_statement(&st.dir, &opts).ok());
    let mut tried = 0;
    for f in files(&st.dir) {
        let path = st.dir.join(&f);
        let original = std::fs::read(&path).unwrap();
        for i in positions(original.len()) {
            let mut b = original.clone();
            b[i] ^= 0x01;
            std::fs::write(&path, &b).unwrap();
            let report = verify_statement(&st.dir, &opts);
            assert!(!report.ok(), "{f}: byte {i} changed, still verifies");
            assert!(
                report.failed_files().contains(&f.as_str()),
                "{f}: byte {i} changed, reported against {:?}:\n{report}",
                report.failed_files()
            );
            tried += 1;
        }
        std::fs::write(&path, &original).unwrap();
    }
    assert!(verify_statement(&st.dir, &opts).ok());
    assert!(tried > 1000, "{tried}");
}
