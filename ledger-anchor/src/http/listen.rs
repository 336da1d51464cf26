//! The accept loop both HTTP servers share: HTTP/1.1 with hyper, over TLS when given a rustls
//! configuration, at most [`MAX_CONNECTIONS`] served at once (more wait in the accept queue), a
//! deadline on each TLS handshake and on each request's head, and a shutdown that closes every
//! open connection.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::error::LedgerError;

/// Connections served at once; more wait in the accept queue.
pub(crate) const MAX_CONNECTIONS: usize = 1024;
/// A request's head must arrive within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What answers one request.
pub(crate) type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>
        + Send
        + Sync,
>;

/// A running accept loop.
pub(crate) struct Listening {
    pub(crate) addr: SocketAddr,
    /// Whether connections are TLS.
    pub(crate) tls: bool,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Listening {
    /// Stops accepting, closes the open connections and waits for the loop to finish.
    pub(crate) async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

/// Serves `handler` on `listener` until shut down, over TLS when `tls` is given (the
/// configuration's certificate resolver may change what it serves); `what` names the server in
/// logs.
pub(crate) fn serve(
    listener: TcpListener,
    handler: Handler,
    tls: Option<Arc<rustls::ServerConfig>>,
    what: &'static str,
) -> Result<Listening, LedgerError> {
    let is_tls = tls.is_some();
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let addr = listener
        .local_addr()
        .map_err(|e| LedgerError::io(format!("{what} listener address"), e))?;
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
                        tracing::debug!(error = %e, what, "accept failed");
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let h = handler.clone();
            let acceptor = acceptor.clone();
            conns.spawn(async move {
                match acceptor {
                    None => serve_connection(stream, h, what).await,
                    Some(a) => match tokio::time::timeout(HEADER_TIMEOUT, a.accept(stream)).await {
                        Ok(Ok(tls)) => serve_connection(tls, h, what).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, what, "TLS handshake failed"),
                        Err(_) => tracing::debug!(what, "TLS handshake timed out"),
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
    Ok(Listening {
        addr,
        tls: is_tls,
        shutdown,
        task,
    })
}

async fn serve_connection<IO>(io: IO, h: Handler, what: &'static str)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let h = h.clone();
        async move { Ok::<_, Infallible>(h(req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(io), svc);
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, what, "connection ended");
    }
}

/// A short `text/plain` response.
pub(crate) fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
