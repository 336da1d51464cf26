//! Foundation figures, each against a baseline measured in the same run:
//!
//! - upload of a 16M-parameter (64 MiB) update through the real coordinator over loopback gRPC
//!   as the participant agent sends it (the update hashed when the agent recorded it, before
//!   sending; then signing, chunked streaming, server checks and hashing, durable write, receipt;
//!   the client's hash time is printed beside it)
//!   versus a durable write of the same bytes (new file + fsync, same folder) and a raw tokio
//!   TCP copy; five such uploads at once versus five durable writes at once; the download
//!   (task pull) versus the raw TCP copy;
//! - round overhead: five participant agents that do no training, time from round open to the
//!   aggregated model, over 20 rounds; once with the coordinator's default `[limits]` and once
//!   with every limit as loose as it goes (the cost of the limits, in the same run);
//! - TLS: the round overhead with TLS against without (default limits, same run), and the
//!   16M-parameter upload over TLS against a raw rustls copy of the same bytes (same
//!   certificate, same ring provider).
//!
//! ```text
//! cargo run --release --example bench_rounds              # everything
//! cargo run --release --example bench_rounds -- overhead  # the round overhead only
//! cargo run --release --example bench_rounds -- tls       # the TLS figures only
//! cargo run --release --example bench_rounds -- upload    # the upload figures only
//! ```

use fedledger_examples::bench::{cpu_secs, median};
use std::{path::Path, sync::Arc, time::Instant};

use anyhow::Context;
use fedledger_coordinator::{
    ConfigFile, Phase,
    config::{
        DataSection, LimitsSection, ParticipantEntry, RoundsSection, StandardisationMode,
        TrainingSection,
    },
};
use fedledger_examples::bench::{ZeroSites, spawn_zero_agent, zero_sites};
use fedledger_ledger::records::PrivacyObject;
use fedledger_model::{ModelKind, ModelSpec};
use fedledger_participant::{
    client::Client,
    keys,
    link::{Link, LinkSettings, Trust},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let only_overhead = std::env::args().any(|a| a == "overhead");
    let only_tls = std::env::args().any(|a| a == "tls");
    let only_upload = std::env::args().any(|a| a == "upload");
    let certs = tempfile::tempdir()?;
    fedledger_coordinator::tls::init(certs.path(), &["localhost".into()])?;
    rt.block_on(async {
        let defaults = LimitsSection {
            // Every simulated hospital dials from 127.0.0.1.
            max_connections_per_ip: 16,
            ..LimitsSection::default()
        };
        if only_tls {
            upload(Some(certs.path())).await?;
            let plain = overhead("plaintext (defaults)", defaults.clone(), None).await?;
            let tls = overhead("TLS (defaults)", defaults, Some(certs.path())).await?;
            println!(
                "round overhead with TLS / without: median {:.2}x, p90 {:.2}x",
                tls.0 / plain.0,
                tls.1 / plain.1
            );
            return Ok(());
        }
        if only_upload {
            upload(None).await?;
            concurrent_uploads().await?;
            return Ok(());
        }
        if !only_overhead {
            upload(None).await?;
            concurrent_uploads().await?;
            upload(Some(certs.path())).await?;
        }
        let loose = LimitsSection {
            max_streams_per_connection: u32::MAX,
            max_connections_per_ip: u32::MAX,
            max_connections: u32::MAX,
            message_timeout_secs: 366 * 24 * 3600,
            min_upload_kib_per_sec: 1,
            keepalive_interval_secs: 0,
            keepalive_timeout_secs: 366 * 24 * 3600,
            session_ttl_secs: 366 * 24 * 3600,
            ..LimitsSection::default()
        };
        overhead("limits off (as loose as they go)", loose, None).await?;
        let plain = overhead("limits on (defaults)", defaults.clone(), None).await?;
        let tls = overhead("limits on (defaults), TLS", defaults, Some(certs.path())).await?;
        println!(
            "round overhead with TLS / without: median {:.2}x, p90 {:.2}x",
            tls.0 / plain.0,
            tls.1 / plain.1
        );
        Ok(())
    })
}

/// A federation of `sites` hospitals (key files in `dir`) on a 16M-parameter logistic
/// regression (4,000 features x 4,000 classes), each round needing every site; its validated
/// configuration and the hospitals' key files.
fn wide_federation(
    dir: &Path,
    federation: &str,
    sites: usize,
    rounds: u64,
    grace_secs: u64,
    tls: Option<&Path>,
) -> anyhow::Result<(
    fedledger_coordinator::FederationConfig,
    Vec<std::path::PathBuf>,
)> {
    let (features, classes) = (4000usize, 4000usize);
    let vpath = dir.join("validation.csv");
    write_wide_validation(&vpath, features, classes)?;
    let mut key_paths = Vec::new();
    let mut entries = Vec::new();
    for i in 0..sites {
        let p = dir.join(format!("k{i}.key"));
        let k = keys::generate_key_file(&p)?;
        entries.push(ParticipantEntry {
            name: format!("h{i}"),
            public_key: keys::public_key_hex(&k),
            public_key_file: None,
        });
        key_paths.push(p);
    }
    let cfg = ConfigFile {
        federation: federation.into(),
        listen: "127.0.0.1:0".parse()?,
        state_dir: dir.join("state"),
        key: None,
        model: ModelSpec {
            kind: ModelKind::Logreg,
            features,
            classes,
            hidden: vec![],
        },
        data: DataSection {
            label_column: "label".into(),
            validation: vpath,
            standardisation: StandardisationMode::Site,
        },
        rounds: RoundsSection {
            total: rounds,
            quorum: sites as u32,
            deadline_secs: 3600,
            grace_secs,
        },
        training: TrainingSection::default(),
        aggregation: Default::default(),
        // Every simulated hospital dials from 127.0.0.1.
        limits: LimitsSection {
            max_connections_per_ip: sites as u32 + 8,
            ..Default::default()
        },
        valuation: Default::default(),
        rewards: Default::default(),
        privacy: Default::default(),
        ledger: Default::default(),
        tls: tls.map(tls_section),
        metrics: Default::default(),
        governance: Default::default(),
        participants: entries,
        validators: None,
        validator_entries: Vec::new(),
    }
    .validate()?;
    Ok((cfg, key_paths))
}

fn write_wide_validation(
    path: &std::path::Path,
    features: usize,
    classes: usize,
) -> anyhow::Result<()> {
    let mut s: String = (0..features).map(|j| format!("f{j},")).collect();
    s.push_str("label\n");
    for i in 0..4 {
        for j in 0..features {
            s.push_str(&format!("{},", (i + j) % 5));
        }
        s.push_str(&format!("{}\n", i % classes));
    }
    std::fs::write(path, s)?;
    Ok(())
}

async fn raw_tcp_copy(bytes: Arc<Vec<u8>>) -> anyhow::Result<f64> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let n = bytes.len();
    let server = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await?;
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0usize;
        while got < n {
            let k = sock.read(&mut buf).await?;
            if k == 0 {
                break;
            }
            got += k;
        }
        sock.write_all(b"k").await?;
        anyhow::Ok(got)
    });
    let t = Instant::now();
    let mut sock = tokio::net::TcpStream::connect(addr).await?;
    sock.set_nodelay(true)?;
    sock.write_all(&bytes).await?;
    let mut ack = [0u8; 1];
    sock.read_exact(&mut ack).await?;
    let secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(server.await?? == n, "raw copy truncated");
    Ok(secs)
}

/// A raw rustls copy of `bytes` over loopback (the coordinator's certificate in `certs`, the
/// participant's trust settings), acknowledged by one byte, as the TLS baseline.
async fn raw_tls_copy(bytes: Arc<Vec<u8>>, certs: &Path) -> anyhow::Result<f64> {
    let cert = Arc::new(fedledger_coordinator::tls::ReloadingCert::new(
        &certs.join("server.pem"),
        &certs.join("server.key"),
    )?);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(
        fedledger_coordinator::tls::server_config(cert, b"h2")?,
    ));
    let mut client_cfg =
        fedledger_participant::link::client_config(&Trust::Ca(certs.join("ca.pem")))?;
    client_cfg.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let n = bytes.len();
    let server = tokio::spawn(async move {
        let (sock, _) = listener.accept().await?;
        sock.set_nodelay(true)?;
        let mut sock = acceptor.accept(sock).await?;
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0usize;
        while got < n {
            let k = sock.read(&mut buf).await?;
            if k == 0 {
                break;
            }
            got += k;
        }
        sock.write_all(b"k").await?;
        sock.flush().await?;
        anyhow::Ok(got)
    });
    let t = Instant::now();
    let sock = tokio::net::TcpStream::connect(addr).await?;
    sock.set_nodelay(true)?;
    let name = rustls_pki_types::ServerName::try_from("localhost")?;
    let mut sock = connector.connect(name, sock).await?;
    sock.write_all(&bytes).await?;
    sock.flush().await?;
    let mut ack = [0u8; 1];
    sock.read_exact(&mut ack).await?;
    let secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(server.await?? == n, "raw TLS copy truncated");
    Ok(secs)
}

/// The 16M-parameter upload, over TLS with the certificate in `tls` (against a raw rustls
/// copy) or in plaintext (against a raw TCP copy).
async fn upload(tls: Option<&Path>) -> anyhow::Result<()> {
    const SAMPLES: usize = 5;
    let dir = tempfile::tempdir()?;
    let (cfg, key_paths) = wide_federation(dir.path(), "bench-upload", SAMPLES, 1, 60, tls)?;
    let params = cfg.model.num_params();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let running = fedledger_coordinator::serve(cfg, Some(listener)).await?;
    let link = link_to(&running, tls)?;
    let mut clients = Vec::new();
    for p in &key_paths {
        clients.push(Client::connect_with(&link, Arc::new(keys::load_key(p)?)).await?);
    }
    // Each site's update differs (as hospitals' do): the same bytes twice would be stored once,
    // and the second upload would time the coordinator's deduplication, not a durable write.
    let delta_of = |site: usize| -> Vec<f32> {
        (0..params)
            .map(|i| (((i + site * 7) % 1000) as f32) * 1e-4)
            .collect()
    };
    let bytes = Arc::new(fedledger_model::digest::vector_to_bytes(&delta_of(0)));
    let mb = bytes.len() as f64 / 1e6;
    let mut hashes = Vec::new();
    let mut grpc = Vec::new();
    let mut raw = Vec::new();
    let mut down = Vec::new();
    let mut durable = Vec::new();
    let scratch = dir.path().join("state").join("blobs");
    let (mut up_cpu, mut down_cpu, mut raw_cpu) = (Vec::new(), Vec::new(), Vec::new());
    for (site, c) in clients.iter_mut().enumerate() {
        let delta = delta_of(site);
        // The agent hashes an update when it records it, durably and before sending (privacy
        // first), then sends it with that digest: the upload is timed from there, as it is
        // sent.
        let t = Instant::now();
        let sha = fedledger_model::digest::vector_sha256(&delta);
        hashes.push(t.elapsed().as_secs_f64());
        let (t, cpu) = (Instant::now(), cpu_secs(std::process::id())?);
        let task = c.task().await?;
        down.push(t.elapsed().as_secs_f64());
        down_cpu.push(cpu_secs(std::process::id())? - cpu);
        anyhow::ensure!(task.params.len() == params);
        // The last upload completes the round; keep it out of the timing so closing (which
        // aggregates and values) does not count as transport.
        let (t, cpu) = (Instant::now(), cpu_secs(std::process::id())?);
        c.submit_digested(task.header.round, 100, &delta, sha, &PrivacyObject::none())
            .await?;
        grpc.push(t.elapsed().as_secs_f64());
        up_cpu.push(cpu_secs(std::process::id())? - cpu);
        let cpu = cpu_secs(std::process::id())?;
        raw.push(match tls {
            Some(certs) => raw_tls_copy(bytes.clone(), certs).await?,
            None => raw_tcp_copy(bytes.clone()).await?,
        });
        raw_cpu.push(cpu_secs(std::process::id())? - cpu);
        // The baseline the acknowledgement is held to: the same bytes written and fsynced to
        // a new file in the same folder (same disk), nothing else.
        durable.push(durable_writes(&scratch, &bytes, 1).await?);
    }
    running.wait_done().await;
    running.shutdown().await?;
    let write_ms = median(&mut durable) * 1e3;
    let hash_ms = median(&mut hashes) * 1e3;
    let (g, r, d) = (median(&mut grpc), median(&mut raw), median(&mut down));
    let (how, raw_how) = match tls {
        Some(_) => ("over TLS", "raw rustls copy"),
        None => ("plaintext", "raw TCP copy"),
    };
    println!(
        "upload 16M params {how} ({mb:.1} MB), median of {SAMPLES}: gRPC submit {:.1} ms = {:.0} MB/s (CPU time of coordinator and client {:.0} ms); {raw_how} {:.1} ms = {:.0} MB/s (CPU time {:.0} ms); ratio gRPC/raw throughput {:.2}",
        g * 1e3,
        mb / g,
        median(&mut up_cpu) * 1e3,
        r * 1e3,
        mb / r,
        median(&mut raw_cpu) * 1e3,
        r / g
    );
    println!(
        "  against a durable write of the same bytes (new file + fsync, same folder), median of {SAMPLES}: {write_ms:.1} ms; ratio gRPC submit / durable write {:.2}x; SHA-256 of 64 MB {hash_ms:.1} ms (the coordinator hashes as the bytes arrive; the client hashed when it recorded the update, before the timing: counted in, the ratio would be {:.2}x)",
        g * 1e3 / write_ms,
        (g * 1e3 + hash_ms) / write_ms
    );
    println!(
        "download 16M params {how} (task pull, digest checked), median: {:.1} ms = {:.0} MB/s (CPU time of coordinator and client {:.0} ms); ratio download/raw throughput {:.2}",
        d * 1e3,
        mb / d,
        median(&mut down_cpu) * 1e3,
        r / d
    );
    Ok(())
}

/// Seconds to write `bytes` to `n` new files in `dir` at once (a thread each) and fsync each
/// file and the folder: the durable write an acknowledgement needs, without any protocol.
async fn durable_writes(dir: &Path, bytes: &Arc<Vec<u8>>, n: usize) -> anyhow::Result<f64> {
    let dir = dir.to_owned();
    let bytes = bytes.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<f64> {
        use std::io::Write;
        static FILES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let paths: Vec<_> = (0..n)
            .map(|_| {
                let i = FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                dir.join(format!("baseline-{i}.bin"))
            })
            .collect();
        let t = Instant::now();
        std::thread::scope(|s| -> anyhow::Result<()> {
            let handles: Vec<_> = paths
                .iter()
                .map(|p| {
                    let bytes = &bytes;
                    s.spawn(move || -> std::io::Result<()> {
                        let mut f = std::fs::File::create(p)?;
                        f.write_all(bytes)?;
                        f.sync_all()
                    })
                })
                .collect();
            for h in handles {
                h.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
            }
            Ok(())
        })?;
        std::fs::File::open(&dir)?.sync_all()?;
        let secs = t.elapsed().as_secs_f64();
        for p in &paths {
            std::fs::remove_file(p)?;
        }
        Ok(secs)
    })
    .await?
}

/// Five participants upload a 16M-parameter update each at the same moment, in each of
/// `ROUNDS` rounds; the wall time from the first byte to the last receipt against five durable
/// writes of the same bytes at once (threads, same folder) measured after each round.
async fn concurrent_uploads() -> anyhow::Result<()> {
    const SITES: usize = 5;
    const ROUNDS: u64 = 3;
    let dir = tempfile::tempdir()?;
    let (cfg, key_paths) = wide_federation(dir.path(), "bench-concurrent", SITES, ROUNDS, 0, None)?;
    let params = cfg.model.num_params();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let running = fedledger_coordinator::serve(cfg, Some(listener)).await?;
    let link = link_to(&running, None)?;
    let mut clients = Vec::new();
    for p in &key_paths {
        clients.push(Client::connect_with(&link, Arc::new(keys::load_key(p)?)).await?);
    }
    let scratch = dir.path().join("state").join("blobs");
    let mut uploads = Vec::new();
    let mut writes = Vec::new();
    let mut cpus = Vec::new();
    for round in 1..=ROUNDS {
        // Each client waits for the round to open and pulls the model first, so only the
        // uploads overlap in the timing.
        for c in clients.iter_mut() {
            loop {
                let task = c.task().await?;
                if task.state() == fedledger_proto::TaskState::Train && task.header.round == round {
                    anyhow::ensure!(task.params.len() == params);
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
        let deltas: Vec<Vec<f32>> = (0..SITES)
            .map(|s| {
                (0..params)
                    .map(|i| (((i + s * 7 + round as usize) % 1000) as f32) * 1e-4)
                    .collect()
            })
            .collect();
        // Hashed as the agents hash them, when they record them, before sending.
        let shas: Vec<String> = deltas
            .iter()
            .map(|d| fedledger_model::digest::vector_sha256(d))
            .collect();
        // The baseline, measured while the round waits for its uploads (after its close, the
        // valuation would share the cores with it).
        let bytes = Arc::new(fedledger_model::digest::vector_to_bytes(&deltas[0]));
        writes.push(durable_writes(&scratch, &bytes, SITES).await?);
        drop(bytes);
        let cpu = cpu_secs(std::process::id())?;
        let t = Instant::now();
        let mut handles = Vec::new();
        for ((mut c, delta), sha) in clients.drain(..).zip(deltas.iter().cloned()).zip(shas) {
            handles.push(tokio::spawn(async move {
                let r = c
                    .submit_digested(round, 100, &delta, sha, &PrivacyObject::none())
                    .await
                    .map(|_| ());
                (c, r)
            }));
        }
        for h in handles {
            let (c, r) = h.await?;
            r?;
            clients.push(c);
        }
        uploads.push(t.elapsed().as_secs_f64());
        cpus.push(cpu_secs(std::process::id())? - cpu);
    }
    running.wait_done().await;
    running.shutdown().await?;
    let (u, w, cpu) = (median(&mut uploads), median(&mut writes), median(&mut cpus));
    println!(
        "{SITES} concurrent uploads of 16M params (plaintext), median of {ROUNDS} rounds: {:.1} ms for all (CPU time of coordinator and clients {:.2} s); {SITES} durable writes of the same size at once {:.1} ms; ratio {:.2}x",
        u * 1e3,
        cpu,
        w * 1e3,
        u / w
    );
    Ok(())
}

fn tls_section(certs: &Path) -> fedledger_coordinator::config::TlsSection {
    fedledger_coordinator::config::TlsSection {
        cert: certs.join("server.pem"),
        key: certs.join("server.key"),
    }
}

/// How the simulated hospitals reach `running`: https://localhost trusting the CA in `tls`, or
/// plaintext on loopback.
fn link_to(running: &fedledger_coordinator::Running, tls: Option<&Path>) -> anyhow::Result<Link> {
    Ok(match tls {
        Some(certs) => Link::new(
            &format!("https://localhost:{}", running.addr.port()),
            &LinkSettings {
                trust: Trust::Ca(certs.join("ca.pem")),
                ..Default::default()
            },
        )?,
        None => Link::new(
            &format!("http://{}", running.addr),
            &LinkSettings::default(),
        )?,
    })
}

/// Round overhead of five agents that do no training; returns (median, p90) in seconds.
async fn overhead(
    label: &str,
    limits: LimitsSection,
    tls: Option<&Path>,
) -> anyhow::Result<(f64, f64)> {
    const ROUNDS: u64 = 20;
    let dir = tempfile::tempdir()?;
    let ZeroSites {
        validation: vpath,
        entries,
        configs: pcfgs,
    } = zero_sites(dir.path(), 5, 10)?;
    let cfg = ConfigFile {
        federation: "bench-overhead".into(),
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
            total: ROUNDS,
            quorum: 5,
            deadline_secs: 60,
            grace_secs: 60,
        },
        training: TrainingSection::default(),
        aggregation: Default::default(),
        limits,
        valuation: Default::default(),
        rewards: Default::default(),
        privacy: Default::default(),
        ledger: Default::default(),
        tls: tls.map(tls_section),
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
    let mut watch = running.coordinator.subscribe();
    let url = link_to(&running, tls)?.url().to_owned();
    let agents: Vec<_> = pcfgs
        .into_iter()
        .map(|mut p| {
            p.coordinator = url.clone();
            p.tls = tls.map(|certs| fedledger_participant::config::TlsSection {
                ca: Some(certs.join("ca.pem")),
                ..Default::default()
            });
            spawn_zero_agent(p)
        })
        .collect();
    let mut opened: Option<(u64, Instant)> = None;
    let mut times = Vec::new();
    loop {
        let p = *watch.borrow_and_update();
        let now = Instant::now();
        // A round's close and the next round's opening arrive in one update: first account
        // for the round that closed, then start timing the one that opened.
        if let Some((r, t)) = opened
            && p.completed >= r
        {
            times.push(now.duration_since(t).as_secs_f64());
            opened = None;
        }
        if p.phase == Phase::Open && p.completed < p.round && opened.is_none() {
            opened = Some((p.round, now));
        }
        if p.phase == Phase::Done {
            break;
        }
        watch.changed().await?;
    }
    for a in agents {
        a.await??;
    }
    let close: Vec<f64> = running
        .coordinator
        .store()
        .outcomes()?
        .iter()
        .map(|o| o.close_micros as f64 / 1e3)
        .collect();
    running.shutdown().await?;
    let n = times.len();
    let (med_s, p90_s) = (median(&mut times), percentile(&mut times, 0.9));
    let (med, p90) = (med_s * 1e3, p90_s * 1e3);
    let mut close = close;
    println!(
        "round overhead, {label}, 5 participants, no training, {n} rounds: median {med:.1} ms, p90 {p90:.1} ms (of which closing: aggregate + evaluate + exact Shapley, median {:.2} ms); goal < 50 ms",
        median(&mut close)
    );
    Ok((med_s, p90_s))
}
