//! The participant's main loop: pull a task, answer it (train, or decline), persist the privacy
//! spend, sign and send, until the federation is done; with `[ledger]` configured, check each
//! answered round's receipt ([`crate::receipts`]), and never submit for round r + 2 before
//! round r's receipt is complete.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use fedledger_proto as pb;
use ring::signature::Ed25519KeyPair;
use tonic::Code;
use tracing::{Instrument, info, info_span, warn};

use crate::{
    client::{Client, ClientError, Task},
    progress::{Progress, ProgressMode},
    receipts::{ReceiptError, ReceiptSettings, ReceiptStat, Receipts},
    store::{
        Halt, LocalStore, PreparedUpdate, RoundRecord, SpendRecord, StoreError, receipt_state,
    },
    work::{SourceError, UpdateSource, Work},
};

/// Failures that stop the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("producing the update for round {round}: {source}")]
    Source { round: u64, source: SourceError },
    #[error("refusing to take part: the federation's governed data schema: {0}")]
    Schema(SourceError),
    #[error("coordinator unreachable for {secs} s: {last}")]
    Unreachable { secs: u64, last: String },
    #[error("training task failed: {0}")]
    Join(String),
    #[error(transparent)]
    Receipt(#[from] ReceiptError),
    /// The agent stopped after a receipt mismatch and will not take part until the operator
    /// investigates and runs `fedledger-participant resume`.
    #[error(
        "stopped after a receipt mismatch in round {} of {}: {} (evidence: {}); investigate, then \
         run `fedledger-participant resume`",
        .0.round, .0.federation, .0.what, .0.evidence
    )]
    Halted(Halt),
    /// A failpoint configured to `return` fired (tests simulating a crash at a named point).
    /// Only with this crate's `failpoints` feature, on which the points themselves are gated
    /// too (not on `fail`'s own feature, which another crate may turn on).
    #[cfg(feature = "failpoints")]
    #[error("failpoint {point} fired in round {round}: {detail}")]
    Failpoint {
        point: &'static str,
        round: u64,
        /// The argument of the configured `return(...)` action (empty without one).
        detail: String,
    },
}

/// How the agent runs.
pub struct AgentOptions {
    /// How to reach the coordinator (URL, TLS trust, proxy).
    pub coordinator: crate::link::Link,
    pub reconnect_patience: Duration,
    /// How rounds are shown: a progress bar (a person watches a terminal), a line per round,
    /// or nothing.
    pub progress: ProgressMode,
    /// The hospital's privacy budget, shown with each round (what is left).
    pub epsilon_budget: Option<f64>,
    /// Check receipts (from `[ledger]`); `None`: no receipt is checked.
    pub receipts: Option<ReceiptSettings>,
    /// Where receipts and evidence files are kept.
    pub state_dir: std::path::PathBuf,
}

/// What the agent did, for reporting.
#[derive(Clone, Debug, Default)]
pub struct AgentReport {
    pub name: String,
    pub federation: String,
    pub rounds_sent: Vec<u64>,
    pub rounds_declined: Vec<(u64, String)>,
    /// The final global model, when the federation finished.
    pub final_params: Vec<f32>,
    pub epsilon_spent: f64,
    /// Receipts checked in this run, with their time and bytes fetched.
    pub receipts: Vec<ReceiptStat>,
    /// Settlements checked in this run (settled reward rule): (period, units paid).
    pub settled: Vec<(u64, u64)>,
    /// How the agent learnt that the federation was over.
    pub ended: Ended,
}

/// How a run ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Ended {
    /// The coordinator said DONE.
    #[default]
    Done,
    /// The coordinator was gone after this hospital had answered the last round it knew of
    /// (`round` of `total`): the federation is over as far as it can tell. Receipts of
    /// `unchecked` rounds could not be fetched any more.
    CoordinatorGone {
        round: u64,
        total: u64,
        unchecked: Vec<u64>,
    },
}

/// Run until the coordinator says the federation is done.
pub async fn run_agent(
    opts: AgentOptions,
    key: Arc<Ed25519KeyPair>,
    store: LocalStore,
    source: Box<dyn UpdateSource>,
) -> Result<AgentReport, AgentError> {
    if let Some(h) = store.halt()? {
        return Err(AgentError::Halted(h));
    }
    let client = connect_patiently(&opts.coordinator, opts.reconnect_patience, key).await?;
    let report = AgentReport {
        name: client.name().to_owned(),
        federation: client.federation().to_owned(),
        ..Default::default()
    };
    let span = info_span!("participant", name = %report.name);
    info!(parent: &span, federation = %report.federation, "registered");
    let receipts = match &opts.receipts {
        Some(settings) => {
            let mut r = Receipts::new(
                settings.clone(),
                &opts.state_dir,
                client.federation(),
                &client.public_key_hex(),
            )?;
            r.verify_genesis(&store).instrument(span.clone()).await?;
            Some(r)
        }
        None => {
            warn!(parent: &span, "no [ledger] section: this hospital does not check its receipts");
            None
        }
    };
    drive(client, store, source, report, receipts, opts)
        .instrument(span)
        .await
}

async fn drive(
    mut client: Client,
    store: LocalStore,
    mut source: Box<dyn UpdateSource>,
    mut report: AgentReport,
    mut receipts: Option<Receipts>,
    opts: AgentOptions,
) -> Result<AgentReport, AgentError> {
    let mut progress = Progress::new(opts.progress, &report.name, opts.epsilon_budget);
    let mut unreachable_since: Option<Instant> = None;
    // The last round this agent answered, and the federation's rounds as the last task said.
    let mut answered_last: Option<(u64, u64)> = None;
    // The governed schema the local data was last checked against.
    let mut checked_schema: Option<pb::DataSchema> = None;
    loop {
        let task = match client.task().await {
            Ok(t) => {
                unreachable_since = None;
                t
            }
            Err(ClientError::BadTask {
                round,
                total,
                reason,
            }) => {
                // Judged from the task alone, before anything was allocated or trained: decline
                // (once per round) and wait for a better one.
                unreachable_since = None;
                if !report.rounds_declined.iter().any(|(r, _)| *r == round) {
                    let expect = receipts.is_some();
                    let msg =
                        decline(&mut client, &store, round, reason, &mut report, expect).await?;
                    progress.round(round, &msg, report.epsilon_spent);
                }
                answered_last = Some((round, total));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => {
                if let Some((round, total)) = answered_last.filter(|(r, t)| r >= t)
                    && gone(&e)
                {
                    // The coordinator stops serving some time after the last round: nothing
                    // is left to wait for.
                    let unchecked = match receipts.as_mut() {
                        Some(r) => {
                            r.poll(&mut client, &store).await?;
                            report.receipts = r.stats.clone();
                            report.settled = r.settled.clone();
                            r.pending(&store)?.iter().map(|p| p.round).collect()
                        }
                        None => Vec::new(),
                    };
                    info!(round, total, error = %e, "coordinator gone after the last round");
                    progress.finished(
                        "over (coordinator gone after the last round)",
                        report.rounds_sent.len(),
                        report.rounds_declined.len(),
                        report.epsilon_spent,
                    );
                    report.ended = Ended::CoordinatorGone {
                        round,
                        total,
                        unchecked,
                    };
                    return Ok(report);
                }
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
        progress.total(task.header.total_rounds);
        if let Some(schema) = &task.header.schema
            && checked_schema.as_ref() != Some(schema)
        {
            source.check_schema(schema).map_err(AgentError::Schema)?;
            info!(
                features = schema.features.len(),
                "local data has every governed feature column"
            );
            checked_schema = Some(schema.clone());
        }
        match task.state() {
            pb::TaskState::Done => {
                if let Some(r) = receipts.as_mut() {
                    r.wait(&mut client, &store, None).await?;
                    report.receipts = r.stats.clone();
                    report.settled = r.settled.clone();
                }
                report.final_params = task.params;
                progress.finished(
                    "finished",
                    report.rounds_sent.len(),
                    report.rounds_declined.len(),
                    report.epsilon_spent,
                );
                info!(rounds = report.rounds_sent.len(), "federation finished");
                return Ok(report);
            }
            pb::TaskState::Train => {
                let round = task.header.round;
                // An update already prepared for this round (spent for, perhaps sent before a
                // crash) is sent again as it was; a settled round is never trained again.
                let work = match store.prepared(client.federation(), round)? {
                    Some((p, Some(delta))) => {
                        info!(round, "sending the update prepared before a restart");
                        Work::Update {
                            delta,
                            examples: p.examples,
                            spend: p.spend,
                        }
                    }
                    Some((_, None)) => {
                        info!(
                            round,
                            "round answered before a restart; waiting for the next"
                        );
                        answered_last = Some((round, task.header.total_rounds));
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                    None => {
                        if let Some(r) = receipts.as_mut() {
                            // Round r's receipt before anything is spent or sent for round r + 2.
                            r.wait(&mut client, &store, round.checked_sub(2)).await?;
                        }
                        let spent = store.spends()?;
                        let (back, work) = answer(source, task.clone(), spent).await?;
                        source = back;
                        work.map_err(|source| AgentError::Source { round, source })?
                    }
                };
                let sent_before = report.rounds_sent.len();
                let expect = receipts.is_some();
                let msg = handle(&mut client, &store, &task, work, &mut report, expect).await?;
                answered_last = Some((round, task.header.total_rounds));
                if report.rounds_sent.len() > sent_before {
                    source.submitted(round);
                }
                progress.round(round, &msg, report.epsilon_spent);
            }
            _ => {
                if let Some(r) = receipts.as_mut() {
                    r.poll(&mut client, &store).await?;
                }
                let wait = task.header.retry_after_ms.clamp(10, 5_000);
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
        }
    }
}

async fn answer(
    mut source: Box<dyn UpdateSource>,
    task: Task,
    spent: Vec<SpendRecord>,
) -> Result<(Box<dyn UpdateSource>, Result<Work, SourceError>), AgentError> {
    // Training is CPU-bound: keep it off the async workers.
    tokio::task::spawn_blocking(move || {
        let w = source.work(&task, &spent);
        (source, w)
    })
    .await
    .map_err(|e| AgentError::Join(e.to_string()))
}

async fn handle(
    client: &mut Client,
    store: &LocalStore,
    task: &Task,
    work: Work,
    report: &mut AgentReport,
    expect_receipt: bool,
) -> Result<String, AgentError> {
    let round = task.header.round;
    let federation = client.federation().to_owned();
    match work {
        Work::Decline(reason) => {
            decline(client, store, round, reason, report, expect_receipt).await
        }
        Work::Update {
            delta,
            examples,
            spend,
        } => {
            // Privacy first: the spend, and the update itself, are on disk before a single byte
            // of the update leaves (a crash then sends these same bytes, never a second update).
            let prepared = PreparedUpdate {
                federation: federation.clone(),
                round,
                examples,
                update_sha256: fedledger_model::digest::vector_sha256(&delta),
                spend: spend.clone(),
                settled: false,
            };
            if store.prepared(&federation, round)?.is_none() {
                store.record_prepared(&prepared, &delta)?;
            }
            if let Some(s) = &spend {
                report.epsilon_spent = s.epsilon_total;
                // A crash from here on must find the spend on disk.
                #[cfg(feature = "failpoints")]
                fail::fail_point!("participant::after_spend_flush", |detail| {
                    Err(AgentError::Failpoint {
                        point: "participant::after_spend_flush",
                        round,
                        detail: detail.unwrap_or_default(),
                    })
                });
            }
            let privacy = crate::dp::privacy_object(spend.as_ref());
            // The last point before the first byte of the update leaves.
            #[cfg(feature = "failpoints")]
            fail::fail_point!("participant::before_send", |detail| {
                Err(AgentError::Failpoint {
                    point: "participant::before_send",
                    round,
                    detail: detail.unwrap_or_default(),
                })
            });
            let sha = &prepared.update_sha256;
            let receipt = match client
                .submit_digested(round, examples, &delta, sha.clone(), &privacy)
                .await
            {
                Err(e) if e.code() == Some(Code::Unauthenticated) => {
                    client.register().await?;
                    client
                        .submit_digested(round, examples, &delta, sha.clone(), &privacy)
                        .await
                }
                other => other,
            };
            if receipt.is_ok() || receipt.as_ref().is_err_and(tolerable) {
                store.settle_prepared(&prepared)?;
            }
            // A resend after a crash that the coordinator already holds: the first copy was
            // acknowledged (only this update was ever prepared for the round), so it is recorded
            // as sent and its receipt checks that the ledger holds exactly these bytes.
            let receipt = match receipt {
                Err(e) if already_submitted(&e) => Ok(pb::SubmitReceipt {
                    round,
                    update_sha256: prepared.update_sha256.clone(),
                    accepted: 0,
                    quorum: 0,
                }),
                other => other,
            };
            match receipt {
                Ok(r) => {
                    store.record_round(&RoundRecord {
                        round,
                        federation,
                        action: "sent".into(),
                        update_sha256: Some(r.update_sha256.clone()),
                        reason: None,
                        examples: Some(examples),
                        privacy: Some(privacy.clone()),
                        receipt: expect_receipt.then(|| receipt_state::PENDING.to_owned()),
                    })?;
                    report.rounds_sent.push(round);
                    let eps = spend
                        .as_ref()
                        .map(|s| format!(", epsilon {:.3}", s.epsilon_total))
                        .unwrap_or_default();
                    info!(
                        round,
                        examples,
                        accepted = r.accepted,
                        quorum = r.quorum,
                        "update sent{eps}"
                    );
                    Ok(format!("sent ({} of quorum {}){eps}", r.accepted, r.quorum))
                }
                Err(e) if tolerable(&e) => {
                    warn!(round, error = %e, "update not accepted; waiting for the next round");
                    Ok("update too late".into())
                }
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// Decline `round` with a one-line reason (registering again first if the session expired),
/// and record it locally.
async fn decline(
    client: &mut Client,
    store: &LocalStore,
    round: u64,
    reason: String,
    report: &mut AgentReport,
    expect_receipt: bool,
) -> Result<String, AgentError> {
    let reason = reason.replace('\n', " ");
    warn!(round, %reason, "declining round");
    let sent = match client.decline(round, &reason).await {
        Err(e) if e.code() == Some(Code::Unauthenticated) => {
            client.register().await?;
            client.decline(round, &reason).await
        }
        other => other,
    };
    let acknowledged = match sent {
        Ok(()) => true,
        Err(e) if tolerable(&e) => {
            warn!(round, error = %e, "decline not recorded");
            false
        }
        Err(e) => return Err(e.into()),
    };
    store.record_round(&RoundRecord {
        round,
        federation: client.federation().to_owned(),
        action: "declined".into(),
        update_sha256: None,
        reason: Some(reason.clone()),
        examples: None,
        privacy: None,
        receipt: (expect_receipt && acknowledged).then(|| receipt_state::PENDING.to_owned()),
    })?;
    report.rounds_declined.push((round, reason.clone()));
    Ok(format!("declined: {reason}"))
}

/// Refusals that mean "the round moved on", not "something is wrong with us".
/// The coordinator already holds an answer of this participant for the round.
fn already_submitted(e: &ClientError) -> bool {
    matches!(e, ClientError::Refused { code: Code::AlreadyExists, message, .. }
        if message.contains("already submitted"))
}

fn tolerable(e: &ClientError) -> bool {
    matches!(
        e.code(),
        Some(Code::FailedPrecondition | Code::AlreadyExists)
    )
}

/// Dial and register, retrying with backoff while the coordinator is unreachable, for at most
/// `patience`.
pub(crate) async fn connect_patiently(
    coordinator: &crate::link::Link,
    patience: Duration,
    key: Arc<Ed25519KeyPair>,
) -> Result<Client, AgentError> {
    let start = Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        match Client::connect_with(coordinator, key.clone()).await {
            Ok(c) => return Ok(c),
            Err(e) if retryable(&e) && start.elapsed() < patience => {
                warn!(error = %e, "coordinator not reachable yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) if retryable(&e) => {
                return Err(AgentError::Unreachable {
                    secs: patience.as_secs(),
                    last: e.to_string(),
                });
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The coordinator no longer answers (closed, reset, refused): after the last round, the sign
/// that it has stopped serving.
pub(crate) fn gone(e: &ClientError) -> bool {
    retryable(e) || e.code() == Some(Code::Cancelled)
}

fn retryable(e: &ClientError) -> bool {
    match e {
        ClientError::Connect { .. } => true,
        ClientError::Tls { .. } => false,
        ClientError::Refused { code, .. } => matches!(code, Code::Unavailable | Code::Unknown),
        ClientError::Protocol { .. } | ClientError::BadTask { .. } => false,
    }
}

/// After a failed call: register again when the session is gone, wait while the coordinator
/// is unreachable (for at most `patience` in all), give up on anything else.
pub(crate) async fn recover(
    client: &mut Client,
    e: ClientError,
    unreachable_since: &mut Option<Instant>,
    patience: Duration,
) -> Result<(), AgentError> {
    if e.code() == Some(Code::Unauthenticated) {
        info!("session expired (coordinator restarted?); registering again");
        match client.register().await {
            Ok(()) => return Ok(()),
            Err(e2) if retryable(&e2) => {}
            Err(e2) => return Err(e2.into()),
        }
    } else if !retryable(&e) {
        return Err(e.into());
    }
    let since = *unreachable_since.get_or_insert_with(Instant::now);
    if since.elapsed() > patience {
        return Err(AgentError::Unreachable {
            secs: patience.as_secs(),
            last: e.to_string(),
        });
    }
    warn!(error = %e, "coordinator unreachable; retrying");
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}
