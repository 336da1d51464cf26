//! C2SP signed notes, tlog checkpoints, cosignature/v1 witness signatures and tlog-proof@v1.
//!
//! - A signed note is a UTF-8 text ending in a newline, a blank line, and signature lines
//!   `— <name> <base64(key id || signature)>`. Ed25519 note keys have type 0x01 and key id
//!   `SHA-256(name || 0x0A || 0x01 || public key)[..4]`; the signature covers the text.
//! - A checkpoint's text is `<origin>\n<size>\n<base64 root>\n` plus optional extension lines.
//! - A cosignature/v1 line (witness key type 0x04) carries `key id || 8-byte big-endian
//!   timestamp || Ed25519 signature` over `cosignature/v1\ntime <t>\n` followed by the
//!   checkpoint text.
//! - Verifier keys are written `<name>+<hex key id>+<base64(type || public key)>`.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::signature::Ed25519KeyPair;
use serde::{Deserialize, Serialize};

use crate::error::LedgerError;
use crate::keys;
use crate::merkle::{Hash, sha256_bytes};

/// Signed-note key type of an Ed25519 note signature.
pub const KEY_TYPE_ED25519: u8 = 0x01;
/// Key type of a C2SP cosignature/v1 witness signature.
pub const KEY_TYPE_COSIGNATURE: u8 = 0x04;
/// The dash that opens every signature line (U+2014 EM DASH).
const SIG_PREFIX: &str = "\u{2014} ";
/// Most signatures a note may carry (as in golang.org/x/mod/sumdb/note).
const MAX_SIGNATURES: usize = 100;

/// Key id: first four bytes of SHA-256(name || 0x0A || key type || public key).
pub fn key_id(name: &str, key_type: u8, public_key: &[u8]) -> [u8; 4] {
    let mut buf = Vec::with_capacity(name.len() + 2 + public_key.len());
    buf.extend_from_slice(name.as_bytes());
    buf.push(b'\n');
    buf.push(key_type);
    buf.extend_from_slice(public_key);
    let h = sha256_bytes(&buf);
    [h[0], h[1], h[2], h[3]]
}

fn valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && !name.contains('+')
        && !name.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// A public verifier key of a log (type 0x01) or a witness (type 0x04).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VerifierKey {
    /// The key's name (the log origin for log keys).
    pub name: String,
    /// [`KEY_TYPE_ED25519`] or [`KEY_TYPE_COSIGNATURE`].
    pub key_type: u8,
    /// Four-byte key id derived from name, type and key.
    pub key_id: [u8; 4],
    /// Ed25519 public key.
    pub public_key: [u8; 32],
}

impl VerifierKey {
    /// Builds a verifier key, computing its key id.
    pub fn new(name: &str, key_type: u8, public_key: [u8; 32]) -> Result<Self, LedgerError> {
        if !valid_key_name(name) {
            return Err(LedgerError::malformed(
                "verifier key",
                format!("invalid key name {name:?}"),
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            key_type,
            key_id: key_id(name, key_type, &public_key),
            public_key,
        })
    }

    /// Parses `<name>+<hex key id>+<base64(type || key)>`, checking the key id.
    pub fn parse(s: &str) -> Result<Self, LedgerError> {
        let bad = |r: &str| LedgerError::malformed("verifier key", format!("{r} in {s:?}"));
        let s = s.trim();
        let mut parts = s.splitn(3, '+');
        let (name, id_hex, key_b64) = match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), Some(c)) => (a, b, c),
            _ => return Err(bad("expected name+keyid+key")),
        };
        if !valid_key_name(name) {
            return Err(bad("invalid key name"));
        }
        let id = hex::decode(id_hex).map_err(|_| bad("key id is not hex"))?;
        if id.len() != 4 || id_hex.len() != 8 {
            return Err(bad("key id is not 4 bytes"));
        }
        let key = B64.decode(key_b64).map_err(|_| bad("key is not base64"))?;
        let (key_type, pk) = key.split_first().ok_or_else(|| bad("empty key"))?;
        if *key_type != KEY_TYPE_ED25519 && *key_type != KEY_TYPE_COSIGNATURE {
            return Err(bad(&format!("unsupported key type 0x{key_type:02x}")));
        }
        let public_key: [u8; 32] = pk
            .try_into()
            .map_err(|_| bad("public key is not 32 bytes"))?;
        let vk = Self::new(name, *key_type, public_key)?;
        if vk.key_id[..] != id[..] {
            return Err(bad("key id does not match name and key"));
        }
        Ok(vk)
    }
}

impl fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut key = Vec::with_capacity(33);
        key.push(self.key_type);
        key.extend_from_slice(&self.public_key);
        write!(
            f,
            "{}+{}+{}",
            self.name,
            hex::encode(self.key_id),
            B64.encode(key)
        )
    }
}

/// One signature line of a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    /// Key name.
    pub name: String,
    /// Key id (first four bytes of the decoded signature).
    pub key_id: [u8; 4],
    /// The rest of the decoded signature (an Ed25519 signature, or timestamp || signature).
    pub payload: Vec<u8>,
}

impl NoteSignature {
    /// The signature line without its trailing newline.
    pub fn line(&self) -> String {
        let mut raw = Vec::with_capacity(4 + self.payload.len());
        raw.extend_from_slice(&self.key_id);
        raw.extend_from_slice(&self.payload);
        format!("{SIG_PREFIX}{} {}", self.name, B64.encode(raw))
    }

    /// True if this line was made by `key` (same name and key id).
    pub fn is_by(&self, key: &VerifierKey) -> bool {
        self.name == key.name && self.key_id == key.key_id
    }
}

/// A parsed signed note: its text (ending in a newline) and signature lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedNote {
    /// The signed text, including its final newline.
    pub text: String,
    /// Signature lines in order.
    pub signatures: Vec<NoteSignature>,
}

impl SignedNote {
    /// Parses a signed note. Unknown signers are kept; verification picks its keys.
    pub fn parse(bytes: &[u8]) -> Result<Self, LedgerError> {
        let bad = |r: &str| LedgerError::malformed("signed note", r.to_owned());
        let s = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8"))?;
        if s.chars().any(|c| c.is_control() && c != '\n') {
            return Err(bad("control character"));
        }
        let split = s
            .rfind("\n\n")
            .ok_or_else(|| bad("no blank line before signatures"))?;
        let text = &s[..split + 1];
        let sigs = &s[split + 2..];
        if !sigs.ends_with('\n') {
            return Err(bad("does not end with a newline"));
        }
        let mut signatures = Vec::new();
        for line in sigs[..sigs.len() - 1].split('\n') {
            let rest = line
                .strip_prefix(SIG_PREFIX)
                .ok_or_else(|| bad("signature line without em dash"))?;
            let (name, b64) = rest
                .split_once(' ')
                .ok_or_else(|| bad("signature line without key"))?;
            if !valid_key_name(name) {
                return Err(bad("invalid signer name"));
            }
            let raw = B64
                .decode(b64)
                .map_err(|_| bad("signature is not base64"))?;
            if raw.len() < 5 {
                return Err(bad("signature too short"));
            }
            let key_id = [raw[0], raw[1], raw[2], raw[3]];
            signatures.push(NoteSignature {
                name: name.to_owned(),
                key_id,
                payload: raw[4..].to_vec(),
            });
            if signatures.len() > MAX_SIGNATURES {
                return Err(bad("too many signatures"));
            }
        }
        if signatures.is_empty() {
            return Err(bad("no signatures"));
        }
        Ok(Self {
            text: text.to_owned(),
            signatures,
        })
    }

    /// Serialises the note: text, blank line, one signature per line.
    pub fn encode(&self) -> String {
        let mut out = self.text.clone();
        out.push('\n');
        for s in &self.signatures {
            out.push_str(&s.line());
            out.push('\n');
        }
        out
    }

    /// Verifies the Ed25519 note signature made by `key` (type 0x01); it must be present.
    pub fn verify_signature(&self, key: &VerifierKey) -> Result<(), LedgerError> {
        if key.key_type != KEY_TYPE_ED25519 {
            return Err(LedgerError::Signature(format!(
                "{} is not a note signing key",
                key.name
            )));
        }
        let mut found = false;
        for s in self.signatures.iter().filter(|s| s.is_by(key)) {
            found = true;
            if !keys::verify_ed25519(&key.public_key, self.text.as_bytes(), &s.payload) {
                return Err(LedgerError::Signature(format!(
                    "bad signature by {}",
                    key.name
                )));
            }
        }
        if !found {
            return Err(LedgerError::Signature(format!(
                "no signature by {}",
                key.name
            )));
        }
        Ok(())
    }

    /// Verifies the cosignature/v1 line by witness `key` (type 0x04); returns its timestamp.
    pub fn verify_cosignature(&self, key: &VerifierKey) -> Result<u64, LedgerError> {
        if key.key_type != KEY_TYPE_COSIGNATURE {
            return Err(LedgerError::Signature(format!(
                "{} is not a cosignature/v1 key",
                key.name
            )));
        }
        let s = self
            .signatures
            .iter()
            .find(|s| s.is_by(key))
            .ok_or_else(|| LedgerError::Signature(format!("no cosignature by {}", key.name)))?;
        verify_cosignature_payload(key, &self.text, &s.payload)
    }

    /// Adds a signature line unless one by the same key is already there.
    pub fn add_signature(&mut self, sig: NoteSignature) {
        if !self
            .signatures
            .iter()
            .any(|s| s.name == sig.name && s.key_id == sig.key_id)
        {
            self.signatures.push(sig);
        }
    }

    /// Witnesses among `witnesses` whose cosignature on this note verifies, with timestamps.
    pub fn valid_cosigners<'a>(&self, witnesses: &'a [VerifierKey]) -> Vec<(&'a VerifierKey, u64)> {
        witnesses
            .iter()
            .filter_map(|w| self.verify_cosignature(w).ok().map(|t| (w, t)))
            .collect()
    }
}

/// Verifies one cosignature payload (timestamp || signature) over a checkpoint text.
pub fn verify_cosignature_payload(
    key: &VerifierKey,
    text: &str,
    payload: &[u8],
) -> Result<u64, LedgerError> {
    if payload.len() != 8 + 64 {
        return Err(LedgerError::Signature(format!(
            "cosignature by {} has wrong length",
            key.name
        )));
    }
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&payload[..8]);
    let t = u64::from_be_bytes(ts);
    let msg = cosignature_message(t, text);
    if !keys::verify_ed25519(&key.public_key, msg.as_bytes(), &payload[8..]) {
        return Err(LedgerError::Signature(format!(
            "bad cosignature by {}",
            key.name
        )));
    }
    Ok(t)
}

/// The message a cosignature/v1 signature covers.
pub fn cosignature_message(timestamp: u64, checkpoint_text: &str) -> String {
    format!("cosignature/v1\ntime {timestamp}\n{checkpoint_text}")
}

/// Signs notes as a log (key type 0x01) or cosigns checkpoints as a witness (type 0x04).
#[derive(Clone)]
pub struct NoteSigner {
    name: String,
    key: Arc<Ed25519KeyPair>,
    verifier: VerifierKey,
}

impl fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NoteSigner({})", self.verifier)
    }
}

impl NoteSigner {
    /// A log signer named `name` (the origin) with key type 0x01.
    pub fn log(name: &str, key: Ed25519KeyPair) -> Result<Self, LedgerError> {
        Self::with_type(name, KEY_TYPE_ED25519, key)
    }

    /// A witness signer named `name` with key type 0x04 (cosignature/v1).
    pub fn witness(name: &str, key: Ed25519KeyPair) -> Result<Self, LedgerError> {
        Self::with_type(name, KEY_TYPE_COSIGNATURE, key)
    }

    fn with_type(name: &str, key_type: u8, key: Ed25519KeyPair) -> Result<Self, LedgerError> {
        let verifier = VerifierKey::new(name, key_type, keys::public_key(&key))?;
        Ok(Self {
            name: name.to_owned(),
            key: Arc::new(key),
            verifier,
        })
    }

    /// The matching verifier key.
    pub fn verifier_key(&self) -> &VerifierKey {
        &self.verifier
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A note signature over `text` (type 0x01 signers).
    pub fn sign_text(&self, text: &str) -> NoteSignature {
        NoteSignature {
            name: self.name.clone(),
            key_id: self.verifier.key_id,
            payload: self.key.sign(text.as_bytes()).as_ref().to_vec(),
        }
    }

    /// A signed note over `text` with this signer's signature.
    pub fn sign_note(&self, text: &str) -> SignedNote {
        SignedNote {
            text: text.to_owned(),
            signatures: vec![self.sign_text(text)],
        }
    }

    /// A cosignature/v1 line over `checkpoint_text` at `timestamp` (seconds since the epoch).
    pub fn cosign(&self, checkpoint_text: &str, timestamp: u64) -> NoteSignature {
        let msg = cosignature_message(timestamp, checkpoint_text);
        let mut payload = Vec::with_capacity(72);
        payload.extend_from_slice(&timestamp.to_be_bytes());
        payload.extend_from_slice(self.key.sign(msg.as_bytes()).as_ref());
        NoteSignature {
            name: self.name.clone(),
            key_id: self.verifier.key_id,
            payload,
        }
    }
}

/// The body of a tlog checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's origin line.
    pub origin: String,
    /// Tree size.
    pub size: u64,
    /// Root hash at that size.
    pub root: Hash,
    /// Extension lines (kept, not interpreted).
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// A checkpoint without extension lines.
    pub fn new(origin: &str, size: u64, root: Hash) -> Self {
        Self {
            origin: origin.to_owned(),
            size,
            root,
            extensions: Vec::new(),
        }
    }

    /// The note text: origin, size, base64 root, extensions, each ending in a newline.
    pub fn text(&self) -> String {
        let mut s = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        );
        for e in &self.extensions {
            s.push_str(e);
            s.push('\n');
        }
        s
    }

    /// Parses a checkpoint text.
    pub fn parse_text(text: &str) -> Result<Self, LedgerError> {
        let bad = |r: &str| LedgerError::malformed("checkpoint", r.to_owned());
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| bad("text does not end with a newline"))?;
        let mut lines = body.split('\n');
        let origin = lines
            .next()
            .filter(|o| !o.is_empty())
            .ok_or_else(|| bad("missing origin"))?;
        let size_s = lines.next().ok_or_else(|| bad("missing size"))?;
        if size_s.is_empty()
            || !size_s.bytes().all(|b| b.is_ascii_digit())
            || (size_s.len() > 1 && size_s.starts_with('0'))
        {
            return Err(bad("size is not a canonical decimal"));
        }
        let size: u64 = size_s.parse().map_err(|_| bad("size out of range"))?;
        let root_b64 = lines.next().ok_or_else(|| bad("missing root hash"))?;
        let root: Hash = B64
            .decode(root_b64)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or_else(|| bad("root hash is not 32 bytes of base64"))?;
        let extensions: Vec<String> = lines.map(str::to_owned).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(bad("empty extension line"));
        }
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }
}

/// A checkpoint note whose log signature has been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// The parsed body.
    pub checkpoint: Checkpoint,
    /// The full note, with the log's signature and any cosignatures.
    pub note: SignedNote,
}

impl SignedCheckpoint {
    /// Parses a checkpoint note and verifies the log's signature on it; the origin must equal
    /// the log key's name.
    pub fn open(bytes: &[u8], log_key: &VerifierKey) -> Result<Self, LedgerError> {
        let note = SignedNote::parse(bytes)?;
        let checkpoint = Checkpoint::parse_text(&note.text)?;
        if checkpoint.origin != log_key.name {
            return Err(LedgerError::Signature(format!(
                "checkpoint origin {:?} is not the log {:?}",
                checkpoint.origin, log_key.name
            )));
        }
        note.verify_signature(log_key)?;
        Ok(Self { checkpoint, note })
    }

    /// Signs a checkpoint body as the log.
    pub fn sign(checkpoint: Checkpoint, signer: &NoteSigner) -> Self {
        let note = signer.sign_note(&checkpoint.text());
        Self { checkpoint, note }
    }

    /// The serialised note.
    pub fn encode(&self) -> String {
        self.note.encode()
    }
}

/// Two signed checkpoints of one log that cannot both hold: evidence of equivocation, as the
/// store keeps it, nodes gossip it and `verify` reads it (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// Why they conflict.
    pub reason: String,
    /// The first signed note, verbatim.
    pub first: String,
    /// The second signed note, verbatim.
    pub second: String,
}

impl std::fmt::Display for Evidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "EQUIVOCATION: {}\n--- first note ---\n{}--- second note ---\n{}",
            self.reason, self.first, self.second
        )
    }
}

impl Evidence {
    /// Checks the evidence on its own: both notes signed by `log_key`, and either the same size
    /// with different roots, or (given a consistency proof) no valid consistency between them.
    pub fn check_self_evident(&self, log_key: &VerifierKey) -> Result<(), LedgerError> {
        let a = SignedCheckpoint::open(self.first.as_bytes(), log_key)?;
        let b = SignedCheckpoint::open(self.second.as_bytes(), log_key)?;
        if a.checkpoint.size == b.checkpoint.size && a.checkpoint.root != b.checkpoint.root {
            Ok(())
        } else {
            Err(LedgerError::Equivocation(
                "the two notes do not conflict on their own".into(),
            ))
        }
    }
}

/// A C2SP tlog-proof@v1 document: an inclusion proof of one entry with the checkpoint it
/// proves against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlogProof {
    /// Optional `extra` data (base64 in the text).
    pub extra: Option<Vec<u8>>,
    /// Leaf index, from 0.
    pub index: u64,
    /// Inclusion proof hashes, leaf to root.
    pub proof: Vec<Hash>,
    /// The signed checkpoint note, as bytes.
    pub checkpoint: Vec<u8>,
}

const TLOG_PROOF_HEADER: &str = "c2sp.org/tlog-proof@v1";

impl TlogProof {
    /// Serialises the proof.
    pub fn encode(&self) -> String {
        let mut s = format!("{TLOG_PROOF_HEADER}\n");
        if let Some(extra) = &self.extra {
            s.push_str(&format!("extra {}\n", B64.encode(extra)));
        }
        s.push_str(&format!("index {}\n", self.index));
        for h in &self.proof {
            s.push_str(&B64.encode(h));
            s.push('\n');
        }
        s.push('\n');
        s.push_str(&String::from_utf8_lossy(&self.checkpoint));
        s
    }

    /// Parses a tlog-proof@v1 text.
    pub fn parse(bytes: &[u8]) -> Result<Self, LedgerError> {
        let bad = |r: &str| LedgerError::malformed("tlog-proof", r.to_owned());
        let s = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8"))?;
        let (head, checkpoint) = s
            .split_once("\n\n")
            .ok_or_else(|| bad("no blank line before checkpoint"))?;
        let mut lines = head.split('\n');
        if lines.next() != Some(TLOG_PROOF_HEADER) {
            return Err(bad("missing c2sp.org/tlog-proof@v1 header"));
        }
        let mut line = lines.next().ok_or_else(|| bad("missing index"))?;
        let mut extra = None;
        if let Some(e) = line.strip_prefix("extra ") {
            extra = Some(B64.decode(e).map_err(|_| bad("extra is not base64"))?);
            line = lines.next().ok_or_else(|| bad("missing index"))?;
        }
        let idx = line
            .strip_prefix("index ")
            .ok_or_else(|| bad("missing index line"))?;
        if idx.is_empty()
            || !idx.bytes().all(|b| b.is_ascii_digit())
            || (idx.len() > 1 && idx.starts_with('0'))
        {
            return Err(bad("index is not a canonical decimal"));
        }
        let index = idx.parse().map_err(|_| bad("index out of range"))?;
        let mut proof = Vec::new();
        for l in lines {
            let h: Hash = B64
                .decode(l)
                .ok()
                .and_then(|h| h.try_into().ok())
                .ok_or_else(|| bad("proof hash is not 32 bytes of base64"))?;
            proof.push(h);
        }
        Ok(Self {
            extra,
            index,
            proof,
            checkpoint: checkpoint.as_bytes().to_vec(),
        })
    }

    /// Verifies the checkpoint's log signature and that `entry` is at `index` under it.
    pub fn verify(
        &self,
        entry: &[u8],
        log_key: &VerifierKey,
    ) -> Result<SignedCheckpoint, LedgerError> {
        let cp = SignedCheckpoint::open(&self.checkpoint, log_key)?;
        crate::merkle::verify_inclusion(
            &crate::merkle::leaf_hash(entry),
            self.index,
            cp.checkpoint.size,
            &self.proof,
            &cp.checkpoint.root,
        )?;
        Ok(cp)
    }
}

/// Decodes standard base64 (used by records and proofs).
pub fn b64_decode(s: &str) -> Option<Vec<u8>> {
    B64.decode(s).ok()
}

/// Encodes standard base64.
pub fn b64_encode(b: &[u8]) -> String {
    B64.encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{self, MemoryTree};
    use proptest::prelude::*;

    fn signer() -> NoteSigner {
        NoteSigner::log(
            "log.test",
            Ed25519KeyPair::from_seed_unchecked(&[9; 32]).unwrap(),
        )
        .unwrap()
    }

    fn witness() -> NoteSigner {
        NoteSigner::witness(
            "w.test",
            Ed25519KeyPair::from_seed_unchecked(&[8; 32]).unwrap(),
        )
        .unwrap()
    }

    fn check(
        text: &[u8],
        entry: &[u8],
        log: &VerifierKey,
        w: &VerifierKey,
    ) -> Result<(), LedgerError> {
        let p = TlogProof::parse(text)?;
        let cp = p.verify(entry, log)?;
        cp.note.verify_cosignature(w)?;
        if cp.note.signatures.len() != 2 {
            return Err(LedgerError::Signature("unexpected signature line".into()));
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn any_one_bit_change_of_a_cosigned_proof_fails(n in 1u64..200, i in 0u64..200, bit in 0usize..100_000) {
            let i = i % n;
            let entries: Vec<Vec<u8>> = (0..n).map(|k| format!("entry {k}").into_bytes()).collect();
            let tree = MemoryTree::from_entries(&entries);
            let (s, w) = (signer(), witness());
            let mut cp = SignedCheckpoint::sign(Checkpoint::new("log.test", n, tree.root_at(n).unwrap()), &s);
            cp.note.add_signature(w.cosign(&cp.note.text, 1_700_000_000));
            let proof = TlogProof { extra: None, index: i, proof: merkle::inclusion_proof(&tree, i, n).unwrap(), checkpoint: cp.encode().into_bytes() };
            let text = proof.encode().into_bytes();
            prop_assert!(check(&text, &entries[i as usize], s.verifier_key(), w.verifier_key()).is_ok());
            let mut bad = text.clone();
            let b = bit % (bad.len() * 8);
            bad[b / 8] ^= 1 << (b % 8);
            prop_assert!(check(&bad, &entries[i as usize], s.verifier_key(), w.verifier_key()).is_err(), "bit {} of\n{}", b, String::from_utf8_lossy(&text));
            let mut e = entries[i as usize].clone();
            let eb = bit % (e.len() * 8);
            e[eb / 8] ^= 1 << (eb % 8);
            prop_assert!(check(&text, &e, s.verifier_key(), w.verifier_key()).is_err());
        }
    }
}
