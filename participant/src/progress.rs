//! What a person (or a log file) sees of the agent's rounds: a progress bar on a terminal, one
//! line per round on standard output otherwise, or nothing (agents run inside other programs).
//! Every round's line says what was answered and how much of the privacy budget is left.

use indicatif::{ProgressBar, ProgressStyle};

/// How the agent shows its rounds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProgressMode {
    /// A progress bar (standard error is a terminal).
    Bar,
    /// One line per round on standard output (a file, a pipe, a service's journal).
    Lines,
    /// Nothing beyond the logs.
    #[default]
    Quiet,
}

/// The agent's view of its rounds.
pub(crate) struct Progress {
    mode: ProgressMode,
    bar: Option<ProgressBar>,
    name: String,
    budget: Option<f64>,
    total: u64,
}

/// "budget left 6.766 of 8" (what a hospital watches), or "" without a budget.
pub(crate) fn budget_text(spent: f64, budget: Option<f64>) -> String {
    match budget {
        Some(b) => format!("budget left {:.3} of {b}", (b - spent).max(0.0)),
        None => String::new(),
    }
}

impl Progress {
    pub(crate) fn new(mode: ProgressMode, name: &str, budget: Option<f64>) -> Self {
        let bar = (mode == ProgressMode::Bar).then(|| {
            let b = ProgressBar::new(0);
            b.set_style(
                ProgressStyle::with_template("{prefix} [{bar:30}] round {pos}/{len} {msg}")
                    .expect("static template")
                    .progress_chars("=> "),
            );
            b.set_prefix(name.to_owned());
            b
        });
        Self {
            mode,
            bar,
            name: name.to_owned(),
            budget,
            total: 0,
        }
    }

    /// The federation's planned rounds (from each task).
    pub(crate) fn total(&mut self, total: u64) {
        self.total = total;
        if let Some(b) = &self.bar {
            b.set_length(total);
        }
    }

    /// Round `round` was answered: `what` says how; `spent` is the epsilon spent so far.
    pub(crate) fn round(&self, round: u64, what: &str, spent: f64) {
        let budget = budget_text(spent, self.budget);
        let sep = if budget.is_empty() { "" } else { "; " };
        match self.mode {
            ProgressMode::Bar => {
                if let Some(b) = &self.bar {
                    b.set_position(round);
                    b.set_message(format!("{what}{sep}{budget}"));
                }
            }
            ProgressMode::Lines => println!(
                "{} round {round}/{}: {what}{sep}{budget}",
                self.name, self.total
            ),
            ProgressMode::Quiet => {}
        }
    }

    /// The federation finished (`how`: "finished", or why it is over).
    pub(crate) fn finished(&self, how: &str, sent: usize, declined: usize, spent: f64) {
        let budget = budget_text(spent, self.budget);
        let line = format!(
            "federation {how}: {sent} rounds sent, {declined} declined, epsilon {spent:.3} spent{}{budget}",
            if budget.is_empty() { "" } else { ", " }
        );
        match self.mode {
            ProgressMode::Bar => {
                if let Some(b) = &self.bar {
                    b.finish_with_message(line);
                }
            }
            ProgressMode::Lines => println!("{} {line}", self.name),
            ProgressMode::Quiet => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_left_never_goes_below_zero() {
        assert_eq!(budget_text(1.25, Some(8.0)), "budget left 6.750 of 8");
        assert_eq!(budget_text(9.0, Some(8.0)), "budget left 0.000 of 8");
        assert_eq!(budget_text(1.0, None), "");
    }
}
