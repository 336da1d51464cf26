//! `fedledger-ledger verify DIR --report OUT`: the auditor's page (the `fedledger-report` crate)
//! from the exported entries and checkpoints that were just verified, with the checks made.
//! Only what the ledger records is shown: the round summaries' validation score (the
//! coordinator's accuracy and AUC are not in the ledger), the contributions' values, rewards and
//! recorded epsilons, declines, settlements and the signed checkpoints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use fedledger_ledger::note::{SignedCheckpoint, VerifierKey, b64_encode};
use fedledger_ledger::records::{Record, RoundStatus, genesis_witnesses, validate_entry};
use fedledger_ledger::verify::VerifyReport;
use fedledger_report as report;

/// The page's file name inside the output folder.
pub const REPORT_FILE: &str = "report.html";

fn nano(v: i64) -> f64 {
    v as f64 / 1e9
}

/// What the export in `dir` records, as the report crate draws it; `verified` is the outcome
/// of `verify_dir` on the same folder.
pub fn federation(dir: &Path, verified: &VerifyReport) -> anyhow::Result<report::Federation> {
    let read = |rel: &str| std::fs::read(dir.join(rel)).with_context(|| format!("read {rel}"));
    let log_key_text = String::from_utf8(read("log.vkey")?).context("log.vkey is not UTF-8")?;
    let log_key = VerifierKey::parse(log_key_text.trim()).context("log.vkey")?;
    let origin = log_key.name.clone();
    // Entries in order, as far as the files go (work follows the files that are there).
    let mut records = Vec::new();
    for i in 0u64.. {
        let Ok(bytes) = std::fs::read(dir.join(format!("entries/{i}"))) else {
            break;
        };
        records.push(validate_entry(i, &origin, &bytes).with_context(|| format!("entries/{i}"))?);
    }
    let genesis = records.first().context("entries/0 is missing")?;
    let mut f = report::Federation {
        name: origin.clone(),
        title: if verified.ok() {
            "Auditor's report: the ledger verifies".into()
        } else {
            "Auditor's report: VERIFICATION FAILED".into()
        },
        log_key: log_key_text.trim().to_owned(),
        genesis_sha256: Some(
            fedledger_ledger::merkle::sha256_bytes(&read("entries/0")?)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        ),
        ..Default::default()
    };
    if let Record::Federation(g) = genesis {
        f.rounds_planned = Some(g.training.rounds);
        f.epsilon_budget = g.privacy.epsilon_budget.parse().ok();
        f.reward_rule = g.reward.rule.clone();
    }
    // Every witness key the ledger names (the genesis's and governed changes'): the report
    // counts cosignatures; `verify` judges them against the set in force at each size.
    let mut witnesses: Vec<VerifierKey> = genesis_witnesses(genesis)
        .map(|w| {
            w.keys
                .iter()
                .filter_map(|k| VerifierKey::parse(k).ok())
                .collect()
        })
        .unwrap_or_default();
    for r in &records {
        if let Record::Governance(g) = r {
            for c in &g.proposal.changes {
                if let fedledger_ledger::records::Change::Witnesses { keys, .. } = c {
                    for k in keys.iter().filter_map(|k| VerifierKey::parse(k).ok()) {
                        if !witnesses.contains(&k) {
                            witnesses.push(k);
                        }
                    }
                }
            }
        }
    }
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let mut rounds: BTreeMap<u64, report::Round> = BTreeMap::new();
    for r in &records {
        match r {
            Record::Enrolment(e) => {
                names.insert(e.participant.clone(), e.name.clone());
                f.hospitals.push(e.name.clone());
            }
            Record::Contribution(c) => {
                rounds
                    .entry(c.round)
                    .or_default()
                    .contributions
                    .push(report::Contribution {
                        hospital: c.name.clone(),
                        examples: c.examples,
                        value: nano(c.value_nano),
                        value_se: c.value_se_nano.map(|s| s as f64 / 1e9),
                        reward: c.reward,
                        epsilon: c.privacy.epsilon_micro as f64 / 1e6,
                        flags: c.flags.clone(),
                    })
            }
            Record::Decline(d) => {
                rounds
                    .entry(d.round)
                    .or_default()
                    .declines
                    .push(report::Decline {
                        hospital: d.name.clone(),
                        reason: d.reason.clone(),
                    })
            }
            Record::Round(s) => {
                let round = rounds.entry(s.round).or_default();
                round.round = s.round;
                round.completed = s.status == RoundStatus::Completed;
                round.reason = s.reason.clone();
                if round.completed {
                    round.quality = vec![(
                        format!("validation {}", s.validation.metric),
                        nano(s.validation.score_after_nano),
                    )];
                }
            }
            Record::Settlement(s) => {
                let lines = s.participants.iter().map(|l| report::SettlementLine {
                    hospital: names
                        .get(&l.participant)
                        .cloned()
                        .unwrap_or_else(|| l.participant.clone()),
                    value: nano(l.value_nano),
                    se: l.se_nano as f64 / 1e9,
                    distinguishable: l.verdict
                        == fedledger_ledger::records::VERDICT_DISTINGUISHABLE,
                    payout: l.payout,
                });
                // A settlement of many participants comes in parts: one period, one line each.
                match f.settlements.iter_mut().find(|x| x.period == s.period) {
                    Some(existing) => existing.lines.extend(lines),
                    None => f.settlements.push(report::Settlement {
                        period: s.period,
                        first_round: s.rounds.first,
                        last_round: s.rounds.last,
                        pool: s.pool,
                        lines: lines.collect(),
                    }),
                }
            }
            // A validator's vector is raw material; the report shows the rounds' values.
            Record::Utilities(_) => {}
            // Hospitals the governors enrolled after the genesis.
            Record::Governance(g) => {
                for c in &g.proposal.changes {
                    if let fedledger_ledger::records::Change::Enrol {
                        participant, name, ..
                    } = c
                        && names.insert(participant.clone(), name.clone()).is_none()
                    {
                        f.hospitals.push(name.clone());
                    }
                }
            }
            Record::Federation(_) | Record::V1Federation(_) | Record::V1Round(_) => {}
        }
    }
    // Only rounds whose summary is recorded (a round's entries precede its summary).
    f.rounds = rounds.into_values().filter(|r| r.round > 0).collect();
    let mut sizes: Vec<u64> = std::fs::read_dir(dir.join("checkpoints"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    sizes.sort_unstable();
    for size in sizes {
        let bytes = read(&format!("checkpoints/{size}"))?;
        let cp = SignedCheckpoint::open(&bytes, &log_key)
            .with_context(|| format!("checkpoints/{size}"))?;
        f.checkpoints.push(report::Checkpoint {
            size: cp.checkpoint.size,
            root: b64_encode(&cp.checkpoint.root),
            cosignatures: cp.note.valid_cosigners(&witnesses).len(),
            note: cp.note.encode(),
        });
    }
    f.provenance = format!(
        "Written by fedledger-ledger verify --report from the exported ledger in {} ({} entries), \
         after verifying it: every figure below is what the ledger records. Model quality is \
         the validation score each round's summary records.",
        dir.display(),
        records.len()
    );
    f.checks = verified
        .passed
        .iter()
        .map(|p| format!("ok: {p}"))
        .chain(verified.skipped.iter().map(|s| format!("skipped: {s}")))
        .chain(
            verified
                .failures
                .iter()
                .map(|x| format!("FAILED: {}: {}", x.file, x.what)),
        )
        .collect();
    f.how_to_verify = vec![(
        format!(
            "fedledger-ledger verify {} --report auditor-report",
            dir.display()
        ),
        "Anyone with the same export gets the same checks and the same page.".into(),
    )];
    Ok(f)
}

/// Writes `out/report.html` for the export in `dir`.
pub fn write(dir: &Path, verified: &VerifyReport, out: &Path) -> anyhow::Result<PathBuf> {
    let f = federation(dir, verified)?;
    let page = report::render(&f)?;
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let path = out.join(REPORT_FILE);
    std::fs::write(&path, page).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}
