//! The `fedledger-ledger` command line: `keygen`, `status`, `export`, `verify`, `receipts`,
//! `monitor` and `node`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use fedledger_ledger::note::{self, VerifierKey};
use fedledger_ledger::verify::{EpsilonAccountant, VerifyOptions, verify_dir};
use fedledger_ledger::{Log, export, keys, receipts};

/// The one-line description `--help` shows (the ledger library's, as it was when the command
/// line lived there).
const ABOUT: &str = "fedledger ledger: RFC 9162 Merkle log, signed and cosigned checkpoints, \
                     sled store, libp2p replication, verify CLI";

/// fedledger ledger: export, verify and replicate a federation's signed Merkle log.
#[derive(Debug, Parser)]
#[command(name = "fedledger-ledger", version, about = ABOUT, long_about = None, arg_required_else_help = true)]
pub struct Cli {
    /// Print a complete ledger.toml (for `node`), every field with its default and a comment,
    /// and exit.
    #[arg(long, exclusive = true)]
    pub print_default_config: bool,
    /// Log filter, instead of the RUST_LOG environment variable: a level (error, warn, info,
    /// debug, trace) or directives such as "info,fedledger_ledger=debug". Default: info.
    #[arg(long, global = true)]
    pub log_level: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// How logs are written.
    #[command(flatten)]
    pub log: fedledger_logging::LogArgs,
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
    /// Export a store: the auditor's files (--out) and/or the log as static tlog-tiles (--tiles).
    ///
    /// --out writes checkpoint, checkpoints/, log.vkey, witnesses.vkeys, entries/, proofs/ for
    /// `verify`. --tiles writes the C2SP tlog-tiles layout as static files any web server can
    /// publish: checkpoint, tile/<L>/<N>, tile/entries/<N>, with a partial tile for every
    /// checkpointed size.
    ///
    /// Example: fedledger-ledger export --store coordinator-state/ledger --tiles public/log
    #[command(group(clap::ArgGroup::new("what").required(true).multiple(true).args(["out", "tiles"])))]
    Export {
        /// The log store directory.
        #[arg(long)]
        store: PathBuf,
        /// Output directory of the auditor's files (created).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Output directory of the tlog-tiles files (created).
        #[arg(long)]
        tiles: Option<PathBuf>,
    },
    /// Verify an exported directory; exit status 0 only if every check holds.
    ///
    /// With --report DIR, also writes DIR/report.html: one self-contained page (inline SVG
    /// plots) of what the verified ledger records (the validation score per round, each
    /// hospital's value and reward per round and cumulatively, epsilon against the budget,
    /// declines and abandoned rounds, the signed checkpoints) and the checks made. It is written
    /// when verification fails too, saying so at the top.
    ///
    /// Example: fedledger-ledger verify ledger-export --report auditor-report
    Verify {
        /// The exported directory.
        dir: PathBuf,
        /// Cosignatures required on the latest checkpoint (default: the genesis quorum).
        #[arg(long)]
        quorum: Option<u64>,
        /// Also write an HTML report of what was verified into this folder (created).
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// A hospital's receipts: verify a statement directory offline, or one tlog-proof file.
    #[command(subcommand)]
    Receipts(ReceiptsCommand),
    /// Follow a federation's tlog-tiles API and alert on misbehaviour (exit status 3).
    ///
    /// Each new checkpoint is checked before it is accepted: the log's signature (--log-key),
    /// the genesis quorum of witness cosignatures, consistency with the last one accepted, the
    /// entries served against the signed root, and every entry as `verify` checks it. The
    /// monitor keeps its own copy of the log in --state. On inconsistency, equivocation or an
    /// invalid entry it prints a line starting `ALERT` naming the evidence (both signed
    /// checkpoints, or the entries), keeps it under <state>/alerts/, and exits with status 3;
    /// it refuses to start again while an alert is kept there. Fetch failures are retried.
    ///
    /// Example: fedledger-ledger monitor http://coordinator.example.org:8080/ --state monitor-state --log-key 'fed+1a2b3c4d+AU...' --genesis <sha256>
    Monitor {
        /// The log's tlog-tiles URL prefix (the coordinator's `tiles_listen`).
        url: String,
        /// The monitor's state directory (its copy of the log and its alerts; created).
        #[arg(long)]
        state: PathBuf,
        /// The log's verifier key, as the operator published it.
        #[arg(long)]
        log_key: String,
        /// The SHA-256 of the genesis entry, as the operator published it.
        #[arg(long)]
        genesis: Option<String>,
        /// Seconds between polls.
        #[arg(long, default_value_t = 5)]
        interval_secs: u64,
        /// Poll once and exit (0 when everything up to the served checkpoint holds).
        #[arg(long)]
        once: bool,
    },
    /// Run a replica (and, with [witness], a witness) of one log over libp2p until Ctrl-C.
    ///
    /// It catches up from the peers it dials, follows gossip and reports equivocation; it
    /// prints its peer id at start. Every 10 seconds it checks its state and prints a
    /// `status:` line when it changed: the replica's entries, its peers, the last verified
    /// checkpoint that carries the genesis quorum of witness cosignatures (with its root),
    /// gossip counters and any evidence of equivocation.
    ///
    /// Example: fedledger-ledger node --config ledger.toml
    Node {
        /// Path of ledger.toml (`fedledger-ledger --print-default-config` prints a complete one).
        #[arg(long)]
        config: PathBuf,
        /// The replica's store directory, instead of the file's `store`.
        #[arg(long)]
        store: Option<PathBuf>,
    },
}

/// `fedledger-ledger receipts ...`.
#[derive(Debug, Subcommand)]
pub enum ReceiptsCommand {
    /// Verify a hospital's statement offline; exit status 0 only if everything holds.
    ///
    /// The statement is what `fedledger-participant receipts --out DIR` writes. It is checked
    /// with nothing but its files: every receipt against the log key and the genesis witnesses,
    /// every entry's schema and the hospital's signature, the summary recomputed from the
    /// entries. A failure names the file that was changed.
    ///
    /// Example: fedledger-ledger receipts verify statement --log-key 'fed+1a2b3c4d+AU...'
    Verify {
        /// The statement directory.
        dir: PathBuf,
        /// The log's verifier key as the operator published it (else the statement's
        /// trust.json is used, and printed for you to compare).
        #[arg(long)]
        log_key: Option<String>,
        /// The genesis digest the operator gave the hospital.
        #[arg(long)]
        genesis: Option<String>,
    },
    /// Verify one C2SP tlog-proof file for an entry against a trust file.
    ///
    /// The trust file is JSON: origin, log_vkey, witness_vkeys (name to key), and quorum unless
    /// given here.
    ///
    /// Example: fedledger-ledger receipts check-proof --proof round7.tlog-proof --entry e.json --trust trust.json --quorum 2
    CheckProof {
        /// The tlog-proof file.
        #[arg(long)]
        proof: PathBuf,
        /// The entry's exact bytes.
        #[arg(long)]
        entry: PathBuf,
        /// The trust file.
        #[arg(long)]
        trust: PathBuf,
        /// Cosignatures required (default: the trust file's quorum).
        #[arg(long)]
        quorum: Option<u64>,
    },
}

/// Runs a parsed command line. Returns an error (non-zero exit) when verification fails.
/// `accountant` recomputes epsilon figures in `verify` (the binary plugs in the privacy crate's;
/// without one that check is reported as skipped).
pub fn run(cli: Cli, accountant: Option<&dyn EpsilonAccountant>) -> anyhow::Result<()> {
    let Some(command) = cli.command else {
        anyhow::ensure!(cli.print_default_config, "no command given: see --help");
        print!("{}", crate::node::DEFAULT_CONFIG);
        return Ok(());
    };
    match command {
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
        Command::Export { store, out, tiles } => {
            let log = Log::open_existing(&store)
                .with_context(|| format!("open ledger store {}", store.display()))?;
            if let Some(dir) = &tiles {
                let t = export::export_tiles(&log, dir)
                    .with_context(|| format!("write tiles to {}", dir.display()))?;
                println!(
                    "wrote {} tile files ({} bytes) for {} entries to {}",
                    t.files,
                    t.bytes,
                    t.size,
                    dir.display()
                );
            }
            let Some(out) = out else { return Ok(()) };
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
        Command::Verify {
            dir,
            quorum,
            report: page,
        } => {
            let report = verify_dir(
                &dir,
                VerifyOptions {
                    quorum,
                    accountant,
                    rewards: Some(&crate::ValuationRewards),
                },
            );
            print!("{report}");
            if let Some(out) = page {
                let path = crate::report::write(&dir, &report, &out)
                    .with_context(|| format!("write the report of {}", dir.display()))?;
                println!("wrote {}", path.display());
            }
            if report.ok() {
                Ok(())
            } else {
                anyhow::bail!("verification of {} failed", dir.display())
            }
        }
        Command::Receipts(ReceiptsCommand::Verify {
            dir,
            log_key,
            genesis,
        }) => {
            let opts = receipts::StatementOptions {
                log_key: log_key
                    .map(|k| VerifierKey::parse(&k))
                    .transpose()
                    .context("--log-key")?,
                genesis_sha256: genesis,
            };
            let report = receipts::verify_statement(&dir, &opts);
            print!("{report}");
            if report.ok() {
                Ok(())
            } else {
                anyhow::bail!(
                    "the statement in {} does not verify; changed or wrong: {}",
                    dir.display(),
                    report.failed_files().join(", ")
                )
            }
        }
        Command::Receipts(ReceiptsCommand::CheckProof {
            proof,
            entry,
            trust,
            quorum,
        }) => {
            let read =
                |p: &PathBuf| std::fs::read(p).with_context(|| format!("read {}", p.display()));
            let policy = receipts::TrustFile::parse(&read(&trust)?)?
                .policy(quorum)
                .context("the trust file")?;
            let v = receipts::verify_receipt(&read(&proof)?, &read(&entry)?, &policy)
                .with_context(|| {
                    format!("{} does not prove {}", proof.display(), entry.display())
                })?;
            println!(
                "ok: entry {} is in the log {} at size {}, cosigned by {} ({} required)",
                v.index,
                policy.log_key.name,
                v.checkpoint.checkpoint.size,
                v.cosigners.join(", "),
                policy.quorum
            );
            Ok(())
        }
        Command::Monitor {
            url,
            state,
            log_key,
            genesis,
            interval_secs,
            once,
        } => crate::monitor::run(
            crate::monitor::MonitorArgs {
                url,
                state,
                log_key,
                genesis,
                interval: std::time::Duration::from_secs(interval_secs.max(1)),
                once,
            },
            accountant,
        ),
        Command::Node { config, store } => crate::node::run(&config, store),
    }
}
