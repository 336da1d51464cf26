//! L2 clipping that really lands inside the ball.
//!
//! Scaling a vector by `bound / norm` in `f32` can leave its norm a few ulps above `bound`, which
//! would break the sensitivity every privacy claim rests on. [`clip_l2`] scales by
//! `bound / norm * (1 - 2^-20)` (the margin covers the `f32` rounding of each product and the
//! rounding of an `f64` norm over up to about a billion coordinates) and then verifies, shrinking
//! again in the (never observed) case that the recomputed norm still exceeds `bound`.

use crate::error::PrivacyError;

/// Relative margin by which clipping undershoots the bound.
pub const CLIP_MARGIN: f64 = 1.0 / (1u64 << 20) as f64;

/// Euclidean norm of `values`, accumulated in `f64` (finite for every finite `f32` input).
pub fn l2_norm(values: &[f32]) -> f64 {
    values
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt()
}

/// The factor by which a vector of norm `norm` is scaled to clip it to `bound`: `1` when it is
/// already inside, `bound / norm * (1 - CLIP_MARGIN)` otherwise, `0` for a non-finite norm.
///
/// For callers that clip implicitly, e.g. weighting per-example losses before a backward pass.
pub fn clip_factor(norm: f64, bound: f64) -> f64 {
    if !norm.is_finite() {
        0.0
    } else if norm <= bound {
        1.0
    } else {
        bound / norm * (1.0 - CLIP_MARGIN)
    }
}

/// Clips `values` in place to L2 norm at most `bound` and returns the original norm.
///
/// A vector holding NaN or an infinity has no meaningful direction; it is set to zero (it then
/// contributes nothing, which keeps the sensitivity bound without a data-dependent error path)
/// and its non-finite norm is returned so the caller can count it. `bound` must be finite and
/// `>= 0`.
pub fn clip_l2(values: &mut [f32], bound: f64) -> Result<f64, PrivacyError> {
    if !(bound.is_finite() && bound >= 0.0) {
        return Err(PrivacyError::InvalidParameter {
            name: "bound",
            value: bound,
            reason: "clipping bound must be finite and >= 0",
        });
    }
    let norm = l2_norm(values);
    if !norm.is_finite() {
        values.fill(0.0);
        return Ok(norm);
    }
    if norm <= bound {
        return Ok(norm);
    }
    let mut factor = clip_factor(norm, bound);
    let mut current = norm;
    while current > bound {
        for v in values.iter_mut() {
            #[allow(clippy::cast_possible_truncation)] // |v * factor| <= |v|
            {
                *v = (f64::from(*v) * factor) as f32;
            }
        }
        current = l2_norm(values);
        factor = 1.0 - CLIP_MARGIN;
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn clipped_norm_never_exceeds_bound(
            values in prop::collection::vec(-1.0e6f32..1.0e6, 0..300),
            bound in 0.0f64..1.0e3,
        ) {
            let mut v = values.clone();
            let original = clip_l2(&mut v, bound).unwrap();
            prop_assert!(l2_norm(&v) <= bound);
            prop_assert_eq!(original, l2_norm(&values));
            if original <= bound {
                prop_assert_eq!(v, values);
            } else {
                // Direction kept, norm within the margin of the bound.
                prop_assert!(l2_norm(&v) >= bound * (1.0 - 4.0 * CLIP_MARGIN) - 1e-30);
            }
        }

        #[test]
        fn tiny_and_huge_values_are_clipped(
            values in prop::collection::vec(prop_oneof![Just(f32::MAX), Just(f32::MIN_POSITIVE), -1.0e38f32..1.0e38], 1..50),
            bound in prop_oneof![Just(0.0), 1.0e-40f64..1.0, 1.0f64..1.0e30],
        ) {
            let mut v = values;
            clip_l2(&mut v, bound).unwrap();
            prop_assert!(l2_norm(&v) <= bound);
        }
    }

    #[test]
    fn non_finite_vectors_are_zeroed() {
        let mut v = vec![1.0, f32::NAN, 2.0];
        assert!(clip_l2(&mut v, 1.0).unwrap().is_nan());
        assert_eq!(v, vec![0.0; 3]);
        assert!(clip_l2(&mut v, f64::NAN).is_err());
        assert!(clip_l2(&mut v, -1.0).is_err());
    }
}
