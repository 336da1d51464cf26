//! The tlog-tiles HTTP server (see the module docs of [`super`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::net::TcpListener;

use super::listen::{self, Handler, Listening, plain};
use crate::error::LedgerError;
use crate::store::Log;
use crate::tiles::{self, TileId};

/// A running tiles server.
pub struct TilesServer {
    inner: Listening,
    served: Arc<AtomicU64>,
}

impl TilesServer {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The URL prefix of the log (`http://<addr>/`, or `https://` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.inner.tls { "https" } else { "http" };
        format!("{scheme}://{}/", self.inner.addr)
    }

    /// Successful responses so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Stops accepting, closes the open connections and waits for the server to finish.
    pub async fn shutdown(self) {
        self.inner.shutdown().await;
    }
}

/// What the handlers share.
struct State {
    log: Log,
    served: Arc<AtomicU64>,
}

impl State {
    /// The body and content type of `path`, `None` when there is no such resource (yet).
    fn resource(&self, path: &str) -> Result<Option<(Vec<u8>, &'static str)>, LedgerError> {
        if path == "checkpoint" {
            if self.log.size() == 0 {
                return Ok(None);
            }
            // Each checkpoint is judged by the witnesses in force at its size (the
            // genesis's, or a governed change's among its entries).
            return Ok(self
                .log
                .latest_witnessed_in_force()?
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

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let head = req.method() == Method::HEAD;
    if req.method() != Method::GET && !head {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD");
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let path = req.uri().path().trim_start_matches('/').to_owned();
    let st = state.clone();
    let found = tokio::task::spawn_blocking(move || st.resource(&path)).await;
    let (body, content_type) = match found {
        Ok(Ok(Some(x))) => x,
        Ok(Ok(None)) => return plain(StatusCode::NOT_FOUND, "not found"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, path = req.uri().path(), "tiles: reading the store failed");
            return plain(StatusCode::INTERNAL_SERVER_ERROR, "store error");
        }
        Err(e) => {
            tracing::warn!(error = %e, "tiles: worker failed");
            return plain(StatusCode::INTERNAL_SERVER_ERROR, "worker failed");
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
    r
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
    let served = Arc::new(AtomicU64::new(0));
    let state = Arc::new(State {
        log,
        served: served.clone(),
    });
    let handler: Handler = Arc::new(move |req| Box::pin(handle(state.clone(), req)));
    Ok(TilesServer {
        inner: listen::serve(listener, handler, tls, "tiles")?,
        served,
    })
}
