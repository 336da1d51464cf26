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
