//! Valuation that keeps up: the coordinator's valuation of one round with 100 participants on
//! the digits MLP (64-[64]-10), scored on the coordinator's validation split, timed as a round
//! pays it (estimator, bootstrap standard errors, abuse flags: `Valuer::value_round` with the
//! default settings), against a reference: untruncated permutation sampling run with 100 times
//! the evaluations the default made. Prints the time, the evaluations, the estimator's own
//! spread (the standard error of its permutation mean) and the relative L2 error against the
//! reference.
//!
//! The round: the digits rows are split as the hospitals example splits them (20% test, 20%
//! validation, the rest the pool); the global model is first trained on 10% of the pool (so the
//! round is not the first, large step); each of the 100 participants holds `pool / 100` rows
//! of the rest (about 9) and sends one epoch of plain SGD from the global model as its update.
//!
//! ```text
//! cargo run --release --example bench_valuation
//! cargo run --release --example bench_valuation -- --participants 50 --reference-factor 20
//! ```

use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use fedledger_coordinator::{config::ValuationSection, types::WeightedUpdate, value::Valuer};
use fedledger_examples::{load_data, split::stratified};
use fedledger_model::{ModelKind, ModelSpec, Standardiser, TrainConfig, init_params, train};
use fedledger_valuation::{Estimator, GtgShapley, LinearCombinationGame, relative_l2};
use rand::SeedableRng;

#[derive(Parser, Debug)]
#[command(about, long_about = None)]
struct Args {
    /// Participants in the round.
    #[arg(long, default_value_t = 100)]
    participants: usize,
    /// The reference runs this many times the default's evaluations.
    #[arg(long, default_value_t = 100)]
    reference_factor: u64,
    /// Seed of the split, the initial model and the estimators.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let n = args.participants;
    let digits = load_data("digits", None)?.data;
    let split = stratified(&digits, 0.2, 0.2, args.seed);
    let mut pool = digits.subset(&split.pool);
    let mut validation = digits.subset(&split.validation);
    let scaler = Standardiser::fit(&pool);
    scaler.apply(&mut pool)?;
    scaler.apply(&mut validation)?;
    let spec = ModelSpec {
        kind: ModelKind::Mlp,
        features: pool.n_features(),
        classes: 10,
        hidden: vec![64],
    };
    let sgd = |epochs: usize, seed: u64| TrainConfig {
        epochs,
        batch_size: 8,
        learning_rate: 0.05,
        seed,
        dp: None,
        steps: None,
    };
    let mut rng = chacha20::ChaCha20Rng::seed_from_u64(args.seed);
    let warm = pool.len() / 10;
    let warm_rows: Vec<usize> = (0..warm).collect();
    let global = train(
        &spec,
        &init_params(&spec, args.seed),
        &pool.subset(&warm_rows),
        &sgd(3, args.seed),
        &mut rng,
        None,
    )?
    .params;
    let per = (pool.len() - warm) / n;
    anyhow::ensure!(
        per >= 1,
        "{n} participants need at least {n} rows past the warm-up"
    );
    let mut deltas = Vec::with_capacity(n);
    for p in 0..n {
        let rows: Vec<usize> = (warm + p * per..warm + (p + 1) * per).collect();
        let local = train(
            &spec,
            &global,
            &pool.subset(&rows),
            &sgd(1, args.seed + p as u64),
            &mut rng,
            None,
        )?
        .params;
        deltas.push(
            local
                .iter()
                .zip(&global)
                .map(|(a, b)| a - b)
                .collect::<Vec<f32>>(),
        );
    }
    println!(
        "round: {n} participants x {per} rows, digits MLP 64-[64]-10 ({} parameters), {} validation rows",
        global.len(),
        validation.len()
    );

    // As a round pays it: the coordinator's valuation with its default settings.
    let settings = ValuationSection::default();
    let valuer = Valuer::with_settings("bench-valuation", settings.clone());
    let updates: Vec<WeightedUpdate<'_>> = deltas
        .iter()
        .map(|d| WeightedUpdate {
            examples: per as u64,
            delta: d,
            privacy: None,
        })
        .collect();
    let names: Vec<String> = (0..n).map(|i| format!("site-{i}")).collect();
    let keys: Vec<String> = (0..n).map(|i| format!("{i:064x}")).collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let t = Instant::now();
    let valued = valuer
        .value_round(
            1,
            &spec,
            &validation,
            &global,
            &updates,
            &name_refs,
            &key_refs,
            false,
        )
        .context("value the round")?;
    let round_secs = t.elapsed().as_secs_f64();
    let evaluations = valued.summary.evaluations;
    let spread = valued.summary.sampling_rel_se;
    println!(
        "default ({} estimator, budget {}): {:.2} s for the round's valuation ({} bootstrap resamples included), {evaluations} evaluations",
        valued.summary.estimator,
        match settings.max_evaluations {
            0 => "its default".to_owned(),
            b => b.to_string(),
        },
        round_secs,
        settings.bootstrap_resamples,
    );

    // The reference: plain permutation sampling (no truncation, no guided or antithetic
    // pairing), 100 times the evaluations, on the same game (mean negative log-loss).
    let game = LinearCombinationGame::new(
        &global,
        &deltas.iter().map(Vec::as_slice).collect::<Vec<_>>(),
        &vec![per as u64; n],
        |params: &[f32]| match fedledger_model::evaluate(&spec, params, &validation) {
            Ok(m) => -m.log_loss,
            Err(_) => f64::NAN,
        },
    )?;
    let budget = evaluations * args.reference_factor;
    let reference = GtgShapley {
        max_evaluations: Some(budget),
        truncation_tolerance: 0.0,
        convergence_tolerance: 0.0,
        min_rounds: usize::MAX,
        max_rounds: usize::MAX,
        antithetic: false,
    };
    let t = Instant::now();
    let r = reference.estimate(&game, args.seed ^ 0x5eed)?;
    let ref_secs = t.elapsed().as_secs_f64();
    let err = relative_l2(&valued.values, &r.values);
    let norm = r.values.iter().map(|v| v * v).sum::<f64>().sqrt();
    println!(
        "reference (untruncated permutation sampling): {} evaluations ({:.0}x), {:.1} s",
        r.evaluations,
        r.evaluations as f64 / evaluations.max(1) as f64,
        ref_secs
    );
    match spread {
        Some(s) => println!(
            "estimator's own spread: relative standard error of its permutation mean {:.3} (L2 of the per-value standard errors over L2 of the values)",
            s
        ),
        None => println!("estimator's own spread: not reported by this estimator"),
    }
    println!(
        "relative L2 error of the default against the reference: {err:.3} (values' L2 norm {norm:.4}, sum {:.4})",
        r.values.iter().sum::<f64>()
    );
    Ok(())
}
