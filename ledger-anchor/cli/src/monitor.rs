//! `fedledger-ledger monitor URL`: follows a federation's tlog-tiles API with the ledger's
//! [`Monitor`], prints each checkpoint it accepts, and on the first alert prints a line naming
//! the evidence (and the evidence itself), keeps it under `<state>/alerts/`, and exits with
//! status [`ALERT_EXIT`]. A state directory that holds an alert refuses to go on until someone
//! has looked (move the alert file away).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use fedledger_ledger::monitor::{Monitor, MonitorConfig, MonitorError, Polled, recorded_alerts};
use fedledger_ledger::note::VerifierKey;
use fedledger_ledger::verify::EpsilonAccountant;

/// Exit status of `monitor` when it raises an alert.
pub const ALERT_EXIT: i32 = 3;

/// The error `run` returns when the monitor raised an alert (`main` exits with
/// [`ALERT_EXIT`]).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Alerted(pub String);

/// What `fedledger-ledger monitor` is told.
#[derive(Debug, Clone)]
pub struct MonitorArgs {
    /// The tlog-tiles URL prefix.
    pub url: String,
    /// The state directory.
    pub state: PathBuf,
    /// The log's verifier key.
    pub log_key: String,
    /// The genesis digest, when known.
    pub genesis: Option<String>,
    /// Seconds between polls.
    pub interval: Duration,
    /// Poll once and exit.
    pub once: bool,
}

/// Runs the monitor until Ctrl-C (or once).
pub fn run(args: MonitorArgs, accountant: Option<&dyn EpsilonAccountant>) -> anyhow::Result<()> {
    let log_key = VerifierKey::parse(&args.log_key).context("--log-key")?;
    let earlier = recorded_alerts(&args.state).context("read earlier alerts")?;
    if let Some((path, alert)) = earlier.first() {
        eprintln!("{alert}");
        return Err(Alerted(format!(
            "ALERT raised before: {} (evidence kept; move it away once it has been dealt with)",
            path.display()
        ))
        .into());
    }
    let monitor = Monitor::open(MonitorConfig {
        url: args.url.clone(),
        state: args.state.clone(),
        log_key,
        genesis_sha256: args.genesis.clone(),
    })
    .context("open the monitor's state")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start runtime")?;
    println!(
        "monitoring {} as {} (state {}, holding {} entries)",
        args.url,
        monitor.log().origin(),
        args.state.display(),
        monitor.log().size()
    );
    rt.block_on(async {
        loop {
            match monitor.poll(accountant, Some(&crate::ValuationRewards)).await {
                Ok(Polled::Advanced {
                    from,
                    to,
                    cosigners,
                }) => println!(
                    "accepted size {to} (from {from}): consistent, {cosigners} witness cosignature(s), entries verified"
                ),
                Ok(Polled::Behind { served, held }) => {
                    println!("served size {served}, behind the {held} accepted: consistent")
                }
                Ok(Polled::Unchanged { .. } | Polled::Empty) => {}
                Err(MonitorError::Alert(alert)) => {
                    eprintln!("{alert}");
                    let kept = recorded_alerts(&args.state)
                        .ok()
                        .and_then(|a| a.last().map(|(p, _)| p.display().to_string()))
                        .unwrap_or_default();
                    let first_line = alert.to_string().lines().next().unwrap_or("").to_owned();
                    return Err(Alerted(format!("{first_line} (evidence: {kept})")).into());
                }
                Err(MonitorError::Failed(e)) => {
                    if args.once {
                        return Err(anyhow::Error::new(e).context(format!("poll {}", args.url)));
                    }
                    tracing::warn!(error = %e, "poll failed; retrying");
                }
            }
            if args.once {
                return Ok(());
            }
            tokio::select! {
                r = tokio::signal::ctrl_c() => { r.context("wait for Ctrl-C")?; return Ok(()); }
                _ = tokio::time::sleep(args.interval) => {}
            }
        }
    })
}
