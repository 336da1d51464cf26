//! The `fedledger-ledger` command line: `keygen`, `status`, `export`, `verify` and `node`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use fedledger_ledger::note::{self, VerifierKey};
use fedledger_ledger::verify::{EpsilonAccountant, VerifyOptions, verify_dir};
use fedledger_ledger::{Log, export, keys};

/// The one-line description `--help` shows (the ledger library's, as it was when the command
/// line lived there).
const ABOUT: &str = "fedledger ledger: RFC 9162 Merkle log, signed and cosigned checkpoints, \
                     sled store, libp2p replication, verify CLI";

/// fedledger ledger: export, verify and replicate a federation's signed Merkle log.
#[derive(Debug, Parser)]
#[command(name = "fedledger-ledger", version, about = ABOUT, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate an Ed25519 key file (PKCS#8, mode 0600) and print its verifier key.
    Keygen {
        /// Where to write the key (refuses to overwrite).
        #[arg(long)]
        out: PathBuf,
        /// Key name for the printed verifier key (a log origin or a witness name).
        #[arg(long)]
        name: String,
        /// Print a cosignature/v1 witness key (type 0x04) instead of a log key (0x01).
        #[arg(long)]
        witness: bool,
    },
    /// Show a store's size, latest checkpoint and any evidence of equivocation.
    Status {
        /// The log store directory.
        #[arg(long)]
        store: PathBuf,
    },
    /// Export a store for auditors: checkpoint, checkpoints/, log.vkey, witnesses.vkeys,
    /// entries/, proofs/.
    Export {
        /// The log store directory.
        #[arg(long)]
        store: PathBuf,
        /// Output directory (created).
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify an exported directory; exit status 0 only if every check holds.
    Verify {
        /// The exported directory.
        dir: PathBuf,
        /// Cosignatures required on the latest checkpoint (default: the genesis quorum).
        #[arg(long)]
        quorum: Option<u64>,
    },
    /// Run a replica + witness node over libp2p (see `ledger.toml` in the crate docs of `node`).
    Node {
        /// Node configuration (TOML).
        #[arg(long)]
        config: PathBuf,
    },
}

/// Runs a parsed command line. Returns an error (non-zero exit) when verification fails.
/// `accountant` recomputes epsilon figures in `verify` (the binary plugs in the privacy crate's;
/// without one that check is reported as skipped).
pub fn run(cli: Cli, accountant: Option<&dyn EpsilonAccountant>) -> anyhow::Result<()> {
    match cli.command {
        Command::Keygen { out, name, witness } => {
            let key = keys::generate_key_file(&out)
                .with_context(|| format!("generate key {}", out.display()))?;
            let ty = if witness {
                note::KEY_TYPE_COSIGNATURE
            } else {
                note::KEY_TYPE_ED25519
            };
            println!("{}", VerifierKey::new(&name, ty, keys::public_key(&key))?);
            Ok(())
        }
        Command::Status { store } => {
            let log = Log::open_existing(&store)
                .with_context(|| format!("open ledger store {}", store.display()))?;
            println!("origin {}\nsize {}", log.origin(), log.size());
            if let Some(cp) = log.latest_checkpoint()? {
                print!("latest checkpoint:\n{}", cp.encode());
            }
            let evidence = log.evidence()?;
            for e in &evidence {
                eprintln!("{e}");
            }
            if !evidence.is_empty() {
                anyhow::bail!(
                    "{} piece(s) of evidence of equivocation in {}",
                    evidence.len(),
                    store.display()
                );
            }
            Ok(())
        }
        Command::Export { store, out } => {
            let log = Log::open_existing(&store)
                .with_context(|| format!("open ledger store {}", store.display()))?;
            let s = export::export(&log, &out)
                .with_context(|| format!("export to {}", out.display()))?;
            println!(
                "exported {} entries and {} checkpoints to {}",
                s.entries,
                s.checkpoints,
                out.display()
            );
            if s.evidence > 0 {
                anyhow::bail!(
                    "{} piece(s) of evidence of equivocation exported to {}/evidence",
                    s.evidence,
                    out.display()
                );
            }
            Ok(())
        }
        Command::Verify { dir, quorum } => {
            let report = verify_dir(&dir, VerifyOptions { quorum, accountant });
            print!("{report}");
            if report.ok() {
                Ok(())
            } else {
                anyhow::bail!("verification of {} failed", dir.display())
            }
        }
        Command::Node { config } => crate::node::run(&config),
    }
}
