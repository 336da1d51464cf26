//! A hostile or broken coordinator: tasks that declare an absurd model size, or hyper-parameters
//! outside the participant's fixed bounds (a NaN learning rate or noise multiplier), are
//! declined with the reason, judged from the task alone, before anything is allocated, read or
//! trained, and nothing is spent. A global model that does not hash to the digest its header
//! claims, or holds a non-finite value, is refused by the client that pulls it.
//!
//! The real agent and trainer run against a fake coordinator on loopback that serves one such
//! task, then says the federation is done once it has been answered.

mod common;

use std::sync::{Arc, Mutex};

use common::{Script, TaskStream, serve};
use fedledger_model::digest::{vector_sha256, vector_to_bytes};
use fedledger_participant::{ParticipantConfig, config::PrivacySection, keys, store::LocalStore};
use fedledger_proto as pb;
use futures::stream;
use tonic::{Request, Response, Status, Streaming};

const GLOBAL: [f32; 4] = [0.5, -0.25, 1.0, 0.0];

fn logreg() -> pb::ModelSpec {
    pb::ModelSpec {
        kind: "logreg".into(),
        features: 3,
        classes: 2,
        hidden: vec![],
    }
}

fn sane_hyper() -> pb::HyperParameters {
    pb::HyperParameters {
        local_epochs: 1,
        batch_size: 4,
        learning_rate: 0.1,
        clip_norm: 1.0,
        noise_multiplier: 1.1,
    }
}

/// An honest header of the one round, which a test then spoils.
fn header(state: pb::TaskState) -> pb::TaskHeader {
    pb::TaskHeader {
        state: state as i32,
        federation: "fed".into(),
        round: 1,
        model: Some(logreg()),
        feature_names: vec!["a".into(), "b".into(), "c".into()],
        label_column: "label".into(),
        hyper: Some(sane_hyper()),
        num_params: GLOBAL.len() as u64,
        model_sha256: vector_sha256(&GLOBAL),
        total_rounds: 1,
        ..Default::default()
    }
}

#[derive(Default)]
struct Seen {
    declines: Vec<String>,
    submits: usize,
}

struct Hostile {
    task: pb::TaskHeader,
    /// The values sent after the header while the round is open (the honest ones unless a
    /// test spoils them).
    body: Vec<f32>,
    seen: Arc<Mutex<Seen>>,
}

#[tonic::async_trait]
impl Script for Hostile {
    async fn get_task(
        &self,
        _req: Request<pb::TaskRequest>,
    ) -> Result<Response<TaskStream>, Status> {
        let answered = {
            let seen = self.seen.lock().unwrap();
            !seen.declines.is_empty() || seen.submits > 0
        };
        let (header, body) = if answered {
            (header(pb::TaskState::Done), vector_to_bytes(&GLOBAL))
        } else {
            // Whatever the header claims, the body is the 4 honest values: a participant that
            // believed the header would have allocated before finding out.
            (self.task.clone(), vector_to_bytes(&self.body))
        };
        let messages = [
            pb::task_message::Msg::Header(header),
            pb::task_message::Msg::Chunk(pb::ParamChunk {
                offset: 0,
                data: body.into(),
            }),
        ]
        .map(|m| Ok(pb::TaskMessage { msg: Some(m) }));
        Ok(Response::new(Box::pin(stream::iter(messages))))
    }

    async fn submit_update(
        &self,
        req: Request<Streaming<pb::UpdateMessage>>,
    ) -> Result<Response<pb::SubmitReceipt>, Status> {
        let mut messages = req.into_inner();
        while messages.message().await?.is_some() {}
        self.seen.lock().unwrap().submits += 1;
        Err(Status::failed_precondition("not expected"))
    }

    async fn decline(
        &self,
        req: Request<pb::DeclineRequest>,
    ) -> Result<Response<pb::DeclineReceipt>, Status> {
        let r = req.into_inner();
        self.seen.lock().unwrap().declines.push(r.reason);
        Ok(Response::new(pb::DeclineReceipt { round: r.round }))
    }
}

/// Run the real participant (training on a small CSV) against a coordinator serving `task`;
/// returns the reason it declined with. Nothing may be spent or sent.
async fn declined(task: pb::TaskHeader) -> String {
    let dir = tempfile::tempdir().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (url, server) = serve(Hostile {
        task,
        body: GLOBAL.to_vec(),
        seen: seen.clone(),
    })
    .await;
    let data = dir.path().join("data.csv");
    let mut csv = String::from("a,b,c,label\n");
    for i in 0..20 {
        csv.push_str(&format!("{},{},{},{}\n", i % 3, i % 5, i % 7, i % 2));
    }
    std::fs::write(&data, csv).unwrap();
    let key = dir.path().join("h0.key");
    keys::generate_key_file(&key).unwrap();
    let cfg = ParticipantConfig {
        coordinator: url,
        key,
        data: Some(data),
        validator: None,
        label_column: None,
        state_dir: dir.path().join("state"),
        privacy: PrivacySection::default(),
        reconnect_patience_secs: 5,
        ledger: None,
        tls: None,
        allow_plaintext: false,
        proxy: None,
    };
    let report = fedledger_participant::run(cfg.clone(), false)
        .await
        .expect("the participant declines and carries on");
    server.abort();
    assert!(report.rounds_sent.is_empty());
    assert_eq!(report.rounds_declined.len(), 1, "{report:?}");
    let spends = LocalStore::open(&cfg.state_dir).unwrap().spends().unwrap();
    assert!(spends.is_empty(), "nothing is spent: {spends:?}");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.submits, 0);
    assert_eq!(seen.declines.len(), 1);
    assert_eq!(seen.declines[0], report.rounds_declined[0].1);
    seen.declines[0].clone()
}

#[tokio::test]
async fn an_absurd_parameter_count_is_declined_before_anything_is_allocated() {
    let mut t = header(pb::TaskState::Train);
    t.num_params = 1_000_000_000_000;
    let reason = declined(t).await;
    assert!(
        reason.contains("declares 1000000000000 parameters") && reason.contains("has 4"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_model_too_large_to_hold_is_declined_whatever_count_it_declares() {
    let mut t = header(pb::TaskState::Train);
    t.model = Some(pb::ModelSpec {
        kind: "mlp".into(),
        features: 3,
        classes: 2,
        hidden: vec![u32::MAX, u32::MAX, u32::MAX],
    });
    t.num_params = u64::MAX;
    let reason = declined(t).await;
    assert!(
        reason.contains("more than") && reason.contains("parameters"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_non_finite_learning_rate_is_declined_before_training() {
    let mut t = header(pb::TaskState::Train);
    t.hyper = Some(pb::HyperParameters {
        learning_rate: f64::NAN,
        ..sane_hyper()
    });
    let reason = declined(t).await;
    assert!(reason.contains("learning_rate = NaN"), "{reason}");
}

#[tokio::test]
async fn a_nan_noise_multiplier_is_declined_before_training() {
    let mut t = header(pb::TaskState::Train);
    t.hyper = Some(pb::HyperParameters {
        noise_multiplier: f64::NAN,
        ..sane_hyper()
    });
    let reason = declined(t).await;
    assert!(reason.contains("noise_multiplier = NaN"), "{reason}");
}

/// What `Client::task` makes of a round whose header is `task` and whose parameters are
/// `body`, from a coordinator that serves exactly that.
async fn pulled(task: pb::TaskHeader, body: Vec<f32>) -> Result<Vec<f32>, String> {
    let (url, server) = serve(Hostile {
        task,
        body,
        seen: Arc::new(Mutex::new(Seen::default())),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("h0.key");
    keys::generate_key_file(&key).unwrap();
    let key = Arc::new(keys::load_key(&key).unwrap());
    let mut client = fedledger_participant::client::Client::connect(&url, key)
        .await
        .unwrap();
    let r = client
        .task()
        .await
        .map(|t| t.params)
        .map_err(|e| e.to_string());
    server.abort();
    r
}

#[tokio::test]
async fn a_global_model_that_does_not_hash_to_its_header_is_refused() {
    let honest = pulled(header(pb::TaskState::Train), GLOBAL.to_vec()).await;
    assert_eq!(honest.unwrap(), GLOBAL);
    let mut changed = GLOBAL.to_vec();
    changed[3] = 0.5;
    let err = pulled(header(pb::TaskState::Train), changed)
        .await
        .unwrap_err();
    assert!(
        err.contains(&format!("header says {}", vector_sha256(&GLOBAL))),
        "{err}"
    );
}

#[tokio::test]
async fn a_global_model_with_a_non_finite_value_is_refused_even_when_its_digest_matches() {
    let mut poisoned = GLOBAL.to_vec();
    poisoned[2] = f32::INFINITY;
    let mut t = header(pb::TaskState::Train);
    t.model_sha256 = vector_sha256(&poisoned);
    let err = pulled(t, poisoned).await.unwrap_err();
    assert!(err.contains("global parameter 2 is not finite"), "{err}");
}
