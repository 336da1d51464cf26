//! A client of C2SP tlog-witness `add-checkpoint` over HTTP, and the collection of a log's
//! cosignatures from witnesses listed by URL.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::error::LedgerError;
use crate::note::{NoteSignature, SignedNote, VerifierKey};
use crate::store::Log;
use crate::witness::{AddCheckpoint, SIZE_CONTENT_TYPE};

/// Largest response body read (a few cosignature lines, or an error message).
const MAX_RESPONSE_BYTES: usize = 16 * 1024;
/// Each request must complete within this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What a witness answered to `add-checkpoint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    /// 200: the signature lines it returned (unverified; check them against its key).
    Cosigned(Vec<NoteSignature>),
    /// 409: the size of the latest checkpoint it cosigned for this log.
    Conflict(u64),
    /// Any other status, with the body's text.
    Refused {
        /// HTTP status.
        status: u16,
        /// The response body (lossy UTF-8, at most 16 KiB).
        message: String,
    },
}

/// A client of one witness's submission prefix (`http://host:port/` or deeper).
pub struct WitnessClient {
    prefix: String,
    http: Client<HttpConnector, Full<Bytes>>,
    /// The size this witness last reported holding, to start the next request from.
    held: AtomicU64,
}

impl std::fmt::Debug for WitnessClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WitnessClient({})", self.prefix)
    }
}

impl WitnessClient {
    /// A plain-HTTP client of the witness at `submission_prefix`.
    pub fn new(submission_prefix: &str) -> Result<Self, LedgerError> {
        if !submission_prefix.starts_with("http://") {
            return Err(LedgerError::Network(format!(
                "witness URL {submission_prefix:?}: only http:// is supported for now (TLS \
                 comes with the links issue)"
            )));
        }
        let mut prefix = submission_prefix.to_owned();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        prefix
            .parse::<Uri>()
            .map_err(|e| LedgerError::Network(format!("witness URL {prefix:?}: {e}")))?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Ok(Self {
            prefix,
            http: Client::builder(TokioExecutor::new()).build(connector),
            held: AtomicU64::new(0),
        })
    }

    /// The witness's submission prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    async fn send(
        &self,
        req: Request<Full<Bytes>>,
        what: &str,
    ) -> Result<(StatusCode, Option<String>, Vec<u8>), LedgerError> {
        let fetch = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| LedgerError::Network(format!("{what}: {e}")))?;
            let status = resp.status();
            let content_type = resp
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| LedgerError::Network(format!("{what}: body: {e}")))?
                .to_bytes();
            Ok((status, content_type, body.to_vec()))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, fetch)
            .await
            .map_err(|_| LedgerError::Network(format!("{what}: no answer within 30 s")))?
    }

    /// `POST <prefix>add-checkpoint` with `req`.
    pub async fn add_checkpoint(&self, req: &AddCheckpoint) -> Result<Submitted, LedgerError> {
        let url = format!("{}add-checkpoint", self.prefix);
        let what = format!("POST {url}");
        let uri: Uri = url
            .parse()
            .map_err(|e| LedgerError::Network(format!("{url}: {e}")))?;
        let request = Request::post(uri)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from(req.encode())))
            .map_err(|e| LedgerError::Network(format!("{what}: {e}")))?;
        let (status, content_type, body) = self.send(request, &what).await?;
        let text = String::from_utf8_lossy(&body).into_owned();
        match status {
            StatusCode::OK => {
                // The lines parse as the signatures of a note (any text will do).
                let lines = SignedNote::parse(format!("x\n\n{text}").as_bytes()).map_err(|e| {
                    LedgerError::Network(format!("{what}: the cosignature lines: {e}"))
                })?;
                Ok(Submitted::Cosigned(lines.signatures))
            }
            StatusCode::CONFLICT => {
                if content_type.as_deref() != Some(SIZE_CONTENT_TYPE) {
                    return Err(LedgerError::Network(format!(
                        "{what}: 409 without a {} body",
                        SIZE_CONTENT_TYPE
                    )));
                }
                let size = text
                    .strip_suffix('\n')
                    .filter(|s| {
                        !s.is_empty()
                            && s.bytes().all(|b| b.is_ascii_digit())
                            && (s.len() == 1 || !s.starts_with('0'))
                    })
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| {
                        LedgerError::Network(format!("{what}: 409 body {text:?} is not a size"))
                    })?;
                self.held.store(size, Ordering::Relaxed);
                Ok(Submitted::Conflict(size))
            }
            s => Ok(Submitted::Refused {
                status: s.as_u16(),
                message: text.trim_end().to_owned(),
            }),
        }
    }

    /// `GET <prefix><hex SHA-256 of origin>/checkpoint`: the witness's latest cosigned
    /// checkpoint of that log (unverified), `None` on 404.
    pub async fn latest(&self, origin: &str) -> Result<Option<Vec<u8>>, LedgerError> {
        let url = format!(
            "{}{}/checkpoint",
            self.prefix,
            hex::encode(crate::merkle::sha256_bytes(origin.as_bytes()))
        );
        let what = format!("GET {url}");
        let uri: Uri = url
            .parse()
            .map_err(|e| LedgerError::Network(format!("{url}: {e}")))?;
        let request = Request::get(uri)
            .body(Full::new(Bytes::new()))
            .map_err(|e| LedgerError::Network(format!("{what}: {e}")))?;
        match self.send(request, &what).await? {
            (StatusCode::OK, _, body) => Ok(Some(body)),
            (StatusCode::NOT_FOUND, _, _) => Ok(None),
            (s, _, _) => Err(LedgerError::Network(format!("{what}: HTTP {s}"))),
        }
    }

    /// Submits `log`'s checkpoint at `size`, with a consistency proof from the size this
    /// witness last reported (retrying once from the size a 409 names). Returns the signature
    /// lines it returned, or why not.
    pub async fn submit(&self, log: &Log, size: u64) -> Result<Vec<NoteSignature>, LedgerError> {
        let note = {
            let log = log.clone();
            blocking(move || log.checkpoint_at(size)).await?
        }
        .ok_or_else(|| LedgerError::Corrupt(format!("no checkpoint at size {size}")))?;
        let mut base = note.note.clone();
        base.signatures.retain(|s| s.is_by(log.log_key()));
        let checkpoint = base.encode().into_bytes();
        let mut old = self.held.load(Ordering::Relaxed).min(size);
        for _ in 0..2 {
            let proof = {
                let log = log.clone();
                blocking(move || log.consistency_proof(old, size)).await?
            };
            let req = AddCheckpoint {
                old_size: old,
                proof: if old == 0 { Vec::new() } else { proof },
                checkpoint: checkpoint.clone(),
            };
            match self.add_checkpoint(&req).await? {
                Submitted::Cosigned(lines) => {
                    self.held.store(size, Ordering::Relaxed);
                    return Ok(lines);
                }
                Submitted::Conflict(held) if held <= size && held != old => old = held,
                Submitted::Conflict(held) => {
                    return Err(LedgerError::Network(format!(
                        "{} holds size {held}, which cannot precede {size}",
                        self.prefix
                    )));
                }
                Submitted::Refused { status, message } => {
                    return Err(LedgerError::Network(format!(
                        "{} refused size {size}: HTTP {status}: {message}",
                        self.prefix
                    )));
                }
            }
        }
        Err(LedgerError::Network(format!(
            "{} kept answering 409 for size {size}",
            self.prefix
        )))
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, LedgerError> + Send + 'static,
) -> Result<T, LedgerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| LedgerError::io("ledger storage task", std::io::Error::other(e)))?
}

/// Asks every witness in `clients`, in parallel, to cosign `log`'s checkpoint at `size`, and
/// stores the cosignatures that verify under a key among `witnesses` (the genesis's) with the
/// checkpoint. Returns how many distinct `witnesses` have now cosigned it, whichever way their
/// cosignatures came (libp2p or HTTP), so a quorum is counted over both.
pub async fn collect_cosignatures_http(
    log: &Log,
    size: u64,
    clients: &[WitnessClient],
    witnesses: &[VerifierKey],
) -> Result<usize, LedgerError> {
    let answers = futures::future::join_all(
        clients
            .iter()
            .map(|c| async move { (c, c.submit(log, size).await) }),
    )
    .await;
    let mut found = Vec::new();
    for (client, answer) in answers {
        match answer {
            Ok(lines) => {
                for line in lines {
                    match witnesses.iter().find(|w| line.is_by(w)) {
                        Some(w) => found.push((w.clone(), line)),
                        None => tracing::debug!(
                            witness = client.prefix(),
                            signer = %line.name,
                            "ignoring a cosignature by a key the genesis does not name"
                        ),
                    }
                }
            }
            Err(e) => tracing::debug!(witness = client.prefix(), error = %e, "no cosignature"),
        }
    }
    let log = log.clone();
    let witnesses = witnesses.to_vec();
    blocking(move || {
        for (w, sig) in found {
            if let Err(e) = log.add_cosignature(size, &w, sig) {
                tracing::warn!(witness = %w.name, error = %e, "invalid cosignature");
            }
        }
        Ok(log
            .checkpoint_at(size)?
            .map_or(0, |cp| cp.note.valid_cosigners(&witnesses).len()))
    })
    .await
}
