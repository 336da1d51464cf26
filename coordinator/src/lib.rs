//! The fedledger coordinator: runs a federation's rounds over gRPC.
//!
//! Layers, bottom first (each module imports only from layers below it; ARCHITECTURE.md lists
//! them and a test checks every `crate::` path against that list):
//!
//! 1. [`types`] (plain data: state, updates, outcomes) and [`error`] (refusals and storage
//!    failures).
//! 2. [`config`]: `coordinator.toml` and its validation; owns every section. [`refusal`]:
//!    refusals counted by reason, logged once and rate-limited. [`tls`]: the certificate both
//!    servers present, reloaded when its files change, and `tls init`.
//! 3. [`aggregate`] (strategies behind one trait; the DP-FedAvg wrapper), [`value`] (Shapley
//!    values and rewards of a round through the pure `fedledger-valuation` crate), [`transfer`]
//!    (chunk reassembly).
//! 4. [`store`] (sled metadata plus content-addressed blobs) and [`anchor`] (ledger records
//!    built from outcomes, appended to the signed log); above them [`governance`] (the
//!    ledger's governance entries read back, the configuration a round runs with under the
//!    rules in force, the start-up refusal of a file that contradicts them).
//! 5. [`machine`]: the round state machine, sans-IO: requests and the clock in, replies and
//!    jobs out; closing a round is a pure function of its inputs ([`machine::close`]). Start
//!    reading here.
//! 6. [`engine`]: the one place that performs effects in order (blob, sled, ledger).
//! 7. [`service`] (gRPC translation), [`driver`] (carries out due phase changes; gossips
//!    anchored rounds), [`replay`] (recomputes a recorded round, read-only), [`transport`]
//!    (connections per address and in all, a deadline on every call).
//! 8. [`audit`]: audit bundles (`export-audit`) and their replay on another machine.
//!    [`status`]: the federation's state, from a running engine or a stopped state directory.
//! 9. [`admin`]: the `[metrics]` endpoint (Prometheus `/metrics`, JSON `/status`).
//!    [`report`]: the HTML report of a state directory (`fedledger-coordinator report`).
//! 10. [`serve`] here, and the binary.
//!
//! Fault injection: with the non-default `failpoints` feature, named points (fail-rs) let tests
//! hold or fail the effects: `coordinator::blob::after_fsync`, `coordinator::update::after_flush`,
//! `coordinator::close::before_flush`, `coordinator::close::after_flush`,
//! `coordinator::ledger::before_append`, `coordinator::ledger::after_append`. Without the feature
//! they compile to nothing ([`FAILPOINTS`] says which build this is). Points that make the
//! coordinator *lie* in the ledger, so that tests can watch hospitals catch it, live in
//! [`anchor`] where entries are built: `coordinator::record::other_digest`,
//! `coordinator::record::other_examples`, `coordinator::record::other_privacy`,
//! `coordinator::record::other_reward` and `coordinator::record::omit_entry`, each configured
//! `return(<hospital name>)` (or plain `return` for every hospital). `coordinator::ledger::fork`
//! (`return(<round>)`, or `return` for every round) makes it sign a second, inconsistent
//! checkpoint of the size that round reached and publish it instead, so monitors see a fork.

pub mod error;
pub mod types;

pub mod config;
pub mod refusal;
pub mod tls;

pub mod aggregate;
pub mod transfer;
pub mod value;

pub mod anchor;
pub mod governance;
pub mod store;

pub mod machine;

pub mod engine;

pub mod driver;
pub mod replay;
pub mod service;
pub mod transport;

pub mod audit;
pub mod status;

pub mod admin;
pub mod report;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{net::TcpListener, task::JoinHandle};
use tokio_stream::{StreamExt, wrappers::TcpListenerStream};

pub use config::{ConfigFile, FederationConfig};
pub use engine::Engine;
pub use error::CoordinatorError;
pub use fedledger_memory::StoredVector;
pub use types::{Phase, Progress, RoundOutcome};

/// True when this build carries the test-only fault-injection points.
pub const FAILPOINTS: bool = cfg!(feature = "failpoints");

/// What parties check a coordinator by: the log's verifier key (it signs every checkpoint),
/// the ledger node's libp2p peer id, and the digest of the genesis entry (hospitals pin it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The log's verifier key (`<origin>+<key id>+<base64 key>`).
    pub log_key: String,
    /// The ledger node's peer id (stable: its key is kept in `[ledger] node_key`).
    pub peer_id: Option<String>,
    /// SHA-256 of entry 0, lowercase hex (once the log exists).
    pub genesis_sha256: Option<String>,
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "log verifier key: {}", self.log_key)?;
        writeln!(
            f,
            "ledger peer id:   {}",
            self.peer_id.as_deref().unwrap_or("(no node key yet)")
        )?;
        write!(
            f,
            "genesis sha256:   {}",
            self.genesis_sha256
                .as_deref()
                .unwrap_or("(no ledger yet: start the coordinator once)")
        )
    }
}

/// For `check-config`: when the state directory already holds a ledger, check the file
/// against the federation's governed state as a start would (through a copy, so a running
/// coordinator is not disturbed). Returns how many governance entries the ledger holds, or
/// None before the genesis.
pub fn check_governed(cfg: &FederationConfig) -> Result<Option<usize>, CoordinatorError> {
    if !cfg.state_dir.join("ledger").exists() {
        return Ok(None);
    }
    let snapshot = replay::Snapshot::open(&cfg.state_dir)?;
    let gov = governance::load(&snapshot.ledger)?;
    let open_round = match snapshot.store.load_state()? {
        Some(state) => state.round,
        None => 0,
    };
    governance::check_config(cfg, &gov, open_round)?;
    Ok(Some(gov.anchored().len()))
}

impl Identity {
    /// Reads the identity from a configuration without starting or creating anything: the log
    /// key file, the node key file and (through a copy of the ledger, so a running
    /// coordinator's store is not disturbed) the genesis entry.
    pub fn from_config(cfg: &FederationConfig) -> Result<Self, CoordinatorError> {
        use fedledger_ledger::{keys, note::NoteSigner};
        let err = |e: fedledger_ledger::LedgerError| CoordinatorError::Ledger(e.to_string());
        let key = keys::load_key(&cfg.key).map_err(err)?;
        let log_key = NoteSigner::log(&cfg.federation, key)
            .map_err(err)?
            .verifier_key()
            .to_string();
        let peer_id = if cfg.node_key.exists() {
            Some(
                fedledger_ledger::node::load_or_generate_identity(&cfg.node_key)
                    .map_err(err)?
                    .public()
                    .to_peer_id()
                    .to_string(),
            )
        } else {
            None
        };
        let genesis_sha256 = if cfg.state_dir.join("ledger").exists() {
            let snapshot = replay::Snapshot::open(&cfg.state_dir)?;
            Some(anchor::genesis_sha256(&snapshot.ledger)?)
        } else {
            None
        };
        Ok(Self {
            log_key,
            peer_id,
            genesis_sha256,
        })
    }
}

/// A running coordinator.
pub struct Running {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The engine, for in-process inspection (examples, tests).
    pub coordinator: Arc<Engine>,
    /// The ledger's libp2p node, when `[ledger] listen` is set.
    pub ledger_node: Option<fedledger_ledger::node::NodeHandle>,
    /// The tlog-tiles HTTP server, when `[ledger] tiles_listen` is set.
    pub tiles: Option<fedledger_ledger::http::TilesServer>,
    /// What parties check this coordinator by.
    pub identity: Identity,
    /// Whether the gRPC endpoint (and the tiles server) speak TLS.
    pub tls: bool,
    /// The admin endpoint (`/metrics`, `/status`), when it runs.
    pub admin: Option<admin::Admin>,
    /// The HTTP/2 flow-control windows it serves with (`[limits]`, or sized at start).
    pub windows: config::Windows,
    shutdown: tokio::sync::watch::Sender<bool>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    driver: JoinHandle<()>,
    publisher: Option<JoinHandle<()>>,
}

impl Running {
    /// The URL prefix of the log's tlog-tiles API, when it is served.
    pub fn tiles_url(&self) -> Option<String> {
        self.tiles.as_ref().map(|t| t.url())
    }

    /// Wait until every round has run.
    pub async fn wait_done(&self) {
        let mut rx = self.coordinator.subscribe();
        // An error means the sender is gone, which only happens when the coordinator is dropped.
        let _ = rx.wait_for(|p| p.phase == Phase::Done).await;
    }

    /// Wait until every round has run, then go on serving (DONE, round results, tiles) for the
    /// grace period: until the final checkpoint carries the witness quorum, every enrolled
    /// hospital has been told DONE and nobody has asked anything for [`QUIET_BEFORE_EXIT`]
    /// (the time hospitals take to fetch their last receipts), but never longer than `grace`
    /// after the last round. Says why it stopped waiting.
    pub async fn wait_finished(&self, grace: Duration) -> Farewell {
        self.wait_done().await;
        let until = tokio::time::Instant::now() + grace;
        loop {
            let g = match self.coordinator.goodbye() {
                Ok(g) => g,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot tell whether the federation's end is witnessed");
                    return Farewell::GraceOver {
                        not_told: Vec::new(),
                        witnessed: false,
                    };
                }
            };
            if g.witnessed && g.not_told.is_empty() && g.quiet >= QUIET_BEFORE_EXIT {
                return Farewell::Complete;
            }
            if tokio::time::Instant::now() >= until {
                return Farewell::GraceOver {
                    not_told: g.not_told,
                    witnessed: g.witnessed,
                };
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Where the admin endpoint (`/metrics`, `/status`) listens, when it runs.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|a| a.addr)
    }

    /// Stop serving and wait for the server to finish.
    pub async fn shutdown(self) -> Result<(), CoordinatorError> {
        if let Some(a) = self.admin {
            a.shutdown();
            let _ = std::fs::remove_file(
                self.coordinator
                    .config()
                    .state_dir
                    .join(status::ADMIN_ADDR_FILE),
            );
        }
        let _ = self.shutdown.send(true);
        let _ = self.driver.await;
        if let Some(p) = self.publisher {
            let _ = p.await;
        }
        if let Some(n) = &self.ledger_node {
            n.shutdown().await;
        }
        if let Some(t) = self.tiles {
            t.shutdown().await;
        }
        self.server
            .await
            .map_err(|e| CoordinatorError::Internal(format!("server task: {e}")))?
            .map_err(|e| CoordinatorError::Internal(format!("server: {e}")))
    }
}

/// After the last round, how long nobody may have asked anything before `serve` exits (once
/// every hospital was told DONE and the final checkpoint is witnessed): hospitals fetch their
/// last receipts in that time.
pub const QUIET_BEFORE_EXIT: Duration = Duration::from_secs(3);

/// Why [`Running::wait_finished`] stopped waiting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Farewell {
    /// Every hospital was told DONE, the final checkpoint is witnessed, and nobody asks more.
    Complete,
    /// The grace period ran out first.
    GraceOver {
        /// Hospitals never told DONE.
        not_told: Vec<String>,
        /// Whether the final checkpoint carries its witness quorum.
        witnessed: bool,
    },
}

/// How long a `GetTask` with nothing to do waits for news before answering WAIT.
const LONG_POLL: Duration = Duration::from_secs(5);

/// Open the coordinator's state and serve it on `listener` (or on the configured address).
pub async fn serve(
    cfg: FederationConfig,
    listener: Option<TcpListener>,
) -> Result<Running, CoordinatorError> {
    // Chunks flow through many threads; each heap glibc adds keeps what it frees.
    fedledger_memory::limit_heaps_to_cores();
    let listener = match listener {
        Some(l) => l,
        None => TcpListener::bind(cfg.listen)
            .await
            .map_err(|e| CoordinatorError::Internal(format!("bind {}: {e}", cfg.listen)))?,
    };
    let addr = listener
        .local_addr()
        .map_err(|e| CoordinatorError::Internal(format!("listener address: {e}")))?;
    let coordinator = {
        let cfg = cfg.clone();
        Arc::new(
            tokio::task::spawn_blocking(move || Engine::open(cfg))
                .await
                .map_err(|e| CoordinatorError::Internal(format!("open: {e}")))??,
        )
    };
    let (shutdown, rx) = tokio::sync::watch::channel(false);
    let limits = cfg.limits.clone();
    let svc = service::Service::new(coordinator.clone(), LONG_POLL, limits.clone());
    let grpc = fedledger_proto::coordinator_server::CoordinatorServer::new(svc)
        .max_decoding_message_size(transport::MAX_REQUEST_MESSAGE_BYTES)
        .max_encoding_message_size(fedledger_proto::MAX_MESSAGE_BYTES);
    let grpc = transport::Deadlines::new(
        grpc,
        transport::CallDeadlines::new(&limits, cfg.model.num_params(), LONG_POLL),
        coordinator.clone(),
    );
    let mut rx_server = rx.clone();
    let gate = transport::Gate::new(&limits, coordinator.clone());
    let certificate = match &cfg.tls {
        Some(t) => Some(Arc::new(
            tls::ReloadingCert::new(&t.cert, &t.key)
                .map_err(|e| CoordinatorError::Internal(format!("[tls]: {e}")))?,
        )),
        None => None,
    };
    let tls_config = |alpn: &[u8]| -> Result<Option<Arc<rustls::ServerConfig>>, CoordinatorError> {
        certificate
            .as_ref()
            .map(|c| {
                tls::server_config(c.clone(), alpn)
                    .map(Arc::new)
                    .map_err(|e| CoordinatorError::Internal(format!("[tls]: {e}")))
            })
            .transpose()
    };
    if certificate.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "serving gRPC WITHOUT TLS on a non-loopback address: add a [tls] section \
             (`fedledger-coordinator tls init`) before hospitals connect across a network"
        );
    }
    // Memory any peer can make the server hold is bounded by these settings: per connection,
    // `transport::connection_memory_bound` (streams x 2 x message limit, plus what is not read
    // yet: a stream window per stream and one connection window in all), times the connections
    // allowed.
    let windows = limits.windows_for(
        (cfg.model.num_params() as u64).saturating_mul(4),
        coordinator.config().participants.len(),
    );
    let builder = tonic::transport::Server::builder()
        .max_concurrent_streams(limits.max_streams_per_connection)
        .initial_stream_window_size(windows.stream)
        .initial_connection_window_size(windows.connection)
        .max_frame_size(transport::MAX_FRAME_BYTES)
        .http2_keepalive_interval(limits.keepalive_interval)
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .tcp_keepalive(Some(Duration::from_secs(60)))
        .add_service(grpc);
    let stop = async move {
        let _ = rx_server.wait_for(|s| *s).await;
    };
    let server = match tls_config(tls::ALPN_H2)? {
        Some(server_tls) => {
            // Connections past the limits are closed at accept, before any handshake.
            let incoming = transport::tls_incoming(
                listener,
                gate,
                tokio_rustls::TlsAcceptor::from(server_tls),
                limits.message_timeout,
            );
            tokio::spawn(builder.serve_with_incoming_shutdown(incoming, stop))
        }
        None => {
            // Connections past the limits are closed at accept. Small messages (task headers,
            // receipts) must not wait for delayed ACKs.
            let incoming = TcpListenerStream::new(listener).filter_map(move |s| match s {
                Ok(sock) => {
                    if let Err(e) = sock.set_nodelay(true) {
                        tracing::debug!(error = %e, "could not set TCP_NODELAY");
                    }
                    gate.admit(sock).map(Ok)
                }
                Err(e) => Some(Err(e)),
            });
            tokio::spawn(builder.serve_with_incoming_shutdown(incoming, stop))
        }
    };
    let mut rx_driver = rx;
    let driver = tokio::spawn(driver::drive_rounds(coordinator.clone(), async move {
        let _ = rx_driver.wait_for(|s| *s).await;
    }));
    let ledger_err = |e: fedledger_ledger::LedgerError| CoordinatorError::Ledger(e.to_string());
    let ledger_node = if cfg.ledger_listen.is_empty() {
        None
    } else {
        let node_key =
            fedledger_ledger::node::load_or_generate_identity(&cfg.node_key).map_err(ledger_err)?;
        Some(
            fedledger_ledger::node::spawn(
                fedledger_ledger::node::NodeConfig {
                    listen: cfg.ledger_listen.clone(),
                    allow: cfg.ledger_allow.clone(),
                    ..Default::default()
                },
                node_key,
                coordinator.ledger().clone(),
                None,
            )
            .await
            .map_err(|e| CoordinatorError::Ledger(format!("start the ledger node: {e}")))?,
        )
    };
    let http_witnesses = cfg
        .witness_urls
        .iter()
        .map(|u| fedledger_ledger::http::WitnessClient::new(u))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ledger_err)?;
    // Checkpoints are published (libp2p gossip) and cosigned (libp2p and HTTP witnesses) by
    // one task, whichever ways are configured.
    let publisher = if ledger_node.is_none() && http_witnesses.is_empty() {
        None
    } else {
        let mut rx_pub = shutdown.subscribe();
        Some(tokio::spawn(driver::publish_rounds(
            coordinator.clone(),
            ledger_node.clone(),
            http_witnesses,
            async move {
                let _ = rx_pub.wait_for(|s| *s).await;
            },
        )))
    };
    let tiles = match cfg.tiles_listen {
        Some(at) => {
            let l = TcpListener::bind(at)
                .await
                .map_err(|e| CoordinatorError::Internal(format!("bind tiles {at}: {e}")))?;
            Some(
                fedledger_ledger::http::serve_tiles_with(
                    l,
                    coordinator.ledger().clone(),
                    tls_config(tls::ALPN_HTTP1)?,
                )
                .await
                .map_err(ledger_err)?,
            )
        }
        None => None,
    };
    let admin = start_admin(&cfg, &coordinator).await?;
    let identity = Identity {
        log_key: coordinator.ledger().log_key().to_string(),
        peer_id: ledger_node.as_ref().map(|n| n.peer_id().to_string()),
        genesis_sha256: Some(anchor::genesis_sha256(coordinator.ledger())?),
    };
    tracing::info!(
        %addr,
        federation = %cfg.federation,
        log_key = %identity.log_key,
        peer_id = identity.peer_id.as_deref().unwrap_or("-"),
        genesis_sha256 = identity.genesis_sha256.as_deref().unwrap_or("-"),
        tiles = tiles.as_ref().map(|t| t.url()).as_deref().unwrap_or("-"),
        tls = certificate.is_some(),
        admin = admin.as_ref().map(|a| a.addr.to_string()).as_deref().unwrap_or("-"),
        stream_window_kib = windows.stream / 1024,
        connection_window_kib = windows.connection / 1024,
        "coordinator listening"
    );
    Ok(Running {
        addr,
        coordinator,
        ledger_node,
        tiles,
        identity,
        tls: certificate.is_some(),
        admin,
        windows,
        shutdown,
        server,
        driver,
        publisher,
    })
}

/// Starts the `[metrics]` endpoint and notes its address in the state directory, where
/// `fedledger-coordinator status` looks for it. The default address is given up with a warning
/// when taken (another coordinator on this machine); an address the configuration names must
/// be free.
async fn start_admin(
    cfg: &FederationConfig,
    engine: &Arc<Engine>,
) -> Result<Option<admin::Admin>, CoordinatorError> {
    if !cfg.metrics.enabled {
        return Ok(None);
    }
    let at = cfg.metrics.listen.unwrap_or(config::DEFAULT_METRICS_LISTEN);
    let listener = match TcpListener::bind(at).await {
        Ok(l) => l,
        Err(e) if cfg.metrics.listen.is_none() => {
            tracing::warn!(
                %at,
                error = %e,
                "metrics and status endpoint off: its default address is taken (set [metrics] listen)"
            );
            return Ok(None);
        }
        Err(e) => {
            return Err(CoordinatorError::Internal(format!(
                "bind [metrics] listen {at}: {e}"
            )));
        }
    };
    if !at.ip().is_loopback() {
        tracing::warn!(%at, "metrics and status served beyond loopback: they name the hospitals");
    }
    let admin = admin::serve(listener, engine.clone())?;
    let file = cfg.state_dir.join(status::ADMIN_ADDR_FILE);
    std::fs::write(&file, format!("{}\n", admin.addr))
        .map_err(|e| CoordinatorError::Internal(format!("write {}: {e}", file.display())))?;
    Ok(Some(admin))
}
