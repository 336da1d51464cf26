//! What the logistic regression itself can reach on the curve's splits: one site holding every
//! hospital's rows, no DP, full-batch gradient descent run to convergence, for several L2
//! penalties; validation and test accuracy per seed. The federation's accuracy cannot be
//! expected above this ceiling.
//!
//! ```text
//! cargo run --release --example logreg_ceiling -- --data breast_cancer --seeds 5
//! ```

use clap::Parser;
use fedledger_examples::{curve::summarise, load_data, scenario::Scenario, split};
use fedledger_model::{Dataset, Standardiser};

/// Centralised, non-private, converged logistic regression on the curve's splits.
#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value = "breast_cancer")]
    data: String,
    #[arg(long, default_value_t = 5)]
    seeds: u64,
    /// L2 penalties (on the weights, not the bias), comma-separated.
    #[arg(long, default_value = "0,0.0001,0.001,0.01,0.1", value_delimiter = ',')]
    l2: Vec<f64>,
    /// Gradient-descent iterations.
    #[arg(long, default_value_t = 20000)]
    iters: usize,
    /// Step size.
    #[arg(long, default_value_t = 0.5)]
    lr: f64,
    /// Per-example gradient clipping norm as DP-SGD applies it (0: none).
    #[arg(long, default_value_t = 0.0)]
    clip: f64,
}

/// Multinomial logistic regression by full-batch gradient descent; weights `[d, k]` then bias.
fn fit(data: &Dataset, l2: f64, iters: usize, lr: f64, clip: f64) -> (Vec<f64>, Vec<f64>) {
    let (d, k, n) = (data.n_features(), data.classes, data.len());
    let mut w = vec![0.0f64; d * k];
    let mut b = vec![0.0f64; k];
    for _ in 0..iters {
        let mut gw = vec![0.0f64; d * k];
        let mut gb = vec![0.0f64; k];
        for i in 0..n {
            let x = data.row(i);
            let p = proba(&w, &b, x, k);
            let r: Vec<f64> = (0..k)
                .map(|c| p[c] - f64::from(u8::from(data.y[i] as usize == c)))
                .collect();
            // Per-example gradient norm: |r| * sqrt(|x|^2 + 1) (weights and bias).
            let xn: f64 = x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() + 1.0;
            let norm = (r.iter().map(|v| v * v).sum::<f64>() * xn).sqrt();
            let scale = if clip > 0.0 && norm > clip {
                clip / norm
            } else {
                1.0
            };
            for c in 0..k {
                let g = r[c] * scale;
                gb[c] += g;
                for j in 0..d {
                    gw[j * k + c] += g * f64::from(x[j]);
                }
            }
        }
        for (wi, gi) in w.iter_mut().zip(&gw) {
            *wi -= lr * (gi / n as f64 + l2 * *wi);
        }
        for (bi, gi) in b.iter_mut().zip(&gb) {
            *bi -= lr * gi / n as f64;
        }
    }
    (w, b)
}

fn proba(w: &[f64], b: &[f64], x: &[f32], k: usize) -> Vec<f64> {
    let mut z: Vec<f64> = b.to_vec();
    for (j, &xj) in x.iter().enumerate() {
        for c in 0..k {
            z[c] += w[j * k + c] * f64::from(xj);
        }
    }
    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

fn accuracy(w: &[f64], b: &[f64], data: &Dataset) -> f64 {
    let k = data.classes;
    let right = (0..data.len())
        .filter(|&i| {
            let p = proba(w, b, data.row(i), k);
            let best = (0..k).max_by(|&a, &c| p[a].total_cmp(&p[c])).unwrap_or(0);
            best == data.y[i] as usize
        })
        .count();
    right as f64 / data.len() as f64
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let data = load_data(&args.data, None)?.data;
    println!("l2        val mean  test mean  test sd   test per seed");
    for &l2 in &args.l2 {
        let (mut val, mut test) = (Vec::new(), Vec::new());
        for seed in 1..=args.seeds {
            let s = split::stratified(&data, 0.2, 0.15, seed);
            let scenario = Scenario::default_five(s.pool.len());
            let rows = split::assign(&data, &s.pool, &scenario.hospitals)?;
            let all: Vec<usize> = rows.concat();
            let st = Standardiser::fit(&data.subset(&s.validation));
            let (mut tr, mut va, mut te) = (
                data.subset(&all),
                data.subset(&s.validation),
                data.subset(&s.test),
            );
            st.apply(&mut tr)?;
            st.apply(&mut va)?;
            st.apply(&mut te)?;
            let (w, b) = fit(&tr, l2, args.iters, args.lr, args.clip);
            val.push(accuracy(&w, &b, &va));
            test.push(accuracy(&w, &b, &te));
        }
        let (v, t) = (summarise(&val), summarise(&test));
        let each: Vec<String> = test.iter().map(|a| format!("{a:.4}")).collect();
        println!(
            "{l2:<8}  {:.4}    {:.4}     {:.4}    {}",
            v.mean,
            t.mean,
            t.sd,
            each.join(" ")
        );
    }
    Ok(())
}
