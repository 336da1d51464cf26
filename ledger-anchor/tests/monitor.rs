//! The monitor against logs served over real HTTP (tlog-tiles, in this process): it follows an
//! honest log round after round; shown a fork of what it accepted it raises an alert carrying
//! both signed checkpoints; shown an entry with a forged hospital signature, or a checkpoint
//! short of the witness quorum, it alerts and accepts nothing; and its state refuses to go on.

mod common;

use common::{Federation, ORIGIN};
use fedledger_ledger::Log;
use fedledger_ledger::http::serve_tiles;
use fedledger_ledger::monitor::{
    Alert, Monitor, MonitorConfig, MonitorError, Polled, recorded_alerts,
};
use fedledger_ledger::records::{ContributionEntry, encode_canonical};

async fn serve(log: &Log) -> fedledger_ledger::http::TilesServer {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    serve_tiles(l, log.clone()).await.unwrap()
}

fn monitor(url: &str, state: &std::path::Path, fed: &Federation) -> Monitor {
    Monitor::open(MonitorConfig {
        url: url.into(),
        state: state.into(),
        log_key: fed.log_signer.verifier_key().clone(),
        genesis_sha256: None,
    })
    .unwrap()
}

fn alert(r: Result<Polled, MonitorError>) -> Alert {
    match r {
        Err(MonitorError::Alert(a)) => *a,
        other => panic!("expected an alert, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_an_honest_log_and_alerts_on_a_fork_naming_both_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let fed = Federation::new(3, 2);
    let log = fed.build_log(&dir.path().join("log"), 2);
    let server = serve(&log).await;
    let state = dir.path().join("monitor");
    let m = monitor(&server.url(), &state, &fed);
    let first = log.size();
    assert_eq!(
        m.poll(None, None).await.unwrap(),
        Polled::Advanced {
            from: 0,
            to: first,
            cosigners: 2
        }
    );
    assert_eq!(
        m.poll(None, None).await.unwrap(),
        Polled::Unchanged { size: first }
    );
    log.append_batch(&fed.round(3, log.size())).unwrap();
    log.checkpoint().unwrap();
    fed.cosign_latest(&log, 1_800_000_000);
    let accepted = log.size();
    assert_eq!(
        m.poll(None, None).await.unwrap(),
        Polled::Advanced {
            from: first,
            to: accepted,
            cosigners: 2
        }
    );
    let accepted_note = log.latest_checkpoint().unwrap().unwrap().encode();

    // The same log key signs another history: round 3 recorded with other rewards, then a
    // round 4, cosigned by the (colluding) witnesses.
    let fork = Log::open(&dir.path().join("fork"), ORIGIN, fed.log_signer.clone()).unwrap();
    fork.append_batch(&log.entries(0, first).unwrap()).unwrap();
    let mut r3 = fed.round(3, first);
    let mut c: ContributionEntry = serde_json::from_slice(&r3[0]).unwrap();
    c.value_nano += 1;
    r3[0] = encode_canonical(&c).unwrap();
    fork.append_batch(&r3).unwrap();
    fork.append_batch(&fed.round(4, fork.size())).unwrap();
    fork.checkpoint().unwrap();
    fed.cosign_latest(&fork, 1_800_000_001);
    let forked_note = fork.latest_checkpoint().unwrap().unwrap().encode();
    let forked_server = serve(&fork).await;
    drop(m);
    let m = monitor(&forked_server.url(), &state, &fed);
    let Alert::Inconsistent { evidence } = alert(m.poll(None, None).await) else {
        panic!("not an inconsistency")
    };
    assert_eq!(
        evidence.first, accepted_note,
        "the checkpoint accepted before"
    );
    assert_eq!(evidence.second, forked_note, "the fork");
    assert_eq!(m.log().size(), accepted, "nothing of the fork was taken");
    // Kept, and the state refuses to go on.
    let kept = recorded_alerts(&state).unwrap();
    assert!(matches!(&kept[0].1, Alert::Inconsistent { evidence: e } if e == &evidence));
    assert!(!m.log().evidence().unwrap().is_empty());
    server.shutdown().await;
    forked_server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_signature_in_a_new_entry_is_an_alert_naming_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let fed = Federation::new(3, 1);
    let log = fed.build_log(&dir.path().join("log"), 1);
    let server = serve(&log).await;
    let m = monitor(&server.url(), &dir.path().join("monitor"), &fed);
    m.poll(None, None).await.unwrap();
    let at = log.size();
    let mut r2 = fed.round(2, at);
    let mut c: ContributionEntry = serde_json::from_slice(&r2[0]).unwrap();
    c.examples += 1; // no longer what the hospital signed
    r2[0] = encode_canonical(&c).unwrap();
    log.append_batch(&r2).unwrap();
    log.checkpoint().unwrap();
    fed.cosign_latest(&log, 1_800_000_000);
    let Alert::InvalidEntries { failures, .. } = alert(m.poll(None, None).await) else {
        panic!("not an invalid entry")
    };
    assert!(
        failures
            .iter()
            .any(|f| f.starts_with(&format!("entries/{at}:")) && f.contains("signature")),
        "{failures:?}"
    );
    server.shutdown().await;
}

/// A static file server of a directory (as a federation may publish `export --tiles` from any
/// web server): 200 with the file, 404 without.
async fn serve_dir(root: std::path::PathBuf) -> String {
    use http_body_util::Full;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", l.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            let root = root.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let path = root.join(req.uri().path().trim_start_matches('/'));
                        async move {
                            let (status, body) = match std::fs::read(&path) {
                                Ok(b) if path.is_file() => (200, b),
                                _ => (404, Vec::new()),
                            };
                            let mut r = http::Response::new(Full::new(bytes::Bytes::from(body)));
                            *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_short_of_the_witness_quorum_is_an_alert() {
    let dir = tempfile::tempdir().unwrap();
    let fed = Federation::new(2, 3); // quorum 2 of 3
    let log = fed.build_log(&dir.path().join("log"), 1);
    let tiles = dir.path().join("tiles");
    fedledger_ledger::export::export_tiles(&log, &tiles).unwrap();
    // Published with one cosignature only.
    let mut cp = log.latest_checkpoint().unwrap().unwrap();
    let w0 = fed.witnesses[0].verifier_key().clone();
    cp.note
        .signatures
        .retain(|s| s.is_by(log.log_key()) || s.is_by(&w0));
    std::fs::write(tiles.join("checkpoint"), cp.encode()).unwrap();
    let url = serve_dir(tiles.clone()).await;
    let m = monitor(&url, &dir.path().join("monitor"), &fed);
    let Alert::BadCheckpoint { what, .. } = alert(m.poll(None, None).await) else {
        panic!("not a bad checkpoint")
    };
    assert!(
        what.contains("1 valid cosignature(s) by the witnesses in force, 2 required"),
        "{what}"
    );
    assert_eq!(m.log().size(), 0, "nothing accepted");
    // With the quorum, from a fresh state: accepted.
    std::fs::write(
        tiles.join("checkpoint"),
        log.latest_checkpoint().unwrap().unwrap().encode(),
    )
    .unwrap();
    let m = monitor(&url, &dir.path().join("monitor2"), &fed);
    assert!(matches!(
        m.poll(None, None).await.unwrap(),
        Polled::Advanced { cosigners: 3, .. }
    ));
}
