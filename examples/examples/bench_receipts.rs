//! Receipt figures, each against a baseline measured in the same run:
//!
//! - per round, the receipt check of every hospital (time of the successful check, bytes of
//!   checkpoint, tiles and entry bundles it fetched) against the round's duration (open to
//!   close at the coordinator), at 5 and at 100 participants. The agents do no training (a
//!   zero update each), so rounds are as short as the protocol allows and the check's share is
//!   at its largest; the genesis names no witnesses here (cosignatures add two signature
//!   checks per receipt, microseconds).
//! - tiles served per second over HTTP (loopback, 16 requests in flight) for a 100,000-entry
//!   log, against reading the same files from disk (the static `export --tiles` layout).
//!
//! ```text
//! cargo run --release --example bench_receipts             # both
//! cargo run --release --example bench_receipts -- tiles    # the tiles figure only
//! cargo run --release --example bench_receipts -- receipts # the receipt figures only
//! ```

use fedledger_examples::bench::median;
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::Context;
use fedledger_coordinator::config::{
    DataSection, LedgerSection, LimitsSection, RoundsSection, StandardisationMode, TrainingSection,
};
use fedledger_coordinator::{ConfigFile, Identity};
use fedledger_examples::bench::{ZeroSites, spawn_zero_agent, zero_sites};
use fedledger_ledger::{Log, http, note::NoteSigner, tiles};
use fedledger_model::{ModelKind, ModelSpec};

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

fn main() -> anyhow::Result<()> {
    // Quiet unless RUST_LOG asks (the figures go to stdout).
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Runtime::new()?;
    let only = std::env::args().nth(1);
    rt.block_on(async {
        if only.as_deref() != Some("tiles") {
            receipts(5, 5).await?;
            receipts(100, 5).await?;
        }
        if only.as_deref() != Some("receipts") {
            tiles_throughput(100_000).await?;
        }
        Ok(())
    })
}

async fn receipts(n: usize, rounds: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ZeroSites {
        validation: vpath,
        entries,
        configs: pcfgs,
    } = zero_sites(dir.path(), n, 30)?;
    let cfg = ConfigFile {
        federation: format!("bench-receipts-{n}"),
        listen: "127.0.0.1:0".parse()?,
        state_dir: dir.path().join("state"),
        key: None,
        model: ModelSpec {
            kind: ModelKind::Logreg,
            features: 30,
            classes: 2,
            hidden: vec![],
        },
        data: DataSection {
            label_column: "malignant".into(),
            validation: vpath,
            standardisation: StandardisationMode::Reference,
        },
        rounds: RoundsSection {
            total: rounds,
            quorum: n as u32,
            deadline_secs: 120,
            grace_secs: 60,
        },
        training: TrainingSection::default(),
        aggregation: Default::default(),
        limits: LimitsSection {
            max_connections_per_ip: n as u32 * 2 + 8,
            ..LimitsSection::default()
        },
        valuation: Default::default(),
        rewards: Default::default(),
        privacy: Default::default(),
        ledger: LedgerSection {
            tiles_listen: Some("127.0.0.1:0".parse()?),
            allow_witnesses: Vec::new(),
            allow_replicas: Vec::new(),
            ..Default::default()
        },
        tls: None,
        metrics: Default::default(),
        governance: Default::default(),
        participants: entries,
        validators: None,
        validator_entries: Vec::new(),
    }
    .validate()
    .context("config")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let running = fedledger_coordinator::serve(cfg, Some(listener)).await?;
    let url = format!("http://{}", running.addr);
    let Identity {
        log_key,
        genesis_sha256,
        ..
    } = running.identity.clone();
    let section = fedledger_participant::config::LedgerSection {
        url: running.tiles_url().context("tiles")?,
        keys_file: None,
        log_key: Some(log_key),
        genesis_sha256,
        allow_no_witnesses: true,
        receipt_timeout_secs: 120,
    };
    let agents: Vec<_> = pcfgs
        .into_iter()
        .map(|mut p| {
            p.coordinator = url.clone();
            p.ledger = Some(section.clone());
            spawn_zero_agent(p)
        })
        .collect();
    let mut by_round: BTreeMap<u64, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for a in agents {
        let report = a.await??;
        anyhow::ensure!(
            report.receipts.len() as u64 == rounds,
            "{} has {} receipts",
            report.name,
            report.receipts.len()
        );
        for s in report.receipts {
            let e = by_round.entry(s.round).or_default();
            e.0.push(s.micros as f64 / 1e3);
            e.1.push(s.bytes as f64);
        }
    }
    running.wait_done().await;
    let outcomes = running.coordinator.store().outcomes()?;
    let size = running.coordinator.ledger().size();
    running.shutdown().await?;
    println!(
        "receipts, {n} participants, {rounds} rounds (no training; log of {size} entries at the end):"
    );
    println!("  round  round duration  check median / max      fetched median / max");
    for o in &outcomes {
        let (mut t, mut b) = by_round.remove(&o.round).unwrap_or_default();
        let duration = o.closed_at_ms.saturating_sub(o.opened_at_ms) as f64;
        println!(
            "  {:>5}  {:>11.1} ms  {:>7.2} / {:>7.2} ms  {:>8.0} / {:>8.0} B",
            o.round,
            duration,
            median(&mut t),
            max(&t),
            median(&mut b),
            max(&b)
        );
    }
    Ok(())
}

/// A 100,000-entry log: the genesis and enrolment entries (about 220 bytes each), in batches
/// of 1,000 with a checkpoint each.
fn build_log(dir: &std::path::Path, n: u64) -> anyhow::Result<Log> {
    let key = fedledger_ledger::keys::generate_key_file(&dir.with_extension("key"))?;
    let signer = NoteSigner::log("bench-tiles", key)?;
    let log = Log::open(dir, "bench-tiles", signer)?;
    let genesis = serde_json::json!({
        "created_at": "2026-12-01T00:00:00Z", "enrolments": n - 1, "federation": "bench-tiles",
        "governance": {"governors": [], "threshold": 0},
        "model": {"classes": 2, "features": 3, "hidden": [], "kind": "logreg", "params": 4},
        "privacy": {"accountants": ["rdp"], "clip_norm": "0", "delta": "0.00001", "epsilon_budget": "8", "noise_multiplier": "0"},
        "reward": {"pool_per_round": 1000, "rule": "shapley-proportional/v1"},
        "training": {"aggregation": "fedavg", "batch_size": 16, "learning_rate": "0.1", "local_epochs": 1, "quorum": 1, "rounds": 3},
        "type": "fedledger.federation/v2", "v": 2, "validation": {"sha256": "cc".repeat(32)},
        "witnesses": {"keys": [], "quorum": 0},
    });
    let mut batch = vec![fedledger_ledger::records::encode_canonical(&genesis)?];
    for i in 1..n {
        batch.push(fedledger_ledger::records::encode_canonical(
            &serde_json::json!({
                "federation": "bench-tiles", "name": format!("hospital-{i}"),
                "participant": format!("{i:064x}"), "role": "contributor",
                "type": "fedledger.enrolment/v2", "v": 2,
            }),
        )?);
        if batch.len() == 1000 {
            log.append_and_checkpoint(&batch)?;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        log.append_and_checkpoint(&batch)?;
    }
    Ok(log)
}

async fn tiles_throughput(n: u64) -> anyhow::Result<()> {
    const IN_FLIGHT: usize = 16;
    const RUN: Duration = Duration::from_secs(3);
    let dir = tempfile::tempdir()?;
    let t = Instant::now();
    let log = {
        let p = dir.path().join("log");
        tokio::task::spawn_blocking(move || build_log(&p, n)).await??
    };
    let built = t.elapsed().as_secs_f64();
    let static_dir = dir.path().join("tiles");
    let summary = fedledger_ledger::export::export_tiles(&log, &static_dir)?;
    let paths: Vec<String> = tiles::tiles_for_size(n)
        .into_iter()
        .map(|id| id.path())
        .collect();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let server = http::serve_tiles(listener, log.clone()).await?;
    let client = std::sync::Arc::new(http::TilesClient::new(&server.url())?);
    // Served: IN_FLIGHT workers walk the tile paths until the time is up.
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let until = Instant::now() + RUN;
    let started = Instant::now();
    let workers: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (client, next, paths) = (client.clone(), next.clone(), paths.clone());
            tokio::spawn(async move {
                let mut bytes = 0u64;
                let mut count = 0u64;
                while Instant::now() < until {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % paths.len();
                    let body = client
                        .get(&paths[i], 256 * 65_537)
                        .await?
                        .context("a tile is missing")?;
                    bytes += body.len() as u64;
                    count += 1;
                }
                Ok::<_, anyhow::Error>((count, bytes))
            })
        })
        .collect();
    let (mut served, mut served_bytes) = (0u64, 0u64);
    for w in workers {
        let (c, b) = w.await??;
        served += c;
        served_bytes += b;
    }
    let served_secs = started.elapsed().as_secs_f64();
    server.shutdown().await;
    // Disk: the same files, read by IN_FLIGHT threads.
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let until = Instant::now() + RUN;
    let started = Instant::now();
    let readers: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (next, paths, root) = (next.clone(), paths.clone(), static_dir.clone());
            std::thread::spawn(move || {
                let (mut count, mut bytes) = (0u64, 0u64);
                while Instant::now() < until {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % paths.len();
                    bytes += std::fs::read(root.join(&paths[i]))?.len() as u64;
                    count += 1;
                }
                Ok::<_, std::io::Error>((count, bytes))
            })
        })
        .collect();
    let (mut read, mut read_bytes) = (0u64, 0u64);
    for r in readers {
        let (c, b) = r.join().map_err(|_| anyhow::anyhow!("reader panicked"))??;
        read += c;
        read_bytes += b;
    }
    let read_secs = started.elapsed().as_secs_f64();
    println!(
        "tiles of a {n}-entry log ({} files, {:.1} MB as static files; log built in {built:.1} s):",
        paths.len(),
        summary.bytes as f64 / 1e6
    );
    println!(
        "  served over HTTP ({IN_FLIGHT} in flight, loopback): {:.0} tiles/s, {:.0} MB/s",
        served as f64 / served_secs,
        served_bytes as f64 / served_secs / 1e6
    );
    println!(
        "  read from disk ({IN_FLIGHT} threads, page cache warm): {:.0} files/s, {:.0} MB/s; served/disk {:.2}",
        read as f64 / read_secs,
        read_bytes as f64 / read_secs / 1e6,
        (served as f64 / served_secs) / (read as f64 / read_secs)
    );
    Ok(())
}
