//! The report of the default hospitals run (20 rounds, five hospitals, DP), written as the
//! example writes it at the end of its run (from the stopped coordinator's state directory): in
//! every per-round plot, each series has exactly one mark per round it has a figure for (every
//! round for model quality, cumulative values and rewards and declines; the rounds a hospital
//! contributed to for its value and epsilon). Checked in the HTML, and in the DOM headless
//! Chromium builds when FEDLEDGER_CHROMIUM=1 (set by `.ci/run`, which installs Debian's
//! chromium), with a screenshot kept under target/ for a person to look at.

#[path = "../../report/tests/support/chromium.rs"]
mod chromium;

use std::collections::BTreeMap;
use std::path::Path;

use clap::Parser;
use fedledger_examples::run::{Options, run_federation};

type Marks = BTreeMap<(String, String), Vec<u64>>;

/// Every mark of a page: (plot, series) -> rounds.
fn marks(page: &str) -> Marks {
    fedledger_report::marks(page).unwrap()
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
    if !chromium::enabled() {
        return;
    }
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("hospitals-report.png");
    let dom = chromium::dom_and_screenshot(page, tmp, &shot, "1000,5200");
    assert_eq!(&marks(&dom), expected, "the DOM Chromium built");
}
