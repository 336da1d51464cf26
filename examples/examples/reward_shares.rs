//! Reward shares over several runs of the `hospitals` example: reads their `summary.json` files
//! and prints, per hospital, its share of all rewards (mean over runs, and the range), its mean
//! reward, accumulated value (with its standard error) and total value, then whether the order
//! of rewards follows the order of accumulated values (and of total values) among the
//! hospitals named by `--compare`, run by run. With `--settle`, each run is also settled again
//! from the integers it recorded under each rule named (`impact`, `cumulative`, `settled`, or
//! `impact-harm`: only the negative values of a round that made the model worse counted, no
//! recorded rule),
//! and the same tables are printed for each: every rule compared on the same runs.
//!
//! ```text
//! for s in 1 2 3 4 5; do
//!   cargo run --release --example hospitals -- --scenario examples/scenarios/valuation-8.toml \
//!     --seed $s --out target/rewards/valuation-8-seed-$s
//! done
//! cargo run --release --example reward_shares -- --compare A,B,C --settle cumulative \
//!   target/rewards/valuation-8-seed-*/summary.json
//! ```

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use fedledger_valuation::{
    NonImproving, RoundValues, SettlementRule, ValueEntry, settle, settle_accumulated,
};
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
    /// Also settle every run again under these rules: impact, cumulative, settled, impact-harm.
    #[arg(long, value_delimiter = ',')]
    settle: Vec<String>,
}

#[derive(Clone)]
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

/// One run: its file, seed, whether its ledger verified, its lines.
type Run = (PathBuf, u64, bool, Vec<Line>);

/// One recorded line: name, key, value, s.e., eligible.
type RecordedLine = (String, String, i64, u64, bool);

/// The recorded rounds of a summary: round, completed, gain, lines.
struct Recorded {
    rounds: Vec<(u64, bool, i64, Vec<RecordedLine>)>,
}

fn recorded(summary: &Value) -> anyhow::Result<Recorded> {
    let rounds = summary["rounds"].as_array().context("no rounds array")?;
    let rounds = rounds
        .iter()
        .map(|r| {
            let completed = r["status"].as_str() == Some("completed");
            let rec = &r["recorded"];
            let lines = rec["lines"]
                .as_array()
                .context("no recorded lines (a summary written before they were)")?
                .iter()
                .map(|l| {
                    Ok((
                        l["name"].as_str().context("name")?.to_owned(),
                        l["key"].as_str().context("key")?.to_owned(),
                        // As recorded: an abandoned round's values are 0.
                        if completed {
                            l["value_nano"].as_i64().context("value_nano")?
                        } else {
                            0
                        },
                        if completed {
                            l["se_nano"].as_u64().context("se_nano")?
                        } else {
                            0
                        },
                        l["eligible"].as_bool().context("eligible")?,
                    ))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            Ok((
                r["round"].as_u64().context("round")?,
                completed,
                rec["gain_nano"].as_i64().context("gain_nano")?,
                lines,
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Recorded { rounds })
}

/// Each hospital's total payout and last accumulated value (and s.e.) when every period of
/// the run is settled under `rule` (`None`: each period on its own).
fn resettle(
    rec: &Recorded,
    params: &SettlementRule,
    rule: Option<NonImproving>,
    lines: &[Line],
) -> Vec<Line> {
    use std::collections::BTreeMap;
    let values: Vec<RoundValues<'_>> = rec
        .rounds
        .iter()
        .map(|(round, completed, gain, ls)| RoundValues {
            round: *round,
            completed: *completed,
            gain_nano: *gain,
            entries: ls
                .iter()
                .map(|(_, key, v, se, eligible)| ValueEntry {
                    participant_key_hex: key,
                    value_nano: *v,
                    se_nano: *se,
                    eligible: *eligible,
                })
                .collect(),
        })
        .collect();
    let name_of: BTreeMap<&str, &str> = rec
        .rounds
        .iter()
        .flat_map(|r| r.3.iter().map(|l| (l.1.as_str(), l.0.as_str())))
        .collect();
    let total = values.len() as u64;
    let mut paid: BTreeMap<&str, u64> = BTreeMap::new();
    let mut acc: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for end in (1..=total).filter(|&r| params.ends_period(r, total)) {
        let first = params.first_round(params.period_of(end));
        let history = &values[..end as usize];
        let s = match rule {
            Some(n) => settle_accumulated(params, history, first, &paid, n),
            None => settle(params, history, first),
        };
        for p in &s.participants {
            let (key, name) = name_of
                .get_key_value(p.participant_key_hex.as_str())
                .map_or(("", ""), |(k, n)| (*k, *n));
            *paid.entry(key).or_insert(0) += p.payout;
            let v = (p.value_nano as f64 * 1e-9, p.se_nano as f64 * 1e-9);
            let a = acc.entry(name).or_insert((0.0, 0.0));
            if rule.is_some() {
                *a = v;
            } else {
                *a = (a.0 + v.0, (a.1 * a.1 + v.1 * v.1).sqrt());
            }
        }
    }
    lines
        .iter()
        .map(|l| {
            let key = name_of
                .iter()
                .find(|(_, n)| **n == l.name)
                .map(|(k, _)| *k)
                .unwrap_or("");
            let (accumulated, se) = acc.get(l.name.as_str()).copied().unwrap_or((0.0, 0.0));
            Line {
                name: l.name.clone(),
                reward: paid.get(key).copied().unwrap_or(0) as f64,
                accumulated,
                se,
                value: l.value,
            }
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut runs: Vec<Run> = Vec::new();
    let mut summaries = Vec::new();
    for path in &args.summaries {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let v: Value =
            serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
        let seed = v["seed"].as_u64().unwrap_or(0);
        let verify = v["ledger"]["verify_ok"].as_bool().unwrap_or(false);
        runs.push((path.clone(), seed, verify, lines(&v)?));
        summaries.push(v);
    }
    let as_run = summaries[0]["reward_rule"]["rule"]
        .as_str()
        .unwrap_or("?")
        .to_owned();
    report(&format!("as run ({as_run})"), &runs, &args.compare);
    for name in &args.settle {
        let rule = match name.as_str() {
            "impact" => Some(NonImproving::Full),
            "impact-harm" => Some(NonImproving::HarmOnly),
            "cumulative" => Some(NonImproving::Ignored),
            "settled" => None,
            other => {
                anyhow::bail!("unknown rule {other:?}: impact, cumulative, settled, impact-harm")
            }
        };
        let mut again = Vec::new();
        let mut same = 0;
        for ((path, seed, verify, ls), v) in runs.iter().zip(&summaries) {
            let rr = &v["reward_rule"];
            let params = SettlementRule {
                // Shares do not depend on the pool, only its rounding.
                pool_per_round: 1_000_000,
                period_rounds: rr["period_rounds"].as_u64().unwrap_or(5),
                z_milli: (rr["z"].as_f64().unwrap_or(2.0) * 1000.0).round() as u64,
            };
            let rec = recorded(v).with_context(|| format!("read {}", path.display()))?;
            let settled = resettle(&rec, &params, rule, ls);
            if rr["rule"].as_str() == Some(name.as_str())
                && settled.iter().zip(ls).all(|(a, b)| a.reward == b.reward)
            {
                same += 1;
            }
            again.push((path.clone(), *seed, *verify, settled));
        }
        report(
            &format!("settled again under {name}"),
            &again,
            &args.compare,
        );
        if runs
            .iter()
            .zip(&summaries)
            .any(|(_, v)| v["reward_rule"]["rule"].as_str() == Some(name.as_str()))
        {
            println!(
                "  (the runs' own rule: the rewards recomputed equal those paid in {same} of {} runs)",
                runs.len()
            );
        }
    }
    Ok(())
}

/// Prints the shares table and the orders of `runs` under the heading `label`.
fn report(label: &str, runs: &[Run], compare: &[String]) {
    println!("\n== {label}");
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
        for (_, _, _, ls) in runs {
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
    let compare: Vec<String> = if compare.is_empty() {
        names.clone()
    } else {
        compare.to_vec()
    };
    println!("\norder among {}:", compare.join(", "));
    let (mut same_acc, mut same_value) = (0, 0);
    for (path, seed, _, ls) in runs {
        let picked: Vec<&Line> = ls.iter().filter(|l| compare.contains(&l.name)).collect();
        let by_reward = order(&picked, |l| l.reward);
        let by_acc = order(&picked, |l| l.accumulated);
        let by_value = order(&picked, |l| l.value);
        same_acc += usize::from(by_reward == by_acc);
        same_value += usize::from(by_reward == by_value);
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
    println!(
        "  rewards in the order of accumulated values in {same_acc} of {} runs, of total values in {same_value}",
        runs.len()
    );
}
