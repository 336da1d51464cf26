//! Many sites per coordinator: round time with no training for N participants (10, 100 and
//! 1,000 by default), with the coordinator's CPU time, its peak anonymous memory and what the
//! valuation took.
//!
//! The coordinator runs in a child process (this binary again, with `--serve`), so its CPU time
//! (`/proc/<pid>/stat`) and anonymous memory (`RssAnon` in `/proc/<pid>/status`, sampled every
//! 20 ms) are its own; the N participant agents run in this process, each a real agent over
//! loopback gRPC with its own state directory, with no training, so the figures are the
//! system's cost alone. By default each site sends a small update of its own (`--updates
//! distinct`: values in [-0.001, 0.001] drawn from the site and the round), so every update is
//! stored and every site is a player of the valuation game, as in a real federation.
//! `--updates zero` sends the same zero update from every site, as this benchmark did first:
//! the coordinator then stores one copy only and every site is a null player (the valuation
//! makes no evaluation), which flatters the figures. The close time is aggregate + evaluate +
//! valuation (ledger batch excluded); the round time runs from the round's opening to its
//! close, and includes the agents' own work, which shares this machine's cores.
//!
//! ```text
//! cargo run --release --example bench_sites                         # 10, 100, 1000 sites
//! cargo run --release --example bench_sites -- --sites 10,100 --rounds 3
//! cargo run --release --example bench_sites -- --sites 5 --rounds 2 --hidden 500000  # 16.5M
//! cargo run --release --example bench_sites -- --updates zero       # identical zero updates
//! cargo run --release --example bench_sites -- --sites 5 --hidden 500000 --strategy multi-krum
//! cargo run --release --example bench_sites -- --sites 100 --hidden 32000 --stream-window-kib 512
//! ```

use fedledger_examples::bench::{cpu_secs, median};
use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::Parser;
use fedledger_examples::bench::{ZeroSites, spawn_distinct_agent, spawn_zero_agent, zero_sites};

#[derive(Parser, Debug)]
struct Args {
    /// Participant counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
    sites: Vec<usize>,
    /// Rounds per federation.
    #[arg(long, default_value_t = 5)]
    rounds: u64,
    /// What the sites send: `distinct` (a small update of each site's own) or `zero` (the
    /// same zero update from every site).
    #[arg(long, value_enum, default_value_t = Updates::Distinct)]
    updates: Updates,
    /// Where the agents keep their state (a folder per site; a temporary folder is made
    /// inside). By default it is beside the coordinator's, on the same disk; `/dev/shm` keeps
    /// the agents' own fsyncs off the disk the coordinator writes to, as separate machines'
    /// disks would be (their CPU still shares this machine's cores).
    #[arg(long)]
    agents_dir: Option<PathBuf>,
    /// A wide model instead of the logistic regression: an MLP 30-[HIDDEN]-2, about 33 x
    /// HIDDEN parameters (`--hidden 500000`: 16.5M, 66 MB), to measure what the coordinator
    /// holds at the close of a large model's round (peak RssAnon against the model's size).
    #[arg(long)]
    hidden: Option<usize>,
    /// Write every memory sample (milliseconds since the Unix epoch, RssAnon in KiB) and
    /// each round's opening and close times to this file, to see where the memory goes.
    #[arg(long)]
    memory_trace: Option<PathBuf>,
    /// The aggregation strategy (`[aggregation] strategy`; multi-krum and bulyan assume one
    /// attacker and compare the sites' update histories, as by default).
    #[arg(long, default_value = "fedavg")]
    strategy: String,
    /// The coordinator's HTTP/2 window per call, in KiB (`[limits] stream_window_kib`; the
    /// connection's is twice that). By default the coordinator sizes them itself (twice the
    /// update shared among the sites, 1 to 8 MiB): a window per upload in flight is what unread
    /// data it may hold, so a lower one bounds its memory during the upload fan-out at the
    /// cost of each upload's speed over long round trips.
    #[arg(long)]
    stream_window_kib: Option<u32>,
    /// Internal: run the coordinator of this configuration file (the child process).
    #[arg(long, hide = true)]
    serve: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Updates {
    Distinct,
    Zero,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Runtime::new()?;
    if let Some(config) = &args.serve {
        return rt.block_on(serve(config));
    }
    println!(
        "updates: {:?}; agents' state in {}",
        args.updates,
        args.agents_dir
            .as_deref()
            .map_or("the coordinator's temporary folder".into(), |d| d
                .display()
                .to_string())
    );
    println!(
        "sites  rounds  round median / max    close median   valuation evals/round  \
         coordinator CPU (per round)  peak RssAnon"
    );
    for &n in &args.sites {
        rt.block_on(sites(n, &args))
            .with_context(|| format!("{n} sites"))?;
    }
    Ok(())
}

/// The child: serve the federation, print its address, then (once done) one line per round.
async fn serve(config: &Path) -> anyhow::Result<()> {
    let cfg = fedledger_coordinator::ConfigFile::load(config)?.validate()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let running = fedledger_coordinator::serve(cfg, Some(listener)).await?;
    println!("ADDR {}", running.addr);
    std::io::stdout().flush()?;
    running.wait_done().await;
    for o in running.coordinator.store().outcomes()? {
        println!(
            "ROUND {} {} {} {} {} {} {}",
            o.round,
            o.closed_at_ms.saturating_sub(o.opened_at_ms),
            o.close_micros,
            o.valuation.as_ref().map_or(0, |v| v.evaluations),
            o.contributions.len(),
            o.closed_at_ms,
            o.opened_at_ms
        );
    }
    println!("DONE");
    std::io::stdout().flush()?;
    // Wait for the parent to read the CPU time, then exit (stdin closes).
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    running.shutdown().await?;
    Ok(())
}

fn write_config(dir: &Path, n: usize, keys_hex: &[String], args: &Args) -> anyhow::Result<PathBuf> {
    let (rounds, strategy) = (args.rounds, &args.strategy);
    // The connection's window is left unset: the coordinator makes it twice the call's.
    let windows = args
        .stream_window_kib
        .map_or(String::new(), |w| format!("stream_window_kib = {w}\n"));
    let model = match args.hidden {
        Some(h) => format!("kind = \"mlp\"\nfeatures = 30\nclasses = 2\nhidden = [{h}]"),
        None => "kind = \"logreg\"\nfeatures = 30\nclasses = 2".to_owned(),
    };
    let mut enrolled = String::new();
    for (i, k) in keys_hex.iter().enumerate() {
        enrolled.push_str(&format!(
            "[[participant]]\nname = \"h{i}\"\npublic_key = \"{k}\"\n\n"
        ));
    }
    let path = dir.join("coordinator.toml");
    std::fs::write(
        &path,
        format!(
            "federation = \"bench-sites-{n}\"\nlisten = \"127.0.0.1:0\"\nstate_dir = \"state\"\n\n\
             [model]\n{model}\n\n\
             [data]\nlabel_column = \"malignant\"\nvalidation = \"validation.csv\"\n\
             standardisation = \"reference\"\n\n\
             [rounds]\ntotal = {rounds}\nquorum = {n}\ndeadline_secs = 600\n\n\
             [aggregation]\nstrategy = \"{strategy}\"\nbyzantine = 1\n\n\
             [training]\nlocal_epochs = 1\nbatch_size = 16\nlearning_rate = 0.1\n\
             clip_norm = 1.0\nnoise_multiplier = 1.0\ninit_seed = 1\n\n\
             [valuation]\nestimator = \"auto\"\nmax_evaluations = 0\nutility = \"neg_log_loss\"\n\
             reward_pool_per_round = 1000000\nseed = 0\ncopy_cosine = 0.999\n\n\
             [limits]\nmax_connections_per_ip = {}\nmax_connections = {}\n{windows}\n{enrolled}",
            2 * n + 16,
            2 * n + 64
        ),
    )?;
    Ok(path)
}

/// Anonymous resident memory of `pid`, in KiB.
fn rss_anon_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Milliseconds since the Unix epoch (the records' clock).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn sites(n: usize, args: &Args) -> anyhow::Result<()> {
    let (rounds, updates, hidden) = (args.rounds, args.updates, args.hidden);
    let (agents_dir, memory_trace) = (args.agents_dir.as_deref(), args.memory_trace.as_deref());
    let dir = tempfile::tempdir()?;
    let agents = agents_dir.map(tempfile::tempdir_in).transpose()?;
    let ZeroSites {
        entries,
        configs: pcfgs,
        ..
    } = zero_sites(dir.path(), n, 60)?;
    let keys_hex: Vec<String> = entries.into_iter().map(|e| e.public_key).collect();
    let config = write_config(dir.path(), n, &keys_hex, args)?;
    let mut child: Child = Command::new(std::env::current_exe()?)
        .arg("--serve")
        .arg(&config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("start the coordinator process")?;
    let pid = child.id();
    let mut out = BufReader::new(child.stdout.take().context("child stdout")?);
    let mut line = String::new();
    out.read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix("ADDR ")
        .with_context(|| format!("the coordinator printed {line:?}"))?
        .to_owned();
    // Peak anonymous memory, sampled; the samples are kept with their time, so the peak
    // during the closes can be told from the peak while updates arrive.
    let peak = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if let Some(k) = rss_anon_kib(pid) {
                    peak.fetch_max(k, Ordering::Relaxed);
                    samples.push((unix_ms(), k));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            samples
        })
    };
    let started = Instant::now();
    let own_cpu_before = cpu_secs(std::process::id())?;
    let agents: Vec<_> = pcfgs
        .into_iter()
        .enumerate()
        .map(|(site, mut p)| {
            p.coordinator = format!("http://{addr}");
            if let Some(a) = &agents {
                p.state_dir = a.path().join(format!("h{site}"));
            }
            match updates {
                Updates::Distinct => spawn_distinct_agent(p, site as u64),
                Updates::Zero => spawn_zero_agent(p),
            }
        })
        .collect();
    for a in agents {
        a.await??;
    }
    let wall = started.elapsed();
    // This process's CPU while the agents ran: theirs (registration included).
    let agents_cpu = cpu_secs(std::process::id())? - own_cpu_before;
    // The child's round lines, then DONE.
    let mut per_round = Vec::new();
    loop {
        line.clear();
        if out.read_line(&mut line)? == 0 {
            anyhow::bail!("the coordinator exited before DONE");
        }
        let l = line.trim();
        if l == "DONE" {
            break;
        }
        if let Some(rest) = l.strip_prefix("ROUND ") {
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()?;
            per_round.push(f);
        }
    }
    let cpu = cpu_secs(pid)?;
    stop.store(true, Ordering::Relaxed);
    let samples = sampler
        .join()
        .map_err(|_| anyhow::anyhow!("the memory sampler panicked"))?;
    // A close runs from the moment the round stopped taking updates to the next round's
    // opening (the last round's: its close time, plus a second for its records).
    let closes: Vec<(u64, u64)> = per_round
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let end = per_round
                .get(i + 1)
                .map_or(f[5] + f[2] / 1000 + 1000, |next| next[6]);
            (f[5], end)
        })
        .collect();
    if let Some(path) = memory_trace {
        let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
        for r in &per_round {
            writeln!(f, "# round {} opened {} closing {}", r[0], r[6], r[5])?;
        }
        for (t, k) in &samples {
            writeln!(f, "{t} {k}")?;
        }
    }
    let (mut in_close, mut outside) = (0u64, 0u64);
    for &(t, k) in &samples {
        if closes.iter().any(|&(a, b)| (a..=b).contains(&t)) {
            in_close = in_close.max(k);
        } else {
            outside = outside.max(k);
        }
    }
    drop(child.stdin.take());
    child.wait()?;
    anyhow::ensure!(
        per_round.len() as u64 == rounds && per_round.iter().all(|f| f[4] as usize == n),
        "expected {rounds} rounds of {n} contributions each, got {per_round:?}"
    );
    let mut dur: Vec<f64> = per_round.iter().map(|f| f[1] as f64).collect();
    let max = dur.iter().copied().fold(0.0, f64::max);
    let mut close: Vec<f64> = per_round.iter().map(|f| f[2] as f64 / 1e3).collect();
    let evals = per_round.iter().map(|f| f[3]).sum::<u64>() / rounds.max(1);
    println!(
        "{n:>5}  {rounds:>6}  {:>8.1} / {max:>8.1} ms  {:>9.1} ms   {evals:>21}  {cpu:>8.2} s ({:>7.3} s)    {:>7.1} MiB   (whole run {:.1} s, agents' CPU {agents_cpu:.2} s)",
        median(&mut dur),
        median(&mut close),
        cpu / rounds as f64,
        peak.load(Ordering::Relaxed) as f64 / 1024.0,
        wall.as_secs_f64()
    );
    println!(
        "       peak RssAnon during the closes {:.1} MiB, outside them {:.1} MiB",
        in_close as f64 / 1024.0,
        outside as f64 / 1024.0
    );
    if let Some(h) = hidden {
        let params = 30 * h + h + 2 * h + 2;
        let model_mib = params as f64 * 4.0 / (1 << 20) as f64;
        println!(
            "       model {params} parameters = {model_mib:.1} MiB; peak RssAnon / model = {:.2} \
             (target 3); 3 x model + 1 MiB per site = {:.1} MiB",
            peak.load(Ordering::Relaxed) as f64 / 1024.0 / model_mib,
            3.0 * model_mib + n as f64
        );
    }
    Ok(())
}
