//! `fedledger-ledger`: the auditor's command (keygen, status, export, verify, receipts, monitor, node).

use clap::Parser as _;
use fedledger_ledger_cli::{Cli, PrivacyAccountant, run};

fn main() -> anyhow::Result<()> {
    match run_main() {
        Err(e)
            if e.downcast_ref::<fedledger_ledger_cli::monitor::Alerted>()
                .is_some() =>
        {
            eprintln!("{e}");
            std::process::exit(fedledger_ledger_cli::monitor::ALERT_EXIT);
        }
        r => r,
    }
}

fn run_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(log_filter(cli.log_level.as_deref()))
        .with_writer(std::io::stderr)
        .init();
    run(cli, Some(&PrivacyAccountant))
}

/// `--log-level` if given, else `RUST_LOG`, else `info`.
fn log_filter(flag: Option<&str>) -> tracing_subscriber::EnvFilter {
    match flag {
        Some(f) => tracing_subscriber::EnvFilter::new(f),
        None => {
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into())
        }
    }
}
