//! The participant's side of the wire protocol: register with a signed challenge, pull tasks,
//! push signed updates in chunks, decline rounds. Always dials out.

use fedledger_proto as pb;
use pb::coordinator_client::CoordinatorClient;
use std::sync::Arc;

use ring::signature::Ed25519KeyPair;
use tonic::{Code, transport::Channel};

use fedledger_ledger::records::PrivacyObject;
use fedledger_model::digest::vector_sha256;

use crate::keys::public_key_hex;
use crate::link::{ALPN_H2, Link, LinkSettings};

/// HTTP/2 flow-control windows for what the coordinator sends (the global model): several
/// chunks, so the coordinator keeps sending while this end hashes and converts the chunk
/// before.
const DOWNLOAD_STREAM_WINDOW: u32 = 8 * 1024 * 1024;
const DOWNLOAD_CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;

/// Largest HTTP/2 frame this end accepts: a chunk arrives in a frame or two instead of sixty-four
/// of 16 KiB.
const MAX_FRAME_BYTES: u32 = 1024 * 1024;

/// Chunks of the global model received ahead of its hashing thread.
const HASH_QUEUE: usize = 4;

/// Update messages converted ahead of what the connection has taken: bounds the memory of an
/// upload in flight to a few chunks beyond the HTTP/2 buffers.
const UPLOAD_QUEUE: usize = 2;

/// A TCP connection (and tunnel, and TLS handshake) must be up within this.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// The TLS failure inside a connection error, if that is what it is.
fn tls_failure(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return Some(t.to_string());
        }
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            && let Some(t) = inner.downcast_ref::<rustls::Error>()
        {
            return Some(t.to_string());
        }
        cur = err.source();
    }
    None
}

/// Protocol-level failures.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect to coordinator {addr}: {source}")]
    Connect {
        addr: String,
        source: tonic::transport::Error,
    },
    /// The TLS handshake failed on a certificate (not trusted, not for this name, expired) or
    /// on the protocol: retrying will not help.
    #[error("connect to coordinator {addr}: TLS: {reason}")]
    Tls { addr: String, reason: String },
    #[error("coordinator refused {call}: {code:?}: {message}")]
    Refused {
        call: &'static str,
        code: Code,
        message: String,
    },
    #[error("protocol error in {call}: {reason}")]
    Protocol { call: &'static str, reason: String },
    /// A training task this participant will not take, judged from its header alone before
    /// anything is allocated or read: the agent declines the round with `reason`.
    #[error("task for round {round} refused: {reason}")]
    BadTask {
        round: u64,
        /// The federation's rounds, as the task said.
        total: u64,
        reason: String,
    },
}

impl ClientError {
    fn refused(call: &'static str, s: tonic::Status) -> Self {
        ClientError::Refused {
            call,
            code: s.code(),
            message: s.message().to_owned(),
        }
    }

    /// The gRPC code when the coordinator refused the call.
    pub fn code(&self) -> Option<Code> {
        match self {
            ClientError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Most parameters a task may carry (2^27 values, 512 MiB as f32): a task declaring more is
/// declined before anything is allocated.
pub const MAX_MODEL_PARAMS: u64 = 1 << 27;

/// Parameters of the model a task header describes, computed without overflow; `None` when
/// the description is invalid or the count exceeds [`MAX_MODEL_PARAMS`].
fn model_params(m: &pb::ModelSpec) -> Result<u64, String> {
    let kind: fedledger_model::ModelKind = m.kind.parse().map_err(|e| format!("{e}"))?;
    let spec = fedledger_model::ModelSpec {
        kind,
        features: m.features as usize,
        classes: m.classes as usize,
        hidden: m.hidden.iter().map(|h| *h as usize).collect(),
    };
    spec.validate().map_err(|e| e.to_string())?;
    let outputs = if m.classes == 2 {
        1
    } else {
        u64::from(m.classes)
    };
    let mut widths = vec![u64::from(m.features)];
    widths.extend(m.hidden.iter().map(|h| u64::from(*h)));
    widths.push(outputs);
    let too_large = || format!("the model has more than {MAX_MODEL_PARAMS} parameters");
    let mut total = 0u64;
    for w in widths.windows(2) {
        let layer = w[0]
            .checked_mul(w[1])
            .and_then(|p| p.checked_add(w[1]))
            .ok_or_else(too_large)?;
        total = total.checked_add(layer).ok_or_else(too_large)?;
        if total > MAX_MODEL_PARAMS {
            return Err(too_large());
        }
    }
    Ok(total)
}

/// Check a training task's header before anything is allocated or trained: the declared
/// parameter count against the model it describes (and [`MAX_MODEL_PARAMS`]), the chunk size,
/// and the hyper-parameters against the participant's fixed bounds. Judged from the task alone.
pub fn check_task_header(header: &pb::TaskHeader) -> Result<(), String> {
    let model = header
        .model
        .as_ref()
        .ok_or_else(|| "the task describes no model".to_owned())?;
    let params = model_params(model)?;
    if header.num_params != params {
        return Err(format!(
            "the task declares {} parameters but its model ({} with {} features, {} classes, \
             hidden {:?}) has {params}",
            header.num_params, model.kind, model.features, model.classes, model.hidden
        ));
    }
    let hyper = header
        .hyper
        .as_ref()
        .ok_or_else(|| "the task carries no hyper-parameters".to_owned())?;
    if let Some(reason) = hyper_out_of_bounds(hyper) {
        return Err(reason);
    }
    Ok(())
}

/// The bounds a task's hyper-parameters must lie in, whatever the coordinator asks (a task
/// outside them is declined before anything is trained or spent). Wide enough for any sensible
/// federation, narrow enough that no arithmetic on them overflows or allocates without bound.
pub mod bounds {
    /// Local epochs: 1 to this.
    pub const MAX_LOCAL_EPOCHS: u32 = 1_000;
    /// Batch size: 1 to this.
    pub const MAX_BATCH_SIZE: u32 = 1 << 20;
    /// Learning rate: finite, above 0, at most this.
    pub const MAX_LEARNING_RATE: f64 = 100.0;
    /// Clipping norm: finite, 0 (no DP-SGD) or above, at most this.
    pub const MAX_CLIP_NORM: f64 = 1e6;
    /// Noise multiplier: finite, 0 (no DP-SGD) or above, at most this.
    pub const MAX_NOISE_MULTIPLIER: f64 = 1e4;
}

/// Why the task's hyper-parameters are out of [`bounds`] (`None`: within them). Depends on the
/// task alone, never on the data.
pub fn hyper_out_of_bounds(hyper: &pb::HyperParameters) -> Option<String> {
    use bounds::*;
    let bad = |what: String| Some(format!("task hyper-parameter out of bounds: {what}"));
    if !(1..=MAX_LOCAL_EPOCHS).contains(&hyper.local_epochs) {
        return bad(format!(
            "local_epochs = {}, allowed 1..={MAX_LOCAL_EPOCHS}",
            hyper.local_epochs
        ));
    }
    if !(1..=MAX_BATCH_SIZE).contains(&hyper.batch_size) {
        return bad(format!(
            "batch_size = {}, allowed 1..={MAX_BATCH_SIZE}",
            hyper.batch_size
        ));
    }
    let lr = hyper.learning_rate;
    if !(lr.is_finite() && lr > 0.0 && lr <= MAX_LEARNING_RATE) {
        return bad(format!(
            "learning_rate = {lr}, allowed a finite value in (0, {MAX_LEARNING_RATE}]"
        ));
    }
    for (name, v, max) in [
        ("clip_norm", hyper.clip_norm, MAX_CLIP_NORM),
        (
            "noise_multiplier",
            hyper.noise_multiplier,
            MAX_NOISE_MULTIPLIER,
        ),
    ] {
        if !(v.is_finite() && (0.0..=max).contains(&v)) {
            return bad(format!(
                "{name} = {v}, allowed a finite value in [0, {max}]"
            ));
        }
    }
    None
}

/// A task as the participant sees it.
#[derive(Clone, Debug)]
pub struct Task {
    pub header: pb::TaskHeader,
    /// The global parameters (empty for WAIT).
    pub params: Vec<f32>,
}

impl Task {
    pub fn state(&self) -> pb::TaskState {
        pb::TaskState::try_from(self.header.state).unwrap_or(pb::TaskState::Unspecified)
    }
}

/// The wire form of a privacy object (field for field).
pub fn privacy_to_wire(p: &PrivacyObject) -> pb::PrivacySpend {
    pb::PrivacySpend {
        accountant: p.accountant.clone(),
        delta_pico: p.delta_pico,
        epsilon_micro: p.epsilon_micro,
        epsilon_round_micro: p.epsilon_round_micro,
        noise_multiplier_micro: p.noise_multiplier_micro,
        sampling_rate_nano: p.sampling_rate_nano,
        steps: p.steps,
    }
}

/// A connected, registered participant.
/// What a validator pulled: the header, and when it says VALIDATE, the round's starting
/// parameters and the candidates' updates (in the header's order: sorted by key).
#[derive(Debug)]
pub struct Candidates {
    pub header: pb::CandidatesHeader,
    pub global: Vec<f32>,
    pub updates: Vec<Vec<f32>>,
}

impl Candidates {
    pub fn state(&self) -> pb::CandidatesState {
        pb::CandidatesState::try_from(self.header.state).unwrap_or(pb::CandidatesState::Unspecified)
    }
}

pub struct Client {
    rpc: CoordinatorClient<Channel>,
    key: Arc<Ed25519KeyPair>,
    federation: String,
    name: String,
    session: Vec<u8>,
}

impl Client {
    /// Dial the coordinator and register with `key`.
    pub async fn connect(addr: &str, key: Arc<Ed25519KeyPair>) -> Result<Self, ClientError> {
        let link = Link::new(addr, &LinkSettings::default()).map_err(|e| ClientError::Tls {
            addr: addr.to_owned(),
            reason: e.to_string(),
        })?;
        Self::connect_with(&link, key).await
    }

    /// Connect over `link` (TLS, proxy) and register.
    pub async fn connect_with(link: &Link, key: Arc<Ed25519KeyPair>) -> Result<Self, ClientError> {
        let addr = link.url();
        let channel = tonic::transport::Endpoint::from_shared(addr.to_owned())
            .map_err(|source| ClientError::Connect {
                addr: addr.to_owned(),
                source,
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .initial_stream_window_size(DOWNLOAD_STREAM_WINDOW)
            .initial_connection_window_size(DOWNLOAD_CONNECTION_WINDOW)
            .max_frame_size(MAX_FRAME_BYTES)
            .connect_with_connector(link.connector(ALPN_H2))
            .await
            .map_err(|source| match tls_failure(&source) {
                Some(reason) => ClientError::Tls {
                    addr: addr.to_owned(),
                    reason,
                },
                None => ClientError::Connect {
                    addr: addr.to_owned(),
                    source,
                },
            })?;
        let rpc = CoordinatorClient::new(channel)
            .max_decoding_message_size(pb::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(pb::MAX_MESSAGE_BYTES);
        let mut c = Self {
            rpc,
            key,
            federation: String::new(),
            name: String::new(),
            session: Vec::new(),
        };
        c.register().await?;
        Ok(c)
    }

    /// Prove possession of the key and open a session (again, after a coordinator restart).
    pub async fn register(&mut self) -> Result<(), ClientError> {
        let public_key = public_key_hex(&self.key);
        let ch = self
            .rpc
            .challenge(pb::ChallengeRequest {
                public_key: public_key.clone(),
            })
            .await
            .map_err(|s| ClientError::refused("Challenge", s))?
            .into_inner();
        let msg = pb::register_message(&ch.federation, &ch.challenge);
        let signature = self.key.sign(msg.as_bytes()).as_ref().to_vec();
        let reg = self
            .rpc
            .register(pb::RegisterRequest {
                public_key,
                challenge: ch.challenge,
                signature,
            })
            .await
            .map_err(|s| ClientError::refused("Register", s))?
            .into_inner();
        self.federation = reg.federation;
        self.name = reg.name;
        self.session = reg.session;
        Ok(())
    }

    /// The federation this client registered with.
    pub fn federation(&self) -> &str {
        &self.federation
    }

    /// This participant's public key, lowercase hex (as the ledger records it).
    pub fn public_key_hex(&self) -> String {
        public_key_hex(&self.key)
    }

    /// The name the coordinator enrolled this participant under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Pull the current task (header, then the parameters when there are any).
    pub async fn task(&mut self) -> Result<Task, ClientError> {
        let mut stream = self
            .rpc
            .get_task(pb::TaskRequest {
                session: self.session.clone(),
            })
            .await
            .map_err(|s| ClientError::refused("GetTask", s))?
            .into_inner();
        let proto = |reason: String| ClientError::Protocol {
            call: "GetTask",
            reason,
        };
        let header = match stream
            .message()
            .await
            .map_err(|s| ClientError::refused("GetTask", s))?
        {
            Some(pb::TaskMessage {
                msg: Some(pb::task_message::Msg::Header(h)),
            }) => h,
            _ => return Err(proto("stream did not start with a header".into())),
        };
        let mut params: Vec<f32> = Vec::new();
        let state = pb::TaskState::try_from(header.state).unwrap_or(pb::TaskState::Unspecified);
        if state == pb::TaskState::Train
            && let Err(reason) = check_task_header(&header)
        {
            return Err(ClientError::BadTask {
                round: header.round,
                total: header.total_rounds,
                reason,
            });
        }
        if matches!(state, pb::TaskState::Train | pb::TaskState::Done) {
            // Sized by the model the header describes, never by a bare count.
            let n = header
                .model
                .as_ref()
                .ok_or_else(|| proto("the task describes no model".into()))
                .and_then(|m| model_params(m).map_err(proto))
                .and_then(|p| {
                    if p == header.num_params {
                        usize::try_from(p).map_err(|_| proto(format!("{p} parameters")))
                    } else {
                        Err(proto(format!(
                            "num_params {} does not match the model's {p}",
                            header.num_params
                        )))
                    }
                })?;
            // Backed by huge pages where the system allows them: filling 64 MB of fresh
            // 4 KiB pages costs more than decoding into them.
            params = fedledger_memory::vec_with_huge_pages(n);
            // Decoded into place chunk by chunk as they arrive, and hashed meanwhile (on a
            // thread of its own for a large model: the chunks are shared, not copied; at most
            // [`HASH_QUEUE`] wait for it); the digest is compared once the last one is in.
            let mut hasher =
                fedledger_model::digest::StreamHasher::for_bytes((n as u64) * 4, HASH_QUEUE);
            while let Some(msg) = stream
                .message()
                .await
                .map_err(|s| ClientError::refused("GetTask", s))?
            {
                match msg.msg {
                    Some(pb::task_message::Msg::Chunk(c)) => {
                        if !c.data.len().is_multiple_of(4) {
                            return Err(proto(format!(
                                "chunk at offset {} is not whole f32 values",
                                c.offset
                            )));
                        }
                        let len = c.data.len() / 4;
                        if c.offset != params.len() as u64 || params.len() + len > n {
                            return Err(proto(format!(
                                "chunk at offset {} of {len} values does not fit after {} of {n}",
                                c.offset,
                                params.len()
                            )));
                        }
                        hasher
                            .push(c.data.clone())
                            .await
                            .map_err(|e| proto(format!("hashing the model: {e}")))?;
                        let at = params.len();
                        params.extend(
                            c.data
                                .chunks_exact(4)
                                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                        );
                        // Checked while the chunk is still in cache, not in a pass of its own.
                        if let Some(i) = params[at..].iter().position(|v| !v.is_finite()) {
                            return Err(proto(format!(
                                "global parameter {} is not finite",
                                at + i
                            )));
                        }
                    }
                    _ => return Err(proto("unexpected message after the header".into())),
                }
            }
            if params.len() != n {
                return Err(proto(format!(
                    "received {} of {n} parameters",
                    params.len()
                )));
            }
            // Waiting for a thread's last chunks blocks: on the blocking pool. A small model
            // was hashed here and its digest is ready.
            let sha = if hasher.on_thread() {
                tokio::task::spawn_blocking(move || hasher.finish())
                    .await
                    .map_err(|e| proto(format!("hashing the model: {e}")))?
            } else {
                hasher.finish()
            }
            .map_err(|e| proto(format!("hashing the model: {e}")))?;
            if sha != header.model_sha256 {
                return Err(proto(format!(
                    "global parameters hash to {sha}, header says {}",
                    header.model_sha256
                )));
            }
        }
        Ok(Task { header, params })
    }

    /// Sign and send an update (the delta) for `round`. Returns the coordinator's receipt.
    pub async fn submit(
        &mut self,
        round: u64,
        examples: u64,
        delta: &[f32],
        privacy: &PrivacyObject,
    ) -> Result<pb::SubmitReceipt, ClientError> {
        let sha = vector_sha256(delta);
        self.submit_digested(round, examples, delta, sha, privacy)
            .await
    }

    /// [`Self::submit`] for a caller that has hashed `delta` already (`sha256`, lowercase hex:
    /// the agent records it before anything is sent), so 64 MB are not hashed twice. A wrong
    /// digest is the coordinator's to refuse (it hashes what arrives).
    pub async fn submit_digested(
        &mut self,
        round: u64,
        examples: u64,
        delta: &[f32],
        sha: String,
        privacy: &PrivacyObject,
    ) -> Result<pb::SubmitReceipt, ClientError> {
        // Everything claimed is signed: the digest, the example count and the privacy object.
        let msg = fedledger_ledger::records::update_signing_message(
            &self.federation,
            round,
            &sha,
            examples,
            &privacy.sha256_hex(),
        );
        let signature = self.key.sign(msg.as_bytes()).as_ref().to_vec();
        let header = pb::UpdateHeader {
            session: self.session.clone(),
            round,
            examples,
            num_params: delta.len() as u64,
            update_sha256: sha,
            signature,
            privacy: Some(privacy_to_wire(privacy)),
        };
        // The chunks are converted from `delta` in place as the connection takes them (a
        // bounded queue of [`UPLOAD_QUEUE`] messages): no copy of the whole update is made up
        // front, and the first bytes leave at once.
        let (mut tx, rx) = futures::channel::mpsc::channel(UPLOAD_QUEUE);
        let feed = async move {
            use futures::SinkExt;
            let header = pb::UpdateMessage {
                msg: Some(pb::update_message::Msg::Header(header)),
            };
            if tx.send(header).await.is_err() {
                return;
            }
            let size = pb::chunk_floats_for(delta.len() as u64);
            for (i, chunk) in delta.chunks(size).enumerate() {
                let msg = pb::UpdateMessage {
                    msg: Some(pb::update_message::Msg::Chunk(pb::ParamChunk {
                        offset: (i * size) as u64,
                        data: fedledger_model::digest::vector_to_bytes(chunk).into(),
                    })),
                };
                // A closed queue: the call ended early (refused); its status says why.
                if tx.send(msg).await.is_err() {
                    return;
                }
            }
        };
        let call = self.rpc.submit_update(rx);
        // The call may end first (a refusal): its answer is not held until the feed notices.
        let r = match futures::future::select(Box::pin(call), Box::pin(feed)).await {
            futures::future::Either::Left((r, _feed)) => r,
            futures::future::Either::Right(((), call)) => call.await,
        };
        r.map(|r| r.into_inner())
            .map_err(|s| ClientError::refused("SubmitUpdate", s))
    }

    /// Decline `round`, signed, with a one-line reason.
    pub async fn decline(&mut self, round: u64, reason: &str) -> Result<(), ClientError> {
        let msg =
            fedledger_ledger::records::decline_signing_message(&self.federation, round, reason);
        let signature = self.key.sign(msg.as_bytes()).as_ref().to_vec();
        self.rpc
            .decline(pb::DeclineRequest {
                session: self.session.clone(),
                round,
                reason: reason.to_owned(),
                signature,
            })
            .await
            .map_err(|s| ClientError::refused("Decline", s))?;
        Ok(())
    }

    /// Validators: the round being validated (header, then the round's starting parameters
    /// and each candidate's update, each checked against its digest as it arrives).
    pub async fn candidates(&mut self) -> Result<Candidates, ClientError> {
        let call = "GetCandidates";
        let proto = |reason: String| ClientError::Protocol { call, reason };
        let mut stream = self
            .rpc
            .get_candidates(pb::CandidatesRequest {
                session: self.session.clone(),
            })
            .await
            .map_err(|s| ClientError::refused(call, s))?
            .into_inner();
        let header = match stream
            .message()
            .await
            .map_err(|s| ClientError::refused(call, s))?
        {
            Some(pb::CandidatesMessage {
                msg: Some(pb::candidates_message::Msg::Header(h)),
            }) => h,
            _ => return Err(proto("stream did not start with a header".into())),
        };
        let mut out = Candidates {
            header,
            global: Vec::new(),
            updates: Vec::new(),
        };
        if out.state() != pb::CandidatesState::Validate {
            return Ok(out);
        }
        let task = out
            .header
            .task
            .as_ref()
            .ok_or_else(|| proto("the header carries no task".into()))?;
        // Sized by the model the task describes, never by a bare count.
        let n = task
            .model
            .as_ref()
            .ok_or_else(|| proto("the task describes no model".into()))
            .and_then(|m| model_params(m).map_err(proto))
            .and_then(|p| usize::try_from(p).map_err(|_| proto(format!("{p} parameters"))))?;
        let mut digests = vec![task.model_sha256.clone()];
        digests.extend(
            out.header
                .candidates
                .iter()
                .map(|c| c.update_sha256.clone()),
        );
        let mut vectors: Vec<Vec<f32>> = Vec::with_capacity(digests.len().min(1024));
        let mut current = Vec::new();
        let mut hasher = fedledger_model::digest::VectorHasher::default();
        let finish = |vectors: &mut Vec<Vec<f32>>,
                      current: &mut Vec<f32>,
                      hasher: &mut fedledger_model::digest::VectorHasher|
         -> Result<(), ClientError> {
            let k = vectors.len();
            let sha = std::mem::take(hasher).finish_hex();
            if current.len() != n || sha != digests[k] {
                return Err(proto(format!(
                    "vector {k}: {} of {n} values hashing to {sha}, announced as {}",
                    current.len(),
                    digests[k]
                )));
            }
            if let Some(i) = current.iter().position(|v| !v.is_finite()) {
                return Err(proto(format!("vector {k}: value {i} is not finite")));
            }
            vectors.push(std::mem::take(current));
            Ok(())
        };
        while let Some(msg) = stream
            .message()
            .await
            .map_err(|s| ClientError::refused(call, s))?
        {
            let Some(pb::candidates_message::Msg::Chunk(c)) = msg.msg else {
                return Err(proto("unexpected message after the header".into()));
            };
            if c.vector as usize == vectors.len() + 1 && current.len() == n {
                finish(&mut vectors, &mut current, &mut hasher)?;
            }
            let len = c.data.len() / 4;
            if c.vector as usize != vectors.len()
                || vectors.len() >= digests.len()
                || !c.data.len().is_multiple_of(4)
                || c.offset != current.len() as u64
                || current.len() + len > n
            {
                return Err(proto(format!(
                    "chunk of vector {} at offset {} of {} bytes does not follow {} values of vector {}",
                    c.vector,
                    c.offset,
                    c.data.len(),
                    current.len(),
                    vectors.len()
                )));
            }
            if current.is_empty() {
                current.reserve_exact(n);
            }
            hasher.update_bytes(&c.data);
            current.extend(
                c.data
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            );
        }
        if vectors.len() + 1 == digests.len() {
            finish(&mut vectors, &mut current, &mut hasher)?;
        }
        if vectors.len() != digests.len() {
            return Err(proto(format!(
                "received {} of {} vectors",
                vectors.len(),
                digests.len()
            )));
        }
        let mut vectors = vectors.into_iter();
        out.global = vectors.next().unwrap_or_default();
        out.updates = vectors.collect();
        Ok(out)
    }

    /// Validators: send the signed utility vector of `round`.
    pub async fn submit_utilities(
        &mut self,
        round: u64,
        coalitions_sha256: &str,
        utilities: Vec<i64>,
        signature: Vec<u8>,
    ) -> Result<pb::UtilitiesReceipt, ClientError> {
        self.rpc
            .submit_utilities(pb::UtilitiesRequest {
                session: self.session.clone(),
                round,
                coalitions_sha256: coalitions_sha256.to_owned(),
                utilities,
                signature,
            })
            .await
            .map(|r| r.into_inner())
            .map_err(|s| ClientError::refused("SubmitUtilities", s))
    }

    /// The key this client signs with.
    pub fn key(&self) -> &Ed25519KeyPair {
        &self.key
    }

    /// The result of a finished round.
    pub async fn round_result(&mut self, round: u64) -> Result<pb::RoundResult, ClientError> {
        self.rpc
            .get_round_result(pb::RoundResultRequest {
                session: self.session.clone(),
                round,
            })
            .await
            .map(|r| r.into_inner())
            .map_err(|s| ClientError::refused("GetRoundResult", s))
    }
}
