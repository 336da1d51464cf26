//! Weighted FedAvg of 32 updates x 1M parameters (128 MB) against one plain read pass over the
//! same bytes, both on all cores. Goal: FedAvg within 1.3x of the read pass. The robust rules
//! (coordinate-wise median, trimmed mean, Multi-Krum and Bulyan, f = 4) on the same updates, as
//! ratios to the same read pass, and Multi-Krum comparing the hospitals' update histories (the
//! histories advanced, then selected on).

use criterion::{Criterion, criterion_group, criterion_main};
use fedledger_coordinator::{
    aggregate::{Aggregator, Bulyan, CoordinateMedian, FedAvg, MultiKrum, TrimmedMean, history},
    types::WeightedUpdate,
};
use rayon::prelude::*;
use std::hint::black_box;

const UPDATES: usize = 32;
const PARAMS: usize = 1 << 20;

fn bench(c: &mut Criterion) {
    let global: Vec<f32> = (0..PARAMS).map(|i| (i % 97) as f32 * 1e-3).collect();
    let updates: Vec<Vec<f32>> = (0..UPDATES)
        .map(|u| {
            (0..PARAMS)
                .map(|i| ((i * 31 + u) % 101) as f32 * 1e-4)
                .collect()
        })
        .collect();
    let views: Vec<WeightedUpdate<'_>> = updates
        .iter()
        .enumerate()
        .map(|(i, d)| WeightedUpdate {
            examples: 10 + i as u64,
            delta: d,
            privacy: None,
        })
        .collect();
    let mut g = c.benchmark_group("aggregate_32x1M");
    g.sample_size(30);
    g.bench_function("read_pass_baseline", |b| {
        b.iter(|| {
            // Touch every byte of every update once, in parallel chunks like FedAvg does. An
            // integer XOR over eight lanes vectorises; a plain float sum is a serial dependency
            // chain and would measure the adder's latency, not memory.
            let s: u32 = (0..PARAMS.div_ceil(16 * 1024))
                .into_par_iter()
                .map(|c| {
                    let (lo, hi) = (c * 16 * 1024, ((c + 1) * 16 * 1024).min(PARAMS));
                    let mut acc = [0u32; 8];
                    for u in &updates {
                        for chunk in u[lo..hi].chunks_exact(8) {
                            for (a, v) in acc.iter_mut().zip(chunk) {
                                *a ^= v.to_bits();
                            }
                        }
                    }
                    acc.iter().fold(0u32, |a, b| a ^ b)
                })
                .reduce(|| 0, |a, b| a ^ b);
            black_box(s)
        })
    });
    g.bench_function("fedavg", |b| {
        b.iter(|| black_box(FedAvg.aggregate(black_box(&global), black_box(&views))))
    });
    g.sample_size(10);
    let robust: [(&str, Box<dyn Aggregator>); 4] = [
        ("median", Box::new(CoordinateMedian)),
        ("trimmed_mean", Box::new(TrimmedMean { fraction: 0.1 })),
        (
            "multi_krum",
            Box::new(MultiKrum {
                byzantine: 4,
                keep: None,
            }),
        ),
        ("bulyan", Box::new(Bulyan { byzantine: 4 })),
    ];
    for (name, rule) in &robust {
        g.bench_function(*name, |b| {
            b.iter(|| black_box(rule.aggregate(black_box(&global), black_box(&views))))
        });
    }
    // What a close adds when Multi-Krum compares histories (the default): each hospital's
    // history advanced by its update, then the selection on the histories; the history blobs'
    // digests and writes are the store's, not timed here.
    let before: Vec<Vec<f32>> = updates
        .iter()
        .map(|u| u.iter().map(|v| v * 0.5).collect())
        .collect();
    let mk = MultiKrum {
        byzantine: 4,
        keep: None,
    };
    g.bench_function("multi_krum_with_histories", |b| {
        b.iter(|| {
            let after: Vec<Vec<f32>> = before
                .par_iter()
                .zip(&updates)
                .map(|(h, u)| history::advance(0.9, Some(h), u))
                .collect();
            let compared: Vec<&[f32]> = after.iter().map(|h| h.as_slice()).collect();
            black_box(mk.aggregate_compared(black_box(&global), black_box(&views), Some(&compared)))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
