//! `fedledger-coordinator replay`, run as operators run it (a separate process), only reads the
//! state directory: every file is byte for byte the same afterwards, and no key or ledger is
//! created in a directory that lacks them.

mod common;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use common::*;

/// Every file under `dir` with a digest of its bytes.
fn tree(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                out.insert(
                    p.strip_prefix(dir).unwrap().to_owned(),
                    fedledger_model::digest::sha256_hex(&bytes),
                );
            }
        }
    }
    out
}

fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let t = to.join(e.file_name());
        if e.path().is_dir() {
            copy(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), t).unwrap();
        }
    }
}

fn replay(config: &Path, round: u64) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fedledger-coordinator"))
        .args(["replay", "--config"])
        .arg(config)
        .args(["--round", &round.to_string()])
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_reads_a_copy_of_the_state_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (k0, k1) = (keypair(), keypair());
    let cfg = config(dir.path(), &[&k0, &k1], 3, 2, 1, 2);
    let fed = cfg.federation.clone();
    let running = start(cfg.clone()).await;
    let mut c = client(&running).await;
    let s0 = register(&mut c, &k0).await;
    let s1 = register(&mut c, &k1).await;
    task(&mut c, &s0).await;
    for (k, s, d) in [
        (&k0, &s0, [0.1f32, 0.2, 0.3, 0.4]),
        (&k1, &s1, [0.3, 0.1, 0.0, 0.2]),
    ] {
        submit(&mut c, update_messages(&fed, k, s, 1, 5, &d))
            .await
            .unwrap();
    }
    running.wait_done().await;
    running.shutdown().await.unwrap();

    // The copy an auditor or an operator replays: the state directory without the coordinator's
    // signing key, described by a config file of its own.
    let copy_dir = tempfile::tempdir().unwrap();
    let state = copy_dir.path().join("state");
    copy(&cfg.state_dir, &state);
    std::fs::remove_file(state.join("coordinator.key")).unwrap();
    std::fs::copy(&cfg.validation_path, copy_dir.path().join("validation.csv")).unwrap();
    let keys: String = [&k0, &k1]
        .iter()
        .enumerate()
        .map(|(i, k)| {
            format!(
                "[[participant]]\nname = \"h{i}\"\npublic_key = \"{}\"\n",
                pubhex(k)
            )
        })
        .collect();
    let config_path = copy_dir.path().join("coordinator.toml");
    std::fs::write(
        &config_path,
        format!(
            "federation = \"{fed}\"\nstate_dir = \"state\"\n\n[model]\nkind = \"logreg\"\n\
             features = 3\nclasses = 2\n\n[data]\nlabel_column = \"label\"\n\
             validation = \"validation.csv\"\n\n[rounds]\ntotal = 1\nquorum = 2\n\n{keys}"
        ),
    )
    .unwrap();
    let before = tree(&state);
    let out = replay(&config_path, 1);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("round 1: every recomputed figure matches the record"),
        "{stdout}"
    );
    assert_eq!(tree(&state), before, "replay changed the state directory");
    assert!(!state.join("coordinator.key").exists());
    // A round that is not there is an error, still without a trace.
    let out = replay(&config_path, 7);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("round 7 has no record"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(tree(&state), before);
    // A directory that is not a coordinator's state is refused, and nothing is created in it.
    let empty = tempfile::tempdir().unwrap();
    let bad_config = empty.path().join("coordinator.toml");
    std::fs::copy(&config_path, &bad_config).unwrap();
    std::fs::copy(&cfg.validation_path, empty.path().join("validation.csv")).unwrap();
    let out = replay(&bad_config, 1);
    assert!(!out.status.success());
    assert!(!empty.path().join("state").exists());

    // The README's audit commands: a bundle of round 1, with the validation file, replayed by
    // the binary from the bundle alone (after the state copy is gone), naming its limits.
    let bundle = copy_dir.path().join("audit");
    let out = Command::new(env!("CARGO_BIN_EXE_fedledger-coordinator"))
        .args(["export-audit", "--config"])
        .arg(&config_path)
        .args(["--rounds", "1..1", "--include-validation", "--out"])
        .arg(&bundle)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("limit: without the validation file"),
        "{stdout}"
    );
    assert_eq!(
        tree(&state),
        before,
        "export-audit changed the state directory"
    );
    // Rounds that are not there cannot be exported.
    let out = Command::new(env!("CARGO_BIN_EXE_fedledger-coordinator"))
        .args(["export-audit", "--config"])
        .arg(&config_path)
        .args(["--rounds", "1..2", "--out"])
        .arg(copy_dir.path().join("audit2"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("round 2 has not finished"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!copy_dir.path().join("audit2").exists());
    std::fs::remove_dir_all(&state).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fedledger-coordinator"))
        .args(["replay", "--bundle"])
        .arg(&bundle)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("ok      round 1: value_nano of h"),
        "{stdout}"
    );
    assert!(stdout.contains("limit   server-side DP noise"), "{stdout}");
    assert!(
        stdout.contains("rounds 1..1: every recomputed figure matches the anchored entries"),
        "{stdout}"
    );
}
