//! Governance on the hospital's side: a governor signs proposals with its key
//! ([`sign`]), and the agent holds its data to the governed schema: every governed feature
//! column must be present (checked once, when the agent starts and whenever the schema
//! changes, before any round: column names are not patient data), and values outside a
//! governed range are clamped to it during training, never a reason to decline (a decline
//! that depended on the data's values would leak them).

use fedledger_ledger::records::{GovernorSignature, Proposal, check_proposal};
use fedledger_model::Dataset;
use fedledger_proto as pb;
use ring::signature::{Ed25519KeyPair, KeyPair};

/// Why a proposal cannot be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("not a proposal: {0}")]
    Parse(String),
    #[error("malformed proposal: {0}")]
    Malformed(String),
}

/// Sign the proposal whose JSON is `text` as a governor: an Ed25519 signature over
/// `fedledger/governance/v1\n<federation>\n<sha256 of the proposal's canonical JSON>\n`.
pub fn sign(key: &Ed25519KeyPair, text: &[u8]) -> Result<GovernorSignature, SignError> {
    let proposal: Proposal =
        serde_json::from_slice(text).map_err(|e| SignError::Parse(e.to_string()))?;
    check_proposal(&proposal).map_err(|e| SignError::Malformed(e.to_string()))?;
    let message = proposal
        .signing_message()
        .map_err(|e| SignError::Malformed(e.to_string()))?;
    Ok(GovernorSignature {
        governor: hex::encode(key.public_key().as_ref()),
        signature: fedledger_ledger::note::b64_encode(key.sign(message.as_bytes()).as_ref()),
    })
}

/// The positions, in the local data's columns, of the schema's features (schema order), or
/// the first governed feature the local data lacks, named.
pub fn feature_columns(local: &[String], schema: &pb::DataSchema) -> Result<Vec<usize>, String> {
    schema
        .features
        .iter()
        .map(|f| {
            local.iter().position(|c| *c == f.name).ok_or_else(|| {
                format!(
                    "the local data lacks the governed feature column {:?} (the federation's schema names {} features)",
                    f.name,
                    schema.features.len()
                )
            })
        })
        .collect()
}

/// The data held to the schema: its features in the schema's order (extra local columns
/// dropped), each value clamped to its governed range.
pub fn conform(data: &Dataset, schema: &pb::DataSchema) -> Result<Dataset, String> {
    let columns = feature_columns(&data.feature_names, schema)?;
    let d = data.n_features();
    let mut x = Vec::with_capacity(data.len() * columns.len());
    for row in data.x.chunks_exact(d.max(1)) {
        for (f, &c) in schema.features.iter().zip(&columns) {
            x.push(clamp(row[c], f.min, f.max));
        }
    }
    Ok(Dataset {
        feature_names: schema.features.iter().map(|f| f.name.clone()).collect(),
        label_column: data.label_column.clone(),
        x,
        y: data.y.clone(),
        classes: data.classes,
    })
}

/// `v` clamped to `[min, max]` (either bound may be absent).
pub fn clamp(v: f32, min: Option<f64>, max: Option<f64>) -> f32 {
    let mut v = v;
    if let Some(lo) = min
        && v < lo as f32
    {
        v = lo as f32;
    }
    if let Some(hi) = max
        && v > hi as f32
    {
        v = hi as f32;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> pb::DataSchema {
        pb::DataSchema {
            label: "y".into(),
            features: vec![
                pb::SchemaFeature {
                    name: "b".into(),
                    min: Some(0.0),
                    max: Some(1.0),
                },
                pb::SchemaFeature {
                    name: "a".into(),
                    min: Some(-2.0),
                    max: None,
                },
            ],
        }
    }

    fn data() -> Dataset {
        Dataset {
            feature_names: vec!["a".into(), "extra".into(), "b".into()],
            label_column: "y".into(),
            x: vec![-5.0, 9.0, 3.0, 7.0, 9.0, 0.5],
            y: vec![0, 1],
            classes: 2,
        }
    }

    #[test]
    fn out_of_range_values_are_clamped_and_columns_follow_the_schema() {
        let d = conform(&data(), &schema()).unwrap();
        assert_eq!(d.feature_names, ["b", "a"]);
        // Row 0: b = 3 clamped to 1, a = -5 clamped to -2; row 1: b = 0.5, a = 7 (no max).
        assert_eq!(d.x, vec![1.0, -2.0, 0.5, 7.0]);
        assert_eq!(d.y, vec![0, 1]);
    }

    #[test]
    fn a_missing_governed_feature_is_named() {
        let mut s = schema();
        s.features.push(pb::SchemaFeature {
            name: "tumour_size".into(),
            min: None,
            max: None,
        });
        let err = feature_columns(&data().feature_names, &s).unwrap_err();
        assert!(err.contains("\"tumour_size\""), "{err}");
    }
}
