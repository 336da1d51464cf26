//! The gRPC face of the coordinator: translates wire messages to the round state machine's
//! domain calls and back, and nothing more.

use std::{pin::Pin, sync::Arc, time::Duration};

use fedledger_proto as pb;
use futures::{Stream, StreamExt, stream};
use tokio::sync::Notify;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, warn};

use crate::{
    error::CoordinatorError,
    round::{Coordinator, Phase, PrivacySpend, RoundOutcome, UpdateHeader},
};

/// The tonic service.
pub struct Service {
    coord: Arc<Coordinator>,
    wake: Arc<Notify>,
    long_poll: Duration,
}

impl Service {
    /// `wake` is notified when a round may be ready to close; `long_poll` is how long a `GetTask`
    /// with nothing to do waits for the next round before answering WAIT.
    pub fn new(coord: Arc<Coordinator>, wake: Arc<Notify>, long_poll: Duration) -> Self {
        Self {
            coord,
            wake,
            long_poll,
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Coordinator) -> Result<T, CoordinatorError> + Send + 'static,
    ) -> Result<T, Status> {
        let c = self.coord.clone();
        tokio::task::spawn_blocking(move || f(&c))
            .await
            .map_err(|e| Status::internal(format!("worker failed: {e}")))?
            .map_err(Status::from)
    }
}

fn privacy_from_wire(p: pb::PrivacySpend) -> Result<PrivacySpend, CoordinatorError> {
    let accountant = p
        .accountant
        .parse()
        .map_err(|e| CoordinatorError::BadPrivacyReport(format!("{e}")))?;
    Ok(PrivacySpend {
        epsilon_total: p.epsilon_total,
        epsilon_round: p.epsilon_round,
        delta: p.delta,
        noise_multiplier: p.noise_multiplier,
        sampling_rate: p.sampling_rate,
        steps: p.steps,
        accountant,
    })
}

fn outcome_to_wire(o: &RoundOutcome) -> pb::RoundResult {
    let m = o.metrics.as_ref();
    pb::RoundResult {
        round: o.round,
        status: o.status.as_str().to_owned(),
        reason: o.reason.clone().unwrap_or_default(),
        model_before_sha256: o.model_before.clone(),
        model_after_sha256: o.model_after.clone(),
        accuracy: m.map_or(f64::NAN, |m| m.accuracy),
        log_loss: m.map_or(f64::NAN, |m| m.log_loss),
        auc: m.and_then(|m| m.auc).unwrap_or(f64::NAN),
        contributions: o
            .contributions
            .iter()
            .map(|c| pb::Contribution {
                participant: c.public_key.clone(),
                name: c.name.clone(),
                examples: c.examples,
                update_sha256: c.update_sha256.clone(),
                value_nano: c.value_nano,
                reward: c.reward,
                flags: c.flags.clone(),
            })
            .collect(),
        declined: o
            .declined
            .iter()
            .map(|d| pb::Declined {
                participant: d.public_key.clone(),
                name: d.name.clone(),
                reason: d.reason.clone(),
            })
            .collect(),
        ledger_record: Default::default(),
    }
}

type TaskStream = Pin<Box<dyn Stream<Item = Result<pb::TaskMessage, Status>> + Send>>;

#[tonic::async_trait]
impl pb::coordinator_server::Coordinator for Service {
    async fn challenge(
        &self,
        req: Request<pb::ChallengeRequest>,
    ) -> Result<Response<pb::ChallengeResponse>, Status> {
        let key = req.into_inner().public_key;
        let (challenge, expires) = self.coord.challenge(&key)?;
        Ok(Response::new(pb::ChallengeResponse {
            federation: self.coord.config().federation.clone(),
            challenge: challenge.to_vec(),
            expires_unix_ms: expires,
        }))
    }

    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let r = req.into_inner();
        let (session, name) = self
            .blocking(move |c| c.register(&r.public_key, &r.challenge, &r.signature))
            .await?;
        Ok(Response::new(pb::RegisterResponse {
            session: session.to_vec(),
            name,
            federation: self.coord.config().federation.clone(),
        }))
    }

    type GetTaskStream = TaskStream;

    async fn get_task(
        &self,
        req: Request<pb::TaskRequest>,
    ) -> Result<Response<Self::GetTaskStream>, Status> {
        let session = req.into_inner().session;
        let mut watch = self.coord.subscribe();
        let mut view = self.coord.task(&session)?;
        if !view.train && view.phase != Phase::Done {
            // Long poll: answer as soon as something changes, so a new round reaches waiting
            // participants at once instead of at their next poll.
            let deadline = tokio::time::Instant::now() + self.long_poll;
            while !view.train && view.phase != Phase::Done {
                match tokio::time::timeout_at(deadline, watch.changed()).await {
                    Ok(Ok(())) => view = self.coord.task(&session)?,
                    _ => break,
                }
            }
        }
        let cfg = self.coord.config();
        let state = match (view.phase, view.train) {
            (_, true) => pb::TaskState::Train,
            (Phase::Done, _) => pb::TaskState::Done,
            _ => pb::TaskState::Wait,
        };
        let t = &cfg.training;
        let header = pb::TaskHeader {
            state: state as i32,
            federation: cfg.federation.clone(),
            round: view.round,
            model: Some(pb::ModelSpec {
                kind: cfg.model.kind.as_str().into(),
                features: cfg.model.features as u32,
                classes: cfg.model.classes as u32,
                hidden: cfg.model.hidden.iter().map(|h| *h as u32).collect(),
            }),
            label_column: cfg.label_column.clone(),
            feature_names: cfg.validation.feature_names.clone(),
            hyper: Some(pb::HyperParameters {
                local_epochs: t.local_epochs,
                batch_size: t.batch_size,
                learning_rate: t.learning_rate,
                clip_norm: t.clip_norm,
                noise_multiplier: t.noise_multiplier,
            }),
            standardisation: cfg.standardisation.as_ref().map(|s| pb::Standardisation {
                mean: s.mean.clone(),
                std: s.std.clone(),
            }),
            num_params: view.global.len() as u64,
            model_sha256: view.global_sha256.clone(),
            deadline_unix_ms: view.deadline_ms,
            retry_after_ms: if state == pb::TaskState::Wait { 200 } else { 0 },
            chunk_floats: fedledger_proto::CHUNK_FLOATS as u32,
            total_rounds: cfg.rounds,
            detail: view.detail.clone(),
        };
        let head = stream::once(async move {
            Ok(pb::TaskMessage {
                msg: Some(pb::task_message::Msg::Header(header)),
            })
        });
        let out: TaskStream = if state == pb::TaskState::Wait {
            Box::pin(head)
        } else {
            let global = view.global.clone();
            let chunks = (global.len()).div_ceil(fedledger_proto::CHUNK_FLOATS);
            let body = stream::iter(0..chunks).map(move |i| {
                let start = i * fedledger_proto::CHUNK_FLOATS;
                let end = (start + fedledger_proto::CHUNK_FLOATS).min(global.len());
                Ok(pb::TaskMessage {
                    msg: Some(pb::task_message::Msg::Chunk(pb::ParamChunk {
                        offset: start as u64,
                        data: fedledger_model::digest::vector_to_bytes(&global[start..end]).into(),
                    })),
                })
            });
            Box::pin(head.chain(body))
        };
        Ok(Response::new(out))
    }

    async fn submit_update(
        &self,
        req: Request<Streaming<pb::UpdateMessage>>,
    ) -> Result<Response<pb::SubmitReceipt>, Status> {
        let mut stream = req.into_inner();
        let header = match stream.message().await? {
            Some(pb::UpdateMessage {
                msg: Some(pb::update_message::Msg::Header(h)),
            }) => h,
            _ => return Err(CoordinatorError::MissingHeader.into()),
        };
        let session = header.session.clone();
        let domain = UpdateHeader {
            round: header.round,
            examples: header.examples,
            num_params: header.num_params,
            update_sha256: header.update_sha256,
            signature: header.signature,
            privacy: header.privacy.map(privacy_from_wire).transpose()?,
        };
        let mut pending = self
            .blocking(move |c| c.begin_update(&session, domain))
            .await?;
        while let Some(msg) = stream.message().await? {
            match msg.msg {
                Some(pb::update_message::Msg::Chunk(c)) => {
                    pending.assembler.push(c.offset, &c.data)?
                }
                Some(pb::update_message::Msg::Header(_)) => {
                    return Err(CoordinatorError::DuplicateHeader.into());
                }
                None => {
                    return Err(CoordinatorError::InvalidField {
                        field: "msg",
                        reason: "empty update message".into(),
                    }
                    .into());
                }
            }
        }
        let (receipt, close) = self.blocking(move |c| c.commit_update(pending)).await?;
        if close {
            self.wake.notify_one();
        }
        Ok(Response::new(pb::SubmitReceipt {
            round: receipt.round,
            update_sha256: receipt.update_sha256,
            accepted: receipt.accepted,
            quorum: receipt.quorum,
        }))
    }

    async fn decline(
        &self,
        req: Request<pb::DeclineRequest>,
    ) -> Result<Response<pb::DeclineReceipt>, Status> {
        let r = req.into_inner();
        let round = r.round;
        let close = self
            .blocking(move |c| c.decline(&r.session, r.round, &r.reason, &r.signature))
            .await?;
        if close {
            self.wake.notify_one();
        }
        Ok(Response::new(pb::DeclineReceipt { round }))
    }

    async fn get_round_result(
        &self,
        req: Request<pb::RoundResultRequest>,
    ) -> Result<Response<pb::RoundResult>, Status> {
        let r = req.into_inner();
        self.coord.check_session(&r.session)?;
        let (outcome, record) = self
            .blocking(move |c| Ok((c.outcome(r.round)?, c.ledger_record(r.round))))
            .await?;
        let mut wire = outcome_to_wire(&outcome);
        wire.ledger_record = record.unwrap_or_default();
        Ok(Response::new(wire))
    }
}

/// Close rounds when they are due: woken by the service when everyone has answered, and by a
/// timer at the deadline. Runs until `shutdown` resolves.
pub async fn drive_rounds(
    coord: Arc<Coordinator>,
    wake: Arc<Notify>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let now = crate::round::now_ms();
        if coord.due(now) {
            let c = coord.clone();
            match tokio::task::spawn_blocking(move || c.close_if_due()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    warn!(error = %e, "closing the round failed; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => warn!(error = %e, "round closing task panicked"),
            }
            continue;
        }
        let wait = coord
            .until_deadline(now)
            .map_or(Duration::from_secs(1), |ms| {
                Duration::from_millis(ms.clamp(1, 1000))
            });
        tokio::select! {
            _ = &mut shutdown => { debug!("round driver stopping"); return; }
            _ = wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
