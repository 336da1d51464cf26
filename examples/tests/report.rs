//! The report of the default hospitals run (20 rounds, five hospitals, DP), written as the
//! example writes it at the end of its run (from the stopped coordinator's state directory): in
//! every per-round plot, each series has exactly one mark per round it has a figure for (every
//! round for model quality, cumulative values and rewards and declines; the rounds a hospital
//! contributed to for its value and epsilon). Checked in the HTML, and in the DOM headless
//! Chromium builds when FEDLEDGER_CHROMIUM=1 (set by `.ci/run`, which installs Debian's
//! chromium), with a screenshot kept under target/ for a person to look at.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use clap::Parser;
use fedledger_examples::run::{Options, run_federation};

type Marks = BTreeMap<(String, String), Vec<u64>>;

/// Every mark of a page: (plot, series) -> rounds.
fn marks(page: &str) -> Marks {
    let mut out = Marks::new();
    let attr = |s: &str, name: &str| -> String {
        let at = s.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
        s[at..at + s[at..].find('"').unwrap()].to_owned()
    };
    for (at, _) in page.match_indices("<circle class=\"mark\"") {
        let tag = &page[at..at + page[at..].find('>').unwrap()];
        out.entry((attr(tag, "data-plot"), attr(tag, "data-series")))
            .or_default()
            .push(attr(tag, "data-round").parse().unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_runs_report_has_one_mark_per_round_in_every_per_round_plot() {
    let out = tempfile::tempdir().unwrap();
    let opts = Options::parse_from(["hospitals", "--out", out.path().to_str().unwrap()]);
    let run = run_federation(&opts).await.unwrap();
    let page_path =
        fedledger_coordinator::report::write(&run.config, &out.path().join("report")).unwrap();
    let page = std::fs::read_to_string(&page_path).unwrap();

    // What each series should have, from the rounds the run recorded.
    let all: Vec<u64> = run.outcomes.iter().map(|o| o.round).collect();
    assert_eq!(all, (1..=20).collect::<Vec<_>>());
    let completed: Vec<u64> = run
        .outcomes
        .iter()
        .filter(|o| o.metrics.is_some())
        .map(|o| o.round)
        .collect();
    let mut expected = Marks::new();
    for m in ["accuracy", "log-loss", "AUC"] {
        let id = format!("quality-{}", m.to_ascii_lowercase());
        expected.insert((id, m.to_owned()), completed.clone());
    }
    for p in &run.config.participants {
        let contributed: Vec<u64> = run
            .outcomes
            .iter()
            .filter(|o| o.contributions.iter().any(|c| c.name == p.name))
            .map(|o| o.round)
            .collect();
        for plot in ["value", "epsilon"] {
            expected.insert((plot.into(), p.name.clone()), contributed.clone());
        }
        for plot in ["value-cumulative", "reward", "reward-cumulative"] {
            expected.insert((plot.into(), p.name.clone()), all.clone());
        }
    }
    expected.insert(("declines".into(), "declines".into()), all.clone());
    let abandoned: Vec<u64> = run
        .outcomes
        .iter()
        .filter(|o| o.metrics.is_none())
        .map(|o| o.round)
        .collect();
    if !abandoned.is_empty() {
        expected.insert(("declines".into(), "abandoned".into()), abandoned);
    }
    assert_eq!(marks(&page), expected);
    assert_eq!(page.matches("<figure id=\"plot-").count(), 9);

    chromium(&page_path, out.path(), &expected);
}

fn chromium(page: &Path, tmp: &Path, expected: &Marks) {
    if std::env::var("FEDLEDGER_CHROMIUM").as_deref() != Ok("1") {
        println!("skipped the headless Chromium check: set FEDLEDGER_CHROMIUM=1 (needs chromium)");
        return;
    }
    let run = |extra: &[String]| {
        let out = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
            ])
            .arg(format!(
                "--user-data-dir={}",
                tmp.join("chromium-profile").display()
            ))
            .args(extra)
            .arg(format!("file://{}", page.display()))
            .output()
            .expect("run chromium (FEDLEDGER_CHROMIUM=1 says it is installed)");
        assert!(
            out.status.success(),
            "chromium: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dom = run(&["--dump-dom".to_owned()]);
    assert_eq!(&marks(&dom), expected, "the DOM Chromium built");
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("hospitals-report.png");
    let _ = std::fs::remove_file(&shot);
    run(&[
        format!("--screenshot={}", shot.display()),
        "--window-size=1000,5200".to_owned(),
    ]);
    assert!(std::fs::read(&shot).unwrap().starts_with(b"\x89PNG"));
    println!("screenshot: {}", shot.display());
}
