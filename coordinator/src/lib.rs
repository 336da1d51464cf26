//! The fedledger coordinator: runs a federation's rounds over gRPC.
//!
//! Layers, bottom first (each module imports only from layers below it; ARCHITECTURE.md lists
//! them and a test checks every `crate::` path against that list):
//!
//! 1. [`types`] (plain data: state, updates, outcomes) and [`error`] (refusals and storage
//!    failures).
//! 2. [`config`]: `coordinator.toml` and its validation; owns every section. [`refusal`]:
//!    refusals counted by reason, logged once and rate-limited.
//! 3. [`aggregate`] (strategies behind one trait; the DP-FedAvg wrapper), [`value`] (Shapley
//!    values and rewards of a round through the pure `fedledger-valuation` crate), [`transfer`]
//!    (chunk reassembly).
//! 4. [`store`] (sled metadata plus content-addressed blobs) and [`anchor`] (ledger records
//!    built from outcomes, appended to the signed log).
//! 5. [`machine`]: the round state machine, sans-IO: requests and the clock in, replies and
//!    jobs out; closing a round is a pure function of its inputs ([`machine::close`]). Start
//!    reading here.
//! 6. [`engine`]: the one place that performs effects in order (blob, sled, ledger).
//! 7. [`service`] (gRPC translation), [`driver`] (carries out due phase changes; gossips
//!    anchored rounds), [`replay`] (recomputes a recorded round, read-only), [`transport`]
//!    (connections per address and in all, a deadline on every call).
//! 8. [`serve`] here, and the binary.
//!
//! Fault injection: with the non-default `failpoints` feature, named points (fail-rs) let tests
//! hold or fail the effects: `coordinator::blob::after_fsync`, `coordinator::update::after_flush`,
//! `coordinator::close::before_flush`, `coordinator::close::after_flush`,
//! `coordinator::ledger::before_append`, `coordinator::ledger::after_append`. Without the feature
//! they compile to nothing ([`FAILPOINTS`] says which build this is).

pub mod error;
pub mod types;

pub mod config;
pub mod refusal;

pub mod aggregate;
pub mod transfer;
pub mod value;

pub mod anchor;
pub mod store;

pub mod machine;

pub mod engine;

pub mod driver;
pub mod replay;
pub mod service;
pub mod transport;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{net::TcpListener, task::JoinHandle};
use tokio_stream::{StreamExt, wrappers::TcpListenerStream};

pub use config::{ConfigFile, FederationConfig};
pub use engine::Engine;
pub use error::CoordinatorError;
pub use types::{Phase, Progress, RoundOutcome};

/// True when this build carries the test-only fault-injection points.
pub const FAILPOINTS: bool = cfg!(feature = "failpoints");

/// A running coordinator.
pub struct Running {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The engine, for in-process inspection (examples, tests).
    pub coordinator: Arc<Engine>,
    /// The ledger's libp2p node, when `[ledger] listen` is set.
    pub ledger_node: Option<fedledger_ledger::node::NodeHandle>,
    shutdown: tokio::sync::watch::Sender<bool>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    driver: JoinHandle<()>,
    publisher: Option<JoinHandle<()>>,
}

impl Running {
    /// Wait until every round has run.
    pub async fn wait_done(&self) {
        let mut rx = self.coordinator.subscribe();
        // An error means the sender is gone, which only happens when the coordinator is dropped.
        let _ = rx.wait_for(|p| p.phase == Phase::Done).await;
    }

    /// Stop serving and wait for the server to finish.
    pub async fn shutdown(self) -> Result<(), CoordinatorError> {
        let _ = self.shutdown.send(true);
        let _ = self.driver.await;
        if let Some(p) = self.publisher {
            let _ = p.await;
        }
        if let Some(n) = &self.ledger_node {
            n.shutdown().await;
        }
        self.server
            .await
            .map_err(|e| CoordinatorError::Internal(format!("server task: {e}")))?
            .map_err(|e| CoordinatorError::Internal(format!("server: {e}")))
    }
}

/// How long a `GetTask` with nothing to do waits for news before answering WAIT.
const LONG_POLL: Duration = Duration::from_secs(5);

/// Open the coordinator's state and serve it on `listener` (or on the configured address).
pub async fn serve(
    cfg: FederationConfig,
    listener: Option<TcpListener>,
) -> Result<Running, CoordinatorError> {
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
    // Memory any peer can make the server hold is bounded by these settings: per connection,
    // `transport::connection_memory_bound` (streams x (2 x message limit + stream window)),
    // times the connections allowed.
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .max_concurrent_streams(limits.max_streams_per_connection)
            .initial_stream_window_size(transport::STREAM_WINDOW_BYTES)
            .initial_connection_window_size(transport::CONNECTION_WINDOW_BYTES)
            .http2_keepalive_interval(limits.keepalive_interval)
            .http2_keepalive_timeout(Some(limits.keepalive_timeout))
            .tcp_keepalive(Some(Duration::from_secs(60)))
            .add_service(grpc)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = rx_server.wait_for(|s| *s).await;
            }),
    );
    let mut rx_driver = rx;
    let driver = tokio::spawn(driver::drive_rounds(coordinator.clone(), async move {
        let _ = rx_driver.wait_for(|s| *s).await;
    }));
    let (ledger_node, publisher) = if cfg.ledger_listen.is_empty() {
        (None, None)
    } else {
        let node = fedledger_ledger::node::spawn(
            fedledger_ledger::node::NodeConfig {
                listen: cfg.ledger_listen.clone(),
                ..Default::default()
            },
            libp2p::identity::Keypair::generate_ed25519(),
            coordinator.ledger().clone(),
            None,
        )
        .await
        .map_err(|e| CoordinatorError::Ledger(format!("start the ledger node: {e}")))?;
        let mut rx_pub = shutdown.subscribe();
        let publisher = tokio::spawn(driver::publish_rounds(
            coordinator.clone(),
            node.clone(),
            async move {
                let _ = rx_pub.wait_for(|s| *s).await;
            },
        ));
        (Some(node), Some(publisher))
    };
    tracing::info!(%addr, federation = %cfg.federation, "coordinator listening");
    Ok(Running {
        addr,
        coordinator,
        ledger_node,
        shutdown,
        server,
        driver,
        publisher,
    })
}
