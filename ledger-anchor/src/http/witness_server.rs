//! The C2SP tlog-witness HTTP API of one or more [`Witness`]es (one per log they follow):
//! `POST <prefix>/add-checkpoint` and the monitoring endpoint
//! `GET <prefix>/<lowercase hex SHA-256 of the origin>/checkpoint`. The submission and
//! monitoring prefixes are the same (`http://<addr>/`).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use tokio::net::TcpListener;

use super::listen::{self, Handler, Listening, plain};
use crate::error::LedgerError;
use crate::merkle::sha256_bytes;
use crate::note::{Checkpoint, SignedNote};
use crate::witness::{
    AddCheckpoint, MAX_REQUEST_BYTES, SIZE_CONTENT_TYPE, Witness, WitnessRefusal,
};

/// A running witness HTTP server.
pub struct WitnessServer {
    inner: Listening,
}

impl WitnessServer {
    /// The address it listens on.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.inner.addr
    }

    /// The submission (and monitoring) prefix, `http://<addr>/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.inner.addr)
    }

    /// Stops accepting, closes the open connections and waits for the server to finish.
    pub async fn shutdown(self) {
        self.inner.shutdown().await;
    }
}

/// Serves `witnesses` (each following its own log) over HTTP on `listener` until shut down.
pub async fn serve_witness(
    listener: TcpListener,
    witnesses: Vec<Witness>,
) -> Result<WitnessServer, LedgerError> {
    let witnesses = Arc::new(witnesses);
    let handler: Handler = Arc::new(move |req| Box::pin(handle(witnesses.clone(), req)));
    Ok(WitnessServer {
        inner: listen::serve(listener, handler, None, "witness")?,
    })
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

fn method_not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, &format!("only {allow}"));
    r.headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static(allow));
    r
}

async fn handle(witnesses: Arc<Vec<Witness>>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    if path == "/add-checkpoint" {
        if req.method() != Method::POST {
            return method_not_allowed("POST");
        }
        return add_checkpoint(witnesses, req).await;
    }
    let monitored = path
        .strip_prefix('/')
        .and_then(|p| p.strip_suffix("/checkpoint"))
        .filter(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
    let Some(origin_hash) = monitored else {
        return plain(StatusCode::NOT_FOUND, "not found");
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return method_not_allowed("GET, HEAD");
    }
    let Some(w) = witnesses
        .iter()
        .find(|w| hex::encode(sha256_bytes(w.log_key().name.as_bytes())) == origin_hash)
        .cloned()
    else {
        return plain(StatusCode::NOT_FOUND, "unknown log");
    };
    match tokio::task::spawn_blocking(move || w.latest()).await {
        Ok(Ok(Some(cp))) => {
            let mut r = respond(
                StatusCode::OK,
                "text/plain; charset=utf-8",
                if req.method() == Method::HEAD {
                    String::new()
                } else {
                    cp.encode()
                },
            );
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("no-cache"),
            );
            r
        }
        Ok(Ok(None)) => plain(
            StatusCode::NOT_FOUND,
            "this witness has not cosigned a checkpoint of that log",
        ),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "witness: reading the state failed");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "witness state error")
        }
        Err(e) => {
            tracing::warn!(error = %e, "witness: worker failed");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "worker failed")
        }
    }
}

async fn add_checkpoint(
    witnesses: Arc<Vec<Witness>>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    // The declared length is refused before anything is read; the body is bounded as it
    // arrives whatever the header says.
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = format!("the request body is over {MAX_REQUEST_BYTES} bytes");
    if declared.is_some_and(|n| n > MAX_REQUEST_BYTES as u64) {
        return plain(StatusCode::PAYLOAD_TOO_LARGE, &too_large);
    }
    let body = match Limited::new(req.into_body(), MAX_REQUEST_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return plain(StatusCode::PAYLOAD_TOO_LARGE, &too_large);
        }
        Err(e) => return plain(StatusCode::BAD_REQUEST, &format!("reading the body: {e}")),
    };
    let refused = |r: WitnessRefusal| refusal(&r);
    let request = match AddCheckpoint::parse(&body) {
        Ok(r) => r,
        Err(r) => return refused(r),
    };
    // Which log: the checkpoint's origin line (the note must parse to know it).
    let origin = match SignedNote::parse(&request.checkpoint)
        .and_then(|n| Checkpoint::parse_text(&n.text))
    {
        Ok(cp) => cp.origin,
        Err(e) => return refused(WitnessRefusal::BadRequest(format!("checkpoint: {e}"))),
    };
    let Some(w) = witnesses
        .iter()
        .find(|w| w.log_key().name == origin)
        .cloned()
    else {
        return refused(WitnessRefusal::UnknownLog { origin });
    };
    let answer = tokio::task::spawn_blocking(move || {
        w.add_checkpoint(
            request.old_size,
            &request.proof,
            &request.checkpoint,
            now_secs(),
        )
    })
    .await;
    match answer {
        Ok(Ok(sig)) => respond(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            format!("{}\n", sig.line()),
        ),
        Ok(Err(r)) => refused(r),
        Err(e) => {
            tracing::warn!(error = %e, "witness: worker failed");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "worker failed")
        }
    }
}

/// The response to a refusal: its status, and for 409 the held size as `text/x.tlog.size`.
fn refusal(r: &WitnessRefusal) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(r.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match r {
        WitnessRefusal::Conflict { size } => {
            respond(status, SIZE_CONTENT_TYPE, format!("{size}\n"))
        }
        WitnessRefusal::Unprocessable {
            evidence: Some(ev), ..
        } => {
            tracing::warn!(reason = %ev.reason, "witness: refused a checkpoint inconsistent with the one it holds");
            plain(status, &r.to_string())
        }
        WitnessRefusal::Storage(e) => {
            tracing::warn!(error = %e, "witness: storage failed");
            plain(status, &r.to_string())
        }
        _ => plain(status, &r.to_string()),
    }
}
