//! Shared set-up of the coordinator's integration tests: a federation in a temp dir served on a
//! free loopback port, and a raw protocol client (the participant crate is not a dependency of
//! the coordinator; these tests speak the wire protocol directly).
#![allow(dead_code)]

pub mod binaries;

use std::path::Path;

use fedledger_coordinator::{
    ConfigFile, FederationConfig, Running,
    config::{
        DataSection, LimitsSection, ParticipantEntry, RoundsSection, StandardisationMode,
        TrainingSection,
    },
};
use fedledger_model::{ModelKind, ModelSpec};
use fedledger_proto as pb;
use pb::coordinator_client::CoordinatorClient;
use ring::{
    rand::SystemRandom,
    signature::{Ed25519KeyPair, KeyPair},
};
use tonic::transport::Channel;

pub fn keypair() -> Ed25519KeyPair {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
}

pub fn pubhex(k: &Ed25519KeyPair) -> String {
    hex::encode(k.public_key().as_ref())
}

/// A validation CSV with `features` columns, `rows` rows and labels cycling over `classes`.
pub fn write_validation(path: &Path, features: usize, rows: usize, classes: usize) {
    let mut s = String::new();
    for j in 0..features {
        s.push_str(&format!("f{j},"));
    }
    s.push_str("label\n");
    for i in 0..rows {
        for j in 0..features {
            s.push_str(&format!("{},", ((i * 31 + j * 7) % 13) as f32 / 13.0));
        }
        s.push_str(&format!("{}\n", i % classes));
    }
    std::fs::write(path, s).unwrap();
}

/// A configuration for a logistic-regression federation of the given keys.
pub fn config(
    dir: &Path,
    keys: &[&Ed25519KeyPair],
    features: usize,
    classes: usize,
    rounds: u64,
    quorum: u32,
) -> FederationConfig {
    config_file(dir, keys, features, classes, rounds, quorum)
        .validate()
        .unwrap()
}

/// The file form of [`config`], for tests that change it before validating.
#[allow(dead_code)]
pub fn config_file(
    dir: &Path,
    keys: &[&Ed25519KeyPair],
    features: usize,
    classes: usize,
    rounds: u64,
    quorum: u32,
) -> ConfigFile {
    let validation = dir.join("validation.csv");
    write_validation(&validation, features, 6, classes);
    ConfigFile {
        federation: "test-federation".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        state_dir: dir.join("state"),
        key: None,
        model: ModelSpec {
            kind: ModelKind::Logreg,
            features,
            classes,
            hidden: vec![],
        },
        data: DataSection {
            label_column: "label".into(),
            validation,
            standardisation: StandardisationMode::Site,
        },
        rounds: RoundsSection {
            total: rounds,
            quorum,
            deadline_secs: 60,
            grace_secs: 60,
        },
        training: TrainingSection::default(),
        aggregation: Default::default(),
        // Tests open many clients from 127.0.0.1.
        limits: LimitsSection {
            max_connections_per_ip: 64,
            ..Default::default()
        },
        valuation: Default::default(),
        rewards: Default::default(),
        privacy: Default::default(),
        ledger: Default::default(),
        tls: None,
        metrics: Default::default(),
        governance: Default::default(),
        participants: keys
            .iter()
            .enumerate()
            .map(|(i, k)| ParticipantEntry {
                name: format!("h{i}"),
                public_key: pubhex(k),
                public_key_file: None,
            })
            .collect(),
        validators: None,
        validator_entries: Vec::new(),
    }
}

pub async fn start(cfg: FederationConfig) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    fedledger_coordinator::serve(cfg, Some(listener))
        .await
        .unwrap()
}

pub async fn client(running: &Running) -> CoordinatorClient<Channel> {
    CoordinatorClient::connect(format!("http://{}", running.addr))
        .await
        .unwrap()
        .max_decoding_message_size(pb::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(pb::MAX_MESSAGE_BYTES)
}

/// Register `key` and return the session token.
pub async fn register(c: &mut CoordinatorClient<Channel>, key: &Ed25519KeyPair) -> Vec<u8> {
    let ch = c
        .challenge(pb::ChallengeRequest {
            public_key: pubhex(key),
        })
        .await
        .unwrap()
        .into_inner();
    let msg = pb::register_message(&ch.federation, &ch.challenge);
    c.register(pb::RegisterRequest {
        public_key: pubhex(key),
        challenge: ch.challenge,
        signature: key.sign(msg.as_bytes()).as_ref().to_vec(),
    })
    .await
    .unwrap()
    .into_inner()
    .session
}

/// Pull a task: header and parameters.
pub async fn task(
    c: &mut CoordinatorClient<Channel>,
    session: &[u8],
) -> (pb::TaskHeader, Vec<f32>) {
    let mut s = c
        .get_task(pb::TaskRequest {
            session: session.to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    let header = match s.message().await.unwrap().unwrap().msg.unwrap() {
        pb::task_message::Msg::Header(h) => h,
        other => panic!("expected header, got {other:?}"),
    };
    let mut params = Vec::new();
    let mut sizes = Vec::new();
    while let Some(m) = s.message().await.unwrap() {
        match m.msg.unwrap() {
            pb::task_message::Msg::Chunk(c) => {
                assert_eq!(c.offset as usize, params.len());
                assert!(c.data.len() <= pb::CHUNK_BYTES);
                sizes.push(c.data.len() / 4);
                params.extend(fedledger_model::digest::vector_from_bytes(&c.data).unwrap());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    if !params.is_empty() {
        // The model travels in the chunks the header announces, a sixteenth of it within bounds.
        let chunk = header.chunk_floats as usize;
        assert_eq!(chunk, pb::chunk_floats_for(header.num_params));
        let (last, full) = sizes.split_last().unwrap();
        assert!(
            full.iter().all(|&n| n == chunk),
            "{sizes:?} in chunks of {chunk}"
        );
        assert!((1..=chunk).contains(last), "{sizes:?} in chunks of {chunk}");
    }
    (header, params)
}

/// The messages of a signed update (header then chunks), with optional tampering applied by
/// the caller afterwards.
pub fn update_messages(
    federation: &str,
    key: &Ed25519KeyPair,
    session: &[u8],
    round: u64,
    examples: u64,
    delta: &[f32],
) -> Vec<pb::UpdateMessage> {
    let sha = fedledger_model::digest::vector_sha256(delta);
    let privacy = fedledger_ledger::records::PrivacyObject::none();
    let sig = key
        .sign(
            fedledger_ledger::records::update_signing_message(
                federation,
                round,
                &sha,
                examples,
                &privacy.sha256_hex(),
            )
            .as_bytes(),
        )
        .as_ref()
        .to_vec();
    let mut msgs = vec![pb::UpdateMessage {
        msg: Some(pb::update_message::Msg::Header(pb::UpdateHeader {
            session: session.to_vec(),
            round,
            examples,
            num_params: delta.len() as u64,
            update_sha256: sha,
            signature: sig,
            privacy: Some(privacy_wire(&privacy)),
        })),
    }];
    for (i, c) in delta.chunks(pb::CHUNK_FLOATS).enumerate() {
        msgs.push(pb::UpdateMessage {
            msg: Some(pb::update_message::Msg::Chunk(pb::ParamChunk {
                offset: (i * pb::CHUNK_FLOATS) as u64,
                data: fedledger_model::digest::vector_to_bytes(c).into(),
            })),
        });
    }
    msgs
}

/// The wire form of a privacy object.
pub fn privacy_wire(p: &fedledger_ledger::records::PrivacyObject) -> pb::PrivacySpend {
    pb::PrivacySpend {
        accountant: p.accountant.clone(),
        delta_pico: p.delta_pico,
        epsilon_micro: p.epsilon_micro,
        epsilon_round_micro: p.epsilon_round_micro,
        noise_multiplier_micro: p.noise_multiplier_micro,
        sampling_rate_nano: p.sampling_rate_nano,
        steps: p.steps,
    }
}

pub async fn submit(
    c: &mut CoordinatorClient<Channel>,
    msgs: Vec<pb::UpdateMessage>,
) -> Result<pb::SubmitReceipt, tonic::Status> {
    c.submit_update(tokio_stream::iter(msgs))
        .await
        .map(|r| r.into_inner())
}
