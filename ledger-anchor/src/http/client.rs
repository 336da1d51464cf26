//! The tlog-tiles HTTP client (see the module docs of [`super`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::rt::TokioExecutor;

use crate::error::LedgerError;
use crate::tiles::{TileCache, TileId, TileKind};

/// Largest checkpoint accepted (a note with a hundred signatures is a few KiB).
const MAX_CHECKPOINT_BYTES: usize = 64 * 1024;
/// Largest entry bundle: 256 entries of at most 65,535 bytes, each with its 2-byte length.
const MAX_BUNDLE_BYTES: usize = 256 * (2 + 65_535);
/// Each request must complete within this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Requests and bytes fetched by a [`TilesClient`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchStats {
    /// Successful requests.
    pub requests: u64,
    /// Body bytes received.
    pub bytes: u64,
}

/// A client of one log's tlog-tiles prefix (`http://host:port/` or a deeper path).
pub struct TilesClient<C = HttpConnector> {
    prefix: String,
    http: Client<C, Empty<Bytes>>,
    requests: AtomicU64,
    bytes: AtomicU64,
}

impl TilesClient<HttpConnector> {
    /// A plain-HTTP client of the log served at `prefix`.
    pub fn new(prefix: &str) -> Result<Self, LedgerError> {
        if !prefix.starts_with("http://") {
            return Err(LedgerError::Network(format!(
                "log URL {prefix:?}: only http:// is supported for now (TLS comes with the \
                 links issue)"
            )));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Self::with_connector(prefix, connector)
    }
}

impl<C: Connect + Clone + Send + Sync + 'static> TilesClient<C> {
    /// A client with its own connector (e.g. one that speaks TLS).
    pub fn with_connector(prefix: &str, connector: C) -> Result<Self, LedgerError> {
        let mut prefix = prefix.to_owned();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        prefix
            .parse::<Uri>()
            .map_err(|e| LedgerError::Network(format!("log URL {prefix:?}: {e}")))?;
        Ok(Self {
            prefix,
            http: Client::builder(TokioExecutor::new()).build(connector),
            requests: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        })
    }

    /// The log's URL prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Requests and bytes fetched so far.
    pub fn stats(&self) -> FetchStats {
        FetchStats {
            requests: self.requests.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }

    /// `GET <prefix><path>`: the body, or `None` on 404, refusing bodies over `limit` bytes.
    pub async fn get(&self, path: &str, limit: usize) -> Result<Option<Vec<u8>>, LedgerError> {
        let url = format!("{}{path}", self.prefix);
        let uri: Uri = url
            .parse()
            .map_err(|e| LedgerError::Network(format!("{url}: {e}")))?;
        let req = Request::get(uri)
            .header(http::header::ACCEPT_ENCODING, "identity")
            .body(Empty::<Bytes>::new())
            .map_err(|e| LedgerError::Network(format!("{url}: {e}")))?;
        let fetch = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| LedgerError::Network(format!("GET {url}: {e}")))?;
            match resp.status() {
                StatusCode::OK => {}
                StatusCode::NOT_FOUND => return Ok(None),
                s => return Err(LedgerError::Network(format!("GET {url}: HTTP {s}"))),
            }
            let body = Limited::new(resp.into_body(), limit)
                .collect()
                .await
                .map_err(|e| LedgerError::Network(format!("GET {url}: body: {e}")))?
                .to_bytes();
            self.requests.fetch_add(1, Ordering::Relaxed);
            self.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
            Ok(Some(body.to_vec()))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, fetch)
            .await
            .map_err(|_| LedgerError::Network(format!("GET {url}: no answer within 30 s")))?
    }

    /// The log's current checkpoint note (unverified), `None` before it has one.
    pub async fn checkpoint(&self) -> Result<Option<Vec<u8>>, LedgerError> {
        self.get("checkpoint", MAX_CHECKPOINT_BYTES).await
    }

    /// A tile or bundle (unverified); a missing one is an error.
    pub async fn tile(&self, id: TileId) -> Result<Vec<u8>, LedgerError> {
        let limit = match id.kind {
            TileKind::Hashes(_) => usize::from(id.width) * 32,
            TileKind::Entries => MAX_BUNDLE_BYTES,
        };
        self.get(&id.path(), limit)
            .await?
            .ok_or_else(|| LedgerError::Network(format!("{}{} not found", self.prefix, id.path())))
    }

    /// Fetches, in parallel, what `cache` lacks to prove the inclusion of `indices` (and give
    /// their entries) and the consistency from `old`, and adds it.
    pub async fn fill(
        &self,
        cache: &mut TileCache,
        indices: &[u64],
        old: Option<u64>,
    ) -> Result<(), LedgerError> {
        let need = cache.needed(indices, old)?;
        let fetched = futures::future::join_all(
            need.iter()
                .map(|id| async move { (*id, self.tile(*id).await) }),
        )
        .await;
        for (id, bytes) in fetched {
            cache.insert(id, &bytes?)?;
        }
        Ok(())
    }
}
