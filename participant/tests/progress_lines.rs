//! What a hospital's operator reads when the agent's output goes to a file or a journal (not a
//! terminal): the real `fedledger-participant run` binary, against a fake coordinator on
//! loopback that serves three training rounds, prints exactly one line per round saying what
//! it answered and the privacy budget left, then one line when the federation finishes.

mod common;

use std::{
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use common::{Script, TaskStream, serve};
use fedledger_model::digest::{vector_sha256, vector_to_bytes};
use fedledger_participant::keys;
use fedledger_proto as pb;
use futures::stream;
use tonic::{Request, Response, Status, Streaming};

const ROUNDS: u64 = 3;
const GLOBAL: [f32; 4] = [0.0; 4];

/// Serves rounds 1..=ROUNDS, one after another as each is answered, then DONE.
#[derive(Clone, Default)]
struct FakeCoordinator {
    answered: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl Script for FakeCoordinator {
    async fn get_task(
        &self,
        _req: Request<pb::TaskRequest>,
    ) -> Result<Response<TaskStream>, Status> {
        let round = self.answered.load(Ordering::SeqCst) + 1;
        let state = if round > ROUNDS {
            pb::TaskState::Done
        } else {
            pb::TaskState::Train
        };
        let header = pb::TaskHeader {
            state: state as i32,
            federation: "fed".into(),
            round: round.min(ROUNDS),
            num_params: GLOBAL.len() as u64,
            model_sha256: vector_sha256(&GLOBAL),
            total_rounds: ROUNDS,
            model: Some(pb::ModelSpec {
                kind: "logreg".into(),
                features: 3,
                classes: 2,
                hidden: vec![],
            }),
            hyper: Some(pb::HyperParameters {
                local_epochs: 1,
                batch_size: 8,
                learning_rate: 0.1,
                clip_norm: 1.0,
                noise_multiplier: 2.0,
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
        let mut header = None;
        while let Some(m) = messages.message().await? {
            if let Some(pb::update_message::Msg::Header(h)) = m.msg {
                header = Some(h);
            }
        }
        let h = header.ok_or_else(|| Status::invalid_argument("no header"))?;
        self.answered.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(pb::SubmitReceipt {
            round: h.round,
            update_sha256: h.update_sha256,
            accepted: 1,
            quorum: 1,
        }))
    }

    async fn decline(
        &self,
        req: Request<pb::DeclineRequest>,
    ) -> Result<Response<pb::DeclineReceipt>, Status> {
        self.answered.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(pb::DeclineReceipt {
            round: req.into_inner().round,
        }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_terminal_the_agent_prints_one_line_per_round_with_the_budget_left() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeCoordinator::default();
    let (url, _server) = serve(fake.clone()).await;
    keys::generate_key_file(&dir.path().join("h0.key")).unwrap();
    let mut csv = String::from("a,b,c,label\n");
    for i in 0..40 {
        csv.push_str(&format!("{},{},{},{}\n", i % 7, (i * 3) % 5, i % 2, i % 2));
    }
    std::fs::write(dir.path().join("data.csv"), csv).unwrap();
    let config = dir.path().join("participant.toml");
    std::fs::write(
        &config,
        format!(
            "coordinator = \"{url}\"\nkey = \"h0.key\"\ndata = \"data.csv\"\n\
             label_column = \"label\"\nstate_dir = \"state\"\n"
        ),
    )
    .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_fedledger-participant"))
            .args(["run", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fake.answered.load(Ordering::SeqCst), ROUNDS);
    for round in 1..=ROUNDS {
        let lines: Vec<&str> = stdout
            .lines()
            .filter(|l| l.starts_with(&format!("h0 round {round}/{ROUNDS}: ")))
            .collect();
        assert_eq!(lines.len(), 1, "round {round} in\n{stdout}");
        assert!(
            lines[0].contains("budget left") && lines[0].contains("of 8"),
            "{}",
            lines[0]
        );
    }
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("h0 federation finished: ")),
        "{stdout}"
    );
}
