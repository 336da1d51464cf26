//! The participant's Ed25519 identity: a PKCS#8 v2 key file (mode 0600, never overwritten), in
//! the one format every fedledger binary uses (the ledger crate's `keys`).

pub use fedledger_ledger::keys::{generate_key_file, load_key, public_key_hex};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_then_load_roundtrips_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        let k = generate_key_file(&path).unwrap();
        let l = load_key(&path).unwrap();
        assert_eq!(public_key_hex(&k), public_key_hex(&l));
        assert_eq!(public_key_hex(&k).len(), 64);
        assert!(
            generate_key_file(&path).is_err(),
            "an existing key is never overwritten"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(dir.path().join("bad.key"), b"not a key").unwrap();
        assert!(load_key(&dir.path().join("bad.key")).is_err());
    }
}
