//! `fedledger-coordinator`: serve a federation from one config file.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Coordinator of a fedledger federation: runs the rounds over gRPC, aggregates the hospitals'
/// updates, values their contributions and records every round.
#[derive(Parser)]
#[command(version, about, long_about = None, arg_required_else_help = true)]
struct Cli {
    /// Print a complete coordinator.toml, every field with its default and a comment, and exit.
    #[arg(long, exclusive = true)]
    print_default_config: bool,
    /// Log filter, instead of the RUST_LOG environment variable: a level (error, warn, info,
    /// debug, trace) or directives such as "info,fedledger_ledger=debug". Default: info.
    #[arg(long, global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    log: fedledger_logging::LogArgs,
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
        /// Keep serving round results after the last round until Ctrl-C, instead of exiting
        /// after `[rounds] grace_secs`.
        #[arg(long)]
        stay: bool,
        /// The gRPC address to listen on, instead of the file's `listen`.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// The state directory, instead of the file's `state_dir`.
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Recompute a finished round from the inputs kept by digest (global model, updates,
    /// validation file) and compare the aggregate, every value and every reward with the
    /// record. Exits non-zero on any difference. Run it on a stopped coordinator's state (or a
    /// copy of it).
    ///
    /// Example: fedledger-coordinator replay --config coordinator.toml --round 3
    ///
    /// With --bundle DIR instead, replays an audit bundle (from `export-audit`) on any machine,
    /// from the bundle alone: the ledger export is verified, then every round in it is
    /// recomputed and compared with its anchored entries.
    ///
    /// Example: fedledger-coordinator replay --bundle audit-rounds-1-5
    #[command(group(clap::ArgGroup::new("source").required(true).args(["config", "bundle"])))]
    Replay {
        /// Path of the coordinator.toml whose state directory holds the round.
        #[arg(long, requires = "round")]
        config: Option<PathBuf>,
        /// The round to recompute (with --config).
        #[arg(long)]
        round: Option<u64>,
        /// An audit bundle directory (no coordinator state needed).
        #[arg(long, conflicts_with = "round")]
        bundle: Option<PathBuf>,
    },
    /// Write an audit bundle of rounds A..B: a ledger export, the inputs kept by digest (the
    /// model each round started from, every update) and the settings that shape aggregation
    /// and valuation, so an auditor can recompute the rounds elsewhere with
    /// `replay --bundle DIR`. The validation file is included only with --include-validation;
    /// without it only aggregates can be checked. Exporting hospitals' updates is the
    /// operator's decision under the federation's agreement. Run it on a stopped coordinator's
    /// state (or a copy of it).
    ///
    /// Example: fedledger-coordinator export-audit --config coordinator.toml --rounds 1..5 --out audit-rounds-1-5
    ExportAudit {
        /// Path of the coordinator.toml whose state directory holds the rounds.
        #[arg(long)]
        config: PathBuf,
        /// Rounds A..B (inclusive), e.g. 1..5.
        #[arg(long)]
        rounds: String,
        /// The bundle directory (must not exist).
        #[arg(long)]
        out: PathBuf,
        /// Include the coordinator's validation file (needed to check values and rewards).
        #[arg(long)]
        include_validation: bool,
    },
    /// Print what parties check this coordinator by: the log's verifier key (it signs every
    /// checkpoint), the ledger node's peer id and the SHA-256 of the genesis entry (hospitals
    /// pin it in their `[ledger]` section). Reads the key files and a copy of the ledger;
    /// starts nothing.
    ///
    /// Example: fedledger-coordinator keys --config coordinator.toml
    Keys {
        /// Path of coordinator.toml (its key files and state directory are read).
        #[arg(long)]
        config: PathBuf,
    },
    /// Check a config file (and its validation data and enrolled keys) without starting
    /// anything; once the federation has a ledger, also against its governed state (as a
    /// restart would). Each problem is named with what to change.
    ///
    /// Example: fedledger-coordinator check-config --config coordinator.toml
    CheckConfig {
        /// Path of coordinator.toml.
        #[arg(long)]
        config: PathBuf,
    },
    /// Print the federation's state: phase and round, rounds completed and abandoned, updates
    /// accepted, the last round's model quality and durations, the ledger's size and latest
    /// checkpoint with its cosignatures, and per participant whether it is registered and
    /// online, its updates, declines and epsilon spent. Asks a running coordinator through its
    /// admin endpoint ([metrics] listen, on loopback by default; the address it noted in the
    /// state directory); when none answers, reads the stopped coordinator's state directory.
    ///
    /// Example: fedledger-coordinator status --config coordinator.toml
    Status {
        /// The coordinator's configuration (names the state directory and the endpoint).
        #[arg(long)]
        config: PathBuf,
        /// Print the state as JSON (the admin endpoint's GET /status) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Write the federation's report: one self-contained HTML page (DIR/report.html, inline
    /// SVG plots, nothing fetched) with accuracy, log-loss and AUC per round, each hospital's
    /// value and reward per round and cumulatively, epsilon spent against the budget, declines
    /// and abandoned rounds, and the anchored checkpoints with the commands that verify them.
    /// Everything comes from the state directory and its ledger (read from a copy), not from a
    /// run's memory.
    ///
    /// Example: fedledger-coordinator report --config coordinator.toml --out report
    Report {
        /// The coordinator's configuration (names the state directory).
        #[arg(long)]
        config: PathBuf,
        /// The folder to write report.html into (created if absent; the page is replaced).
        #[arg(long)]
        out: PathBuf,
    },
    /// TLS certificates for the coordinator's endpoints.
    Tls {
        #[command(subcommand)]
        command: TlsCommand,
    },
    /// Governance: hand a proposal signed by k governors to the running coordinator, or list
    /// the anchored ones.
    Govern {
        #[command(subcommand)]
        command: GovernCommand,
    },
}

#[derive(Subcommand)]
enum GovernCommand {
    /// Submit a proposal (JSON, see the README) with its governors' signatures (each the
    /// output of `fedledger-participant govern sign`). The coordinator anchors it in the
    /// ledger before answering, or refuses it with the reason and changes nothing.
    ///
    /// Example: fedledger-coordinator govern submit --coordinator https://coordinator.example.org:50051 --ca tls/ca.pem --proposal enrol-d.json --signature sig-a.json --signature sig-b.json
    Submit {
        #[command(flatten)]
        remote: Remote,
        /// The proposal file (JSON, see the README), the one the governors signed.
        #[arg(long)]
        proposal: PathBuf,
        /// A signature file (repeat for each governor).
        #[arg(long = "signature", required = true)]
        signatures: Vec<PathBuf>,
    },
    /// List the anchored proposals (pending until their from_round opens, then applied) and
    /// the digest the next proposal's `previous` must name.
    ///
    /// Example: fedledger-coordinator govern list --coordinator https://coordinator.example.org:50051 --ca tls/ca.pem
    List {
        #[command(flatten)]
        remote: Remote,
    },
}

/// How `govern` reaches the running coordinator: the same link settings as a hospital's
/// `[coordinator]` section (TLS trust, server name, plaintext policy; proxies from
/// `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY`).
#[derive(clap::Args)]
struct Remote {
    /// The coordinator's gRPC URL: `https://host:port`, or plaintext `http://` (loopback only,
    /// unless --allow-plaintext).
    #[arg(long)]
    coordinator: String,
    /// Trust certificates chaining to this CA (PEM; `tls init`'s ca.pem) instead of the
    /// public web PKI.
    #[arg(long, conflicts_with = "pin")]
    ca: Option<PathBuf>,
    /// Trust exactly this certificate (PEM), whatever its issuer.
    #[arg(long)]
    pin: Option<PathBuf>,
    /// The name the certificate must be valid for (default: the URL's host).
    #[arg(long)]
    server_name: Option<String>,
    /// Allow plaintext http:// to an address other than loopback.
    #[arg(long)]
    allow_plaintext: bool,
}

impl Remote {
    async fn connect(
        &self,
    ) -> anyhow::Result<
        fedledger_proto::coordinator_client::CoordinatorClient<tonic::transport::Channel>,
    > {
        use fedledger_link::{ALPN_H2, Link, LinkSettings, Trust};
        let settings = LinkSettings {
            trust: match (&self.ca, &self.pin) {
                (Some(ca), _) => Trust::Ca(ca.clone()),
                (None, Some(pin)) => Trust::Pin(pin.clone()),
                (None, None) => Trust::PublicRoots,
            },
            server_name: self.server_name.clone(),
            allow_plaintext: self.allow_plaintext,
            ..LinkSettings::default()
        };
        let url = &self.coordinator;
        let link = Link::new(url, &settings).with_context(|| format!("the coordinator {url}"))?;
        let channel = tonic::transport::Endpoint::from_shared(url.clone())
            .with_context(|| format!("the coordinator URL {url}"))?
            .connect_timeout(std::time::Duration::from_secs(10))
            .connect_with_connector(link.connector(ALPN_H2))
            .await
            .with_context(|| format!("connect to the coordinator at {url}"))?;
        Ok(fedledger_proto::coordinator_client::CoordinatorClient::new(
            channel,
        ))
    }
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
    let cli = Cli::parse();
    fedledger_logging::init_level(cli.log.log_format, cli.log_level.as_deref());
    // Test builds only: named fail-rs points from FAILPOINTS, and crash points from
    // FEDLEDGER_CRASH_AT (a release build refuses the latter rather than ignore it).
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let armed = fedledger_ledger::crash::crash_points_from_env().map_err(anyhow::Error::msg)?;
    if !armed.is_empty() {
        tracing::warn!(points = ?armed, "crash points armed (test build)");
    }
    let rt = tokio::runtime::Runtime::new().context("start the async runtime")?;
    rt.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let Some(command) = cli.command else {
        anyhow::ensure!(cli.print_default_config, "no command given: see --help");
        print!("{}", fedledger_coordinator::config::DEFAULT_CONFIG);
        return Ok(());
    };
    match command {
        Command::Serve {
            config,
            stay,
            listen,
            state_dir,
        } => {
            let mut file = fedledger_coordinator::ConfigFile::load(&config)?;
            if let Some(l) = listen {
                file.listen = l;
            }
            if let Some(d) = state_dir {
                file.state_dir = d;
            }
            let cfg = file
                .validate()
                .with_context(|| format!("check {}", config.display()))?;
            let grace = cfg.grace;
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
            if let Some(at) = running.admin_addr() {
                println!("metrics, status:  http://{at}/metrics, http://{at}/status");
            }
            tokio::select! {
                f = running.wait_finished(grace), if !stay => match f {
                    fedledger_coordinator::Farewell::Complete => println!(
                        "all rounds finished; every hospital was told, the final checkpoint is witnessed"
                    ),
                    fedledger_coordinator::Farewell::GraceOver { not_told, witnessed } => println!(
                        "all rounds finished; grace period of {} s over{}{}",
                        grace.as_secs(),
                        if not_told.is_empty() {
                            String::new()
                        } else {
                            format!("; never told: {}", not_told.join(", "))
                        },
                        if witnessed { "" } else { "; the final checkpoint lacks its witness quorum" }
                    ),
                },
                r = tokio::signal::ctrl_c() => {
                    r.context("wait for ctrl-c")?;
                    println!("interrupted; state is saved, a restart resumes the round in flight");
                }
            }
            running.shutdown().await.context("stop the server")?;
        }
        Command::Govern { command } => govern(command).await?,
        Command::Replay {
            bundle: Some(dir), ..
        } => {
            for l in fedledger_coordinator::audit::LIMITS {
                println!("limit   {l}");
            }
            let report = fedledger_coordinator::audit::replay_bundle(&dir)
                .with_context(|| format!("replay the audit bundle {}", dir.display()))?;
            for f in &report.ledger_failures {
                println!("FAILS   {f}");
            }
            if report.ledger_failures.is_empty() {
                println!(
                    "ok      ledger export verifies (fedledger-ledger verify also recomputes epsilon)"
                );
            }
            for r in &report.rounds {
                for c in &r.checked {
                    println!("ok      round {}: {c}", r.round);
                }
                for s in &r.skipped {
                    println!("skipped round {}: {s}", r.round);
                }
                for d in &r.differences {
                    println!(
                        "DIFFERS round {}: {}: recorded {}, recomputed {}",
                        r.round, d.what, d.recorded, d.recomputed
                    );
                }
            }
            if !report.ok() {
                anyhow::bail!(
                    "the audit bundle {} does not match its ledger",
                    dir.display()
                );
            }
            println!(
                "rounds {}..{}: every recomputed figure matches the anchored entries",
                report.manifest.first_round, report.manifest.last_round
            );
        }
        Command::ExportAudit {
            config,
            rounds,
            out,
            include_validation,
        } => {
            let cfg = load(&config)?;
            let (a, b) = rounds
                .split_once("..")
                .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
                .with_context(|| format!("--rounds {rounds:?}: expected A..B, e.g. 1..5"))?;
            let snapshot = fedledger_coordinator::replay::Snapshot::open(&cfg.state_dir)
                .with_context(|| {
                    format!(
                        "open the coordinator state in {} (stop the coordinator, or export from a copy)",
                        cfg.state_dir.display()
                    )
                })?;
            // The rules those rounds ran under (governance may have changed them since).
            let settings =
                fedledger_coordinator::replay::settings_for_rounds(&cfg, &snapshot, a, b)
                    .with_context(|| format!("read the rules of rounds {a}..{b}"))?;
            let done = fedledger_coordinator::audit::export_audit(
                settings,
                &snapshot,
                a..=b,
                &out,
                include_validation,
            )
            .with_context(|| format!("export rounds {a}..{b}"))?;
            println!(
                "wrote rounds {a}..{b} ({} rounds, {} inputs, {} bytes) to {}",
                done.rounds,
                done.inputs,
                done.bytes,
                out.display()
            );
            for l in fedledger_coordinator::audit::LIMITS {
                println!("limit: {l}");
            }
            println!(
                "replay elsewhere: fedledger-coordinator replay --bundle {}",
                out.display()
            );
        }
        Command::Replay {
            config: Some(config),
            round: Some(round),
            ..
        } => {
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
            // The rules in force for that round (governance may have changed them since).
            let cfg = fedledger_coordinator::replay::config_for_round(&cfg, &snapshot, round)
                .context("read the rules in force for the round")?;
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
        Command::Replay { .. } => anyhow::bail!("replay needs --config and --round, or --bundle"),
        Command::Status { config, json } => {
            let cfg = load(&config)?;
            let status = fedledger_coordinator::status::of_config(&cfg).with_context(|| {
                format!(
                    "read the state of federation {} (no coordinator answered on its admin \
                     endpoint, so from its state directory {})",
                    cfg.federation,
                    cfg.state_dir.display()
                )
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                println!("{status}");
            }
        }
        Command::Report { config, out } => {
            let cfg = load(&config)?;
            let path = fedledger_coordinator::report::write(&cfg, &out).with_context(|| {
                format!(
                    "write the report of {} from {}",
                    cfg.federation,
                    cfg.state_dir.display()
                )
            })?;
            println!("wrote {}", path.display());
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
            if let Some(n) = fedledger_coordinator::check_governed(&cfg)
                .context("check the file against the federation's governed state")?
            {
                println!(
                    "ok: the file agrees with the governed state ({n} governance entries anchored)"
                );
            }
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

/// Reads and checks a config file. A parse error names the file itself; anything else found
/// wrong is said once, under the file's name.
fn load(path: &std::path::Path) -> anyhow::Result<fedledger_coordinator::FederationConfig> {
    fedledger_coordinator::ConfigFile::load(path)?
        .validate()
        .with_context(|| format!("check {}", path.display()))
}

async fn govern(command: GovernCommand) -> anyhow::Result<()> {
    match command {
        GovernCommand::Submit {
            remote,
            proposal,
            signatures,
        } => {
            let proposal_bytes = std::fs::read(&proposal)
                .with_context(|| format!("read the proposal {}", proposal.display()))?;
            let mut sigs = Vec::new();
            for path in &signatures {
                let text = std::fs::read(path)
                    .with_context(|| format!("read the signature {}", path.display()))?;
                let s: fedledger_ledger::records::GovernorSignature = serde_json::from_slice(&text)
                    .with_context(|| {
                        format!(
                            "parse the signature {} ({{governor, signature}})",
                            path.display()
                        )
                    })?;
                sigs.push(fedledger_proto::GovernorSignature {
                    governor: s.governor,
                    signature: s.signature,
                });
            }
            let mut client = remote.connect().await?;
            let receipt = client
                .submit_proposal(fedledger_proto::ProposalRequest {
                    proposal: proposal_bytes,
                    signatures: sigs,
                })
                .await
                .map_err(|s| anyhow::anyhow!("refused: {}", s.message()))?
                .into_inner();
            println!(
                "anchored as ledger entry {}; applies from round {}",
                receipt.ledger_index, receipt.from_round
            );
        }
        GovernCommand::List { remote } => {
            let mut client = remote.connect().await?;
            let list = client
                .list_proposals(fedledger_proto::ListProposalsRequest {})
                .await
                .map_err(|s| anyhow::anyhow!("refused: {}", s.message()))?
                .into_inner();
            println!("open round: {}", list.open_round);
            println!("previous:   {}", list.head);
            for p in &list.proposals {
                println!(
                    "{} from round {}: {}",
                    if p.applied { "applied" } else { "pending" },
                    p.from_round,
                    String::from_utf8_lossy(&p.proposal)
                );
            }
        }
    }
    Ok(())
}
