//! Each hospital's update history, which the selecting strategies (Multi-Krum, Bulyan) compare
//! instead of the round's updates alone: an exponential moving average of the updates it sent,
//! `h = w h_before + (1 - w) delta` (its first update stands alone), as in Karimireddy, He and
//! Jaggi 2021, "Learning from History for Byzantine Robust Optimization".
//!
//! Why: with DP-SGD every update carries noise of its own, and at the privacy levels hospitals
//! use that noise is larger than the difference between an honest update and a label-flipping
//! one, so distances between single updates select almost at random. An attacker's bias repeats
//! from round to round, while the noise, drawn afresh each round, averages out: with weight `w`
//! the history's noise variance is `(1 - w) / (1 + w)` of one update's (1/19 at `w` = 0.9),
//! while a steady bias keeps its full size. The strategy selects on the histories and averages
//! the selected hospitals' updates of this round, so the aggregate, and the valuation game
//! built on the same updates, stay those of the round.
//!
//! What it costs and where it is weak: one model-sized vector per hospital, kept as a blob and
//! named in each round's record, so replay recomputes the selection from the record alone. A
//! hospital that behaves for many rounds and then attacks once moves its history by `1 - w` of
//! the attack, so it can be selected in that round; the norm bound (`max_update_norm`) caps the
//! damage of that round, and a steady attack is left out as its history turns. A hospital that
//! joins late is compared on a short, noisier history, so it may be left out in its first
//! rounds.
//!
//! Pure: no I/O, no clock.

/// The history after a round: `w before + (1 - w) delta`, or `delta` when the hospital has no
/// history yet. Computed per coordinate in `f64` and rounded once, so replay gets the same bits.
pub fn advance(weight: f64, before: Option<&[f32]>, delta: &[f32]) -> Vec<f32> {
    match before {
        Some(b) if b.len() == delta.len() => b
            .iter()
            .zip(delta)
            .map(|(h, d)| (weight * f64::from(*h) + (1.0 - weight) * f64::from(*d)) as f32)
            .collect(),
        _ => delta.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_update_stands_alone_and_later_ones_are_averaged_in() {
        assert_eq!(advance(0.9, None, &[1.0, -2.0]), vec![1.0, -2.0]);
        let h = advance(0.75, Some(&[4.0, 0.0]), &[0.0, 8.0]);
        assert_eq!(h, vec![3.0, 2.0]);
        // A history of another length (the model changed shape) starts afresh.
        assert_eq!(advance(0.5, Some(&[1.0]), &[2.0, 2.0]), vec![2.0, 2.0]);
    }

    /// The reason for the module: noise drawn afresh each round shrinks in the history, a
    /// steady bias does not, so a biased hospital's history stands out where its single update
    /// did not.
    #[test]
    fn a_steady_bias_stands_out_of_the_noise_in_the_history() {
        use rand::{RngExt, SeedableRng};
        let mut rng = chacha20::ChaCha20Rng::seed_from_u64(7);
        let d = 2000;
        let mut gauss = |scale: f32| -> Vec<f32> {
            (0..d)
                .map(|_| {
                    // Sum of uniforms: near Gaussian, unit variance.
                    let s: f32 = (0..12).map(|_| rng.random::<f32>()).sum();
                    (s - 6.0) * scale
                })
                .collect()
        };
        let signal: Vec<f32> = vec![0.2; d];
        let bias: Vec<f32> = signal.iter().map(|s| -s).collect();
        let (mut honest_a, mut honest_b, mut liar) = (None, None, None);
        let dist = |a: &[f32], b: &[f32]| -> f64 {
            a.iter()
                .zip(b)
                .map(|(x, y)| f64::from(x - y).powi(2))
                .sum::<f64>()
                .sqrt()
        };
        let mut single_ratio = 0.0;
        for _ in 0..30 {
            let mk = |base: &[f32], noise: Vec<f32>| -> Vec<f32> {
                base.iter().zip(noise).map(|(b, n)| b + n).collect()
            };
            let (a, b, l) = (
                mk(&signal, gauss(0.5)),
                mk(&signal, gauss(0.5)),
                mk(&bias, gauss(0.5)),
            );
            single_ratio = dist(&l, &a) / dist(&a, &b);
            honest_a = Some(advance(0.9, honest_a.as_deref(), &a));
            honest_b = Some(advance(0.9, honest_b.as_deref(), &b));
            liar = Some(advance(0.9, liar.as_deref(), &l));
        }
        let (a, b, l) = (honest_a.unwrap(), honest_b.unwrap(), liar.unwrap());
        let history_ratio = dist(&l, &a) / dist(&a, &b);
        // Noise 0.5 and a bias of 0.4 per coordinate: in one round the liar is barely farther
        // from an honest hospital than two honest ones are (sqrt(1.32) = 1.15 expected); in
        // the history, whose noise variance is 1/19 of a round's, sqrt(1 + 0.32 x 19) = 2.7.
        assert!(single_ratio < 1.3, "single round ratio {single_ratio}");
        assert!(history_ratio > 2.0, "history ratio {history_ratio}");
    }
}
