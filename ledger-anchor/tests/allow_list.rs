//! Pinned ledger nodes: a node with an allow-list refuses an inbound peer that is not on it
//! (and counts it), while an allowed peer connects and catches up; a node key file gives the
//! same peer id at every start.

mod common;

use std::time::Duration;

use common::{ORIGIN, v1::Federation};
use fedledger_ledger::Log;
use fedledger_ledger::node::{self, AllowList, NodeConfig, NodeHandle, Role};
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;

fn cfg(allow: AllowList) -> NodeConfig {
    NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        heartbeat: Duration::from_millis(100),
        allow,
        ..NodeConfig::default()
    }
}

async fn replica(fed: &Federation, dir: &tempfile::TempDir, key: Keypair) -> NodeHandle {
    let log = Log::open_replica(dir.path(), fed.log_signer.verifier_key().clone()).unwrap();
    let mut c = cfg(AllowList::default());
    c.listen.clear(); // dial-out only, as hospitals' nodes are
    node::spawn(c, key, log, None).await.unwrap()
}

/// Polls `f` every 50 ms until it holds (a wait, not a timing assertion: the limit only stops
/// a broken test from hanging).
async fn wait_until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_not_on_the_allow_list_is_refused_and_an_allowed_one_catches_up() {
    let fed = Federation::new(1, 1);
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let log = Log::open(dirs[0].path(), ORIGIN, fed.log_signer.clone()).unwrap();
    log.append(&fed.genesis()).unwrap();
    log.checkpoint().unwrap();

    let allowed_key = Keypair::generate_ed25519();
    let stranger_key = Keypair::generate_ed25519();
    let mut allow = AllowList::default();
    allow.allow(allowed_key.public().to_peer_id(), Role::Replica);
    let writer = node::spawn(cfg(allow), Keypair::generate_ed25519(), log, None)
        .await
        .unwrap();
    let addr = writer
        .listen_addrs(Duration::from_secs(5))
        .await
        .unwrap()
        .remove(0)
        .with(Protocol::P2p(writer.peer_id()));

    let stranger = replica(&fed, &dirs[1], stranger_key).await;
    stranger.dial(addr.clone()).await.unwrap();
    wait_until("the refusal", async || writer.stats().refused_peers >= 1).await;
    assert!(
        !writer.peers().await.unwrap().contains(&stranger.peer_id()),
        "the refused peer is not connected"
    );
    assert!(stranger.catch_up_from(writer.peer_id()).await.is_err());
    assert_eq!(stranger.log().size(), 0, "it got nothing");

    let allowed = replica(&fed, &dirs[2], allowed_key).await;
    allowed.dial(addr.clone()).await.unwrap();
    wait_until("the allowed peer", async || {
        writer.peers().await.unwrap().contains(&allowed.peer_id())
    })
    .await;
    allowed.catch_up_from(writer.peer_id()).await.unwrap();
    assert_eq!(allowed.log().size(), 1, "the allowed replica caught up");

    for n in [writer, stranger, allowed] {
        n.shutdown().await;
    }
}

#[test]
fn a_node_key_file_keeps_the_peer_id_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.key");
    let first = node::load_or_generate_identity(&path).unwrap();
    let second = node::load_or_generate_identity(&path).unwrap();
    assert_eq!(first.public().to_peer_id(), second.public().to_peer_id());
    let other = node::load_or_generate_identity(&dir.path().join("other.key")).unwrap();
    assert_ne!(first.public().to_peer_id(), other.public().to_peer_id());
}
