//! The `fedledger-ledger` command line end to end: its `run` on a real store, and its help
//! text, which must not change unnoticed (auditors script against it).

#[path = "../../tests/common/mod.rs"]
mod common;

use clap::Parser as _;
use common::Federation;
use fedledger_ledger_cli::{Cli, run};

#[test]
fn the_command_line_exports_and_verifies() {
    let (store, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let fed = Federation::new(2, 1);
    drop(fed.build_log(store.path(), 2));
    let dest = out.path().join("ledger");
    let (s, d) = (store.path().to_str().unwrap(), dest.to_str().unwrap());
    run(
        Cli::try_parse_from(["fedledger-ledger", "status", "--store", s]).unwrap(),
        None,
    )
    .unwrap();
    run(
        Cli::try_parse_from(["fedledger-ledger", "export", "--store", s, "--out", d]).unwrap(),
        None,
    )
    .unwrap();
    run(
        Cli::try_parse_from(["fedledger-ledger", "verify", d]).unwrap(),
        None,
    )
    .unwrap();
    assert!(
        run(
            Cli::try_parse_from(["fedledger-ledger", "verify", d, "--quorum", "2"]).unwrap(),
            None
        )
        .is_err()
    );
    // The same store as static tlog-tiles: the tiles the latest size implies, and the
    // checkpoint.
    let tiles = out.path().join("tiles");
    let t = tiles.to_str().unwrap();
    run(
        Cli::try_parse_from(["fedledger-ledger", "export", "--store", s, "--tiles", t]).unwrap(),
        None,
    )
    .unwrap();
    let checkpoint = std::fs::read_to_string(tiles.join("checkpoint")).unwrap();
    let size: u64 = checkpoint.lines().nth(1).unwrap().parse().unwrap();
    assert!(size > 3 && size < 256, "{size}");
    assert!(tiles.join(format!("tile/0/000.p/{size}")).exists());
    assert!(tiles.join(format!("tile/entries/000.p/{size}")).exists());
    assert!(
        tiles.join("tile/0/000.p/3").exists(),
        "the genesis checkpoint's partial"
    );
    assert!(Cli::try_parse_from(["fedledger-ledger", "export", "--store", s]).is_err());
}

#[test]
fn check_proof_accepts_the_outside_receipt_under_its_two_of_two_policy() {
    let data = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/cosigned_checkpoint"
    );
    let dir = tempfile::tempdir().unwrap();
    let entry = dir.path().join("entry6");
    let lines = std::fs::read(format!("{data}/entries.jsonl")).unwrap();
    std::fs::write(&entry, lines.split(|b| *b == b'\n').nth(6).unwrap()).unwrap();
    let args = |quorum: &str| {
        Cli::try_parse_from([
            "fedledger-ledger",
            "receipts",
            "check-proof",
            "--proof",
            &format!("{data}/round7.tlog-proof"),
            "--entry",
            entry.to_str().unwrap(),
            "--trust",
            &format!("{data}/trust.json"),
            "--quorum",
            quorum,
        ])
        .unwrap()
    };
    run(args("2"), None).unwrap();
    assert!(run(args("3"), None).is_err(), "more than the two witnesses");
    std::fs::write(&entry, b"another entry").unwrap();
    assert!(run(args("2"), None).is_err());
}

#[test]
fn help_text_is_unchanged() {
    let want = include_str!("data/help.txt");
    let mut got = String::new();
    for args in [
        "--help",
        "keygen --help",
        "status --help",
        "export --help",
        "verify --help",
        "receipts --help",
        "receipts verify --help",
        "receipts check-proof --help",
        "monitor --help",
        "node --help",
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_fedledger-ledger"))
            .args(args.split(' '))
            .output()
            .expect("run fedledger-ledger");
        assert!(out.status.success(), "fedledger-ledger {args}");
        got.push_str(&format!("$ fedledger-ledger {args}\n"));
        got.push_str(&String::from_utf8(out.stdout).unwrap());
    }
    assert_eq!(got, want, "tests/data/help.txt holds the expected help");
}

/// With the privacy crate's accountant plugged in (as the binary does), a hospital's recorded
/// epsilon below what its recorded releases imply is caught: the sample records 0.1 per release
/// of 100 steps at sigma 1.1 and q 0.01, far below the real RDP figure.
#[test]
fn the_real_accountant_catches_an_under_reported_epsilon() {
    let (store, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let fed = Federation::new(2, 1);
    let log = fed.build_log(store.path(), 2);
    fedledger_ledger::export::export(&log, out.path()).unwrap();
    let report = fedledger_ledger::verify::verify_dir(
        out.path(),
        fedledger_ledger::verify::VerifyOptions {
            quorum: None,
            accountant: Some(&fedledger_ledger_cli::PrivacyAccountant),
            rewards: None,
        },
    );
    assert!(
        report
            .failures
            .iter()
            .any(|f| f.file.starts_with("entries/") && f.what.contains("is below")),
        "{report}"
    );
}

/// Starts `fedledger-ledger node` on `config` and returns the peer id it prints, then stops it.
fn node_peer_id(config: &std::path::Path) -> String {
    use std::io::BufRead as _;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fedledger-ledger"))
        .args(["node", "--config"])
        .arg(config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut peer = None;
    for line in out.lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("peer id: ") {
            peer = rest.split_whitespace().next().map(str::to_owned);
        }
        if line.starts_with("node ") {
            break; // listening: the node is up
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    peer.expect("the node prints its peer id at start")
}

#[test]
fn a_node_restarted_with_its_key_file_keeps_its_peer_id_and_dials_only_pinned_peers() {
    let dir = tempfile::tempdir().unwrap();
    let fed = Federation::new(1, 1);
    let config = dir.path().join("ledger.toml");
    let store = dir.path().join("replica");
    let base = format!(
        "store = {:?}\nlog_key = {:?}\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\n",
        store.display().to_string(),
        fed.log_signer.verifier_key().to_string()
    );
    std::fs::write(&config, &base).unwrap();
    let first = node_peer_id(&config);
    let key_file = dir.path().join("replica.node.key");
    assert!(
        key_file.exists(),
        "the default key file is <store>.node.key"
    );
    assert_eq!(node_peer_id(&config), first, "same key file, same peer id");

    // Another key file, another peer id.
    std::fs::write(
        &config,
        format!(
            "{base}node_key = {:?}\n",
            dir.path().join("other.key").display().to_string()
        ),
    )
    .unwrap();
    assert_ne!(node_peer_id(&config), first);

    // A dial address that does not pin its peer is refused before anything starts.
    std::fs::write(
        &config,
        format!("{base}dial = [\"/ip4/127.0.0.1/tcp/4001\"]\n"),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fedledger-ledger"))
        .args(["node", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/p2p/<peer id>"), "{err}");
    // Allow-lists name peer ids.
    std::fs::write(
        &config,
        format!("{base}allow_replicas = [\"not-a-peer-id\"]\n"),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fedledger-ledger"))
        .args(["node", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("allow_replicas"));
}

/// A federation under the settled rule `rule` (periods of 2 rounds), each period-ending batch
/// closed by its settlement as the valuation crate computes it from the recorded values (and,
/// for the cumulative rule, the recorded earlier payouts); `tamper` may change a settlement
/// before it is appended (and signed into the log).
fn settled_log(
    dir: &std::path::Path,
    rule: &str,
    rounds: u64,
    tamper: impl Fn(u64, &mut fedledger_ledger::records::SettlementEntry),
) -> fedledger_ledger::Log {
    settled_log_computed_by(dir, rule, rule, rounds, tamper)
}

/// [`settled_log`] whose settlements name `rule` but are computed by `computed_by`.
fn settled_log_computed_by(
    dir: &std::path::Path,
    rule: &str,
    computed_by: &str,
    rounds: u64,
    tamper: impl Fn(u64, &mut fedledger_ledger::records::SettlementEntry),
) -> fedledger_ledger::Log {
    use fedledger_ledger::records::*;
    use fedledger_ledger::verify::{RecordedRound, RecordedValue, RewardRule};
    let mut fed = Federation::new(4, 1);
    let mut paid: std::collections::BTreeMap<String, u64> = Default::default();
    fed.reward = RewardRecord {
        rule: rule.into(),
        pool_per_round: 1_000_000,
        period_rounds: Some(2),
        z_milli: Some(2000),
    };
    let log = fedledger_ledger::Log::open(dir, common::ORIGIN, fed.log_signer.clone()).unwrap();
    log.append_batch(&fed.genesis()).unwrap();
    log.checkpoint().unwrap();
    fed.cosign_latest(&log, 1_700_000_000);
    // Every round so far: the rule reads the history, settles the last period.
    let mut period: Vec<Vec<Record>> = Vec::new();
    for n in 1..=rounds {
        let first = log.size();
        let mut batch = fed.round(n, first);
        period.push(
            batch
                .iter()
                .enumerate()
                .map(|(k, e)| validate_entry(first + k as u64, common::ORIGIN, e).unwrap())
                .collect(),
        );
        if n % 2 == 0 {
            let recorded: Vec<RecordedRound<'_>> = period
                .iter()
                .map(|recs| {
                    let Some(Record::Round(s)) = recs.last() else {
                        panic!("a summary closes the round")
                    };
                    RecordedRound {
                        round: s.round,
                        completed: s.status == RoundStatus::Completed,
                        gain_nano: s.validation.score_after_nano - s.validation.score_before_nano,
                        values: recs
                            .iter()
                            .filter_map(|r| match r {
                                Record::Contribution(c) => Some(RecordedValue {
                                    participant: &c.participant,
                                    value_nano: c.value_nano,
                                    se_nano: c.value_se_nano.unwrap_or(0),
                                    flags: &c.flags,
                                }),
                                _ => None,
                            })
                            .collect(),
                    }
                })
                .collect();
            let paid_before = paid.iter().map(|(k, &v)| (k.as_str(), v)).collect();
            let computing = RewardRecord {
                rule: computed_by.into(),
                ..fed.reward.clone()
            };
            let want = fedledger_ledger_cli::ValuationRewards
                .settle(&computing, &recorded, n - 1, &paid_before)
                .unwrap();
            let mut st = SettlementEntry {
                v: RECORD_VERSION,
                record_type: SETTLEMENT_TYPE.into(),
                federation: common::ORIGIN.into(),
                period: n / 2,
                rounds: RoundRange {
                    first: n - 1,
                    last: n,
                },
                rule: fed.reward.clone(),
                counted_rounds: want.counted_rounds,
                pool: want.pool,
                part: 1,
                parts: 1,
                participants: want.lines,
            };
            drop(recorded);
            tamper(n / 2, &mut st);
            for l in &st.participants {
                *paid.entry(l.participant.clone()).or_insert(0) += l.payout;
            }
            batch.push(encode_canonical(&st).unwrap());
        }
        log.append_batch(&batch).unwrap();
        log.checkpoint().unwrap();
        fed.cosign_latest(&log, 1_700_000_000 + n);
    }
    log
}

fn verify_with_rules(dir: &std::path::Path) -> fedledger_ledger::verify::VerifyReport {
    fedledger_ledger::verify::verify_dir(
        dir,
        fedledger_ledger::verify::VerifyOptions {
            quorum: None,
            accountant: None,
            rewards: Some(&fedledger_ledger_cli::ValuationRewards),
        },
    )
}

/// `verify` recomputes every settlement from the recorded round values and standard errors: an
/// honest ledger verifies (a round that made the model worse counted for nothing), and a payout
/// moved from one hospital to another (the pool still conserved, every signature valid) fails,
/// naming the settlement entry.
#[test]
fn verify_recomputes_settlements_and_catches_a_changed_payout() {
    use fedledger_ledger::records::{
        REWARD_RULE_SETTLED, REWARD_RULE_SETTLED_CUMULATIVE, REWARD_RULE_SETTLED_IMPACT,
    };
    for rule in [
        REWARD_RULE_SETTLED,
        REWARD_RULE_SETTLED_CUMULATIVE,
        REWARD_RULE_SETTLED_IMPACT,
    ] {
        recomputes_and_catches(rule);
    }
}

/// `verify` follows the rule the settlement names: settlements computed by the cumulative rule
/// (v2) but recorded as the impact rule (v3) fail, because under v3 the round that made the
/// model worse (round 3) enters each line's rounds and standard error.
#[test]
fn verify_catches_a_settlement_computed_under_another_rule() {
    use fedledger_ledger::records::{REWARD_RULE_SETTLED_CUMULATIVE, REWARD_RULE_SETTLED_IMPACT};
    let (store, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let log = settled_log_computed_by(
        store.path(),
        REWARD_RULE_SETTLED_IMPACT,
        REWARD_RULE_SETTLED_CUMULATIVE,
        4,
        |_, _| {},
    );
    fedledger_ledger::export::export(&log, out.path()).unwrap();
    let report = verify_with_rules(out.path());
    assert!(!report.ok(), "{report}");
    assert!(
        report
            .failures
            .iter()
            .any(|f| f.what.contains("recomputed from the recorded values")),
        "{report}"
    );
}

fn recomputes_and_catches(rule: &str) {
    let (store, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let log = settled_log(store.path(), rule, 4, |_, _| {});
    fedledger_ledger::export::export(&log, out.path()).unwrap();
    let report = verify_with_rules(out.path());
    assert!(report.ok(), "{report}");
    assert!(
        report
            .passed
            .iter()
            .any(|p| p.contains("2 recomputed from the recorded round values")),
        "{report}"
    );
    // Period 2 is rounds 3 and 4; round 3 made the model worse, so only round 4 counts.
    let settlement = |i: u64| {
        let bytes = std::fs::read(out.path().join(format!("entries/{i}"))).unwrap();
        match fedledger_ledger::records::validate_entry(i, common::ORIGIN, &bytes).unwrap() {
            fedledger_ledger::records::Record::Settlement(s) => Some(*s),
            _ => None,
        }
    };
    let found: Vec<_> = (0..log.size()).filter_map(settlement).collect();
    assert_eq!(found.len(), 2);
    assert_eq!(found[1].counted_rounds, vec![4]);
    assert_eq!(found[1].pool, 1_000_000);
    assert!(found[1].participants.iter().any(|l| l.payout > 0));
    drop(log);

    let (store, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let log = settled_log(store.path(), rule, 4, |period, st| {
        if period == 2 {
            let paid = st
                .participants
                .iter()
                .position(|l| l.payout > 0)
                .expect("someone is paid");
            let other = st
                .participants
                .iter()
                .position(|l| {
                    l.verdict == "distinguishable"
                        && l.participant != st.participants[paid].participant
                })
                .expect("two are distinguishable");
            st.participants[paid].payout -= 1;
            st.participants[other].payout += 1;
        }
    });
    let at = (0..log.size())
        .find(|&i| {
            let e = log.entry(i).unwrap();
            matches!(
                fedledger_ledger::records::validate_entry(i, common::ORIGIN, &e),
                Ok(fedledger_ledger::records::Record::Settlement(s)) if s.period == 2
            )
        })
        .unwrap();
    fedledger_ledger::export::export(&log, out.path()).unwrap();
    let report = verify_with_rules(out.path());
    assert!(!report.ok());
    let file = format!("entries/{at}");
    assert!(
        report
            .failures
            .iter()
            .all(|f| f.file == file && f.what.contains("recomputed from the recorded values")),
        "{report}"
    );
    // Without the rule plugged in only the arithmetic is checked, which the moved unit keeps.
    let plain = fedledger_ledger::verify::verify_dir(out.path(), Default::default());
    assert!(plain.ok(), "{plain}");
    assert!(
        plain.skipped.iter().any(|s| s.contains("settlements")),
        "{plain}"
    );
}
