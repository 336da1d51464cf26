//! A receipt made by outside implementations (aics-tlog, tlog-scales; `tests/data/
//! cosigned_checkpoint/`): `round7.tlog-proof` proves entry 6 of `entries.jsonl` under a
//! checkpoint of size 8 signed by the log and cosigned by two witnesses. The receipt verifier
//! accepts it under the 2-of-2 policy of its `trust.json`, and rejects it after a one-byte
//! change of the entry, of the proof lines, of the checkpoint body or of either witness's
//! signature line.

use std::path::{Path, PathBuf};

use fedledger_ledger::receipts::{TrustFile, TrustPolicy, verify_receipt};

fn data(name: &str) -> Vec<u8> {
    let p: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/cosigned_checkpoint")
        .join(name);
    std::fs::read(&p).unwrap()
}

fn entry6() -> Vec<u8> {
    data("entries.jsonl")
        .split(|b| *b == b'\n')
        .nth(6)
        .unwrap()
        .to_vec()
}

fn policy(quorum: u64) -> TrustPolicy {
    TrustFile::parse(&data("trust.json"))
        .unwrap()
        .policy(Some(quorum))
        .unwrap()
}

/// A named byte range of the proof text.
type Section = (String, std::ops::Range<usize>);

/// Byte ranges of the proof text: the index and hash lines, the checkpoint body, and each
/// signature line.
fn sections(text: &[u8]) -> (Section, Section, Vec<Section>) {
    let s = std::str::from_utf8(text).unwrap();
    let header = "c2sp.org/tlog-proof@v1\n".len();
    let blank = s.find("\n\n").unwrap();
    let proof_lines = ("proof lines".to_owned(), header..blank + 1);
    let body_start = blank + 2;
    let sigs_at = body_start + s[body_start..].find("\n\n").unwrap() + 2;
    let body = ("checkpoint body".to_owned(), body_start..sigs_at - 1);
    let mut lines = Vec::new();
    let mut at = sigs_at;
    for l in s[sigs_at..].split_inclusive('\n') {
        let name = l.split(' ').nth(1).unwrap().to_owned();
        lines.push((name, at..at + l.len() - 1));
        at += l.len();
    }
    (proof_lines, body, lines)
}

#[test]
fn the_outside_receipt_verifies_under_its_two_of_two_policy() {
    let proof = data("round7.tlog-proof");
    let v = verify_receipt(&proof, &entry6(), &policy(2)).unwrap();
    assert_eq!(v.index, 6);
    assert_eq!(v.checkpoint.checkpoint.size, 8);
    assert_eq!(
        v.cosigners,
        ["witness.hospital-a.example", "witness.regulator.example"]
    );
    // Another entry is not the one proven.
    let other = data("entries.jsonl")
        .split(|b| *b == b'\n')
        .nth(5)
        .unwrap()
        .to_vec();
    assert!(verify_receipt(&proof, &other, &policy(2)).is_err());
}

#[test]
fn any_one_byte_change_of_the_entry_is_rejected() {
    let proof = data("round7.tlog-proof");
    let entry = entry6();
    for i in 0..entry.len() {
        for x in [0x01u8, 0x20, 0x80] {
            let mut e = entry.clone();
            e[i] ^= x;
            assert!(
                verify_receipt(&proof, &e, &policy(2)).is_err(),
                "entry byte {i} ^ {x:#x}"
            );
        }
    }
}

#[test]
fn any_one_byte_change_of_the_proof_lines_the_body_or_a_witness_signature_is_rejected() {
    let proof = data("round7.tlog-proof");
    let entry = entry6();
    let (proof_lines, body, sigs) = sections(&proof);
    let mut ranges = vec![proof_lines, body];
    let witnesses: Vec<_> = sigs
        .into_iter()
        .filter(|(name, _)| name.starts_with("witness."))
        .collect();
    assert_eq!(witnesses.len(), 2);
    ranges.extend(witnesses);
    let mut tried = 0;
    for (what, range) in ranges {
        for i in range {
            for x in [0x01u8, 0x02, 0x20, 0x80] {
                let mut p = proof.clone();
                p[i] ^= x;
                tried += 1;
                assert!(
                    verify_receipt(&p, &entry, &policy(2)).is_err(),
                    "{what}: byte {i} ^ {x:#x} accepted:\n{}",
                    String::from_utf8_lossy(&p)
                );
            }
        }
    }
    assert!(tried > 1000, "{tried}");
}

#[test]
fn a_policy_that_needs_more_witnesses_than_signed_refuses_and_unknown_lines_are_ignored() {
    let proof = data("round7.tlog-proof");
    // With only one of the two witnesses known, 1-of-1 passes (the other line is ignored) and
    // 2-of-1 cannot be asked for.
    let mut t = TrustFile::parse(&data("trust.json")).unwrap();
    t.witness_vkeys.remove("witness.regulator.example");
    let one = t.policy(Some(1)).unwrap();
    verify_receipt(&proof, &entry6(), &one).unwrap();
    assert!(t.policy(Some(2)).is_err());
    // Without the witness lines, the 2-of-2 policy refuses.
    let text = String::from_utf8(proof).unwrap();
    let stripped: String = text
        .split_inclusive('\n')
        .filter(|l| !l.contains("witness.regulator.example"))
        .collect();
    assert!(verify_receipt(stripped.as_bytes(), &entry6(), &policy(2)).is_err());
    verify_receipt(stripped.as_bytes(), &entry6(), &policy(1)).unwrap();
}
