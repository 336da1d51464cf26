//! What any peer, logged in or not, can make the server hold: connections per source address
//! and in all (refused at accept), and a deadline on every call (a unary request must arrive
//! whole within `limits.message_timeout_secs`; an upload within its whole-request deadline).
//! The HTTP/2 settings themselves (streams per connection, windows, keepalive) are set where
//! the server is built ([`crate::serve`]); the memory they bound is stated there. With `[tls]`,
//! [`tls_incoming`] does each admitted connection's TLS handshake (concurrently, each within
//! the message timeout) before HTTP/2 sees it.

use std::{
    collections::HashMap,
    convert::Infallible,
    future::Future,
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tonic::{
    Status,
    body::Body,
    codegen::{Service, http},
    server::NamedService,
    transport::server::{Connected, TcpConnectInfo},
};

use crate::{
    config::{Limits, Windows},
    engine::Engine,
    refusal::Reason,
};

/// Largest request message the server decodes: one parameter chunk plus room for the fields
/// around it. A message that declares more is refused before its bytes are buffered.
pub const MAX_REQUEST_MESSAGE_BYTES: usize = fedledger_proto::CHUNK_BYTES + 64 * 1024;

/// Largest HTTP/2 frame the server accepts: a chunk travels in a frame or two rather than in
/// sixty-four of hyper's default 16 KiB, each a wake-up and a write on both ends. A frame is
/// only read within the flow-control window, so this adds nothing to what a peer can make the
/// server hold.
pub const MAX_FRAME_BYTES: u32 = 1024 * 1024;

/// What buffered request data one connection can make the server hold at most, with the
/// limits' streams per connection and the `windows` served with ([`Limits::windows_for`]):
/// each stream holds at most one message being decoded (its buffer may have up to twice the
/// capacity), and the data not yet read is at most one stream window per stream and one
/// connection window in all.
pub fn connection_memory_bound(limits: &Limits, windows: Windows) -> u64 {
    let streams = u64::from(limits.max_streams_per_connection);
    let unread = (streams * u64::from(windows.stream)).min(u64::from(windows.connection));
    streams * 2 * MAX_REQUEST_MESSAGE_BYTES as u64 + unread
}

#[derive(Default)]
struct Counts {
    total: u32,
    per_ip: HashMap<IpAddr, u32>,
}

/// Admits connections within `limits.max_connections_per_ip` and `limits.max_connections`;
/// the rest are closed at once, counted and logged.
#[derive(Clone)]
pub struct Gate {
    counts: Arc<Mutex<Counts>>,
    per_ip: u32,
    total: u32,
    engine: Arc<Engine>,
}

impl Gate {
    pub fn new(limits: &Limits, engine: Arc<Engine>) -> Self {
        Self {
            counts: Arc::default(),
            per_ip: limits.max_connections_per_ip,
            total: limits.max_connections,
            engine,
        }
    }

    /// The connection if it is within the limits (it holds its place until dropped).
    pub fn admit(&self, stream: TcpStream) -> Option<Admitted> {
        let peer = stream.peer_addr().ok();
        let ip = peer.map_or(IpAddr::from([0, 0, 0, 0]), |p| p.ip());
        let refused = {
            let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
            let from_ip = c.per_ip.get(&ip).copied().unwrap_or(0);
            if from_ip >= self.per_ip {
                Some(format!(
                    "connection refused: {from_ip} connections from {ip} already open \
                     (limits.max_connections_per_ip = {})",
                    self.per_ip
                ))
            } else if c.total >= self.total {
                Some(format!(
                    "connection refused: {} connections already open (limits.max_connections)",
                    c.total
                ))
            } else {
                c.total += 1;
                *c.per_ip.entry(ip).or_insert(0) += 1;
                None
            }
        };
        if let Some(message) = refused {
            self.engine
                .refusals()
                .record(Reason::ConnectionLimit, "connection", peer, &message);
            return None;
        }
        Some(Admitted {
            stream,
            _place: Place {
                ip,
                counts: self.counts.clone(),
            },
        })
    }
}

/// A connection's place in the counts, given back when it closes.
struct Place {
    ip: IpAddr,
    counts: Arc<Mutex<Counts>>,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

/// An admitted connection.
pub struct Admitted {
    stream: TcpStream,
    _place: Place,
}

impl Connected for Admitted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Admitted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Connections arriving at [`tls_incoming`] whose handshakes are done but not yet taken by the
/// server; accepting waits while it is full.
const HANDSHAKEN_QUEUE: usize = 64;

/// An admitted connection after its TLS handshake.
pub struct TlsConn(Box<TlsStream<Admitted>>);

impl Connected for TlsConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.get_ref().0.connect_info()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

/// Accepts on `listener`, admits through `gate`, and does each admitted connection's TLS
/// handshake on its own task, within `handshake_timeout`; the stream yields the connections
/// whose handshake completed. A failed or stalled handshake (plaintext to this endpoint, a
/// client that does not trust the certificate) is counted and logged as `tls_handshake`. The
/// handshakes in flight are bounded by the gate's connection limits. Accepting stops when the
/// stream is dropped.
pub fn tls_incoming(
    listener: TcpListener,
    gate: Gate,
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
) -> tokio_stream::wrappers::ReceiverStream<Result<TlsConn, io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(HANDSHAKEN_QUEUE);
    tokio::spawn(async move {
        loop {
            let sock = tokio::select! {
                _ = tx.closed() => break,
                a = listener.accept() => match a {
                    Ok((sock, _)) => sock,
                    Err(e) => {
                        // Out of descriptors and the like: do not spin.
                        tracing::debug!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            if let Err(e) = sock.set_nodelay(true) {
                tracing::debug!(error = %e, "could not set TCP_NODELAY");
            }
            let peer = sock.peer_addr().ok();
            let Some(admitted) = gate.admit(sock) else {
                continue;
            };
            let (tx, acceptor, engine) = (tx.clone(), acceptor.clone(), gate.engine.clone());
            tokio::spawn(async move {
                let failed = match tokio::time::timeout(
                    handshake_timeout,
                    acceptor.accept(admitted),
                )
                .await
                {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(TlsConn(Box::new(tls)))).await;
                        return;
                    }
                    Ok(Err(e)) => format!("TLS handshake failed: {e}"),
                    Err(_) => format!(
                        "TLS handshake not finished within {} s",
                        handshake_timeout.as_secs_f64()
                    ),
                };
                engine
                    .refusals()
                    .record(Reason::TlsHandshake, "connection", peer, &failed);
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// The deadline of each call, by method.
#[derive(Clone, Copy, Debug)]
pub struct CallDeadlines {
    /// Unary calls: the request must arrive whole, and be answered, within this.
    pub unary: Duration,
    /// `GetTask`, which may wait for news (the long poll) before answering.
    pub task: Duration,
    /// `SubmitUpdate`: a backstop behind the upload's own deadlines (the handler enforces the
    /// per-message timeout and the whole-upload deadline itself, and reports them precisely).
    pub upload: Duration,
}

impl CallDeadlines {
    /// The deadlines for a model of `num_params` values, a long poll of `long_poll`.
    pub fn new(limits: &Limits, num_params: usize, long_poll: Duration) -> Self {
        Self {
            unary: limits.message_timeout,
            task: limits.message_timeout + long_poll,
            upload: limits.upload_deadline(num_params) + limits.message_timeout,
        }
    }

    fn for_method(&self, method: &str) -> Duration {
        match method {
            "SubmitUpdate" => self.upload,
            "GetTask" => self.task,
            _ => self.unary,
        }
    }
}

/// Wraps the gRPC service so that every call has a deadline; a call past it is answered
/// DEADLINE_EXCEEDED (its request body is dropped, freeing what it buffered), counted and
/// logged.
#[derive(Clone)]
pub struct Deadlines<S> {
    inner: S,
    deadlines: CallDeadlines,
    engine: Arc<Engine>,
}

impl<S> Deadlines<S> {
    pub fn new(inner: S, deadlines: CallDeadlines, engine: Arc<Engine>) -> Self {
        Self {
            inner,
            deadlines,
            engine,
        }
    }
}

impl<S: NamedService> NamedService for Deadlines<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for Deadlines<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let method = req
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let peer: Option<SocketAddr> = req
            .extensions()
            .get::<TcpConnectInfo>()
            .and_then(|i| i.remote_addr());
        let deadline = self.deadlines.for_method(&method);
        let engine = self.engine.clone();
        let call = self.inner.call(req);
        Box::pin(async move {
            match tokio::time::timeout(deadline, call).await {
                Ok(answer) => answer,
                Err(_) => {
                    let message = format!(
                        "{method} refused: the call did not complete within its deadline of {} s",
                        deadline.as_secs_f64()
                    );
                    engine
                        .refusals()
                        .record(Reason::Deadline, &method, peer, &message);
                    Ok(Status::deadline_exceeded(message).into_http())
                }
            }
        })
    }
}
