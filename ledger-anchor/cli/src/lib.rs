//! The `fedledger-ledger` command (auditor tools): `keygen`, `status`, `export`, `verify`,
//! `receipts`, `monitor` and `node`. A package of its own so that the ledger library depends on
//! no command-line, config-file or log-subscriber crate, and on no other fedledger crate (this
//! package plugs the privacy and valuation crates into verify). Modules, in reading
//! order:
//!
//! - [`accountant`]: the privacy crate's accountant behind the ledger's `EpsilonAccountant`
//!   hook (verify recomputes epsilon figures with it).
//! - [`rewards`]: the valuation crate's settlement rule behind the ledger's `RewardRule` hook
//!   (verify recomputes every settlement with it).
//! - [`monitor`]: `fedledger-ledger monitor URL` (follows a tlog-tiles API, alerts with exit
//!   status 3 naming the evidence).
//! - [`report`]: `verify --report DIR` (the auditor's HTML page of what was verified, drawn
//!   by the report crate).
//! - [`node_status`]: what a running node reports (size, peers, the last verified and cosigned
//!   checkpoint, gossip counters, evidence).
//! - [`node`]: `ledger.toml` and `fedledger-ledger node` (a replica and witness until Ctrl-C).
//! - [`cli`]: the clap command line and [`run`], which `main.rs` calls after parsing and
//!   installing the log subscriber.

pub mod accountant;
pub mod cli;
pub mod monitor;
pub mod node;
pub mod node_status;
pub mod report;
pub mod rewards;

pub use accountant::PrivacyAccountant;
pub use cli::{Cli, run};
pub use rewards::ValuationRewards;
