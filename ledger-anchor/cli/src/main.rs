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
    fedledger_logging::init_level(cli.log.log_format, cli.log_level.as_deref());
    run(cli, Some(&PrivacyAccountant))
}
