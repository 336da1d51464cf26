//! Links across sites: a federation over TLS with a CA made by `tls init` (the function the
//! subcommand calls), receipts fetched over TLS from the tiles server; refusals (another CA, a
//! certificate for another name, plaintext to a non-loopback address, plaintext to the TLS
//! endpoint); a certificate replaced on disk served to new connections without a restart; and
//! hospitals behind an HTTP CONNECT proxy that alone knows where the coordinator is.

mod common;

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use common::{Fed, federation};
use fedledger_coordinator::{Running, config::TlsSection};
use fedledger_participant::{ParticipantConfig, RunError, config};
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// Serves `fed`'s coordinator over TLS with the certificate in `tls_dir` (and the tiles API).
async fn serve_tls(fed: &Fed, tls_dir: &Path) -> Running {
    let mut file = fed.coordinator.clone();
    file.tls = Some(TlsSection {
        cert: tls_dir.join("server.pem"),
        key: tls_dir.join("server.key"),
    });
    file.ledger.tiles_listen = Some("127.0.0.1:0".parse().unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    fedledger_coordinator::serve(file.validate().unwrap(), Some(listener))
        .await
        .unwrap()
}

/// A hospital's config that dials `host` (at the coordinator's ports), trusts `ca` and checks
/// its receipts over the tiles API.
fn hospital(p: &ParticipantConfig, running: &Running, host: &str, ca: &Path) -> ParticipantConfig {
    let mut p = p.clone();
    p.coordinator = format!("https://{host}:{}", running.addr.port());
    p.tls = Some(config::TlsSection {
        ca: Some(ca.to_owned()),
        ..Default::default()
    });
    let tiles = running.tiles.as_ref().unwrap().local_addr();
    p.ledger = Some(config::LedgerSection {
        url: format!("https://{host}:{}/", tiles.port()),
        keys_file: None,
        log_key: Some(running.identity.log_key.clone()),
        genesis_sha256: running.identity.genesis_sha256.clone(),
        allow_no_witnesses: true,
        receipt_timeout_secs: 60,
    });
    p.reconnect_patience_secs = 5;
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_federation_runs_over_tls_with_a_ca_from_tls_init_and_checks_receipts_over_tls() {
    let fed = federation(2, 2, None);
    let tls = tempfile::tempdir().unwrap();
    let issued =
        fedledger_coordinator::tls::init(tls.path(), &["localhost".into(), "127.0.0.1".into()])
            .unwrap();
    let running = serve_tls(&fed, tls.path()).await;
    assert!(running.tls);
    assert!(running.tiles_url().unwrap().starts_with("https://"));
    let agents: Vec<_> = fed
        .participants
        .iter()
        .enumerate()
        .map(|(i, p)| {
            // One dials the name, one the address: the certificate covers both.
            let host = if i == 0 { "localhost" } else { "127.0.0.1" };
            let cfg = hospital(p, &running, host, &issued.ca_cert);
            cfg.validate().unwrap();
            tokio::spawn(fedledger_participant::run(cfg, false))
        })
        .collect();
    for a in agents {
        let report = a.await.unwrap().unwrap();
        assert_eq!(report.rounds_sent, vec![1, 2], "{}", report.name);
        assert_eq!(
            report.receipts.len(),
            2,
            "{}: receipts over TLS",
            report.name
        );
    }
    running.wait_done().await;
    assert!(running.tiles.as_ref().unwrap().served() > 0);
    running.shutdown().await.unwrap();
}

/// Runs one hospital against `running` and returns its error.
async fn refused(cfg: ParticipantConfig) -> String {
    match fedledger_participant::run(cfg, false).await {
        Ok(r) => panic!(
            "ran rounds {:?} over a link it should refuse",
            r.rounds_sent
        ),
        Err(e) => {
            assert!(matches!(e, RunError::Agent(_)), "{e}");
            e.to_string()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_ca_another_name_and_plaintext_are_refused() {
    let fed = federation(1, 1, None);
    let tls = tempfile::tempdir().unwrap();
    // The coordinator's certificate names only "coordinator.test".
    fedledger_coordinator::tls::init(tls.path(), &["coordinator.test".into()]).unwrap();
    let other = tempfile::tempdir().unwrap();
    let other_ca = fedledger_coordinator::tls::init(other.path(), &["localhost".into()])
        .unwrap()
        .ca_cert;
    let running = serve_tls(&fed, tls.path()).await;
    let refusals = |r: &Running| {
        r.coordinator
            .refusals()
            .snapshot()
            .into_iter()
            .find(|(reason, _)| *reason == "tls_handshake")
            .map(|(_, n)| n)
            .unwrap()
    };

    // A hospital trusting another CA (the name would match that CA's certificate, not this).
    let mut p = hospital(&fed.participants[0], &running, "localhost", &other_ca);
    p.ledger = None;
    let e = refused(p).await;
    assert!(e.contains("TLS") && e.contains("UnknownIssuer"), "{e}");

    // The right CA, but the coordinator's certificate is not for the name dialled.
    let mut p = hospital(
        &fed.participants[0],
        &running,
        "localhost",
        &tls.path().join("ca.pem"),
    );
    p.ledger = None;
    let e = refused(p).await;
    assert!(e.contains("TLS") && e.contains("not valid for name"), "{e}");
    // The coordinator counts a failed handshake on its own task, when it reads the client's
    // alert: possibly after the client has already returned its error.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while refusals(&running) < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        refusals(&running) >= 2,
        "the coordinator saw both handshakes fail"
    );

    // Plaintext to the TLS endpoint: the handshake fails, nothing is served.
    let before = refusals(&running);
    let mut p = fed.participants[0].clone();
    p.coordinator = format!("http://127.0.0.1:{}", running.addr.port());
    p.reconnect_patience_secs = 1;
    // (HTTP/2 without TLS meets a TLS server: the first call fails.)
    let e = refused(p).await;
    assert!(e.contains("Challenge"), "{e}");
    assert!(refusals(&running) > before);
    assert_eq!(
        running.coordinator.progress().completed,
        0,
        "no round went by"
    );

    // Plaintext to a non-loopback address: refused before anything is dialled (the name does
    // not even resolve), unless the config allows it.
    let mut p = fed.participants[0].clone();
    p.coordinator = "http://coordinator.invalid:50051".into();
    let e = p.validate().unwrap_err().to_string();
    assert!(e.contains("allow_plaintext"), "{e}");
    let e = fedledger_participant::run(p.clone(), false)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("allow_plaintext"), "{e}");
    p.allow_plaintext = true;
    p.validate().unwrap();
    running.shutdown().await.unwrap();
}

/// The leaf certificate a fresh TLS connection to `addr` is served.
async fn served_leaf(addr: SocketAddr, ca: &Path, alpn: &[u8]) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca).unwrap())
        .unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn leaf_on_disk(dir: &Path) -> Vec<u8> {
    CertificateDer::from_pem_file(dir.join("server.pem"))
        .unwrap()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_replaced_on_disk_is_served_to_new_connections_without_a_restart() {
    let fed = federation(1, 1, None);
    let tls = tempfile::tempdir().unwrap();
    let issued = fedledger_coordinator::tls::init(tls.path(), &["localhost".into()]).unwrap();
    let running = serve_tls(&fed, tls.path()).await;
    let tiles = running.tiles.as_ref().unwrap().local_addr();
    let first = leaf_on_disk(tls.path());
    assert_eq!(
        served_leaf(running.addr, &issued.ca_cert, b"h2").await,
        first
    );
    assert_eq!(
        served_leaf(tiles, &issued.ca_cert, b"http/1.1").await,
        first
    );

    // Rotation as the README describes it: `tls init` again with the same folder (same CA).
    fedledger_coordinator::tls::init(tls.path(), &["localhost".into()]).unwrap();
    let second = leaf_on_disk(tls.path());
    assert_ne!(first, second);
    assert_eq!(
        served_leaf(running.addr, &issued.ca_cert, b"h2").await,
        second
    );
    assert_eq!(
        served_leaf(tiles, &issued.ca_cert, b"http/1.1").await,
        second
    );

    // A half-done rotation (a key that does not match) keeps the last good pair.
    std::fs::copy(&issued.ca_key, tls.path().join("server.key")).unwrap();
    assert_eq!(
        served_leaf(running.addr, &issued.ca_cert, b"h2").await,
        second
    );

    // And a federation still runs on it.
    let cfg = hospital(&fed.participants[0], &running, "localhost", &issued.ca_cert);
    let report = fedledger_participant::run(cfg, false).await.unwrap();
    assert_eq!(report.rounds_sent, vec![1]);
    running.shutdown().await.unwrap();
}

/// An HTTP CONNECT proxy on loopback that alone knows where `names` are, and counts the
/// tunnels it carried by the name asked for.
struct Proxy {
    addr: SocketAddr,
    tunnels: Arc<Mutex<HashMap<String, u64>>>,
    bytes: Arc<AtomicU64>,
}

async fn proxy(names: HashMap<String, SocketAddr>) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tunnels = Arc::new(Mutex::new(HashMap::new()));
    let bytes = Arc::new(AtomicU64::new(0));
    let (t, b) = (tunnels.clone(), bytes.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let (names, tunnels, bytes) = (names.clone(), t.clone(), b.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                    let Ok(byte) = client.read_u8().await else {
                        return;
                    };
                    head.push(byte);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let target = head
                    .strip_prefix("CONNECT ")
                    .and_then(|r| r.split_whitespace().next())
                    .unwrap_or_default()
                    .to_owned();
                let Some(to) = names.get(&target) else {
                    let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                    return;
                };
                let Ok(mut server) = TcpStream::connect(to).await else {
                    return;
                };
                *tunnels.lock().unwrap().entry(target).or_insert(0) += 1;
                if client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
                if let Ok((up, down)) =
                    tokio::io::copy_bidirectional(&mut client, &mut server).await
                {
                    bytes.fetch_add(up + down, Ordering::Relaxed);
                }
            });
        }
    });
    Proxy {
        addr,
        tunnels,
        bytes,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hospitals_behind_a_connect_proxy_complete_rounds_and_the_proxy_carried_them() {
    let fed = federation(2, 2, None);
    let tls = tempfile::tempdir().unwrap();
    // "coordinator.test" resolves nowhere but in the proxy (.test is reserved, RFC 6761): a
    // hospital that bypassed the proxy could not connect at all.
    let issued =
        fedledger_coordinator::tls::init(tls.path(), &["coordinator.test".into()]).unwrap();
    let running = serve_tls(&fed, tls.path()).await;
    let grpc = format!("coordinator.test:{}", running.addr.port());
    let tiles_addr = running.tiles.as_ref().unwrap().local_addr();
    let tiles = format!("coordinator.test:{}", tiles_addr.port());
    let proxy = proxy(HashMap::from([
        (grpc.clone(), running.addr),
        (tiles.clone(), tiles_addr),
    ]))
    .await;
    let agents: Vec<_> = fed
        .participants
        .iter()
        .map(|p| {
            let mut cfg = hospital(p, &running, "coordinator.test", &issued.ca_cert);
            cfg.proxy = Some(format!("http://{}", proxy.addr));
            tokio::spawn(fedledger_participant::run(cfg, false))
        })
        .collect();
    for a in agents {
        let report = a.await.unwrap().unwrap();
        assert_eq!(report.rounds_sent, vec![1, 2], "{}", report.name);
        assert_eq!(report.receipts.len(), 2, "{}", report.name);
    }
    running.wait_done().await;
    let tunnels = proxy.tunnels.lock().unwrap().clone();
    assert!(tunnels.get(&grpc).copied().unwrap_or(0) >= 2, "{tunnels:?}");
    assert!(
        tunnels.get(&tiles).copied().unwrap_or(0) >= 2,
        "{tunnels:?}"
    );
    assert_eq!(tunnels.len(), 2, "{tunnels:?}");
    running.shutdown().await.unwrap();
    // The tunnels end once the coordinator has gone: what they carried is counted then.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while proxy.bytes.load(Ordering::Relaxed) == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(proxy.bytes.load(Ordering::Relaxed) > 0);
}
