//! One per-round chart as an SVG string. plotters (SVG backend, no font library) draws the
//! frame, the grid, the axes and each series' line or bars; every data point is then added as
//! one `<circle class="mark" data-plot=.. data-series=.. data-round=..>` at the position
//! plotters maps it to, with a `<title>` giving the figure (shown on hover).

use plotters::prelude::*;

use crate::ReportError;

/// The marks of a page (or of one chart), as this module writes them: (plot, series) -> the
/// rounds it has a mark in, in page order. What tests and tools count marks with; a mark
/// without its plot, series or round is an error naming it.
pub fn marks(page: &str) -> Result<std::collections::BTreeMap<(String, String), Vec<u64>>, String> {
    let mut out: std::collections::BTreeMap<(String, String), Vec<u64>> = Default::default();
    let attr = |tag: &str, name: &str| -> Option<String> {
        let at = tag.find(&format!("{name}=\""))? + name.len() + 2;
        Some(tag[at..at + tag[at..].find('"')?].to_owned())
    };
    for (at, _) in page.match_indices("<circle class=\"mark\"") {
        let end = page[at..]
            .find('>')
            .ok_or("a mark tag that does not close")?;
        let tag = &page[at..at + end];
        match (
            attr(tag, "data-plot"),
            attr(tag, "data-series"),
            attr(tag, "data-round").and_then(|r| r.parse().ok()),
        ) {
            (Some(plot), Some(series), Some(round)) => {
                out.entry((plot, series)).or_default().push(round)
            }
            _ => return Err(format!("a mark without its plot, series or round: {tag}")),
        }
    }
    Ok(out)
}

/// Chart size in pixels.
pub const WIDTH: u32 = 760;
pub const HEIGHT: u32 = 300;

/// One line (or set of bars) of a plot.
#[derive(Clone, Debug, Default)]
pub struct Series {
    pub name: String,
    /// (round, value), at most one per round.
    pub points: Vec<(u64, f64)>,
}

/// How a plot draws its series.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Style {
    /// Lines through the marks.
    #[default]
    Lines,
    /// One bar per point, from zero.
    Bars,
}

/// A chart with rounds on the x axis.
#[derive(Clone, Debug, Default)]
pub struct PerRoundPlot {
    /// Stable identifier (`data-plot` of its marks, `id` of its figure: `plot-<id>`).
    pub id: String,
    pub title: String,
    pub y_label: String,
    /// The x axis spans rounds 1..=rounds.
    pub rounds: u64,
    pub series: Vec<Series>,
    /// A horizontal reference line (e.g. the privacy budget) and its label.
    pub reference: Option<(f64, String)>,
    pub style: Style,
}

/// The colour of the `i`-th series, as `#rrggbb` (the legend uses it too).
pub fn color(i: usize) -> String {
    let (r, g, b) = rgb(i);
    format!("#{r:02x}{g:02x}{b:02x}")
}

fn rgb(i: usize) -> (u8, u8, u8) {
    // Okabe-Ito: distinguishable with the common colour-vision deficiencies.
    const PALETTE: [(u8, u8, u8); 8] = [
        (0, 114, 178),
        (230, 159, 0),
        (0, 158, 115),
        (204, 121, 167),
        (86, 180, 233),
        (213, 94, 0),
        (240, 228, 66),
        (0, 0, 0),
    ];
    PALETTE[i % PALETTE.len()]
}

/// Escapes text for HTML and SVG (element content and attribute values).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A figure with up to four significant digits, without noise like `0.30000000000000004`.
pub fn figure(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    if (1e4..1e15).contains(&a) {
        // Units and other large figures: whole, in groups of three.
        let digits = format!("{:.0}", a);
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(c);
        }
        return if v < 0.0 {
            format!("-{grouped}")
        } else {
            grouped
        };
    }
    if (1e-3..1e4).contains(&a) {
        let decimals = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
        let s = format!("{v:.decimals$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            s
        }
    } else {
        format!("{v:.3e}")
    }
}

fn y_range(plot: &PerRoundPlot) -> (f64, f64) {
    let mut values: Vec<f64> = plot
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|v| v.is_finite())
        .collect();
    if let Some((v, _)) = plot.reference {
        values.push(v);
    }
    if plot.style == Style::Bars {
        values.push(0.0);
    }
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    // Counts and units start at zero and show at least one unit of height.
    if plot.style == Style::Bars && lo >= 0.0 {
        return (0.0, (hi * 1.08).max(1.0));
    }
    if hi - lo < 1e-12 {
        let pad = if lo.abs() > 1e-12 {
            lo.abs() * 0.1
        } else {
            1.0
        };
        return (lo - pad, hi + pad);
    }
    let pad = (hi - lo) * 0.08;
    (lo - pad, hi + pad)
}

/// Draws `plot` as a standalone `<svg>` element.
pub fn svg(plot: &PerRoundPlot) -> Result<String, ReportError> {
    let err = |e: &dyn std::fmt::Display| ReportError {
        plot: plot.id.clone(),
        reason: e.to_string(),
    };
    let rounds = plot.rounds.max(1) as f64;
    let (y0, y1) = y_range(plot);
    let mut svg = String::new();
    let mut marks = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(0.5f64..rounds + 0.5, y0..y1)
            .map_err(|e| err(&e))?;
        let whole = |x: &f64| {
            if (x - x.round()).abs() < 1e-9 && *x >= 1.0 {
                format!("{}", x.round() as i64)
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .x_desc("round")
            .y_desc(plot.y_label.as_str())
            .x_labels((plot.rounds.clamp(1, 20) as usize) + 1)
            .x_label_formatter(&whole)
            .y_label_formatter(&|y| figure(*y))
            .light_line_style(RGBColor(235, 235, 235))
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(|e| err(&e))?;
        if let Some((v, _)) = &plot.reference {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(0.5, *v), (rounds + 0.5, *v)],
                    RGBColor(200, 0, 0).stroke_width(2),
                )))
                .map_err(|e| err(&e))?;
        }
        let n = plot.series.len().max(1) as f64;
        for (i, s) in plot.series.iter().enumerate() {
            let (r, g, b) = rgb(i);
            let colour = RGBColor(r, g, b);
            let mut points = s.points.clone();
            points.sort_by_key(|p| p.0);
            // Bars of several series sit side by side within the round's slot.
            let offset = |round: u64| match plot.style {
                Style::Lines => round as f64,
                Style::Bars => round as f64 - 0.4 + 0.8 * (i as f64 + 0.5) / n,
            };
            match plot.style {
                Style::Lines => {
                    chart
                        .draw_series(LineSeries::new(
                            points.iter().map(|&(x, y)| (x as f64, y)),
                            colour.stroke_width(2),
                        ))
                        .map_err(|e| err(&e))?;
                }
                Style::Bars => {
                    let half = 0.4 / n;
                    chart
                        .draw_series(points.iter().map(|&(x, y)| {
                            let c = offset(x);
                            Rectangle::new([(c - half, 0.0), (c + half, y)], colour.filled())
                        }))
                        .map_err(|e| err(&e))?;
                }
            }
            for &(round, y) in &points {
                let (px, py) = chart.backend_coord(&(offset(round), y));
                marks.push_str(&format!(
                    "<circle class=\"mark\" data-plot=\"{}\" data-series=\"{}\" data-round=\"{round}\" cx=\"{px}\" cy=\"{py}\" r=\"4\" fill=\"{}\" stroke=\"white\" stroke-width=\"1\"><title>{} round {round}: {}</title></circle>",
                    escape(&plot.id),
                    escape(&s.name),
                    color(i),
                    escape(&s.name),
                    figure(y)
                ));
            }
        }
        root.present().map_err(|e| err(&e))?;
    }
    match svg.rfind("</svg>") {
        Some(at) => {
            svg.insert_str(at, &marks);
            Ok(svg)
        }
        None => Err(err(&"the SVG backend wrote no closing tag")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_mark_per_point_inside_the_frame() {
        let plot = PerRoundPlot {
            id: "acc".into(),
            title: "Accuracy".into(),
            y_label: "accuracy".into(),
            rounds: 3,
            series: vec![
                Series {
                    name: "a".into(),
                    points: vec![(1, 0.5), (2, 0.7), (3, 0.9)],
                },
                Series {
                    name: "b<&>".into(),
                    points: vec![(2, 0.6)],
                },
            ],
            reference: Some((1.0, "budget".into())),
            style: Style::Lines,
        };
        let s = svg(&plot).unwrap();
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert_eq!(s.matches("class=\"mark\"").count(), 4);
        // The reader gives back what was drawn, and names a mark it cannot read.
        let m = marks(&s).unwrap();
        assert_eq!(m.values().map(Vec::len).sum::<usize>(), 4);
        assert_eq!(m.values().find(|r| r.len() == 3), Some(&vec![1, 2, 3]));
        assert!(marks("<circle class=\"mark\" data-plot=\"p\">").is_err());
        assert_eq!(s.matches("data-series=\"a\"").count(), 3);
        assert_eq!(s.matches("data-series=\"b&lt;&amp;&gt;\"").count(), 1);
        // Later rounds are further right, higher values further up.
        let cx = |round: u64| -> i32 {
            let at = s
                .find(&format!("data-series=\"a\" data-round=\"{round}\""))
                .unwrap();
            let rest = &s[at..];
            let v = &rest[rest.find("cx=\"").unwrap() + 4..];
            v[..v.find('"').unwrap()].parse().unwrap()
        };
        assert!(cx(1) < cx(2) && cx(2) < cx(3));
        assert!(cx(3) < WIDTH as i32);
    }

    #[test]
    fn bars_of_nothing_start_at_zero() {
        let plot = PerRoundPlot {
            rounds: 2,
            series: vec![Series {
                name: "declines".into(),
                points: vec![(1, 0.0), (2, 0.0)],
            }],
            style: Style::Bars,
            ..Default::default()
        };
        assert_eq!(y_range(&plot), (0.0, 1.0));
    }

    #[test]
    fn figures_are_short() {
        assert_eq!(figure(0.30000000000000004), "0.3");
        assert_eq!(figure(1234.5678), "1235");
        assert_eq!(figure(1.8e6), "1,800,000");
        assert_eq!(figure(-12345.6), "-12,346");
        assert_eq!(figure(0.012345), "0.01235");
        assert_eq!(figure(-2.5), "-2.5");
        assert_eq!(figure(1e-9), "1.000e-9");
    }
}
