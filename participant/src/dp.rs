//! The participant's privacy gate: what a round would cost, whether it fits the local budget,
//! and DP-SGD training with noise from a cryptographic generator.

use std::sync::mpsc;

use fedledger_ledger::records::PrivacyObject;
use fedledger_model::{
    Dataset, DpSgdConfig, GradientNoise, ModelError, ModelSpec, TrainConfig, TrainOutcome,
};
use fedledger_privacy::{
    AccountantKind, LatticeNoise, PoissonGaussian, PrivacySpend, SecureGaussian,
    accountant::epsilon_of_history,
};
use fedledger_proto as pb;
use rand::{SeedableRng, rngs::SysRng};

use crate::{
    client::hyper_out_of_bounds,
    config::PrivacySection,
    plan::{PlanBounds, PlanInputs, Planner},
    store::SpendRecord,
    work::SourceError,
};

/// The decision for one round.
#[derive(Debug)]
pub enum Plan {
    /// Train without noise (only when the participant allows it).
    NonPrivate,
    /// Train with DP-SGD at expected batch size `batch_size` for `steps` steps (`None`: the
    /// task's epochs); `spend` is what it costs and describes exactly that run.
    Private {
        dp: DpSgdConfig,
        batch_size: usize,
        steps: Option<u64>,
        spend: PrivacySpend,
    },
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
        .map(|s| s.spend.run())
        .chain(
            next.map(|(noise_multiplier, sampling_rate, steps)| PoissonGaussian {
                noise_multiplier,
                sampling_rate,
                steps,
            }),
        )
        .collect();
    if history.is_empty() {
        return Ok(0.0);
    }
    epsilon_of_history(accountant, &history, delta)
        .map(|r| r.epsilon)
        .map_err(|e| SourceError::Privacy(e.to_string()))
}

/// Decide whether (and how) to train this round within the budget, before anything is trained.
///
/// With `task.planning` set, the round is private when the task's clipping norm is positive and
/// this participant plans its own batch size, steps and noise multiplier within the task's
/// bounds (`planner`, see [`crate::plan`]); otherwise it trains with the task's batch size,
/// epochs and noise multiplier (private when both the norm and the multiplier are positive).
/// Either way the plan depends only on the row count `n`, the model size, the budget, what was
/// spent and the task, never on the data's values.
///
/// The task's accountants (empty: not stated, as older coordinators send it) must include the
/// configured one: otherwise a private round is declined, before anything is trained or spent,
/// since the spend this participant would report could not be recorded as it was accounted.
///
/// The multiplier accounted for is the sampler's effective one: its standard deviation over the
/// clipping norm plus the grid-rounding charge on `num_params` coordinates. It, the sampling rate
/// and delta are then rounded as the ledger records them (noise down, sampling rate up:
/// [`PrivacyObject::conservative`]), and every epsilon is computed from the rounded figures, so
/// the reported epsilon is never below the truth and `verify` recomputes it exactly.
///
/// The budget gate counts every release in `spent` (the budget is the patients', whatever the
/// federation); the spend reported to the task's federation counts only its releases.
pub fn plan(
    planner: &mut Planner,
    task: &pb::TaskHeader,
    n: usize,
    num_params: usize,
    privacy: &PrivacySection,
    spent: &[SpendRecord],
) -> Result<Plan, SourceError> {
    let hyper = task
        .hyper
        .ok_or_else(|| SourceError::Task("task has no hyper-parameters".into()))?;
    if let Some(reason) = hyper_out_of_bounds(&hyper) {
        return Ok(Plan::Decline(reason));
    }
    let private = match &task.planning {
        Some(_) => hyper.clip_norm > 0.0,
        None => hyper.noise_multiplier > 0.0 && hyper.clip_norm > 0.0,
    };
    if !private {
        if privacy.require_dp {
            return Ok(Plan::Decline(
                "task asks for training without DP noise; this participant requires DP-SGD".into(),
            ));
        }
        return Ok(Plan::NonPrivate);
    }
    if let Some(reason) = unrecorded_accountant(privacy.accountant, &task.accountants) {
        return Ok(Plan::Decline(reason));
    }
    if n == 0 {
        return Ok(Plan::Decline("no local training data".into()));
    }
    let accountant = privacy.accountant;
    if let Some(other) = spent.iter().find(|s| s.spend.accountant != accountant) {
        return Ok(Plan::Decline(format!(
            "the local store holds spends accounted by {} (round {}) but the configured \
             accountant is {accountant}; a participant's accountant cannot change",
            other.spend.accountant, other.round
        )));
    }
    // Delta as the ledger records it; every epsilon below is at this delta.
    let delta = PrivacyObject::recorded_delta(privacy.delta);
    let before = cumulative_epsilon(spent, None, delta, accountant)?;
    let exhausted = |after: String| {
        Plan::Decline(format!(
            "privacy budget exhausted: spent epsilon {before:.4}, {after}, limit {:.4} (delta {:e})",
            privacy.epsilon_budget, privacy.delta
        ))
    };
    // The run: (sampler multiplier, its figures as recorded, batch size, planned steps).
    let (z, recorded, batch_size, steps) = match &task.planning {
        Some(bounds) => {
            let bounds = match PlanBounds::from_task(bounds) {
                Ok(b) => b,
                Err(e) => return Ok(Plan::Decline(e.to_string())),
            };
            let history: Vec<PoissonGaussian> = spent.iter().map(|s| s.spend.run()).collect();
            let planned = planner.plan(&PlanInputs {
                rows: n,
                num_params,
                clip_norm: hyper.clip_norm,
                round: task.round,
                bounds,
                history: &history,
                epsilon_budget: privacy.epsilon_budget,
                delta,
                accountant,
            })?;
            let Some(p) = planned else {
                return Ok(exhausted(
                    "no plan within the task's bounds fits another round".into(),
                ));
            };
            // The planner accounted the figures as recorded already: rounding them again
            // could move the sampling rate up one more nano-unit than the trainer's.
            let run = p.run();
            (
                p.noise_multiplier,
                PrivacyObject::from_rounded(
                    accountant.name(),
                    run.noise_multiplier,
                    run.sampling_rate,
                    run.steps,
                    privacy.delta,
                    0.0,
                    0.0,
                ),
                p.batch_size,
                Some(p.steps),
            )
        }
        None => {
            // Exactly the schedule the trainer will follow.
            let batch_size = hyper.batch_size as usize;
            let (q, t) = DpSgdConfig::schedule(n, batch_size, hyper.local_epochs as usize);
            let sampler = SecureGaussian::new(hyper.noise_multiplier * hyper.clip_norm, None)
                .map_err(|e| SourceError::Privacy(e.to_string()))?;
            let sigma = sampler.effective_noise_multiplier(hyper.clip_norm, num_params);
            let recorded =
                PrivacyObject::conservative(accountant.name(), sigma, q, t, privacy.delta);
            (hyper.noise_multiplier, recorded, batch_size, None)
        }
    };
    // Accounted for as recorded.
    let t = recorded.steps;
    let next = Some((recorded.noise_multiplier(), recorded.sampling_rate(), t));
    let after = cumulative_epsilon(spent, next, delta, accountant)?;
    if after > privacy.epsilon_budget {
        return Ok(exhausted(format!(
            "this round would bring it to {after:.4}"
        )));
    }
    let here: Vec<SpendRecord> = spent
        .iter()
        .filter(|s| s.federation == task.federation)
        .cloned()
        .collect();
    let here_before = cumulative_epsilon(&here, None, delta, accountant)?;
    let here_after = cumulative_epsilon(&here, next, delta, accountant)?;
    Ok(Plan::Private {
        dp: DpSgdConfig {
            clip_norm: hyper.clip_norm,
            noise_multiplier: z,
        },
        batch_size,
        steps,
        spend: PrivacySpend {
            noise_multiplier: recorded.noise_multiplier(),
            sampling_rate: recorded.sampling_rate(),
            steps: t,
            delta,
            epsilon_total: here_after,
            epsilon_round: (here_after - here_before).max(0.0),
            accountant,
        },
    })
}

/// The privacy object a spend is recorded as (its figures are already rounded as recorded).
pub fn privacy_object(spend: Option<&PrivacySpend>) -> PrivacyObject {
    match spend {
        None => PrivacyObject::none(),
        Some(s) => PrivacyObject::from_rounded(
            s.accountant.name(),
            s.noise_multiplier,
            s.sampling_rate,
            s.steps,
            s.delta,
            s.epsilon_total,
            s.epsilon_round,
        ),
    }
}

/// Why a round must be declined when the federation states the accountants it records and
/// `mine` is not among them; `None` when it is, or when the list is empty (not stated).
fn unrecorded_accountant(mine: AccountantKind, federation: &[String]) -> Option<String> {
    if federation.is_empty() || federation.iter().any(|name| name == mine.name()) {
        return None;
    }
    Some(format!(
        "this participant accounts privacy with {mine}; the federation records only {}",
        federation.join(", ")
    ))
}

/// DP-SGD noise from the privacy crate's exact sampler, drawn one step ahead on a worker thread.
///
/// The noise of a step does not depend on the data, so while the model computes step `t`'s
/// clipped gradients on one core, the worker draws step `t + 1`'s noise on the other; the step
/// itself only rounds to the grid and adds. Both generators are ChaCha20 seeded from the
/// operating system. The sampler (its tables cost tens of microseconds) is built once per
/// standard deviation, not once per step. If the worker thread is gone, the noise is drawn
/// inline instead: never skipped.
pub struct SecureNoise {
    sampler: Option<SecureGaussian>,
    inline_rng: chacha20::ChaCha20Rng,
    worker: Option<NoiseWorker>,
}

/// Below this many coordinates the noise is drawn inline: a draw takes less time than handing
/// the work to the worker thread and back.
const PREFETCH_MIN_LEN: usize = 2048;

struct NoiseWorker {
    requests: mpsc::Sender<(SecureGaussian, usize)>,
    results: mpsc::Receiver<LatticeNoise>,
    /// The request in flight: the standard deviation and length it was made for.
    pending: Option<(f64, usize)>,
}

impl SecureNoise {
    /// A noise source with generators seeded from the operating system and a prefetch worker.
    pub fn from_os() -> Result<Self, SourceError> {
        Self::new(os_chacha()?, Some(os_chacha()?))
    }

    /// A noise source over the given generators; `worker_rng: None` draws every step inline.
    /// (Tests and benchmarks pass seeded generators; production uses [`Self::from_os`].)
    pub fn new(
        inline_rng: chacha20::ChaCha20Rng,
        worker_rng: Option<chacha20::ChaCha20Rng>,
    ) -> Result<Self, SourceError> {
        let worker = match worker_rng {
            None => None,
            Some(mut rng) => {
                let (requests, jobs) = mpsc::channel::<(SecureGaussian, usize)>();
                let (done, results) = mpsc::channel();
                std::thread::Builder::new()
                    .name("dp-noise".into())
                    .spawn(move || {
                        for (sampler, len) in jobs {
                            if done.send(sampler.draw(len, &mut rng)).is_err() {
                                break;
                            }
                        }
                    })
                    .map_err(|e| SourceError::Privacy(format!("noise worker thread: {e}")))?;
                Some(NoiseWorker {
                    requests,
                    results,
                    pending: None,
                })
            }
        };
        Ok(Self {
            sampler: None,
            inline_rng,
            worker,
        })
    }

    fn sampler_for(&mut self, std_dev: f64) -> Result<SecureGaussian, ModelError> {
        match &self.sampler {
            Some(s) if s.std_dev() == std_dev => Ok(s.clone()),
            _ => {
                let s = SecureGaussian::new(std_dev, None)
                    .map_err(|e| ModelError::Noise(format!("std dev {std_dev}: {e}")))?;
                self.sampler = Some(s.clone());
                Ok(s)
            }
        }
    }

    /// This step's noise: the prefetched draw if it was made for this shape, else a fresh one;
    /// then the next step's draw is requested.
    fn next_noise(&mut self, sampler: &SecureGaussian, std_dev: f64, len: usize) -> LatticeNoise {
        if len < PREFETCH_MIN_LEN {
            return sampler.draw(len, &mut self.inline_rng);
        }
        if let Some(worker) = &mut self.worker {
            // A draw made for another shape is discarded, never reused.
            let ready = worker.pending.take().and_then(|shape| {
                let noise = worker.results.recv().ok()?;
                (shape == (std_dev, len)).then_some(noise)
            });
            let noise = ready.or_else(|| {
                worker.requests.send((sampler.clone(), len)).ok()?;
                worker.results.recv().ok()
            });
            if worker.requests.send((sampler.clone(), len)).is_ok() {
                worker.pending = Some((std_dev, len));
            }
            if let Some(noise) = noise {
                return noise;
            }
            self.worker = None; // the worker is gone: draw inline from now on
        }
        sampler.draw(len, &mut self.inline_rng)
    }
}

impl GradientNoise for SecureNoise {
    fn add_gaussian(&mut self, values: &mut [f32], std_dev: f64) -> Result<(), ModelError> {
        let sampler = self.sampler_for(std_dev)?;
        let noise = self.next_noise(&sampler, std_dev, values.len());
        sampler
            .apply_f32(values, &noise)
            .map_err(|e| ModelError::Noise(e.to_string()))
    }
}

fn os_chacha() -> Result<chacha20::ChaCha20Rng, SourceError> {
    chacha20::ChaCha20Rng::try_from_rng(&mut SysRng)
        .map_err(|e| SourceError::Privacy(format!("OS randomness unavailable: {e}")))
}

/// Train locally; with `cfg.dp` set, DP-SGD with secure noise and CSPRNG batch sampling.
pub fn train(
    spec: &ModelSpec,
    global: &[f32],
    data: &Dataset,
    cfg: &TrainConfig,
) -> Result<TrainOutcome, SourceError> {
    let mut rng = os_chacha()?;
    let outcome = if cfg.dp.is_some() {
        let mut noise = SecureNoise::from_os()?;
        fedledger_model::train(spec, global, data, cfg, &mut rng, Some(&mut noise))?
    } else {
        fedledger_model::train(spec, global, data, cfg, &mut rng, None)?
    };
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn seeded(seed: u64) -> chacha20::ChaCha20Rng {
        chacha20::ChaCha20Rng::seed_from_u64(seed)
    }

    fn sd(v: &[f32]) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let n = v.len() as f64;
        (v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / n).sqrt()
    }

    #[test]
    fn prefetched_noise_is_deterministic_fresh_each_step_and_follows_the_std_dev() {
        let run = || {
            let mut noise = SecureNoise::new(seeded(1), Some(seeded(2))).unwrap();
            let mut steps = Vec::new();
            for std_dev in [1.0, 1.0, 1.0, 50.0, 50.0] {
                let mut g = vec![0.0f32; 5000];
                noise.add_gaussian(&mut g, std_dev).unwrap();
                steps.push(g);
            }
            steps
        };
        let a = run();
        assert_eq!(a, run(), "same generators, same noise");
        assert_ne!(a[0], a[1], "every step gets fresh noise");
        assert_ne!(a[1], a[2]);
        for (i, step) in a.iter().enumerate() {
            let want = if i < 3 { 1.0 } else { 50.0 };
            // 5000 draws: the sample sd is within 6% of the truth far beyond 6 standard errors.
            assert!(
                (sd(step) / want - 1.0).abs() < 0.06,
                "step {i}: sd {} for std dev {want}",
                sd(step)
            );
        }
    }

    #[test]
    fn small_vectors_and_a_missing_worker_draw_inline() {
        let mut with_worker = SecureNoise::new(seeded(3), Some(seeded(4))).unwrap();
        let mut inline = SecureNoise::new(seeded(3), None).unwrap();
        let (mut a, mut b) = (vec![0.5f32; 31], vec![0.5f32; 31]);
        with_worker.add_gaussian(&mut a, 2.0).unwrap();
        inline.add_gaussian(&mut b, 2.0).unwrap();
        // Below the prefetch size both draw from the inline generator: identical.
        assert_eq!(a, b);
        assert!(a.iter().any(|&x| x != 0.5));
        let mut big = vec![0.0f32; 4096];
        inline.add_gaussian(&mut big, 1.0).unwrap();
        assert!((sd(&big) - 1.0).abs() < 0.08, "sd {}", sd(&big));
    }

    fn hyper() -> pb::HyperParameters {
        pb::HyperParameters {
            local_epochs: 1,
            batch_size: 10,
            learning_rate: 0.1,
            clip_norm: 1.0,
            noise_multiplier: 1.1,
        }
    }

    /// A task header with these hyper-parameters and accountants (no planning: the task's
    /// settings as given).
    fn task(hyper: pb::HyperParameters, accountants: &[String]) -> pb::TaskHeader {
        pb::TaskHeader {
            round: 1,
            federation: "f".into(),
            hyper: Some(hyper),
            accountants: accountants.to_vec(),
            ..Default::default()
        }
    }

    fn spend_of(plan: Plan) -> PrivacySpend {
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

    /// The spend of a first round (1000 rows, 10 parameters) gated by `accountant`.
    fn fresh_spend(accountant: AccountantKind) -> PrivacySpend {
        spend_of(
            plan(
                &mut Planner::default(),
                &task(hyper(), &[]),
                1000,
                10,
                &privacy(accountant),
                &[],
            )
            .unwrap(),
        )
    }

    #[test]
    fn the_configured_accountant_gates_and_is_recorded() {
        let pld = fresh_spend(AccountantKind::Pld);
        let rdp = fresh_spend(AccountantKind::Rdp);
        assert_eq!(pld.accountant, AccountantKind::Pld);
        assert_eq!(rdp.accountant, AccountantKind::Rdp);
        let run = (pld.noise_multiplier, pld.sampling_rate, pld.steps);
        let want = cumulative_epsilon(&[], Some(run), 1e-5, AccountantKind::Pld).unwrap();
        assert_eq!(pld.epsilon_total, want);
        assert!(pld.epsilon_total < rdp.epsilon_total, "{pld:?} vs {rdp:?}");
    }

    #[test]
    fn the_budget_counts_every_federation_the_report_only_this_one() {
        let spend = |federation: &str, round| SpendRecord {
            federation: federation.into(),
            round,
            spend: spend_of(
                plan(
                    &mut Planner::default(),
                    &pb::TaskHeader {
                        federation: federation.into(),
                        ..task(hyper(), &[])
                    },
                    1000,
                    10,
                    &privacy(AccountantKind::Rdp),
                    &[],
                )
                .unwrap(),
            ),
        };
        let history = vec![spend("other", 1), spend("other", 2), spend("f", 1)];
        let p = spend_of(
            plan(
                &mut Planner::default(),
                &task(hyper(), &[]),
                1000,
                10,
                &privacy(AccountantKind::Rdp),
                &history,
            )
            .unwrap(),
        );
        let run = (p.noise_multiplier, p.sampling_rate, p.steps);
        // Reported: the cumulative spend in this federation (two releases).
        let here =
            cumulative_epsilon(&history[2..], Some(run), p.delta, AccountantKind::Rdp).unwrap();
        assert_eq!(p.epsilon_total, here);
        let one = cumulative_epsilon(&history[2..], None, p.delta, AccountantKind::Rdp).unwrap();
        assert_eq!(p.epsilon_round, here - one);
        // Gated: all four releases, wherever they went.
        let all = cumulative_epsilon(&history, Some(run), p.delta, AccountantKind::Rdp).unwrap();
        assert!(all > here);
        let tight = PrivacySection {
            epsilon_budget: (here + all) / 2.0,
            ..privacy(AccountantKind::Rdp)
        };
        let p = plan(
            &mut Planner::default(),
            &task(hyper(), &[]),
            1000,
            10,
            &tight,
            &history,
        )
        .unwrap();
        assert!(
            matches!(p, Plan::Decline(ref r) if r.contains("budget exhausted")),
            "{p:?}"
        );
    }

    #[test]
    fn the_spend_carries_the_figures_as_recorded() {
        let p = fresh_spend(AccountantKind::Rdp);
        let o = privacy_object(Some(&p));
        assert_eq!(o.noise_multiplier(), p.noise_multiplier);
        assert_eq!(o.sampling_rate(), p.sampling_rate);
        assert_eq!(o.delta(), p.delta);
        assert!(p.noise_multiplier <= 1.1, "noise rounded down");
        assert_eq!(o.epsilon_micro, (p.epsilon_total * 1e6).ceil() as u64);
        assert_eq!(privacy_object(None), PrivacyObject::none());
    }

    #[test]
    fn spends_of_another_accountant_decline_the_round() {
        let earlier = SpendRecord {
            federation: "f".into(),
            round: 1,
            spend: PrivacySpend {
                noise_multiplier: 1.1,
                sampling_rate: 0.01,
                steps: 100,
                delta: 1e-5,
                epsilon_total: 0.5,
                epsilon_round: 0.5,
                accountant: AccountantKind::Rdp,
            },
        };
        let p = plan(
            &mut Planner::default(),
            &task(hyper(), &[]),
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
    fn the_federation_must_record_the_configured_accountant() {
        let listed =
            |names: &[&str]| -> Vec<String> { names.iter().map(|n| (*n).into()).collect() };
        let mine = privacy(AccountantKind::RdpDpAccounting);
        // Listed (among others): the round is priced as usual.
        let ok = plan(
            &mut Planner::default(),
            &task(hyper(), &listed(&["rdp", "rdp-dp-accounting"])),
            1000,
            10,
            &mine,
            &[],
        );
        assert_eq!(
            spend_of(ok.unwrap()).accountant,
            AccountantKind::RdpDpAccounting
        );
        // Not stated (an older coordinator): accepted.
        let unstated = plan(
            &mut Planner::default(),
            &task(hyper(), &[]),
            1000,
            10,
            &mine,
            &[],
        );
        assert_eq!(
            spend_of(unstated.unwrap()).accountant,
            AccountantKind::RdpDpAccounting
        );
        // Not listed: declined with both sides named, before any spend is computed.
        let p = plan(
            &mut Planner::default(),
            &task(hyper(), &listed(&["rdp", "pld"])),
            1000,
            10,
            &mine,
            &[],
        )
        .unwrap();
        match p {
            Plan::Decline(reason) => assert_eq!(
                reason,
                "this participant accounts privacy with rdp-dp-accounting; the federation \
                 records only rdp, pld"
            ),
            other => panic!("expected a decline, got {other:?}"),
        }
        // A round without noise accounts nothing, so the list does not matter for it.
        let mut no_noise = hyper();
        no_noise.noise_multiplier = 0.0;
        let relaxed = PrivacySection {
            require_dp: false,
            ..mine
        };
        let p = plan(
            &mut Planner::default(),
            &task(no_noise, &listed(&["pld"])),
            1000,
            10,
            &relaxed,
            &[],
        )
        .unwrap();
        assert!(matches!(p, Plan::NonPrivate), "{p:?}");
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

    #[test]
    fn hyper_parameters_out_of_bounds_are_declined_from_the_task_alone() {
        type Spoil = fn(&mut pb::HyperParameters);
        let cases: [(&str, Spoil); 9] = [
            ("noise_multiplier = NaN", |h| h.noise_multiplier = f64::NAN),
            ("noise_multiplier = inf", |h| {
                h.noise_multiplier = f64::INFINITY
            }),
            ("noise_multiplier = -1", |h| h.noise_multiplier = -1.0),
            ("learning_rate = NaN", |h| h.learning_rate = f64::NAN),
            ("learning_rate = 1000000", |h| h.learning_rate = 1e6),
            ("learning_rate = 0", |h| h.learning_rate = 0.0),
            ("batch_size = 0", |h| h.batch_size = 0),
            ("local_epochs = 4000000000", |h| {
                h.local_epochs = 4_000_000_000
            }),
            ("clip_norm = inf", |h| h.clip_norm = f64::INFINITY),
        ];
        for (needle, hostile) in cases {
            let mut h = hyper();
            hostile(&mut h);
            // Declined whatever the data: no rows, many rows, any budget left.
            for n in [0, 1000] {
                let header = task(h, &[]);
                let privacy = privacy(AccountantKind::Rdp);
                match plan(&mut Planner::default(), &header, n, 10, &privacy, &[]).unwrap() {
                    Plan::Decline(reason) => {
                        assert!(reason.contains(needle), "{reason:?} should name {needle}")
                    }
                    other => panic!("{needle}: expected a decline, got {other:?}"),
                }
            }
        }
        assert_eq!(hyper_out_of_bounds(&hyper()), None);
    }

    #[test]
    fn noise_on_non_finite_values_is_an_error_not_a_panic() {
        let mut noise = SecureNoise::new(seeded(5), None).unwrap();
        let mut v = vec![1.0, f32::NAN, 2.0];
        assert!(matches!(
            noise.add_gaussian(&mut v, 1.0),
            Err(ModelError::Noise(_))
        ));
        assert!(matches!(
            noise.add_gaussian(&mut [0.0; 3], f64::NAN),
            Err(ModelError::Noise(_))
        ));
    }
}
