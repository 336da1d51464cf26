//! Auditors' tools against a coordinator at work. The coordinator runs here, in this test
//! process (with its `failpoints` feature); hospitals are the real `fedledger-participant`
//! binary and the auditor's monitor and one witness are the real `fedledger-ledger` binary,
//! each a separate process on loopback ports it picks itself.
//!
//! - An honest run: one witness cosigns over libp2p (a node in this process), the other over
//!   HTTP (C2SP tlog-witness, the `fedledger-ledger node` binary), the genesis quorum is both,
//!   so hospitals get receipts only when the coordinator counted both; the monitor follows the
//!   tiles API to the end and accepts every checkpoint.
//! - A forking coordinator (`coordinator::ledger::fork` on the last round, so the fork is what
//!   it publishes last): the monitor has accepted the genesis checkpoint before any round ran;
//!   the coordinator then signs and publishes a second, inconsistent checkpoint; the monitor
//!   exits with status 3 and a line naming the alert, and prints both checkpoints (the last one
//!   it accepted and the fork).

mod common;

use std::{ffi::OsStr, time::Duration};

use common::binaries::{Watched, hospitals, ledger_bin};
use common::*;
use fedledger_ledger::{keys, note::NoteSigner};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn monitor(dir: &std::path::Path, running: &fedledger_coordinator::Running) -> Watched {
    let state = dir.join("monitor");
    let url = running.tiles_url().unwrap();
    let genesis = running.identity.genesis_sha256.clone().unwrap();
    Watched::spawn(
        ledger_bin(),
        &[
            OsStr::new("monitor"),
            OsStr::new(&url),
            OsStr::new("--state"),
            state.as_os_str(),
            OsStr::new("--log-key"),
            OsStr::new(&running.identity.log_key),
            OsStr::new("--genesis"),
            OsStr::new(&genesis),
            OsStr::new("--interval-secs"),
            OsStr::new("1"),
        ],
        dir.join("monitor.stderr"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_monitor_follows_a_run_witnessed_over_libp2p_and_http_to_the_end() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut hs, ks) = hospitals(dir.path(), 3);
    let refs: Vec<_> = ks.iter().collect();
    std::fs::create_dir_all(dir.path().join("coordinator")).unwrap();
    let mut cfg = config(&dir.path().join("coordinator"), &refs, 3, 2, 3, 2);
    cfg.tiles_listen = Some("127.0.0.1:0".parse().unwrap());
    cfg.ledger_listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    // The log key, known before the coordinator starts (the witnesses follow it).
    std::fs::create_dir_all(cfg.key.parent().unwrap()).unwrap();
    let log_key = NoteSigner::log(&cfg.federation, keys::generate_key_file(&cfg.key).unwrap())
        .unwrap()
        .verifier_key()
        .clone();

    // The HTTP witness: `fedledger-ledger node` with `[witness] http_listen`.
    let node_toml = dir.path().join("ledger.toml");
    std::fs::write(
        &node_toml,
        format!(
            "store = \"{}\"\nlog_key = \"{log_key}\"\n\n[witness]\nname = \"witness.test/http\"\n\
             key = \"{}\"\nstate = \"{}\"\nhttp_listen = \"127.0.0.1:0\"\n",
            dir.path().join("w-http/replica").display(),
            dir.path().join("w-http/witness.key").display(),
            dir.path().join("w-http/state").display(),
        ),
    )
    .unwrap();
    let witness_node = Watched::spawn(
        ledger_bin(),
        &[
            OsStr::new("node"),
            OsStr::new("--config"),
            node_toml.as_os_str(),
        ],
        dir.path().join("w-http.stderr"),
    );
    let http_key = witness_node
        .line(Duration::from_secs(30), |l| l.starts_with("witness key: "))
        .await
        .trim_start_matches("witness key: ")
        .to_owned();
    let http_url = witness_node
        .line(Duration::from_secs(30), |l| {
            l.starts_with("serving tlog-witness at ")
        })
        .await
        .trim_start_matches("serving tlog-witness at ")
        .to_owned();

    // The libp2p witness, in this process.
    let p2p_signer = NoteSigner::witness(
        "witness.test/p2p",
        keys::generate_key_file(&dir.path().join("w-p2p.key")).unwrap(),
    )
    .unwrap();
    cfg.witnesses = vec![p2p_signer.verifier_key().to_string(), http_key.clone()];
    cfg.witness_quorum = 2;
    cfg.witness_urls = vec![http_url];
    let running = start(cfg).await;
    assert_eq!(running.identity.log_key, log_key.to_string());
    let coord = running.ledger_node.as_ref().unwrap();
    let addrs = coord.listen_addrs(Duration::from_secs(10)).await.unwrap();
    let replica =
        fedledger_ledger::Log::open_replica(&dir.path().join("w-p2p/log"), log_key.clone())
            .unwrap();
    let witness = fedledger_ledger::witness::Witness::open(
        &dir.path().join("w-p2p/witness"),
        p2p_signer.clone(),
        log_key.clone(),
    )
    .unwrap();
    let p2p = fedledger_ledger::node::spawn(
        fedledger_ledger::node::NodeConfig {
            dial: addrs,
            ..Default::default()
        },
        libp2p::identity::Keypair::generate_ed25519(),
        replica,
        Some(witness),
    )
    .await
    .unwrap();

    // The monitor has accepted the genesis checkpoint (cosigned by both) before any round runs.
    let genesis_size = running.coordinator.ledger().size();
    let mut mon = monitor(dir.path(), &running);
    mon.line(Duration::from_secs(60), |l| {
        l.starts_with(&format!("accepted size {genesis_size} "))
    })
    .await;
    for h in &mut hs {
        h.write_config(&running);
        h.start();
    }
    for h in &mut hs {
        let code = h.wait(Duration::from_secs(180)).await;
        assert_eq!(code, 0, "{} failed:\n{}", h.name, h.log());
    }
    running.wait_done().await;
    // Every round was witnessed by both, each its own way.
    let log = running.coordinator.ledger().clone();
    let size = log.size();
    let witnesses = [
        p2p_signer.verifier_key().clone(),
        fedledger_ledger::note::VerifierKey::parse(&http_key).unwrap(),
    ];
    let cp = log.latest_witnessed(&witnesses, 2).unwrap().unwrap();
    assert_eq!(
        cp.checkpoint.size, size,
        "the last round's checkpoint is cosigned by both"
    );
    // The monitor followed to the end, without an alert.
    mon.line(Duration::from_secs(60), |l| {
        l.starts_with(&format!("accepted size {size} "))
    })
    .await;
    assert!(
        mon.stdout()
            .iter()
            .filter(|l| l.starts_with("accepted size"))
            .count()
            >= 2,
        "it followed the run: {:?}",
        mon.stdout()
    );
    assert!(mon.child.try_wait().unwrap().is_none(), "still following");
    assert!(!mon.stderr().contains("ALERT"), "{}", mon.stderr());
    let _ = mon.child.kill();
    p2p.shutdown().await;
    drop(witness_node);
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_monitor_alerts_on_a_forked_checkpoint_naming_both() {
    let _serial = SERIAL.lock().await;
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let (mut hs, ks) = hospitals(dir.path(), 2);
    let refs: Vec<_> = ks.iter().collect();
    std::fs::create_dir_all(dir.path().join("coordinator")).unwrap();
    let mut cfg = config(&dir.path().join("coordinator"), &refs, 3, 2, 2, 2);
    cfg.tiles_listen = Some("127.0.0.1:0".parse().unwrap());
    fail::cfg("coordinator::ledger::fork", "return(2)").unwrap();
    let running = start(cfg).await;
    let log = running.coordinator.ledger().clone();
    let genesis_size = log.size();
    let mut mon = monitor(dir.path(), &running);
    mon.line(Duration::from_secs(60), |l| {
        l.starts_with(&format!("accepted size {genesis_size} "))
    })
    .await;
    for h in &mut hs {
        h.write_config(&running);
        h.start();
    }
    let code = mon.exit(Duration::from_secs(120)).await;
    let stderr = mon.stderr();
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("ALERT inconsistent checkpoints"),
        "{stderr}"
    );
    let forked = log.latest_checkpoint().unwrap().unwrap();
    assert!(forked.checkpoint.size > genesis_size);
    assert_ne!(
        forked.checkpoint.root,
        log.root_at(forked.checkpoint.size).unwrap(),
        "a fork"
    );
    let accepted: u64 = mon
        .stdout()
        .iter()
        .filter_map(|l| {
            l.strip_prefix("accepted size ")?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .next_back()
        .unwrap();
    let accepted_note = log.checkpoint_at(accepted).unwrap().unwrap().encode();
    assert!(
        stderr.contains(&accepted_note),
        "names the checkpoint accepted:\n{stderr}"
    );
    assert!(
        stderr.contains(&forked.encode()),
        "names the forked one:\n{stderr}"
    );
    assert!(dir.path().join("monitor/alerts/0000.json").exists());
    // And it will not go on from there.
    let again = std::process::Command::new(ledger_bin())
        .args([
            "monitor",
            &running.tiles_url().unwrap(),
            "--once",
            "--log-key",
            &running.identity.log_key,
            "--state",
        ])
        .arg(dir.path().join("monitor"))
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(3));
    drop(hs);
    fail::remove("coordinator::ledger::fork");
    running.shutdown().await.unwrap();
    scenario.teardown();
}
