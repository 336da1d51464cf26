//! The round driver: carries out the machine's phase changes (open, close) when they are due,
//! woken by the engine when everyone has answered and by a timer at the deadline; and the
//! publisher that gossips each newly anchored round to the ledger network and collects the
//! witnesses' cosignatures.

use std::{sync::Arc, time::Duration};

use tracing::{debug, warn};

use crate::{
    engine::{Engine, Step},
    types::Phase,
};

/// Close rounds when they are due. Runs until `shutdown` resolves.
pub async fn drive_rounds(engine: Arc<Engine>, shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        let e = engine.clone();
        match tokio::task::spawn_blocking(move || e.step()).await {
            Ok(Ok(Some(Step::Opened { .. } | Step::Validating { .. } | Step::Closed(_)))) => {
                continue;
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                warn!(error = %e, "a round's phase change failed; retrying in 1 s");
                tokio::select! {
                    _ = &mut shutdown => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
            Err(e) => warn!(error = %e, "the round driver's worker panicked"),
        }
        if engine.progress().phase == Phase::Done {
            debug!("every round has run; the driver stops");
            let _ = (&mut shutdown).await;
            return;
        }
        let wait = engine.next_wake().map_or(Duration::from_secs(1), |ms| {
            Duration::from_millis(ms.clamp(1, 1000))
        });
        tokio::select! {
            _ = &mut shutdown => { debug!("round driver stopping"); return; }
            _ = engine.woken() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Gossip each newly anchored round to the ledger network (when there is a libp2p node) and
/// collect the witnesses' cosignatures, over libp2p and from the witnesses listed by URL (C2SP
/// tlog-witness), in order, without holding up training. A round counts as anchored once the
/// quorum of the witnesses in force at its checkpoint's size (the genesis's, or a governed
/// change's among its entries) has cosigned it, whichever way each cosignature came.
pub async fn publish_rounds(
    engine: Arc<Engine>,
    node: Option<fedledger_ledger::node::NodeHandle>,
    http_witnesses: Vec<fedledger_ledger::http::WitnessClient>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let log = engine.ledger().clone();
    let (mut witnesses, mut quorum) = log.witness_policy(log.size());
    let mut progress = engine.subscribe();
    // Entries up to `published` have been gossiped; `witnessed` says whether the checkpoint of
    // that size has its quorum of cosignatures (asked again every second until it has: a
    // witness may connect late, and hospitals fetch only witnessed checkpoints).
    let mut published = 0u64;
    let mut witnessed = true;
    loop {
        let size = log.size();
        if size > published {
            if let Some(node) = &node
                && let Err(e) = node.publish_since(published).await
            {
                debug!(error = %e, "gossip of new entries failed (no peers yet?)");
            }
            published = size;
            (witnesses, quorum) = log.witness_policy(size);
            witnessed = witnesses.is_empty();
        }
        if !witnessed {
            let mut cosigned = None;
            if let Some(node) = &node {
                match node.collect_cosignatures(size, &witnesses).await {
                    Ok(n) => cosigned = Some(n),
                    Err(e) => warn!(size, error = %e, "collecting cosignatures over libp2p failed"),
                }
            }
            if !http_witnesses.is_empty() {
                match fedledger_ledger::http::collect_cosignatures_http(
                    &log,
                    size,
                    &http_witnesses,
                    &witnesses,
                )
                .await
                {
                    // Counted on the stored checkpoint: libp2p and HTTP cosignatures together.
                    Ok(n) => cosigned = Some(n),
                    Err(e) => warn!(size, error = %e, "collecting cosignatures over HTTP failed"),
                }
            }
            if let Some(n) = cosigned {
                witnessed = n as u64 >= quorum;
                if witnessed {
                    tracing::info!(size, cosigned = n, quorum, "checkpoint witnessed");
                } else {
                    debug!(size, cosigned = n, quorum, "checkpoint not yet witnessed");
                }
            }
        }
        tokio::select! {
            _ = &mut shutdown => return,
            r = progress.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(1)), if !witnessed => {}
        }
    }
}
