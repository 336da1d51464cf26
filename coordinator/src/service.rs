//! The gRPC face of the coordinator: translates wire messages to the engine's domain calls and
//! back, and nothing more; domain errors become gRPC statuses here, in one place
//! ([`Service::refuse`]), which also names the refused request in the status, counts the
//! refusal by reason and logs it once (rate-limited) with its peer.

use std::{net::SocketAddr, pin::Pin, sync::Arc, time::Duration};

use fedledger_proto as pb;
use futures::{Stream, StreamExt, stream};
use tokio::time::Instant;
use tonic::{Request, Response, Status, Streaming};

use crate::{
    config::{FederationConfig, Limits},
    engine::Engine,
    error::CoordinatorError,
    refusal::Reason,
    types::{Phase, PrivacyObject, RoundOutcome, UpdateHeader},
};

/// The tonic service.
pub struct Service {
    engine: Arc<Engine>,
    long_poll: Duration,
    limits: Limits,
}

/// Why a call failed: a domain refusal, or the wire (a message that did not decode, did not
/// arrive in time, or a stream the peer broke off).
enum Failure {
    Domain(CoordinatorError),
    Wire(Reason, Status),
}

impl From<CoordinatorError> for Failure {
    fn from(e: CoordinatorError) -> Self {
        Failure::Domain(e)
    }
}

impl From<Status> for Failure {
    fn from(s: Status) -> Self {
        Failure::Wire(Reason::Malformed, s)
    }
}

impl Service {
    /// `long_poll` is how long a `GetTask` with nothing to do waits for the next round before
    /// answering WAIT; `limits` are the configured `[limits]`.
    pub fn new(engine: Arc<Engine>, long_poll: Duration, limits: Limits) -> Self {
        Self {
            engine,
            long_poll,
            limits,
        }
    }

    /// Run an engine call that may block on disk off the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Engine) -> Result<T, CoordinatorError> + Send + 'static,
    ) -> Result<T, Failure> {
        let e = self.engine.clone();
        Ok(tokio::task::spawn_blocking(move || f(&e))
            .await
            .map_err(|e| CoordinatorError::Internal(format!("worker failed: {e}")))??)
    }

    /// The one place a failure becomes a status: named after the `request` it refuses, counted
    /// by reason, logged once (rate-limited) with the peer.
    fn refuse(&self, request: &'static str, peer: Option<SocketAddr>, f: Failure) -> Status {
        let (reason, status) = match f {
            Failure::Domain(e) => (Reason::from(&e), Status::from(e)),
            Failure::Wire(reason, s) => (reason, s),
        };
        let verb = if reason == Reason::Internal {
            "failed"
        } else {
            "refused"
        };
        let message = format!("{request} {verb}: {}", status.message());
        self.engine
            .refusals()
            .record(reason, request, peer, &message);
        Status::new(status.code(), message)
    }

    /// The next message of an upload: within the per-message timeout and before the upload's
    /// deadline, or a precise refusal.
    async fn next_message(
        &self,
        stream: &mut Streaming<pb::UpdateMessage>,
        deadline: Instant,
    ) -> Result<Option<pb::UpdateMessage>, Failure> {
        let idle = Instant::now() + self.limits.message_timeout;
        match tokio::time::timeout_at(idle.min(deadline), stream.message()).await {
            Ok(m) => Ok(m?),
            Err(_) if idle <= deadline => Err(Failure::Wire(
                Reason::MessageTimeout,
                Status::deadline_exceeded(format!(
                    "no complete update message arrived within {} s of the previous one \
                     (limits.message_timeout_secs)",
                    self.limits.message_timeout.as_secs_f64()
                )),
            )),
            Err(_) => Err(Failure::Wire(
                Reason::Deadline,
                Status::deadline_exceeded(format!(
                    "the update did not arrive whole within its deadline of {} s \
                     (limits.message_timeout_secs + model size / limits.min_upload_kib_per_sec)",
                    self.limits
                        .upload_deadline(self.engine.config().model.num_params())
                        .as_secs_f64()
                )),
            )),
        }
    }
}

fn privacy_from_wire(p: pb::PrivacySpend) -> PrivacyObject {
    PrivacyObject {
        accountant: p.accountant,
        delta_pico: p.delta_pico,
        epsilon_micro: p.epsilon_micro,
        epsilon_round_micro: p.epsilon_round_micro,
        noise_multiplier_micro: p.noise_multiplier_micro,
        sampling_rate_nano: p.sampling_rate_nano,
        steps: p.steps,
    }
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
        ledger_index: 0,
        settlement: o.settlement.as_ref().map(|st| pb::Settlement {
            period: st.period,
            first_round: st.first_round,
            last_round: st.last_round,
            counted_rounds: st.counted_rounds.clone(),
            pool: st.pool,
            lines: st
                .lines
                .iter()
                .map(|l| pb::SettlementLine {
                    participant: l.public_key.clone(),
                    name: l.name.clone(),
                    value_nano: l.value_nano,
                    se_nano: l.se_nano,
                    rounds: l.rounds,
                    distinguishable: l.distinguishable,
                    payout: l.payout,
                })
                .collect(),
        }),
    }
}

/// The value ranges of a vector of `len` values in the chunks both ends send
/// ([`pb::chunk_floats_for`]), for the downloads' streams.
fn chunk_ranges(len: usize) -> impl Iterator<Item = std::ops::Range<usize>> + Send + 'static {
    let chunk = pb::chunk_floats_for(len as u64);
    (0..len)
        .step_by(chunk)
        .map(move |start| start..(start + chunk).min(len))
}

/// The header of a task: the round's rules (model, columns, training, privacy, schema and,
/// with validators, the round's game, fixed before any upload).
fn task_header(
    cfg: &FederationConfig,
    state: pb::TaskState,
    round: u64,
    num_params: u64,
    model_sha256: String,
    deadline_unix_ms: u64,
    detail: String,
) -> pb::TaskHeader {
    let t = &cfg.training;
    pb::TaskHeader {
        state: state as i32,
        federation: cfg.federation.clone(),
        round,
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
        num_params,
        model_sha256,
        deadline_unix_ms,
        retry_after_ms: if state == pb::TaskState::Wait { 200 } else { 0 },
        chunk_floats: fedledger_proto::chunk_floats_for(num_params) as u32,
        total_rounds: cfg.rounds,
        detail,
        accountants: cfg.privacy_plan.accountant_names(),
        planning: t.planning.map(|p| pb::DpPlanning {
            planned_rounds: p.rounds.unwrap_or(cfg.rounds),
            min_batch_size: p.min_batch_size,
            max_batch_size: p.max_batch_size,
            min_steps: p.min_steps,
            max_steps: p.max_steps,
        }),
        schema: cfg.governance.schema.as_ref().map(|s| pb::DataSchema {
            label: s.label.clone(),
            features: s
                .features
                .iter()
                .map(|f| pb::SchemaFeature {
                    name: f.name.clone(),
                    min: f.min.as_deref().and_then(|x| x.parse().ok()),
                    max: f.max.as_deref().and_then(|x| x.parse().ok()),
                })
                .collect(),
        }),
        validators: cfg.validating.as_ref().map(|v| pb::ValidatorsGame {
            seed: crate::value::round_seed(&cfg.federation, round, cfg.valuation.seed),
            exact_max: v.exact_max,
            permutations: v.permutations,
            utility: cfg.valuation.utility.as_str().to_owned(),
        }),
    }
}

type TaskStream = Pin<Box<dyn Stream<Item = Result<pb::TaskMessage, Status>> + Send>>;
type CandidatesStream = Pin<Box<dyn Stream<Item = Result<pb::CandidatesMessage, Status>> + Send>>;

impl Service {
    /// Receive an upload: the header is checked before any chunk is accepted (so a duplicate
    /// or a refused header stores nothing), each message must arrive within the per-message
    /// timeout and the whole upload within its deadline; the blob is written only once every
    /// check has passed.
    async fn receive_update(
        &self,
        mut stream: Streaming<pb::UpdateMessage>,
    ) -> Result<crate::types::Receipt, Failure> {
        let deadline = Instant::now()
            + self
                .limits
                .upload_deadline(self.engine.config().model.num_params());
        let header = match self.next_message(&mut stream, deadline).await? {
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
            privacy: privacy_from_wire(
                header.privacy.ok_or(CoordinatorError::InvalidField {
                    field: "privacy",
                    reason:
                        "an update must carry its privacy object (accountant \"none\" without DP)"
                            .into(),
                })?,
            ),
        };
        let mut upload = self.engine.begin_upload(&session, domain)?;
        let received: Result<(), Failure> = async {
            while let Some(msg) = self.next_message(&mut stream, deadline).await? {
                match msg.msg {
                    Some(pb::update_message::Msg::Chunk(c)) => {
                        upload.push(c.offset, c.data).await?
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
            Ok(())
        }
        .await;
        if let Err(e) = received {
            // The partial file is gone before the refusal is answered.
            let _ = tokio::task::spawn_blocking(move || upload.abandon()).await;
            return Err(e);
        }
        Ok(tokio::task::spawn_blocking(move || upload.finish())
            .await
            .map_err(|e| CoordinatorError::Internal(format!("worker failed: {e}")))??)
    }
}

#[tonic::async_trait]
impl pb::coordinator_server::Coordinator for Service {
    async fn challenge(
        &self,
        req: Request<pb::ChallengeRequest>,
    ) -> Result<Response<pb::ChallengeResponse>, Status> {
        let peer = req.remote_addr();
        let key = req.into_inner().public_key;
        let c = self
            .engine
            .challenge(&key)
            .map_err(|e| self.refuse("Challenge", peer, e.into()))?;
        Ok(Response::new(pb::ChallengeResponse {
            federation: self.engine.config().federation.clone(),
            challenge: c.challenge,
            expires_unix_ms: c.expires_ms,
        }))
    }

    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let peer = req.remote_addr();
        let r = req.into_inner();
        let reg = self
            .engine
            .register(&r.public_key, &r.challenge, &r.signature)
            .map_err(|e| self.refuse("Register", peer, e.into()))?;
        Ok(Response::new(pb::RegisterResponse {
            session: reg.session.to_vec(),
            name: reg.name,
            federation: self.engine.config().federation.clone(),
        }))
    }

    type GetTaskStream = TaskStream;

    async fn get_task(
        &self,
        req: Request<pb::TaskRequest>,
    ) -> Result<Response<Self::GetTaskStream>, Status> {
        let peer = req.remote_addr();
        let session = req.into_inner().session;
        let refuse = |e: CoordinatorError| self.refuse("GetTask", peer, e.into());
        let mut watch = self.engine.subscribe();
        let (mut view, mut global, mut cfg) = self.engine.task(&session).map_err(refuse)?;
        if !view.train && view.phase != Phase::Done {
            // Long poll: answer as soon as something changes, so a new round reaches waiting
            // participants at once instead of at their next poll.
            let deadline = tokio::time::Instant::now() + self.long_poll;
            while !view.train && view.phase != Phase::Done {
                match tokio::time::timeout_at(deadline, watch.changed()).await {
                    Ok(Ok(())) => {
                        (view, global, cfg) = self.engine.task(&session).map_err(refuse)?
                    }
                    _ => break,
                }
            }
        }
        let state = match (view.phase, view.train) {
            (_, true) => pb::TaskState::Train,
            (Phase::Done, _) => pb::TaskState::Done,
            _ => pb::TaskState::Wait,
        };
        let header = task_header(
            &cfg,
            state,
            view.round,
            global.len() as u64,
            view.global_sha256.clone(),
            view.deadline_ms,
            view.detail.clone(),
        );
        let head = stream::once(async move {
            Ok(pb::TaskMessage {
                msg: Some(pb::task_message::Msg::Header(header)),
            })
        });
        let out: TaskStream = if state == pb::TaskState::Wait {
            Box::pin(head)
        } else {
            let body = stream::iter(chunk_ranges(global.len())).map(move |r| {
                Ok(pb::TaskMessage {
                    msg: Some(pb::task_message::Msg::Chunk(pb::ParamChunk {
                        offset: r.start as u64,
                        // A slice of the model's map: no copy.
                        data: global.le_bytes(r.start, r.end),
                    })),
                })
            });
            Box::pin(head.chain(body))
        };
        Ok(Response::new(out))
    }

    type GetCandidatesStream = CandidatesStream;

    async fn get_candidates(
        &self,
        req: Request<pb::CandidatesRequest>,
    ) -> Result<Response<Self::GetCandidatesStream>, Status> {
        let peer = req.remote_addr();
        let session = req.into_inner().session;
        let refuse = |e: CoordinatorError| self.refuse("GetCandidates", peer, e.into());
        let mut watch = self.engine.subscribe();
        let (mut view, mut game, mut global, mut cfg) =
            self.engine.candidates(&session).map_err(refuse)?;
        if !view.validate && view.phase != Phase::Done {
            // Long poll, as GetTask: answer as soon as a round goes to the validators.
            let deadline = tokio::time::Instant::now() + self.long_poll;
            while !view.validate && view.phase != Phase::Done {
                match tokio::time::timeout_at(deadline, watch.changed()).await {
                    Ok(Ok(())) => {
                        (view, game, global, cfg) =
                            self.engine.candidates(&session).map_err(refuse)?
                    }
                    _ => break,
                }
            }
        }
        let state = match (view.phase, view.validate) {
            (_, true) => pb::CandidatesState::Validate,
            (Phase::Done, _) => pb::CandidatesState::Done,
            _ => pb::CandidatesState::Wait,
        };
        let task = task_header(
            &cfg,
            pb::TaskState::Wait,
            view.round,
            global.len() as u64,
            view.global_sha256.clone(),
            view.deadline_ms,
            String::new(),
        );
        let header = pb::CandidatesHeader {
            state: state as i32,
            task: Some(pb::TaskHeader {
                validators: game.as_ref().map(|g| pb::ValidatorsGame {
                    seed: g.seed,
                    ..task.validators.clone().unwrap_or_default()
                }),
                ..task
            }),
            candidates: view
                .candidates
                .iter()
                .map(|m| {
                    let p = &cfg.participants[m.participant];
                    pb::Candidate {
                        participant: p.public_key_hex.clone(),
                        name: p.name.clone(),
                        examples: m.examples,
                        update_sha256: m.update_sha256.clone(),
                    }
                })
                .collect(),
            deadline_unix_ms: view.deadline_ms,
            retry_after_ms: if state == pb::CandidatesState::Wait {
                200
            } else {
                0
            },
            detail: view.detail.clone(),
        };
        let head = stream::once(async move {
            Ok(pb::CandidatesMessage {
                msg: Some(pb::candidates_message::Msg::Header(header)),
            })
        });
        if state != pb::CandidatesState::Validate {
            return Ok(Response::new(Box::pin(head)));
        }
        // The global parameters, then each candidate read from disk in turn (one update in
        // memory at a time).
        let engine = self.engine.clone();
        let digests: Vec<String> = view
            .candidates
            .iter()
            .map(|m| m.update_sha256.clone())
            .collect();
        let vectors = stream::iter(0..=digests.len()).then(move |k| {
            let engine = engine.clone();
            let global = global.clone();
            let digest = k.checked_sub(1).map(|i| digests[i].clone());
            async move {
                let values: Arc<fedledger_memory::StoredVector> = match digest {
                    None => global,
                    Some(d) => Arc::new(
                        tokio::task::spawn_blocking(move || engine.candidate(&d))
                            .await
                            .map_err(|e| Status::internal(format!("worker failed: {e}")))?
                            .map_err(Status::from)?,
                    ),
                };
                Ok::<_, Status>((k as u32, values))
            }
        });
        let body = vectors.flat_map(|r| match r {
            Err(e) => stream::iter(vec![Err(e)]).boxed(),
            Ok((vector, values)) => stream::iter(chunk_ranges(values.len()))
                .map(move |r| {
                    Ok(pb::CandidatesMessage {
                        msg: Some(pb::candidates_message::Msg::Chunk(pb::VectorChunk {
                            vector,
                            offset: r.start as u64,
                            data: fedledger_model::digest::vector_to_bytes(&values[r]),
                        })),
                    })
                })
                .boxed(),
        });
        Ok(Response::new(Box::pin(head.chain(body))))
    }

    async fn submit_utilities(
        &self,
        req: Request<pb::UtilitiesRequest>,
    ) -> Result<Response<pb::UtilitiesReceipt>, Status> {
        let peer = req.remote_addr();
        let r = req.into_inner();
        let round = r.round;
        let (digest, received, quorum) = self
            .blocking(move |e| {
                e.submit_utilities(
                    &r.session,
                    r.round,
                    &r.coalitions_sha256,
                    r.utilities,
                    &r.signature,
                )
            })
            .await
            .map_err(|f| self.refuse("SubmitUtilities", peer, f))?;
        Ok(Response::new(pb::UtilitiesReceipt {
            round,
            utilities_sha256: digest,
            received,
            quorum,
        }))
    }

    async fn submit_update(
        &self,
        req: Request<Streaming<pb::UpdateMessage>>,
    ) -> Result<Response<pb::SubmitReceipt>, Status> {
        let peer = req.remote_addr();
        let receipt = self
            .receive_update(req.into_inner())
            .await
            .map_err(|f| self.refuse("SubmitUpdate", peer, f))?;
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
        let peer = req.remote_addr();
        let r = req.into_inner();
        let round = r.round;
        self.blocking(move |e| e.decline(&r.session, r.round, &r.reason, &r.signature))
            .await
            .map_err(|f| self.refuse("Decline", peer, f))?;
        Ok(Response::new(pb::DeclineReceipt { round }))
    }

    async fn get_round_result(
        &self,
        req: Request<pb::RoundResultRequest>,
    ) -> Result<Response<pb::RoundResult>, Status> {
        let peer = req.remote_addr();
        let r = req.into_inner();
        let refuse = |f: Failure| self.refuse("GetRoundResult", peer, f);
        self.engine
            .check_session(&r.session)
            .map_err(|e| refuse(e.into()))?;
        let (outcome, record) = self
            .blocking(move |c| Ok((c.outcome(r.round)?, c.ledger_record(r.round))))
            .await
            .map_err(refuse)?;
        let mut wire = outcome_to_wire(&outcome);
        if let Some((bytes, index)) = record {
            wire.ledger_record = bytes;
            wire.ledger_index = index;
        }
        Ok(Response::new(wire))
    }

    async fn submit_proposal(
        &self,
        req: Request<pb::ProposalRequest>,
    ) -> Result<Response<pb::ProposalReceipt>, Status> {
        let peer = req.remote_addr();
        let r = req.into_inner();
        let signatures = r
            .signatures
            .into_iter()
            .map(|s| fedledger_ledger::records::GovernorSignature {
                governor: s.governor,
                signature: s.signature,
            })
            .collect();
        let proposal = r.proposal;
        let from_round = serde_json::from_slice::<serde_json::Value>(&proposal)
            .ok()
            .and_then(|v| v.get("from_round").and_then(serde_json::Value::as_u64))
            .unwrap_or(0);
        let ledger_index = self
            .blocking(move |c| c.submit_proposal(&proposal, signatures))
            .await
            .map_err(|f| self.refuse("SubmitProposal", peer, f))?;
        Ok(Response::new(pb::ProposalReceipt {
            ledger_index,
            from_round,
        }))
    }

    async fn list_proposals(
        &self,
        _req: Request<pb::ListProposalsRequest>,
    ) -> Result<Response<pb::ProposalList>, Status> {
        let (proposals, open_round, head) = self.engine.proposals();
        Ok(Response::new(pb::ProposalList {
            proposals: proposals
                .iter()
                .map(|p| pb::ProposalStatus {
                    proposal: p.canonical().unwrap_or_default(),
                    from_round: p.from_round,
                    applied: p.from_round <= open_round,
                })
                .collect(),
            open_round,
            head,
        }))
    }
}

/// The one translation of domain errors into gRPC statuses.
impl From<CoordinatorError> for tonic::Status {
    fn from(e: CoordinatorError) -> Self {
        use CoordinatorError as E;
        use tonic::Code;
        let code = match &e {
            E::NotEnrolled { .. }
            | E::BadUpdateSignature { .. }
            | E::BadDeclineSignature { .. } => Code::PermissionDenied,
            E::BadChallenge | E::BadRegistrationSignature { .. } | E::NoSession => {
                Code::Unauthenticated
            }
            E::WrongRound { .. } | E::NoOpenRound { .. } | E::RoundNotFinished { .. } => {
                Code::FailedPrecondition
            }
            E::AlreadySubmitted { .. } | E::InFlight { .. } => Code::AlreadyExists,
            E::NoSuchRound { .. } => Code::NotFound,
            E::Proposal(r) => {
                use fedledger_ledger::records::Refusal as R;
                match r {
                    R::NotGovernor(_) | R::BadSignature(_) | R::UnderSigned { .. } => {
                        Code::PermissionDenied
                    }
                    R::Malformed(_) => Code::InvalidArgument,
                    _ => Code::FailedPrecondition,
                }
            }
            E::ChunkTooLarge { .. } => Code::ResourceExhausted,
            E::MalformedKey(_)
            | E::DimensionMismatch { .. }
            | E::NonFinite { .. }
            | E::ChunkOutOfOrder { .. }
            | E::Truncated { .. }
            | E::MissingHeader
            | E::DuplicateHeader
            | E::DigestMismatch { .. }
            | E::NormTooLarge { .. }
            | E::BadExampleCount { .. }
            | E::BadPrivacyReport(_)
            | E::InvalidField { .. } => Code::InvalidArgument,
            E::Store(_) | E::Model(_) | E::Ledger(_) | E::Internal(_) | E::Config(_) => {
                Code::Internal
            }
        };
        tonic::Status::new(code, e.to_string())
    }
}
