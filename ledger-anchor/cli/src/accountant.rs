//! The privacy crate's accountant behind the ledger's [`EpsilonAccountant`] hook, so `verify`
//! recomputes every contribution's epsilon from its recorded DP parameters, with exactly the
//! function a participant uses to account for its own releases.

use fedledger_ledger::verify::{EpsilonAccountant, Run};
use fedledger_privacy::accountant::{AccountantKind, PoissonGaussian, epsilon_of_history};

/// Recomputes cumulative epsilon with the accountant a record names (`rdp`,
/// `rdp-dp-accounting` or `pld`).
pub struct PrivacyAccountant;

impl EpsilonAccountant for PrivacyAccountant {
    fn cumulative_epsilon(
        &self,
        accountant: &str,
        delta: f64,
        runs: &[Run],
    ) -> Result<f64, String> {
        let kind: AccountantKind = accountant.parse().map_err(|e| format!("{e}"))?;
        if runs.is_empty() {
            return Ok(0.0);
        }
        let runs: Vec<PoissonGaussian> = runs
            .iter()
            .map(|r| PoissonGaussian {
                noise_multiplier: r.noise_multiplier,
                sampling_rate: r.sampling_rate,
                steps: r.steps,
            })
            .collect();
        epsilon_of_history(kind, &runs, delta)
            .map(|r| r.epsilon)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recomputes_the_privacy_crate_epsilon() {
        let run = Run {
            noise_multiplier: 1.1,
            sampling_rate: 0.01,
            steps: 1000,
        };
        let got = PrivacyAccountant
            .cumulative_epsilon("rdp", 1e-5, &[run])
            .unwrap();
        let want =
            fedledger_privacy::accountant::epsilon_for(AccountantKind::Rdp, 1.1, 0.01, 1000, 1e-5)
                .unwrap()
                .epsilon;
        assert_eq!(got, want);
        assert_eq!(
            PrivacyAccountant
                .cumulative_epsilon("pld", 1e-5, &[])
                .unwrap(),
            0.0
        );
        assert!(
            PrivacyAccountant
                .cumulative_epsilon("pld-typo", 1e-5, &[run])
                .is_err()
        );
        let bad = Run {
            noise_multiplier: f64::NAN,
            ..run
        };
        assert!(
            PrivacyAccountant
                .cumulative_epsilon("rdp", 1e-5, &[bad])
                .is_err()
        );
    }
}
