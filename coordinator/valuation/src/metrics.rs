//! Agreement measures between two value vectors (estimate against exact).

/// Spearman rank correlation of `a` and `b` (Pearson correlation of their ranks, ties given the
/// mean rank). `NaN` if the lengths differ, there are fewer than two entries, or one side is
/// constant.
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    if a.len() != b.len() || a.len() < 2 {
        return f64::NAN;
    }
    pearson(&ranks(a), &ranks(b))
}

/// Relative L2 error `||estimate - exact|| / ||exact||`: 0 when both are zero, infinite when only
/// `exact` is, `NaN` if the lengths differ.
pub fn relative_l2(estimate: &[f64], exact: &[f64]) -> f64 {
    if estimate.len() != exact.len() {
        return f64::NAN;
    }
    let diff: f64 = estimate
        .iter()
        .zip(exact)
        .map(|(e, x)| (e - x) * (e - x))
        .sum::<f64>()
        .sqrt();
    let norm: f64 = exact.iter().map(|x| x * x).sum::<f64>().sqrt();
    if diff == 0.0 {
        0.0
    } else if norm == 0.0 {
        f64::INFINITY
    } else {
        diff / norm
    }
}

fn ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&i, &j| x[i].total_cmp(&x[j]));
    let mut ranks = vec![0.0; x.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && x[order[end]] == x[order[start]] {
            end += 1;
        }
        let mean_rank = (start + end - 1) as f64 / 2.0 + 1.0;
        for &i in &order[start..end] {
            ranks[i] = mean_rank;
        }
        start = end;
    }
    ranks
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    sab / (saa * sbb).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_of_monotone_and_reversed() {
        let a = [1.0, 2.0, 3.0, 10.0];
        assert!((spearman(&a, &[0.1, 0.2, 0.25, 7.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&a, &[4.0, 3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        // Ties get the mean rank: ranks (1, 2.5, 2.5, 4) against (1, 2, 3, 4).
        let r = spearman(&[1.0, 2.0, 2.0, 3.0], &a);
        assert!((r - 4.5 / (4.5f64 * 5.0).sqrt()).abs() < 1e-12, "{r}");
        assert!(spearman(&[1.0], &[1.0]).is_nan());
    }

    #[test]
    fn relative_l2_cases() {
        assert_eq!(relative_l2(&[3.0, 4.0], &[3.0, 4.0]), 0.0);
        assert!((relative_l2(&[3.0, 5.0], &[3.0, 4.0]) - 0.2).abs() < 1e-12);
        assert_eq!(relative_l2(&[1.0], &[0.0]), f64::INFINITY);
        assert!(relative_l2(&[1.0], &[1.0, 2.0]).is_nan());
    }
}
