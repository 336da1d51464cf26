//! Validator mode's loop: register with the validator's key, pull each round's candidates
//! once the coordinator hands them to the validators, score every coalition of the round's
//! game on the holdout ([`crate::validate`]), sign the whole vector and send it; until the
//! federation finishes. Outbound connections only, like the contributor's agent.
//!
//! What leaves the validator is one aggregate score per coalition (a mean over the whole
//! holdout), never a row; the coordinator records the vector in the ledger, where every
//! auditor reads it (README: Validators, what each party sees).
//!
//! A validator refuses to evaluate a federation whose contributors do not train with DP-SGD
//! (the task names a noise multiplier or a DP plan): it receives each round's individual
//! updates, which without example-level noise could reveal a hospital's rows.

use std::{path::PathBuf, sync::Arc, time::Duration};

use fedledger_model::Dataset;
use fedledger_proto as pb;
use ring::signature::Ed25519KeyPair;
use std::time::Instant;
use tracing::{info, warn};

use crate::{
    agent::{AgentError, connect_patiently, gone, recover},
    client::Task,
    link::Link,
    source::{model_spec, prepare},
    validate::{Candidate, RowUtility, sign_utilities, utility_vector},
};

/// What a validator sends for the vector it computed honestly: that vector, unless a
/// simulation says otherwise (the examples' dishonest validators, which measure what a liar
/// can do to the consensus).
pub trait Report: Send + Sync {
    /// The vector to sign and send, from the honest one, the round's design and its players
    /// (contributors' keys, sorted).
    fn report(
        &self,
        honest: Vec<i64>,
        design: &fedledger_valuation::consensus::Design,
        players: &[String],
    ) -> Vec<i64>;
}

/// How a validator reaches the coordinator and what it validates on.
#[derive(Clone)]
pub struct ValidatorOptions {
    pub coordinator: Link,
    /// Give up after the coordinator has been unreachable this long.
    pub reconnect_patience: Duration,
    /// The holdout CSV.
    pub holdout: PathBuf,
    /// What is sent for each honest vector; `None`: the vector itself.
    pub report: Option<Arc<dyn Report>>,
}

/// One round a validator evaluated.
#[derive(Clone, Debug, PartialEq)]
pub struct Validated {
    pub round: u64,
    /// Candidates (players) and coalitions scored.
    pub candidates: usize,
    pub coalitions: usize,
    /// Wall time from pulling the candidates to the receipt.
    pub seconds: f64,
}

/// What a validator did.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidatorReport {
    pub name: String,
    pub federation: String,
    pub rounds: Vec<Validated>,
}

/// Why a validator stopped.
#[derive(Debug, thiserror::Error)]
pub enum ValidatorError {
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error("holdout {path}: {reason}")]
    Holdout { path: String, reason: String },
    #[error("refusing to validate round {round}: {reason}")]
    Refused { round: u64, reason: String },
    #[error("scoring round {round}: {source}")]
    Score {
        round: u64,
        source: crate::validate::ValidateError,
    },
}

/// Validate every round until the federation finishes.
pub async fn run_validator(
    opts: ValidatorOptions,
    key: Arc<Ed25519KeyPair>,
) -> Result<ValidatorReport, ValidatorError> {
    let mut client = connect_patiently(&opts.coordinator, opts.reconnect_patience, key).await?;
    info!(validator = %client.name(), federation = %client.federation(), "registered as a validator");
    let mut report = ValidatorReport {
        name: client.name().to_owned(),
        federation: client.federation().to_owned(),
        rounds: Vec::new(),
    };
    let mut holdout: Option<Dataset> = None;
    let mut unreachable_since: Option<Instant> = None;
    // The latest round a header named, and the federation's rounds.
    let (mut seen, mut total) = (0u64, u64::MAX);
    loop {
        let started = Instant::now();
        let pulled = match client.candidates().await {
            Ok(c) => c,
            // After the last round the coordinator stops serving: the federation is over.
            Err(e) if seen >= total && gone(&e) => break,
            Err(e) => {
                recover(
                    &mut client,
                    e,
                    &mut unreachable_since,
                    opts.reconnect_patience,
                )
                .await?;
                continue;
            }
        };
        unreachable_since = None;
        let header = &pulled.header;
        if let Some(t) = &header.task {
            seen = seen.max(t.round);
            total = t.total_rounds;
        }
        match pulled.state() {
            pb::CandidatesState::Done => break,
            pb::CandidatesState::Validate => {}
            _ => {
                let wait = header.retry_after_ms.clamp(50, 5_000);
                tokio::time::sleep(Duration::from_millis(wait)).await;
                continue;
            }
        }
        let task = header.task.clone().unwrap_or_default();
        let round = task.round;
        let refused = |reason: String| ValidatorError::Refused { round, reason };
        let game = task
            .validators
            .clone()
            .ok_or_else(|| refused("the task names no validators' game".into()))?;
        let hyper = task.hyper.unwrap_or_default();
        if hyper.noise_multiplier <= 0.0 && task.planning.is_none() {
            return Err(refused(
                "the federation's contributors do not train with DP-SGD, and validators see \
                 each update"
                    .into(),
            ));
        }
        let spec = model_spec(&Task {
            header: task.clone(),
            params: Vec::new(),
        })
        .map_err(|e| refused(e.to_string()))?;
        if holdout.is_none() {
            let holdout_err = |reason: String| ValidatorError::Holdout {
                path: opts.holdout.display().to_string(),
                reason,
            };
            let rows = Dataset::load_csv(&opts.holdout, &task.label_column)
                .map_err(|e| holdout_err(e.to_string()))?;
            let rows = prepare(rows, &task, &spec)
                .map_err(|e| holdout_err(e.to_string()))?
                .map_err(holdout_err)?;
            info!(rows = rows.len(), "holdout loaded");
            holdout = Some(rows);
        }
        let rows = holdout.clone().expect("loaded above");
        let design = fedledger_valuation::consensus::design(
            game.seed,
            header.candidates.len(),
            game.exact_max as usize,
            game.permutations as usize,
        )
        .map_err(|e| refused(e.to_string()))?;
        let utility: RowUtility = game
            .utility
            .parse()
            .map_err(|source| ValidatorError::Score { round, source })?;
        let players = header.candidates.len();
        let scored = {
            let design = design.clone();
            let header = header.clone();
            let (global, updates) = (pulled.global, pulled.updates);
            tokio::task::spawn_blocking(move || {
                let candidates: Vec<Candidate<'_>> = header
                    .candidates
                    .iter()
                    .zip(&updates)
                    .map(|(c, u)| Candidate {
                        participant: &c.participant,
                        examples: c.examples,
                        delta: u,
                    })
                    .collect();
                utility_vector(&spec, &global, &candidates, &design, &rows, utility)
            })
            .await
        };
        let mut utilities = scored
            .map_err(|e| AgentError::Join(e.to_string()))?
            .map_err(|source| ValidatorError::Score { round, source })?;
        if let Some(r) = &opts.report {
            let players: Vec<String> = header
                .candidates
                .iter()
                .map(|c| c.participant.clone())
                .collect();
            utilities = r.report(utilities, &design, &players);
        }
        let signed = sign_utilities(
            client.key(),
            client.federation(),
            round,
            &design,
            &utilities,
        );
        let signature = fedledger_ledger::note::b64_decode(&signed.signature).unwrap_or_default();
        match client
            .submit_utilities(round, &signed.coalitions_sha256, utilities, signature)
            .await
        {
            Ok(r) => {
                let seconds = started.elapsed().as_secs_f64();
                info!(
                    round,
                    candidates = players,
                    coalitions = design.coalitions.len(),
                    received = r.received,
                    quorum = r.quorum,
                    seconds = format!("{seconds:.2}"),
                    "utilities sent"
                );
                report.rounds.push(Validated {
                    round,
                    candidates: players,
                    coalitions: design.coalitions.len(),
                    seconds,
                });
            }
            // Too late (the round closed meanwhile) or already sent before a restart: the
            // next pull says what to do.
            Err(e)
                if matches!(
                    e.code(),
                    Some(tonic::Code::FailedPrecondition | tonic::Code::AlreadyExists)
                ) =>
            {
                warn!(round, error = %e, "utilities not taken");
            }
            Err(e) => {
                recover(
                    &mut client,
                    e,
                    &mut unreachable_since,
                    opts.reconnect_patience,
                )
                .await?;
            }
        }
    }
    info!(rounds = report.rounds.len(), "federation finished");
    Ok(report)
}
