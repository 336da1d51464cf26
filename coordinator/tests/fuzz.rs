//! Property tests over arbitrary input (fuzzing on stable Rust): the update-stream assembly,
//! upload headers through the round machine, and `coordinator.toml`. Each must refuse what it
//! cannot use, never panic, and never hold more than the model's size.
//!
//! `cargo test -p fedledger-coordinator --test fuzz` runs the default 256 cases per property
//! plus the regression corpus below (inputs earlier runs found); a long run sets
//! `PROPTEST_CASES`, e.g. `PROPTEST_CASES=200000 cargo test --release -p fedledger-coordinator
//! --test fuzz`.

mod common;

use fedledger_coordinator::{
    ConfigFile,
    error::CoordinatorError,
    transfer::{Assembler, upload_hasher},
};
use proptest::prelude::*;

/// A chunk stream: mostly well-placed chunks of mixed bytes, with wrong offsets, odd lengths
/// and non-finite values among them.
fn chunks() -> impl Strategy<Value = Vec<(Option<u64>, Vec<u8>)>> {
    prop::collection::vec(
        (
            prop_oneof![3 => Just(None), 1 => any::<u64>().prop_map(Some)],
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..70),
                prop::collection::vec(-4.0f32..4.0, 0..17)
                    .prop_map(|v| v.iter().flat_map(|f| f.to_le_bytes()).collect()),
            ],
        ),
        0..12,
    )
}

fn assemble(expected: u64, max_chunk: usize, chunks: &[(Option<u64>, Vec<u8>)]) {
    let mut a = Assembler::new(expected, max_chunk);
    // The digest of what is accepted, as the upload computes it (a thread from the second
    // chunk on).
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut hasher = upload_hasher(fedledger_model::digest::THREAD_HASH_MIN_BYTES);
    let mut have = 0u64;
    // What the upload would have streamed to its file.
    let mut accepted = Vec::new();
    for (offset, bytes) in chunks {
        let offset = offset.unwrap_or(have);
        match a.push(offset, bytes) {
            Ok(()) => {
                // Accepted only in order, whole f32 values, within the chunk and vector sizes.
                assert_eq!(offset, have);
                assert_eq!(bytes.len() % 4, 0);
                assert!(bytes.len() / 4 <= max_chunk);
                have += bytes.len() as u64 / 4;
                assert!(have <= expected);
                accepted.extend_from_slice(bytes);
                rt.block_on(hasher.push(bytes::Bytes::copy_from_slice(bytes)))
                    .unwrap();
            }
            Err(e) => {
                assert!(
                    matches!(
                        e,
                        CoordinatorError::InvalidField { .. }
                            | CoordinatorError::ChunkTooLarge { .. }
                            | CoordinatorError::ChunkOutOfOrder { .. }
                            | CoordinatorError::DimensionMismatch { .. }
                            | CoordinatorError::NonFinite { .. }
                    ),
                    "{e}"
                );
                return;
            }
        }
    }
    match a.finish() {
        Ok(norm_got) => {
            assert_eq!(have, expected);
            let values = fedledger_model::digest::vector_from_bytes(&accepted).unwrap();
            assert_eq!(values.len() as u64, expected);
            assert!(values.iter().all(|v| v.is_finite()));
            assert_eq!(
                hasher.finish().unwrap(),
                fedledger_model::digest::vector_sha256(&values)
            );
            let norm = values
                .iter()
                .map(|v| f64::from(*v).powi(2))
                .sum::<f64>()
                .sqrt();
            assert!((norm_got - norm).abs() <= 1e-9 * norm.max(1.0));
        }
        Err(e) => assert!(matches!(e, CoordinatorError::Truncated { .. }), "{e}"),
    }
}

const VALID_TOML: &str = r#"
federation = "fuzz-federation"
listen = "127.0.0.1:0"
state_dir = "state"

[model]
kind = "logreg"
features = 3
classes = 2

[data]
label_column = "label"
validation = "validation.csv"

[rounds]
total = 2
quorum = 1
deadline_secs = 60

[training]
local_epochs = 1
batch_size = 8
learning_rate = 0.1
clip_norm = 1.0
noise_multiplier = 1.1
init_seed = 0

[aggregation]
strategy = "fedavg"
max_update_norm = 0.0

[limits]
max_examples = 1000
max_streams_per_connection = 8
max_connections_per_ip = 8
message_timeout_secs = 30
session_ttl_secs = 3600

[[participant]]
name = "h0"
public_key = "0000000000000000000000000000000000000000000000000000000000000001"
"#;

fn validation_csv() -> Vec<u8> {
    b"a,b,c,label\n0,1,2,0\n1,2,3,1\n2,3,4,0\n".to_vec()
}

/// Parse and validate `text` as a coordinator.toml: any outcome but a panic is fine.
fn load(text: &str) {
    if let Ok(file) = toml::from_str::<ConfigFile>(text)
        && let Ok(cfg) = file.validate_with(&validation_csv())
    {
        // What a valid configuration promises.
        assert!(cfg.quorum >= 1 && cfg.quorum as usize <= cfg.participants.len());
        assert!(cfg.limits.max_streams_per_connection >= 1);
        let _ = cfg.limits.upload_deadline(cfg.model.num_params());
        let _ = cfg.deadline.as_millis();
    }
}

/// Numbers a hostile or careless operator might write.
fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|v| v.to_string()),
        any::<i64>().prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| format!("{v:?}")),
        Just("nan".to_owned()),
        Just("inf".to_owned()),
        Just("-inf".to_owned()),
        Just("18446744073709551615".to_owned()),
        Just("0".to_owned()),
    ]
}

proptest! {
    #[test]
    fn the_assembler_refuses_what_it_cannot_use_and_never_panics(
        expected in 0u64..64,
        max_chunk in 0usize..20,
        chunks in chunks(),
    ) {
        assemble(expected, max_chunk, &chunks);
    }

    #[test]
    fn a_mutated_config_is_refused_or_valid_never_a_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
    ) {
        let mut bytes = VALID_TOML.as_bytes().to_vec();
        for (at, byte, op) in edits {
            let i = at.index(bytes.len() + 1);
            match op {
                0 if i < bytes.len() => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ if i < bytes.len() => {
                    bytes.remove(i);
                }
                _ => {}
            }
        }
        load(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn any_number_in_any_numeric_field_is_refused_or_valid(
        field in 0usize..17,
        value in number(),
    ) {
        let keys = [
            "features", "classes", "total", "quorum", "deadline_secs", "local_epochs",
            "batch_size", "learning_rate", "clip_norm", "noise_multiplier", "init_seed",
            "max_update_norm", "max_examples", "max_streams_per_connection",
            "max_connections_per_ip", "message_timeout_secs", "session_ttl_secs",
        ];
        let key = keys[field];
        let text: String = VALID_TOML
            .lines()
            .map(|l| {
                if l.starts_with(&format!("{key} = ")) {
                    format!("{key} = {value}")
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        load(&text);
    }
}

/// Inputs the properties above found, kept as regression tests.
#[test]
fn corpus() {
    // An 11-year round deadline overflowed the clock's milliseconds.
    let text = VALID_TOML.replace("deadline_secs = 60", "deadline_secs = 18446744073709551615");
    load(&text);
    let text = VALID_TOML.replace(
        "session_ttl_secs = 3600",
        "session_ttl_secs = 18446744073709551615",
    );
    load(&text);
    // A model whose parameter count overflows `usize` panicked in `ModelSpec::num_params`
    // (found by `any_number_in_any_numeric_field_is_refused_or_valid`).
    let text = VALID_TOML.replace("features = 3", "features = 18446744073709551615");
    load(&text);
    let text = VALID_TOML.replace("features = 3", "features = 4294967296");
    load(&text);
    // A chunk that ends exactly at the expected length, then an empty one.
    assemble(4, 4, &[(None, vec![0; 16]), (None, vec![])]);
    // Nothing expected, nothing sent.
    assemble(0, 0, &[]);
}
