//! Hospitals check their receipts against a coordinator that lies. The coordinator runs here,
//! in this test process, with its `failpoints` feature (`coordinator::record::*` make it record
//! something else than what a hospital signed or was told); the hospitals are the real
//! `fedledger-participant` binary, run as separate processes (the coordinator crate may not
//! depend on the participant crate). Each lying failpoint targets one hospital by name: that
//! hospital stops before it submits for round r + 2, exits with status 3 naming the difference
//! and leaves an evidence file; an honest hospital beside them finishes with one receipt per
//! round, and its statement verifies offline.
//!
//! The participant binary is the one `cargo test --workspace` builds next to the coordinator's;
//! when it is missing (this package tested alone), it is built once with `cargo build`.

mod common;

use std::{process::Command, time::Duration};

use common::binaries::{hospitals, participant_bin};
use common::*;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Each lie, the hospital it targets, and what that hospital must name.
const LIES: [(&str, &str); 5] = [
    ("coordinator::record::other_digest", "update digest"),
    ("coordinator::record::other_examples", "examples"),
    ("coordinator::record::other_privacy", "privacy object"),
    ("coordinator::record::other_reward", "reward"),
    ("coordinator::record::omit_entry", "omits"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_lie_stops_the_hospital_it_concerns_and_an_honest_one_keeps_every_receipt() {
    let _serial = SERIAL.lock().await;
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let (mut hs, ks) = hospitals(dir.path(), LIES.len() + 1);
    let refs: Vec<_> = ks.iter().collect();
    std::fs::create_dir_all(dir.path().join("coordinator")).unwrap();
    let mut cfg = config(&dir.path().join("coordinator"), &refs, 3, 2, 3, 1);
    cfg.tiles_listen = Some("127.0.0.1:0".parse().unwrap());
    // A hospital that stopped leaves round 3 to the deadline.
    cfg.deadline = Duration::from_secs(4);
    for (i, (point, _)) in LIES.iter().enumerate() {
        fail::cfg(*point, &format!("return(h{i})")).unwrap();
    }
    let running = start(cfg).await;
    let federation = running.coordinator.config().federation.clone();
    for h in &mut hs {
        h.write_config(&running);
        h.start();
    }
    let honest = hs.len() - 1;
    for (i, h) in hs.iter_mut().enumerate() {
        let code = h.wait(Duration::from_secs(120)).await;
        let log = h.log();
        if i == honest {
            assert_eq!(code, 0, "the honest hospital failed:\n{log}");
            assert_eq!(h.receipts(&federation), [1, 2, 3], "{log}");
            assert!(h.evidence().is_empty());
        } else {
            let (point, names) = LIES[i];
            assert_eq!(code, 3, "{point}: {} exited {code}:\n{log}", h.name);
            assert!(
                log.contains(names),
                "{point}: the log does not name {names:?}:\n{log}"
            );
            let ev = h.evidence();
            assert_eq!(ev.len(), 1, "{point}: {ev:?}");
            assert_eq!(ev[0]["round"], 1, "{point}: {}", ev[0]);
            assert!(
                ev[0]["what"].as_str().unwrap().contains(names),
                "{point}: {}",
                ev[0]
            );
            assert_eq!(ev[0]["checkpoints"].as_array().unwrap().len(), 1);
            assert!(
                h.receipts(&federation).is_empty(),
                "{point}: no receipt for a lie"
            );
        }
    }
    running.wait_done().await;
    // The liars' victims stopped before submitting for round 3.
    let round3 = running.coordinator.outcome(3).unwrap();
    let names: Vec<&str> = round3
        .contributions
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, [format!("h{honest}")], "round 3: {names:?}");

    // A stopped hospital stays stopped until resumed.
    let victim = &mut hs[0];
    victim.start();
    assert_eq!(victim.wait(Duration::from_secs(30)).await, 3);
    assert!(victim.log().contains("resume"), "{}", victim.log());
    let out = Command::new(participant_bin())
        .args(["resume", "--config"])
        .arg(&victim.config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("round 1"));

    // The honest hospital's statement verifies offline against the published keys.
    let h = &hs[honest];
    let statement = dir.path().join("statement");
    let out = Command::new(participant_bin())
        .args(["receipts", "--config"])
        .arg(&h.config)
        .arg("--out")
        .arg(&statement)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = fedledger_ledger::receipts::verify_statement(
        &statement,
        &fedledger_ledger::receipts::StatementOptions {
            log_key: Some(running.coordinator.ledger().log_key().clone()),
            genesis_sha256: running.identity.genesis_sha256.clone(),
        },
    );
    assert!(report.ok(), "{report}");
    assert_eq!(report.statement.unwrap().totals.rounds, 3);
    running.shutdown().await.unwrap();
    scenario.teardown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hospital_refuses_a_federation_whose_genesis_differs_from_the_pinned_one() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut hs, ks) = hospitals(dir.path(), 1);
    let refs: Vec<_> = ks.iter().collect();
    std::fs::create_dir_all(dir.path().join("coordinator")).unwrap();
    let mut cfg = config(&dir.path().join("coordinator"), &refs, 3, 2, 1, 1);
    cfg.tiles_listen = Some("127.0.0.1:0".parse().unwrap());
    let running = start(cfg).await;
    hs[0].write_config(&running);
    let text = std::fs::read_to_string(&hs[0].config).unwrap();
    let pinned = running.identity.genesis_sha256.clone().unwrap();
    std::fs::write(&hs[0].config, text.replace(&pinned, &"ab".repeat(32))).unwrap();
    hs[0].start();
    assert_eq!(
        hs[0].wait(Duration::from_secs(60)).await,
        5,
        "{}",
        hs[0].log()
    );
    assert!(hs[0].log().contains("not the pinned"), "{}", hs[0].log());
    // Nothing was sent.
    assert_eq!(running.coordinator.progress().round, 1);
    assert!(
        running
            .coordinator
            .store()
            .updates_for(1)
            .unwrap()
            .is_empty()
    );
    // Without allow_no_witnesses, a federation without witnesses is refused too.
    std::fs::write(
        &hs[0].config,
        text.replace("allow_no_witnesses = true", "allow_no_witnesses = false"),
    )
    .unwrap();
    hs[0].start();
    assert_eq!(
        hs[0].wait(Duration::from_secs(60)).await,
        5,
        "{}",
        hs[0].log()
    );
    assert!(hs[0].log().contains("no witness quorum"), "{}", hs[0].log());

    // What the operator hands over: `keys` prints, from the configuration and a copy of the
    // ledger (the coordinator keeps running), what `serve` printed at start.
    assert_eq!(
        fedledger_coordinator::Identity::from_config(&running.coordinator.config()).unwrap(),
        fedledger_coordinator::Identity {
            peer_id: None,
            ..running.identity.clone()
        }
    );
    let config_path = dir.path().join("coordinator/coordinator.toml");
    std::fs::write(
        &config_path,
        format!(
            "federation = \"test-federation\"\nstate_dir = \"state\"\n\n[model]\nkind = \"logreg\"\n\
             features = 3\nclasses = 2\n\n[data]\nlabel_column = \"label\"\n\
             validation = \"validation.csv\"\n\n[rounds]\ntotal = 1\nquorum = 1\n\n\
             [[participant]]\nname = \"h0\"\npublic_key = \"{}\"\n",
            pubhex(&ks[0])
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fedledger-coordinator"))
        .args(["keys", "--config"])
        .arg(&config_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("log verifier key: {}", running.identity.log_key)),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("genesis sha256:   {pinned}")),
        "{stdout}"
    );
    // The hospital's keys file is that output.
    let keys_file = hs[0].dir.join("federation.keys");
    std::fs::write(&keys_file, stdout.as_bytes()).unwrap();
    let with_file = text
        .replace(&format!("log_key = \"{}\"\n", running.identity.log_key), "")
        .replace(
            &format!("genesis_sha256 = \"{pinned}\"\n"),
            "keys_file = \"federation.keys\"\n",
        );
    std::fs::write(&hs[0].config, &with_file).unwrap();
    assert!(!with_file.contains(&pinned));
    // The binary loads and validates it, keys file included (`budget` only reads).
    let out = Command::new(participant_bin())
        .args(["budget", "--json", "--config"])
        .arg(&hs[0].config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&keys_file, stdout.replace(&pinned, "not a digest")).unwrap();
    let out = Command::new(participant_bin())
        .args(["budget", "--json", "--config"])
        .arg(&hs[0].config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receipt_that_never_comes_stops_the_hospital_before_round_r_plus_2() {
    let _serial = SERIAL.lock().await;
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let (mut hs, ks) = hospitals(dir.path(), 1);
    let refs: Vec<_> = ks.iter().collect();
    std::fs::create_dir_all(dir.path().join("coordinator")).unwrap();
    let mut cfg = config(&dir.path().join("coordinator"), &refs, 3, 2, 3, 1);
    cfg.tiles_listen = Some("127.0.0.1:0".parse().unwrap());
    cfg.deadline = Duration::from_secs(3);
    let running = start(cfg).await;
    // The genesis is in the log; from now on no round reaches it.
    fail::cfg("coordinator::ledger::before_append", "return").unwrap();
    hs[0].write_config(&running);
    let text = std::fs::read_to_string(&hs[0].config).unwrap();
    std::fs::write(
        &hs[0].config,
        text.replace("receipt_timeout_secs = 30", "receipt_timeout_secs = 2"),
    )
    .unwrap();
    hs[0].start();
    assert_eq!(
        hs[0].wait(Duration::from_secs(60)).await,
        4,
        "{}",
        hs[0].log()
    );
    assert!(
        hs[0]
            .log()
            .contains("receipt of round 1 was not complete within 2 s"),
        "{}",
        hs[0].log()
    );
    // It answered rounds 1 and 2, and nothing for round 3.
    running.wait_done().await;
    assert_eq!(
        running.coordinator.outcome(2).unwrap().contributions.len(),
        1
    );
    assert!(
        running
            .coordinator
            .outcome(3)
            .unwrap()
            .contributions
            .is_empty()
    );
    fail::remove("coordinator::ledger::before_append");
    running.shutdown().await.unwrap();
    scenario.teardown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_changed_settlement_line_stops_its_hospital_and_the_honest_statement_proves_its_payouts()
{
    let _serial = SERIAL.lock().await;
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let (mut hs, ks) = hospitals(dir.path(), 2);
    let refs: Vec<_> = ks.iter().collect();
    std::fs::create_dir_all(dir.path().join("coordinator")).unwrap();
    let mut cfg = config(&dir.path().join("coordinator"), &refs, 3, 2, 3, 1);
    cfg.tiles_listen = Some("127.0.0.1:0".parse().unwrap());
    // Periods of two rounds: settlements with rounds 2 and 3 (the last).
    cfg.rewards.period_rounds = 2;
    fail::cfg("coordinator::record::other_settlement", "return(h0)").unwrap();
    let running = start(cfg).await;
    let federation = running.coordinator.config().federation.clone();
    for h in &mut hs {
        h.write_config(&running);
        h.start();
    }
    // h0 stops at the first settlement: its line differs from what it was told.
    let code = hs[0].wait(Duration::from_secs(120)).await;
    let log = hs[0].log();
    assert_eq!(code, 3, "{log}");
    let ev = hs[0].evidence();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["round"], 2, "{}", ev[0]);
    let what = ev[0]["what"].as_str().unwrap();
    assert!(what.contains("settlement of period 1"), "{what}");
    assert!(
        !hs[0]
            .state()
            .join("receipts")
            .join(&federation)
            .join("settlements/1.entry")
            .exists()
    );

    // h1 checks both settlements and keeps them.
    let code = hs[1].wait(Duration::from_secs(120)).await;
    assert_eq!(code, 0, "{}", hs[1].log());
    assert!(hs[1].evidence().is_empty());
    running.wait_done().await;
    let key1 = pubhex(&ks[1]);
    let mut expected = Vec::new();
    for round in [2, 3] {
        let st = running
            .coordinator
            .outcome(round)
            .unwrap()
            .settlement
            .expect("a settlement with this round");
        let line = st.lines.iter().find(|l| l.public_key == key1).unwrap();
        expected.push((st.period, line.payout, line.value_nano));
    }
    let statement = dir.path().join("statement");
    let out = Command::new(participant_bin())
        .args(["receipts", "--config"])
        .arg(&hs[1].config)
        .arg("--out")
        .arg(&statement)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let opts = fedledger_ledger::receipts::StatementOptions {
        log_key: Some(running.coordinator.ledger().log_key().clone()),
        genesis_sha256: running.identity.genesis_sha256.clone(),
    };
    let report = fedledger_ledger::receipts::verify_statement(&statement, &opts);
    assert!(report.ok(), "{report}");
    let s = report.statement.unwrap();
    let got: Vec<(u64, u64, i64)> = s
        .settlements
        .iter()
        .map(|x| (x.period, x.payout, x.value_nano))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(s.totals.paid, expected.iter().map(|e| e.1).sum::<u64>());

    // A changed settlement entry is named.
    let f = statement.join("settlements/1.entry");
    let text = std::fs::read_to_string(&f).unwrap();
    let changed = text.replacen("\"payout\":", "\"payout\":1", 1);
    assert_ne!(changed, text);
    std::fs::write(&f, changed).unwrap();
    let report = fedledger_ledger::receipts::verify_statement(&statement, &opts);
    assert!(!report.ok());
    assert_eq!(report.failed_files(), ["settlements/1.entry"], "{report}");
    running.shutdown().await.unwrap();
    scenario.teardown();
}
