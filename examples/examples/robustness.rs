//! Byzantine robustness, measured: eight hospitals of which two attack (sign-flipped updates
//! scaled to the honest mean norm, "a little is enough", or all labels flipped), aggregated by
//! FedAvg, coordinate-wise median, trimmed mean and Multi-Krum, against the clean run (FedAvg of
//! the six honest hospitals alone), on breast cancer and digits, over several seeds. Prints the
//! mean final test accuracy (and its spread) of each cell.
//!
//! ```text
//! cargo run --release --example robustness                       # both data sets, 5 seeds
//! cargo run --release --example robustness -- --data digits --seeds 2 --no-dp
//! ```

use std::{collections::BTreeMap, path::PathBuf};

use anyhow::Context;
use clap::Parser;
use fedledger_examples::run::{Options, run_federation};

#[derive(Parser, Debug)]
struct Args {
    /// Data sets (breast_cancer, digits).
    #[arg(long, value_delimiter = ',', default_value = "breast_cancer,digits")]
    data: Vec<String>,
    /// Seeds per cell.
    #[arg(long, default_value_t = 5)]
    seeds: u64,
    /// Rounds per federation.
    #[arg(long, default_value_t = 20)]
    rounds: u64,
    /// Attacks (sign-flip, alie, label-flip).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "sign-flip,alie,label-flip"
    )]
    attacks: Vec<String>,
    /// Strategies.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "fedavg,median,trimmed-mean,multi-krum"
    )]
    strategies: Vec<String>,
    /// Without DP-SGD.
    #[arg(long)]
    no_dp: bool,
    /// The weight of each hospital's earlier updates in what multi-krum and bulyan compare
    /// (0: this round's updates alone, the classic rules).
    #[arg(long, default_value_t = 0.9)]
    history: f64,
    /// Work folder.
    #[arg(long, default_value = "target/robustness")]
    out: PathBuf,
}

/// Rows each hospital draws: an eighth of the training pool (65% of the data set).
fn rows_per_hospital(data: &str) -> usize {
    let total = match data {
        "digits" => 1797,
        _ => 569,
    };
    total * 65 / 100 / 8
}

/// A scenario of six honest hospitals plus two of `attack` (none: the clean run).
fn scenario(rows: usize, attack: Option<&str>) -> String {
    let mut s = String::new();
    for i in 0..6 {
        s.push_str(&format!("[[hospital]]\nname = \"H{i}\"\nrows = {rows}\n\n"));
    }
    for i in 0..2 {
        match attack {
            None => {}
            Some("label-flip") => s.push_str(&format!(
                "[[hospital]]\nname = \"X{i}\"\nrows = {rows}\nlabel_noise = 1.0\n\n"
            )),
            Some(a) => s.push_str(&format!(
                "[[hospital]]\nname = \"X{i}\"\nrows = {rows}\nbehaviour = \"{a}\"\n\n"
            )),
        }
    }
    s
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let sd = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0).max(1.0)).sqrt();
    (m, sd)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("error"))
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Runtime::new().context("start the async runtime")?;
    std::fs::create_dir_all(&args.out)?;
    let mut results: BTreeMap<(String, String, String), Vec<f64>> = BTreeMap::new();
    for data in &args.data {
        let rows = rows_per_hospital(data);
        let mut cells: Vec<(String, String)> = vec![("clean".into(), "fedavg".into())];
        for a in &args.attacks {
            for s in &args.strategies {
                cells.push((a.clone(), s.clone()));
            }
        }
        for (attack, strategy) in &cells {
            let file = args.out.join(format!("{data}-{attack}.toml"));
            let a = (attack != "clean").then_some(attack.as_str());
            std::fs::write(&file, scenario(rows, a))?;
            for seed in 0..args.seeds {
                let out = args.out.join(format!("{data}-{attack}-{strategy}-{seed}"));
                let mut argv = vec![
                    "hospitals".to_owned(),
                    "--data".into(),
                    data.clone(),
                    "--scenario".into(),
                    file.display().to_string(),
                    "--strategy".into(),
                    strategy.clone(),
                    "--byzantine".into(),
                    "2".into(),
                    "--history".into(),
                    args.history.to_string(),
                    "--rounds".into(),
                    args.rounds.to_string(),
                    "--seed".into(),
                    (42 + seed).to_string(),
                    "--out".into(),
                    out.display().to_string(),
                ];
                if args.no_dp {
                    argv.push("--no-dp".into());
                }
                let opts = Options::try_parse_from(&argv)?;
                let run = rt
                    .block_on(run_federation(&opts))
                    .with_context(|| format!("{data} {attack} {strategy} seed {seed}"))?;
                let acc = run.final_metrics.accuracy;
                eprintln!("{data:14} {attack:11} {strategy:13} seed {seed}: {acc:.4}");
                results
                    .entry((data.clone(), attack.clone(), strategy.clone()))
                    .or_default()
                    .push(acc);
                let _ = std::fs::remove_dir_all(&out);
            }
        }
    }
    println!(
        "\nfinal test accuracy, mean (sd) over {} seeds, {} rounds, {}:",
        args.seeds,
        args.rounds,
        if args.no_dp {
            "no DP"
        } else {
            "DP-SGD at epsilon 8"
        }
    );
    println!(
        "{:14} {:11} {:13} {:>8} {:>8} {:>10}",
        "data", "attack", "strategy", "accuracy", "sd", "vs clean"
    );
    for ((data, attack, strategy), accs) in &results {
        let (m, sd) = mean_sd(accs);
        let clean = results
            .get(&(data.clone(), "clean".into(), "fedavg".into()))
            .map(|c| mean_sd(c).0)
            .unwrap_or(f64::NAN);
        println!(
            "{data:14} {attack:11} {strategy:13} {m:8.4} {sd:8.4} {:+10.4}",
            m - clean
        );
    }
    Ok(())
}
