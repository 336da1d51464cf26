//! fedledger-ledger: a signed, witnessed, gossiped Merkle log of federation records.
//!
//! The ledger knows nothing of learning: it stores records, checks their schema and proves
//! them. Modules, in reading order:
//!
//! - [`merkle`]: RFC 9162 hashing, inclusion and consistency proofs.
//! - [`keys`]: Ed25519 key files (PKCS#8 v2 as `ring` writes them), shared with the other crates.
//! - [`note`]: C2SP signed notes, tlog checkpoints, cosignature/v1 and tlog-proof@v1.
//! - [`records`]: the record schemas (genesis and round records), their canonical JSON encoding
//!   and validation.
//! - [`store`]: the sled-backed [`Log`] (writer and replica), checkpoints and evidence.
pub mod error;
pub mod keys;
pub mod merkle;
pub mod note;
pub mod records;
pub mod store;

mod canonical;

pub use error::LedgerError;
pub use store::Log;
