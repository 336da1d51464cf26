//! Nothing accepted is lost on a crash: an update acknowledged before a restart is still part of
//! the round afterwards, and a participant that already answered is told to wait.

mod common;

use common::*;
use fedledger_proto as pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_update_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (k0, k1) = (keypair(), keypair());
    let cfg = config(dir.path(), &[&k0, &k1], 3, 2, 1, 2);
    let fed = cfg.federation.clone();

    let running = start(cfg.clone()).await;
    let mut c = client(&running).await;
    let s0 = register(&mut c, &k0).await;
    let _s1 = register(&mut c, &k1).await;
    let (h, _) = task(&mut c, &s0).await;
    assert_eq!(h.round, 1);
    let d0 = vec![1.0f32, 2.0, 3.0, 4.0];
    submit(&mut c, update_messages(&fed, &k0, &s0, 1, 5, &d0))
        .await
        .unwrap();
    running.shutdown().await.unwrap();
    drop(c);

    // Restart from the same state directory, on a new port.
    let running = start(cfg).await;
    let mut c = client(&running).await;
    // Old sessions are gone: participants register again.
    assert_eq!(
        c.get_task(pb::TaskRequest {
            session: s0.clone()
        })
        .await
        .map(|_| ())
        .unwrap_err()
        .code(),
        tonic::Code::Unauthenticated
    );
    let s0 = register(&mut c, &k0).await;
    let s1 = register(&mut c, &k1).await;
    let (h0, _) = task_now(&mut c, &s0).await;
    assert_eq!(h0.state, pb::TaskState::Wait as i32, "{}", h0.detail);
    assert_eq!(h0.round, 1);
    let (h1, global) = task(&mut c, &s1).await;
    assert_eq!((h1.state, h1.round), (pb::TaskState::Train as i32, 1));
    let d1 = vec![0.0f32; 4];
    let r = submit(&mut c, update_messages(&fed, &k1, &s1, 1, 5, &d1))
        .await
        .unwrap();
    assert_eq!(
        r.accepted, 2,
        "the update accepted before the restart still counts"
    );
    running.wait_done().await;
    let after = running.coordinator.global();
    for i in 0..4 {
        assert!((after[i] - (global[i] + 0.5 * d0[i])).abs() < 1e-6);
    }
    running.shutdown().await.unwrap();
}

/// A task request that does not wait for the long poll to time out: the header is returned as
/// soon as the participant has nothing to do and no round change is coming.
async fn task_now(
    c: &mut pb::coordinator_client::CoordinatorClient<tonic::transport::Channel>,
    session: &[u8],
) -> (pb::TaskHeader, Vec<f32>) {
    tokio::time::timeout(std::time::Duration::from_secs(30), task(c, session))
        .await
        .expect("task answered")
}
