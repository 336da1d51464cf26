//! Scenario files: who the hospitals are and how they behave.
//!
//! ```toml
//! [[hospital]]
//! name = "A"
//! rows = 120               # drawn from the training split (honest hospitals only)
//! label_noise = 0.0        # fraction of its labels flipped (default 0)
//! behaviour = "honest"     # honest | zero | random | copy:<name> | sign-flip | alie
//! prefer_class = 1         # optional: take `preference` of its rows from this class
//! preference = 0.7
//! epsilon_budget = 8.0     # optional: this hospital's DP budget (default: the example's)
//! ```
//!
//! Validators (README: Validators) judge each round's updates on holdouts of their own,
//! drawn from the same pool as the hospitals' rows and disjoint from them:
//!
//! ```toml
//! [validators]             # the coordinator's [validators] rules (every field optional)
//! quality_k = 1
//! [[validator]]
//! name = "lab-1"
//! rows = 60                # its holdout
//! behaviour = "honest"     # honest | inverted | strategic:<hospital name>
//! ```
//!
//! `inverted` reports the negation of its honest vector; `strategic:<name>` reports, within
//! the range of its honest utilities, the highest for every coalition that holds that hospital
//! and the lowest for every other (to raise that hospital's value as far as one validator can).
//!
//! Only honest hospitals draw rows from the data; the others only claim `rows` as their
//! example count. `zero` sends an all-zero update; `random` a random direction with the norm of
//! the honest updates of the round; `copy:<name>` resends that hospital's update of the round;
//! `sign-flip` sends the negated mean of the round's honest updates, scaled to their mean norm;
//! `alie` ("a little is enough", Baruch et al. 2019) sends, per coordinate, the honest mean
//! shifted by `z` honest standard deviations, with `z` from their formula for `n` participants
//! of which `f` attack (every `alie` hospital sends the same vector). Both collude: they see the
//! round's honest updates. Label flipping is `label_noise = 1.0` on an honest hospital.

use std::path::Path;

use anyhow::{Context, bail};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How a hospital behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Behaviour {
    Honest,
    Zero,
    Random,
    Copy(String),
    SignFlip,
    Alie,
}

impl std::fmt::Display for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Behaviour::Honest => f.write_str("honest"),
            Behaviour::Zero => f.write_str("zero"),
            Behaviour::Random => f.write_str("random"),
            Behaviour::Copy(n) => write!(f, "copy:{n}"),
            Behaviour::SignFlip => f.write_str("sign-flip"),
            Behaviour::Alie => f.write_str("alie"),
        }
    }
}

impl std::str::FromStr for Behaviour {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "honest" => Behaviour::Honest,
            "zero" => Behaviour::Zero,
            "random" => Behaviour::Random,
            "sign-flip" => Behaviour::SignFlip,
            "alie" => Behaviour::Alie,
            _ => match s.strip_prefix("copy:") {
                Some(n) if !n.is_empty() => Behaviour::Copy(n.to_owned()),
                _ => {
                    return Err(format!(
                        "unknown behaviour {s:?}: expected honest, zero, random, copy:<name>, \
                         sign-flip or alie"
                    ));
                }
            },
        })
    }
}

impl Serialize for Behaviour {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Behaviour {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn honest() -> Behaviour {
    Behaviour::Honest
}

fn default_preference() -> f64 {
    0.7
}

/// One hospital of a scenario.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Hospital {
    pub name: String,
    pub rows: usize,
    #[serde(default)]
    pub label_noise: f64,
    #[serde(default = "honest")]
    pub behaviour: Behaviour,
    #[serde(default)]
    pub prefer_class: Option<usize>,
    #[serde(default = "default_preference")]
    pub preference: f64,
    #[serde(default)]
    pub epsilon_budget: Option<f64>,
}

impl Hospital {
    /// An honest hospital with `rows` rows.
    pub fn honest(name: &str, rows: usize) -> Self {
        Self {
            name: name.to_owned(),
            rows,
            label_noise: 0.0,
            behaviour: Behaviour::Honest,
            prefer_class: None,
            preference: default_preference(),
            epsilon_budget: None,
        }
    }

    /// Take `share` of the rows from `class`.
    pub fn with_preference(mut self, class: usize, share: f64) -> Self {
        self.prefer_class = Some(class);
        self.preference = share;
        self
    }

    /// Whether this hospital trains on rows of its own.
    pub fn trains(&self) -> bool {
        self.behaviour == Behaviour::Honest
    }
}

/// How a simulated validator reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValidatorBehaviour {
    Honest,
    /// The negation of its honest vector.
    Inverted,
    /// High whenever the named hospital is in the coalition, low otherwise (within its honest
    /// range).
    Strategic(String),
}

impl std::fmt::Display for ValidatorBehaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ValidatorBehaviour::Honest => f.write_str("honest"),
            ValidatorBehaviour::Inverted => f.write_str("inverted"),
            ValidatorBehaviour::Strategic(n) => write!(f, "strategic:{n}"),
        }
    }
}

impl std::str::FromStr for ValidatorBehaviour {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "honest" => ValidatorBehaviour::Honest,
            "inverted" => ValidatorBehaviour::Inverted,
            _ => match s.strip_prefix("strategic:") {
                Some(n) if !n.is_empty() => ValidatorBehaviour::Strategic(n.to_owned()),
                _ => {
                    return Err(format!(
                        "unknown validator behaviour {s:?}: expected honest, inverted or \
                         strategic:<hospital>"
                    ));
                }
            },
        })
    }
}

impl Serialize for ValidatorBehaviour {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ValidatorBehaviour {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn honest_validator() -> ValidatorBehaviour {
    ValidatorBehaviour::Honest
}

/// One validator of a scenario.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Validator {
    pub name: String,
    /// Rows of its holdout.
    pub rows: usize,
    #[serde(default = "honest_validator")]
    pub behaviour: ValidatorBehaviour,
}

/// A whole scenario.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    #[serde(rename = "hospital")]
    pub hospitals: Vec<Hospital>,
    /// The coordinator's `[validators]` rules (defaults when validators are listed without).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validators: Option<fedledger_coordinator::config::ValidatorsSection>,
    #[serde(rename = "validator", default, skip_serializing_if = "Vec::is_empty")]
    pub validator_list: Vec<Validator>,
}

impl Scenario {
    /// Read and check a scenario file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read scenario {}", path.display()))?;
        let s: Scenario =
            toml::from_str(&text).with_context(|| format!("parse scenario {}", path.display()))?;
        s.check()?;
        Ok(s)
    }

    /// Five hospitals of unequal size and class balance, sized for a pool of `pool` rows.
    pub fn default_five(pool: usize) -> Self {
        let shares = [0.34, 0.24, 0.18, 0.14, 0.10];
        let names = ["st-mary", "riverside", "northgate", "hillcrest", "lakeside"];
        let prefs = [Some((1, 0.6)), None, Some((0, 0.8)), None, Some((1, 0.7))];
        let hospitals = names
            .iter()
            .zip(shares)
            .zip(prefs)
            .map(|((n, s), p)| {
                let h = Hospital::honest(n, ((pool as f64) * s).floor() as usize);
                match p {
                    Some((c, share)) => h.with_preference(c, share),
                    None => h,
                }
            })
            .collect();
        Scenario {
            hospitals,
            validators: None,
            validator_list: Vec::new(),
        }
    }

    /// The validators' holdouts as hospitals that draw rows (for the split).
    pub fn holdouts(&self) -> Vec<Hospital> {
        self.validator_list
            .iter()
            .map(|v| Hospital::honest(&v.name, v.rows))
            .collect()
    }

    /// Names unique, rows positive, copies name an existing honest hospital.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.hospitals.is_empty() {
            bail!("scenario has no [[hospital]]");
        }
        let mut names = std::collections::HashSet::new();
        for h in &self.hospitals {
            if !names.insert(h.name.as_str()) {
                bail!("hospital name {} appears twice", h.name);
            }
            if h.rows == 0 {
                bail!("hospital {}: rows must be at least 1", h.name);
            }
            if !(0.0..=1.0).contains(&h.label_noise) || !(0.0..=1.0).contains(&h.preference) {
                bail!(
                    "hospital {}: label_noise and preference must be in [0, 1]",
                    h.name
                );
            }
        }
        for v in &self.validator_list {
            if !names.insert(v.name.as_str()) {
                bail!("name {} appears twice", v.name);
            }
            if v.rows == 0 {
                bail!("validator {}: rows must be at least 1", v.name);
            }
            if let ValidatorBehaviour::Strategic(target) = &v.behaviour
                && !self.hospitals.iter().any(|h| &h.name == target)
            {
                bail!(
                    "validator {} favours {target}, which is not in the scenario",
                    v.name
                );
            }
        }
        for h in &self.hospitals {
            if let Behaviour::Copy(target) = &h.behaviour {
                match self.hospitals.iter().find(|o| &o.name == target) {
                    Some(o) if o.behaviour == Behaviour::Honest => {}
                    Some(_) => bail!("hospital {} copies {target}, which is not honest", h.name),
                    None => bail!(
                        "hospital {} copies {target}, which is not in the scenario",
                        h.name
                    ),
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_behaviours_and_rejects_bad_ones() {
        let s: Scenario = toml::from_str(
            r#"
            [[hospital]]
            name = "B"
            rows = 60
            [[hospital]]
            name = "D"
            rows = 60
            behaviour = "copy:B"
            "#,
        )
        .unwrap();
        s.check().unwrap();
        assert_eq!(s.hospitals[1].behaviour, Behaviour::Copy("B".into()));
        assert!(
            toml::from_str::<Scenario>("[[hospital]]\nname='x'\nrows=1\nbehaviour='evil'").is_err()
        );
        let bad = Scenario {
            hospitals: vec![Hospital {
                behaviour: Behaviour::Copy("nobody".into()),
                ..Hospital::honest("x", 1)
            }],
            validators: None,
            validator_list: Vec::new(),
        };
        assert!(bad.check().is_err());
    }

    #[test]
    fn default_fits_the_pool() {
        let s = Scenario::default_five(310);
        s.check().unwrap();
        assert!(s.hospitals.iter().map(|h| h.rows).sum::<usize>() <= 310);
        let sizes: std::collections::HashSet<_> = s.hospitals.iter().map(|h| h.rows).collect();
        assert_eq!(sizes.len(), 5, "sizes are unequal");
    }
}
