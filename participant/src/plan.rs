//! A participant's own DP-SGD plan: the expected batch size (so the Poisson sampling rate), the
//! steps of a round and the noise multiplier, chosen so that its spend over the rounds the task
//! plans fits its own budget.
//!
//! When every hospital trains with the coordinator's one batch size, epoch count and noise
//! multiplier, the multiplier has to be planned for the smallest hospital: the others add more
//! noise than their budgets require. Here each participant plans for itself, before training,
//! from what it knows without looking at its data's values: its row count, its budget, delta and
//! accountant, what it has spent (earlier plans, recorded), the model's size (the noise sampler's
//! grid-rounding charge) and the task's bounds.
//!
//! **What is best.** For each candidate (batch `B` within the bounds and at most the rows `n`,
//! steps `T` within the bounds) the accountant in use gives the smallest noise multiplier `z`
//! that keeps the spend over the rounds left within the budget; the plan kept is the one with
//! the least noise per unit of signal in a round's update, `z / (q n sqrt(T))`: the standard
//! deviation of the round's summed noisy mean gradients (T steps, each with noise `z C / (q n)`
//! on a mean of clipped gradients of norm at most `C`), over the largest signal those steps can
//! carry (`T C`). To first order this ratio is the same for every candidate (for small sampling
//! rates `z` grows like `q sqrt(T)`); what separates them is where the accountant's bound is
//! tight: large batches (amplification by sampling is weak at small `z`, and a full batch is
//! the plain Gaussian mechanism, which both accountants bound tightly) and many steps. So the
//! accountant ends up choosing the largest batch and the most steps the bounds allow, as the
//! DP-SGD literature recommends (De et al. 2022; Sander et al. 2023); ties go to more steps,
//! then to the larger batch.
//!
//! **Chosen once, solved each round.** The batch and steps are chosen once per federation, with
//! the whole budget spread over all planned rounds ([`choose_shape`]; a [`Planner`] remembers
//! the choice while its inputs stay the same). Each round then solves the noise multiplier that
//! spreads what is left over the rounds left, this one included, with the history and the rounds
//! left composed as one run each (quick), and raises it until the composition the budget gate
//! will compute in the last planned round (every recorded spend and every planned round as
//! separate runs) stays within the budget ([`plan_round`]). A hospital that joined late or
//! missed rounds therefore spends what it saved on the rounds that remain; after the planned
//! rounds it plans nothing. The gate still checks every round; a plan only makes its declines
//! rare.

use fedledger_ledger::records::PrivacyObject;
use fedledger_model::DpSgdConfig;
use fedledger_privacy::{
    AccountantKind, PoissonGaussian, PrivacyError, SecureGaussian,
    accountant::{PLANNER_TOLERANCE, epsilon_of_history, smallest_noise_multiplier},
};
use fedledger_proto as pb;

use crate::work::SourceError;

/// The bounds a task sets on a participant's plan (`TaskHeader.planning`), checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanBounds {
    /// Rounds the budget is spread over.
    pub rounds: u64,
    pub min_batch_size: u32,
    pub max_batch_size: u32,
    pub min_steps: u32,
    pub max_steps: u32,
}

impl PlanBounds {
    /// The task's bounds, refused when empty or inverted.
    pub fn from_task(p: &pb::DpPlanning) -> Result<Self, SourceError> {
        let b = Self {
            rounds: p.planned_rounds,
            min_batch_size: p.min_batch_size,
            max_batch_size: p.max_batch_size,
            min_steps: p.min_steps,
            max_steps: p.max_steps,
        };
        if b.rounds == 0
            || b.min_batch_size == 0
            || b.min_steps == 0
            || b.min_batch_size > b.max_batch_size
            || b.min_steps > b.max_steps
        {
            return Err(SourceError::Task(format!(
                "planning bounds must be at least 1 and ordered: {} rounds, batch {}..={}, \
                 steps {}..={}",
                b.rounds, b.min_batch_size, b.max_batch_size, b.min_steps, b.max_steps
            )));
        }
        Ok(b)
    }
}

/// What a plan is made from: nothing here depends on the values of the data.
#[derive(Clone, Debug)]
pub struct PlanInputs<'a> {
    /// Rows of local data.
    pub rows: usize,
    /// Parameters of the model (the noise sampler's grid-rounding charge grows with them).
    pub num_params: usize,
    /// The task's per-example clipping norm `C`.
    pub clip_norm: f64,
    /// The task's round (1-based); the rounds left are `rounds - round + 1`. Rounds after the
    /// planned ones get no plan: the budget was spread over the planned rounds.
    pub round: u64,
    pub bounds: PlanBounds,
    /// Every release already spent on this machine, as the gate composes them.
    pub history: &'a [PoissonGaussian],
    pub epsilon_budget: f64,
    pub delta: f64,
    pub accountant: AccountantKind,
}

/// One round of DP-SGD as planned.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DpPlan {
    /// Expected batch size (at most the rows).
    pub batch_size: usize,
    /// Poisson sampling rate, `min(1, batch_size / rows)` ([`DpSgdConfig::schedule`]).
    pub sampling_rate: f64,
    /// DP-SGD steps this round.
    pub steps: u64,
    /// The sampler's multiplier: its standard deviation is this times `C`.
    pub noise_multiplier: f64,
    /// The multiplier accounted for: the sampler's effective one after its grid-rounding charge
    /// ([`SecureGaussian::effective_noise_multiplier`]), rounded down as the ledger records it
    /// ([`PrivacyObject::conservative`]); never above `noise_multiplier`.
    pub accounted_noise_multiplier: f64,
    /// The sampling rate accounted for: `sampling_rate` rounded up as the ledger records it.
    pub accounted_sampling_rate: f64,
    /// Rounds the plan spreads the budget over, this one included.
    pub rounds_left: u64,
    /// `z / (q n sqrt(T))`, the noise per unit of signal the plan was chosen by.
    pub noise_to_signal: f64,
}

impl DpPlan {
    /// The release this plan makes, as the accountant sees it.
    pub fn run(&self) -> PoissonGaussian {
        PoissonGaussian {
            noise_multiplier: self.accounted_noise_multiplier,
            sampling_rate: self.accounted_sampling_rate,
            steps: self.steps,
        }
    }
}

/// Relative tolerance of the multipliers candidates are compared by (a round's plan is then
/// solved to [`PLANNER_TOLERANCE`]).
const COMPARE_TOLERANCE: f64 = 1e-3;

/// Candidates closer than this (relative) in noise per unit of signal are a tie.
const TIE: f64 = 4.0 * COMPARE_TOLERANCE;

/// How many times the kept plan's multiplier may be raised by [`RAISE`] to pass the gate's
/// composition.
const MAX_RAISES: usize = 64;
const RAISE: f64 = 1.0 + 1e-5;

/// The batch size and steps of a plan: chosen once per federation from what does not change
/// during it (rows, model size, clipping norm, bounds, budget, delta, accountant), for the
/// whole budget over all planned rounds; each round then only solves the noise multiplier for
/// what is left ([`plan_round`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shape {
    /// Expected batch size (at most the rows).
    pub batch_size: usize,
    /// `min(1, batch_size / rows)`.
    pub sampling_rate: f64,
    /// DP-SGD steps per round.
    pub steps: u64,
}

/// The shape with the least noise per unit of signal (see the module docs) when the whole
/// budget is spread over all planned rounds, or `None` when no candidate fits the budget.
pub fn choose_shape(p: &PlanInputs<'_>) -> Result<Option<Shape>, SourceError> {
    if p.rows == 0 {
        return Ok(None);
    }
    check_clip(p)?;
    let fresh = PlanInputs {
        round: 1,
        history: &[],
        ..p.clone()
    };
    let mut best: Option<(Shape, f64)> = None;
    let cap = u32::try_from(p.rows).unwrap_or(u32::MAX);
    for steps in candidates(p.bounds.min_steps, p.bounds.max_steps, u32::MAX)
        .into_iter()
        .rev()
    {
        for batch in candidates(p.bounds.min_batch_size, p.bounds.max_batch_size, cap)
            .into_iter()
            .rev()
        {
            let (q, _) = DpSgdConfig::schedule(p.rows, batch as usize, 1);
            // A candidate can only win with a multiplier below the one that ties the best so
            // far; one accountant evaluation there rules most candidates out.
            if let Some((_, b)) = best {
                let tie = b * (1.0 - TIE) * q * (p.rows as f64) * f64::from(steps).sqrt();
                let run = |z| -> Result<PoissonGaussian, PrivacyError> {
                    Ok(PoissonGaussian {
                        noise_multiplier: accounted(z, p.clip_norm, p.num_params)?,
                        sampling_rate: q,
                        steps: u64::from(steps),
                    })
                };
                let fits =
                    run(tie).and_then(|r| within_budget(&fresh, &[], r, p.bounds.rounds, false));
                match fits {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => return Err(SourceError::Privacy(e.to_string())),
                }
            }
            let z = match solve(&fresh, &[], q, steps, p.bounds.rounds, COMPARE_TOLERANCE) {
                Ok(z) => z,
                Err(PrivacyError::TargetUnreachable { .. }) => continue,
                Err(e) => return Err(SourceError::Privacy(e.to_string())),
            };
            let ratio = noise_to_signal(z, q, p.rows, u64::from(steps));
            if best.is_none_or(|(_, b)| ratio < b * (1.0 - TIE)) {
                let shape = Shape {
                    batch_size: (batch as usize).min(p.rows),
                    sampling_rate: q,
                    steps: u64::from(steps),
                };
                best = Some((shape, ratio));
            }
        }
    }
    Ok(best.map(|(shape, _)| shape))
}

/// This round's plan with `shape`: the smallest noise multiplier that keeps the history and
/// the rounds left (this one included) within the budget, checked the way the gate composes
/// them in the last planned round. `None` after the planned rounds, or when the budget left
/// cannot fund a round at any noise level the planner tries.
pub fn plan_round(p: &PlanInputs<'_>, shape: Shape) -> Result<Option<DpPlan>, SourceError> {
    let privacy = |e: PrivacyError| SourceError::Privacy(e.to_string());
    check_clip(p)?;
    if p.round == 0 || p.round > p.bounds.rounds {
        return Ok(None);
    }
    let rounds_left = p.bounds.rounds - (p.round - 1);
    let (q, steps) = (shape.sampling_rate, shape.steps);
    let steps_u32 = u32::try_from(steps).unwrap_or(u32::MAX);
    // Solved with the history and the rounds left as one run each (quick)...
    let mut z = match solve(
        p,
        &merge(p.history),
        q,
        steps_u32,
        rounds_left,
        PLANNER_TOLERANCE,
    ) {
        Ok(z) => z,
        Err(PrivacyError::TargetUnreachable { .. }) => return Ok(None),
        Err(e) => return Err(privacy(e)),
    };
    // ...then raised until the gate's own composition accepts it.
    for _ in 0..MAX_RAISES {
        // Accounted as the ledger will record it (noise down, sampling rate up), so the gate,
        // which composes the recorded figures, accepts what the planner accepted.
        let recorded = PrivacyObject::conservative(
            p.accountant.name(),
            accounted(z, p.clip_norm, p.num_params).map_err(privacy)?,
            q,
            steps,
            p.delta,
        );
        let run = PoissonGaussian {
            noise_multiplier: recorded.noise_multiplier(),
            sampling_rate: recorded.sampling_rate(),
            steps,
        };
        if within_budget(p, p.history, run, rounds_left, true).map_err(privacy)? {
            return Ok(Some(DpPlan {
                batch_size: shape.batch_size,
                sampling_rate: q,
                steps,
                noise_multiplier: z,
                accounted_noise_multiplier: run.noise_multiplier,
                accounted_sampling_rate: run.sampling_rate,
                rounds_left,
                noise_to_signal: noise_to_signal(z, q, p.rows, steps),
            }));
        }
        z *= RAISE;
    }
    Err(SourceError::Privacy(format!(
        "no noise multiplier near {z} keeps {rounds_left} round(s) of {steps} steps at sampling \
         rate {q} within the budget as the gate composes them"
    )))
}

/// [`choose_shape`] then [`plan_round`], without memory.
pub fn plan_dp_sgd(p: &PlanInputs<'_>) -> Result<Option<DpPlan>, SourceError> {
    match choose_shape(p)? {
        Some(shape) => plan_round(p, shape),
        None => Ok(None),
    }
}

/// Plans rounds, choosing the shape once for as long as what it depends on stays the same
/// (searching the candidates costs one accountant bisection each; a round's plan costs one).
#[derive(Debug, Default)]
pub struct Planner {
    shape: Option<(ShapeKey, Option<Shape>)>,
}

/// Everything [`choose_shape`] reads.
#[derive(Clone, Copy, Debug, PartialEq)]
struct ShapeKey {
    rows: usize,
    num_params: usize,
    clip_norm: f64,
    bounds: PlanBounds,
    epsilon_budget: f64,
    delta: f64,
    accountant: AccountantKind,
}

impl Planner {
    /// This round's plan ([`plan_dp_sgd`], with the shape remembered).
    pub fn plan(&mut self, p: &PlanInputs<'_>) -> Result<Option<DpPlan>, SourceError> {
        let key = ShapeKey {
            rows: p.rows,
            num_params: p.num_params,
            clip_norm: p.clip_norm,
            bounds: p.bounds,
            epsilon_budget: p.epsilon_budget,
            delta: p.delta,
            accountant: p.accountant,
        };
        let shape = match &self.shape {
            Some((k, shape)) if *k == key => *shape,
            _ => {
                let shape = choose_shape(p)?;
                self.shape = Some((key, shape));
                shape
            }
        };
        match shape {
            Some(shape) => plan_round(p, shape),
            None => Ok(None),
        }
    }
}

fn check_clip(p: &PlanInputs<'_>) -> Result<(), SourceError> {
    if p.clip_norm.is_finite() && p.clip_norm > 0.0 {
        Ok(())
    } else {
        Err(SourceError::Task(format!(
            "planning needs a clipping norm > 0, got {}",
            p.clip_norm
        )))
    }
}

/// `z / (q n sqrt(T))`.
#[allow(clippy::cast_precision_loss)] // row and step counts far below 2^53
fn noise_to_signal(z: f64, q: f64, rows: usize, steps: u64) -> f64 {
    z / (q * rows as f64 * (steps as f64).sqrt())
}

/// `lo, 2 lo, 4 lo, ...` below `min(hi, cap)`, then `min(hi, cap)` itself (at least `lo` when
/// `cap < lo`, e.g. fewer rows than the smallest batch: then the whole data is the batch).
fn candidates(lo: u32, hi: u32, cap: u32) -> Vec<u32> {
    let top = hi.min(cap).max(lo.min(cap)).max(1);
    let mut out = Vec::new();
    let mut c = lo.min(top).max(1);
    while c < top {
        out.push(c);
        c = c.saturating_mul(2);
    }
    out.push(top);
    out
}

/// Identical mechanisms merged into one run (their steps added).
fn merge(history: &[PoissonGaussian]) -> Vec<PoissonGaussian> {
    let mut out: Vec<PoissonGaussian> = Vec::new();
    for run in history {
        match out.iter_mut().find(|r| {
            r.noise_multiplier == run.noise_multiplier && r.sampling_rate == run.sampling_rate
        }) {
            Some(r) => r.steps = r.steps.saturating_add(run.steps),
            None => out.push(*run),
        }
    }
    out
}

/// The multiplier accounted for when the sampler draws with standard deviation `z C`.
fn accounted(z: f64, clip_norm: f64, num_params: usize) -> Result<f64, PrivacyError> {
    Ok(SecureGaussian::new(z * clip_norm, None)?.effective_noise_multiplier(clip_norm, num_params))
}

/// The smallest sampler multiplier whose accounted release, `rounds_left` times after
/// `history`, stays within the budget (composed as one run; see [`within_budget`]).
fn solve(
    p: &PlanInputs<'_>,
    history: &[PoissonGaussian],
    q: f64,
    steps: u32,
    rounds_left: u64,
    tolerance: f64,
) -> Result<f64, PrivacyError> {
    smallest_noise_multiplier(p.epsilon_budget, tolerance, |z| {
        let run = PoissonGaussian {
            noise_multiplier: accounted(z, p.clip_norm, p.num_params)?,
            sampling_rate: q,
            steps: u64::from(steps),
        };
        within_budget(p, history, run, rounds_left, false)
    })
}

/// Whether `history` then `rounds` releases of `run` stay within the budget: composed as one
/// run of `rounds * steps` steps, or (`separate`) as `rounds` runs, the way the gate composes
/// the recorded spends of the last planned round.
fn within_budget(
    p: &PlanInputs<'_>,
    history: &[PoissonGaussian],
    run: PoissonGaussian,
    rounds: u64,
    separate: bool,
) -> Result<bool, PrivacyError> {
    let mut all = history.to_vec();
    if separate {
        all.extend(std::iter::repeat_n(
            run,
            usize::try_from(rounds).unwrap_or(usize::MAX),
        ));
    } else {
        all.push(PoissonGaussian {
            steps: run.steps.saturating_mul(rounds),
            ..run
        });
    }
    Ok(epsilon_of_history(p.accountant, &all, p.delta)?.epsilon <= p.epsilon_budget)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(rounds: u64, batch: (u32, u32), steps: (u32, u32)) -> PlanBounds {
        PlanBounds {
            rounds,
            min_batch_size: batch.0,
            max_batch_size: batch.1,
            min_steps: steps.0,
            max_steps: steps.1,
        }
    }

    fn inputs(rows: usize, budget: f64, b: PlanBounds) -> PlanInputs<'static> {
        PlanInputs {
            rows,
            num_params: 4810,
            clip_norm: 1.0,
            round: 1,
            bounds: b,
            history: &[],
            epsilon_budget: budget,
            delta: 1e-5,
            accountant: AccountantKind::Rdp,
        }
    }

    #[test]
    fn candidates_double_up_to_the_cap() {
        assert_eq!(candidates(16, 512, 116), vec![16, 32, 64, 116]);
        assert_eq!(candidates(16, 100, 1000), vec![16, 32, 64, 100]);
        assert_eq!(candidates(16, 512, 10), vec![10]);
        assert_eq!(candidates(1, 1, u32::MAX), vec![1]);
        assert_eq!(candidates(3, 30, u32::MAX), vec![3, 6, 12, 24, 30]);
    }

    #[test]
    fn the_accountant_picks_the_largest_batch_and_the_most_steps() {
        let plan = plan_dp_sgd(&inputs(396, 8.0, bounds(20, (16, 512), (1, 30))))
            .unwrap()
            .unwrap();
        assert_eq!((plan.batch_size, plan.sampling_rate), (396, 1.0));
        assert_eq!((plan.steps, plan.rounds_left), (30, 20));
        assert!(plan.accounted_noise_multiplier <= plan.noise_multiplier);
        // The whole plan fits, composed round by round as the gate does.
        let all = vec![plan.run(); 20];
        let eps = epsilon_of_history(AccountantKind::Rdp, &all, 1e-5).unwrap();
        assert!(eps.epsilon <= 8.0, "{eps:?}");
    }

    #[test]
    fn fewer_rows_than_the_smallest_batch_train_on_all_of_them() {
        let plan = plan_dp_sgd(&inputs(10, 4.0, bounds(5, (16, 64), (2, 8))))
            .unwrap()
            .unwrap();
        assert_eq!((plan.batch_size, plan.sampling_rate), (10, 1.0));
    }

    #[test]
    fn a_spent_budget_plans_nothing_and_late_joiners_spread_what_is_left() {
        let b = bounds(10, (16, 64), (4, 4));
        let first = plan_dp_sgd(&inputs(200, 2.0, b)).unwrap().unwrap();
        // Nine rounds spent as planned: the last round gets the same plan (up to tolerance).
        let spent = vec![first.run(); 9];
        let last = plan_dp_sgd(&PlanInputs {
            round: 10,
            history: &spent,
            ..inputs(200, 2.0, b)
        })
        .unwrap()
        .unwrap();
        assert_eq!(last.rounds_left, 1);
        assert!(
            (last.noise_multiplier / first.noise_multiplier - 1.0).abs() < 1e-3,
            "{first:?} vs {last:?}"
        );
        // Joining at round 6 with nothing spent: five rounds share the budget, less noise each.
        let late = plan_dp_sgd(&PlanInputs {
            round: 6,
            ..inputs(200, 2.0, b)
        })
        .unwrap()
        .unwrap();
        assert_eq!(late.rounds_left, 5);
        assert!(late.noise_multiplier < first.noise_multiplier);
        // After the planned rounds: no plan, whatever is left.
        let none = plan_dp_sgd(&PlanInputs {
            round: 11,
            history: &spent,
            ..inputs(200, 2.0, b)
        })
        .unwrap();
        assert_eq!(none, None);
        // A budget already spent: no plan.
        let over = vec![
            PoissonGaussian {
                noise_multiplier: 0.5,
                sampling_rate: 1.0,
                steps: 100,
            };
            1
        ];
        let none = plan_dp_sgd(&PlanInputs {
            round: 3,
            history: &over,
            ..inputs(200, 2.0, b)
        })
        .unwrap();
        assert_eq!(none, None);
    }

    #[test]
    fn bounds_from_the_task_are_checked() {
        let ok = pb::DpPlanning {
            planned_rounds: 20,
            min_batch_size: 16,
            max_batch_size: 512,
            min_steps: 1,
            max_steps: 30,
        };
        assert!(PlanBounds::from_task(&ok).is_ok());
        for bad in [
            pb::DpPlanning {
                planned_rounds: 0,
                ..ok
            },
            pb::DpPlanning {
                min_batch_size: 600,
                ..ok
            },
            pb::DpPlanning { min_steps: 0, ..ok },
        ] {
            assert!(PlanBounds::from_task(&bad).is_err(), "{bad:?}");
        }
    }
}
