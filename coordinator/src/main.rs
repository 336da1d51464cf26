//! `fedledger-coordinator`: serve a federation from one config file.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Coordinator of a fedledger federation: runs the rounds over gRPC, aggregates the hospitals'
/// updates, values their contributions and records every round.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the federation described by a config file until every round has run.
    ///
    /// Example: fedledger-coordinator serve --config coordinator.toml
    Serve {
        /// Path of coordinator.toml (see the README's configuration reference).
        #[arg(long)]
        config: PathBuf,
        /// Keep serving round results after the last round instead of exiting.
        #[arg(long)]
        stay: bool,
    },
    /// Recompute a finished round from the inputs kept by digest (global model, updates,
    /// validation file) and compare the aggregate, every value and every reward with the
    /// record. Exits non-zero on any difference. Run it on a stopped coordinator's state (or a
    /// copy of it).
    ///
    /// Example: fedledger-coordinator replay --config coordinator.toml --round 3
    Replay {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        round: u64,
    },
    /// Print what parties check this coordinator by: the log's verifier key (it signs every
    /// checkpoint), the ledger node's peer id and the SHA-256 of the genesis entry (hospitals
    /// pin it in their `[ledger]` section). Reads the key files and a copy of the ledger;
    /// starts nothing.
    ///
    /// Example: fedledger-coordinator keys --config coordinator.toml
    Keys {
        #[arg(long)]
        config: PathBuf,
    },
    /// Check a config file (and its validation data) without starting anything.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
    /// TLS certificates for the coordinator's endpoints.
    Tls {
        #[command(subcommand)]
        command: TlsCommand,
    },
}

#[derive(Subcommand)]
enum TlsCommand {
    /// Create a private CA and a server certificate for trials, and print what goes into
    /// coordinator.toml and what to hand to hospitals. Run again with the same --out, it keeps
    /// the CA (ca.key) and issues a fresh server certificate: a running coordinator serves it to
    /// new connections, and hospitals keep trusting the same ca.pem. A certificate from a
    /// public or corporate CA works as well: name its files in [tls].
    ///
    /// Example: fedledger-coordinator tls init --out tls --name coordinator.example.org
    Init {
        /// Folder for ca.pem, ca.key, server.pem and server.key (created if absent).
        #[arg(long, default_value = "tls")]
        out: PathBuf,
        /// A DNS name or IP address hospitals dial (repeat for several); the certificate is
        /// valid for these only.
        #[arg(long = "name", required = true)]
        names: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    // Test builds only: named fail-rs points from FAILPOINTS, and crash points from
    // FEDLEDGER_CRASH_AT (a release build refuses the latter rather than ignore it).
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let armed = fedledger_ledger::crash::crash_points_from_env().map_err(anyhow::Error::msg)?;
    if !armed.is_empty() {
        tracing::warn!(points = ?armed, "crash points armed (test build)");
    }
    let cli = Cli::parse();
    let rt = tokio::runtime::Runtime::new().context("start the async runtime")?;
    rt.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config, stay } => {
            let cfg = load(&config)?;
            let running = fedledger_coordinator::serve(cfg, None)
                .await
                .context("start the coordinator")?;
            println!(
                "listening on {} ({})",
                running.addr,
                if running.tls {
                    "TLS"
                } else {
                    "plaintext, no TLS"
                }
            );
            println!("{}", running.identity);
            if let Some(url) = running.tiles_url() {
                println!("tlog-tiles:       {url}");
            }
            tokio::select! {
                _ = running.wait_done(), if !stay => {
                    println!("all rounds finished");
                }
                r = tokio::signal::ctrl_c() => {
                    r.context("wait for ctrl-c")?;
                    println!("interrupted; state is saved, a restart resumes the round in flight");
                }
            }
            running.shutdown().await.context("stop the server")?;
        }
        Command::Replay { config, round } => {
            let cfg = load(&config)?;
            // A copy of the metadata and ledger: the state directory is only read.
            let snapshot = fedledger_coordinator::replay::Snapshot::open(&cfg.state_dir)
                .with_context(|| {
                    format!(
                        "open the coordinator state in {} (stop the coordinator, or replay a copy)",
                        cfg.state_dir.display()
                    )
                })?;
            let store = &snapshot.store;
            let recorded = store
                .outcome(round)
                .context("read the round's record")?
                .with_context(|| format!("round {round} has no record in this store"))?;
            // Compare with the anchored ledger entries (what auditors hold), not only the
            // coordinator's own record.
            let rounds = fedledger_coordinator::anchor::index_rounds(&snapshot.ledger)
                .context("read the ledger")?;
            let at = rounds
                .get(&round)
                .copied()
                .with_context(|| format!("round {round} is not in the ledger"))?;
            let (summary, contributions, _) =
                fedledger_coordinator::anchor::recorded_round(&snapshot.ledger, at)
                    .context("read the anchored round")?;
            let against =
                fedledger_coordinator::replay::Figures::from_record(&summary, &contributions);
            let report =
                fedledger_coordinator::replay::replay_against(&cfg, store, &recorded, &against)
                    .with_context(|| format!("replay round {round} against the ledger"))?;
            for c in &report.checked {
                println!("ok      {c}");
            }
            for s in &report.skipped {
                println!("skipped {s}");
            }
            for d in &report.differences {
                println!(
                    "DIFFERS {}: recorded {}, recomputed {}",
                    d.what, d.recorded, d.recomputed
                );
            }
            if !report.ok() {
                anyhow::bail!(
                    "round {round}: {} recomputed figure(s) differ from the record",
                    report.differences.len()
                );
            }
            println!("round {round}: every recomputed figure matches the record");
        }
        Command::Keys { config } => {
            let cfg = load(&config)?;
            let id = fedledger_coordinator::Identity::from_config(&cfg)
                .context("read the coordinator's keys and genesis")?;
            println!("{id}");
        }
        Command::Tls {
            command: TlsCommand::Init { out, names },
        } => {
            let issued = fedledger_coordinator::tls::init(&out, &names)
                .with_context(|| format!("create certificates in {}", out.display()))?;
            let d = |p: &std::path::Path| p.display().to_string();
            if issued.ca_created {
                println!(
                    "created a private CA: {} (certificate) and {} (private key: keep it \
                     offline; `tls init --out {}` uses it to issue the next certificate)",
                    d(&issued.ca_cert),
                    d(&issued.ca_key),
                    d(&out)
                );
            } else {
                println!(
                    "kept the CA of {} (its key signed the new certificate)",
                    d(&issued.ca_key)
                );
            }
            println!(
                "issued a server certificate for {}: {} and {}",
                issued.names.join(", "),
                d(&issued.cert),
                d(&issued.key)
            );
            println!("CA certificate SHA-256: {}", issued.ca_sha256);
            println!();
            println!("In coordinator.toml (the certificate is re-read when these files change):");
            println!("[tls]");
            println!("cert = {:?}", d(&issued.cert));
            println!("key = {:?}", d(&issued.key));
            println!();
            println!(
                "Hand every hospital {} (let them compare the SHA-256 above over a second \
                 channel) for its participant.toml:",
                d(&issued.ca_cert)
            );
            let host = issued
                .names
                .first()
                .map(String::as_str)
                .unwrap_or("localhost");
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host.to_owned()
            };
            println!("coordinator = \"https://{host}:50051\"");
            println!("[tls]");
            println!("ca = \"ca.pem\"");
        }
        Command::CheckConfig { config } => {
            let cfg = load(&config)?;
            println!(
                "ok: federation {} with {} participants, model {:?} ({} parameters), {} rounds, quorum {}, {} validation rows",
                cfg.federation,
                cfg.participants.len(),
                cfg.model.kind,
                cfg.model.num_params(),
                cfg.rounds,
                cfg.quorum,
                cfg.validation.len()
            );
        }
    }
    Ok(())
}

fn load(path: &std::path::Path) -> anyhow::Result<fedledger_coordinator::FederationConfig> {
    fedledger_coordinator::ConfigFile::load(path)
        .and_then(|f| f.validate())
        .with_context(|| format!("load config {}", path.display()))
}
