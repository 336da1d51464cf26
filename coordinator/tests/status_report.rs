//! Live status and reports, as an operator sees them: the admin endpoint's Prometheus metrics
//! scraped over a real socket during a run (the refusal counter rises after one bad update, the
//! accepted counter equals the updates the run accepted), `GET /status`, then the binary's
//! `status` from the stopped coordinator's state directory and `report --out`, whose page has
//! one mark per round in every per-round plot (checked in the HTML, and in the DOM headless
//! Chromium builds when FEDLEDGER_CHROMIUM=1, as `.ci/run` sets).

#[path = "../../report/tests/support/chromium.rs"]
mod chromium;
mod common;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use common::*;
use fedledger_coordinator::{Phase, status::Status};

const ROUNDS: u64 = 3;

fn get(addr: SocketAddr, path: &str) -> String {
    fedledger_coordinator::status::http_get(addr, path, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// The value of the sample `name` (with its labels, as exposed) in a metrics text.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

fn config_file(dir: &Path, fed: &str, keys: &[&ring::signature::Ed25519KeyPair]) -> PathBuf {
    let participants: String = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            format!(
                "[[participant]]\nname = \"h{i}\"\npublic_key = \"{}\"\n",
                pubhex(k)
            )
        })
        .collect();
    let path = dir.join("coordinator.toml");
    std::fs::write(
        &path,
        format!(
            "federation = \"{fed}\"\nstate_dir = \"state\"\nlisten = \"127.0.0.1:0\"\n\n[model]\nkind = \"logreg\"\n\
             features = 3\nclasses = 2\n\n[data]\nlabel_column = \"label\"\n\
             validation = \"validation.csv\"\n\n[rounds]\ntotal = {ROUNDS}\nquorum = 2\ngrace_secs = 0\n\n\
             [metrics]\nenabled = false\n\n{participants}"
        ),
    )
    .unwrap();
    path
}

fn coordinator(args: &[&str], config: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_fedledger-coordinator"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Marks of each plot, by series: the rounds it has a mark in.
fn marks(page: &str) -> BTreeMap<(String, String), Vec<u64>> {
    fedledger_report::marks(page).unwrap()
}

/// The per-round plots of the coordinator's page (the auditor's has the recorded validation
/// score instead of accuracy, log-loss and AUC).
const COORDINATOR_PLOTS: [&str; 9] = [
    "quality-accuracy",
    "quality-log-loss",
    "quality-auc",
    "value",
    "value-cumulative",
    "reward",
    "reward-cumulative",
    "epsilon",
    "declines",
];

/// Every per-round plot of a run of `ROUNDS` completed rounds by two hospitals that answered
/// every round has one mark per round in each of its series, and every plot in `expected` is
/// there.
fn assert_one_mark_per_round(page: &str, expected: &[&str]) {
    let all: Vec<u64> = (1..=ROUNDS).collect();
    let marks = marks(page);
    let mut plots = std::collections::BTreeSet::new();
    for ((plot, series), rounds) in &marks {
        plots.insert(plot.clone());
        if plot == "declines" && series == "abandoned" {
            panic!("no round was abandoned, yet it is drawn: {rounds:?}");
        }
        assert_eq!(rounds, &all, "plot {plot}, series {series}");
    }
    assert_eq!(plots.len(), expected.len(), "{plots:?}");
    for p in expected {
        assert!(plots.contains(*p), "no plot {p} in {plots:?}");
    }
    for plot in ["value", "reward", "epsilon"] {
        for h in ["h0", "h1"] {
            assert!(marks.contains_key(&(plot.to_owned(), h.to_owned())));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_status_and_report_follow_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let (k0, k1) = (keypair(), keypair());
    let mut cfg = config(dir.path(), &[&k0, &k1], 3, 2, ROUNDS, 2);
    cfg.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    let fed = cfg.federation.clone();
    let running = start(cfg.clone()).await;
    let admin = running.admin_addr().expect("the admin endpoint runs");
    assert!(admin.ip().is_loopback());
    assert_eq!(
        std::fs::read_to_string(cfg.state_dir.join("admin.addr"))
            .unwrap()
            .trim(),
        admin.to_string()
    );
    let mut c = client(&running).await;
    let s0 = register(&mut c, &k0).await;
    let s1 = register(&mut c, &k1).await;
    task(&mut c, &s0).await;
    task(&mut c, &s1).await;

    let before = get(admin, "/metrics");
    let refused = "fedledger_refusals_total{reason=\"digest_mismatch\"}";
    assert_eq!(sample(&before, refused), 0.0);
    assert_eq!(sample(&before, "fedledger_updates_accepted_total"), 0.0);
    assert_eq!(sample(&before, "fedledger_participants_registered"), 2.0);
    assert_eq!(sample(&before, "fedledger_participants_online"), 2.0);
    assert!(before.trim_end().ends_with("# EOF"));

    // One bad update: signed for one delta, carrying another.
    let mut bad = update_messages(&fed, &k0, &s0, 1, 5, &[0.1, 0.2, 0.3, 0.4]);
    if let Some(fedledger_proto::update_message::Msg::Chunk(ch)) = &mut bad[1].msg {
        ch.data = fedledger_model::digest::vector_to_bytes(&[0.9, 0.9, 0.9, 0.9]).into();
    }
    submit(&mut c, bad).await.expect_err("a mismatched update");
    let after = get(admin, "/metrics");
    assert_eq!(sample(&after, refused), 1.0);
    assert_eq!(sample(&after, "fedledger_updates_accepted_total"), 0.0);

    let mut accepted = 0;
    let mut progress = running.coordinator.subscribe();
    for round in 1..=ROUNDS {
        progress
            .wait_for(|p| p.phase == Phase::Open && p.round == round && !p.closing)
            .await
            .unwrap();
        for (k, s, d) in [
            (&k0, &s0, [0.1f32, 0.2, 0.3, 0.4]),
            (&k1, &s1, [0.3, 0.1, 0.0, 0.2]),
        ] {
            let d = d.map(|x| x / round as f32);
            if submit(&mut c, update_messages(&fed, k, s, round, 5, &d))
                .await
                .is_ok()
            {
                accepted += 1;
            }
        }
        if round == 1 {
            // Mid-run, the open round's updates count as soon as they are acknowledged.
            let mid = get(admin, "/metrics");
            assert!(sample(&mid, "fedledger_updates_accepted_total") >= 2.0);
        }
    }
    assert_eq!(accepted, 2 * ROUNDS);
    running.wait_done().await;

    let done = get(admin, "/metrics");
    assert_eq!(
        sample(&done, "fedledger_updates_accepted_total"),
        accepted as f64
    );
    assert_eq!(sample(&done, refused), 1.0);
    assert_eq!(
        sample(
            &done,
            "fedledger_rounds_finished_total{status=\"completed\"}"
        ),
        ROUNDS as f64
    );
    assert_eq!(
        sample(&done, "fedledger_round_duration_seconds_count"),
        ROUNDS as f64
    );
    assert_eq!(
        sample(&done, "fedledger_round_close_duration_seconds_count"),
        ROUNDS as f64
    );
    assert_eq!(
        sample(&done, "fedledger_ledger_entries"),
        running.coordinator.ledger().size() as f64
    );
    assert_eq!(sample(&done, "fedledger_done"), 1.0);
    assert_eq!(
        sample(&done, "fedledger_epsilon_spent{participant=\"h0\"}"),
        0.0
    );
    let status: Status = serde_json::from_str(&get(admin, "/status")).unwrap();
    assert!(status.running);
    assert_eq!(status.updates_accepted, accepted);
    assert_eq!(status.rounds_completed, ROUNDS);
    assert_eq!(status.refusals.get("digest_mismatch"), Some(&1));
    assert!(
        status
            .participants
            .iter()
            .all(|p| p.registered == Some(true))
    );
    assert!(
        fedledger_coordinator::status::http_get(admin, "/nothing", Duration::from_secs(5)).is_err()
    );
    running.shutdown().await.unwrap();
    assert!(!cfg.state_dir.join("admin.addr").exists());

    // The stopped coordinator, through the binary an operator runs.
    // `config` wrote the validation file beside it.
    let config = config_file(dir.path(), &fed, &[&k0, &k1]);
    let text = coordinator(&["status"], &config);
    println!("{text}");
    assert!(text.contains("not running"), "{text}");
    assert!(
        text.contains(&format!("updates accepted: {accepted}")),
        "{text}"
    );
    let json: Status = serde_json::from_str(&coordinator(&["status", "--json"], &config)).unwrap();
    assert!(!json.running);
    assert_eq!(json.updates_accepted, accepted);
    assert_eq!(json.participants[0].updates, ROUNDS);

    let out = dir.path().join("report");
    let printed = coordinator(&["report", "--out", out.to_str().unwrap()], &config);
    let page_path = out.join("report.html");
    assert!(printed.contains("report.html"), "{printed}");
    let page = std::fs::read_to_string(&page_path).unwrap();
    assert_one_mark_per_round(&page, &COORDINATOR_PLOTS);
    assert!(page.contains(&running_log_key(&cfg)));
    chromium_check(&page_path, dir.path(), &COORDINATOR_PLOTS);

    // Logs to a pipe carry no colour codes; --log-format json writes one object per line. (A
    // finished federation's `serve` starts, logs, and exits at once: no grace period here.)
    for json in [false, true] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fedledger-coordinator"));
        if json {
            cmd.args(["--log-format", "json"]);
        }
        let out = cmd
            .args(["serve", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        assert!(out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains('\x1b'), "colour codes in a pipe: {stderr}");
        let listening = stderr
            .lines()
            .find(|l| l.contains("coordinator listening"))
            .unwrap_or_else(|| panic!("no start line in {stderr}"));
        if json {
            let v: serde_json::Value = serde_json::from_str(listening).unwrap();
            assert_eq!(v["level"], "INFO");
            assert_eq!(v["fields"]["message"], "coordinator listening");
            assert_eq!(v["fields"]["federation"], fed.as_str());
        } else {
            assert!(serde_json::from_str::<serde_json::Value>(listening).is_err());
        }
    }

    // The auditor's page: an export of the ledger verified by `fedledger-ledger verify
    // --report` (its run function, as the binary calls it).
    let export = dir.path().join("export");
    let ledger = |args: &[&str]| {
        use clap::Parser as _;
        let cli = fedledger_ledger_cli::Cli::parse_from(
            std::iter::once("fedledger-ledger").chain(args.iter().copied()),
        );
        fedledger_ledger_cli::run(cli, Some(&fedledger_ledger_cli::PrivacyAccountant))
    };
    let store = cfg.state_dir.join("ledger");
    ledger(&[
        "export",
        "--store",
        store.to_str().unwrap(),
        "--out",
        export.to_str().unwrap(),
    ])
    .unwrap();
    let audited = dir.path().join("auditor-report");
    ledger(&[
        "verify",
        export.to_str().unwrap(),
        "--report",
        audited.to_str().unwrap(),
    ])
    .unwrap();
    let page = std::fs::read_to_string(audited.join("report.html")).unwrap();
    let auditor_plots = [
        "quality-validation-neg-log-loss",
        "value",
        "value-cumulative",
        "reward",
        "reward-cumulative",
        "epsilon",
        "declines",
    ];
    assert_one_mark_per_round(&page, &auditor_plots);
    assert!(page.contains("the ledger verifies"), "the title says so");
    assert!(page.contains("ok: checkpoint: log signature"));
}

fn running_log_key(cfg: &fedledger_coordinator::FederationConfig) -> String {
    fedledger_coordinator::Identity::from_config(cfg)
        .unwrap()
        .log_key
}

/// With FEDLEDGER_CHROMIUM=1 (set by `.ci/run`, which installs Debian's chromium), the page as
/// a browser builds it: the DOM headless Chromium dumps has the same marks, and a screenshot
/// is taken (kept under target/ for a person to look at).
fn chromium_check(page: &Path, tmp: &Path, expected: &[&str]) {
    if !chromium::enabled() {
        return;
    }
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("coordinator-report.png");
    let dom = chromium::dom_and_screenshot(page, tmp, &shot, "1000,4000");
    assert_one_mark_per_round(&dom, expected);
}
