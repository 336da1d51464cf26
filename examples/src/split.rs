//! Seeded, stratified splits: a held-out test set, the coordinator's validation set, and a pool
//! the hospitals draw from without overlap.

use std::collections::VecDeque;

use anyhow::bail;
use fedledger_model::Dataset;
use rand::{SeedableRng, seq::SliceRandom};

use crate::scenario::Hospital;

/// Row indices of the three parts.
#[derive(Clone, Debug)]
pub struct Split {
    pub test: Vec<usize>,
    pub validation: Vec<usize>,
    pub pool: Vec<usize>,
}

fn rng(seed: u64) -> chacha20::ChaCha20Rng {
    chacha20::ChaCha20Rng::seed_from_u64(seed)
}

/// Stratified split: `test_frac` and `val_frac` of every class, the rest to the pool.
pub fn stratified(data: &Dataset, test_frac: f64, val_frac: f64, seed: u64) -> Split {
    let mut r = rng(seed);
    let mut split = Split {
        test: Vec::new(),
        validation: Vec::new(),
        pool: Vec::new(),
    };
    for class in 0..data.classes {
        let mut rows: Vec<usize> = (0..data.len())
            .filter(|&i| data.y[i] as usize == class)
            .collect();
        rows.shuffle(&mut r);
        let n_test = (rows.len() as f64 * test_frac).round() as usize;
        let n_val = (rows.len() as f64 * val_frac).round() as usize;
        split.test.extend_from_slice(&rows[..n_test]);
        split
            .validation
            .extend_from_slice(&rows[n_test..n_test + n_val]);
        split.pool.extend_from_slice(&rows[n_test + n_val..]);
    }
    split.test.sort_unstable();
    split.validation.sort_unstable();
    split.pool.shuffle(&mut r);
    split
}

/// Draw each honest hospital's rows from the pool without overlap. A hospital with
/// `prefer_class = k` takes `preference` of its rows from class k (when available), which gives
/// the unequal class balance of real sites. Returns row indices per hospital (empty for
/// hospitals that do not train).
pub fn assign(
    data: &Dataset,
    pool: &[usize],
    hospitals: &[Hospital],
) -> anyhow::Result<Vec<Vec<usize>>> {
    let mut by_class: Vec<VecDeque<usize>> = vec![VecDeque::new(); data.classes];
    for &i in pool {
        by_class[data.y[i] as usize].push_back(i);
    }
    let mut out = Vec::new();
    for h in hospitals {
        if !h.trains() {
            out.push(Vec::new());
            continue;
        }
        let mut rows = Vec::with_capacity(h.rows);
        if let Some(k) = h.prefer_class {
            if k >= data.classes {
                bail!(
                    "hospital {}: prefer_class {k} but the data has {} classes",
                    h.name,
                    data.classes
                );
            }
            let want = (h.rows as f64 * h.preference).round() as usize;
            while rows.len() < want {
                match by_class[k].pop_front() {
                    Some(i) => rows.push(i),
                    None => break,
                }
            }
        }
        // The rest round-robin over classes, keeping the pool's class mix.
        let mut c = 0;
        let mut empty = 0;
        while rows.len() < h.rows && empty < data.classes {
            match by_class[c % data.classes].pop_front() {
                Some(i) => {
                    rows.push(i);
                    empty = 0;
                }
                None => empty += 1,
            }
            c += 1;
        }
        if rows.len() < h.rows {
            let available: usize = pool.len();
            bail!(
                "hospital {} wants {} rows but the training pool ({available} rows) is exhausted",
                h.name,
                h.rows
            );
        }
        rows.sort_unstable();
        out.push(rows);
    }
    Ok(out)
}

/// Flip a seeded `fraction` of the labels (binary: 0 <-> 1; otherwise to a random other class).
pub fn flip_labels(data: &mut Dataset, fraction: f64, seed: u64) {
    if fraction <= 0.0 || data.is_empty() {
        return;
    }
    let mut r = rng(seed);
    let mut idx: Vec<usize> = (0..data.len()).collect();
    idx.shuffle(&mut r);
    let n = ((data.len() as f64) * fraction).round() as usize;
    for &i in &idx[..n.min(data.len())] {
        let y = data.y[i];
        data.y[i] = if data.classes == 2 {
            1 - y
        } else {
            let shift = 1 + (rand::RngExt::random_range(&mut r, 0..(data.classes as u32 - 1)));
            (y + shift) % data.classes as u32
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BREAST_CANCER_CSV, scenario::Behaviour};

    fn data() -> Dataset {
        Dataset::from_csv_reader(BREAST_CANCER_CSV.as_bytes(), "malignant").unwrap()
    }

    #[test]
    fn split_is_stratified_disjoint_and_seeded() {
        let d = data();
        let s = stratified(&d, 0.2, 0.15, 7);
        assert_eq!(s.test.len() + s.validation.len() + s.pool.len(), d.len());
        let mut all: Vec<usize> = s
            .test
            .iter()
            .chain(&s.validation)
            .chain(&s.pool)
            .copied()
            .collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), d.len());
        let share = |rows: &[usize]| {
            rows.iter().filter(|&&i| d.y[i] == 1).count() as f64 / rows.len() as f64
        };
        let overall = share(&(0..d.len()).collect::<Vec<_>>());
        assert!((share(&s.test) - overall).abs() < 0.02);
        assert!((share(&s.validation) - overall).abs() < 0.03);
        assert_eq!(stratified(&d, 0.2, 0.15, 7).pool, s.pool);
        assert_ne!(stratified(&d, 0.2, 0.15, 8).pool, s.pool);
    }

    #[test]
    fn hospitals_do_not_overlap_and_respect_preference() {
        let d = data();
        let s = stratified(&d, 0.2, 0.15, 1);
        let hs = vec![
            Hospital::honest("a", 100).with_preference(1, 0.8),
            Hospital::honest("b", 80),
            Hospital {
                behaviour: Behaviour::Zero,
                ..Hospital::honest("z", 50)
            },
        ];
        let rows = assign(&d, &s.pool, &hs).unwrap();
        assert_eq!(rows[0].len(), 100);
        assert_eq!(rows[1].len(), 80);
        assert!(rows[2].is_empty());
        assert!(rows[0].iter().all(|i| !rows[1].contains(i)));
        let ones = rows[0].iter().filter(|&&i| d.y[i] == 1).count();
        assert!(ones >= 80, "preferred class share: {ones}/100");
        let too_many = vec![Hospital::honest("x", 10_000)];
        assert!(assign(&d, &s.pool, &too_many).is_err());
    }

    #[test]
    fn flipping_changes_exactly_the_fraction() {
        let mut d = data();
        let before = d.y.clone();
        flip_labels(&mut d, 0.3, 3);
        let changed = before.iter().zip(&d.y).filter(|(a, b)| a != b).count();
        assert_eq!(changed, (before.len() as f64 * 0.3).round() as usize);
    }
}
