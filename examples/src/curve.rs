//! The privacy-utility curve the `privacy_curve` example measures: test accuracy of the final
//! model against the per-hospital epsilon, for each DP-SGD setting, over several seeds, as a
//! table and an SVG plot.
//!
//! Two settings are compared at every epsilon, in the same run:
//! * `shared`: what the example did before hospitals planned for themselves: every hospital
//!   trains with batch 16 and 2 local epochs, with one noise multiplier planned so that the
//!   smallest hospital fits its budget, learning rate 0.1, FedAvg by examples;
//! * `planned`: the example's defaults: each hospital plans its own batch, steps and noise
//!   multiplier within the task's bounds for its own budget, learning rate 0.2 (MLP) or 0.1
//!   (logistic regression), FedAvg weighted
//!   inversely to each update's planned noise per unit of signal;
//!
//! and the same federation without DP (learning rate 0.1) gives the ceiling.

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;
use serde::Serialize;

/// A DP-SGD setting of the curve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Setting {
    /// One shared batch size, epoch count and noise multiplier (planned for the smallest).
    Shared,
    /// Each hospital plans for itself; inverse-noise weights.
    Planned,
    /// Each hospital plans for itself; random-effects weights.
    PlannedRandomEffects,
    /// No DP at all.
    NoDp,
}

impl Setting {
    pub fn as_str(self) -> &'static str {
        match self {
            Setting::Shared => "shared",
            Setting::Planned => "planned",
            Setting::PlannedRandomEffects => "planned-random-effects",
            Setting::NoDp => "no-dp",
        }
    }

    /// The plot's legend entry.
    pub fn legend(self) -> &'static str {
        match self {
            Setting::Shared => "before: one shared plan (batch 16, 2 epochs)",
            Setting::Planned => "hospitals plan; inverse-noise weights",
            Setting::PlannedRandomEffects => "hospitals plan; random-effects weights",
            Setting::NoDp => "no DP",
        }
    }

    /// What the setting means, for the table's legend.
    pub fn describe(self) -> &'static str {
        match self {
            Setting::Shared => {
                "before: batch 16, 2 local epochs, one noise multiplier planned for the smallest \
                 hospital, lr 0.1, FedAvg by examples"
            }
            Setting::Planned => {
                "each hospital plans batch (<= 512), steps (<= 30) and noise for its own budget, \
                 lr 0.2 (MLP) or 0.1 (logreg), FedAvg weighted by inverse planned noise"
            }
            Setting::PlannedRandomEffects => {
                "as planned, but FedAvg weighted by a random-effects model: \
                 inverse-noise weights shrunk towards example weights by how much the \
                 updates differ beyond their noise"
            }
            Setting::NoDp => "no DP: batch 16, 2 local epochs, lr 0.1, FedAvg by examples",
        }
    }

    /// The `hospitals` arguments of this setting at `epsilon` (ignored without DP).
    pub fn args(self, epsilon: f64) -> Vec<String> {
        let eps = epsilon.to_string();
        let v: Vec<&str> = match self {
            Setting::Shared => vec![
                "--epsilon",
                &eps,
                "--planning",
                "shared",
                "--strategy",
                "fedavg",
                "--learning-rate",
                "0.1",
            ],
            Setting::Planned => vec!["--epsilon", &eps, "--planning", "hospital"],
            Setting::PlannedRandomEffects => vec![
                "--epsilon",
                &eps,
                "--planning",
                "hospital",
                "--strategy",
                "fedavg-random-effects",
            ],
            Setting::NoDp => vec!["--no-dp"],
        };
        v.into_iter().map(str::to_owned).collect()
    }
}

/// One point of the curve: a data set, a setting and an epsilon (`None` without DP), with the
/// test accuracy of each seed's run.
#[derive(Clone, Debug, Serialize)]
pub struct Point {
    pub data: String,
    pub setting: Setting,
    pub epsilon: Option<f64>,
    pub seeds: Vec<u64>,
    pub accuracies: Vec<f64>,
}

/// Mean, sample standard deviation, minimum and maximum.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub mean: f64,
    pub sd: f64,
    pub min: f64,
    pub max: f64,
}

impl Point {
    pub fn summary(&self) -> Summary {
        summarise(&self.accuracies)
    }
}

/// [`Summary`] of `xs` (sd 0 for fewer than two values; NaN mean for none).
pub fn summarise(xs: &[f64]) -> Summary {
    #[allow(clippy::cast_precision_loss)] // a handful of seeds
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let sd = if xs.len() > 1 {
        (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    Summary {
        mean,
        sd,
        min: xs.iter().copied().fold(f64::INFINITY, f64::min),
        max: xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    }
}

/// The curve as a text table, one line per point.
pub fn table(points: &[Point]) -> String {
    let mut out =
        String::from("data           setting   epsilon   mean    sd      min     max     seeds\n");
    for p in points {
        let s = p.summary();
        let eps = p
            .epsilon
            .map_or_else(|| "no DP".to_owned(), |e| format!("{e}"));
        let each: Vec<String> = p.accuracies.iter().map(|a| format!("{a:.4}")).collect();
        out.push_str(&format!(
            "{:<13}  {:<8}  {eps:>7}  {:.4}  {:.4}  {:.4}  {:.4}  {}\n",
            p.data,
            p.setting.as_str(),
            s.mean,
            s.sd,
            s.min,
            s.max,
            each.join(" ")
        ));
    }
    out
}

/// Where "no DP" sits on the plot's epsilon axis: one doubling past the largest epsilon.
fn no_dp_x(points: &[Point]) -> f64 {
    let top = points
        .iter()
        .filter_map(|p| p.epsilon)
        .fold(1.0f64, f64::max);
    top.log2() + 1.0
}

/// One chart per data set: mean test accuracy (bars: +- one standard deviation over the seeds)
/// against log2(epsilon), a line per DP setting, and the no-DP mean at the right.
pub fn plot_svg(points: &[Point], path: &Path) -> anyhow::Result<()> {
    let mut data: Vec<&str> = Vec::new();
    for p in points {
        if !data.contains(&p.data.as_str()) {
            data.push(&p.data);
        }
    }
    anyhow::ensure!(!data.is_empty(), "no points to plot");
    let width = 640 * u32::try_from(data.len()).unwrap_or(1);
    let root = SVGBackend::new(path, (width, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let panels = root.split_evenly((1, data.len()));
    let x_right = no_dp_x(points);
    let x_left = points
        .iter()
        .filter_map(|p| p.epsilon)
        .fold(f64::INFINITY, f64::min)
        .log2()
        .min(0.0);
    for (panel, name) in panels.iter().zip(&data) {
        let mine: Vec<&Point> = points.iter().filter(|p| p.data == *name).collect();
        let (lo, hi) = mine.iter().fold((1.0f64, 0.0f64), |(lo, hi), p| {
            let s = p.summary();
            (lo.min(s.mean - s.sd), hi.max(s.mean + s.sd))
        });
        let y_lo = ((lo - 0.02) * 50.0).floor() / 50.0;
        let y_hi = (((hi + 0.01) * 50.0).ceil() / 50.0).min(1.0);
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!("{name}: test accuracy vs epsilon"),
                ("sans-serif", 20),
            )
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d((x_left - 0.5)..(x_right + 0.5), y_lo..y_hi)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("per-hospital epsilon (delta 1e-5)")
            .y_desc("test accuracy")
            .x_labels(8)
            .x_label_formatter(&|x| {
                if (x - x_right).abs() < 1e-9 {
                    "no DP".to_owned()
                } else if (x - x.round()).abs() < 1e-9 && *x < x_right {
                    format!("{}", 2f64.powf(*x))
                } else {
                    String::new()
                }
            })
            .draw()
            .map_err(plot_err)?;
        for (setting, color) in [
            (Setting::Shared, RED),
            (Setting::Planned, BLUE),
            (Setting::PlannedRandomEffects, GREEN),
        ] {
            let mut line: Vec<(f64, f64)> = mine
                .iter()
                .filter(|p| p.setting == setting)
                .filter_map(|p| p.epsilon.map(|e| (e.log2(), p.summary().mean)))
                .collect();
            line.sort_by(|a, b| a.0.total_cmp(&b.0));
            chart
                .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))
                .map_err(plot_err)?
                .label(setting.legend())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
            chart
                .draw_series(
                    line.iter()
                        .map(|&(x, y)| Circle::new((x, y), 4, color.filled())),
                )
                .map_err(plot_err)?;
            for p in mine.iter().filter(|p| p.setting == setting) {
                if let Some(e) = p.epsilon {
                    let s = p.summary();
                    let x = e.log2();
                    chart
                        .draw_series(std::iter::once(PathElement::new(
                            vec![(x, s.mean - s.sd), (x, s.mean + s.sd)],
                            color,
                        )))
                        .map_err(plot_err)?;
                }
            }
        }
        for p in mine.iter().filter(|p| p.setting == Setting::NoDp) {
            let s = p.summary();
            chart
                .draw_series(std::iter::once(Circle::new(
                    (x_right, s.mean),
                    5,
                    BLACK.filled(),
                )))
                .map_err(plot_err)?
                .label(Setting::NoDp.legend())
                .legend(|(x, y)| Circle::new((x + 8, y), 4, BLACK.filled()));
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(x_right, s.mean - s.sd), (x_right, s.mean + s.sd)],
                    BLACK,
                )))
                .map_err(plot_err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 11))
            .draw()
            .map_err(plot_err)?;
    }
    root.present().map_err(plot_err)?;
    Ok(())
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("draw the plot: {e:?}")
}

/// Write the points as JSON beside the plot.
pub fn write_json(points: &[Point], path: &Path) -> anyhow::Result<()> {
    let rows: Vec<serde_json::Value> = points
        .iter()
        .map(|p| {
            serde_json::json!({
                "data": p.data,
                "setting": p.setting,
                "epsilon": p.epsilon,
                "seeds": p.seeds,
                "accuracies": p.accuracies,
                "summary": p.summary(),
            })
        })
        .collect();
    std::fs::write(path, serde_json::to_vec_pretty(&rows)?)
        .with_context(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(data: &str, setting: Setting, epsilon: Option<f64>, acc: &[f64]) -> Point {
        Point {
            data: data.into(),
            setting,
            epsilon,
            seeds: (1..=acc.len() as u64).collect(),
            accuracies: acc.to_vec(),
        }
    }

    #[test]
    fn summaries_tables_and_plots() {
        let s = summarise(&[0.9, 0.92, 0.94]);
        assert!((s.mean - 0.92).abs() < 1e-12 && (s.sd - 0.02).abs() < 1e-12);
        assert_eq!((s.min, s.max), (0.9, 0.94));
        let points = vec![
            point("digits", Setting::Shared, Some(1.0), &[0.7, 0.72]),
            point("digits", Setting::Shared, Some(8.0), &[0.88, 0.9]),
            point("digits", Setting::Planned, Some(1.0), &[0.8, 0.82]),
            point("digits", Setting::Planned, Some(8.0), &[0.93, 0.94]),
            point("digits", Setting::NoDp, None, &[0.96, 0.97]),
            point("breast_cancer", Setting::Planned, Some(8.0), &[0.97, 0.98]),
        ];
        let t = table(&points);
        assert!(
            t.contains("digits         planned         8  0.9350"),
            "{t}"
        );
        assert!(t.contains("no DP"), "{t}");
        let dir = tempfile::tempdir().unwrap();
        let svg = dir.path().join("curve.svg");
        plot_svg(&points, &svg).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.starts_with("<svg") && text.contains("digits: test accuracy"));
        write_json(&points, &dir.path().join("curve.json")).unwrap();
        assert_eq!(Setting::Shared.args(2.0)[1], "2");
    }
}
