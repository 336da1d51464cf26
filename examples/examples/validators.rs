//! Validators, measured on real federations over loopback (breast cancer, DP-SGD at epsilon 8,
//! 20 rounds; digits for the 50-contributor timing). Each part prints its figures:
//!
//! - `inverted`: six hospitals (one with every label flipped) and three validators on disjoint
//!   40-row holdouts, one reporting inverted utilities (`examples/scenarios/validators-3.toml`).
//!   Per run: the relative L2 distance between the consensus values (summed over the rounds)
//!   and the honest validators' values (the consensus of the two honest vectors alone,
//!   recomputed from the ledger's vectors), and the inverted validator's flags and pay.
//! - `strategic`: five hospitals and one validator that reports, within its honest range, the
//!   highest utility for every coalition holding hospital A and the lowest for every other; with
//!   3 and with 5 validators. A's value summed over the rounds: with the honest validators
//!   alone; with the liar as recorded (the median over validators in good standing); under a
//!   plain median of every validator (what the median alone bounds); under a plain mean.
//! - `curation`: the `inverted` scenario with the quality rule on and off, seeds 1-5: final
//!   test accuracy, and the rounds in which the label-flipped hospital was left out.
//! - `time`: the median round time with 3 validators against the same federation without them
//!   (three runs of ten rounds each, alternating), 8
//!   contributors (an exact game of 256 coalitions) on breast cancer and 50 (sampled: 20
//!   permutations) on digits.
//!
//! ```text
//! cargo run --release --example validators                  # everything
//! cargo run --release --example validators -- strategic     # one part
//! ```

use fedledger_examples::bench::median;
use std::{collections::BTreeMap, path::PathBuf};

use anyhow::Context;
use clap::Parser;
use fedledger_coordinator::{RoundOutcome, config::ValidatorsSection};
use fedledger_examples::{
    run::{FederationRun, Options, run_federation},
    scenario::{Hospital, Scenario, Validator, ValidatorBehaviour},
};
use fedledger_valuation::consensus::{consensus, design, values};

#[derive(Parser, Debug)]
struct Args {
    /// Parts to run: inverted, strategic, curation, time (default: all).
    parts: Vec<String>,
    /// Seeds (1..=N) per figure.
    #[arg(long, default_value_t = 5)]
    seeds: u64,
    /// Work folder.
    #[arg(long, default_value = "target/validators")]
    out: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    fedledger_logging::init_with(fedledger_logging::LogFormat::Text, "error");
    let rt = tokio::runtime::Runtime::new().context("start the async runtime")?;
    std::fs::create_dir_all(&args.out)?;
    let all = args.parts.is_empty();
    let want = |p: &str| all || args.parts.iter().any(|a| a == p);
    let run = |name: &str, scenario: &Scenario, extra: &[&str], seed: u64| {
        let file = args.out.join(format!("{name}.toml"));
        std::fs::write(&file, toml::to_string(scenario)?)?;
        let mut argv: Vec<String> = vec![
            "hospitals".into(),
            "--scenario".into(),
            file.display().to_string(),
            "--seed".into(),
            seed.to_string(),
            "--out".into(),
            args.out
                .join(format!("{name}-{seed}"))
                .display()
                .to_string(),
            "--bootstrap".into(),
            "0".into(),
        ];
        argv.extend(extra.iter().map(|s| (*s).to_owned()));
        let opts = Options::try_parse_from(&argv)?;
        let r = rt
            .block_on(run_federation(&opts))
            .with_context(|| format!("{name} seed {seed}"))?;
        anyhow::ensure!(
            r.ledger.verify_ok,
            "{name} seed {seed}: {}",
            r.ledger.verify_text
        );
        Ok::<FederationRun, anyhow::Error>(r)
    };
    let inverted_scenario = Scenario::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scenarios/validators-3.toml"
    )))?;
    if want("inverted") {
        println!(
            "\ninverted validator (validators-3: 3 validators on 40-row holdouts, lab-3 inverted)"
        );
        println!(
            "seed  rel. L2 consensus vs honest  lab-3 flagged  lab-3 paid  honest flagged  honest paid"
        );
        for seed in 1..=args.seeds {
            let r = run("inverted", &inverted_scenario, &[], seed)?;
            let with = summed(&r.outcomes, recorded_values);
            let honest = summed(&r.outcomes, |v| median_values(v, Some("lab-3")));
            let (flag3, paid3) = standing(&r.outcomes, |n| n == "lab-3");
            let (flagh, paidh) = standing(&r.outcomes, |n| n != "lab-3");
            println!(
                "{seed:>4}  {:>27.4}  {flag3:>13}  {paid3:>10}  {flagh:>14}  {paidh:>11}",
                rel_l2(&with, &honest)
            );
        }
    }
    if want("strategic") {
        println!(
            "\nstrategic validator (favours A within its honest range; A's value summed over the rounds)"
        );
        println!(
            "validators  seed  honest only  recorded  shift  median of all  shift  plain mean  shift  liar flagged  liar paid"
        );
        for n in [3usize, 5] {
            let mut s = Scenario {
                hospitals: [("A", 40), ("B", 35), ("C", 35), ("D", 30), ("E", 30)]
                    .iter()
                    .map(|(h, r)| Hospital::honest(h, *r))
                    .collect(),
                validators: Some(ValidatorsSection {
                    quorum: 2,
                    ..ValidatorsSection::default()
                }),
                validator_list: (1..=n)
                    .map(|i| Validator {
                        name: format!("lab-{i}"),
                        rows: 40,
                        behaviour: ValidatorBehaviour::Honest,
                    })
                    .collect(),
            };
            s.validator_list[n - 1].behaviour = ValidatorBehaviour::Strategic("A".into());
            let liar = format!("lab-{n}");
            for seed in 1..=args.seeds {
                let r = run(&format!("strategic-{n}"), &s, &[], seed)?;
                let a = |m: &BTreeMap<String, f64>| m.get("A").copied().unwrap_or(0.0);
                let honest = a(&summed(&r.outcomes, |v| median_values(v, Some(&liar))));
                let recorded = a(&summed(&r.outcomes, recorded_values));
                let median = a(&summed(&r.outcomes, |v| median_values(v, None)));
                let mean = a(&summed(&r.outcomes, mean_values));
                let shift = |x: f64| 100.0 * (x - honest) / honest.abs();
                let (flagged, paid) = standing(&r.outcomes, |name| name == liar);
                println!(
                    "{n:>10}  {seed:>4}  {honest:>11.4}  {recorded:>8.4}  {:>+5.0}%  {median:>13.4}  {:>+5.0}%  {mean:>10.4}  {:>+5.0}%  {flagged:>12}  {paid:>9}",
                    shift(recorded),
                    shift(median),
                    shift(mean)
                );
            }
        }
    }
    if want("curation") {
        println!(
            "\nquality rule (validators-3: F has every label flipped; one validator inverted)"
        );
        println!(
            "seed  accuracy rule on  rule off  honest updates left out (on)  rounds F left out (on)"
        );
        let (mut on, mut off) = (Vec::new(), Vec::new());
        for seed in 1..=args.seeds {
            let r_on = run("curation-on", &inverted_scenario, &[], seed)?;
            let r_off = run(
                "curation-off",
                &inverted_scenario,
                &["--no-quality-rule"],
                seed,
            )?;
            let left_out: Vec<u64> = r_on
                .outcomes
                .iter()
                .filter(|o| {
                    o.contributions.iter().any(|c| {
                        c.name == "F"
                            && c.flags
                                .iter()
                                .any(|f| f == fedledger_ledger::records::FLAG_EXCLUDED_BY_QUALITY)
                    })
                })
                .map(|o| o.round)
                .collect();
            let honest_out = r_on
                .outcomes
                .iter()
                .flat_map(|o| &o.contributions)
                .filter(|c| {
                    c.name != "F"
                        && c.flags
                            .iter()
                            .any(|f| f == fedledger_ledger::records::FLAG_EXCLUDED_BY_QUALITY)
                })
                .count();
            println!(
                "{seed:>4}  {:>16.4}  {:>8.4}  {honest_out:>28}  {} of {}: {left_out:?}",
                r_on.final_metrics.accuracy,
                r_off.final_metrics.accuracy,
                left_out.len(),
                r_on.outcomes.len()
            );
            on.push(r_on.final_metrics.accuracy);
            off.push(r_off.final_metrics.accuracy);
        }
        println!(
            "mean  {:>16.4}  {:>8.4}",
            on.iter().sum::<f64>() / on.len() as f64,
            off.iter().sum::<f64>() / off.len() as f64
        );
    }
    if want("time") {
        println!("\nvalidation step's time (3 validators), median round time over 3 x 10 rounds");
        println!("contributors  game                 without   with      added   ratio");
        for (contributors, data, rows, holdout) in [
            (8usize, "breast_cancer", 30usize, 40usize),
            (50, "digits", 18, 80),
        ] {
            let hospitals: Vec<Hospital> = (0..contributors)
                .map(|i| Hospital::honest(&format!("H{i:02}"), rows))
                .collect();
            let bare = Scenario {
                hospitals: hospitals.clone(),
                validators: None,
                validator_list: Vec::new(),
            };
            let with = Scenario {
                hospitals,
                validators: Some(ValidatorsSection::default()),
                validator_list: (1..=3)
                    .map(|i| Validator {
                        name: format!("lab-{i}"),
                        rows: holdout,
                        behaviour: ValidatorBehaviour::Honest,
                    })
                    .collect(),
            };
            // Three runs of each, alternating, 10 rounds each: the median round.
            let extra = ["--data", data, "--rounds", "10"];
            let (mut bare_rounds, mut with_rounds) = (Vec::new(), Vec::new());
            let mut last = None;
            for rep in 1..=3 {
                let b = run(&format!("time-{contributors}-bare"), &bare, &extra, rep)?;
                bare_rounds.extend(round_times(&b.outcomes));
                let w = run(&format!("time-{contributors}-with"), &with, &extra, rep)?;
                with_rounds.extend(round_times(&w.outcomes));
                last = Some(w);
            }
            let r = last.expect("three runs");
            let (t0, t1) = (median(&mut bare_rounds), median(&mut with_rounds));
            let game = r
                .outcomes
                .iter()
                .find_map(|o| o.validators.as_ref())
                .map(|v| {
                    format!(
                        "{} coalitions{}",
                        v.record.coalitions,
                        if v.record.permutations > 0 && contributors > v.record.exact_max as usize {
                            format!(" ({} perm.)", v.record.permutations)
                        } else {
                            String::new()
                        }
                    )
                })
                .unwrap_or_default();
            println!(
                "{contributors:>12}  {game:<19}  {t0:>6.0} ms  {t1:>6.0} ms  {:>+5.0} ms  {:>5.2}x",
                t1 - t0,
                t1 / t0
            );
        }
    }
    Ok(())
}

/// Each round's wall time from its opening to its close, milliseconds.
fn round_times(outcomes: &[RoundOutcome]) -> Vec<f64> {
    outcomes
        .iter()
        .map(|o| o.closed_at_ms.saturating_sub(o.opened_at_ms) as f64)
        .collect()
}

/// Per validator (by name), how many rounds it was flagged in and what it was paid, over the
/// validators `which` selects.
fn standing(outcomes: &[RoundOutcome], which: impl Fn(&str) -> bool) -> (usize, u64) {
    let (mut flagged, mut paid) = (0, 0);
    for o in outcomes {
        let Some(v) = &o.validators else { continue };
        for l in &v.record.lines {
            let name = v
                .vectors
                .iter()
                .find(|m| m.validator == l.validator)
                .map(|m| m.name.as_str())
                .unwrap_or("");
            if which(name) {
                flagged += usize::from(l.distance_milli > v.record.max_distance_milli);
                paid += l.reward;
            }
        }
    }
    (flagged, paid)
}

/// A round's game and its contributors' names (sorted by key: the players).
fn game_of(
    o: &RoundOutcome,
) -> Option<(
    &fedledger_coordinator::types::ValidatorsOutcome,
    fedledger_valuation::consensus::Design,
    Vec<String>,
)> {
    let v = o.validators.as_ref()?;
    if v.record.fallback.is_some() {
        return None;
    }
    let d = design(
        v.record.seed,
        o.contributions.len(),
        v.record.exact_max as usize,
        v.record.permutations as usize,
    )
    .ok()?;
    let names = o.contributions.iter().map(|c| c.name.clone()).collect();
    Some((v, d, names))
}

/// The values of a round's median consensus, leaving out the validator named `without`.
fn median_values(o: &RoundOutcome, without: Option<&str>) -> Option<Vec<(String, f64)>> {
    let (v, d, names) = game_of(o)?;
    let vectors: Vec<&[i64]> = v
        .vectors
        .iter()
        .filter(|m| Some(m.name.as_str()) != without)
        .map(|m| m.utilities.as_slice())
        .collect();
    let game = consensus(&d, &vectors).ok()?;
    Some(names.into_iter().zip(values(&d, &game).ok()?).collect())
}

/// The values a round valued by its validators records (their consensus).
fn recorded_values(o: &RoundOutcome) -> Option<Vec<(String, f64)>> {
    game_of(o)?;
    Some(
        o.contributions
            .iter()
            .map(|c| (c.name.clone(), c.value))
            .collect(),
    )
}

/// The values of a round's game taken as the plain mean of the validators' gains.
fn mean_values(o: &RoundOutcome) -> Option<Vec<(String, f64)>> {
    let (v, d, names) = game_of(o)?;
    let n = v.vectors.len() as f64;
    let game: Vec<i64> = (0..d.coalitions.len())
        .map(|k| {
            let sum: f64 = v
                .vectors
                .iter()
                .map(|m| (m.utilities[k] - m.utilities[0]) as f64)
                .sum();
            (sum / n).round() as i64
        })
        .collect();
    Some(names.into_iter().zip(values(&d, &game).ok()?).collect())
}

/// Each hospital's values summed over the rounds `f` values.
fn summed(
    outcomes: &[RoundOutcome],
    f: impl Fn(&RoundOutcome) -> Option<Vec<(String, f64)>>,
) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for o in outcomes {
        for (name, v) in f(o).unwrap_or_default() {
            *out.entry(name).or_insert(0.0) += v;
        }
    }
    out
}

fn rel_l2(a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>) -> f64 {
    let d: f64 = b
        .iter()
        .map(|(k, y)| (a.get(k).copied().unwrap_or(0.0) - y).powi(2))
        .sum::<f64>()
        .sqrt();
    let n: f64 = b.values().map(|y| y * y).sum::<f64>().sqrt();
    d / n
}
