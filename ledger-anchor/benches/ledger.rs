//! Ledger benchmarks: appends with checkpoint signing and sled flush, inclusion proof
//! verification at 1M entries, and Ed25519 verification throughput with rayon.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use fedledger_ledger::merkle::{self, MemoryTree};
use fedledger_ledger::{Log, keys, records};
use rayon::prelude::*;

const BATCH: u64 = 1000;

fn appends(c: &mut Criterion) {
    let fed = common::Federation::new(3, 2);
    let genesis = fed.genesis();
    let rounds: Vec<Vec<u8>> = fed.entries_after_genesis(BATCH);
    println!(
        "entry sizes: contribution {} bytes, round summary {} bytes",
        rounds[0].len(),
        rounds[3].len()
    );
    let mut g = c.benchmark_group("append");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Elements(BATCH));
    g.bench_function(
        "batch_1000_records_validated_flushed_and_checkpoint_signed",
        |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = tempfile::tempdir().unwrap();
                    let log =
                        Log::open(dir.path(), common::ORIGIN, fed.log_signer.clone()).unwrap();
                    log.append_batch(&genesis).unwrap();
                    let t = Instant::now();
                    let (_, cp) = log.append_and_checkpoint(&rounds).unwrap();
                    total += t.elapsed();
                    assert_eq!(cp.checkpoint.size, BATCH + genesis.len() as u64);
                }
                total
            })
        },
    );
    g.throughput(Throughput::Elements(100));
    g.bench_function(
        "batch_100_records_validated_flushed_and_checkpoint_signed",
        |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = tempfile::tempdir().unwrap();
                    let log =
                        Log::open(dir.path(), common::ORIGIN, fed.log_signer.clone()).unwrap();
                    log.append_batch(&genesis).unwrap();
                    let t = Instant::now();
                    for chunk in rounds.chunks(100) {
                        log.append_and_checkpoint(chunk).unwrap();
                    }
                    total += t.elapsed() / 10;
                }
                total
            })
        },
    );
    g.throughput(Throughput::Elements(1));
    g.bench_function(
        "validate_one_contribution_entry (baseline: schema check alone)",
        |b| {
            let at = genesis.len() as u64;
            b.iter(|| records::validate_entry(at, common::ORIGIN, &rounds[0]).unwrap())
        },
    );
    g.finish();
}

fn proofs(c: &mut Criterion) {
    const N: u64 = 1 << 20;
    let mut tree = MemoryTree::new();
    for i in 0..N {
        tree.push_leaf(merkle::leaf_hash(&i.to_be_bytes()));
    }
    let root = tree.root_at(N).unwrap();
    let mut g = c.benchmark_group("inclusion_1M");
    let mut i = 0u64;
    g.bench_function("verify_inclusion_proof_at_1048576_entries", |b| {
        b.iter_batched(
            || {
                i = (i * 2_654_435_761 + 12345) % N;
                let p = merkle::inclusion_proof(&tree, i, N).unwrap();
                (merkle::leaf_hash(&i.to_be_bytes()), i, p)
            },
            |(leaf, idx, p)| merkle::verify_inclusion(&leaf, idx, N, &p, &root).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.bench_function(
        "generate_inclusion_proof_at_1048576_entries (memory tree)",
        |b| {
            b.iter(|| {
                i = (i * 2_654_435_761 + 12345) % N;
                merkle::inclusion_proof(&tree, i, N).unwrap()
            })
        },
    );
    g.finish();
}

fn signatures(c: &mut Criterion) {
    const SIGS: usize = 4096;
    let ks: Vec<_> = (0..16u8).map(common::key).collect();
    let jobs: Vec<([u8; 32], Vec<u8>, Vec<u8>)> = (0..SIGS)
        .map(|i| {
            let k = &ks[i % ks.len()];
            let msg = records::update_signing_message(
                common::ORIGIN,
                i as u64,
                &format!("{i:064x}"),
                100,
                &"ab".repeat(32),
            )
            .into_bytes();
            let sig = k.sign(&msg).as_ref().to_vec();
            (keys::public_key(k), msg, sig)
        })
        .collect();
    let mut g = c.benchmark_group("ed25519_verify");
    g.sample_size(20)
        .throughput(Throughput::Elements(SIGS as u64));
    g.bench_function(
        format!("ring_rayon_{}_threads", rayon::current_num_threads()),
        |b| {
            b.iter(|| {
                assert!(
                    jobs.par_iter()
                        .all(|(pk, m, s)| keys::verify_ed25519(pk, m, s))
                )
            })
        },
    );
    let items: Vec<(&[u8], &[u8], &[u8])> = jobs
        .iter()
        .map(|(pk, m, s)| (&pk[..], &m[..], &s[..]))
        .collect();
    g.bench_function(
        format!(
            "dalek_batch_of_64_rayon_{}_threads (verify_ed25519_many)",
            rayon::current_num_threads()
        ),
        |b| b.iter(|| assert!(keys::verify_ed25519_many(&items).into_iter().all(|ok| ok))),
    );
    g.bench_function("ring_single_thread (baseline)", |b| {
        b.iter(|| assert!(jobs.iter().all(|(pk, m, s)| keys::verify_ed25519(pk, m, s))))
    });
    g.finish();
}

criterion_group!(benches, appends, proofs, signatures);
criterion_main!(benches);
