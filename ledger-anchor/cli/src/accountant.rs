//! The privacy crate's accountant behind the ledger's [`EpsilonAccountant`] hook, so `verify`
//! recomputes every contribution's epsilon from its recorded DP parameters.

use fedledger_ledger::{records::DpRecord, verify::EpsilonAccountant};
use fedledger_privacy::accountant::{AccountantKind, PoissonGaussian, epsilon_of_history};

/// Recomputes cumulative epsilon with the accountant each record names (`rdp`,
/// `rdp-dp-accounting` or `pld`); contributions trained without DP (`none`) spend nothing.
pub struct PrivacyAccountant;

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

#[cfg(test)]
mod tests {
    use super::*;

    fn dp(sigma: &str, q: &str, steps: u64, accountant: &str) -> DpRecord {
        DpRecord {
            noise_multiplier: sigma.into(),
            sampling_rate: q.into(),
            steps,
            delta: "0.00001".into(),
            accountant: accountant.into(),
        }
    }

    #[test]
    fn recomputes_the_privacy_crate_epsilon() {
        let h = vec![dp("1.1", "0.01", 1000, "rdp"), dp("none", "0", 0, "none")];
        let got = PrivacyAccountant.cumulative_epsilon(&h).unwrap();
        let want =
            fedledger_privacy::accountant::epsilon_for(AccountantKind::Rdp, 1.1, 0.01, 1000, 1e-5)
                .unwrap()
                .epsilon;
        assert_eq!(got, want);
        assert_eq!(PrivacyAccountant.cumulative_epsilon(&h[1..]).unwrap(), 0.0);
        assert!(
            PrivacyAccountant
                .cumulative_epsilon(&[dp("x", "0.1", 1, "rdp")])
                .is_err()
        );
        assert!(
            PrivacyAccountant
                .cumulative_epsilon(&[dp("1", "0.1", 1, "pld-typo")])
                .is_err()
        );
    }
}
