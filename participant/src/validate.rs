//! Validator mode's computation: the utility of every coalition of a round's design on this
//! validator's holdout, and the signed claim the ledger records (`fedledger.utilities/v1`).
//!
//! A coalition's model is the round's starting model plus the weighted mean of its members'
//! updates, weights proportional to their example counts (the coordinator's game, the valuation
//! crate's [`LinearCombinationGame`]); its utility is the mean over the holdout's rows of the
//! per-row score the federation values with (negative log-loss or accuracy), in nano-units.
//!
//! What leaves the validator is this vector of aggregate scores, one per coalition, never a
//! row: each utility is a mean over the whole holdout, so a single row moves it by at most
//! (its score range) / (rows). The coordinator and every auditor see the vector.

use fedledger_ledger::records::{utilities_signing_message, utility_vector_sha256};
use fedledger_model::{Dataset, ModelSpec};
use fedledger_valuation::{LinearCombinationGame, consensus::Design, value_nano};
use rayon::prelude::*;
use ring::signature::Ed25519KeyPair;

/// The per-row score a coalition's utility is the mean of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowUtility {
    /// Negative log-loss (`neg_log_loss`).
    NegLogLoss,
    /// 1 for a correct prediction, else 0 (`accuracy`).
    Accuracy,
}

impl std::str::FromStr for RowUtility {
    type Err = ValidateError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "neg_log_loss" => Ok(Self::NegLogLoss),
            "accuracy" => Ok(Self::Accuracy),
            other => Err(ValidateError::Refused(format!(
                "unknown utility {other:?} (this validator knows neg_log_loss and accuracy)"
            ))),
        }
    }
}

/// Why a validator cannot evaluate a round.
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    #[error("cannot validate: {0}")]
    Refused(String),
    #[error("model evaluation: {0}")]
    Model(#[from] fedledger_model::ModelError),
    #[error("valuation: {0}")]
    Valuation(#[from] fedledger_valuation::ValuationError),
}

/// One candidate update of the round: its contributor's key and example count, and the update
/// (parameter deltas from the round's starting model).
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// Ed25519 key, 64 lowercase hex.
    pub participant: &'a str,
    /// Examples the contributor trained on (the update's weight).
    pub examples: u64,
    /// The update.
    pub delta: &'a [f32],
}

/// The utility of every coalition of `design`, in its order, on `holdout`, in nano-units.
/// `candidates` are the design's players: sorted by key, one per player, each update the size
/// of `global`. A validator never signs a non-finite utility: an update whose coalitions cannot
/// be scored is refused here.
pub fn utility_vector(
    spec: &ModelSpec,
    global: &[f32],
    candidates: &[Candidate<'_>],
    design: &Design,
    holdout: &Dataset,
    utility: RowUtility,
) -> Result<Vec<i64>, ValidateError> {
    if candidates.len() != design.players {
        return Err(ValidateError::Refused(format!(
            "{} candidate updates for a design of {} players",
            candidates.len(),
            design.players
        )));
    }
    if !candidates
        .windows(2)
        .all(|w| w[0].participant < w[1].participant)
    {
        return Err(ValidateError::Refused(
            "candidates must be sorted by key, without duplicates (the design's player order)"
                .into(),
        ));
    }
    if holdout.is_empty() {
        return Err(ValidateError::Refused("the holdout has no rows".into()));
    }
    let deltas: Vec<&[f32]> = candidates.iter().map(|c| c.delta).collect();
    let examples: Vec<u64> = candidates.iter().map(|c| c.examples).collect();
    let game = LinearCombinationGame::new(global, &deltas, &examples, |_: &[f32]| f64::NAN)?;
    let rows = holdout.len() as f64;
    design
        .coalitions
        .par_iter()
        .map(|&c| {
            let params = game.parameters(c);
            let scores = fedledger_model::evaluate_rows(spec, &params, holdout)?;
            let total: f64 = match utility {
                RowUtility::NegLogLoss => scores.log_loss.iter().map(|l| -l).sum(),
                RowUtility::Accuracy => scores.correct.iter().filter(|&&ok| ok).count() as f64,
            };
            let u = total / rows;
            if !u.is_finite() {
                return Err(ValidateError::Refused(format!(
                    "the coalition {:?} scores {u} on the holdout (an update with non-finite effect)",
                    c.members().collect::<Vec<_>>()
                )));
            }
            Ok(value_nano(u))
        })
        .collect()
}

/// A validator's signature over its vector, with the two digests it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedUtilities {
    /// SHA-256 of the design's canonical coalition list.
    pub coalitions_sha256: String,
    /// SHA-256 of the vector (8-byte big-endian utilities, in order).
    pub utilities_sha256: String,
    /// Base64 Ed25519 signature over `fedledger/utilities/v1\n<federation>\n<round>\n
    /// <coalitions_sha256>\n<utilities_sha256>\n`.
    pub signature: String,
}

/// Signs the whole vector for `round` of `federation` (a partial vector is never signed: the
/// digest covers every coalition of the design).
pub fn sign_utilities(
    key: &Ed25519KeyPair,
    federation: &str,
    round: u64,
    design: &Design,
    utilities: &[i64],
) -> SignedUtilities {
    let coalitions_sha256 = fedledger_ledger::records::sha256_hex(&design.canonical());
    let utilities_sha256 = utility_vector_sha256(utilities);
    let message =
        utilities_signing_message(federation, round, &coalitions_sha256, &utilities_sha256);
    SignedUtilities {
        signature: fedledger_ledger::note::b64_encode(key.sign(message.as_bytes()).as_ref()),
        coalitions_sha256,
        utilities_sha256,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedledger_ledger::records::{Record, UtilitiesClaim, encode_canonical, validate_entry};
    use fedledger_model::ModelKind;
    use fedledger_valuation::consensus::{RoundParams, design, round_consensus};

    /// A logistic regression on 2 features and its holdout: the label is whether x0 > x1.
    fn setup() -> (ModelSpec, Dataset) {
        let spec = ModelSpec {
            kind: ModelKind::Logreg,
            features: 2,
            classes: 2,
            hidden: vec![],
        };
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..40u32 {
            let (a, b) = ((i % 7) as f32 / 7.0, (i % 5) as f32 / 5.0);
            x.extend_from_slice(&[a, b]);
            y.push(u32::from(a > b));
        }
        let holdout = Dataset {
            feature_names: vec!["x0".into(), "x1".into()],
            label_column: "label".into(),
            x,
            y,
            classes: 2,
        };
        (spec, holdout)
    }

    fn keys3() -> Vec<String> {
        let mut k: Vec<String> = ["aa", "bb", "cc"].iter().map(|s| s.repeat(32)).collect();
        k.sort();
        k
    }

    #[test]
    fn a_vector_scores_every_coalition_and_follows_which_updates_help() {
        let (spec, holdout) = setup();
        let global = vec![0.0f32; spec.num_params()];
        // Helpful (towards x0 - x1), harmful (the opposite), and an empty update.
        let help: Vec<f32> = vec![2.0, -2.0, 0.0];
        let harm: Vec<f32> = vec![-2.0, 2.0, 0.0];
        let none: Vec<f32> = vec![0.0; 3];
        assert_eq!(spec.num_params(), 3);
        let keys = keys3();
        let cands: Vec<Candidate<'_>> = [&help, &harm, &none]
            .iter()
            .zip(&keys)
            .map(|(d, k)| Candidate {
                participant: k,
                examples: 10,
                delta: d,
            })
            .collect();
        let d = design(5, 3, 12, 0).unwrap();
        let u =
            utility_vector(&spec, &global, &cands, &d, &holdout, RowUtility::NegLogLoss).unwrap();
        assert_eq!(u.len(), 8);
        // The empty coalition is the starting model: log-loss ln 2 on every row.
        assert_eq!(u[0], value_nano(-std::f64::consts::LN_2));
        // Alone, the helpful update beats the start and the harmful one loses to it.
        assert!(u[0b001] > u[0], "{u:?}");
        assert!(u[0b010] < u[0], "{u:?}");
        // The same inputs give the same vector, bit for bit.
        let again =
            utility_vector(&spec, &global, &cands, &d, &holdout, RowUtility::NegLogLoss).unwrap();
        assert_eq!(u, again);
        // Three validators agreeing on the holdout: the consensus values rank help > none > harm.
        let refs: Vec<&[i64]> = vec![&u, &u, &u];
        let vkeys = keys3();
        let vrefs: Vec<&str> = vkeys.iter().map(String::as_str).collect();
        let c = round_consensus(
            &RoundParams {
                seed: 5,
                players: 3,
                exact_max: 12,
                permutations: 0,
                pool: 10,
                max_distance_milli: 100,
                quality_k: Some(1),
            },
            &vrefs,
            &refs,
        )
        .unwrap();
        assert!(
            c.values_nano[0] > 0 && c.values_nano[1] < 0,
            "{:?}",
            c.values_nano
        );
        assert_eq!(
            c.keep,
            vec![true, false, true],
            "the harmful update is curated out"
        );
    }

    #[test]
    fn refuses_a_wrong_player_count_unsorted_candidates_and_non_finite_updates() {
        let (spec, holdout) = setup();
        let global = vec![0.0f32; 3];
        let keys = keys3();
        let ok = vec![0.1f32; 3];
        let bad = vec![f32::INFINITY, 0.0, 0.0];
        let d = design(1, 3, 12, 0).unwrap();
        fn make<'a>(
            keys: &'a [String],
            deltas: [&'a Vec<f32>; 3],
            order: [usize; 3],
        ) -> Vec<Candidate<'a>> {
            deltas
                .iter()
                .zip(order)
                .map(|(delta, i)| Candidate {
                    participant: keys[i].as_str(),
                    examples: 5,
                    delta,
                })
                .collect()
        }
        let run = |c: &[Candidate<'_>]| {
            utility_vector(&spec, &global, c, &d, &holdout, RowUtility::Accuracy)
                .unwrap_err()
                .to_string()
        };
        assert!(run(&make(&keys, [&ok, &ok, &ok], [0, 1, 2])[..2]).contains("2 candidate updates"));
        assert!(run(&make(&keys, [&ok, &ok, &ok], [1, 0, 2])).contains("sorted by key"));
        assert!(run(&make(&keys, [&ok, &bad, &ok], [0, 1, 2])).contains("non-finite"));
        assert!("f1".parse::<RowUtility>().is_err());
    }

    #[test]
    fn the_signed_vector_is_a_claim_the_ledger_accepts_and_verifies() {
        let (spec, holdout) = setup();
        let key = fedledger_ledger::keys::generate_key_file(
            &tempfile::tempdir().unwrap().path().join("v.key"),
        )
        .unwrap();
        let keys = keys3();
        let delta = vec![0.5f32, -0.5, 0.0];
        let cands: Vec<Candidate<'_>> = keys
            .iter()
            .map(|k| Candidate {
                participant: k,
                examples: 3,
                delta: &delta,
            })
            .collect();
        let d = design(9, 3, 12, 0).unwrap();
        let u =
            utility_vector(&spec, &[0.0; 3], &cands, &d, &holdout, RowUtility::Accuracy).unwrap();
        let s = sign_utilities(&key, "fed", 4, &d, &u);
        let validator = fedledger_ledger::keys::public_key_hex(&key);
        let entries = UtilitiesClaim {
            federation: "fed",
            round: 4,
            validator: &validator,
            name: "lab",
            coalitions_sha256: &s.coalitions_sha256,
            utilities: &u,
            signature: &s.signature,
        }
        .entries();
        let Record::Utilities(e) =
            validate_entry(7, "fed", &encode_canonical(&entries[0]).unwrap()).unwrap()
        else {
            panic!("a utilities record")
        };
        let sig = fedledger_ledger::note::b64_decode(&e.signature).unwrap();
        let ok = fedledger_ledger::keys::verify_ed25519_many(&[(
            &hex::decode(&validator).unwrap()[..],
            e.signing_message().as_bytes(),
            &sig[..],
        )]);
        assert_eq!(ok, vec![true]);
        // Another round's message does not verify under the same signature.
        let other = utilities_signing_message("fed", 5, &s.coalitions_sha256, &s.utilities_sha256);
        let bad = fedledger_ledger::keys::verify_ed25519_many(&[(
            &hex::decode(&validator).unwrap()[..],
            other.as_bytes(),
            &sig[..],
        )]);
        assert_eq!(bad, vec![false]);
    }
}
