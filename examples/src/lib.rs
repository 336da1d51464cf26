//! Building blocks of the runnable federations in `examples/`: the embedded data sets, the
//! seeded stratified split into test, validation and hospital shares, scenario files, and the
//! simulated misbehaving hospitals (`zero`, `random`, `copy:<name>`) used to exercise valuation,
//! the privacy-utility curve's table and plot (`curve`), and the zero-update hospitals the
//! benchmarks share (`bench`).
//!
//! Everything a hospital does on the wire is the real participant agent; only where its update
//! comes from differs for the simulated behaviours.

pub mod bench;
pub mod curve;
pub mod liars;
pub mod run;
pub mod scenario;
pub mod sources;
pub mod split;

use anyhow::{Context, bail};
use fedledger_model::Dataset;

/// Breast Cancer Wisconsin (Diagnostic), UCI, CC BY 4.0 (see `examples/data/README.md`).
pub const BREAST_CANCER_CSV: &str = include_str!("../data/breast_cancer.csv");
/// Optical Recognition of Handwritten Digits (test part), UCI, CC BY 4.0.
pub const DIGITS_CSV: &str = include_str!("../data/digits.csv");

/// A data set chosen on the command line: a built-in name or a CSV path.
pub struct DataChoice {
    pub name: String,
    pub data: Dataset,
    /// The default model kind for it.
    pub default_model: &'static str,
}

/// Load `breast_cancer`, `digits` or a CSV path with the given label column.
pub fn load_data(choice: &str, label: Option<&str>) -> anyhow::Result<DataChoice> {
    let (name, text, default_label, default_model) = match choice {
        "breast_cancer" => (
            choice.to_owned(),
            BREAST_CANCER_CSV.to_owned(),
            "malignant",
            "logreg",
        ),
        "digits" => (choice.to_owned(), DIGITS_CSV.to_owned(), "digit", "mlp"),
        path => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("read data file {path}"))?;
            let Some(label) = label else {
                bail!("--label is required with a CSV path");
            };
            (path.to_owned(), text, label, "logreg")
        }
    };
    let label = label.unwrap_or(default_label);
    let data = Dataset::from_csv_reader(text.as_bytes(), label)
        .with_context(|| format!("parse data set {name}"))?;
    Ok(DataChoice {
        name,
        data,
        default_model,
    })
}
