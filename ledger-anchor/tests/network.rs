//! Loopback libp2p: replication, late catch-up, witnesses, forged checkpoints, equivocation.

mod common;

use std::time::Duration;

use common::{ORIGIN, v1::Federation};
use fedledger_ledger::Log;
use fedledger_ledger::node::{self, Announcement, NodeConfig, NodeHandle};
use fedledger_ledger::note::NoteSigner;
use fedledger_ledger::witness::Witness;
use libp2p::identity::Keypair;

const ENTRIES: u64 = 1000;

fn cfg() -> NodeConfig {
    NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        heartbeat: Duration::from_millis(100),
        ..NodeConfig::default()
    }
}

async fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Net {
    _dirs: Vec<tempfile::TempDir>,
    fed: Federation,
    writer: NodeHandle,
    replicas: Vec<NodeHandle>,
}

async fn replica(
    fed: &Federation,
    dirs: &mut Vec<tempfile::TempDir>,
    witness: Option<usize>,
    dial: &[libp2p::Multiaddr],
) -> NodeHandle {
    let d = tempfile::tempdir().unwrap();
    let log =
        Log::open_replica(&d.path().join("log"), fed.log_signer.verifier_key().clone()).unwrap();
    let w = witness.map(|i| {
        let s = NoteSigner::witness(fed.witnesses[i].name(), common::key(100 + i as u8)).unwrap();
        Witness::open(
            &d.path().join("witness"),
            s,
            fed.log_signer.verifier_key().clone(),
        )
        .unwrap()
    });
    dirs.push(d);
    let h = node::spawn(cfg(), Keypair::generate_ed25519(), log, w)
        .await
        .unwrap();
    for a in dial {
        h.dial(a.clone()).await.unwrap();
    }
    h
}

async fn start(replicas: usize) -> Net {
    let fed = Federation::new(3, 2);
    let mut dirs = vec![tempfile::tempdir().unwrap()];
    let log = Log::open(dirs[0].path(), ORIGIN, fed.log_signer.clone()).unwrap();
    log.append(&fed.genesis()).unwrap();
    log.checkpoint().unwrap();
    let writer = node::spawn(cfg(), Keypair::generate_ed25519(), log, None)
        .await
        .unwrap();
    let mut addrs = writer.listen_addrs(Duration::from_secs(5)).await.unwrap();
    let mut rs = Vec::new();
    for i in 0..replicas {
        let h = replica(&fed, &mut dirs, (i < 2).then_some(i), &addrs).await;
        addrs.extend(h.listen_addrs(Duration::from_secs(5)).await.unwrap());
        rs.push(h);
    }
    Net {
        _dirs: dirs,
        fed,
        writer,
        replicas: rs,
    }
}

async fn wait_mesh(net: &Net) {
    let w = net.writer.clone();
    let n = net.replicas.len();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while w.peers().await.unwrap().len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "peers did not connect"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let subscriptions propagate and the mesh form.
    tokio::time::sleep(Duration::from_millis(600)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_nodes_replicate_witness_catch_up_and_detect_forgery_and_equivocation() {
    tokio::time::timeout(Duration::from_secs(120), scenario())
        .await
        .expect("scenario timed out");
}

async fn scenario() {
    let net = start(3).await;
    wait_mesh(&net).await;
    let log = net.writer.log().clone();
    let (witness_keys, quorum) = log.witness_policy(log.size());
    assert_eq!((witness_keys.len(), quorum), (2, 1));

    // 1,000 entries in batches of 100, each checkpointed, gossiped and cosigned.
    for b in 0..ENTRIES / 100 {
        let old = log.size();
        let batch: Vec<Vec<u8>> = (old..old + 100).map(|n| net.fed.round(n)).collect();
        let (_, cp) = log.append_and_checkpoint(&batch).unwrap();
        net.writer.publish_since(old).await.unwrap();
        if b % 5 == 4 {
            let n = net
                .writer
                .collect_cosignatures(cp.checkpoint.size, &witness_keys)
                .await
                .unwrap();
            assert!(
                n as u64 >= quorum,
                "checkpoint {} anchored by {n} witnesses",
                cp.checkpoint.size
            );
        }
    }
    let size = log.size();
    assert_eq!(size, ENTRIES + 1);
    wait_until("replication to 3 replicas", Duration::from_secs(60), || {
        net.replicas.iter().all(|r| r.log().size() == size)
    })
    .await;
    for r in &net.replicas {
        assert_eq!(r.log().root(), log.root());
    }
    let latest = log.latest_checkpoint().unwrap().unwrap();
    assert_eq!(
        latest.note.valid_cosigners(&witness_keys).len(),
        2,
        "both witnesses cosigned the last checkpoint"
    );

    // A late node joins and catches up by itself, verifying everything.
    let mut dirs = Vec::new();
    let addr = net
        .writer
        .listen_addrs(Duration::from_secs(1))
        .await
        .unwrap();
    let late = replica(&net.fed, &mut dirs, None, &addr[..1]).await;
    wait_until("late node catch-up", Duration::from_secs(30), || {
        late.log().size() == size
    })
    .await;
    assert_eq!(late.log().root(), log.root());
    let mut all: Vec<NodeHandle> = net.replicas.clone();
    all.push(late.clone());
    all.push(net.writer.clone());
    let mut every_addr = Vec::new();
    for n in &all {
        every_addr.extend(
            n.listen_addrs(Duration::from_secs(1))
                .await
                .unwrap()
                .into_iter()
                .take(1),
        );
    }

    // A forged checkpoint (signed by another key) from an adversary connected to everyone.
    let adv_dir = tempfile::tempdir().unwrap();
    let adv_log =
        Log::open_replica(adv_dir.path(), net.fed.log_signer.verifier_key().clone()).unwrap();
    let adversary = node::spawn(cfg(), Keypair::generate_ed25519(), adv_log, None)
        .await
        .unwrap();
    for a in &every_addr {
        adversary.dial(a.clone()).await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while adversary.peers().await.unwrap().len() < all.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "adversary did not connect to every node"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let before: Vec<u64> = all.iter().map(|n| n.stats().rejected).collect();
    let impostor = NoteSigner::log(ORIGIN, common::key(66)).unwrap();
    let impostor_log_dir = tempfile::tempdir().unwrap();
    let ilog = Log::open(impostor_log_dir.path(), ORIGIN, impostor).unwrap();
    ilog.append(&net.fed.genesis()).unwrap();
    let forged = ilog.checkpoint().unwrap();
    let a = Announcement {
        first: size,
        entries: vec![String::from_utf8(net.fed.round(size)).unwrap()],
        checkpoint: forged.encode(),
        consistency: vec![],
    };
    adversary
        .publish_raw(serde_json::to_vec(&a).unwrap())
        .await
        .unwrap();
    wait_until(
        "every node rejects the forged checkpoint",
        Duration::from_secs(20),
        || {
            all.iter()
                .zip(&before)
                .all(|(n, b)| n.stats().rejected > *b)
        },
    )
    .await;
    for n in &all {
        assert_eq!(n.log().size(), size, "forged announcement changed nothing");
    }

    // Equivocation: the log key signs a fork of the same size.
    let fork_dir = tempfile::tempdir().unwrap();
    let fork = Log::open(fork_dir.path(), ORIGIN, net.fed.log_signer.clone()).unwrap();
    let mut entries = log.entries(0, size).unwrap();
    let mut last: serde_json::Value =
        serde_json::from_slice(&entries[(size - 1) as usize]).unwrap();
    last["valuation"]["seed"] = serde_json::json!(424242);
    entries[(size - 1) as usize] = fedledger_ledger::records::encode_canonical(&last).unwrap();
    let (_, fork_cp) = fork.append_and_checkpoint(&entries).unwrap();
    let a = Announcement {
        first: size - 1,
        entries: vec![String::from_utf8(entries[(size - 1) as usize].clone()).unwrap()],
        checkpoint: fork_cp.encode(),
        consistency: vec![],
    };
    adversary
        .publish_raw(serde_json::to_vec(&a).unwrap())
        .await
        .unwrap();
    wait_until(
        "every node holds evidence of equivocation",
        Duration::from_secs(20),
        || all.iter().all(|n| !n.log().evidence().unwrap().is_empty()),
    )
    .await;
    for n in &all {
        let ev = n.log().evidence().unwrap();
        assert!(
            ev.iter().any(|e| e
                .check_self_evident(net.fed.log_signer.verifier_key())
                .is_ok()),
            "{}",
            ev[0]
        );
        assert_eq!(n.log().root(), log.root(), "honest history kept");
    }
    for n in all.iter().chain([&adversary]) {
        n.shutdown().await;
    }
}
