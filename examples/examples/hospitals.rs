//! A whole federation on loopback: one coordinator and a participant agent per hospital in one
//! process, talking real gRPC on 127.0.0.1, on real data.
//!
//! ```text
//! cargo run --release --example hospitals
//! cargo run --release --example hospitals -- --data digits --rounds 30
//! cargo run --release --example hospitals -- --scenario examples/scenarios/valuation-8.toml --no-dp
//! ```

use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use fedledger_coordinator::RoundOutcome;
use fedledger_examples::run::{Options, Planning, last_spend, run_federation, summary, totals};

fn main() -> anyhow::Result<()> {
    let args = Options::parse();
    fedledger_logging::init_with(
        fedledger_logging::LogFormat::Text,
        if args.verbose { "info" } else { "warn" },
    );
    let rt = tokio::runtime::Runtime::new().context("start the async runtime")?;
    rt.block_on(run(args))
}

async fn run(args: Options) -> anyhow::Result<()> {
    let started = Instant::now();
    println!(
        "fedledger hospitals: data {}, {} rounds, {}",
        args.data,
        args.rounds,
        if args.no_dp {
            "no DP".to_owned()
        } else {
            format!(
                "DP-SGD (epsilon {} / delta {:e} per hospital, clip {}, {} accountant, {})",
                args.epsilon,
                args.delta,
                args.clip_norm,
                args.accountant,
                match args.planning {
                    Planning::Hospital => format!(
                        "each hospital plans its own batch (at most {}) and steps (at most {})",
                        args.max_batch_size, args.max_steps
                    ),
                    Planning::Shared => format!(
                        "shared batch {} and {} local epochs",
                        args.batch_size, args.local_epochs
                    ),
                }
            )
        }
    );
    let run = run_federation(&args).await?;
    if !args.no_dp && args.planning == Planning::Shared {
        println!(
            "noise multiplier planned for the smallest hospital's budget: {:.4}",
            run.noise_multiplier
        );
    }
    println!(
        "model {:?} ({} parameters), {} hospitals",
        run.spec.kind,
        run.spec.num_params(),
        run.hospital_rows.len()
    );
    print_rounds(&run.outcomes);
    let m = &run.final_metrics;
    println!(
        "\nfinal model on the held-out test set ({} rows): accuracy {:.4}, log-loss {:.4}, AUC {}",
        run.test_rows,
        m.accuracy,
        m.log_loss,
        fmt_auc(m.auc)
    );
    print_participants(&run.outcomes, &run.reports, &run.hospital_rows);
    print_validators(&run.outcomes, &run.validator_rows);
    print_settlements(&run.outcomes);
    let l = &run.ledger;
    println!(
        "\nledger: {} entries; latest checkpoint cosigned by {} of {} witnesses (quorum {}); \
         late auditor node caught up {} entries (its log has {}); exported to {}; verify: {}",
        l.entries,
        l.cosigned,
        l.witnesses,
        l.quorum,
        l.auditor_caught_up,
        l.auditor_size,
        l.export_dir.display(),
        if l.verify_ok { "ok" } else { "FAILED" }
    );
    if !l.verify_ok {
        print!("{}", l.verify_text);
    }
    println!("\nhospital      receipts  reward proven  statement (verified offline)");
    for st in &run.statements {
        println!(
            "{:<12}  {:>8}  {:>13}  {} {}",
            st.name,
            st.rounds,
            st.reward,
            st.dir.display(),
            if st.verify_ok { "ok" } else { "FAILED" }
        );
        if !st.verify_ok {
            print!("{}", st.verify_text);
        }
    }
    let path = args.out.join("summary.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&summary(&args, &run))?)
        .with_context(|| format!("write {}", path.display()))?;
    // The page an operator would show, drawn from the stopped coordinator's state directory
    // (what is recorded), as `fedledger-coordinator report --out DIR` draws it.
    let page = fedledger_coordinator::report::write(&run.config, &args.out.join("report"))
        .context("write the report")?;
    println!("wrote {} (open it in a browser)", page.display());
    println!(
        "\nwrote {} ({:.1} s in all)",
        path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn fmt_auc(a: Option<f64>) -> String {
    a.map(|a| format!("{a:.4}")).unwrap_or_else(|| "-".into())
}

fn print_rounds(outcomes: &[RoundOutcome]) {
    println!("\nround  status      updates  accuracy  log-loss  AUC     close");
    for o in outcomes {
        let m = o.metrics.as_ref();
        println!(
            "{:>5}  {:<10}  {:>7}  {:>8}  {:>8}  {:<6}  {:>5.1} ms",
            o.round,
            o.status.as_str(),
            o.contributions.len(),
            m.map(|m| format!("{:.4}", m.accuracy))
                .unwrap_or_else(|| "-".into()),
            m.map(|m| format!("{:.4}", m.log_loss))
                .unwrap_or_else(|| "-".into()),
            fmt_auc(m.and_then(|m| m.auc)),
            o.close_micros as f64 / 1000.0,
        );
    }
}

fn print_participants(
    outcomes: &[RoundOutcome],
    reports: &[fedledger_participant::AgentReport],
    rows: &[(String, usize, String)],
) {
    println!(
        "\nhospital      rows  behaviour   epsilon   batch  steps  noise mult.  value       \
         accumulated +- s.e.      reward  flags"
    );
    for (name, n, behaviour) in rows {
        let t = totals(outcomes, name);
        let eps = reports
            .iter()
            .find(|r| &r.name == name)
            .map_or(0.0, |r| r.epsilon_spent);
        let (batch, steps, z) = match last_spend(outcomes, name) {
            Some(p) => (
                format!("{:.0}", p.sampling_rate() * *n as f64),
                p.steps.to_string(),
                format!("{:.4}", p.noise_multiplier()),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "{name:<12}  {n:>4}  {behaviour:<10}  {eps:>7.3}  {batch:>5}  {steps:>5}  {z:>11}  \
             {:>+10.5}  {:>+10.5} +- {:<8.5}  {:>8}  {}",
            t.value,
            t.accumulated,
            t.accumulated_se,
            t.reward,
            t.flags.join(",")
        );
    }
}

/// With validators: per round, the updates the quality rule left out, each validator's
/// distance from consensus (flagged beyond the limit) and pay; then per validator its totals.
fn print_validators(outcomes: &[RoundOutcome], rows: &[(String, usize, String)]) {
    if rows.is_empty() {
        return;
    }
    let name = |key: &str| {
        outcomes
            .iter()
            .flat_map(|o| o.validators.iter().flat_map(|v| &v.vectors))
            .find(|m| m.validator == key)
            .map_or_else(|| key[..8].to_owned(), |m| m.name.clone())
    };
    println!(
        "
round  validators (distance from consensus in thousandths, pay)          left out"
    );
    for o in outcomes {
        let Some(v) = &o.validators else { continue };
        let judged = match &v.record.fallback {
            Some(why) => format!("fell back: {why}"),
            None => v
                .record
                .lines
                .iter()
                .map(|l| {
                    format!(
                        "{} {}{} {}",
                        name(&l.validator),
                        l.distance_milli,
                        if l.distance_milli > v.record.max_distance_milli {
                            " FLAGGED"
                        } else {
                            ""
                        },
                        l.reward
                    )
                })
                .collect::<Vec<_>>()
                .join(", "),
        };
        let out: Vec<&str> = o
            .contributions
            .iter()
            .filter(|c| {
                c.flags
                    .iter()
                    .any(|f| f == fedledger_ledger::records::FLAG_EXCLUDED_BY_QUALITY)
            })
            .map(|c| c.name.as_str())
            .collect();
        println!("{:>5}  {judged:<64}  {}", o.round, out.join(","));
    }
    println!(
        "
validator     holdout  behaviour        rounds  flagged  paid"
    );
    for (n, r, behaviour) in rows {
        let mut lines = outcomes.iter().filter_map(|o| {
            let v = o.validators.as_ref()?;
            let key = &v.vectors.iter().find(|m| &m.name == n)?.validator;
            let l = v.record.lines.iter().find(|l| &l.validator == key)?;
            Some((l.distance_milli > v.record.max_distance_milli, l.reward))
        });
        let (mut rounds, mut flagged, mut paid) = (0, 0, 0u64);
        for (f, reward) in lines.by_ref() {
            rounds += 1;
            flagged += usize::from(f);
            paid += reward;
        }
        println!("{n:<12}  {r:>7}  {behaviour:<15}  {rounds:>6}  {flagged:>7}  {paid:>4}");
    }
}

/// Each settlement period: the rounds that counted (improved the model), the pool paid, and per
/// hospital its accumulated value with its standard error (under the cumulative rule over every
/// counted round since round 1), whether it is distinguishable from zero, and its payout.
fn print_settlements(outcomes: &[RoundOutcome]) {
    for s in outcomes.iter().filter_map(|o| o.settlement.as_ref()) {
        println!(
            "\nsettlement of period {} (rounds {}-{}): counted rounds {:?}, pool {}{}",
            s.period,
            s.first_round,
            s.last_round,
            s.counted_rounds,
            s.pool,
            if s.cumulative {
                "; values accumulated since round 1, paid towards each one's share of all paid"
            } else {
                ""
            }
        );
        println!("  hospital      accumulated +- s.e.      rounds  verdict              payout");
        for l in &s.lines {
            println!(
                "  {:<12}  {:>+10.5} +- {:<8.5}  {:>6}  {:<19}  {:>7}",
                l.name,
                l.value_nano as f64 * 1e-9,
                l.se_nano as f64 * 1e-9,
                l.rounds,
                if l.distinguishable {
                    "distinguishable"
                } else {
                    "not distinguishable"
                },
                l.payout
            );
        }
    }
}
