//! Property tests over arbitrary input (fuzzing on stable Rust) of what a peer or an export
//! hands the ledger: signed notes, checkpoints, verifier keys, tlog-proofs, inclusion and
//! consistency proofs. Each parser refuses what it cannot use and never panics; a note that
//! still opens after any change carries the checkpoint that was signed; proof checks do work
//! bounded by the proof they are given, whatever sizes are claimed.
//!
//! Plain `cargo test` runs 256 cases per property and the regression corpus at the end; a long
//! run sets `PROPTEST_CASES` (e.g. `PROPTEST_CASES=200000`).

use fedledger_ledger::{
    merkle::{self, Hash, MemoryTree},
    note::{Checkpoint, NoteSigner, SignedCheckpoint, SignedNote, TlogProof, VerifierKey},
};
use proptest::prelude::*;
use ring::signature::Ed25519KeyPair;

const ORIGIN: &str = "fuzz.example/log";

fn signer() -> NoteSigner {
    NoteSigner::log(
        ORIGIN,
        Ed25519KeyPair::from_seed_unchecked(&[3; 32]).unwrap(),
    )
    .unwrap()
}

fn tree(n: u64) -> MemoryTree {
    MemoryTree::from_entries((0..n).map(|i| format!("entry {i}").into_bytes()))
}

fn signed(size: u64) -> SignedCheckpoint {
    let t = tree(size);
    SignedCheckpoint::sign(
        Checkpoint::new(ORIGIN, size, t.root_at(size).unwrap()),
        &signer(),
    )
}

/// Random edits of `bytes`: replace, insert or delete a byte at random places.
fn mutate(bytes: &[u8], edits: &[(prop::sample::Index, u8, u8)]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    for (at, byte, op) in edits {
        let i = at.index(b.len() + 1);
        match op % 3 {
            0 if i < b.len() => b[i] = *byte,
            1 => b.insert(i, *byte),
            _ if i < b.len() => {
                b.remove(i);
            }
            _ => {}
        }
    }
    b
}

fn edits() -> impl Strategy<Value = Vec<(prop::sample::Index, u8, u8)>> {
    prop::collection::vec(
        (any::<prop::sample::Index>(), any::<u8>(), any::<u8>()),
        1..6,
    )
}

fn hashes(max: usize) -> impl Strategy<Value = Vec<Hash>> {
    prop::collection::vec(any::<[u8; 32]>(), 0..max)
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_a_parser(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let key = signer().verifier_key().clone();
        let _ = SignedNote::parse(&bytes);
        let _ = TlogProof::parse(&bytes);
        let _ = SignedCheckpoint::open(&bytes, &key);
        let text = String::from_utf8_lossy(&bytes);
        let _ = Checkpoint::parse_text(&text);
        let _ = VerifierKey::parse(&text);
    }

    #[test]
    fn a_changed_checkpoint_note_opens_only_as_what_was_signed(
        size in 0u64..40,
        edits in edits(),
    ) {
        let cp = signed(size);
        let key = signer().verifier_key().clone();
        let bytes = mutate(cp.encode().as_bytes(), &edits);
        if let Ok(opened) = SignedCheckpoint::open(&bytes, &key) {
            prop_assert_eq!(opened.checkpoint, cp.checkpoint);
        }
        let _ = SignedNote::parse(&bytes);
    }

    #[test]
    fn a_changed_tlog_proof_verifies_only_for_the_entry_it_proves(
        size in 1u64..40,
        index in any::<prop::sample::Index>(),
        edits in edits(),
    ) {
        let t = tree(size);
        let index = index.index(size as usize) as u64;
        let cp = signed(size);
        let proof = TlogProof {
            extra: None,
            index,
            proof: merkle::inclusion_proof(&t, index, size).unwrap(),
            checkpoint: cp.encode().into_bytes(),
        };
        let key = signer().verifier_key().clone();
        let entry = format!("entry {index}").into_bytes();
        prop_assert!(TlogProof::parse(proof.encode().as_bytes()).unwrap().verify(&entry, &key).is_ok());
        let bytes = mutate(proof.encode().as_bytes(), &edits);
        if let Ok(p) = TlogProof::parse(&bytes)
            && let Ok(opened) = p.verify(&entry, &key)
        {
            prop_assert_eq!(opened.checkpoint, cp.checkpoint);
            prop_assert_eq!(p.index, index);
        }
    }

    #[test]
    fn proof_checks_never_panic_whatever_sizes_are_claimed(
        leaf in any::<[u8; 32]>(),
        index in any::<u64>(),
        size in any::<u64>(),
        old in any::<u64>(),
        proof in hashes(70),
        roots in any::<([u8; 32], [u8; 32])>(),
    ) {
        let _ = merkle::verify_inclusion(&leaf, index, size, &proof, &roots.0);
        let _ = merkle::verify_inclusion(&leaf, index % size.max(1), size, &proof, &roots.0);
        let _ = merkle::verify_consistency(old, size, &roots.0, &roots.1, &proof);
        let _ = merkle::verify_consistency(old % size.max(1), size, &roots.0, &roots.1, &proof);
    }

    #[test]
    fn a_consistency_proof_with_any_change_fails(
        new in 2u64..60,
        old in any::<prop::sample::Index>(),
        flip in any::<(prop::sample::Index, u8)>(),
    ) {
        let old = 1 + old.index(new as usize - 1) as u64;
        let t = tree(new);
        let (r0, r1) = (t.root_at(old).unwrap(), t.root_at(new).unwrap());
        let mut proof = merkle::consistency_proof(&t, old, new).unwrap();
        prop_assert!(merkle::verify_consistency(old, new, &r0, &r1, &proof).is_ok());
        if !proof.is_empty() {
            let i = flip.0.index(proof.len() * 32);
            proof[i / 32][i % 32] ^= 1 << (flip.1 % 8);
            prop_assert!(merkle::verify_consistency(old, new, &r0, &r1, &proof).is_err());
        }
    }
}

/// Inputs the properties found or that sit on their edges, kept as regression tests.
#[test]
fn corpus() {
    let key = signer().verifier_key().clone();
    for bytes in [
        &b""[..],
        b"\n\n",
        b"c2sp.org/tlog-proof@v1\n\n",
        b"c2sp.org/tlog-proof@v1\nindex 18446744073709551616\n\n",
        b"c2sp.org/tlog-proof@v1\nindex 01\n\n",
        b"c2sp.org/tlog-proof@v1\nextra !!\nindex 1\n\n",
        "fuzz.example/log\n18446744073709551615\n\n\n\u{2014} fuzz.example/log AAAA\n".as_bytes(),
        "fuzz.example/log\n1\nAAAA\n\n\u{2014} \n".as_bytes(),
        "\u{2014}\u{2014}\n\n\u{2014}".as_bytes(),
    ] {
        let _ = SignedNote::parse(bytes);
        let _ = TlogProof::parse(bytes);
        let _ = SignedCheckpoint::open(bytes, &key);
        let _ = Checkpoint::parse_text(&String::from_utf8_lossy(bytes));
    }
    let zero = [0u8; 32];
    assert!(merkle::verify_inclusion(&zero, u64::MAX - 1, u64::MAX, &[zero; 70], &zero).is_err());
    assert!(merkle::verify_consistency(u64::MAX - 1, u64::MAX, &zero, &zero, &[zero; 70]).is_err());
    assert!(merkle::verify_consistency(1, u64::MAX, &zero, &zero, &[]).is_err());
}
