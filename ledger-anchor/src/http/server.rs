//! The tlog-tiles HTTP server (see the module docs of [`super`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::error::LedgerError;
use crate::note::VerifierKey;
use crate::records;
use crate::store::Log;
use crate::tiles::{self, TileId};

/// Connections served at once; more wait in the accept queue.
const MAX_CONNECTIONS: usize = 1024;
/// A request's head must arrive within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// A running tiles server.
pub struct TilesServer {
    addr: SocketAddr,
    tls: bool,
    served: Arc<AtomicU64>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl TilesServer {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL prefix of the log (`http://<addr>/`, or `https://` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}/", self.addr)
    }

    /// Successful responses so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Stops accepting, closes the open connections and waits for the server to finish.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

/// What the handlers share.
struct State {
    log: Log,
    /// The genesis's witnesses and quorum, read once entry 0 exists.
    witnesses: OnceLock<(Vec<VerifierKey>, u64)>,
    served: Arc<AtomicU64>,
}

impl State {
    fn witnesses(&self) -> Result<&(Vec<VerifierKey>, u64), LedgerError> {
        if let Some(w) = self.witnesses.get() {
            return Ok(w);
        }
        let genesis = records::validate_entry(0, self.log.origin(), &self.log.entry(0)?)?;
        let w = records::genesis_witnesses(&genesis)
            .ok_or_else(|| LedgerError::Corrupt("entry 0 is not a genesis record".into()))?;
        let keys = w
            .keys
            .iter()
            .map(|k| VerifierKey::parse(k))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.witnesses.get_or_init(|| (keys, w.quorum)))
    }

    /// The body and content type of `path`, `None` when there is no such resource (yet).
    fn resource(&self, path: &str) -> Result<Option<(Vec<u8>, &'static str)>, LedgerError> {
        if path == "checkpoint" {
            if self.log.size() == 0 {
                return Ok(None);
            }
            let (keys, quorum) = self.witnesses()?;
            return Ok(self
                .log
                .latest_witnessed(keys, *quorum)?
                .map(|cp| (cp.encode().into_bytes(), tiles::CHECKPOINT_CONTENT_TYPE)));
        }
        match TileId::parse(path) {
            Some(id) if id.within(self.log.size()) => Ok(Some((
                tiles::read_tile(&self.log, id)?,
                tiles::TILE_CONTENT_TYPE,
            ))),
            _ => Ok(None),
        }
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let head = req.method() == Method::HEAD;
    if req.method() != Method::GET && !head {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD");
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return Ok(r);
    }
    let path = req.uri().path().trim_start_matches('/').to_owned();
    let st = state.clone();
    let found = tokio::task::spawn_blocking(move || st.resource(&path)).await;
    let (body, content_type) = match found {
        Ok(Ok(Some(x))) => x,
        Ok(Ok(None)) => return Ok(plain(StatusCode::NOT_FOUND, "not found")),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, path = req.uri().path(), "tiles: reading the store failed");
            return Ok(plain(StatusCode::INTERNAL_SERVER_ERROR, "store error"));
        }
        Err(e) => {
            tracing::warn!(error = %e, "tiles: worker failed");
            return Ok(plain(StatusCode::INTERNAL_SERVER_ERROR, "worker failed"));
        }
    };
    let cache = if content_type == tiles::CHECKPOINT_CONTENT_TYPE {
        tiles::CHECKPOINT_CACHE_CONTROL
    } else {
        tiles::TILE_CACHE_CONTROL
    };
    let len = body.len();
    let mut r = Response::new(Full::new(if head {
        Bytes::new()
    } else {
        Bytes::from(body)
    }));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static(cache),
    );
    h.insert(header::CONTENT_LENGTH, header::HeaderValue::from(len));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        header::HeaderValue::from_static("*"),
    );
    state.served.fetch_add(1, Ordering::Relaxed);
    Ok(r)
}

/// Serves `log` read-only in the tlog-tiles layout on `listener` until shut down.
pub async fn serve_tiles(listener: TcpListener, log: Log) -> Result<TilesServer, LedgerError> {
    serve_tiles_with(listener, log, None).await
}

/// Like [`serve_tiles`], over TLS when `tls` is given (each handshake must finish within the
/// header timeout; the configuration's certificate resolver may change what it serves).
pub async fn serve_tiles_with(
    listener: TcpListener,
    log: Log,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Result<TilesServer, LedgerError> {
    let is_tls = tls.is_some();
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let addr = listener
        .local_addr()
        .map_err(|e| LedgerError::io("tiles listener address", e))?;
    let served = Arc::new(AtomicU64::new(0));
    let state = Arc::new(State {
        log,
        witnesses: OnceLock::new(),
        served: served.clone(),
    });
    let (shutdown, mut stop) = watch::channel(false);
    let task = tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let mut conns = JoinSet::new();
        loop {
            let permit = tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                p = slots.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let (stream, _) = tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::debug!(error = %e, "tiles: accept failed");
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let st = state.clone();
            let acceptor = acceptor.clone();
            conns.spawn(async move {
                match acceptor {
                    None => serve_connection(stream, st).await,
                    Some(a) => match tokio::time::timeout(HEADER_TIMEOUT, a.accept(stream)).await {
                        Ok(Ok(tls)) => serve_connection(tls, st).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, "tiles: TLS handshake failed"),
                        Err(_) => tracing::debug!("tiles: TLS handshake timed out"),
                    },
                }
                drop(permit);
            });
            // Reap finished connections without waiting.
            while conns.try_join_next().is_some() {}
        }
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    });
    Ok(TilesServer {
        addr,
        tls: is_tls,
        served,
        shutdown,
        task,
    })
}

async fn serve_connection<IO>(io: IO, st: Arc<State>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| handle(st.clone(), req));
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(io), svc);
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "tiles: connection ended");
    }
}
