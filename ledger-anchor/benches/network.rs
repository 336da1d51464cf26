//! Network figures over loopback, measured directly (one run, printed): time for a checkpoint
//! to reach 10 nodes by gossip (p50/p99 over 100 rounds) and catch-up of 100,000 round records
//! of about 2 KB (Merkle consistency of every chunk, checkpoint signature, schema of every
//! record) beside a plain sled insert and flush of the same bytes; with `-- append-growth`, the
//! append rate as the log grows to a million entries.
//!
//! `cargo bench -p fedledger-ledger --bench network -- catch-up [append-growth]` skips the
//! gossip figure.

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

/// CPU time this process has used (user and system, all threads), from `/proc/self/stat`
/// (zero where there is none): beside the wall time, it shows what the work costs when other
/// processes share the machine.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which ends with the last ')'): utime and stime are the
    // 12th and 13th, in clock ticks of 1/100 s.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    Duration::from_millis(ticks * 10)
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

/// Nine hospitals and five validators: a round is nine or eight contributions (a decline in
/// even rounds), five signed utility vectors over the exact design (512 or 256 coalitions)
/// and the summary with its validators record, so entries average about 2 KB.
fn validated_federation() -> (common::Federation, Vec<ring::signature::Ed25519KeyPair>) {
    let fed = common::Federation::new(9, 2);
    let mut validators: Vec<_> = (0..5).map(|i| common::key(150 + i)).collect();
    validators.sort_by_key(fedledger_ledger::keys::public_key_hex);
    (fed, validators)
}

async fn catch_up() {
    const N: u64 = 100_000;
    let (fed, validators) = validated_federation();
    let root = tempfile::tempdir().unwrap();
    let log = Log::open(
        &root.path().join("writer"),
        common::ORIGIN,
        fed.log_signer.clone(),
    )
    .unwrap();
    let t = Instant::now();
    let genesis = fed.genesis_with_validators(&validators);
    log.append_batch(&genesis).unwrap();
    let entries = fed.validated_entries_after_genesis(N - genesis.len() as u64, &validators);
    for batch in entries.chunks(1000) {
        log.append_and_checkpoint(batch).unwrap();
    }
    let all: Vec<&Vec<u8>> = genesis.iter().chain(entries.iter()).collect();
    let bytes: usize = all.iter().map(|e| e.len()).sum();
    println!(
        "catch-up setup: wrote {N} entries ({} bytes on average, {:.1} MB in all) in {:?}",
        bytes / all.len(),
        bytes as f64 / 1e6,
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
    let (t, cpu) = (Instant::now(), cpu_time());
    late.dial(addr).await.unwrap();
    while late.log().size() < N {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let el = t.elapsed();
    let cpu = cpu_time().saturating_sub(cpu);
    assert_eq!(late.log().root(), log.root());
    println!(
        "catch-up: {N} records fetched, schema-checked, proven consistent with the signed checkpoint and stored in {el:?} ({:.0} records/s, {:.0} MB/s; CPU time of both nodes {cpu:?})",
        N as f64 / el.as_secs_f64(),
        bytes as f64 / 1e6 / el.as_secs_f64()
    );
    late.shutdown().await;
    writer.shutdown().await;
    // The baseline, same run, same disk: the same entry bytes inserted into a plain sled tree
    // under their index and flushed once at the end (no network, no checks, no Merkle tree).
    let db = sled::open(root.path().join("baseline")).unwrap();
    let (t, base_cpu) = (Instant::now(), cpu_time());
    for (i, e) in all.iter().enumerate() {
        db.insert((i as u64).to_be_bytes(), e.as_slice()).unwrap();
    }
    db.flush().unwrap();
    let base = t.elapsed();
    let base_cpu = cpu_time().saturating_sub(base_cpu);
    println!(
        "baseline: the same {} entries inserted into plain sled and flushed in {base:?} (CPU time {base_cpu:?}); catch-up / baseline {:.2}x",
        all.len(),
        el.as_secs_f64() / base.as_secs_f64()
    );
}

/// Append rate as the log grows to a million entries of the same federation: the log is
/// grown in batches of whole rounds, about 1,000 entries each (one flush and one signed
/// checkpoint per batch); at 0, 100,000 and 1,000,000 entries it times 20 such batches, then
/// 50 rounds appended one at a time as the coordinator appends them (the round's entries in
/// one batch, then its signed checkpoint).
fn append_growth() {
    use rayon::prelude::*;
    const MARKS: [u64; 3] = [0, 100_000, 1_000_000];
    const ROUNDS_PER_BATCH: u64 = 77;
    let (fed, validators) = validated_federation();
    let root = tempfile::tempdir().unwrap();
    let log = Log::open(
        &root.path().join("log"),
        common::ORIGIN,
        fed.log_signer.clone(),
    )
    .unwrap();
    let genesis = fed.genesis_with_validators(&validators);
    log.append_batch(&genesis).unwrap();
    log.checkpoint().unwrap();
    // Every round of this federation has the same number of entries, so rounds can be made in
    // parallel knowing where each starts.
    let per_round = fed.validated_round(1, 0, &validators).len() as u64;
    let mut next = 1u64;
    let mut rounds = |log: &Log, count: u64| -> Vec<Vec<u8>> {
        let (first_round, at) = (next, log.size());
        next += count;
        let made: Vec<Vec<Vec<u8>>> = (0..count)
            .into_par_iter()
            .map(|k| fed.validated_round(first_round + k, at + k * per_round, &validators))
            .collect();
        assert!(made.iter().all(|r| r.len() as u64 == per_round));
        made.into_iter().flatten().collect()
    };
    let t0 = Instant::now();
    for mark in MARKS {
        while log.size() < mark {
            let want = (mark - log.size())
                .div_ceil(per_round)
                .min(ROUNDS_PER_BATCH);
            log.append_and_checkpoint(&rounds(&log, want)).unwrap();
        }
        let mut batched = Duration::ZERO;
        let mut entries = 0;
        for _ in 0..20 {
            let batch = rounds(&log, ROUNDS_PER_BATCH);
            entries += batch.len();
            let t = Instant::now();
            log.append_and_checkpoint(&batch).unwrap();
            batched += t.elapsed();
        }
        let mut single = Duration::ZERO;
        for _ in 0..50 {
            let round = rounds(&log, 1);
            let t = Instant::now();
            log.append_and_checkpoint(&round).unwrap();
            single += t.elapsed();
        }
        println!(
            "append at {mark} entries: {:.0} entries/s in batches of {} (one flush and checkpoint each); one round per append: {:.1} rounds/s, {:?} per round of {per_round} entries [log at {} entries after {:?}]",
            entries as f64 / batched.as_secs_f64(),
            ROUNDS_PER_BATCH * per_round,
            50.0 / single.as_secs_f64(),
            single / 50,
            log.size(),
            t0.elapsed()
        );
    }
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
    // `-- append-growth` adds the append rate at 0, 100k and 1M entries (a few minutes).
    if std::env::args().any(|a| a == "append-growth") {
        append_growth();
    }
}
