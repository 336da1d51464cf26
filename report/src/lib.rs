//! fedledger reports: one self-contained HTML page (inline CSS, inline SVG, no script, nothing
//! fetched) showing what a federation recorded, for people who read rather than audit.
//!
//! Callers fill a [`Federation`] from what is recorded (the coordinator from its state
//! directory and ledger, `fedledger-ledger verify --report` from the entries it verified) and
//! [`render`] turns it into the page. Pure: no I/O, no clock; depends on no crate of ours.
//!
//! Modules, bottom first: [`plot`] (one per-round chart as SVG: plotters draws the frame, axes
//! and lines; every data point is one `<circle class="mark">` carrying its plot, series and
//! round, so a reader hovering sees the figure and a test can count the marks), then `html`
//! (the page).
//!
//! Every per-round plot has exactly one mark per round and series for which the record has a
//! figure: a hospital that declined or was absent in a round has no mark there.

pub mod plot;

mod html;

pub use html::render;
pub use plot::marks;

/// What the page shows: a federation as recorded.
#[derive(Clone, Debug, Default)]
pub struct Federation {
    /// The federation's name (the ledger's origin).
    pub name: String,
    /// The page's title, e.g. "Coordinator report" or "Auditor's report".
    pub title: String,
    /// Where the figures come from and who wrote the page (one paragraph, plain text).
    pub provenance: String,
    /// Rounds planned, when known.
    pub rounds_planned: Option<u64>,
    /// Each hospital's privacy budget (epsilon), when the federation records one.
    pub epsilon_budget: Option<f64>,
    /// The reward rule's name, as recorded.
    pub reward_rule: String,
    /// Enrolled hospitals, in the order their series are drawn.
    pub hospitals: Vec<String>,
    /// Finished rounds, ascending.
    pub rounds: Vec<Round>,
    /// Rewards paid at the end of settlement periods (settled rule), in order.
    pub settlements: Vec<Settlement>,
    /// Signed checkpoints of the log, ascending by size.
    pub checkpoints: Vec<Checkpoint>,
    /// The log's verifier key.
    pub log_key: String,
    /// SHA-256 of the genesis entry (what hospitals pin), when known.
    pub genesis_sha256: Option<String>,
    /// Commands that verify what the page shows, each with what it checks.
    pub how_to_verify: Vec<(String, String)>,
    /// Checks that were made before the page was written (an auditor's report lists them).
    pub checks: Vec<String>,
}

/// One finished round.
#[derive(Clone, Debug, Default)]
pub struct Round {
    pub round: u64,
    /// Aggregated (true) or abandoned (false).
    pub completed: bool,
    /// Why it was abandoned.
    pub reason: Option<String>,
    /// Model quality after the round, by metric name ("accuracy", "log-loss", "AUC", or the
    /// recorded validation score); drawn one plot per name.
    pub quality: Vec<(String, f64)>,
    pub contributions: Vec<Contribution>,
    pub declines: Vec<Decline>,
}

/// A hospital's accepted update in a round.
#[derive(Clone, Debug, Default)]
pub struct Contribution {
    pub hospital: String,
    pub examples: u64,
    /// Shapley value (utility units).
    pub value: f64,
    /// Its standard error, when recorded.
    pub value_se: Option<f64>,
    /// Units paid for this round alone (the per-round rule; 0 under the settled rule).
    pub reward: u64,
    /// The hospital's cumulative epsilon after this round, as it recorded it.
    pub epsilon: f64,
    pub flags: Vec<String>,
}

/// A hospital's signed decline of a round.
#[derive(Clone, Debug, Default)]
pub struct Decline {
    pub hospital: String,
    pub reason: String,
}

/// A settlement period's payouts.
#[derive(Clone, Debug, Default)]
pub struct Settlement {
    pub period: u64,
    pub first_round: u64,
    pub last_round: u64,
    /// Units paid in all.
    pub pool: u64,
    /// (hospital, accumulated value, its standard error, paid or not, payout).
    pub lines: Vec<SettlementLine>,
}

/// One hospital's line in a settlement.
#[derive(Clone, Debug, Default)]
pub struct SettlementLine {
    pub hospital: String,
    pub value: f64,
    pub se: f64,
    pub distinguishable: bool,
    pub payout: u64,
}

/// A signed checkpoint of the log.
#[derive(Clone, Debug, Default)]
pub struct Checkpoint {
    pub size: u64,
    /// Base64 root hash, as in the note.
    pub root: String,
    /// Valid witness cosignatures on it.
    pub cosignatures: usize,
    /// The signed note, verbatim.
    pub note: String,
}

/// Drawing a plot failed (plotters reports backend errors as text).
#[derive(Debug, thiserror::Error)]
#[error("draw the plot {plot}: {reason}")]
pub struct ReportError {
    pub plot: String,
    pub reason: String,
}

impl Federation {
    /// Units paid to each hospital in each round: the per-round rule's rewards in their round,
    /// a settlement's payouts in the period's last round.
    pub fn paid(&self, round: u64, hospital: &str) -> u64 {
        let per_round: u64 = self
            .rounds
            .iter()
            .filter(|r| r.round == round)
            .flat_map(|r| &r.contributions)
            .filter(|c| c.hospital == hospital)
            .map(|c| c.reward)
            .sum();
        let settled: u64 = self
            .settlements
            .iter()
            .filter(|s| s.last_round == round)
            .flat_map(|s| &s.lines)
            .filter(|l| l.hospital == hospital)
            .map(|l| l.payout)
            .sum();
        per_round + settled
    }
}
