//! The page: a summary, the per-round plots with their legends, the tables behind them, the
//! anchored checkpoints and the commands that verify them. Everything inline.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::plot::{self, PerRoundPlot, Series, Style, escape, figure};
use crate::{Federation, ReportError};

const CSS: &str = "body{font-family:sans-serif;max-width:900px;margin:2em auto;padding:0 1em;color:#222;line-height:1.4}\
h1{margin-bottom:0}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}\
figure{margin:1.2em 0}figcaption{font-weight:bold;margin-bottom:.3em}\
.legend span{display:inline-block;margin-right:1.2em;font-size:.9em}\
.legend i{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:middle;border-radius:50%}\
table{border-collapse:collapse;margin:1em 0;font-size:.9em;font-variant-numeric:tabular-nums}\
td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left}.abandoned{color:#b00}\
pre{background:#f4f4f4;padding:.6em;overflow-x:auto;font-size:.85em}.muted{color:#666;font-size:.9em}";

/// The per-round plots of a federation, in page order (also what tests count marks in).
pub fn plots(f: &Federation) -> Vec<(PerRoundPlot, String)> {
    let rounds = f.rounds.iter().map(|r| r.round).max().unwrap_or(0).max(1);
    let mut out = Vec::new();
    let per_round = |id: &str, title: &str, y: &str, series: Vec<Series>| PerRoundPlot {
        id: id.into(),
        title: title.into(),
        y_label: y.into(),
        rounds,
        series,
        reference: None,
        style: Style::Lines,
    };
    // Model quality: one plot per recorded metric.
    let mut metrics: Vec<String> = Vec::new();
    for r in &f.rounds {
        for (m, _) in &r.quality {
            if !metrics.contains(m) {
                metrics.push(m.clone());
            }
        }
    }
    for m in &metrics {
        let points = f
            .rounds
            .iter()
            .filter_map(|r| r.quality.iter().find(|q| &q.0 == m).map(|q| (r.round, q.1)))
            .collect();
        out.push((
            per_round(
                &format!("quality-{}", slug(m)),
                &format!("{m} of the global model after each round"),
                m,
                vec![Series {
                    name: m.clone(),
                    points,
                }],
            ),
            "Measured by the coordinator on its validation data; abandoned rounds keep the model \
             and have no mark."
                .to_owned(),
        ));
    }
    let per_hospital = |pick: &dyn Fn(&str, &crate::Round) -> Option<f64>, cumulative: bool| {
        f.hospitals
            .iter()
            .map(|h| {
                let mut total = 0.0;
                let points = f
                    .rounds
                    .iter()
                    .filter_map(|r| {
                        let v = pick(h, r);
                        if cumulative {
                            total += v.unwrap_or(0.0);
                            Some((r.round, total))
                        } else {
                            v.map(|v| (r.round, v))
                        }
                    })
                    .collect();
                Series {
                    name: h.clone(),
                    points,
                }
            })
            .collect::<Vec<_>>()
    };
    let value = |h: &str, r: &crate::Round| {
        r.contributions
            .iter()
            .find(|c| c.hospital == h)
            .map(|c| c.value)
    };
    let paid = |h: &str, r: &crate::Round| Some(f.paid(r.round, h) as f64);
    out.push((
        per_round(
            "value",
            "Each hospital's Shapley value per round",
            "value",
            per_hospital(&value, false),
        ),
        "One mark per round in which the hospital's update was accepted.".to_owned(),
    ));
    out.push((
        per_round(
            "value-cumulative",
            "Each hospital's value, cumulative",
            "cumulative value",
            per_hospital(&value, true),
        ),
        "The sum of its values up to each round.".to_owned(),
    ));
    out.push((
        PerRoundPlot {
            style: Style::Bars,
            ..per_round(
                "reward",
                "Units paid to each hospital per round",
                "units",
                per_hospital(&paid, false),
            )
        },
        format!(
            "Rule {}: a settlement's payouts count in the period's last round.",
            f.reward_rule
        ),
    ));
    out.push((
        per_round(
            "reward-cumulative",
            "Units paid to each hospital, cumulative",
            "cumulative units",
            per_hospital(&paid, true),
        ),
        String::new(),
    ));
    let epsilon = |h: &str, r: &crate::Round| {
        r.contributions
            .iter()
            .find(|c| c.hospital == h)
            .map(|c| c.epsilon)
    };
    out.push((
        PerRoundPlot {
            reference: f.epsilon_budget.map(|b| (b, "budget".to_owned())),
            ..per_round(
                "epsilon",
                "Epsilon spent by each hospital against its budget",
                "cumulative epsilon",
                per_hospital(&epsilon, false),
            )
        },
        match f.epsilon_budget {
            Some(b) => format!(
                "As each hospital recorded it with its update; the red line is the budget ({}).",
                figure(b)
            ),
            None => "As each hospital recorded it with its update.".to_owned(),
        },
    ));
    let declines = f
        .rounds
        .iter()
        .map(|r| (r.round, r.declines.len() as f64))
        .collect();
    let abandoned = f
        .rounds
        .iter()
        .filter(|r| !r.completed)
        .map(|r| (r.round, 1.0))
        .collect();
    out.push((
        PerRoundPlot {
            style: Style::Bars,
            ..per_round(
                "declines",
                "Declines and abandoned rounds",
                "count",
                vec![
                    Series {
                        name: "declines".into(),
                        points: declines,
                    },
                    Series {
                        name: "abandoned".into(),
                        points: abandoned,
                    },
                ],
            )
        },
        "Signed declines per round (a hospital whose budget or settings did not allow it); an \
         \"abandoned\" bar marks a round below quorum."
            .to_owned(),
    ));
    out
}

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

fn figure_html(p: &PerRoundPlot, note: &str) -> Result<String, ReportError> {
    let mut s = format!(
        "<figure id=\"plot-{}\" class=\"per-round\"><figcaption>{}</figcaption>",
        escape(&p.id),
        escape(&p.title)
    );
    s.push_str(&plot::svg(p)?);
    s.push_str("<div class=\"legend\">");
    for (i, series) in p.series.iter().enumerate() {
        let _ = write!(
            s,
            "<span><i style=\"background:{}\"></i>{}</span>",
            plot::color(i),
            escape(&series.name)
        );
    }
    if let Some((v, label)) = &p.reference {
        let _ = write!(
            s,
            "<span><i style=\"background:#c80000;border-radius:0;height:.2em\"></i>{} ({})</span>",
            escape(label),
            figure(*v)
        );
    }
    s.push_str("</div>");
    if !note.is_empty() {
        let _ = write!(s, "<p class=\"muted\">{}</p>", escape(note));
    }
    s.push_str("</figure>\n");
    Ok(s)
}

/// Renders the whole page.
pub fn render(f: &Federation) -> Result<String, ReportError> {
    let mut h = String::new();
    let e = escape;
    let completed = f.rounds.iter().filter(|r| r.completed).count();
    let abandoned = f.rounds.len() - completed;
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} - {}</title><style>{CSS}</style></head><body>\n",
        e(&f.title),
        e(&f.name)
    );
    let _ = writeln!(
        h,
        "<h1>{}</h1><p><b>Federation {}</b></p><p class=\"muted\">{}</p>",
        e(&f.title),
        e(&f.name),
        e(&f.provenance)
    );
    let planned = f
        .rounds_planned
        .map(|p| format!(" of {p} planned"))
        .unwrap_or_default();
    let _ = writeln!(
        h,
        "<table id=\"summary\"><tr><th>rounds finished</th><td>{}{planned}</td></tr>\
         <tr><th>completed / abandoned</th><td>{completed} / {abandoned}</td></tr>\
         <tr><th>hospitals</th><td>{}</td></tr><tr><th>reward rule</th><td>{}</td></tr>\
         <tr><th>privacy budget (epsilon per hospital)</th><td>{}</td></tr>\
         <tr><th>ledger entries (latest checkpoint)</th><td>{}</td></tr>\
         <tr><th>log verifier key</th><td><code>{}</code></td></tr>\
         <tr><th>genesis SHA-256</th><td><code>{}</code></td></tr></table>",
        f.rounds.len(),
        f.hospitals.len(),
        e(&f.reward_rule),
        f.epsilon_budget.map(figure).unwrap_or_else(|| "-".into()),
        f.checkpoints.last().map(|c| c.size).unwrap_or(0),
        e(&f.log_key),
        e(f.genesis_sha256.as_deref().unwrap_or("-")),
    );
    let plots = plots(f);
    let mut sections: BTreeMap<usize, (&str, Vec<String>)> = BTreeMap::new();
    for (p, note) in &plots {
        let (order, title) = if p.id.starts_with("quality") {
            (0, "Model quality")
        } else if p.id.starts_with("value") || p.id.starts_with("reward") {
            (1, "Contributions and rewards")
        } else if p.id == "epsilon" {
            (2, "Privacy")
        } else {
            (3, "Declines and abandoned rounds")
        };
        sections
            .entry(order)
            .or_insert((title, Vec::new()))
            .1
            .push(figure_html(p, note)?);
    }
    for (order, (title, figs)) in sections {
        let _ = writeln!(h, "<h2>{}</h2>", e(title));
        for fig in figs {
            h.push_str(&fig);
        }
        match order {
            1 => hospitals_table(&mut h, f),
            3 => declines_table(&mut h, f),
            _ => {}
        }
    }
    rounds_table(&mut h, f);
    settlements_table(&mut h, f);
    checkpoints_section(&mut h, f);
    h.push_str("</body></html>\n");
    Ok(h)
}

fn hospitals_table(h: &mut String, f: &Federation) {
    h.push_str(
        "<table id=\"hospitals\"><tr><th>hospital</th><th>rounds contributed</th><th>declines</th>\
         <th>total value</th><th>units paid</th><th>epsilon spent</th></tr>",
    );
    for name in &f.hospitals {
        let contributed: Vec<_> = f
            .rounds
            .iter()
            .flat_map(|r| r.contributions.iter().filter(|c| &c.hospital == name))
            .collect();
        let declines = f
            .rounds
            .iter()
            .flat_map(|r| &r.declines)
            .filter(|d| &d.hospital == name)
            .count();
        let value: f64 = contributed.iter().map(|c| c.value).sum();
        let paid: u64 = f.rounds.iter().map(|r| f.paid(r.round, name)).sum();
        let epsilon = contributed.last().map(|c| c.epsilon).unwrap_or(0.0);
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{declines}</td><td>{}</td><td>{paid}</td><td>{}</td></tr>",
            escape(name),
            contributed.len(),
            figure(value),
            figure(epsilon)
        );
    }
    h.push_str("</table>\n");
}

fn declines_table(h: &mut String, f: &Federation) {
    let rows: Vec<String> = f
        .rounds
        .iter()
        .flat_map(|r| {
            let abandoned = (!r.completed).then(|| {
                format!(
                    "<tr class=\"abandoned\"><td>{}</td><td>(round abandoned)</td><td>{}</td></tr>",
                    r.round,
                    escape(r.reason.as_deref().unwrap_or("-"))
                )
            });
            abandoned.into_iter().chain(r.declines.iter().map(|d| {
                format!(
                    "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                    r.round,
                    escape(&d.hospital),
                    escape(&d.reason)
                )
            }))
        })
        .collect();
    if rows.is_empty() {
        h.push_str("<p>No hospital declined a round and no round was abandoned.</p>\n");
        return;
    }
    h.push_str("<table id=\"declines\"><tr><th>round</th><th>who</th><th>reason</th></tr>");
    for r in rows {
        h.push_str(&r);
    }
    h.push_str("</table>\n");
}

fn rounds_table(h: &mut String, f: &Federation) {
    h.push_str("<h2>Rounds</h2><table id=\"rounds\"><tr><th>round</th><th>status</th>");
    let mut metrics: Vec<&str> = Vec::new();
    for r in &f.rounds {
        for (m, _) in &r.quality {
            if !metrics.contains(&m.as_str()) {
                metrics.push(m);
            }
        }
    }
    for m in &metrics {
        let _ = write!(h, "<th>{}</th>", escape(m));
    }
    h.push_str("<th>updates</th><th>declines</th></tr>");
    for r in &f.rounds {
        let _ = write!(
            h,
            "<tr{}><td>{}</td><td>{}</td>",
            if r.completed {
                ""
            } else {
                " class=\"abandoned\""
            },
            r.round,
            if r.completed {
                "completed"
            } else {
                "abandoned"
            }
        );
        for m in &metrics {
            let v = r.quality.iter().find(|q| q.0 == *m).map(|q| figure(q.1));
            let _ = write!(h, "<td>{}</td>", v.unwrap_or_else(|| "-".into()));
        }
        let _ = write!(
            h,
            "<td>{}</td><td>{}</td></tr>",
            r.contributions.len(),
            r.declines.len()
        );
    }
    h.push_str("</table>\n");
}

fn settlements_table(h: &mut String, f: &Federation) {
    if f.settlements.is_empty() {
        return;
    }
    h.push_str(
        "<h2>Settlements</h2><table id=\"settlements\"><tr><th>period</th><th>rounds</th>\
         <th>hospital</th><th>accumulated value</th><th>standard error</th><th>verdict</th>\
         <th>payout</th></tr>",
    );
    for s in &f.settlements {
        for l in &s.lines {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}-{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                s.period,
                s.first_round,
                s.last_round,
                escape(&l.hospital),
                figure(l.value),
                figure(l.se),
                if l.distinguishable {
                    "paid"
                } else {
                    "not distinguishable from 0"
                },
                l.payout
            );
        }
    }
    h.push_str("</table>\n");
}

fn checkpoints_section(h: &mut String, f: &Federation) {
    h.push_str("<h2>Anchored checkpoints</h2>");
    h.push_str(
        "<p>Every round's entries are appended to a signed Merkle log; each checkpoint below is \
         signed by the log key and cosigned by the witnesses. Anyone with a copy of the log can \
         check that the figures above are the ones recorded.</p>",
    );
    h.push_str(
        "<table id=\"checkpoints\"><tr><th>size (entries)</th><th>root hash</th><th>cosignatures</th></tr>",
    );
    for c in &f.checkpoints {
        let _ = write!(
            h,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
            c.size,
            escape(&c.root),
            c.cosignatures
        );
    }
    h.push_str("</table>\n");
    if let Some(last) = f.checkpoints.last() {
        let _ = write!(
            h,
            "<p>The latest checkpoint, verbatim:</p><pre>{}</pre>",
            escape(&last.note)
        );
    }
    if !f.checks.is_empty() {
        h.push_str("<h2>What was verified</h2><ul id=\"checks\">");
        for c in &f.checks {
            let _ = write!(h, "<li>{}</li>", escape(c));
        }
        h.push_str("</ul>\n");
    }
    if !f.how_to_verify.is_empty() {
        h.push_str("<h2>How to verify</h2>");
        for (cmd, what) in &f.how_to_verify {
            let _ = write!(h, "<p>{}</p><pre>{}</pre>", escape(what), escape(cmd));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Checkpoint, Contribution, Decline, Round};

    fn federation(rounds: u64) -> Federation {
        let hospitals = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
        Federation {
            name: "test".into(),
            title: "Coordinator report".into(),
            hospitals: hospitals.clone(),
            epsilon_budget: Some(8.0),
            reward_rule: "shapley-proportional/v1".into(),
            rounds: (1..=rounds)
                .map(|r| Round {
                    round: r,
                    completed: r != 2,
                    reason: (r == 2).then(|| "below quorum".into()),
                    quality: if r == 2 {
                        vec![]
                    } else {
                        vec![
                            ("accuracy".into(), 0.5 + r as f64 / 100.0),
                            ("log-loss".into(), 1.0 / r as f64),
                        ]
                    },
                    contributions: if r == 2 {
                        vec![]
                    } else {
                        hospitals
                            .iter()
                            .map(|h| Contribution {
                                hospital: h.clone(),
                                value: 0.01,
                                reward: 10,
                                epsilon: r as f64,
                                ..Default::default()
                            })
                            .collect()
                    },
                    declines: if r == 2 {
                        vec![Decline {
                            hospital: "c".into(),
                            reason: "budget <exhausted>".into(),
                        }]
                    } else {
                        vec![]
                    },
                })
                .collect(),
            checkpoints: vec![Checkpoint {
                size: 9,
                root: "abc=".into(),
                cosignatures: 1,
                note: "test\n9\nabc=\n".into(),
            }],
            ..Default::default()
        }
    }

    /// Marks of `plot`, by series: the rounds each series has a mark in.
    fn marks(page: &str, plot: &str) -> BTreeMap<String, Vec<u64>> {
        let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let needle = format!("class=\"mark\" data-plot=\"{plot}\" data-series=\"");
        for (at, _) in page.match_indices(&needle) {
            let rest = &page[at + needle.len()..];
            let series = &rest[..rest.find('"').unwrap()];
            let r = &rest[rest.find("data-round=\"").unwrap() + 12..];
            out.entry(series.to_owned())
                .or_default()
                .push(r[..r.find('"').unwrap()].parse().unwrap());
        }
        out
    }

    #[test]
    fn every_per_round_plot_has_one_mark_per_round_and_series() {
        let f = federation(4);
        let page = render(&f).unwrap();
        let all = [1, 2, 3, 4];
        let completed = [1, 3, 4];
        assert_eq!(marks(&page, "quality-accuracy")["accuracy"], completed);
        assert_eq!(marks(&page, "quality-log-loss")["log-loss"], completed);
        for h in ["a", "b", "c"] {
            assert_eq!(marks(&page, "value")[h], completed);
            assert_eq!(marks(&page, "value-cumulative")[h], all);
            assert_eq!(marks(&page, "reward")[h], all);
            assert_eq!(marks(&page, "reward-cumulative")[h], all);
            assert_eq!(marks(&page, "epsilon")[h], completed);
        }
        assert_eq!(marks(&page, "declines")["declines"], all);
        assert_eq!(marks(&page, "declines")["abandoned"], [2]);
        assert_eq!(page.matches("<figure id=\"plot-").count(), 8);
        // Escaped, not injected.
        assert!(page.contains("budget &lt;exhausted&gt;"));
        assert!(!page.contains("<exhausted>"));
        // Self-contained: nothing is fetched.
        assert!(!page.contains("src=") && !page.contains("href="));
    }

    #[test]
    fn cumulative_rewards_add_up_and_settlements_count_in_their_last_round() {
        let mut f = federation(4);
        f.settlements.push(crate::Settlement {
            period: 1,
            first_round: 1,
            last_round: 3,
            pool: 100,
            lines: vec![crate::SettlementLine {
                hospital: "a".into(),
                payout: 100,
                distinguishable: true,
                ..Default::default()
            }],
        });
        assert_eq!(f.paid(3, "a"), 110);
        assert_eq!(f.paid(2, "a"), 0);
        let p = plots(&f);
        let cumulative = &p
            .iter()
            .find(|(p, _)| p.id == "reward-cumulative")
            .unwrap()
            .0;
        let a = &cumulative.series[0];
        assert_eq!(a.points, vec![(1, 10.0), (2, 10.0), (3, 120.0), (4, 130.0)]);
    }
}
