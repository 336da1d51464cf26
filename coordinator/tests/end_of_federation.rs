//! The end of a federation, with real processes: the coordinator binary and participant
//! binaries on loopback. A hospital that declined the last round must learn that the federation
//! is over and exit cleanly with its summary, never retrying an unreachable coordinator:
//!
//! - normally, because the coordinator keeps answering DONE for its grace period (until every
//!   hospital was told and the final checkpoint is witnessed) and only then exits;
//! - and when the coordinator is gone anyway after the hospital answered the last round (here it
//!   is killed), because the hospital takes that for the end rather than an outage.

mod common;

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use common::binaries::{Hospital, Watched, coordinator_bin, free_port, hospitals, participant_bin};
use fedledger_ledger::keys;

const FEDERATION: &str = "end-test";

/// `coordinator.toml` enrolling `hs` by their public key files (nothing pasted).
fn write_coordinator(dir: &Path, hs: &[Hospital], rounds: u64, quorum: u32, grace: u64) -> PathBuf {
    common::write_validation(&dir.join("validation.csv"), 3, 60, 2);
    let mut text = format!(
        "federation = \"{FEDERATION}\"\nlisten = \"127.0.0.1:{}\"\nstate_dir = \"state\"\n\
         [model]\nkind = \"logreg\"\nfeatures = 3\nclasses = 2\n\
         [data]\nlabel_column = \"label\"\nvalidation = \"validation.csv\"\n\
         [rounds]\ntotal = {rounds}\nquorum = {quorum}\ngrace_secs = {grace}\n\
         [training]\nlocal_epochs = 1\nbatch_size = 8\n\
         [valuation]\nbootstrap_resamples = 0\n\
         [limits]\nmax_connections_per_ip = 64\n\
         [ledger]\ntiles_listen = \"127.0.0.1:{}\"\n",
        free_port(),
        free_port()
    );
    for h in hs {
        let key = keys::load_key(&h.dir.join("key")).unwrap();
        let public = dir.join(format!("{}.pub", h.name));
        std::fs::write(&public, format!("{}\n", keys::public_key_hex(&key))).unwrap();
        text.push_str(&format!(
            "[[participant]]\nname = \"{}\"\npublic_key_file = \"{}.pub\"\n",
            h.name, h.name
        ));
    }
    let path = dir.join("coordinator.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts the coordinator; once it listens, writes the keys file it printed and every
/// hospital's `participant.toml` (receipts checked against those pins).
async fn serve(dir: &Path, config: &Path, hs: &[Hospital]) -> Watched {
    let c = Watched::spawn_logged(
        coordinator_bin(),
        &[
            OsStr::new("serve"),
            OsStr::new("--config"),
            config.as_os_str(),
        ],
        dir.join("coordinator.stderr"),
    );
    let patience = Duration::from_secs(60);
    let addr = c.line(patience, |l| l.starts_with("listening on ")).await;
    let addr = addr["listening on ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .to_owned();
    let tiles = c.line(patience, |l| l.starts_with("tlog-tiles:")).await;
    let tiles = tiles["tlog-tiles:".len()..].trim().to_owned();
    let log_key = c
        .line(patience, |l| l.starts_with("log verifier key:"))
        .await;
    let genesis = c.line(patience, |l| l.starts_with("genesis sha256:")).await;
    std::fs::write(
        dir.join("federation.keys"),
        format!("{log_key}\n{genesis}\n"),
    )
    .unwrap();
    for (i, h) in hs.iter().enumerate() {
        // The last hospital requires DP-SGD, which the task does not ask for: it declines
        // every round, the last one included.
        let require_dp = i + 1 == hs.len();
        std::fs::write(
            &h.config,
            format!(
                "coordinator = \"http://{addr}\"\nkey = \"key\"\ndata = \"data.csv\"\n\
                 label_column = \"label\"\nstate_dir = \"state\"\n\
                 [privacy]\nrequire_dp = {require_dp}\n\
                 [ledger]\nurl = \"{tiles}\"\nkeys_file = \"{}\"\nallow_no_witnesses = true\n\
                 receipt_timeout_secs = 60\n",
                dir.join("federation.keys").display()
            ),
        )
        .unwrap();
    }
    c
}

fn stdout_of(h: &Hospital) -> String {
    std::fs::read_to_string(h.dir.join("stdout.log")).unwrap_or_default()
}

/// Starts a hospital with its stdout kept in `stdout.log` beside `stderr.log`.
fn start(h: &mut Hospital) {
    h.child = Some(
        std::process::Command::new(participant_bin())
            .args(["run", "--config"])
            .arg(&h.config)
            .env("RUST_LOG", "info")
            .stdout(std::fs::File::create(h.dir.join("stdout.log")).unwrap())
            .stderr(std::fs::File::create(h.dir.join("stderr.log")).unwrap())
            .spawn()
            .expect("start fedledger-participant"),
    );
}

/// Waits until `h`'s log says it declined `n` rounds; when it did.
async fn declined(h: &Hospital, n: usize) -> Instant {
    let until = Instant::now() + Duration::from_secs(120);
    while h.log().matches("declining round").count() < n {
        assert!(
            Instant::now() < until,
            "{} never declined; its log:\n{}",
            h.name,
            h.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Instant::now()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hospital_that_declined_the_last_round_hears_done_and_exits_with_its_summary() {
    let dir = tempfile::tempdir().unwrap();
    let (mut hs, _) = hospitals(dir.path(), 3);
    let config = write_coordinator(dir.path(), &hs, 2, 2, 60);
    let mut coordinator = serve(dir.path(), &config, &hs).await;
    for h in &mut hs {
        start(h);
    }
    let decliner = hs.len() - 1;
    let last_decline = declined(&hs[decliner], 2).await;
    let mut codes = Vec::new();
    let mut decliner_exit = None;
    for (i, h) in hs.iter_mut().enumerate() {
        codes.push(h.wait(Duration::from_secs(120)).await);
        if i == decliner {
            decliner_exit = Some(Instant::now());
        }
    }
    for h in &hs {
        assert!(
            !h.log().contains("unreachable"),
            "{} retried an unreachable coordinator:\n{}",
            h.name,
            h.log()
        );
    }
    assert_eq!(
        codes,
        vec![0, 0, 0],
        "logs: {:?}",
        hs.iter().map(Hospital::log).collect::<Vec<_>>()
    );
    let summary = stdout_of(&hs[decliner]);
    assert!(
        summary.contains(&format!(
            "federation {FEDERATION} finished; sent 0 updates, declined 2 rounds"
        )),
        "{summary}"
    );
    // The coordinator exits by itself once every hospital was told and nobody asks more.
    let last_exit = Instant::now();
    assert_eq!(coordinator.exit(Duration::from_secs(120)).await, 0);
    eprintln!(
        "measured: the coordinator exited {:?} after the last hospital",
        Instant::now() - last_exit
    );
    let out = coordinator.stdout().join("\n");
    assert!(out.contains("every hospital was told"), "{out}");
    eprintln!(
        "measured: the declining hospital exited {:?} after it declined the last round",
        decliner_exit.unwrap() - last_decline
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hospital_that_declined_the_last_round_exits_cleanly_when_the_coordinator_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    // Two enrolled, one running: the round stays open after the decline, and the coordinator
    // is then killed, so the hospital cannot hear DONE.
    let (mut hs, _) = hospitals(dir.path(), 2);
    let config = write_coordinator(dir.path(), &hs, 1, 1, 60);
    let mut coordinator = serve(dir.path(), &config, &hs).await;
    let decliner = &mut hs[1];
    start(decliner);
    declined(decliner, 1).await;
    // The decline is durable at the coordinator (which logs to stderr) before it is logged.
    let until = Instant::now() + Duration::from_secs(60);
    while !coordinator.stderr().contains("round declined") {
        assert!(
            Instant::now() < until,
            "the coordinator never logged the decline:\n{}",
            coordinator.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    coordinator.child.kill().unwrap();
    let gone = Instant::now();
    let code = decliner.wait(Duration::from_secs(120)).await;
    let exited = Instant::now();
    assert_eq!(code, 0, "{}", decliner.log());
    assert!(
        !decliner.log().contains("unreachable"),
        "retried an unreachable coordinator:\n{}",
        decliner.log()
    );
    let summary = stdout_of(decliner);
    assert!(
        summary.contains(&format!(
            "federation {FEDERATION} over (the coordinator stopped serving after round 1 of 1"
        )),
        "{summary}"
    );
    assert!(summary.contains("declined 1 rounds"), "{summary}");
    eprintln!(
        "measured: the declining hospital exited {:?} after the coordinator was killed",
        exited - gone
    );
}
