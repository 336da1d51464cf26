//! fedledger-ledger: a signed, witnessed, gossiped Merkle log of federation records.
//!
//! The ledger knows nothing of learning: it stores records, checks their schema and proves
//! them. It is a library only: the `fedledger-ledger` command (clap, `ledger.toml`, the log
//! subscriber) is the `ledger-anchor/cli` package. Modules, in reading order (each imports only
//! from those before it; ARCHITECTURE.md lists the layers and a test checks them):
//!
//! - [`error`]: [`LedgerError`], named by what went wrong.
//! - [`merkle`]: RFC 9162 hashing, inclusion and consistency proofs.
//! - [`keys`]: Ed25519 key files (PKCS#8 v2 as `ring` writes them), shared with the other crates.
//! - [`note`]: C2SP signed notes, tlog checkpoints, cosignature/v1, tlog-proof@v1, and the
//!   [`note::Evidence`] of equivocation (two checkpoints that cannot both hold).
//! - [`records`]: the record schemas (format v2: federation, enrolment, contribution, decline
//!   and round-summary entries, and the privacy object; format v1 kept for verifying old
//!   ledgers), their canonical JSON encoding
//!   and validation.
//! - [`tiles`]: C2SP tlog-tiles without I/O: tile paths, hash tiles and entry bundles read
//!   from perfect subtree hashes, and proofs computed back from fetched tiles.
//! - [`witness`]: a C2SP tlog-witness cosigner with persisted state: `add-checkpoint`'s
//!   checks in the spec's order, each refusal with its HTTP status, and the request body.
//! - [`store`]: the sled-backed [`Log`] (writer and replica), checkpoints and evidence.
//! - [`receipts`]: a hospital's receipts (tlog-proof files checked against the log and witness
//!   keys) and its statement, a directory anyone can verify offline.
//! - [`verify`]: verification of an exported directory, from files alone.
//! - [`export`]: a store written out as the auditor's files.
//! - [`http`]: the log over HTTP in the C2SP tlog-tiles layout ([`http::serve_tiles`],
//!   [`http::TilesClient`]) and a witness's C2SP tlog-witness API ([`http::serve_witness`],
//!   [`http::WitnessClient`], [`http::collect_cosignatures_http`]).
//! - [`monitor`]: follows a log's tlog-tiles API, checks every new checkpoint (log
//!   signature, witness quorum, consistency with the last one accepted, entries as `verify`
//!   checks them) into its own copy, and raises an [`monitor::Alert`] naming the evidence.
//! - [`node`]: libp2p replication (gossipsub + request-response catch-up), witnessing and
//!   equivocation gossip, behind a cloneable [`node::NodeHandle`]; its event loop never does
//!   store work itself.
//!
//! With the `failpoints` feature (on in this crate's own tests), named fail-rs points let tests
//! hold or fail the store: `ledger::store::before_flush`, `ledger::store::after_append` and
//! `ledger::witness::before_persist`. Without it they compile to nothing.
//!
//! # How the coordinator anchors a federation
//!
//! ```no_run
//! use fedledger_ledger::{Log, keys, node, note::NoteSigner};
//! # async fn demo(data_dir: &std::path::Path, genesis: Vec<Vec<u8>>, round_1: Vec<Vec<u8>>)
//! #     -> Result<(), fedledger_ledger::LedgerError> {
//! let origin = "fl.example.org/fed-01";
//! // The coordinator's Ed25519 identity is a key file shared with the rest of fedledger.
//! let key = keys::load_or_generate_key(&data_dir.join("coordinator.key"))?;
//! let log = Log::open(&data_dir.join("ledger"), origin, NoteSigner::log(origin, key)?)?;
//! if log.size() == 0 {
//!     // The federation entry and one enrolment per key, each canonical JSON
//!     // (`records::encode_canonical`), validated before anything is written.
//!     log.append_and_checkpoint(&genesis)?;
//! }
//! // Serve the log: replicas catch up from it and witnesses cosign its checkpoints.
//! let net = node::NodeConfig { listen: vec!["/ip4/0.0.0.0/tcp/4001".parse().unwrap()], ..Default::default() };
//! let handle = node::spawn(net, libp2p::identity::Keypair::generate_ed25519(), log.clone(), None).await?;
//! // After each round: append its contribution and decline entries and its summary in one
//! // atomic batch with a signed checkpoint, gossip them, collect cosignatures from the
//! // witnesses in force at its size (the genesis's, or a governed change's).
//! let old = log.size();
//! let (_, checkpoint) = log.append_and_checkpoint(&round_1)?; // flushed to disk
//! let (witnesses, quorum) = log.witness_policy(checkpoint.checkpoint.size);
//! handle.publish_since(old).await?;
//! let cosigned = handle.collect_cosignatures(checkpoint.checkpoint.size, &witnesses).await?;
//! let anchored = cosigned as u64 >= quorum;
//! # let _ = anchored; Ok(()) }
//! ```
//!
//! Participants verify the update message they sign with
//! [`records::update_signing_message`]; auditors run the `fedledger-ledger` command's `node`
//! (replica and witness), `export` and `verify`.
pub mod crash;
pub mod db;
pub mod error;
pub mod export;
pub mod http;
pub mod keys;
pub mod merkle;
pub mod monitor;
pub mod node;
pub mod note;
pub mod receipts;
pub mod records;
pub mod store;
pub mod tiles;
pub mod verify;
pub mod witness;

mod canonical;

pub use error::LedgerError;
pub use store::Log;
