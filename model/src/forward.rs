//! The forward pass of [`crate::eval`]: logits of a block of rows at a time, a tile of a layer's
//! outputs at a time, in `f64`.
//!
//! Evaluated one row at a time, a wide model is memory-bound: every row reads all the weights,
//! and a wide layer's `f64` outputs (4 MB for 500,000 units) are read and written once per input
//! feature. Here a block of up to [`ROWS`] rows shares each read of a weight, a tile of
//! [`TILE`] outputs stays in the first-level cache while the inputs are added in, and a layer
//! followed by a narrow one (at most [`NARROW`] outputs) is never held whole: each tile of its
//! outputs is added into the next layer's sums as soon as it is computed.
//!
//! Every value is computed by the same operations in the same order as one row at a time would
//! (the bias first, then each input in ascending order, an input of exactly zero skipped; a
//! single output as the bias plus the sum of the products), so the bits are those of the
//! straightforward pass: the tests below hold the two to identical bits.

use crate::spec::ModelSpec;

/// Rows evaluated together (fewer when a layer held whole would need more than
/// [`ACTIVATION_BYTES`]).
const ROWS: usize = 16;

/// A layer's outputs computed at a time: with [`ROWS`] rows, 16 KiB of `f64` sums.
const TILE: usize = 128;

/// A layer with at most this many outputs takes the previous layer's outputs tile by tile.
const NARROW: usize = 256;

/// What the layers held whole may take for a block of rows.
const ACTIVATION_BYTES: usize = 512 * 1024;

/// One dense layer's parameters: `w` is `n_in x n_out` row-major, then the `n_out` biases.
struct Layer<'a> {
    n_in: usize,
    n_out: usize,
    w: &'a [f32],
    b: &'a [f32],
}

/// Logits of the `n` rows of `x` (`n x spec.features`, row-major), `n x spec.outputs()`
/// row-major. `params` must have the spec's length (the caller checks it).
pub(crate) fn logits(spec: &ModelSpec, params: &[f32], x: &[f32], n: usize) -> Vec<f64> {
    let mut layers = Vec::new();
    let mut off = 0;
    for (n_in, n_out) in spec.layer_dims() {
        let (w, b) = params[off..off + n_in * n_out + n_out].split_at(n_in * n_out);
        off += n_in * n_out + n_out;
        layers.push(Layer { n_in, n_out, w, b });
    }
    // Which layers hand their outputs on tile by tile, and so the widest output held whole.
    let streamed: Vec<bool> = (0..layers.len())
        .map(|l| l + 1 < layers.len() && layers[l + 1].n_out <= NARROW)
        .collect();
    let widest = layers
        .iter()
        .zip(&streamed)
        .filter(|(_, s)| !**s)
        .map(|(l, _)| l.n_out)
        .chain([spec.features])
        .max()
        .unwrap_or(1);
    let rows = (ACTIVATION_BYTES / (8 * widest)).clamp(1, ROWS);
    let outputs = spec.outputs();
    let d = spec.features;
    let mut out = Vec::with_capacity(n * outputs);
    let (mut h, mut z, mut tile) = (Vec::new(), Vec::new(), Vec::new());
    for first in (0..n).step_by(rows) {
        let rn = rows.min(n - first);
        // Activations are row-major: the block's row `r` at `r * width..(r + 1) * width`.
        h.clear();
        h.extend(x[first * d..(first + rn) * d].iter().map(|&v| f64::from(v)));
        let mut l = 0;
        while l < layers.len() {
            let hidden = l + 1 < layers.len();
            if streamed[l] {
                let next = &layers[l + 1];
                let mut sums = Sums::new(next, rn, std::mem::take(&mut z));
                for j0 in (0..layers[l].n_out).step_by(TILE) {
                    let j1 = (j0 + TILE).min(layers[l].n_out);
                    outputs_of(&layers[l], &h, rn, j0..j1, &mut tile, true);
                    sums.add(next, &tile, j0..j1);
                }
                z = sums.finish(next, l + 2 < layers.len());
                l += 2;
            } else {
                let width = layers[l].n_out;
                z.clear();
                z.resize(rn * width, 0.0);
                for j0 in (0..width).step_by(TILE) {
                    let j1 = (j0 + TILE).min(width);
                    outputs_of(&layers[l], &h, rn, j0..j1, &mut tile, hidden);
                    for (r, t) in tile.chunks_exact(j1 - j0).enumerate() {
                        z[r * width + j0..r * width + j1].copy_from_slice(t);
                    }
                }
                l += 1;
            }
            std::mem::swap(&mut h, &mut z);
        }
        out.extend_from_slice(&h);
    }
    out
}

/// Outputs `js` of `layer` for the `rn` rows of `h` (row-major) into `tile` (row-major, `js.len()`
/// to a row), rectified when the layer is a hidden one.
fn outputs_of(
    layer: &Layer<'_>,
    h: &[f64],
    rn: usize,
    js: std::ops::Range<usize>,
    tile: &mut Vec<f64>,
    relu: bool,
) {
    tile.clear();
    let n_in = layer.n_in;
    if layer.n_out == 1 {
        // One output: the bias plus the sum of the products (`js` is `0..1`), the block's rows'
        // sums interleaved.
        let mut dot = [sum_start(); ROWS];
        for (k, &w) in layer.w.iter().enumerate() {
            let w = f64::from(w);
            for (r, s) in dot[..rn].iter_mut().enumerate() {
                *s += h[r * n_in + k] * w;
            }
        }
        let b = f64::from(layer.b[0]);
        tile.extend(dot[..rn].iter().map(|&s| b + s));
    } else {
        let width = js.len();
        for _ in 0..rn {
            tile.extend(layer.b[js.clone()].iter().map(|&b| f64::from(b)));
        }
        for k in 0..n_in {
            let w = &layer.w[k * layer.n_out + js.start..k * layer.n_out + js.end];
            for (r, z) in tile.chunks_exact_mut(width).enumerate() {
                add_input(z, h[r * n_in + k], w);
            }
        }
    }
    if relu {
        tile.iter_mut().for_each(|v| *v = v.max(0.0));
    }
}

/// Adds one input `x` of a row, through weights `w`, into that row's sums `z` of the outputs
/// it feeds. An input of exactly zero is skipped, as the one-row pass skips it.
#[inline]
fn add_input(z: &mut [f64], x: f64, w: &[f32]) {
    if x == 0.0 {
        return;
    }
    for (z, &w) in z.iter_mut().zip(w) {
        *z += x * f64::from(w);
    }
}

/// The value `Iterator::sum` of `f64` starts from (the one-row pass sums a single output's
/// products with it).
fn sum_start() -> f64 {
    std::iter::empty::<f64>().sum()
}

/// A narrow layer's sums over its inputs so far, for a block of rows: its outputs (row-major,
/// started from the biases) or, for a single output, the running sum of the products.
struct Sums {
    rows: usize,
    z: Vec<f64>,
    dot: [f64; ROWS],
}

impl Sums {
    /// Sums for `rn` rows, in `z`'s memory.
    fn new(layer: &Layer<'_>, rn: usize, mut z: Vec<f64>) -> Self {
        z.clear();
        if layer.n_out > 1 {
            for _ in 0..rn {
                z.extend(layer.b.iter().map(|&b| f64::from(b)));
            }
        }
        Self {
            rows: rn,
            z,
            dot: [sum_start(); ROWS],
        }
    }

    /// Adds the layer's inputs `ks`, whose values for the block's rows are `tile`
    /// (row-major, `ks.len()` to a row).
    fn add(&mut self, layer: &Layer<'_>, tile: &[f64], ks: std::ops::Range<usize>) {
        let (rn, width) = (self.rows, ks.len());
        if layer.n_out == 1 {
            for (i, k) in ks.enumerate() {
                let w = f64::from(layer.w[k]);
                for (r, s) in self.dot[..rn].iter_mut().enumerate() {
                    *s += tile[r * width + i] * w;
                }
            }
        } else {
            let n_out = layer.n_out;
            for (x, z) in tile.chunks_exact(width).zip(self.z.chunks_exact_mut(n_out)) {
                for (&x, k) in x.iter().zip(ks.clone()) {
                    add_input(z, x, &layer.w[k * n_out..(k + 1) * n_out]);
                }
            }
        }
    }

    /// The layer's outputs, rectified when it is a hidden one.
    fn finish(mut self, layer: &Layer<'_>, relu: bool) -> Vec<f64> {
        if layer.n_out == 1 {
            let b = f64::from(layer.b[0]);
            self.z.extend(self.dot[..self.rows].iter().map(|&s| b + s));
        }
        if relu {
            self.z.iter_mut().for_each(|v| *v = v.max(0.0));
        }
        self.z
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The straightforward pass, one row at a time: the bits [`logits`] must give.
    fn one_row_at_a_time(spec: &ModelSpec, params: &[f32], x: &[f32], n: usize) -> Vec<f64> {
        let dims = spec.layer_dims();
        let mut out = Vec::new();
        for r in 0..n {
            let mut h: Vec<f64> = x[r * spec.features..(r + 1) * spec.features]
                .iter()
                .map(|&v| f64::from(v))
                .collect();
            let mut off = 0;
            for (l, &(n_in, n_out)) in dims.iter().enumerate() {
                let (w, b) = params[off..off + n_in * n_out + n_out].split_at(n_in * n_out);
                off += n_in * n_out + n_out;
                let mut z = Vec::new();
                if n_out == 1 {
                    let dot: f64 = h.iter().zip(w).map(|(&hk, &wk)| hk * f64::from(wk)).sum();
                    z.push(f64::from(b[0]) + dot);
                } else {
                    z.extend(b.iter().map(|&v| f64::from(v)));
                    for (k, &hk) in h.iter().enumerate() {
                        if hk == 0.0 {
                            continue;
                        }
                        for (zj, &wkj) in z.iter_mut().zip(&w[k * n_out..(k + 1) * n_out]) {
                            *zj += hk * f64::from(wkj);
                        }
                    }
                }
                if l + 1 < dims.len() {
                    z.iter_mut().for_each(|v| *v = v.max(0.0));
                }
                h = z;
            }
            out.extend_from_slice(&h);
        }
        out
    }

    fn bits(v: &[f64]) -> Vec<u64> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// Values with exact zeros of both signs among them (skipped inputs, rectified units).
    fn value() -> impl Strategy<Value = f32> {
        prop_oneof![
            6 => -2.0f32..2.0,
            1 => Just(0.0f32),
            1 => Just(-0.0f32),
        ]
    }

    fn case(widths: Vec<usize>, classes: usize, n: usize) -> impl Strategy<Value = Case> {
        let features = widths[0];
        let spec = ModelSpec::mlp(features, widths[1..].to_vec(), classes);
        let spec = if widths.len() == 1 {
            ModelSpec::logreg(features, classes)
        } else {
            spec
        };
        let p = spec.num_params();
        (
            proptest::collection::vec(value(), p),
            proptest::collection::vec(value(), n * features),
        )
            .prop_map(move |(params, x)| Case {
                spec: spec.clone(),
                params,
                x,
                n,
            })
    }

    #[derive(Debug)]
    struct Case {
        spec: ModelSpec,
        params: Vec<f32>,
        x: Vec<f32>,
        n: usize,
    }

    fn cases() -> impl Strategy<Value = Case> {
        // Widths around the tile and the narrow-layer bound, rows around the block size.
        let width = prop_oneof![
            1usize..4,
            5usize..40,
            Just(TILE),
            Just(NARROW + 1),
            130usize..300
        ];
        (
            proptest::collection::vec(width, 1..5),
            prop_oneof![Just(2usize), 3usize..12],
            prop_oneof![1usize..5, Just(ROWS), ROWS + 1..3 * ROWS + 3],
        )
            .prop_flat_map(|(widths, classes, n)| case(widths, classes, n))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn blocks_and_tiles_give_the_bits_of_one_row_at_a_time(c in cases()) {
            prop_assert_eq!(
                bits(&logits(&c.spec, &c.params, &c.x, c.n)),
                bits(&one_row_at_a_time(&c.spec, &c.params, &c.x, c.n))
            );
        }
    }

    /// A layer too wide for a block of rows held whole: the rows go fewer at a time, with the
    /// same bits.
    #[test]
    fn a_wide_layer_held_whole_takes_fewer_rows_at_a_time() {
        // 3 -> 40,000 -> 300 -> 2: the wide layer feeds one wider than NARROW, so it is held
        // whole (40,000 x 8 bytes: one row per block within ACTIVATION_BYTES).
        let spec = ModelSpec::mlp(3, vec![40_000, 300], 2);
        let params: Vec<f32> = (0..spec.num_params())
            .map(|i| ((i * 7919) % 2003) as f32 / 2003.0 - 0.5)
            .collect();
        let n = 5;
        let x: Vec<f32> = (0..n * 3).map(|i| i as f32 * 0.25 - 1.0).collect();
        let got = logits(&spec, &params, &x, n);
        assert_eq!(got.len(), n);
        assert_eq!(bits(&got), bits(&one_row_at_a_time(&spec, &params, &x, n)));
    }
}
