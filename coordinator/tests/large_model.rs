//! A 16M-parameter model (64 MiB of f32) goes down and back up through the chunked protocol,
//! unchanged: the download and the upload hash to what they should, and the aggregate is exact.

mod common;

use common::*;
use fedledger_proto as pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_million_parameters_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let k = keypair();
    // 4000 features x 4000 classes + 4000 biases = 16,004,000 parameters.
    let cfg = config(dir.path(), &[&k], 4000, 4000, 1, 1);
    let fed = cfg.federation.clone();
    let running = start(cfg).await;
    let mut c = client(&running).await;
    let s = register(&mut c, &k).await;
    let (h, global) = task(&mut c, &s).await;
    assert_eq!(h.num_params, 16_004_000);
    assert_eq!(global.len(), 16_004_000);
    assert_eq!(
        fedledger_model::digest::vector_sha256(&global),
        h.model_sha256
    );

    let delta: Vec<f32> = (0..global.len())
        .map(|i| ((i % 1000) as f32) * 1e-3)
        .collect();
    let msgs = update_messages(&fed, &k, &s, 1, 100, &delta);
    assert_eq!(msgs.len(), 1 + 16_004_000usize.div_ceil(pb::CHUNK_FLOATS));
    let receipt = submit(&mut c, msgs).await.unwrap();
    assert_eq!(
        receipt.update_sha256,
        fedledger_model::digest::vector_sha256(&delta)
    );
    running.wait_done().await;

    let (done, final_params) = task(&mut c, &s).await;
    assert_eq!(done.state, pb::TaskState::Done as i32);
    assert_eq!(final_params.len(), global.len());
    let exact = global
        .iter()
        .zip(&delta)
        .zip(&final_params)
        .all(|((g, d), f)| *f == g + d);
    assert!(
        exact,
        "one update with weight 1: the new model is global + delta exactly"
    );
    running.shutdown().await.unwrap();
}
