//! The RDP accountant against Google's dp_accounting 0.6.0 (tests/data/dp_epsilon_reference.csv).

use fedledger_privacy::{AccountantKind, epsilon_for};

struct Row {
    sigma: f64,
    q: f64,
    steps: u64,
    delta: f64,
    eps_rdp: f64,
    order: f64,
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
    let (c_sigma, c_q, c_steps, c_delta, c_eps, c_order, c_opt) = (
        col("sigma"),
        col("q"),
        col("steps"),
        col("delta"),
        col("eps_rdp"),
        col("rdp_optimal_order"),
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
                eps_pld_optimistic: f(c_opt),
            }
        })
        .collect()
}

#[test]
fn rdp_epsilon_within_one_percent_and_never_below_pld_lower_bound() {
    let rows = rows();
    assert_eq!(rows.len(), 40);
    for row in &rows {
        let report =
            epsilon_for(AccountantKind::Rdp, row.sigma, row.q, row.steps, row.delta).unwrap();
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
        assert!(report.epsilon >= row.eps_rdp * (1.0 - 1e-9));
        if !row.eps_pld_optimistic.is_nan() {
            assert!(report.epsilon >= row.eps_pld_optimistic);
        }
        assert_eq!(
            report.order, row.order,
            "sigma={} q={} steps={}: attained order",
            row.sigma, row.q, row.steps
        );
    }
}
