//! The admin endpoint (`[metrics]`): `GET /metrics`, the federation in the Prometheus /
//! OpenMetrics text format (prometheus-client), and `GET /status`, the [`Status`] as JSON (what
//! `fedledger-coordinator status` prints). Plain HTTP/1.1, loopback by default.
//!
//! Nothing is counted twice: every figure is read at scrape time from what the engine already
//! keeps (the store's finished rounds, the ledger's checkpoints, the refusal counters, the
//! sessions), so the metrics cannot drift from the record, and a restarted coordinator reports
//! the federation's totals, not the process's.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Incoming, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge, histogram::Histogram, info::Info},
    registry::{Registry, Unit},
};
use tokio::{net::TcpListener, sync::Semaphore, task::JoinHandle};

use crate::{engine::Engine, error::CoordinatorError, status::Status};

/// Connections served at once; more wait in the accept queue.
const MAX_CONNECTIONS: usize = 16;
/// A request's head must arrive within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Buckets of the round and close durations, seconds.
const DURATION_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
];

/// The running admin endpoint.
pub struct Admin {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Admin {
    /// Stops accepting (open connections finish their request).
    pub fn shutdown(self) {
        self.task.abort();
    }
}

/// The metrics of `engine`, collected at each scrape.
#[derive(Clone)]
struct Metrics(Arc<Engine>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn gauge(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    v: impl prometheus_client::encoding::EncodeGaugeValue + Clone + std::fmt::Debug + Send + Sync,
) -> std::fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

fn counter(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

impl Collector for Metrics {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> std::fmt::Result {
        let engine = &self.0;
        // A store or ledger failure fails the scrape (the HTTP layer answers 500) rather than
        // reporting zeros.
        let (status, outcomes, cosignatures) = match scrape(engine) {
            Ok(x) => x,
            Err(err) => {
                tracing::warn!(error = %err, "metrics scrape failed");
                return Err(std::fmt::Error);
            }
        };
        let info = Info::new(vec![("federation", status.federation.clone())]);
        info.encode(e.encode_descriptor(
            "fedledger_federation",
            "The federation this coordinator runs",
            None,
            info.metric_type(),
        )?)?;
        gauge(
            &mut e,
            "fedledger_round",
            "The current round (0 before the first opens)",
            status.round,
        )?;
        gauge(
            &mut e,
            "fedledger_rounds_planned",
            "Rounds the federation plans",
            status.rounds_total,
        )?;
        gauge(
            &mut e,
            "fedledger_done",
            "1 once every round has run",
            u64::from(status.phase == "done"),
        )?;
        {
            let c = ConstCounter::new(0u64);
            let mut fam = e.encode_descriptor(
                "fedledger_rounds_finished",
                "Rounds finished, by status (completed: aggregated; abandoned: below quorum)",
                None,
                c.metric_type(),
            )?;
            for (s, n) in [
                ("completed", status.rounds_completed),
                ("abandoned", status.rounds_abandoned),
            ] {
                ConstCounter::new(n).encode(fam.encode_family(&[("status", s)])?)?;
            }
        }
        counter(
            &mut e,
            "fedledger_updates_accepted",
            "Updates accepted (acknowledged durably), finished rounds and the open one",
            status.updates_accepted,
        )?;
        counter(
            &mut e,
            "fedledger_declines",
            "Signed declines recorded, finished rounds and the open one",
            status.participants.iter().map(|p| p.declines).sum(),
        )?;
        {
            let c = ConstCounter::new(0u64);
            let mut fam = e.encode_descriptor(
                "fedledger_refusals",
                "Requests, connections and calls refused since start, by reason",
                None,
                c.metric_type(),
            )?;
            for (reason, n) in engine.refusals().snapshot() {
                ConstCounter::new(n).encode(fam.encode_family(&[("reason", reason)])?)?;
            }
        }
        let rounds = Histogram::new(DURATION_BUCKETS);
        let closes = Histogram::new(DURATION_BUCKETS);
        for o in &outcomes {
            rounds.observe(o.closed_at_ms.saturating_sub(o.opened_at_ms) as f64 / 1e3);
            closes.observe(o.close_micros as f64 / 1e6);
        }
        rounds.encode(e.encode_descriptor(
            "fedledger_round_duration",
            "Finished rounds, from opening to closed",
            Some(&Unit::Seconds),
            rounds.metric_type(),
        )?)?;
        closes.encode(e.encode_descriptor(
            "fedledger_round_close_duration",
            "Closing a round: aggregate, evaluate, value, reward",
            Some(&Unit::Seconds),
            closes.metric_type(),
        )?)?;
        let count = |f: fn(&crate::status::ParticipantStatus) -> Option<bool>| {
            status
                .participants
                .iter()
                .filter(|p| f(p) == Some(true))
                .count() as u64
        };
        gauge(
            &mut e,
            "fedledger_participants_enrolled",
            "Participants enrolled in the configuration",
            status.participants.len() as u64,
        )?;
        gauge(
            &mut e,
            "fedledger_participants_registered",
            "Participants holding a live session",
            count(|p| p.registered),
        )?;
        gauge(
            &mut e,
            "fedledger_participants_online",
            "Participants that made a call in the last 30 seconds",
            count(|p| p.online),
        )?;
        {
            let g = ConstGauge::new(0.0f64);
            let mut fam = e.encode_descriptor(
                "fedledger_epsilon_spent",
                "Each participant's cumulative epsilon in this federation, as recorded with its last update",
                None,
                g.metric_type(),
            )?;
            for p in &status.participants {
                ConstGauge::new(p.epsilon_spent)
                    .encode(fam.encode_family(&[("participant", p.name.as_str())])?)?;
            }
        }
        gauge(
            &mut e,
            "fedledger_epsilon_budget",
            "Each participant's privacy budget in the federation's plan",
            status.epsilon_budget,
        )?;
        if let Some(m) = outcomes.iter().rev().find_map(|o| o.metrics.as_ref()) {
            gauge(
                &mut e,
                "fedledger_validation_accuracy",
                "Validation accuracy of the global model after the last completed round",
                m.accuracy,
            )?;
            gauge(
                &mut e,
                "fedledger_validation_log_loss",
                "Validation log-loss of the global model after the last completed round",
                m.log_loss,
            )?;
            if let Some(auc) = m.auc {
                gauge(
                    &mut e,
                    "fedledger_validation_auc",
                    "Validation ROC AUC of the global model after the last completed round",
                    auc,
                )?;
            }
        }
        gauge(
            &mut e,
            "fedledger_ledger_entries",
            "Entries in the coordinator's ledger",
            status.ledger_entries,
        )?;
        if let Some(cp) = &status.checkpoint {
            gauge(
                &mut e,
                "fedledger_checkpoint_size",
                "Size of the latest signed checkpoint",
                cp.size,
            )?;
            gauge(
                &mut e,
                "fedledger_checkpoint_cosignatures",
                "Valid witness cosignatures on the latest checkpoint",
                cp.cosignatures,
            )?;
            gauge(
                &mut e,
                "fedledger_checkpoint_witnessed_size",
                "Size of the largest checkpoint with the quorum of cosignatures (0: none)",
                cp.witnessed_size.unwrap_or(0),
            )?;
        }
        counter(
            &mut e,
            "fedledger_cosignatures_collected",
            "Valid witness cosignatures over all stored checkpoints",
            cosignatures,
        )?;
        Ok(())
    }
}

type Scrape = (Status, Vec<crate::types::RoundOutcome>, u64);

fn scrape(engine: &Engine) -> Result<Scrape, CoordinatorError> {
    let outcomes = engine.store().outcomes()?;
    let status = Status::of_running_with(engine, &outcomes)?;
    let ledger = engine.ledger();
    let witnesses = ledger.witness_keys();
    let cosignatures = ledger
        .checkpoints()
        .map_err(|e| CoordinatorError::Ledger(e.to_string()))?
        .iter()
        .map(|cp| cp.note.valid_cosigners(&witnesses).len() as u64)
        .sum();
    Ok((status, outcomes, cosignatures))
}

/// The metrics of `engine` in the OpenMetrics text format.
pub fn metrics_text(engine: Arc<Engine>) -> Result<String, CoordinatorError> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Metrics(engine)));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)
        .map_err(|_| CoordinatorError::Internal("encode the metrics".into()))?;
    Ok(out)
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

async fn answer(engine: Arc<Engine>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    if req.method() != hyper::Method::GET {
        return reply(StatusCode::METHOD_NOT_ALLOWED, TEXT, "GET only\n".into());
    }
    let metrics = match req.uri().path() {
        "/metrics" => true,
        "/status" => false,
        _ => {
            return reply(
                StatusCode::NOT_FOUND,
                TEXT,
                "not found: GET /metrics or /status\n".into(),
            );
        }
    };
    // Store and ledger reads block: off the async workers.
    let done = tokio::task::spawn_blocking(move || {
        if metrics {
            metrics_text(engine).map(|t| {
                (
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    t,
                )
            })
        } else {
            Status::of_running(&engine).map(|s| {
                (
                    "application/json",
                    serde_json::to_string_pretty(&s).unwrap_or_default(),
                )
            })
        }
    })
    .await;
    match done {
        Ok(Ok((ct, body))) => reply(StatusCode::OK, ct, body),
        Ok(Err(e)) => reply(StatusCode::INTERNAL_SERVER_ERROR, TEXT, format!("{e}\n")),
        Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, TEXT, format!("{e}\n")),
    }
}

/// Serves the admin endpoint for `engine` on `listener` until [`Admin::shutdown`].
pub fn serve(listener: TcpListener, engine: Arc<Engine>) -> Result<Admin, CoordinatorError> {
    let addr = listener
        .local_addr()
        .map_err(|e| CoordinatorError::Internal(format!("admin listener address: {e}")))?;
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let task = tokio::spawn(async move {
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let (sock, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let engine = engine.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let engine = engine.clone();
                    async move { Ok::<_, Infallible>(answer(engine, req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(sock), svc);
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "admin connection ended");
                }
                drop(permit);
            });
        }
    });
    Ok(Admin { addr, task })
}
