//! A crash between the durable spend and the first byte of the update, driven through the
//! agent's failpoints (`participant::after_spend_flush`, `participant::before_send`): the spend
//! is on disk and the coordinator has received nothing.
//!
//! The real agent and client run against a fake coordinator on loopback that serves one training
//! round and counts what arrives. fail-rs keeps its configuration in a global registry, so these
//! tests live in their own binary and each holds a `FailScenario` (which also serialises them).

mod common;

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use common::{Script, TaskStream, serve};
use fail::FailScenario;
use fedledger_model::digest::{vector_sha256, vector_to_bytes};
use fedledger_participant::{
    AgentError, AgentReport, ParticipantConfig, RunError, UpdateSource, Work, client::Task,
    config::PrivacySection, keys, source::SourceError, store::LocalStore, store::SpendRecord,
};
use fedledger_privacy::{AccountantKind, PrivacySpend};
use fedledger_proto as pb;
use futures::stream;
use tonic::{Request, Response, Status, Streaming};

const ROUND: u64 = 1;
const GLOBAL: [f32; 4] = [0.5, -0.25, 1.0, 0.0];

/// What reached the fake coordinator.
#[derive(Default)]
struct Seen {
    submits: AtomicUsize,
    declines: AtomicUsize,
    digests: std::sync::Mutex<Vec<String>>,
}

/// One open training round until an update arrives, then the federation is done.
struct FakeCoordinator {
    seen: Arc<Seen>,
}

#[tonic::async_trait]
impl Script for FakeCoordinator {
    async fn get_task(
        &self,
        _req: Request<pb::TaskRequest>,
    ) -> Result<Response<TaskStream>, Status> {
        let state = if self.seen.submits.load(Ordering::SeqCst) > 0 {
            pb::TaskState::Done
        } else {
            pb::TaskState::Train
        };
        let header = pb::TaskHeader {
            state: state as i32,
            federation: "fed".into(),
            round: ROUND,
            num_params: GLOBAL.len() as u64,
            model_sha256: vector_sha256(&GLOBAL),
            total_rounds: 1,
            model: Some(pb::ModelSpec {
                kind: "logreg".into(),
                features: 3,
                classes: 2,
                hidden: vec![],
            }),
            hyper: Some(pb::HyperParameters {
                local_epochs: 1,
                batch_size: 10,
                learning_rate: 0.1,
                clip_norm: 1.0,
                noise_multiplier: 1.1,
            }),
            ..Default::default()
        };
        let messages = [
            pb::task_message::Msg::Header(header),
            pb::task_message::Msg::Chunk(pb::ParamChunk {
                offset: 0,
                data: vector_to_bytes(&GLOBAL).into(),
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
        let mut update_sha256 = String::new();
        while let Some(m) = messages.message().await? {
            if let Some(pb::update_message::Msg::Header(h)) = m.msg {
                update_sha256 = h.update_sha256;
            }
        }
        self.seen.submits.fetch_add(1, Ordering::SeqCst);
        self.seen
            .digests
            .lock()
            .unwrap()
            .push(update_sha256.clone());
        Ok(Response::new(pb::SubmitReceipt {
            round: ROUND,
            update_sha256,
            accepted: 1,
            quorum: 1,
        }))
    }

    async fn decline(
        &self,
        req: Request<pb::DeclineRequest>,
    ) -> Result<Response<pb::DeclineReceipt>, Status> {
        self.seen.declines.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(pb::DeclineReceipt {
            round: req.into_inner().round,
        }))
    }
}

/// A private update with a fixed spend, without training (`delta` fills the vector).
struct FixedUpdate(f32);

fn the_spend() -> PrivacySpend {
    PrivacySpend {
        noise_multiplier: 1.1,
        sampling_rate: 0.01,
        steps: 100,
        delta: 1e-5,
        epsilon_total: 0.75,
        epsilon_round: 0.75,
        accountant: AccountantKind::Rdp,
    }
}

impl UpdateSource for FixedUpdate {
    fn work(&mut self, _task: &Task, _spent: &[SpendRecord]) -> Result<Work, SourceError> {
        Ok(Work::Update {
            delta: vec![self.0; GLOBAL.len()],
            examples: 10,
            spend: Some(the_spend()),
        })
    }
}

/// A fake coordinator on a loopback port, and a participant configuration pointing at it.
async fn setup(dir: &std::path::Path) -> (Arc<Seen>, ParticipantConfig) {
    let seen = Arc::new(Seen::default());
    let (url, _server) = serve(FakeCoordinator { seen: seen.clone() }).await;
    let key = dir.join("h0.key");
    keys::generate_key_file(&key).unwrap();
    let cfg = ParticipantConfig {
        coordinator: url,
        key,
        data: Some(dir.join("unused.csv")),
        validator: None,
        label_column: None,
        state_dir: dir.join("state"),
        privacy: PrivacySection::default(),
        reconnect_patience_secs: 5,
        ledger: None,
        tls: None,
        allow_plaintext: false,
        proxy: None,
    };
    (seen, cfg)
}

async fn run(cfg: ParticipantConfig) -> Result<AgentReport, RunError> {
    fedledger_participant::run_with_source(cfg, false, Box::new(FixedUpdate(0.01))).await
}

fn spends_on_disk(cfg: &ParticipantConfig) -> Vec<SpendRecord> {
    LocalStore::open(&cfg.state_dir).unwrap().spends().unwrap()
}

#[tokio::test]
async fn a_crash_just_before_sending_leaves_the_spend_on_disk_and_sends_nothing() {
    let scenario = FailScenario::setup();
    fail::cfg("participant::before_send", "return(simulated crash)").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (seen, cfg) = setup(dir.path()).await;

    let err = run(cfg.clone()).await.unwrap_err();
    assert!(
        matches!(
            &err,
            RunError::Agent(AgentError::Failpoint {
                point: "participant::before_send",
                round: ROUND,
                detail,
            }) if detail == "simulated crash"
        ),
        "{err}"
    );
    assert_eq!(seen.submits.load(Ordering::SeqCst), 0, "nothing was sent");
    assert_eq!(seen.declines.load(Ordering::SeqCst), 0);
    let spends = spends_on_disk(&cfg);
    assert_eq!(spends.len(), 1, "the spend is on disk");
    assert_eq!((spends[0].round, &spends[0].spend), (ROUND, &the_spend()));
    scenario.teardown();
}

#[tokio::test]
async fn a_panic_right_after_the_flush_leaves_the_spend_on_disk_and_sends_nothing() {
    let scenario = FailScenario::setup();
    fail::cfg("participant::after_spend_flush", "panic(simulated crash)").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (seen, cfg) = setup(dir.path()).await;

    let agent = tokio::spawn(run(cfg.clone())).await;
    assert!(agent.is_err_and(|e| e.is_panic()), "the agent panicked");
    assert_eq!(seen.submits.load(Ordering::SeqCst), 0, "nothing was sent");
    assert_eq!(spends_on_disk(&cfg).len(), 1, "the spend is on disk");
    scenario.teardown();
}

#[tokio::test]
async fn without_a_configured_point_the_update_is_sent_after_its_spend() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let (seen, cfg) = setup(dir.path()).await;

    let report = run(cfg.clone()).await.unwrap();
    assert_eq!(report.rounds_sent, [ROUND]);
    assert_eq!(seen.submits.load(Ordering::SeqCst), 1);
    assert_eq!(spends_on_disk(&cfg).len(), 1);
    scenario.teardown();
}

#[tokio::test]
async fn after_a_crash_before_sending_the_same_update_is_sent_and_nothing_is_spent_again() {
    let scenario = FailScenario::setup();
    fail::cfg("participant::before_send", "return(simulated crash)").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (seen, cfg) = setup(dir.path()).await;
    assert!(run(cfg.clone()).await.is_err());
    assert_eq!(spends_on_disk(&cfg).len(), 1);
    fail::remove("participant::before_send");
    // Restarted with a source that would now train another update: the prepared one is sent.
    let report =
        fedledger_participant::run_with_source(cfg.clone(), false, Box::new(FixedUpdate(0.5)))
            .await
            .unwrap();
    assert_eq!(report.rounds_sent, [ROUND]);
    assert_eq!(
        *seen.digests.lock().unwrap(),
        [vector_sha256(&[0.01; GLOBAL.len()])],
        "the update spent for before the crash, not a second one"
    );
    assert_eq!(
        spends_on_disk(&cfg).len(),
        1,
        "no second spend for the round"
    );
    scenario.teardown();
}
