//! The participant's privacy gate: what a round would cost, whether it fits the local budget,
//! and DP-SGD training with noise from a cryptographic generator.

use fedledger_model::{Dataset, DpSgdConfig, GradientNoise, ModelSpec, TrainConfig, TrainOutcome};
use fedledger_privacy::{
    AccountantKind, PoissonGaussian, accountant::epsilon_of_history, noise::SecureGaussian,
};
use fedledger_proto as pb;
use rand::{SeedableRng, rngs::SysRng};

use crate::{
    config::PrivacySection,
    source::{SourceError, Spend},
    store::SpendRecord,
};

/// The decision for one round.
#[derive(Debug)]
pub enum Plan {
    /// Train without noise (only when the participant allows it).
    NonPrivate,
    /// Train with DP-SGD; `spend` is what it costs.
    Private { dp: DpSgdConfig, spend: Spend },
    /// Do not train; the reason is sent to the coordinator.
    Decline(String),
}

/// Cumulative epsilon of the recorded releases plus an optional next one, at `delta`, by
/// `accountant`.
pub fn cumulative_epsilon(
    spent: &[SpendRecord],
    next: Option<(f64, f64, u64)>,
    delta: f64,
    accountant: AccountantKind,
) -> Result<f64, SourceError> {
    let history: Vec<PoissonGaussian> = spent
        .iter()
        .map(|s| (s.noise_multiplier, s.sampling_rate, s.steps))
        .chain(next)
        .map(|(noise_multiplier, sampling_rate, steps)| PoissonGaussian {
            noise_multiplier,
            sampling_rate,
            steps,
        })
        .collect();
    if history.is_empty() {
        return Ok(0.0);
    }
    epsilon_of_history(accountant, &history, delta)
        .map(|r| r.epsilon)
        .map_err(|e| SourceError::Privacy(e.to_string()))
}

/// Decide whether (and how) to train this round within the budget.
///
/// The multiplier accounted for is the sampler's effective one: its standard deviation over the
/// clipping norm plus the grid-rounding charge on `num_params` coordinates, rounded down, so the
/// reported epsilon is never below the truth.
pub fn plan(
    hyper: &pb::HyperParameters,
    n: usize,
    num_params: usize,
    privacy: &PrivacySection,
    spent: &[SpendRecord],
) -> Result<Plan, SourceError> {
    if hyper.noise_multiplier <= 0.0 || hyper.clip_norm <= 0.0 {
        if privacy.require_dp {
            return Ok(Plan::Decline(
                "task asks for training without DP noise; this participant requires DP-SGD".into(),
            ));
        }
        return Ok(Plan::NonPrivate);
    }
    if n == 0 {
        return Ok(Plan::Decline("no local training data".into()));
    }
    // Exactly the schedule the trainer will follow.
    let (q, t) = DpSgdConfig::schedule(n, hyper.batch_size as usize, hyper.local_epochs as usize);
    let sampler = SecureGaussian::new(hyper.noise_multiplier * hyper.clip_norm, None)
        .map_err(|e| SourceError::Privacy(e.to_string()))?;
    let sigma = sampler.effective_noise_multiplier(hyper.clip_norm, num_params);
    let accountant = privacy.accountant;
    if let Some(other) = spent.iter().find(|s| s.accountant != accountant.name()) {
        return Ok(Plan::Decline(format!(
            "the local store holds spends accounted by {:?} (round {}) but the configured \
             accountant is {accountant}; a participant's accountant cannot change",
            other.accountant, other.round
        )));
    }
    let before = cumulative_epsilon(spent, None, privacy.delta, accountant)?;
    let after = cumulative_epsilon(spent, Some((sigma, q, t)), privacy.delta, accountant)?;
    if after > privacy.epsilon_budget {
        return Ok(Plan::Decline(format!(
            "privacy budget exhausted: spent epsilon {before:.4}, this round would bring it to \
             {after:.4}, limit {:.4} (delta {:e})",
            privacy.epsilon_budget, privacy.delta
        )));
    }
    Ok(Plan::Private {
        dp: DpSgdConfig {
            clip_norm: hyper.clip_norm,
            noise_multiplier: hyper.noise_multiplier,
        },
        spend: Spend {
            noise_multiplier: sigma,
            sampling_rate: q,
            steps: t,
            delta: privacy.delta,
            epsilon_total: after,
            epsilon_round: (after - before).max(0.0),
            accountant: accountant.name().into(),
        },
    })
}

/// Gaussian noise from the privacy crate's exact sampler over ChaCha20 seeded by the OS.
struct SecureNoise {
    rng: chacha20::ChaCha20Rng,
}

impl GradientNoise for SecureNoise {
    fn add_gaussian(&mut self, values: &mut [f32], std_dev: f64) {
        let sampler = SecureGaussian::new(std_dev, None).expect("std_dev validated positive");
        sampler
            .add_noise_f32(values, &mut self.rng)
            .expect("gradients are finite");
    }
}

/// Train locally; with `cfg.dp` set, DP-SGD with secure noise and CSPRNG batch sampling.
pub fn train(
    spec: &ModelSpec,
    global: &[f32],
    data: &Dataset,
    cfg: &TrainConfig,
) -> Result<TrainOutcome, SourceError> {
    let mut rng = chacha20::ChaCha20Rng::try_from_rng(&mut SysRng)
        .map_err(|e| SourceError::Privacy(format!("OS randomness unavailable: {e}")))?;
    let outcome = if cfg.dp.is_some() {
        let mut noise = SecureNoise {
            rng: chacha20::ChaCha20Rng::try_from_rng(&mut SysRng)
                .map_err(|e| SourceError::Privacy(format!("OS randomness unavailable: {e}")))?,
        };
        fedledger_model::train(spec, global, data, cfg, &mut rng, Some(&mut noise))?
    } else {
        fedledger_model::train(spec, global, data, cfg, &mut rng, None)?
    };
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hyper() -> pb::HyperParameters {
        pb::HyperParameters {
            local_epochs: 1,
            batch_size: 10,
            learning_rate: 0.1,
            clip_norm: 1.0,
            noise_multiplier: 1.1,
        }
    }

    fn spend_of(plan: Plan) -> Spend {
        match plan {
            Plan::Private { spend, .. } => spend,
            other => panic!("expected a private round, got {other:?}"),
        }
    }

    fn privacy(accountant: AccountantKind) -> PrivacySection {
        PrivacySection {
            accountant,
            ..PrivacySection::default()
        }
    }

    #[test]
    fn the_configured_accountant_gates_and_is_recorded() {
        let pld = spend_of(plan(&hyper(), 1000, 10, &privacy(AccountantKind::Pld), &[]).unwrap());
        let rdp = spend_of(plan(&hyper(), 1000, 10, &privacy(AccountantKind::Rdp), &[]).unwrap());
        assert_eq!(pld.accountant, "pld");
        assert_eq!(rdp.accountant, "rdp");
        let run = (pld.noise_multiplier, pld.sampling_rate, pld.steps);
        let want = cumulative_epsilon(&[], Some(run), 1e-5, AccountantKind::Pld).unwrap();
        assert_eq!(pld.epsilon_total, want);
        assert!(pld.epsilon_total < rdp.epsilon_total, "{pld:?} vs {rdp:?}");
    }

    #[test]
    fn spends_of_another_accountant_decline_the_round() {
        let earlier = SpendRecord {
            round: 1,
            noise_multiplier: 1.1,
            sampling_rate: 0.01,
            steps: 100,
            delta: 1e-5,
            epsilon_total: 0.5,
            accountant: "rdp".into(),
            federation: "f".into(),
        };
        let p = plan(
            &hyper(),
            1000,
            10,
            &privacy(AccountantKind::Pld),
            &[earlier],
        )
        .unwrap();
        assert!(
            matches!(&p, Plan::Decline(reason) if reason.contains("cannot change")),
            "{p:?}"
        );
    }

    #[test]
    fn config_names_the_accountant_and_defaults_to_rdp() {
        let parse = |extra: &str| {
            toml::from_str::<PrivacySection>(&format!(
                "epsilon_budget = 8.0\ndelta = 1e-5\n{extra}"
            ))
        };
        assert_eq!(parse("").unwrap().accountant, AccountantKind::Rdp);
        assert_eq!(
            parse("accountant = \"pld\"").unwrap().accountant,
            AccountantKind::Pld
        );
        assert!(parse("accountant = \"gdp\"").is_err());
    }
}
