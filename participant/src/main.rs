//! `fedledger-participant`: the hospital-side agent.

use std::{io::IsTerminal, path::PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use fedledger_participant::{ParticipantConfig, keys};
use fedledger_privacy::accountant::{self, AccountantKind};

/// Participant agent of a fedledger federation. Runs next to a hospital's private data, trains
/// locally with differential privacy, and only ever dials out to the coordinator.
#[derive(Parser)]
#[command(version, about, long_about = None, arg_required_else_help = true)]
struct Cli {
    /// Print a complete participant.toml, every field with its default and a comment, and exit.
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
    /// Create an Ed25519 key file (mode 0600) and print its public key for enrolment.
    ///
    /// Example: fedledger-participant keygen --out hospital-a.key
    Keygen {
        /// Where to write the key; an existing file is never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the public key of an existing key file.
    Pubkey {
        /// The key file (from `keygen`).
        #[arg(long)]
        key: PathBuf,
    },
    /// Governance: sign a proposal as a governor.
    Govern {
        #[command(subcommand)]
        command: GovernCommand,
    },
    /// Epsilon of DP-SGD (Poisson-subsampled Gaussian) over `steps` steps, or with
    /// --target-epsilon the smallest noise multiplier that meets it.
    ///
    /// Both accountants report an upper bound on the true epsilon under add-or-remove-one
    /// adjacency; pld is tighter, rdp is faster.
    ///
    /// Example: fedledger-participant epsilon --noise-multiplier 1.1 --sampling-rate 0.01 --steps 1000 --delta 1e-5
    ///
    /// Example: fedledger-participant epsilon --accountant pld --json --noise-multiplier 1.1 --sampling-rate 0.01 --steps 1000
    ///
    /// Example: fedledger-participant epsilon --accountant pld --target-epsilon 2 --sampling-rate 0.01 --steps 1000
    Epsilon {
        /// Noise multiplier sigma (noise std / clipping norm).
        #[arg(
            long,
            required_unless_present = "target_epsilon",
            conflicts_with = "target_epsilon"
        )]
        noise_multiplier: Option<f64>,
        /// Instead of --noise-multiplier: print the smallest noise multiplier whose epsilon is
        /// at most this.
        #[arg(long)]
        target_epsilon: Option<f64>,
        /// Poisson sampling rate q (expected batch size / rows).
        #[arg(long)]
        sampling_rate: f64,
        /// Number of DP-SGD steps.
        #[arg(long)]
        steps: u64,
        /// Delta of the (epsilon, delta) guarantee, in (0, 1).
        #[arg(long, default_value_t = 1e-5)]
        delta: f64,
        /// Accountant: rdp (Renyi DP over dp_accounting's default orders, exact fractional
        /// orders), rdp-dp-accounting (the same with dp_accounting 0.6's figures), or pld
        /// (privacy loss distributions: connect-the-dots discretisation at interval 1e-4,
        /// composed by FFT; tighter, slower; no order).
        #[arg(long, default_value = "rdp", value_parser = ["rdp", "rdp-dp-accounting", "pld"])]
        accountant: String,
        /// Print JSON: {"epsilon":..,"delta":..,"accountant":..,"order":..} ("order" is the
        /// attaining Renyi order, null for pld); with --target-epsilon also
        /// "noise_multiplier".
        #[arg(long)]
        json: bool,
    },
    /// Print the privacy budget spent and remaining, from the local store.
    ///
    /// Example: fedledger-participant budget --config participant.toml
    Budget {
        /// Path of participant.toml (its state_dir holds the spends).
        #[arg(long)]
        config: PathBuf,
        /// Print JSON: {"epsilon_spent":..,"epsilon_budget":..,"epsilon_remaining":..,
        /// "delta":..,"releases":..}.
        #[arg(long)]
        json: bool,
    },
    /// Take part in the federation until it finishes. With a `[ledger]` section, every
    /// answered round's receipt is checked; exit status 3 means the ledger did not record what
    /// this hospital signed or was told (an evidence file was written; see the README), 4 that a
    /// receipt was not complete in time, 5 that the federation was refused (genesis digest or
    /// witness quorum). On a terminal a progress bar shows the rounds; otherwise (a file, a
    /// journal) one line per round on standard output says what was answered and how much of
    /// the privacy budget is left.
    ///
    /// Example: fedledger-participant run --config participant.toml
    Run {
        /// Path of participant.toml (`--print-default-config` prints a complete one).
        #[arg(long)]
        config: PathBuf,
        /// The state directory, instead of the file's `state_dir`.
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// After a receipt mismatch stopped the agent and the operator investigated it: clear the
    /// stop so `run` takes part again. The round concerned is not checked again (its evidence
    /// file stays); when the log itself was inconsistent, the last accepted checkpoint is
    /// forgotten as well.
    ///
    /// Example: fedledger-participant resume --config participant.toml
    Resume {
        /// Path of participant.toml (its state_dir holds the stop).
        #[arg(long)]
        config: PathBuf,
    },
    /// Write this hospital's statement: every receipt it holds (entries and tlog-proof files),
    /// the genesis and its receipt, the keys they are checked against, and a summary (rounds,
    /// digests, examples, rewards, epsilon). Anyone checks it offline with `fedledger-ledger
    /// receipts verify DIR`.
    ///
    /// Example: fedledger-participant receipts --config participant.toml --out statement
    Receipts {
        /// Path of participant.toml (its state_dir holds the receipts).
        #[arg(long)]
        config: PathBuf,
        /// Output directory (created).
        #[arg(long)]
        out: PathBuf,
        /// The federation, when the state directory holds receipts of several.
        #[arg(long)]
        federation: Option<String>,
    },
}

#[derive(Subcommand)]
enum GovernCommand {
    /// Sign a proposal (JSON, see the README) with this key: prints what it changes and
    /// writes `{"governor": <public key>, "signature": <base64>}`, an Ed25519 signature over
    /// `fedledger/governance/v1\n<federation>\n<sha256 of the proposal's canonical JSON>\n`.
    ///
    /// Example: fedledger-participant govern sign --key hospital-a.key --proposal enrol-d.json --out sig-a.json
    Sign {
        /// The governor's Ed25519 key file (PKCS#8, as `keygen` writes it).
        #[arg(long)]
        key: PathBuf,
        /// The proposal file (JSON, see the README).
        #[arg(long)]
        proposal: PathBuf,
        /// Where to write the signature (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    fedledger_logging::init_level(cli.log.log_format, cli.log_level.as_deref());
    // Test builds only: named fail-rs points from FAILPOINTS, and crash points from
    // FEDLEDGER_CRASH_AT (a release build refuses the latter rather than ignore it).
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    match fedledger_ledger::crash::crash_points_from_env() {
        Ok(armed) if !armed.is_empty() => {
            tracing::warn!(points = ?armed, "crash points armed (test build)")
        }
        Ok(_) => {}
        Err(e) => {
            eprintln!("Error: {e}");
            return std::process::ExitCode::from(2);
        }
    }
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:?}");
            let code = e
                .chain()
                .find_map(|c| c.downcast_ref::<fedledger_participant::RunError>())
                .map_or(1, fedledger_participant::RunError::exit_code);
            std::process::ExitCode::from(code)
        }
    }
}

/// "rdp accountant, order 8.6" or "pld accountant".
fn describe(report: &accountant::EpsilonReport) -> String {
    match report.order {
        Some(order) => format!("{} accountant, order {order}", report.accountant),
        None => format!("{} accountant", report.accountant),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let Some(command) = cli.command else {
        anyhow::ensure!(cli.print_default_config, "no command given: see --help");
        print!("{}", fedledger_participant::config::DEFAULT_CONFIG);
        return Ok(());
    };
    match command {
        Command::Keygen { out } => {
            let key = keys::generate_key_file(&out)
                .with_context(|| format!("create key file {}", out.display()))?;
            println!("{}", keys::public_key_hex(&key));
            eprintln!(
                "wrote {} (keep it secret); give the public key above to the coordinator operator",
                out.display()
            );
        }
        Command::Govern {
            command: GovernCommand::Sign { key, proposal, out },
        } => {
            let key = keys::load_key(&key).context("load key")?;
            let text = std::fs::read(&proposal)
                .with_context(|| format!("read the proposal {}", proposal.display()))?;
            let signature = fedledger_participant::governance::sign(&key, &text)
                .with_context(|| format!("sign the proposal {}", proposal.display()))?;
            // What is being signed, for the governor's eyes (standard error: the signature
            // alone goes to standard output).
            let p: fedledger_ledger::records::Proposal =
                serde_json::from_slice(&text).context("parse the proposal")?;
            eprintln!(
                "signing for federation {}: from round {}, expires {}, after {}",
                p.federation, p.from_round, p.expires_at, p.previous
            );
            for c in &p.changes {
                eprintln!("  {}", serde_json::to_string(c).context("encode a change")?);
            }
            let json = serde_json::to_string(&signature).context("encode the signature")?;
            match out {
                Some(path) => std::fs::write(&path, format!("{json}\n"))
                    .with_context(|| format!("write {}", path.display()))?,
                None => println!("{json}"),
            }
        }
        Command::Pubkey { key } => {
            let key = keys::load_key(&key).context("load key")?;
            println!("{}", keys::public_key_hex(&key));
        }
        Command::Epsilon {
            noise_multiplier,
            target_epsilon,
            sampling_rate,
            steps,
            delta,
            accountant,
            json,
        } => {
            let kind: AccountantKind = accountant.parse().context("--accountant")?;
            if let Some(target) = target_epsilon {
                let sigma =
                    accountant::noise_multiplier_for(target, sampling_rate, steps, delta, kind)
                        .context("plan the noise multiplier")?;
                let report = accountant::epsilon_for(kind, sigma, sampling_rate, steps, delta)
                    .context("compute epsilon")?;
                if json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "noise_multiplier": sigma,
                            "epsilon": report.epsilon,
                            "delta": report.delta,
                            "accountant": report.accountant.name(),
                            "order": report.order,
                        })
                    );
                } else {
                    println!(
                        "noise multiplier {sigma} gives epsilon {:.6} at delta {delta:e} ({})",
                        report.epsilon,
                        describe(&report)
                    );
                }
            } else {
                let sigma = noise_multiplier.context("--noise-multiplier or --target-epsilon")?;
                let report = accountant::epsilon_for(kind, sigma, sampling_rate, steps, delta)
                    .context("compute epsilon")?;
                if json {
                    println!("{}", serde_json::to_string(&report)?);
                } else {
                    println!(
                        "epsilon {:.6} at delta {delta:e} ({})",
                        report.epsilon,
                        describe(&report)
                    );
                }
            }
        }
        Command::Budget { config, json } => {
            let cfg = ParticipantConfig::load(&config)?;
            let store = fedledger_participant::store::LocalStore::open(&cfg.state_dir)
                .context("open the local store")?;
            let spends = store.spends().context("read spends")?;
            let spent = fedledger_participant::dp::cumulative_epsilon(
                &spends,
                None,
                cfg.privacy.delta,
                cfg.privacy.accountant,
            )
            .context("account the recorded spends")?;
            let limit = cfg.privacy.epsilon_budget;
            let remaining = (limit - spent).max(0.0);
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "epsilon_spent": spent,
                        "epsilon_budget": limit,
                        "epsilon_remaining": remaining,
                        "delta": cfg.privacy.delta,
                        "releases": spends.len(),
                    })
                );
            } else {
                println!(
                    "epsilon spent {spent:.4} of {limit:.4} (remaining {remaining:.4}) at delta {:e}, over {} DP-SGD releases",
                    cfg.privacy.delta,
                    spends.len()
                );
                for s in &spends {
                    println!(
                        "  {} round {}: sigma {:.4}, q {:.4}, {} steps -> cumulative epsilon {:.4}",
                        s.federation,
                        s.round,
                        s.spend.noise_multiplier,
                        s.spend.sampling_rate,
                        s.spend.steps,
                        s.spend.epsilon_total
                    );
                }
            }
        }
        Command::Run { config, state_dir } => {
            let cfg = ParticipantConfig::load_with(&config, state_dir.as_deref())?;
            let rt = tokio::runtime::Runtime::new().context("start the async runtime")?;
            // A bar for a person at a terminal; a line per round for a file or journal.
            let mode = if std::io::stderr().is_terminal() {
                fedledger_participant::ProgressMode::Bar
            } else {
                fedledger_participant::ProgressMode::Lines
            };
            let (report, validated) = rt.block_on(async {
                let validate = async {
                    match cfg.validator.is_some() {
                        true => fedledger_participant::run_validator(&cfg)
                            .await
                            .map(Some)
                            .context("validate the federation's rounds"),
                        false => Ok(None),
                    }
                };
                let contribute = async {
                    match cfg.data.is_some() {
                        true => fedledger_participant::run_showing(cfg.clone(), mode)
                            .await
                            .map(Some)
                            .context("take part in the federation"),
                        false => Ok(None),
                    }
                };
                tokio::try_join!(contribute, validate)
            })?;
            if let Some(v) = validated {
                println!(
                    "{}: validated {} round(s) of federation {}{}",
                    v.name,
                    v.rounds.len(),
                    v.federation,
                    v.rounds
                        .iter()
                        .map(|r| format!(
                            "; round {}: {} candidates, {} coalitions, {:.2} s",
                            r.round, r.candidates, r.coalitions, r.seconds
                        ))
                        .collect::<String>()
                );
            }
            let Some(report) = report else {
                return Ok(());
            };
            let how = match &report.ended {
                fedledger_participant::Ended::Done => "finished".to_owned(),
                fedledger_participant::Ended::CoordinatorGone {
                    round,
                    total,
                    unchecked,
                } => format!(
                    "over (the coordinator stopped serving after round {round} of {total}{})",
                    if unchecked.is_empty() {
                        String::new()
                    } else {
                        format!("; receipts of rounds {unchecked:?} could not be checked")
                    }
                ),
            };
            println!(
                "{}: federation {} {how}; sent {} updates, declined {} rounds, epsilon spent {:.4}, {} receipts checked, {} settlement(s) checked paying {} units",
                report.name,
                report.federation,
                report.rounds_sent.len(),
                report.rounds_declined.len(),
                report.epsilon_spent,
                report.receipts.len(),
                report.settled.len(),
                report.settled.iter().map(|(_, p)| p).sum::<u64>()
            );
        }
        Command::Resume { config } => {
            let cfg = ParticipantConfig::load(&config)?;
            let store = fedledger_participant::store::LocalStore::open(&cfg.state_dir)
                .context("open the local store")?;
            match store.resume().context("clear the stop")? {
                Some(h) => println!(
                    "resumed: round {} of {} ({}) will not be checked again; its evidence stays in {}{}",
                    h.round,
                    h.federation,
                    h.what,
                    h.evidence,
                    if h.inconsistent_log {
                        "; the last accepted checkpoint was forgotten"
                    } else {
                        ""
                    }
                ),
                None => println!("nothing to resume: the agent is not stopped"),
            }
        }
        Command::Receipts {
            config,
            out,
            federation,
        } => {
            let cfg = ParticipantConfig::load(&config)?;
            let key = keys::load_key(&cfg.key).context("load key")?;
            let root = cfg.state_dir.join("receipts");
            let mut dirs: Vec<(String, PathBuf)> = std::fs::read_dir(&root)
                .with_context(|| format!("list {} (no receipts yet?)", root.display()))?
                .filter_map(|e| e.ok())
                .filter(|e| e.path().is_dir())
                .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
                .collect();
            if let Some(f) = &federation {
                let want = fedledger_participant::receipts::federation_dir(f);
                dirs.retain(|(n, _)| *n == want);
            }
            let (_, dir) = match dirs.len() {
                1 => dirs.remove(0),
                0 => anyhow::bail!("no receipts in {}", root.display()),
                _ => anyhow::bail!(
                    "receipts of several federations in {}; choose one with --federation",
                    root.display()
                ),
            };
            let s = fedledger_ledger::receipts::write_statement(
                &dir,
                &keys::public_key_hex(&key),
                &out,
            )
            .with_context(|| format!("write the statement to {}", out.display()))?;
            println!(
                "wrote {}: {} round(s) of {} in {} ({} contribution(s), {} decline(s), reward {}, epsilon {:.6})",
                out.display(),
                s.totals.rounds,
                s.name.as_deref().unwrap_or(&s.participant),
                s.federation,
                s.totals.contributions,
                s.totals.declines,
                s.totals.reward,
                s.totals.epsilon_micro as f64 / 1e6
            );
        }
    }
    Ok(())
}
