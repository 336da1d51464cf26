//! The accountants against Google's dp_accounting 0.6.0 (tests/data/dp_epsilon_reference.csv).
//!
//! `RdpDpAccounting` must reproduce the table (within 1%, in fact 1e-7, same attained orders).
//! `Rdp` (exact fractional orders) must never be below the PLD lower bound, never above
//! dp_accounting's figure, and within 1% of it except where dp_accounting is loose: at
//! sigma 0.8, q 0.1 and 1000 or 10,000 steps its absolute-value series (and, at 10,000 steps,
//! the orders 1.1 to 1.6 it drops) leave it 6% and 31% above the exact RDP figure, which is itself
//! still above dp_accounting's own PLD upper bound (`eps_pld_pessimistic`).
//!
//! `Pld` must never be below dp_accounting's optimistic PLD figure and agrees with its
//! pessimistic one to [`PLD_TOLERANCE`]; a debug build checks a representative subset, the
//! whole table is an ignored test (about 3 s in a release build).

use fedledger_privacy::{AccountantKind, epsilon_for};

struct Row {
    sigma: f64,
    q: f64,
    steps: u64,
    delta: f64,
    eps_rdp: f64,
    order: f64,
    eps_pld_pessimistic: f64,
    eps_pld_optimistic: f64,
}

fn rows() -> Vec<Row> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/dp_epsilon_reference.csv"
    );
    let mut reader = csv::Reader::from_path(path).expect("open reference table");
    let headers = reader.headers().expect("header row").clone();
    let col = |name: &str| headers.iter().position(|h| h == name).expect(name);
    let (c_sigma, c_q, c_steps, c_delta, c_eps, c_order, c_pess, c_opt) = (
        col("sigma"),
        col("q"),
        col("steps"),
        col("delta"),
        col("eps_rdp"),
        col("rdp_optimal_order"),
        col("eps_pld_pessimistic"),
        col("eps_pld_optimistic"),
    );
    reader
        .records()
        .map(|r| {
            let r = r.expect("csv record");
            let f = |c: usize| -> f64 { r[c].parse().expect("number") };
            Row {
                sigma: f(c_sigma),
                q: f(c_q),
                steps: r[c_steps].parse().expect("steps"),
                delta: f(c_delta),
                eps_rdp: f(c_eps),
                order: f(c_order),
                eps_pld_pessimistic: f(c_pess),
                eps_pld_optimistic: f(c_opt),
            }
        })
        .collect()
}

#[test]
fn dp_accounting_mode_reproduces_the_table() {
    let rows = rows();
    assert_eq!(rows.len(), 40);
    for row in &rows {
        let report = epsilon_for(
            AccountantKind::RdpDpAccounting,
            row.sigma,
            row.q,
            row.steps,
            row.delta,
        )
        .unwrap();
        let rel = (report.epsilon - row.eps_rdp).abs() / row.eps_rdp;
        assert!(
            rel <= 0.01,
            "sigma={} q={} steps={}: ours {} vs dp_accounting {} ({:.3}%)",
            row.sigma,
            row.q,
            row.steps,
            report.epsilon,
            row.eps_rdp,
            rel * 100.0
        );
        // Rounding up: never below the reference by more than float noise.
        assert!(
            report.epsilon >= row.eps_rdp * (1.0 - 1e-9),
            "sigma={} q={} steps={}: ours {} (order {:?}) vs {} (order {})",
            row.sigma,
            row.q,
            row.steps,
            report.epsilon,
            report.order,
            row.eps_rdp,
            row.order
        );
        if !row.eps_pld_optimistic.is_nan() {
            assert!(report.epsilon >= row.eps_pld_optimistic);
        }
        assert_eq!(
            report.order,
            Some(row.order),
            "sigma={} q={} steps={}: attained order",
            row.sigma,
            row.q,
            row.steps
        );
    }
}

#[test]
fn exact_mode_is_valid_and_no_looser_than_dp_accounting() {
    let known_loose = [(0.8, 0.1, 1000), (0.8, 0.1, 10_000)];
    for row in &rows() {
        let ours =
            epsilon_for(AccountantKind::Rdp, row.sigma, row.q, row.steps, row.delta).unwrap();
        let label = format!(
            "sigma={} q={} steps={}: ours {} (order {:?}) vs dp_accounting {} (order {})",
            row.sigma, row.q, row.steps, ours.epsilon, ours.order, row.eps_rdp, row.order
        );
        if !row.eps_pld_optimistic.is_nan() {
            assert!(ours.epsilon >= row.eps_pld_optimistic, "{label}");
        }
        assert!(ours.epsilon >= row.eps_pld_pessimistic, "{label}");
        assert!(ours.epsilon <= row.eps_rdp * (1.0 + 1e-7), "{label}");
        let rel = (row.eps_rdp - ours.epsilon) / row.eps_rdp;
        if known_loose.contains(&(row.sigma, row.q, row.steps)) {
            assert!(rel > 0.01, "{label}: no longer an exception");
        } else {
            assert!(rel <= 0.01, "{label}");
        }
        if ours.order != Some(row.order) {
            eprintln!("attained order differs: {label}");
        }
    }
}

/// Checks the PLD accountant on `rows`: never below dp_accounting's optimistic PLD figure (a
/// lower bound on the true epsilon, except in one row, see [`GAUSSIAN_EXACT`]), within
/// [`PLD_TOLERANCE`] of its pessimistic one. Returns the largest relative deviation and the
/// smallest margin above the optimistic figure.
fn check_pld(rows: &[Row]) -> (f64, f64) {
    let (mut max_dev, mut min_margin) = (0.0f64, f64::INFINITY);
    for row in rows {
        let started = std::time::Instant::now();
        let ours =
            epsilon_for(AccountantKind::Pld, row.sigma, row.q, row.steps, row.delta).unwrap();
        let dev = (ours.epsilon - row.eps_pld_pessimistic) / row.eps_pld_pessimistic;
        let label = format!(
            "sigma={} q={} steps={}: pld {} vs dp_accounting pessimistic {} ({:+.4}%), optimistic {} ({:.2?})",
            row.sigma,
            row.q,
            row.steps,
            ours.epsilon,
            row.eps_pld_pessimistic,
            dev * 100.0,
            row.eps_pld_optimistic,
            started.elapsed()
        );
        eprintln!("{label}");
        assert_eq!(ours.order, None);
        assert_eq!(ours.accountant, AccountantKind::Pld);
        let exact = GAUSSIAN_EXACT
            .iter()
            .find(|(s, t, _)| row.q == 1.0 && *s == row.sigma && *t == row.steps);
        if let Some((_, _, exact)) = exact {
            assert!(ours.epsilon >= *exact, "{label}: below the exact {exact}");
            assert!(
                ours.epsilon <= exact * (1.0 + 1e-10),
                "{label}: exact {exact}"
            );
        }
        let optimistic_is_wrong = (row.sigma, row.q, row.steps) == (0.8, 1.0, 1000);
        if !row.eps_pld_optimistic.is_nan() && !optimistic_is_wrong {
            assert!(ours.epsilon >= row.eps_pld_optimistic, "{label}");
            min_margin = min_margin.min(ours.epsilon - row.eps_pld_optimistic);
        }
        let tolerance = if row.q < 1.0 {
            PLD_TOLERANCE
        } else {
            PLD_TOLERANCE_FULL_BATCH
        };
        assert!(dev.abs() <= tolerance, "{label}");
        max_dev = max_dev.max(dev.abs());
    }
    eprintln!("max |relative deviation| {max_dev:e}, min margin above optimistic {min_margin:e}");
    (max_dev, min_margin)
}

/// The true epsilon of the plain Gaussian mechanism (`q = 1`) composed `steps` times at delta
/// `1e-5`, `(sigma, steps, epsilon)`: the root of `Phi(mu/2 - e/mu) - exp(e) Phi(-mu/2 - e/mu) =
/// delta`, `mu = sqrt(steps) / sigma`, by mpmath 1.3.0 `findroot` at 50 digits.
///
/// At sigma 0.8, 1000 steps dp_accounting's figures (pessimistic 949.8346000373281, optimistic
/// 949.8346000543809) are both about 0.95 above the truth: the curve at its optimistic figure is
/// 8.98e-6 < delta, so that "optimistic" figure is not a lower bound and that row is exempt
/// from the optimistic check; ours is checked against the exact value instead.
#[allow(clippy::excessive_precision)]
const GAUSSIAN_EXACT: [(f64, u64, f64); 5] = [
    (0.8, 100, 130.576_706_239_115_482_97),
    (0.8, 1000, 948.885_129_341_667_633_12),
    (0.8, 10_000, 8_344.628_049_959_484_555_4),
    (2.0, 1000, 191.549_201_432_711_228_88),
    (2.0, 10_000, 1_462.285_015_964_779_788),
];

/// Largest relative deviation from dp_accounting's pessimistic PLD figure allowed for the
/// subsampled rows: the same discretisation at the same interval (measured on the whole table:
/// at most 3.7e-6).
const PLD_TOLERANCE: f64 = 1e-5;

/// The same for `q = 1`, where ours is the exact closed form (checked against
/// [`GAUSSIAN_EXACT`]) and dp_accounting's figure is up to 0.1% loose (sigma 0.8, 1000 steps).
const PLD_TOLERANCE_FULL_BATCH: f64 = 0.01;

/// Rows cheap enough for a debug build (composed windows of at most a few hundred thousand
/// buckets); the full table is [`pld_matches_the_whole_table`].
#[test]
fn pld_matches_a_representative_subset() {
    let subset: Vec<Row> = rows()
        .into_iter()
        .filter(|r| {
            [
                (0.8, 0.001, 1000),
                (0.8, 0.01, 100),
                (0.8, 0.1, 10),
                (0.8, 1.0, 10_000),
                (2.0, 0.001, 10_000),
                (2.0, 0.01, 1000),
                (2.0, 0.1, 100),
                (2.0, 1.0, 1),
            ]
            .contains(&(r.sigma, r.q, r.steps))
        })
        .collect();
    assert_eq!(subset.len(), 8);
    check_pld(&subset);
}

/// The whole table; slow in a debug build: `cargo test --release -p fedledger-privacy --test
/// reference_epsilon -- --ignored`.
#[test]
#[ignore = "slow in debug builds; run with --release -- --ignored"]
fn pld_matches_the_whole_table() {
    check_pld(&rows());
}
