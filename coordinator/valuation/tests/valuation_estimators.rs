//! Shapley properties of the estimators, their determinism, their accuracy against exact values
//! on a synthetic eight-hospital round, abuse flags on realistic updates, and rewards from values.

#[path = "valuation_support.rs"]
mod support;

use fedledger_valuation::{
    AbuseConfig, Coalition, Estimator, Exact, GtgShapley, KernelShap, LeaveOneOut,
    LinearCombinationGame, MAX_PLAYERS, Participation, RewardEntry, Utility, Valuation,
    ValuationError, cosine, detect, estimator_by_name, relative_l2, spearman, split_rewards,
};
use support::{Round, breast_cancer, eight_hospitals, synthetic, train};

/// A game given by its Harsanyi dividends: `U(S) = sum over T subset of S of d_T`, whose Shapley
/// values are `phi_i = sum over T containing i of d_T / |T|`.
#[derive(Debug, Clone)]
struct Dividends {
    players: usize,
    dividends: Vec<(u64, f64)>,
}

impl Utility for Dividends {
    fn players(&self) -> usize {
        self.players
    }
    fn utility(&self, coalition: Coalition) -> f64 {
        self.dividends
            .iter()
            .filter(|(t, _)| coalition.bits() & t == *t)
            .map(|(_, d)| d)
            .sum()
    }
}

impl Dividends {
    fn shapley(&self) -> Vec<f64> {
        (0..self.players)
            .map(|i| {
                self.dividends
                    .iter()
                    .filter(|(t, _)| t & (1 << i) != 0)
                    .map(|(t, d)| d / f64::from(t.count_ones()))
                    .sum()
            })
            .collect()
    }
}

/// `U(S) = sum of w_i over S`: every player's Shapley value is its own `w_i`.
struct Additive(Vec<f64>);

impl Utility for Additive {
    fn players(&self) -> usize {
        self.0.len()
    }
    fn utility(&self, coalition: Coalition) -> f64 {
        coalition.members().map(|i| self.0[i]).sum()
    }
}

#[test]
fn gtg_and_loo_value_hundreds_of_players() {
    // Player weights on both sides of the 64-player word boundaries.
    let w: Vec<f64> = (0..130).map(|i| f64::from(i % 7) - 2.5).collect();
    let game = Additive(w.clone());
    // Leave-one-out is exact on an additive game; GTG truncates scans whose remaining
    // marginals are within its tolerance of zero, so it is close.
    let loo = LeaveOneOut::default().estimate(&game, 3).unwrap();
    assert_close(&loo.values, &w, 1e-9);
    assert_eq!(loo.evaluations, 131);
    let gtg = GtgShapley::default().estimate(&game, 3).unwrap();
    assert_close(&gtg.values, &w, 0.01);
    assert!(gtg.evaluations > 131, "{}", gtg.evaluations);
}

fn estimators(budget: Option<u64>) -> Vec<Box<dyn Estimator>> {
    ["exact", "gtg", "kernelshap", "loo"]
        .iter()
        .map(|name| estimator_by_name(name, budget).unwrap())
        .collect()
}

fn round(seed: u64) -> Round {
    eight_hospitals(&synthetic(seed, 569), seed, None)
}

fn assert_close(a: &[f64], b: &[f64], tolerance: f64) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= tolerance, "{a:?} vs {b:?}");
    }
}

#[test]
fn exact_matches_closed_form_and_is_additive() {
    let first = Dividends {
        players: 5,
        dividends: vec![
            (0b00001, 1.0),
            (0b00110, 2.0),
            (0b11100, -0.6),
            (0b11111, 0.5),
        ],
    };
    let second = Dividends {
        players: 5,
        dividends: vec![(0b10010, 0.7), (0b01000, -0.3)],
    };
    let sum = Dividends {
        players: 5,
        dividends: first
            .dividends
            .iter()
            .chain(&second.dividends)
            .copied()
            .collect(),
    };
    let exact = |g: &Dividends| Exact::default().estimate(g, 0).unwrap().values;
    assert_close(&exact(&first), &first.shapley(), 1e-12);
    assert_close(&exact(&second), &second.shapley(), 1e-12);
    let added: Vec<f64> = exact(&first)
        .iter()
        .zip(exact(&second))
        .map(|(a, b)| a + b)
        .collect();
    assert_close(&exact(&sum), &added, 1e-12);
    // Paired KernelSHAP with every coalition is exact too.
    let full = KernelShap {
        max_evaluations: Some(32),
    }
    .estimate(&sum, 0)
    .unwrap();
    assert_close(&full.values, &sum.shapley(), 1e-9);
    assert_eq!(full.evaluations, 32);
}

#[test]
fn exact_on_the_round_is_efficient_symmetric_and_null() {
    let round = round(11);
    let game = round.game();
    let exact = Exact::default().estimate(&game, 0).unwrap();
    let total = game.utility(Coalition::full(8).unwrap()) - game.utility(Coalition::EMPTY);
    assert!((exact.values.iter().sum::<f64>() - total).abs() < 1e-9);
    let (b, d, g) = (round.index("B"), round.index("D"), round.index("G"));
    assert!(
        (exact.values[b] - exact.values[d]).abs() < 1e-12,
        "copies are symmetric"
    );
    // G sent zeros: a null player, valued 0 by every estimator, not merely close to 0.
    for estimator in estimators(None) {
        assert_eq!(
            estimator.estimate(&game, 3).unwrap().values[g],
            0.0,
            "{}",
            estimator.name()
        );
    }
    // The harmful update is charged, the clean ones are ordered by size.
    let v = |n: &str| exact.values[round.index(n)];
    assert!(v("F") < 0.0 && v("A") > v("B") && v("B") > v("C") && v("B") > v("E"));
    // Null players are left out of the enumeration: 2^7 coalitions.
    assert_eq!(exact.evaluations, 128);
    let nano = exact.values_nano();
    assert_eq!(nano[g], 0);
}

#[test]
fn same_seed_same_bits() {
    let round = round(5);
    let game = round.game();
    let bits = |v: &Valuation| v.values.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for estimator in estimators(Some(64)) {
        if estimator.name() == "exact" {
            continue;
        }
        let (a, b) = (
            estimator.estimate(&game, 42).unwrap(),
            estimator.estimate(&game, 42).unwrap(),
        );
        assert_eq!(bits(&a), bits(&b), "{}", estimator.name());
        assert_eq!(
            (a.evaluations, a.seed, a.estimator.as_str()),
            (b.evaluations, 42, estimator.name())
        );
        assert!(a.evaluations <= 64);
    }
    let gtg = GtgShapley {
        max_evaluations: Some(64),
        ..GtgShapley::default()
    };
    assert_ne!(
        bits(&gtg.estimate(&game, 1).unwrap()),
        bits(&gtg.estimate(&game, 2).unwrap())
    );
}

/// Mean Spearman and relative L2 of an estimator against exact over `seeds` estimator seeds.
fn agreement(
    estimator: &dyn Estimator,
    game: &dyn Utility,
    exact: &[f64],
    seeds: u64,
) -> (f64, f64) {
    let (mut rho, mut l2) = (0.0, 0.0);
    for seed in 0..seeds {
        let v = estimator.estimate(game, seed).unwrap();
        rho += spearman(&v.values, exact);
        l2 += relative_l2(&v.values, exact);
    }
    (rho / seeds as f64, l2 / seeds as f64)
}

#[test]
fn approximations_agree_with_exact_at_half_and_quarter_budget() {
    for scenario in [3u64, 4] {
        let round = round(scenario);
        let game = round.game();
        let exact = Exact::default().estimate(&game, 0).unwrap();
        let half = exact.evaluations / 2;
        let quarter = exact.evaluations / 4;
        for budget in [half, quarter] {
            let gtg = GtgShapley {
                max_evaluations: Some(budget),
                ..GtgShapley::default()
            };
            let kernel = KernelShap {
                max_evaluations: Some(budget),
            };
            let (gtg_rho, gtg_l2) = agreement(&gtg, &game, &exact.values, 4);
            let (ks_rho, ks_l2) = agreement(&kernel, &game, &exact.values, 4);
            println!(
                "scenario {scenario} budget {budget}/{}: gtg rho {gtg_rho:.4} l2 {gtg_l2:.4}; \
                 kernelshap rho {ks_rho:.4} l2 {ks_l2:.4}",
                exact.evaluations
            );
            if budget == half {
                for (rho, l2) in [(gtg_rho, gtg_l2), (ks_rho, ks_l2)] {
                    assert!(rho >= 0.97 && l2 <= 0.10, "rho {rho} l2 {l2}");
                }
            } else {
                assert!(gtg_l2.min(ks_l2) <= 0.10);
            }
        }
    }
}

#[test]
fn a_tiny_total_gain_still_charges_harm() {
    // F undoes A: the round gains (almost) nothing, yet F must be charged.
    let data = synthetic(8, 400);
    let validation = data.select(&(0..143).collect::<Vec<_>>());
    let shard = data.select(&(143..263).collect::<Vec<_>>());
    let base = vec![0.0f32; 31];
    let good = train(&base, &shard, 5, 0.5);
    let bad: Vec<f32> = good.iter().map(|x| -x).collect();
    let small = train(
        &base,
        &data.select(&(263..273).collect::<Vec<_>>()),
        1,
        0.01,
    );
    let game = LinearCombinationGame::new(
        &base,
        &[&good, &bad, &small],
        &[100, 100, 10],
        |p: &[f32]| -support::log_loss(p, &validation),
    )
    .unwrap();
    let total = game.utility(Coalition::full(3).unwrap()) - game.utility(Coalition::EMPTY);
    let exact = Exact::default().estimate(&game, 0).unwrap();
    assert!(
        total.abs() < 0.05 * exact.values[0],
        "total gain {total} is tiny"
    );
    for estimator in estimators(None) {
        let v = estimator.estimate(&game, 9).unwrap();
        assert!(
            v.values[1] < -0.5 * exact.values[0],
            "{} lets F off: {:?}",
            estimator.name(),
            v.values
        );
    }
    let gtg = GtgShapley::default().estimate(&game, 9).unwrap();
    assert!(relative_l2(&gtg.values, &exact.values) < 0.05);
}

#[test]
fn refusals_name_what_is_wrong() {
    let round = round(1);
    let game = round.game();
    assert!(matches!(
        KernelShap {
            max_evaluations: Some(10)
        }
        .estimate(&game, 0),
        Err(ValuationError::BudgetTooSmall {
            estimator: "kernelshap",
            needed: 16,
            ..
        })
    ));
    assert!(matches!(
        Exact {
            max_evaluations: Some(100),
            ..Exact::default()
        }
        .estimate(&game, 0),
        Err(ValuationError::BudgetTooSmall {
            estimator: "exact",
            needed: 128,
            ..
        })
    ));
    assert!(matches!(
        GtgShapley {
            max_evaluations: Some(5),
            ..GtgShapley::default()
        }
        .estimate(&game, 0),
        Err(ValuationError::BudgetTooSmall {
            estimator: "gtg",
            ..
        })
    ));
    // Room for the fixed coalitions (none, all, 7 leave-one-out) but no permutation pair.
    assert!(matches!(
        GtgShapley {
            max_evaluations: Some(9),
            ..GtgShapley::default()
        }
        .estimate(&game, 0),
        Err(ValuationError::BudgetTooSmall {
            estimator: "gtg",
            budget: 9,
            needed: 10
        })
    ));
    let thirteen = Dividends {
        players: 13,
        dividends: vec![(1, 1.0)],
    };
    assert!(matches!(
        Exact::default().estimate(&thirteen, 0),
        Err(ValuationError::TooManyForExact {
            players: 13,
            max: 12
        })
    ));
    let too_many = Dividends {
        players: MAX_PLAYERS + 1,
        dividends: vec![],
    };
    for estimator in estimators(None) {
        assert!(matches!(
            estimator.estimate(&too_many, 0),
            Err(ValuationError::TooManyPlayers { players, max: MAX_PLAYERS })
                if players == MAX_PLAYERS + 1
        ));
    }
    // KernelSHAP's design is built on 64-bit masks.
    let sixty_five = Additive((0..65).map(f64::from).collect());
    assert!(matches!(
        KernelShap::default().estimate(&sixty_five, 0),
        Err(ValuationError::TooManyPlayers {
            players: 65,
            max: 64
        })
    ));
    struct Broken;
    impl Utility for Broken {
        fn players(&self) -> usize {
            3
        }
        fn utility(&self, c: Coalition) -> f64 {
            if c.len() == 2 { f64::NAN } else { 1.0 }
        }
    }
    assert!(matches!(
        Exact::default().estimate(&Broken, 0),
        Err(ValuationError::NonFiniteUtility { .. })
    ));
    assert!(matches!(
        GtgShapley::default().estimate(&Broken, 0),
        Err(ValuationError::NonFiniteUtility { .. })
    ));
}

#[test]
fn fifty_players_stay_within_budget() {
    let round = support::many_hospitals(50, 2);
    let game = round.game();
    for estimator in [
        Box::new(GtgShapley {
            max_evaluations: Some(3000),
            ..GtgShapley::default()
        }) as Box<dyn Estimator>,
        Box::new(KernelShap {
            max_evaluations: Some(1000),
        }),
        Box::new(LeaveOneOut::default()),
    ] {
        let v = estimator.estimate(&game, 7).unwrap();
        assert!(v.evaluations <= 3000 && v.values.iter().all(|x| x.is_finite()));
        // Harmful hospitals (every fifth) are charged on average.
        let harmful: f64 = v.values.iter().skip(4).step_by(5).sum();
        assert!(harmful < 0.0, "{}", estimator.name());
    }
}

#[test]
fn abuse_flags_on_realistic_updates() {
    let data = breast_cancer().expect("examples/data/breast_cancer.csv is vendored");
    let config = AbuseConfig::default();
    let mut max_honest: f64 = 0.0;
    let mut random_caught = 0;
    for seed in 0..6 {
        let round = eight_hospitals(&data, seed, None);
        let honest = ["A", "B", "C", "E"].map(|n| round.index(n));
        for &i in &honest {
            for &j in &honest {
                if i < j {
                    max_honest = max_honest.max(cosine(&round.updates[i], &round.updates[j]));
                }
            }
        }
        // D arrives after B; G arrives first; the rest in name order.
        let received = [2u64, 3, 4, 7, 5, 6, 1, 8];
        let participants: Vec<Participation<'_>> = round
            .names
            .iter()
            .zip(&round.updates)
            .zip(received)
            .map(|((name, u), received)| Participation {
                name,
                update: Some(u),
                received,
            })
            .chain([Participation {
                name: "X",
                update: None,
                received: 0,
            }])
            .collect();
        let flags = detect(&participants, &config).unwrap();
        let of = |n: &str| flags[round.index(n)].clone();
        assert_eq!(of("D"), vec!["copy_of:B".to_owned()], "seed {seed}");
        assert_eq!(of("G"), vec!["free_rider".to_owned()]);
        for name in ["A", "B", "C", "E", "F"] {
            assert!(
                of(name).is_empty(),
                "seed {seed}: {name} flagged {:?}",
                of(name)
            );
        }
        assert_eq!(flags[8], vec!["declined".to_owned()]);
        let max_abs = |n: &str| {
            let i = round.index(n);
            (0..8)
                .filter(|&k| k != i && k != round.index("G"))
                .map(|k| cosine(&round.updates[i], &round.updates[k]).abs())
                .fold(0.0, f64::max)
        };
        println!(
            "seed {seed}: largest |cosine| of E {:.3}, of H {:.3}",
            max_abs("E"),
            max_abs("H")
        );
        if of("H") == vec!["free_rider".to_owned()] {
            random_caught += 1;
        }
        // A copy with 1% noise is still caught; one with 30% noise is not (documented limit).
        let b = &round.updates[round.index("B")];
        let noisy = |level: f64| -> Vec<f32> {
            let n = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt()
                / (b.len() as f64).sqrt();
            b.iter()
                .enumerate()
                .map(|(k, x)| x + (level * n * if k % 2 == 0 { 1.0 } else { -1.0 }) as f32)
                .collect()
        };
        assert!(cosine(b, &noisy(0.01)) >= config.copy_cosine);
        assert!(cosine(b, &noisy(0.3)) < config.copy_cosine);
    }
    println!("largest cosine between honest first-round updates: {max_honest:.4}");
    println!("random update flagged free_rider in {random_caught} of 6 rounds");
    // With 31 parameters a random update can align with another by chance (documented limit).
    assert!(random_caught >= 4);
    assert!(max_honest < config.copy_cosine);
}

#[test]
fn rewards_from_exact_values_exclude_the_copy() {
    let round = round(12);
    let game = round.game();
    let exact = Exact::default().estimate(&game, 0).unwrap();
    let nano = exact.values_nano();
    let keys: Vec<String> = round
        .names
        .iter()
        .map(|n| format!("{:0>64}", n.to_lowercase()))
        .collect();
    let entries: Vec<RewardEntry<'_>> = keys
        .iter()
        .zip(&nano)
        .zip(&round.names)
        .map(|((key, &value_nano), name)| RewardEntry {
            participant_key_hex: key,
            value_nano,
            eligible: name != "D",
        })
        .collect();
    let split = split_rewards(1_000_000, &entries);
    assert_eq!(split.rewards.iter().sum::<u64>(), 1_000_000);
    assert_eq!(split.rewards[round.index("D")], 0);
    assert_eq!(split.rewards[round.index("F")], 0);
    assert_eq!(split.rewards[round.index("G")], 0);
    assert!(split.rewards[round.index("A")] > split.rewards[round.index("B")]);
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    /// Random games of 1 to 6 players given by their Harsanyi dividends, of order at most
    /// `max_order`.
    fn games(max_order: u32) -> impl Strategy<Value = Dividends> {
        (1usize..=6).prop_flat_map(move |players| {
            let max = (1u64 << players) - 1;
            prop::collection::vec(
                (
                    (1u64..=max).prop_filter("order", move |t| t.count_ones() <= max_order),
                    -2.0f64..2.0,
                ),
                0..10,
            )
            .prop_map(move |dividends| Dividends { players, dividends })
        })
    }

    proptest! {
        // Integration tests have no lib.rs next to them for proptest's regression files.
        #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn exact_is_the_shapley_value(game in games(6)) {
            let exact = Exact::default().estimate(&game, 0).unwrap();
            let total = game.utility(Coalition::full(game.players).unwrap()) - game.utility(Coalition::EMPTY);
            prop_assert!((exact.values.iter().sum::<f64>() - total).abs() < 1e-9);
            assert_close(&exact.values, &game.shapley(), 1e-9);
            let kernel = KernelShap { max_evaluations: Some(1 << game.players) }.estimate(&game, 1).unwrap();
            assert_close(&kernel.values, &game.shapley(), 1e-9);
        }

        #[test]
        fn antithetic_gtg_is_exact_for_pairwise_games(game in games(2), seed in any::<u64>()) {
            let gtg = GtgShapley { truncation_tolerance: 0.0, max_rounds: 1, ..GtgShapley::default() };
            let v = gtg.estimate(&game, seed).unwrap();
            assert_close(&v.values, &game.shapley(), 1e-9);
        }
    }
}

/// The default above 12 players keeps to its per-round budget of evaluations, and gtg reports
/// its own accuracy: on a game with three-way interactions (where no permutation sampler is
/// exact), each value lies within four of its reported standard errors of the exact value, and
/// the errors shrink as the budget grows.
#[test]
fn gtg_reports_its_sampling_error_and_the_default_keeps_its_budget() {
    let round = support::many_hospitals(100, 4);
    let v = fedledger_valuation::default_estimator(100, None)
        .estimate(&round.game(), 1)
        .unwrap();
    assert_eq!(v.estimator, "gtg");
    assert!(
        v.evaluations <= fedledger_valuation::default_budget(100),
        "{}",
        v.evaluations
    );
    assert_eq!(fedledger_valuation::default_budget(100), 1_000);
    assert_eq!(fedledger_valuation::default_budget(1_000), 2_998);
    assert!(v.relative_sampling_se().is_some_and(|s| s > 0.0));

    let mut dividends = Vec::new();
    for a in 0..16u64 {
        dividends.push((1 << a, 0.1 * (a as f64 - 3.0)));
        for b in a + 1..16 {
            if (a + b) % 3 == 0 {
                dividends.push(((1 << a) | (1 << b), 0.05 * ((a * b) % 5) as f64 - 0.1));
            }
            for c in b + 1..16 {
                if (a + b + c) % 7 == 0 {
                    dividends.push(((1 << a) | (1 << b) | (1 << c), 0.3));
                }
            }
        }
    }
    let game = Dividends {
        players: 16,
        dividends,
    };
    let exact = game.shapley();
    let mut previous = f64::INFINITY;
    for budget in [400, 1600, 6400] {
        let gtg = GtgShapley {
            max_evaluations: Some(budget),
            truncation_tolerance: 0.0,
            ..GtgShapley::default()
        }
        .estimate(&game, 9)
        .unwrap();
        let se = gtg.sampling_se.clone().unwrap();
        assert_eq!(se.len(), 16);
        for ((v, e), s) in gtg.values.iter().zip(&exact).zip(&se) {
            assert!(
                (v - e).abs() <= 4.0 * s + 1e-12,
                "budget {budget}: {v} vs {e}, se {s}"
            );
        }
        let total: f64 = se.iter().map(|s| s * s).sum::<f64>().sqrt();
        assert!(
            total < previous,
            "budget {budget}: {total} after {previous}"
        );
        previous = total;
    }
    // Exact values carry no sampling error.
    let small = support::many_hospitals(8, 4);
    assert!(
        Exact::default()
            .estimate(&small.game(), 1)
            .unwrap()
            .sampling_se
            .is_none()
    );
}
