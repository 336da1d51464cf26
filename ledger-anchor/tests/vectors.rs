//! Outside reference vectors (tests/data, sources in tests/data/SOURCES.md).

use fedledger_ledger::merkle::{self, Hash, MemoryTree};
use fedledger_ledger::note::{SignedCheckpoint, SignedNote, TlogProof, VerifierKey};
use serde_json::Value;

fn vectors() -> Value {
    serde_json::from_str(include_str!("data/ledger_vectors.json")).unwrap()
}

fn h(v: &Value) -> Hash {
    hex::decode(v.as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

fn hashes(v: &Value) -> Vec<Hash> {
    v.as_array().unwrap().iter().map(h).collect()
}

fn reference_tree() -> MemoryTree {
    let v = vectors();
    let leaves: Vec<Vec<u8>> = v["reference_tree"]["leaf_inputs_hex"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| hex::decode(x.as_str().unwrap()).unwrap())
        .collect();
    MemoryTree::from_entries(&leaves)
}

#[test]
fn hasher_vectors() {
    let v = vectors();
    let r = &v["rfc6962_hasher"];
    assert_eq!(merkle::empty_root(), h(&r["empty_tree_root"]));
    assert_eq!(merkle::leaf_hash(b""), h(&r["leaf_hash_of_empty_input"]));
    assert_eq!(
        merkle::leaf_hash(b"L123456"),
        h(&r["leaf_hash_of_ascii_L123456"])
    );
    assert_eq!(
        merkle::node_hash(b"N123", b"N456"),
        h(&r["node_hash_of_ascii_N123_N456"])
    );
}

#[test]
fn roots_and_node_hashes_at_every_size() {
    let v = vectors();
    let t = reference_tree();
    let roots = v["reference_tree"]["root_hash_by_tree_size"]
        .as_object()
        .unwrap();
    assert_eq!(roots.len(), 9);
    for (size, root) in roots {
        assert_eq!(
            t.root_at(size.parse().unwrap()).unwrap(),
            h(root),
            "size {size}"
        );
    }
    let levels = v["reference_tree"]["node_hashes_by_level"]
        .as_object()
        .unwrap();
    for (name, hs) in levels {
        let level: u32 = name.trim_start_matches("level").parse().unwrap();
        for (i, x) in hashes(hs).iter().enumerate() {
            use merkle::SubtreeSource;
            assert_eq!(&t.perfect(level, i as u64).unwrap(), x, "{name}[{i}]");
        }
    }
}

#[test]
fn inclusion_vectors_and_their_corruptions() {
    let v = vectors();
    let t = reference_tree();
    for vec in v["inclusion_proofs"]["vectors"].as_array().unwrap() {
        let (i, n) = (
            vec["leaf_index"].as_u64().unwrap(),
            vec["tree_size"].as_u64().unwrap(),
        );
        let (leaf, root, proof) = (h(&vec["leaf_hash"]), h(&vec["root"]), hashes(&vec["proof"]));
        assert_eq!(
            merkle::leaf_hash(&hex::decode(vec["leaf_input_hex"].as_str().unwrap()).unwrap()),
            leaf
        );
        assert_eq!(
            merkle::inclusion_proof(&t, i, n).unwrap(),
            proof,
            "generated proof {i}/{n}"
        );
        merkle::verify_inclusion(&leaf, i, n, &proof, &root).unwrap();
        // Invalid-proof cases in the style of transparency-dev/merkle's corruptInclusionProof.
        assert!(merkle::verify_inclusion(&leaf, i + 1, n, &proof, &root).is_err() || n == 1);
        if i > 0 {
            assert!(merkle::verify_inclusion(&leaf, i - 1, n, &proof, &root).is_err());
        }
        assert!(merkle::verify_inclusion(&leaf, i, n, &proof, &merkle::empty_root()).is_err());
        let mut longer = proof.clone();
        longer.push(leaf);
        assert!(merkle::verify_inclusion(&leaf, i, n, &longer, &root).is_err());
        if !proof.is_empty() {
            assert!(
                merkle::verify_inclusion(&leaf, i, n, &proof[..proof.len() - 1], &root).is_err()
            );
            let mut swapped = proof.clone();
            swapped[0] = merkle::empty_root();
            assert!(merkle::verify_inclusion(&leaf, i, n, &swapped, &root).is_err());
        }
        assert!(merkle::verify_inclusion(&leaf, n, n, &proof, &root).is_err());
    }
}

#[test]
fn consistency_vectors_and_their_corruptions() {
    let v = vectors();
    let t = reference_tree();
    for vec in v["consistency_proofs"]["vectors"].as_array().unwrap() {
        let (m, n) = (
            vec["size1"].as_u64().unwrap(),
            vec["size2"].as_u64().unwrap(),
        );
        let (r1, r2, proof) = (h(&vec["root1"]), h(&vec["root2"]), hashes(&vec["proof"]));
        assert_eq!(
            merkle::consistency_proof(&t, m, n).unwrap(),
            proof,
            "generated proof {m}->{n}"
        );
        merkle::verify_consistency(m, n, &r1, &r2, &proof).unwrap();
        if m == n {
            assert!(merkle::verify_consistency(m, n, &r1, &merkle::empty_root(), &proof).is_err());
            continue;
        }
        assert!(
            merkle::verify_consistency(m, n, &r2, &r1, &proof).is_err(),
            "roots swapped"
        );
        assert!(merkle::verify_consistency(m, n, &r1, &r2, &[]).is_err());
        assert!(merkle::verify_consistency(m, n, &r1, &r2, &proof[..proof.len() - 1]).is_err());
        let mut longer = proof.clone();
        longer.push(r1);
        assert!(merkle::verify_consistency(m, n, &r1, &r2, &longer).is_err());
        assert!(merkle::verify_consistency(n, m, &r2, &r1, &proof).is_err());
    }
}

#[test]
fn signed_note_examples_verify_byte_for_byte() {
    let v = vectors();
    for ex in v["signed_notes"].as_array().unwrap() {
        let text = ex["note"].as_str().unwrap();
        let note = SignedNote::parse(text.as_bytes()).unwrap();
        assert_eq!(note.encode(), text, "{} re-encodes byte for byte", ex["id"]);
        let keys: Vec<&str> = match ex.get("vkeys") {
            Some(ks) => ks
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k.as_str().unwrap())
                .collect(),
            None => vec![ex["vkey"].as_str().unwrap()],
        };
        for k in keys {
            let vk = VerifierKey::parse(k).unwrap();
            assert_eq!(vk.to_string(), k);
            note.verify_signature(&vk).unwrap();
            let mut bad = note.clone();
            bad.text.push('x');
            assert!(bad.verify_signature(&vk).is_err());
        }
    }
}

#[test]
fn ring_reproduces_the_gomod_signature() {
    use fedledger_ledger::note::NoteSigner;
    let v = vectors();
    let ex = &v["signed_notes"][1];
    let d = &ex["derived_for_ring"];
    let seed = hex::decode(d["seed_hex"].as_str().unwrap()).unwrap();
    let kp = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
    let signer = NoteSigner::log("PeterNeumann", kp).unwrap();
    assert_eq!(
        signer.verifier_key().to_string(),
        ex["vkey"].as_str().unwrap()
    );
    let note = SignedNote::parse(ex["note"].as_str().unwrap().as_bytes()).unwrap();
    let signed = signer.sign_note(&note.text);
    assert_eq!(
        hex::encode(&signed.signatures[0].payload),
        d["signature_hex"].as_str().unwrap()
    );
    assert_eq!(signed.encode(), ex["note"].as_str().unwrap());
}

fn cosigned(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/data/cosigned_checkpoint/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

struct Trust {
    log: VerifierKey,
    witnesses: Vec<VerifierKey>,
    consistency: Vec<Hash>,
}

fn trust() -> Trust {
    let t: Value = serde_json::from_slice(&cosigned("trust.json")).unwrap();
    Trust {
        log: VerifierKey::parse(t["log_vkey"].as_str().unwrap()).unwrap(),
        witnesses: t["witness_vkeys"]
            .as_object()
            .unwrap()
            .values()
            .map(|k| VerifierKey::parse(k.as_str().unwrap()).unwrap())
            .collect(),
        consistency: t["consistency_5_to_8_b64"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                fedledger_ledger::note::b64_decode(x.as_str().unwrap())
                    .unwrap()
                    .try_into()
                    .unwrap()
            })
            .collect(),
    }
}

fn entries() -> Vec<Vec<u8>> {
    let raw = cosigned("entries.jsonl");
    raw.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// Checks everything in the cosigned_checkpoint folder; returns the first failure.
fn check_cosigned(cp5: &[u8], cp8: &[u8], proof: &[u8], entries: &[Vec<u8>]) -> Result<(), String> {
    let t = trust();
    let e = |x: fedledger_ledger::LedgerError| x.to_string();
    let c5 = SignedCheckpoint::open(cp5, &t.log).map_err(e)?;
    let c8 = SignedCheckpoint::open(cp8, &t.log).map_err(e)?;
    for w in &t.witnesses {
        c5.note.verify_cosignature(w).map_err(e)?;
        c8.note.verify_cosignature(w).map_err(e)?;
    }
    let tree = MemoryTree::from_entries(entries);
    if tree.root_at(5).map_err(e)? != c5.checkpoint.root
        || tree.root_at(8).map_err(e)? != c8.checkpoint.root
    {
        return Err("recomputed root differs".into());
    }
    merkle::verify_consistency(
        5,
        8,
        &c5.checkpoint.root,
        &c8.checkpoint.root,
        &t.consistency,
    )
    .map_err(e)?;
    let p = TlogProof::parse(proof).map_err(e)?;
    let at = usize::try_from(p.index).map_err(|x| x.to_string())?;
    let pc = p
        .verify(entries.get(at).ok_or("no entry")?, &t.log)
        .map_err(e)?;
    for w in &t.witnesses {
        pc.note.verify_cosignature(w).map_err(e)?;
    }
    Ok(())
}

#[test]
fn outside_cosigned_checkpoint_verifies() {
    let t = trust();
    let (cp5, cp8, proof, es) = (
        cosigned("checkpoint.5"),
        cosigned("checkpoint.8"),
        cosigned("round7.tlog-proof"),
        entries(),
    );
    assert_eq!(es.len(), 8);
    check_cosigned(&cp5, &cp8, &proof, &es).unwrap();
    // Our encoder reproduces the files byte for byte, and our consistency proof is theirs.
    let c8 = SignedCheckpoint::open(&cp8, &t.log).unwrap();
    assert_eq!(c8.encode().as_bytes(), &cp8[..]);
    assert_eq!(
        TlogProof::parse(&proof).unwrap().encode().as_bytes(),
        &proof[..]
    );
    let tree = MemoryTree::from_entries(&es);
    assert_eq!(
        merkle::consistency_proof(&tree, 5, 8).unwrap(),
        t.consistency
    );
    let p = TlogProof::parse(&proof).unwrap();
    assert_eq!(merkle::inclusion_proof(&tree, 6, 8).unwrap(), p.proof);
}

#[test]
fn any_one_byte_change_in_the_cosigned_checkpoint_fails() {
    let (cp5, cp8, proof, es) = (
        cosigned("checkpoint.5"),
        cosigned("checkpoint.8"),
        cosigned("round7.tlog-proof"),
        entries(),
    );
    for i in 0..cp8.len() {
        let mut bad = cp8.clone();
        bad[i] ^= 0x01;
        assert!(
            check_cosigned(&cp5, &bad, &proof, &es).is_err(),
            "checkpoint.8 byte {i}"
        );
    }
    for i in 0..cp5.len() {
        let mut bad = cp5.clone();
        bad[i] ^= 0x01;
        assert!(
            check_cosigned(&bad, &cp8, &proof, &es).is_err(),
            "checkpoint.5 byte {i}"
        );
    }
    for i in 0..proof.len() {
        let mut bad = proof.clone();
        bad[i] ^= 0x01;
        assert!(
            check_cosigned(&cp5, &cp8, &bad, &es).is_err(),
            "proof byte {i}"
        );
    }
    for k in 0..es.len() {
        for i in (0..es[k].len()).step_by(7) {
            let mut bad = es.clone();
            bad[k][i] ^= 0x01;
            assert!(
                check_cosigned(&cp5, &cp8, &proof, &bad).is_err(),
                "entry {k} byte {i}"
            );
        }
    }
}
