//! Update sources of the simulated hospitals. Honest hospitals use the participant's own
//! [`LocalTrainer`]; [`Recording`] wraps it to post each update on a shared board so that the
//! `random` and `copy:<name>` behaviours can see the round's honest updates, as a colluding or
//! lazy site could by observing a peer.

use std::{
    collections::HashMap,
    sync::{Arc, Condvar, Mutex},
    time::Duration,
};

use fedledger_participant::{
    UpdateSource, Work, client::Task, source::SourceError, store::SpendRecord,
};
use rand::{RngExt, SeedableRng};

/// Updates by (round, hospital name).
type Posted = HashMap<(u64, String), Arc<Vec<f32>>>;

/// Honest updates of each round, by hospital name.
#[derive(Default)]
pub struct Board {
    updates: Mutex<Posted>,
    posted: Condvar,
}

impl Board {
    fn post(&self, round: u64, name: &str, delta: &[f32]) {
        let mut m = self.updates.lock().unwrap_or_else(|p| p.into_inner());
        m.insert((round, name.to_owned()), Arc::new(delta.to_vec()));
        m.retain(|(r, _), _| *r + 2 >= round);
        self.posted.notify_all();
    }

    fn wait_for(&self, round: u64, name: &str, timeout: Duration) -> Option<Arc<Vec<f32>>> {
        let key = (round, name.to_owned());
        let guard = self.updates.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = self
            .posted
            .wait_timeout_while(guard, timeout, |m| !m.contains_key(&key))
            .unwrap_or_else(|p| p.into_inner());
        guard.get(&key).cloned()
    }

    /// Wait until `count` honest updates of `round` are posted (or the timeout), and return them.
    fn wait_round(&self, round: u64, count: usize, timeout: Duration) -> Vec<Arc<Vec<f32>>> {
        let guard = self.updates.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = self
            .posted
            .wait_timeout_while(guard, timeout, |m| {
                m.keys().filter(|(r, _)| *r == round).count() < count
            })
            .unwrap_or_else(|p| p.into_inner());
        guard
            .iter()
            .filter(|((r, _), _)| *r == round)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// How long a simulated hospital waits for the honest updates it imitates.
const WAIT: Duration = Duration::from_secs(120);

/// An honest source that also posts its update on the board once the coordinator has it, so
/// an imitator's update always arrives after the one it imitates.
pub struct Recording {
    pub inner: Box<dyn UpdateSource>,
    pub name: String,
    pub board: Arc<Board>,
    pub last: Option<(u64, Vec<f32>)>,
}

impl Recording {
    pub fn new(inner: Box<dyn UpdateSource>, name: &str, board: Arc<Board>) -> Self {
        Self {
            inner,
            name: name.to_owned(),
            board,
            last: None,
        }
    }
}

impl UpdateSource for Recording {
    fn work(&mut self, task: &Task, spent: &[SpendRecord]) -> Result<Work, SourceError> {
        let w = self.inner.work(task, spent)?;
        self.last = match &w {
            Work::Update { delta, .. } => Some((task.header.round, delta.clone())),
            Work::Decline(_) => None,
        };
        Ok(w)
    }

    fn submitted(&mut self, round: u64) {
        if let Some((r, delta)) = self.last.take()
            && r == round
        {
            self.board.post(round, &self.name, &delta);
        }
    }
}

/// The privacy figures a simulated site reports: it trains on nothing, so it spends nothing.
fn no_spend() -> Option<fedledger_privacy::PrivacySpend> {
    None
}

/// Sends an all-zero update claiming `rows` examples (a free rider).
pub struct ZeroSource {
    pub rows: u64,
}

impl UpdateSource for ZeroSource {
    fn work(&mut self, task: &Task, _spent: &[SpendRecord]) -> Result<Work, SourceError> {
        Ok(Work::Update {
            delta: vec![0.0; task.params.len()],
            examples: self.rows,
            spend: no_spend(),
        })
    }
}

/// Sends a random direction scaled to the mean norm of the round's honest updates.
pub struct RandomSource {
    pub rows: u64,
    pub honest: usize,
    pub board: Arc<Board>,
    pub seed: u64,
}

impl UpdateSource for RandomSource {
    fn work(&mut self, task: &Task, _spent: &[SpendRecord]) -> Result<Work, SourceError> {
        let round = task.header.round;
        let honest = self.board.wait_round(round, self.honest, WAIT);
        if honest.is_empty() {
            return Ok(Work::Decline(
                "no honest update to imitate this round".into(),
            ));
        }
        let norm = honest
            .iter()
            .map(|u| u.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt())
            .sum::<f64>()
            / honest.len() as f64;
        let mut rng =
            chacha20::ChaCha20Rng::seed_from_u64(self.seed ^ round.wrapping_mul(0x9e37_79b9));
        let mut v: Vec<f32> = (0..task.params.len())
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        let n = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        if n > 0.0 {
            v.iter_mut()
                .for_each(|x| *x = (f64::from(*x) * norm / n) as f32);
        }
        Ok(Work::Update {
            delta: v,
            examples: self.rows,
            spend: no_spend(),
        })
    }
}

/// Resends another hospital's update of the same round, claiming its own `rows`.
pub struct CopySource {
    pub rows: u64,
    pub target: String,
    pub board: Arc<Board>,
}

impl UpdateSource for CopySource {
    fn work(&mut self, task: &Task, _spent: &[SpendRecord]) -> Result<Work, SourceError> {
        match self.board.wait_for(task.header.round, &self.target, WAIT) {
            Some(u) => Ok(Work::Update {
                delta: u.to_vec(),
                examples: self.rows,
                spend: no_spend(),
            }),
            None => Ok(Work::Decline(format!(
                "{} sent no update to copy this round",
                self.target
            ))),
        }
    }
}

/// The round's honest updates' coordinate-wise mean and standard deviation, and their mean norm.
fn honest_moments(honest: &[Arc<Vec<f32>>], dim: usize) -> (Vec<f64>, Vec<f64>, f64) {
    let n = honest.len() as f64;
    let mut mean = vec![0.0; dim];
    for u in honest {
        for (m, v) in mean.iter_mut().zip(u.iter()) {
            *m += f64::from(*v) / n;
        }
    }
    let mut sd = vec![0.0; dim];
    for u in honest {
        for ((s, v), m) in sd.iter_mut().zip(u.iter()).zip(&mean) {
            *s += (f64::from(*v) - m).powi(2) / n;
        }
    }
    sd.iter_mut().for_each(|s| *s = s.sqrt());
    let norm = honest
        .iter()
        .map(|u| u.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt())
        .sum::<f64>()
        / n;
    (mean, sd, norm)
}

/// A colluding attacker: it waits for the round's honest updates, then sends a crafted one.
pub struct Attacker {
    pub rows: u64,
    pub honest: usize,
    pub board: Arc<Board>,
    pub kind: Attack,
}

/// How an [`Attacker`] crafts its update from the honest ones.
#[derive(Clone, Copy, Debug)]
pub enum Attack {
    /// The negated honest mean, scaled to the honest updates' mean norm.
    SignFlip,
    /// "A little is enough": the honest mean shifted by `z` honest standard deviations.
    Alie { z: f64 },
}

impl Attack {
    /// Baruch et al. 2019's `z` for `n` participants of which `f` attack: with
    /// `s = floor(n / 2 + 1) - f` honest participants the attackers need on their side,
    /// `z = Phi^-1((n - s) / n)`.
    pub fn alie(n: usize, f: usize) -> Self {
        let s = (n / 2 + 1).saturating_sub(f) as f64;
        let p = ((n as f64 - s) / n as f64).clamp(1e-6, 1.0 - 1e-6);
        Attack::Alie {
            z: inverse_normal_cdf(p),
        }
    }
}

/// `Phi^-1(p)` by Acklam's rational approximation (relative error below 1.2e-9).
pub fn inverse_normal_cdf(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

impl UpdateSource for Attacker {
    fn work(&mut self, task: &Task, _spent: &[SpendRecord]) -> Result<Work, SourceError> {
        let round = task.header.round;
        let honest = self.board.wait_round(round, self.honest, WAIT);
        if honest.is_empty() {
            return Ok(Work::Decline(
                "no honest update to attack this round".into(),
            ));
        }
        let (mean, sd, norm) = honest_moments(&honest, task.params.len());
        let delta: Vec<f32> = match self.kind {
            Attack::SignFlip => {
                let m = mean.iter().map(|v| v * v).sum::<f64>().sqrt();
                let scale = if m > 0.0 { norm / m } else { 0.0 };
                mean.iter().map(|v| (-v * scale) as f32).collect()
            }
            Attack::Alie { z } => mean
                .iter()
                .zip(&sd)
                .map(|(m, s)| (m - z * s) as f32)
                .collect(),
        };
        Ok(Work::Update {
            delta,
            examples: self.rows,
            spend: no_spend(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_normal_cdf_matches_known_quantiles() {
        for (p, want) in [
            (0.5, 0.0),
            (0.975, 1.959_963_985),
            (0.1, -1.281_551_566),
            (0.001, -3.090_232_306),
        ] {
            assert!((inverse_normal_cdf(p) - want).abs() < 1e-6, "{p}");
        }
    }

    #[test]
    fn alie_z_follows_baruch_et_al() {
        // n = 8, f = 2: s = 5 - 2 = 3, z = Phi^-1(5/8) = 0.3186.
        let Attack::Alie { z } = Attack::alie(8, 2) else {
            panic!()
        };
        assert!((z - 0.318_639_363).abs() < 1e-6, "{z}");
    }
}
