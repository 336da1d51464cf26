//! Reward shares over several runs of the `hospitals` example: reads their `summary.json` files
//! and prints, per hospital, its share of all rewards (mean over runs, and the range), its mean
//! reward, accumulated value (counted rounds, with its standard error) and total value, then
//! whether the order of rewards follows the order of accumulated values (and of total values)
//! among the hospitals named by `--compare`, run by run.
//!
//! ```text
//! for s in 1 2 3 4 5; do
//!   cargo run --release --example hospitals -- --scenario examples/scenarios/valuation-8.toml \
//!     --seed $s --out target/rewards/valuation-8-seed-$s
//! done
//! cargo run --release --example reward_shares -- --compare A,B,C target/rewards/valuation-8-seed-*/summary.json
//! ```

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use serde_json::Value;

/// Aggregate the rewards of several `hospitals` runs.
#[derive(Parser, Debug)]
#[command(about, long_about = None)]
struct Args {
    /// `summary.json` files written by the `hospitals` example.
    #[arg(required = true)]
    summaries: Vec<PathBuf>,
    /// Hospitals whose order of rewards is compared with their order of accumulated and total
    /// values (default: all).
    #[arg(long, value_delimiter = ',')]
    compare: Vec<String>,
}

struct Line {
    name: String,
    reward: f64,
    accumulated: f64,
    se: f64,
    value: f64,
}

fn lines(summary: &Value) -> anyhow::Result<Vec<Line>> {
    let ps = summary["participants"]
        .as_array()
        .context("no participants array")?;
    ps.iter()
        .map(|p| {
            Ok(Line {
                name: p["name"].as_str().context("name")?.to_owned(),
                reward: p["reward_total"].as_f64().context("reward_total")?,
                accumulated: p["accumulated_value"].as_f64().unwrap_or(0.0),
                se: p["accumulated_se"].as_f64().unwrap_or(0.0),
                value: p["value_total"].as_f64().context("value_total")?,
            })
        })
        .collect()
}

/// Names sorted by `key` descending (ties by name).
fn order(ls: &[&Line], key: impl Fn(&Line) -> f64) -> Vec<String> {
    let mut v: Vec<&&Line> = ls.iter().collect();
    v.sort_by(|a, b| key(b).total_cmp(&key(a)).then(a.name.cmp(&b.name)));
    v.iter().map(|l| l.name.clone()).collect()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut runs = Vec::new();
    for path in &args.summaries {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let v: Value =
            serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
        let seed = v["seed"].as_u64().unwrap_or(0);
        let verify = v["ledger"]["verify_ok"].as_bool().unwrap_or(false);
        runs.push((path.clone(), seed, verify, lines(&v)?));
    }
    let names: Vec<String> = runs[0].3.iter().map(|l| l.name.clone()).collect();
    println!(
        "{} run(s): seeds {:?}; ledger verifies in {} of them",
        runs.len(),
        runs.iter().map(|r| r.1).collect::<Vec<_>>(),
        runs.iter().filter(|r| r.2).count()
    );
    println!(
        "\nhospital  share mean  share min..max      reward mean  accumulated mean (s.e.)  value mean"
    );
    let n = runs.len() as f64;
    for name in &names {
        let mut shares = Vec::new();
        let (mut reward, mut acc, mut se, mut value) = (0.0, 0.0, 0.0, 0.0);
        for (_, _, _, ls) in &runs {
            let total: f64 = ls.iter().map(|l| l.reward).sum();
            let Some(l) = ls.iter().find(|l| &l.name == name) else {
                continue;
            };
            shares.push(if total > 0.0 { l.reward / total } else { 0.0 });
            reward += l.reward / n;
            acc += l.accumulated / n;
            se += l.se / n;
            value += l.value / n;
        }
        let mean = shares.iter().sum::<f64>() / n;
        let min = shares.iter().copied().fold(f64::INFINITY, f64::min);
        let max = shares.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        println!(
            "{name:<8}  {:>9.3}%  {:>6.3}%..{:>6.3}%  {reward:>12.0}  {acc:>+10.5} ({se:.5})     {value:>+10.5}",
            100.0 * mean,
            100.0 * min,
            100.0 * max,
        );
    }
    let compare: Vec<String> = if args.compare.is_empty() {
        names.clone()
    } else {
        args.compare.clone()
    };
    println!("\norder among {}:", compare.join(", "));
    for (path, seed, _, ls) in &runs {
        let picked: Vec<&Line> = ls.iter().filter(|l| compare.contains(&l.name)).collect();
        let by_reward = order(&picked, |l| l.reward);
        let by_acc = order(&picked, |l| l.accumulated);
        let by_value = order(&picked, |l| l.value);
        println!(
            "  seed {seed}: rewards {by_reward:?}, accumulated values {by_acc:?} ({}), total values {by_value:?} ({})  [{}]",
            if by_reward == by_acc {
                "same"
            } else {
                "DIFFERENT"
            },
            if by_reward == by_value {
                "same"
            } else {
                "DIFFERENT"
            },
            path.display()
        );
    }
    Ok(())
}
