//! Ed25519 identities on disk, shared by every fedledger binary.
//!
//! A key file is exactly the PKCS#8 v2 document that `ring` generates (binary DER), written with
//! mode 0600. The participant, the coordinator and ledger nodes all use these helpers so that one
//! file format holds every identity.

use std::io::Write;
use std::path::Path;

use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

use crate::error::LedgerError;

/// Generates a new Ed25519 key, writes it to `path` (PKCS#8 v2, mode 0600, refusing to overwrite
/// an existing file) and returns it.
pub fn generate_key_file(path: &Path) -> Result<Ed25519KeyPair, LedgerError> {
    let rng = SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|e| LedgerError::Key(format!("generate Ed25519 key: {e}")))?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let ctx = || format!("write key file {}", path.display());
    let mut f = opts.open(path).map_err(|e| LedgerError::io(ctx(), e))?;
    f.write_all(pkcs8.as_ref())
        .map_err(|e| LedgerError::io(ctx(), e))?;
    f.sync_all().map_err(|e| LedgerError::io(ctx(), e))?;
    Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|e| LedgerError::Key(format!("reparse generated key: {e}")))
}

/// Loads an Ed25519 key written by [`generate_key_file`].
pub fn load_key(path: &Path) -> Result<Ed25519KeyPair, LedgerError> {
    let bytes = std::fs::read(path)
        .map_err(|e| LedgerError::io(format!("read key file {}", path.display()), e))?;
    Ed25519KeyPair::from_pkcs8(&bytes).map_err(|e| {
        LedgerError::Key(format!(
            "{} is not a PKCS#8 Ed25519 key: {e}",
            path.display()
        ))
    })
}

/// Loads the key at `path`, generating it first if the file does not exist.
pub fn load_or_generate_key(path: &Path) -> Result<Ed25519KeyPair, LedgerError> {
    if path.exists() {
        load_key(path)
    } else {
        generate_key_file(path)
    }
}

/// The DER prefix of the PKCS#8 v2 Ed25519 documents `ring` writes, before the 32-byte seed.
const PKCS8_V2_SEED_PREFIX: [u8; 16] = [
    0x30, 0x51, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// The 32-byte secret seed of the key file at `path` (a PKCS#8 v2 document as
/// [`generate_key_file`] writes it), generating the file first if it does not exist: for
/// libraries that take an Ed25519 seed (libp2p identities), so that one file format holds every
/// identity. The seed is checked against the document's public key.
pub fn load_or_generate_seed(path: &Path) -> Result<[u8; 32], LedgerError> {
    let key = load_or_generate_key(path)?;
    let bytes = std::fs::read(path)
        .map_err(|e| LedgerError::io(format!("read key file {}", path.display()), e))?;
    let not = || {
        LedgerError::Key(format!(
            "{} is not a ring PKCS#8 v2 Ed25519 key",
            path.display()
        ))
    };
    if bytes.len() < 48 || bytes[..16] != PKCS8_V2_SEED_PREFIX {
        return Err(not());
    }
    let mut seed = [0u8; 32];
    seed.copy_from_slice(&bytes[16..48]);
    let again = Ed25519KeyPair::from_seed_unchecked(&seed).map_err(|_| not())?;
    if again.public_key().as_ref() != key.public_key().as_ref() {
        return Err(not());
    }
    Ok(seed)
}

/// The 32-byte public key of a key pair.
pub fn public_key(key: &Ed25519KeyPair) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(key.public_key().as_ref());
    out
}

/// The public key in lowercase hex, as records name participants.
pub fn public_key_hex(key: &Ed25519KeyPair) -> String {
    hex::encode(key.public_key().as_ref())
}

/// Verifies an Ed25519 signature; `false` on any malformed input.
pub fn verify_ed25519(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(message, signature)
        .is_ok()
}

/// Verifies many Ed25519 signatures `(public key, message, signature)`; returns one verdict
/// each. Chunks are batch-verified (ed25519-dalek, in parallel with rayon); a chunk whose batch
/// fails is re-checked one by one with `ring`, so the verdicts name exactly the bad signatures.
pub fn verify_ed25519_many(items: &[(&[u8], &[u8], &[u8])]) -> Vec<bool> {
    use rayon::prelude::*;
    const CHUNK: usize = 64;
    items
        .par_chunks(CHUNK)
        .flat_map_iter(|chunk| {
            if batch_ok(chunk) {
                vec![true; chunk.len()]
            } else {
                chunk
                    .iter()
                    .map(|(pk, m, s)| verify_ed25519(pk, m, s))
                    .collect()
            }
        })
        .collect()
}

fn batch_ok(chunk: &[(&[u8], &[u8], &[u8])]) -> bool {
    let mut keys = Vec::with_capacity(chunk.len());
    let mut sigs = Vec::with_capacity(chunk.len());
    let mut msgs = Vec::with_capacity(chunk.len());
    for (pk, m, s) in chunk {
        let Ok(pk) = <[u8; 32]>::try_from(*pk) else {
            return false;
        };
        let Ok(s) = <[u8; 64]>::try_from(*s) else {
            return false;
        };
        let Ok(vk) = ed25519_dalek::VerifyingKey::from_bytes(&pk) else {
            return false;
        };
        if vk.is_weak() {
            return false;
        }
        keys.push(vk);
        sigs.push(ed25519_dalek::Signature::from_bytes(&s));
        msgs.push(*m);
    }
    ed25519_dalek::verify_batch(&msgs, &sigs, &keys).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_of_a_key_file_gives_back_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let seed = load_or_generate_seed(&path).unwrap();
        let key = load_key(&path).unwrap();
        let again = Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
        assert_eq!(public_key(&again), public_key(&key));
        assert_eq!(load_or_generate_seed(&path).unwrap(), seed, "stable");
        std::fs::write(&path, b"not a key").unwrap();
        assert!(load_or_generate_seed(&path).is_err());
    }

    #[test]
    fn many_signatures_are_judged_one_by_one() {
        let ks: Vec<Ed25519KeyPair> = (0..5u8)
            .map(|i| Ed25519KeyPair::from_seed_unchecked(&[i; 32]).unwrap())
            .collect();
        let msgs: Vec<Vec<u8>> = (0..300)
            .map(|i: u32| format!("message {i}").into_bytes())
            .collect();
        let pks: Vec<[u8; 32]> = ks.iter().map(public_key).collect();
        let mut sigs: Vec<Vec<u8>> = msgs
            .iter()
            .enumerate()
            .map(|(i, m)| ks[i % 5].sign(m).as_ref().to_vec())
            .collect();
        sigs[7][3] ^= 1;
        sigs[250][60] ^= 0x80;
        let items: Vec<(&[u8], &[u8], &[u8])> = (0..300)
            .map(|i| (&pks[i % 5][..], &msgs[i][..], &sigs[i][..]))
            .collect();
        let v = verify_ed25519_many(&items);
        for (i, ok) in v.iter().enumerate() {
            assert_eq!(*ok, i != 7 && i != 250, "signature {i}");
        }
        // A signature checked against the wrong key.
        let wrong = [(&pks[1][..], &msgs[0][..], &sigs[0][..])];
        assert_eq!(verify_ed25519_many(&wrong), vec![false]);
    }

    #[test]
    fn key_file_round_trips_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id.key");
        let k = generate_key_file(&path).unwrap();
        let l = load_key(&path).unwrap();
        assert_eq!(public_key(&k), public_key(&l));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(
            generate_key_file(&path).is_err(),
            "must not overwrite an existing key"
        );
        let sig = l.sign(b"hello");
        assert!(verify_ed25519(&public_key(&k), b"hello", sig.as_ref()));
        assert!(!verify_ed25519(&public_key(&k), b"hellO", sig.as_ref()));
    }
}
