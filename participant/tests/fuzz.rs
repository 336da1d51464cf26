//! Property tests over arbitrary input (fuzzing on stable Rust) of what a hostile coordinator
//! or a careless operator hands the participant: task headers and `participant.toml`. A header
//! passes only if its declared size matches its model within the fixed bound and its
//! hyper-parameters are within theirs; nothing panics.
//!
//! Plain `cargo test` runs 256 cases per property and the corpus at the end; a long run sets
//! `PROPTEST_CASES`.

use fedledger_participant::{
    ParticipantConfig,
    client::{MAX_MODEL_PARAMS, bounds, check_task_header},
};
use fedledger_proto as pb;
use proptest::prelude::*;

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        -2.0f64..2.0,
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(0.0),
        Just(1e300)
    ]
}

fn header() -> impl Strategy<Value = pb::TaskHeader> {
    (
        prop_oneof![Just("logreg".to_owned()), Just("mlp".to_owned()), ".{0,8}"],
        prop_oneof![any::<u32>(), 0u32..100],
        prop_oneof![any::<u32>(), 0u32..12],
        prop::collection::vec(prop_oneof![any::<u32>(), 0u32..100], 0..4),
        prop_oneof![any::<u64>(), 0u64..10_000],
        (any::<u32>(), any::<u32>(), float(), float(), float()),
    )
        .prop_map(
            |(kind, features, classes, hidden, num_params, h)| pb::TaskHeader {
                state: pb::TaskState::Train as i32,
                round: 1,
                model: Some(pb::ModelSpec {
                    kind,
                    features,
                    classes,
                    hidden,
                }),
                num_params,
                hyper: Some(pb::HyperParameters {
                    local_epochs: h.0,
                    batch_size: h.1,
                    learning_rate: h.2,
                    clip_norm: h.3,
                    noise_multiplier: h.4,
                }),
                ..Default::default()
            },
        )
}

proptest! {
    #[test]
    fn a_task_header_passes_only_within_every_bound(h in header()) {
        if check_task_header(&h).is_ok() {
            prop_assert!(h.num_params <= MAX_MODEL_PARAMS);
            let hyper = h.hyper.unwrap();
            prop_assert!(hyper.learning_rate.is_finite() && hyper.learning_rate > 0.0);
            prop_assert!(hyper.learning_rate <= bounds::MAX_LEARNING_RATE);
            prop_assert!(hyper.noise_multiplier.is_finite() && hyper.noise_multiplier >= 0.0);
            prop_assert!(hyper.clip_norm.is_finite() && hyper.clip_norm >= 0.0);
            prop_assert!((1..=bounds::MAX_BATCH_SIZE).contains(&hyper.batch_size));
            prop_assert!((1..=bounds::MAX_LOCAL_EPOCHS).contains(&hyper.local_epochs));
        }
    }

    #[test]
    fn an_edited_participant_toml_is_refused_or_valid_never_a_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
    ) {
        let mut b = VALID.as_bytes().to_vec();
        for (at, byte, op) in edits {
            let i = at.index(b.len() + 1);
            match op {
                0 if i < b.len() => b[i] = byte,
                1 => b.insert(i, byte),
                _ if i < b.len() => {
                    b.remove(i);
                }
                _ => {}
            }
        }
        load(&String::from_utf8_lossy(&b));
    }
}

const VALID: &str = "coordinator = \"http://127.0.0.1:50051\"\nkey = \"h.key\"\ndata = \"d.csv\"\n\
    state_dir = \"s\"\nreconnect_patience_secs = 300\n\n[privacy]\nepsilon_budget = 8.0\n\
    delta = 1e-5\nrequire_dp = true\naccountant = \"rdp\"\n";

fn load(text: &str) {
    if let Ok(cfg) = toml::from_str::<ParticipantConfig>(text) {
        let _ = cfg.validate();
    }
}

/// Inputs on the edges, kept as regression tests.
#[test]
fn corpus() {
    load(VALID);
    load(&VALID.replace("8.0", "nan"));
    load(&VALID.replace("300", "18446744073709551615"));
    let mut h = pb::TaskHeader {
        state: pb::TaskState::Train as i32,
        model: Some(pb::ModelSpec {
            kind: "mlp".into(),
            features: u32::MAX,
            classes: u32::MAX,
            hidden: vec![u32::MAX; 3],
        }),
        num_params: u64::MAX,
        hyper: Some(pb::HyperParameters {
            local_epochs: 1,
            batch_size: 1,
            learning_rate: 0.1,
            clip_norm: 1.0,
            noise_multiplier: 1.0,
        }),
        ..Default::default()
    };
    assert!(check_task_header(&h).is_err());
    h.model = Some(pb::ModelSpec {
        kind: "logreg".into(),
        features: 3,
        classes: 2,
        hidden: vec![],
    });
    h.num_params = 4;
    assert!(check_task_header(&h).is_ok());
    h.model = None;
    assert!(check_task_header(&h).is_err());
}
