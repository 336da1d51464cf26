//! Hostile peers over real sockets: a stalled upload is cut after its message timeout and
//! leaves nothing; a half-sent unary request is cut at its deadline; a flood of challenges for
//! a public key does not stop its holder from registering; a hundred concurrent uploads by one
//! participant leave at most one blob; connections past the per-address limit are closed; every
//! refusal names its request, shows up once in the log and once in the counters.

mod common;

use std::{
    io::Write,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use bytes::Bytes;
use common::*;
use fedledger_coordinator::refusal::Reason;
use fedledger_proto as pb;
use tonic::Code;

/// The log lines of this test binary (one subscriber for the process, installed once).
fn captured_log() -> Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || LogWriter(writer.clone()))
            .init();
        buf
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_lines_with(needle: &str) -> Vec<String> {
    let log = captured_log();
    let text = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    text.lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

/// What the store holds: every blob by digest (small ones are in sled, larger ones files),
/// and every file in its blob folder, temporary ones included (`file:<name>`).
fn blobs(running: &fedledger_coordinator::Running, dir: &std::path::Path) -> Vec<String> {
    let mut names = running.coordinator.store().blob_digests().unwrap();
    names.extend(
        std::fs::read_dir(dir.join("state/blobs"))
            .unwrap()
            .map(|e| format!("file:{}", e.unwrap().file_name().to_string_lossy())),
    );
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upload_is_cut_after_its_message_timeout_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (k0, k1) = (keypair(), keypair());
    let mut cfg = config(dir.path(), &[&k0, &k1], 3, 2, 1, 1);
    cfg.limits.message_timeout = Duration::from_secs(2);
    let fed = cfg.federation.clone();
    let running = start(cfg).await;
    let mut c = client(&running).await;
    let s0 = register(&mut c, &k0).await;
    let (header, _) = task(&mut c, &s0).await;
    assert_eq!(header.state, pb::TaskState::Train as i32);
    let blobs_before = blobs(&running, dir.path());

    // The header arrives, then nothing: the upload is cut, its reservation released.
    let delta = [0.5f32, -0.25, 0.125, 1.0];
    let mut msgs = update_messages(&fed, &k0, &s0, 1, 10, &delta);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(msgs.remove(0)).await.unwrap();
    let started = Instant::now();
    let stalled = c
        .clone()
        .submit_update(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect_err("a stalled upload is cut");
    let took = started.elapsed();
    eprintln!(
        "stall: upload cut {:.2} s after its header (message timeout 2 s)",
        took.as_secs_f64()
    );
    assert_eq!(stalled.code(), Code::DeadlineExceeded, "{stalled:?}");
    assert!(
        stalled.message().starts_with("SubmitUpdate refused")
            && stalled.message().contains("message_timeout_secs"),
        "{stalled:?}"
    );
    drop(tx);
    assert_eq!(
        blobs(&running, dir.path()),
        blobs_before,
        "a cut upload stores nothing"
    );
    assert_eq!(
        running.coordinator.refusals().count(Reason::MessageTimeout),
        1
    );

    // A unary request whose message never finishes is cut at its deadline too.
    let tcp = tokio::net::TcpStream::connect(running.addr).await.unwrap();
    let (h2, connection) = h2::client::handshake(tcp).await.unwrap();
    let conn = tokio::spawn(connection);
    let mut sender = h2.ready().await.unwrap();
    let request = http::Request::post(format!(
        "http://{}/fedledger.v1.Coordinator/Challenge",
        running.addr
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .unwrap();
    let (response, mut body) = sender.send_request(request, false).unwrap();
    body.send_data(Bytes::from_static(&[0, 0, 0, 1, 0, 1, 2, 3]), false)
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(30), response)
        .await
        .expect("the server answers a stalled call")
        .unwrap();
    assert_eq!(
        response.headers().get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"4"[..]),
        "{response:?}"
    );
    assert_eq!(running.coordinator.refusals().count(Reason::Deadline), 1);
    conn.abort();

    // The participant can still send its update.
    let receipt = submit(&mut c, update_messages(&fed, &k0, &s0, 1, 10, &delta))
        .await
        .unwrap();
    assert_eq!(receipt.accepted, 1);
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_challenges_from_an_outsider_do_not_stop_an_honest_registration() {
    let dir = tempfile::tempdir().unwrap();
    let k0 = keypair();
    let cfg = config(dir.path(), &[&k0], 3, 2, 1, 1);
    let fed = cfg.federation.clone();
    let running = start(cfg).await;
    let mut honest = client(&running).await;
    let mine = honest
        .challenge(pb::ChallengeRequest {
            public_key: pubhex(&k0),
        })
        .await
        .unwrap()
        .into_inner();
    // The outsider knows the public key (it is in every ledger record) and asks away.
    let outsider = client(&running).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut c = outsider.clone();
        let key = pubhex(&k0);
        tasks.push(tokio::spawn(async move {
            for _ in 0..10_000 / 8 {
                c.challenge(pb::ChallengeRequest {
                    public_key: key.clone(),
                })
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let signature = k0.sign(pb::register_message(&fed, &mine.challenge).as_bytes());
    let reg = honest
        .register(pb::RegisterRequest {
            public_key: pubhex(&k0),
            challenge: mine.challenge.clone(),
            signature: signature.as_ref().to_vec(),
        })
        .await
        .expect("the honest registration goes through")
        .into_inner();
    assert_eq!(reg.name, "h0");
    // Used up by the registration.
    let again = honest
        .register(pb::RegisterRequest {
            public_key: pubhex(&k0),
            challenge: mine.challenge,
            signature: signature.as_ref().to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::Unauthenticated);
    assert!(again.message().starts_with("Register refused"), "{again:?}");
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_uploads_by_one_participant_leave_at_most_one_blob() {
    let dir = tempfile::tempdir().unwrap();
    let (k0, k1) = (keypair(), keypair());
    // Quorum 1 of 2: the round opens with h0 and stays open after its update.
    let cfg = config(dir.path(), &[&k0, &k1], 3, 2, 1, 1);
    let fed = cfg.federation.clone();
    let running = start(cfg).await;
    let mut c = client(&running).await;
    let s0 = register(&mut c, &k0).await;
    task(&mut c, &s0).await;
    let before = blobs(&running, dir.path());
    let mut channels = Vec::new();
    for _ in 0..4 {
        let mut ch = client(&running).await;
        // One call first, so the server's HTTP/2 settings (8 streams per connection) are known
        // before the burst: a stream opened above the limit before they arrive is refused by
        // the protocol (REFUSED_STREAM), which is not what this test is about.
        task(&mut ch, &s0).await;
        channels.push(ch);
    }
    let mut uploads = Vec::new();
    for i in 0..100 {
        let mut ch = channels[i % 4].clone();
        // Distinct vectors: every one would be its own blob.
        let delta = [i as f32, 1.0, 2.0, 3.0];
        let msgs = update_messages(&fed, &k0, &s0, 1, 10, &delta);
        uploads.push(tokio::spawn(async move { submit(&mut ch, msgs).await }));
    }
    let mut accepted = 0;
    for u in uploads {
        match u.await.unwrap() {
            Ok(_) => accepted += 1,
            Err(s) => {
                assert_eq!(s.code(), Code::AlreadyExists, "{s:?}");
                assert!(s.message().starts_with("SubmitUpdate refused"), "{s:?}");
            }
        }
    }
    assert_eq!(accepted, 1);
    let after = blobs(&running, dir.path());
    let new: Vec<_> = after.iter().filter(|b| !before.contains(b)).collect();
    assert_eq!(new.len(), 1, "new blobs: {new:?}");
    assert!(after.iter().all(|b| !b.ends_with(".tmp")), "{after:?}");
    let refusals = running.coordinator.refusals();
    assert_eq!(
        refusals.count(Reason::InFlight) + refusals.count(Reason::AlreadyAnswered),
        99
    );
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_per_address_limit_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let k0 = keypair();
    let mut cfg = config(dir.path(), &[&k0], 3, 2, 1, 1);
    cfg.limits.max_connections_per_ip = 2;
    let running = start(cfg).await;
    let a = client(&running).await;
    let b = client(&running).await;
    let key = pubhex(&k0);
    for mut c in [a.clone(), b.clone()] {
        c.challenge(pb::ChallengeRequest {
            public_key: key.clone(),
        })
        .await
        .unwrap();
    }
    // A third connection from 127.0.0.1 is closed at accept.
    let third = tonic::transport::Endpoint::from_shared(format!("http://{}", running.addr))
        .unwrap()
        .connect()
        .await;
    let refused = match third {
        Err(_) => true,
        Ok(ch) => pb::coordinator_client::CoordinatorClient::new(ch)
            .challenge(pb::ChallengeRequest {
                public_key: key.clone(),
            })
            .await
            .is_err(),
    };
    assert!(refused);
    assert!(
        running
            .coordinator
            .refusals()
            .count(Reason::ConnectionLimit)
            >= 1
    );
    // Closing one frees its place.
    drop(a);
    let mut ok = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Ok(ch) = tonic::transport::Endpoint::from_shared(format!("http://{}", running.addr))
            .unwrap()
            .connect()
            .await
        else {
            continue;
        };
        let mut c = pb::coordinator_client::CoordinatorClient::new(ch);
        if c.challenge(pb::ChallengeRequest {
            public_key: key.clone(),
        })
        .await
        .is_ok()
        {
            ok = true;
            break;
        }
    }
    assert!(ok, "a place freed by a closed connection is given again");
    drop(b);
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_names_its_request_and_shows_once_in_the_log_and_the_counters() {
    captured_log();
    let dir = tempfile::tempdir().unwrap();
    let (k0, stranger) = (keypair(), keypair());
    let cfg = config(dir.path(), &[&k0], 3, 2, 1, 1);
    let running = start(cfg).await;
    let mut c = client(&running).await;
    let refused = c
        .challenge(pb::ChallengeRequest {
            public_key: pubhex(&stranger),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(
        refused
            .message()
            .starts_with("Challenge refused: public key"),
        "{refused:?}"
    );
    let lines = log_lines_with(&pubhex(&stranger));
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains("reason=\"not_enrolled\"") || lines[0].contains("reason=not_enrolled"),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("peer=127.0.0.1:"), "{}", lines[0]);
    assert_eq!(running.coordinator.refusals().count(Reason::NotEnrolled), 1);
    // Other requests name themselves too.
    let s = c
        .get_task(pb::TaskRequest {
            session: vec![1; 32],
        })
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(s.message().starts_with("GetTask refused"), "{s:?}");
    let s = c
        .decline(pb::DeclineRequest {
            session: vec![1; 32],
            round: 1,
            reason: "x".into(),
            signature: vec![],
        })
        .await
        .unwrap_err();
    assert!(s.message().starts_with("Decline refused"), "{s:?}");
    let s = c
        .get_round_result(pb::RoundResultRequest {
            session: vec![1; 32],
            round: 1,
        })
        .await
        .unwrap_err();
    assert!(s.message().starts_with("GetRoundResult refused"), "{s:?}");
    assert_eq!(running.coordinator.refusals().count(Reason::NoSession), 3);
    running.shutdown().await.unwrap();
}
