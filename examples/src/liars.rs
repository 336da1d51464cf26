//! Dishonest validators for the scenarios: what one validator can do to the consensus.
//!
//! - [`Inverted`] reports the negation of its honest vector (every helpful update looks
//!   harmful): far from consensus, it is flagged and paid nothing.
//! - [`Strategic`] stays within the range of its honest utilities but reports the highest of
//!   them for every coalition that holds its favoured hospital and the lowest for every other,
//!   so that hospital's marginal contribution is as large as one validator's numbers can make
//!   it. Under the median rule a minority of such validators moves each coalition's consensus
//!   utility no further than to the honest validators' extremes.

use fedledger_participant::validator::Report;
use fedledger_valuation::consensus::Design;

/// Reports `-u` for every honest utility `u`.
pub struct Inverted;

impl Report for Inverted {
    fn report(&self, honest: Vec<i64>, _: &Design, _: &[String]) -> Vec<i64> {
        honest.into_iter().map(|u| u.saturating_neg()).collect()
    }
}

/// Favours the hospital with key `target`.
pub struct Strategic {
    pub target: String,
}

impl Report for Strategic {
    fn report(&self, honest: Vec<i64>, design: &Design, players: &[String]) -> Vec<i64> {
        let Some(p) = players.iter().position(|k| *k == self.target) else {
            return honest;
        };
        let (lo, hi) = (
            honest.iter().copied().min().unwrap_or(0),
            honest.iter().copied().max().unwrap_or(0),
        );
        design
            .coalitions
            .iter()
            .map(|c| if c.contains(p) { hi } else { lo })
            .collect()
    }
}
