//! Bad input gets a precise gRPC status and changes no state: unknown keys, forged registration,
//! replayed challenges, bad sessions, wrong rounds, forged or mismatched signatures, non-finite
//! values, wrong dimensions, oversized chunks, replayed updates.

mod common;

use common::*;
use fedledger_proto as pb;
use tonic::Code;

fn assert_refused<T: std::fmt::Debug>(r: Result<T, tonic::Status>, code: Code, needle: &str) {
    let s = r.expect_err("call should be refused");
    assert_eq!(s.code(), code, "status {s:?}");
    assert!(
        s.message().contains(needle),
        "message {:?} should mention {needle:?}",
        s.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_is_refused_precisely_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (k0, k1, stranger) = (keypair(), keypair(), keypair());
    let cfg = config(dir.path(), &[&k0, &k1], 3, 2, 1, 2);
    let fed = cfg.federation.clone();
    let running = start(cfg).await;
    let mut c = client(&running).await;

    // Registration.
    assert_refused(
        c.challenge(pb::ChallengeRequest {
            public_key: pubhex(&stranger),
        })
        .await,
        Code::PermissionDenied,
        "not enrolled",
    );
    assert_refused(
        c.challenge(pb::ChallengeRequest {
            public_key: "zz".into(),
        })
        .await,
        Code::InvalidArgument,
        "not hex",
    );
    let ch = c
        .challenge(pb::ChallengeRequest {
            public_key: pubhex(&k0),
        })
        .await
        .unwrap()
        .into_inner();
    let forged = stranger.sign(pb::register_message(&fed, &ch.challenge).as_bytes());
    assert_refused(
        c.register(pb::RegisterRequest {
            public_key: pubhex(&k0),
            challenge: ch.challenge.clone(),
            signature: forged.as_ref().to_vec(),
        })
        .await,
        Code::Unauthenticated,
        "signature does not verify",
    );
    let good = k0.sign(pb::register_message(&fed, &ch.challenge).as_bytes());
    let reg = pb::RegisterRequest {
        public_key: pubhex(&k0),
        challenge: ch.challenge.clone(),
        signature: good.as_ref().to_vec(),
    };
    let s0 = c.register(reg.clone()).await.unwrap().into_inner().session;
    assert_refused(c.register(reg).await, Code::Unauthenticated, "challenge");
    assert_refused(
        c.get_task(pb::TaskRequest {
            session: vec![7; 32],
        })
        .await
        .map(|_| ()),
        Code::Unauthenticated,
        "session",
    );
    let s1 = register(&mut c, &k1).await;

    // Quorum of registrations reached: round 1 is open.
    let (header, global) = task(&mut c, &s0).await;
    assert_eq!(header.state, pb::TaskState::Train as i32);
    assert_eq!(header.round, 1);
    assert_eq!(global.len(), 4);
    let delta = vec![0.5f32, -0.25, 0.125, 1.0];

    assert_refused(
        submit(&mut c, update_messages(&fed, &k0, &s0, 2, 10, &delta)).await,
        Code::FailedPrecondition,
        "round 2 but round 1 is open",
    );
    assert_refused(
        submit(&mut c, update_messages(&fed, &k1, &s0, 1, 10, &delta)).await,
        Code::PermissionDenied,
        "signature does not verify for h0",
    );
    let mut nan = delta.clone();
    nan[2] = f32::NAN;
    assert_refused(
        submit(&mut c, update_messages(&fed, &k0, &s0, 1, 10, &nan)).await,
        Code::InvalidArgument,
        "index 2 is not finite",
    );
    assert_refused(
        submit(&mut c, update_messages(&fed, &k0, &s0, 1, 10, &delta[..3])).await,
        Code::InvalidArgument,
        "3 parameters but the model has 4",
    );
    assert_refused(
        submit(&mut c, update_messages(&fed, &k0, &s0, 1, 0, &delta)).await,
        Code::InvalidArgument,
        "example count 0",
    );
    // Header signed over one vector, chunks carrying another.
    let mut swapped = update_messages(&fed, &k0, &s0, 1, 10, &delta);
    swapped[1] = update_messages(&fed, &k0, &s0, 1, 10, &[9.0, 9.0, 9.0, 9.0]).remove(1);
    assert_refused(
        submit(&mut c, swapped).await,
        Code::InvalidArgument,
        "digest mismatch",
    );
    // A chunk far larger than allowed.
    let mut big = update_messages(&fed, &k0, &s0, 1, 10, &delta);
    big[1] = pb::UpdateMessage {
        msg: Some(pb::update_message::Msg::Chunk(pb::ParamChunk {
            offset: 0,
            data: vec![0u8; pb::CHUNK_BYTES + 4].into(),
        })),
    };
    assert_refused(
        submit(&mut c, big).await,
        Code::ResourceExhausted,
        "at most",
    );
    let mut headless = update_messages(&fed, &k0, &s0, 1, 10, &delta);
    headless.remove(0);
    assert_refused(
        submit(&mut c, headless).await,
        Code::InvalidArgument,
        "header",
    );
    let mut unsigned = update_messages(&fed, &k0, &s0, 1, 10, &delta);
    if let Some(pb::update_message::Msg::Header(h)) = &mut unsigned[0].msg {
        h.signature.clear();
    }
    assert_refused(
        submit(&mut c, unsigned).await,
        Code::PermissionDenied,
        "signature",
    );

    // None of that changed anything: the first valid update is the first accepted.
    let receipt = submit(&mut c, update_messages(&fed, &k0, &s0, 1, 10, &delta))
        .await
        .unwrap();
    assert_eq!((receipt.round, receipt.accepted, receipt.quorum), (1, 1, 2));
    assert_refused(
        submit(&mut c, update_messages(&fed, &k0, &s0, 1, 10, &delta)).await,
        Code::AlreadyExists,
        "already submitted",
    );
    let reason = "budget exhausted";
    assert_refused(
        c.decline(pb::DeclineRequest {
            session: s1.clone(),
            round: 1,
            reason: reason.into(),
            signature: k0
                .sign(
                    fedledger_ledger::records::decline_signing_message(&fed, 1, reason).as_bytes(),
                )
                .as_ref()
                .to_vec(),
        })
        .await,
        Code::PermissionDenied,
        "decline signature",
    );
    assert_refused(
        c.get_round_result(pb::RoundResultRequest {
            session: s1.clone(),
            round: 1,
        })
        .await,
        Code::FailedPrecondition,
        "has not finished",
    );

    // The second participant completes the round.
    let r = submit(&mut c, update_messages(&fed, &k1, &s1, 1, 30, &[1.0; 4]))
        .await
        .unwrap();
    assert_eq!(r.accepted, 2);
    running.wait_done().await;
    let result = c
        .get_round_result(pb::RoundResultRequest {
            session: s1,
            round: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(result.status, "completed");
    assert_eq!(result.contributions.len(), 2);
    // FedAvg: global + 10/40 * delta + 30/40 * 1.
    let after = running.coordinator.global();
    for (i, a) in after.iter().enumerate() {
        let want = global[i] + 0.25 * delta[i] + 0.75;
        assert!((a - want).abs() < 1e-6, "param {i}: {a} vs {want}");
    }
    running.shutdown().await.unwrap();
}
