//! `fedledger-ledger`: the auditor's command (keygen, status, export, verify, node).
//!
//! A separate package so that the ledger library keeps depending on no other fedledger crate:
//! only this binary joins it with the privacy crate's accountant, which `verify` uses to
//! recompute every contribution's epsilon from its recorded DP parameters.

use clap::Parser as _;
use fedledger_ledger::{records::DpRecord, verify::EpsilonAccountant};
use fedledger_privacy::accountant::{AccountantKind, PoissonGaussian, epsilon_of_history};

/// Recomputes cumulative epsilon with the accountant each record names.
struct PrivacyAccountant;

fn number(field: &str, s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .map_err(|e| format!("dp.{field} {s:?} is not a number: {e}"))
}

impl EpsilonAccountant for PrivacyAccountant {
    fn cumulative_epsilon(&self, history: &[DpRecord]) -> Result<f64, String> {
        let mut runs = Vec::new();
        let mut kind = None;
        let mut delta = None;
        for d in history {
            // A contribution trained without DP noise spends no accounted privacy.
            if d.accountant == "none" || d.steps == 0 {
                continue;
            }
            let k: AccountantKind = d.accountant.parse().map_err(|e| format!("{e}"))?;
            if kind.is_some_and(|p| p != k) {
                return Err("dp.accountant changes between rounds".into());
            }
            kind = Some(k);
            let dl = number("delta", &d.delta)?;
            if delta.is_some_and(|p: f64| p != dl) {
                return Err("dp.delta changes between rounds".into());
            }
            delta = Some(dl);
            runs.push(PoissonGaussian {
                noise_multiplier: number("noise_multiplier", &d.noise_multiplier)?,
                sampling_rate: number("sampling_rate", &d.sampling_rate)?,
                steps: d.steps,
            });
        }
        match (kind, delta) {
            (Some(k), Some(dl)) => epsilon_of_history(k, &runs, dl)
                .map(|r| r.epsilon)
                .map_err(|e| e.to_string()),
            _ => Ok(0.0),
        }
    }
}

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
