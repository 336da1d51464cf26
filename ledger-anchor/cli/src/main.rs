//! `fedledger-ledger`: the auditor's command (keygen, status, export, verify, node).

use clap::Parser as _;
use fedledger_ledger_cli::PrivacyAccountant;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    fedledger_ledger::cli::run(
        fedledger_ledger::cli::Cli::parse(),
        Some(&PrivacyAccountant),
    )
}
