//! The federation's state as `fedledger-coordinator status` prints it: from a running engine
//! (served as JSON at the admin endpoint's `GET /status`), or from a stopped coordinator's state
//! directory (a [`Snapshot`]). Everything is read from what is recorded (the store's rounds, the
//! ledger's checkpoints) except what only a running coordinator knows: sessions, presence, the
//! open round's answers so far, refusals.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    config::FederationConfig,
    engine::{Engine, Presence},
    error::CoordinatorError,
    replay::Snapshot,
    store::Store,
    types::{Phase, RoundOutcome, RoundStatus},
};

/// The file in the state directory where a running coordinator notes its admin endpoint's
/// address (removed when it stops).
pub const ADMIN_ADDR_FILE: &str = "admin.addr";

/// A participant counts as online when it made a call with its session this recently (an agent
/// waiting for a round polls every few seconds).
pub const ONLINE_WITHIN_MS: u64 = 30_000;

/// The federation's state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub federation: String,
    /// Read from a running coordinator (else from a stopped one's state directory).
    pub running: bool,
    /// `waiting`, `open` or `done`.
    pub phase: String,
    pub round: u64,
    pub rounds_total: u64,
    pub rounds_completed: u64,
    pub rounds_abandoned: u64,
    /// Seconds until the open round's deadline (running coordinators only).
    pub deadline_in_secs: Option<u64>,
    /// The open round's accepted updates and declines so far.
    pub open_updates: u64,
    pub open_declines: u64,
    /// Updates accepted since the federation started (finished rounds and the open one).
    pub updates_accepted: u64,
    pub epsilon_budget: f64,
    pub participants: Vec<ParticipantStatus>,
    pub last_round: Option<LastRound>,
    /// Entries in the coordinator's ledger.
    pub ledger_entries: u64,
    pub checkpoint: Option<CheckpointStatus>,
    /// Refusals since start, by reason (running coordinators only; zero counts left out).
    pub refusals: BTreeMap<String, u64>,
}

/// One enrolled participant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParticipantStatus {
    pub name: String,
    /// Holds a live session (`None`: not known, the coordinator is stopped).
    pub registered: Option<bool>,
    /// Made a call within [`ONLINE_WITHIN_MS`] (`None`: not known).
    pub online: Option<bool>,
    /// Accepted updates and declines, finished rounds and the open one.
    pub updates: u64,
    pub declines: u64,
    /// Its cumulative epsilon in this federation, as it recorded it with its last update.
    pub epsilon_spent: f64,
}

/// The last finished round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LastRound {
    pub round: u64,
    /// `completed` or `abandoned`.
    pub status: String,
    pub accuracy: Option<f64>,
    pub log_loss: Option<f64>,
    pub auc: Option<f64>,
    /// From opening to closed.
    pub duration_secs: f64,
    /// Closing alone (aggregate, evaluate, value).
    pub close_secs: f64,
}

/// The ledger's latest checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointStatus {
    pub size: u64,
    /// Valid cosignatures of the genesis witnesses on it.
    pub cosignatures: u64,
    pub quorum: u64,
    /// The largest checkpoint with the quorum of cosignatures (what hospitals fetch).
    pub witnessed_size: Option<u64>,
}

impl Status {
    /// The state of a running coordinator.
    pub fn of_running(engine: &Engine) -> Result<Self, CoordinatorError> {
        Self::of_running_with(engine, &engine.store().outcomes()?)
    }

    /// [`Status::of_running`] with the finished rounds' outcomes already read.
    pub fn of_running_with(
        engine: &Engine,
        outcomes: &[RoundOutcome],
    ) -> Result<Self, CoordinatorError> {
        let mut s = collect(
            &engine.config(),
            engine.store(),
            engine.ledger(),
            outcomes,
            Some(engine.presence()),
        )?;
        s.refusals = engine
            .refusals()
            .snapshot()
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| (r.to_owned(), n))
            .collect();
        Ok(s)
    }

    /// The state recorded in a stopped coordinator's state directory (read from a copy).
    pub fn of_state_dir(cfg: &FederationConfig) -> Result<Self, CoordinatorError> {
        let snapshot = Snapshot::open(&cfg.state_dir)?;
        let outcomes = snapshot.store.outcomes()?;
        collect(cfg, &snapshot.store, &snapshot.ledger, &outcomes, None)
    }
}

fn collect(
    cfg: &FederationConfig,
    store: &Store,
    ledger: &fedledger_ledger::Log,
    outcomes: &[RoundOutcome],
    presence: Option<Presence>,
) -> Result<Status, CoordinatorError> {
    let state = store.load_state()?;
    let (phase, round) = state
        .as_ref()
        .map_or((Phase::Waiting, 0), |s| (s.phase, s.round));
    // The open round's answers: the engine's view when running, the store's otherwise.
    let (open_updates, open_declines) = if phase == Phase::Open {
        (store.updates_for(round)?, store.declines_for(round)?)
    } else {
        (Vec::new(), Vec::new())
    };
    let now = presence.as_ref().map_or(0, |p| p.now_ms);
    let participants = cfg
        .participants
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mine = outcomes
                .iter()
                .flat_map(|o| o.contributions.iter())
                .filter(|c| c.participant == i);
            let epsilon_spent = mine
                .clone()
                .next_back()
                .map_or(0.0, |c| c.privacy.epsilon_micro as f64 / 1e6);
            let updates = mine.count() as u64
                + open_updates.iter().filter(|u| u.participant == i).count() as u64;
            let declines = outcomes
                .iter()
                .flat_map(|o| o.declined.iter())
                .filter(|d| d.participant == i)
                .count() as u64
                + open_declines.iter().filter(|d| d.participant == i).count() as u64;
            ParticipantStatus {
                name: p.name.clone(),
                registered: presence
                    .as_ref()
                    .map(|pr| pr.registered.get(i).copied().unwrap_or(false)),
                online: presence.as_ref().map(|pr| {
                    pr.last_seen_ms
                        .get(i)
                        .copied()
                        .flatten()
                        .is_some_and(|t| now.saturating_sub(t) <= ONLINE_WITHIN_MS)
                }),
                updates,
                declines,
                epsilon_spent,
            }
        })
        .collect();
    let last_round = outcomes.iter().max_by_key(|o| o.round).map(|o| LastRound {
        round: o.round,
        status: o.status.as_str().to_owned(),
        accuracy: o.metrics.as_ref().map(|m| m.accuracy),
        log_loss: o.metrics.as_ref().map(|m| m.log_loss),
        auc: o.metrics.as_ref().and_then(|m| m.auc),
        duration_secs: o.closed_at_ms.saturating_sub(o.opened_at_ms) as f64 / 1e3,
        close_secs: o.close_micros as f64 / 1e6,
    });
    let err = |e: fedledger_ledger::LedgerError| CoordinatorError::Ledger(e.to_string());
    let checkpoint = match ledger.latest_checkpoint().map_err(err)? {
        Some(cp) => {
            // The witnesses in force at the checkpoint's size (governance may change them).
            let (witnesses, quorum) = ledger.witness_policy(cp.checkpoint.size);
            Some(CheckpointStatus {
                size: cp.checkpoint.size,
                cosignatures: cp.note.valid_cosigners(&witnesses).len() as u64,
                quorum,
                witnessed_size: ledger
                    .latest_witnessed_in_force()
                    .map_err(err)?
                    .map(|w| w.checkpoint.size),
            })
        }
        None => None,
    };
    let finished = |s: RoundStatus| outcomes.iter().filter(|o| o.status == s).count() as u64;
    Ok(Status {
        federation: cfg.federation.clone(),
        running: presence.is_some(),
        phase: phase.as_str().to_owned(),
        round,
        rounds_total: cfg.rounds,
        rounds_completed: finished(RoundStatus::Completed),
        rounds_abandoned: finished(RoundStatus::Abandoned),
        deadline_in_secs: presence
            .as_ref()
            .filter(|p| p.deadline_ms > 0)
            .map(|p| p.deadline_ms.saturating_sub(p.now_ms) / 1000),
        open_updates: presence
            .as_ref()
            .map_or(open_updates.len() as u64, |p| p.open_updates),
        open_declines: presence
            .as_ref()
            .map_or(open_declines.len() as u64, |p| p.open_declines),
        updates_accepted: outcomes
            .iter()
            .map(|o| o.contributions.len() as u64)
            .sum::<u64>()
            + open_updates.len() as u64,
        epsilon_budget: cfg.privacy_plan.epsilon_budget,
        participants,
        last_round,
        ledger_entries: ledger.size(),
        checkpoint,
        refusals: BTreeMap::new(),
    })
}

fn yes_no(b: Option<bool>) -> &'static str {
    match b {
        Some(true) => "yes",
        Some(false) => "no",
        None => "-",
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = if self.running {
            "running"
        } else {
            "not running (read from its state directory)"
        };
        writeln!(f, "federation {}: {how}", self.federation)?;
        match self.phase.as_str() {
            "open" => {
                write!(
                    f,
                    "round {} of {} open: {} updates, {} declines so far",
                    self.round, self.rounds_total, self.open_updates, self.open_declines
                )?;
                match self.deadline_in_secs {
                    Some(s) => writeln!(f, ", deadline in {s} s")?,
                    None => writeln!(f)?,
                }
            }
            "done" => writeln!(f, "all {} rounds finished", self.rounds_total)?,
            _ => writeln!(
                f,
                "waiting for the quorum of participants to register before round 1"
            )?,
        }
        writeln!(
            f,
            "rounds: {} completed, {} abandoned; updates accepted: {}",
            self.rounds_completed, self.rounds_abandoned, self.updates_accepted
        )?;
        if let Some(l) = &self.last_round {
            let m = |name: &str, v: Option<f64>| v.map(|v| format!(", {name} {v:.4}"));
            writeln!(
                f,
                "last round {}: {}{}{}{}; took {:.1} s, closing {:.2} s",
                l.round,
                l.status,
                m("accuracy", l.accuracy).unwrap_or_default(),
                m("log-loss", l.log_loss).unwrap_or_default(),
                m("AUC", l.auc).unwrap_or_default(),
                l.duration_secs,
                l.close_secs
            )?;
        }
        write!(f, "ledger: {} entries", self.ledger_entries)?;
        match &self.checkpoint {
            Some(c) => writeln!(
                f,
                "; latest checkpoint at size {} with {} of {} cosignatures needed; latest witnessed: {}",
                c.size,
                c.cosignatures,
                c.quorum,
                c.witnessed_size
                    .map_or("none yet".to_owned(), |s| format!("size {s}"))
            )?,
            None => writeln!(f, "; no checkpoint yet")?,
        }
        writeln!(
            f,
            "{:<24} {:>10} {:>6} {:>7} {:>8} {:>14}",
            "participant",
            "registered",
            "online",
            "updates",
            "declines",
            format!("epsilon (of {})", self.epsilon_budget)
        )?;
        for p in &self.participants {
            writeln!(
                f,
                "{:<24} {:>10} {:>6} {:>7} {:>8} {:>14.3}",
                p.name,
                yes_no(p.registered),
                yes_no(p.online),
                p.updates,
                p.declines,
                p.epsilon_spent
            )?;
        }
        if self.running {
            if self.refusals.is_empty() {
                write!(f, "refusals: none")?;
            } else {
                write!(f, "refusals:")?;
                for (r, n) in &self.refusals {
                    write!(f, " {r} {n}")?;
                }
            }
        }
        Ok(())
    }
}

/// `GET path` from the admin endpoint at `addr` (plain HTTP/1.0 on loopback): the body of a 200
/// answer.
pub fn http_get(
    addr: std::net::SocketAddr,
    path: &str,
    timeout: std::time::Duration,
) -> std::io::Result<String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut bytes = Vec::new();
    // An admin answer is small; a bound keeps a confused peer from filling memory.
    s.take(64 << 20).read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP header in the answer"))?;
    let code = head.split_whitespace().nth(1).unwrap_or("");
    if code != "200" {
        return Err(std::io::Error::other(format!(
            "GET {path}: {}",
            head.lines().next().unwrap_or("")
        )));
    }
    Ok(body.to_owned())
}

/// The state of the coordinator configured by `cfg`: asked of the running one at the address
/// it noted in its state directory, else read from the state directory.
pub fn of_config(cfg: &FederationConfig) -> Result<Status, CoordinatorError> {
    let noted = std::fs::read_to_string(cfg.state_dir.join(ADMIN_ADDR_FILE)).ok();
    let addr = noted
        .as_deref()
        .and_then(|a| a.trim().parse().ok())
        .or(cfg.metrics.listen);
    if let Some(addr) = addr
        && let Ok(body) = http_get(addr, "/status", std::time::Duration::from_secs(5))
        && let Ok(s) = serde_json::from_str::<Status>(&body)
        && s.federation == cfg.federation
    {
        return Ok(s);
    }
    Status::of_state_dir(cfg)
}
