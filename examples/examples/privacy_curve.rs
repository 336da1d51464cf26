//! The privacy-utility curve: test accuracy of the final model against the per-hospital epsilon,
//! for the DP-SGD settings before and after hospitals planned for themselves, in one run, over
//! several seeds, on both built-in data sets; each point is a whole federation on loopback (the
//! `hospitals` example's code). Prints the table and writes `curve.svg` and `curve.json`.
//!
//! ```text
//! cargo run --release --example privacy_curve
//! cargo run --release --example privacy_curve -- --data digits --epsilons 8 --seeds 3
//! ```

use std::{path::PathBuf, time::Instant};

use anyhow::Context;
use clap::Parser;
use fedledger_examples::{
    curve::{Point, Setting, plot_svg, table, write_json},
    run::{Options, run_federation},
};

/// Measure test accuracy against epsilon for the DP-SGD settings, over seeds.
#[derive(Parser, Debug)]
#[command(about, long_about = None)]
struct Args {
    /// Data sets (built-in names), comma-separated.
    #[arg(long, default_value = "breast_cancer,digits", value_delimiter = ',')]
    data: Vec<String>,
    /// Per-hospital epsilons, comma-separated (delta 1e-5).
    #[arg(long, default_value = "1,2,4,8", value_delimiter = ',')]
    epsilons: Vec<f64>,
    /// Seeds first..first+N-1 (each changes the split and the initial model).
    #[arg(long, default_value_t = 5)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 1)]
    first_seed: u64,
    /// Settings to run, comma-separated.
    #[arg(
        long,
        value_enum,
        default_values_t = [Setting::Shared, Setting::Planned, Setting::PlannedRandomEffects, Setting::NoDp],
        value_delimiter = ','
    )]
    settings: Vec<Setting>,
    /// Rounds of every federation.
    #[arg(long, default_value_t = 20)]
    rounds: u64,
    /// Output folder (the federations' files go under it, then are removed).
    #[arg(long, default_value = "target/privacy-curve")]
    out: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    fedledger_logging::init_with(fedledger_logging::LogFormat::Text, "error");
    let rt = tokio::runtime::Runtime::new().context("start the async runtime")?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    std::fs::create_dir_all(&args.out).with_context(|| format!("create {}", args.out.display()))?;
    let work = args.out.join("federation");
    let mut points = Vec::new();
    let mut unverified = Vec::new();
    for data in &args.data {
        let mut runs: Vec<(Setting, Option<f64>)> = Vec::new();
        for &e in &args.epsilons {
            for &s in args.settings.iter().filter(|s| **s != Setting::NoDp) {
                runs.push((s, Some(e)));
            }
        }
        if args.settings.contains(&Setting::NoDp) {
            runs.push((Setting::NoDp, None));
        }
        for (setting, epsilon) in runs {
            let mut point = Point {
                data: data.clone(),
                setting,
                epsilon,
                seeds: Vec::new(),
                accuracies: Vec::new(),
            };
            for seed in args.first_seed..args.first_seed + args.seeds {
                let mut argv: Vec<String> = vec![
                    "hospitals".into(),
                    "--data".into(),
                    data.clone(),
                    "--rounds".into(),
                    args.rounds.to_string(),
                    "--seed".into(),
                    seed.to_string(),
                    "--out".into(),
                    work.display().to_string(),
                ];
                argv.extend(setting.args(epsilon.unwrap_or(0.0)));
                let opts = Options::try_parse_from(&argv).context("hospitals options")?;
                let t = Instant::now();
                let fed = run_federation(&opts).await.with_context(|| {
                    format!(
                        "{data}, {}, epsilon {epsilon:?}, seed {seed}",
                        setting.as_str()
                    )
                })?;
                let declined: usize = fed.outcomes.iter().map(|o| o.declined.len()).sum();
                eprintln!(
                    "{data:<13} {:<8} epsilon {:>5} seed {seed}: accuracy {:.4} ({} rounds, {declined} declines, ledger {}, {:.1} s)",
                    setting.as_str(),
                    epsilon.map_or_else(|| "-".to_owned(), |e| e.to_string()),
                    fed.final_metrics.accuracy,
                    fed.outcomes.len(),
                    if fed.ledger.verify_ok {
                        "verifies"
                    } else {
                        "does NOT verify"
                    },
                    t.elapsed().as_secs_f64()
                );
                if !fed.ledger.verify_ok {
                    // Reported, not fatal: the curve is about accuracy.
                    for line in fed
                        .ledger
                        .verify_text
                        .lines()
                        .filter(|l| !l.starts_with("ok"))
                    {
                        eprintln!("    {line}");
                    }
                    unverified.push(format!(
                        "{data} {} {epsilon:?} seed {seed}",
                        setting.as_str()
                    ));
                }
                point.seeds.push(seed);
                point.accuracies.push(fed.final_metrics.accuracy);
            }
            points.push(point);
        }
    }
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("remove {}", work.display()))?;
    }
    println!(
        "\nfedledger privacy-utility curve: {} rounds, five hospitals, seeds {}..={}, test accuracy of the final model\n",
        args.rounds,
        args.first_seed,
        args.first_seed + args.seeds - 1
    );
    for s in [
        Setting::Shared,
        Setting::Planned,
        Setting::PlannedRandomEffects,
        Setting::NoDp,
    ] {
        println!("  {:<8} {}", s.as_str(), s.describe());
    }
    println!("\n{}", table(&points));
    if !unverified.is_empty() {
        println!(
            "ledgers that did not verify ({}): {}\n",
            unverified.len(),
            unverified.join("; ")
        );
    }
    let svg = args.out.join("curve.svg");
    plot_svg(&points, &svg)?;
    let json = args.out.join("curve.json");
    write_json(&points, &json)?;
    println!(
        "wrote {} and {} ({:.0} s in all)",
        svg.display(),
        json.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
