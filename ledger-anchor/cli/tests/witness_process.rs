//! Our tlog-witness client against our server across a process boundary: the real
//! `fedledger-ledger node` binary serves its witness over HTTP on a loopback port it picks
//! itself (`http_listen = "127.0.0.1:0"`, the address read from what it prints), and this
//! process, as the log, submits its checkpoints with the library's client. The witness keeps
//! its state across a restart of the process, and the log learns the size it holds from a 409.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::Federation;
use fedledger_ledger::http::{WitnessClient, collect_cosignatures_http};
use fedledger_ledger::note::{SignedCheckpoint, VerifierKey};

struct Node {
    child: Child,
    url: String,
    key: VerifierKey,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `fedledger-ledger node --config <config>` and reads its witness key and URL.
fn start(config: &std::path::Path) -> Node {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fedledger-ledger"))
        .args(["node", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start fedledger-ledger node");
    let out = BufReader::new(child.stdout.take().unwrap());
    let (mut url, mut key) = (None, None);
    for line in out.lines() {
        let line = line.expect("read the node's output");
        if let Some(k) = line.strip_prefix("witness key: ") {
            key = Some(VerifierKey::parse(k).unwrap());
        }
        if let Some(u) = line.strip_prefix("serving tlog-witness at ") {
            url = Some(u.to_owned());
        }
        if url.is_some() && key.is_some() {
            break;
        }
    }
    Node {
        child,
        url: url.expect("the node printed its witness URL"),
        key: key.expect("the node printed its witness key"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_gets_cosignatures_from_the_witness_binary_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let fed = Federation::new(2, 0);
    let log = fed.build_log(&dir.path().join("log"), 1);
    let config = dir.path().join("ledger.toml");
    std::fs::write(
        &config,
        format!(
            "store = \"{}\"\nlog_key = \"{}\"\n\n[witness]\nname = \"witness.test/http\"\n\
             key = \"{}\"\nstate = \"{}\"\nhttp_listen = \"127.0.0.1:0\"\n",
            dir.path().join("replica").display(),
            log.log_key(),
            dir.path().join("witness.key").display(),
            dir.path().join("witness-state").display(),
        ),
    )
    .unwrap();
    let node = start(&config);
    let witnesses = [node.key.clone()];
    let client = WitnessClient::new(&node.url).unwrap();
    let first = log.size();
    assert_eq!(
        collect_cosignatures_http(&log, first, std::slice::from_ref(&client), &witnesses)
            .await
            .unwrap(),
        1,
        "cosigned from size 0"
    );
    // Two more rounds: consistency proofs from the size the witness holds.
    for n in 2..=3 {
        log.append_batch(&fed.round(n, log.size())).unwrap();
        log.checkpoint().unwrap();
        assert_eq!(
            collect_cosignatures_http(&log, log.size(), std::slice::from_ref(&client), &witnesses)
                .await
                .unwrap(),
            1,
            "round {n}"
        );
    }
    let held = log.size();
    let cp = log.checkpoint_at(held).unwrap().unwrap();
    cp.note.verify_cosignature(&node.key).unwrap();

    // Another process of the same witness: its state survived; a fresh client learns the size
    // it holds from a 409 and proves consistency from there.
    drop(node);
    let node = start(&config);
    assert_eq!(node.key, witnesses[0], "the same witness key");
    let monitored = WitnessClient::new(&node.url)
        .unwrap()
        .latest(log.origin())
        .await
        .unwrap()
        .expect("the monitoring endpoint serves the latest cosigned checkpoint");
    let seen = SignedCheckpoint::open(&monitored, log.log_key()).unwrap();
    assert_eq!(seen.checkpoint.size, held);
    seen.note.verify_cosignature(&node.key).unwrap();
    log.append_batch(&fed.round(4, log.size())).unwrap();
    log.checkpoint().unwrap();
    let fresh = WitnessClient::new(&node.url).unwrap();
    assert_eq!(
        collect_cosignatures_http(&log, log.size(), &[fresh], &witnesses)
            .await
            .unwrap(),
        1
    );
    // A checkpoint behind the one it holds is not cosigned.
    let behind = WitnessClient::new(&node.url).unwrap();
    assert!(behind.submit(&log, first).await.is_err());
}
