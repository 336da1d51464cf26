//! Network figures over loopback, measured directly (one run, printed): time for a checkpoint
//! to reach 10 nodes by gossip (p50/p99 over 100 rounds) and catch-up of 100,000 round records
//! (Merkle consistency of every chunk, checkpoint signature, schema of every record).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use fedledger_ledger::Log;
use fedledger_ledger::node::{self, NodeConfig, NodeHandle};
use libp2p::identity::Keypair;

fn cfg() -> NodeConfig {
    NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        heartbeat: Duration::from_millis(100),
        ..NodeConfig::default()
    }
}

async fn replica(
    fed: &common::Federation,
    dir: &std::path::Path,
    dial: &libp2p::Multiaddr,
) -> NodeHandle {
    let log = Log::open_replica(dir, fed.log_signer.verifier_key().clone()).unwrap();
    let h = node::spawn(cfg(), Keypair::generate_ed25519(), log, None)
        .await
        .unwrap();
    h.dial(dial.clone()).await.unwrap();
    h
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

async fn gossip_latency() {
    let fed = common::Federation::new(3, 2);
    let root = tempfile::tempdir().unwrap();
    let log = Log::open(
        &root.path().join("writer"),
        common::ORIGIN,
        fed.log_signer.clone(),
    )
    .unwrap();
    log.append_batch(&fed.genesis()).unwrap();
    log.checkpoint().unwrap();
    let writer = node::spawn(cfg(), Keypair::generate_ed25519(), log.clone(), None)
        .await
        .unwrap();
    let addr = writer.listen_addrs(Duration::from_secs(5)).await.unwrap()[0].clone();
    let mut nodes = Vec::new();
    for i in 0..10 {
        nodes.push(replica(&fed, &root.path().join(format!("r{i}")), &addr).await);
    }
    let genesis_size = log.size();
    while writer.peers().await.unwrap().len() < 10
        || nodes.iter().any(|n| n.log().size() < genesis_size)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut lat = Vec::new();
    for n in 1..=100u64 {
        let old = log.size();
        let batch = fed.round(n, old);
        let t = Instant::now();
        log.append_and_checkpoint(&batch).unwrap();
        writer.publish_since(old).await.unwrap();
        let want = old + batch.len() as u64;
        while nodes.iter().any(|x| x.log().size() < want) {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        lat.push(t.elapsed());
    }
    lat.sort();
    println!(
        "gossip: append a round's entries + sign + flush + publish until all 10 replicas verified and stored them: p50 {:?}, p99 {:?}, max {:?} (100 rounds)",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat[lat.len() - 1]
    );
    for n in nodes.iter().chain([&writer]) {
        n.shutdown().await;
    }
}

async fn catch_up() {
    const N: u64 = 100_000;
    let fed = common::Federation::new(3, 2);
    let root = tempfile::tempdir().unwrap();
    let log = Log::open(
        &root.path().join("writer"),
        common::ORIGIN,
        fed.log_signer.clone(),
    )
    .unwrap();
    let t = Instant::now();
    let genesis = fed.genesis();
    log.append_batch(&genesis).unwrap();
    let entries = fed.entries_after_genesis(N - genesis.len() as u64);
    for batch in entries.chunks(1000) {
        log.append_and_checkpoint(batch).unwrap();
    }
    let bytes: usize = entries.iter().map(Vec::len).sum();
    println!(
        "catch-up setup: wrote {N} entries ({} bytes on average) in {:?}",
        bytes / entries.len(),
        t.elapsed()
    );
    let writer = node::spawn(cfg(), Keypair::generate_ed25519(), log.clone(), None)
        .await
        .unwrap();
    let addr = writer.listen_addrs(Duration::from_secs(5)).await.unwrap()[0].clone();
    // A node that does not auto-sync: spawn, dial, then time an explicit catch-up.
    let rlog = Log::open_replica(
        &root.path().join("late"),
        fed.log_signer.verifier_key().clone(),
    )
    .unwrap();
    let late = node::spawn(cfg(), Keypair::generate_ed25519(), rlog, None)
        .await
        .unwrap();
    let t = Instant::now();
    late.dial(addr).await.unwrap();
    while late.log().size() < N {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let el = t.elapsed();
    assert_eq!(late.log().root(), log.root());
    println!(
        "catch-up: {N} records fetched, schema-checked, proven consistent with the signed checkpoint and stored in {el:?} ({:.0} records/s)",
        N as f64 / el.as_secs_f64()
    );
    late.shutdown().await;
    writer.shutdown().await;
    // The baseline, same run, same disk: the same entry bytes inserted into a plain sled tree
    // under their index and flushed once at the end (no network, no checks, no Merkle tree).
    let db = sled::open(root.path().join("baseline")).unwrap();
    let all: Vec<&Vec<u8>> = genesis.iter().chain(entries.iter()).collect();
    let t = Instant::now();
    for (i, e) in all.iter().enumerate() {
        db.insert((i as u64).to_be_bytes(), e.as_slice()).unwrap();
    }
    db.flush().unwrap();
    let base = t.elapsed();
    println!(
        "baseline: the same {} entries inserted into plain sled and flushed in {base:?}; catch-up / baseline {:.1}x",
        all.len(),
        el.as_secs_f64() / base.as_secs_f64()
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // `cargo bench -p fedledger-ledger --bench network -- catch-up` runs the catch-up alone.
    if !std::env::args().any(|a| a == "catch-up") {
        rt.block_on(gossip_latency());
    }
    rt.block_on(catch_up());
}
