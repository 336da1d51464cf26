//! A realistic sample federation for tests and benches, in the current record format (v2): real
//! participant keys and signatures over everything they claim, one entry per contribution and
//! decline, a summary per round.
#![allow(dead_code)]

pub mod v1;

use fedledger_ledger::Log;
use fedledger_ledger::keys;
use fedledger_ledger::note::NoteSigner;
use fedledger_ledger::records::*;
use ring::signature::Ed25519KeyPair;

pub const ORIGIN: &str = "fedledger.test/federation-1";

pub fn key(seed: u8) -> Ed25519KeyPair {
    Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap()
}

/// Participant `i`'s key (any number of participants).
pub fn participant_key(i: usize) -> Ed25519KeyPair {
    let mut seed = [0x5a; 32];
    seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
    Ed25519KeyPair::from_seed_unchecked(&seed).unwrap()
}

pub struct Federation {
    pub log_signer: NoteSigner,
    pub participants: Vec<(String, Ed25519KeyPair)>,
    pub witnesses: Vec<NoteSigner>,
    /// The genesis reward rule ([`REWARD_RULE`] unless changed): under
    /// [`REWARD_RULE_SETTLED`] rounds pay nothing and values carry standard errors.
    pub reward: RewardRecord,
}

/// Epsilon of a release in this sample: 0.001 per step (the tests' linear accountant), 100
/// steps per release.
pub const EPSILON_PER_RELEASE: f64 = 0.1;

impl Federation {
    pub fn new(participants: usize, witnesses: usize) -> Self {
        let mut ps: Vec<(String, Ed25519KeyPair)> = (0..participants)
            .map(|i| (format!("hospital-{i}"), participant_key(i)))
            .collect();
        ps.sort_by_key(|(_, k)| keys::public_key_hex(k));
        Self {
            log_signer: NoteSigner::log(ORIGIN, key(1)).unwrap(),
            participants: ps,
            witnesses: (0..witnesses)
                .map(|i| {
                    NoteSigner::witness(&format!("witness-{i}.test"), key(100 + i as u8)).unwrap()
                })
                .collect(),
            reward: RewardRecord {
                rule: REWARD_RULE.into(),
                pool_per_round: 1_000_000,
                period_rounds: None,
                z_milli: None,
            },
        }
    }

    /// Under the settled rule.
    pub fn settled(&self) -> bool {
        self.reward.is_settled()
    }

    /// The genesis: the federation entry, then one enrolment per participant.
    pub fn genesis(&self) -> Vec<Vec<u8>> {
        let g = FederationEntry {
            v: RECORD_VERSION,
            record_type: FEDERATION_TYPE.into(),
            federation: ORIGIN.into(),
            created_at: "2026-12-01T00:00:00Z".into(),
            model: ModelSpecRecord {
                kind: "mlp".into(),
                features: 30,
                classes: 2,
                hidden: vec![32],
                params: 1058,
            },
            training: TrainingRecord {
                rounds: 1000,
                quorum: 1,
                local_epochs: 1,
                batch_size: 32,
                learning_rate: "0.05".into(),
                aggregation: "fedavg".into(),
            },
            privacy: PrivacyPlan {
                epsilon_budget: "8".into(),
                delta: "0.00001".into(),
                clip_norm: "1".into(),
                noise_multiplier: "1.1".into(),
                accountants: vec!["rdp".into()],
            },
            witnesses: WitnessesRecord {
                keys: self
                    .witnesses
                    .iter()
                    .map(|w| w.verifier_key().to_string())
                    .collect(),
                quorum: (self.witnesses.len() as u64).div_ceil(2),
            },
            reward: self.reward.clone(),
            validation: DigestRecord {
                sha256: "ab".repeat(32),
            },
            governance: GovernanceRecord::default(),
            schema: None,
            enrolments: self.participants.len() as u64,
        };
        let mut out = vec![encode_canonical(&g).unwrap()];
        for (name, k) in &self.participants {
            out.push(
                encode_canonical(&EnrolmentEntry {
                    v: RECORD_VERSION,
                    record_type: ENROLMENT_TYPE.into(),
                    federation: ORIGIN.into(),
                    participant: keys::public_key_hex(k),
                    name: name.clone(),
                    role: ROLE_CONTRIBUTOR.into(),
                })
                .unwrap(),
            );
        }
        out
    }

    /// Who declines round `n`: the last participant, in even rounds (when there are two or
    /// more participants).
    pub fn decliner(&self, n: u64) -> Option<usize> {
        (n.is_multiple_of(2) && self.participants.len() > 1).then(|| self.participants.len() - 1)
    }

    /// Releases participant `i` made before round `n` (one per round it contributed to).
    fn releases_before(&self, i: usize, n: u64) -> u64 {
        (1..n).filter(|&m| self.decliner(m) != Some(i)).count() as u64
    }

    /// Participant `i`'s contribution entry of round `n`, signed.
    pub fn contribution(&self, n: u64, i: usize, reward: u64) -> ContributionEntry {
        let (name, k) = &self.participants[i];
        let released = self.releases_before(i, n) + 1;
        let privacy = PrivacyObject::conservative("rdp", 1.1, 0.01, 100, 1e-5)
            .with_epsilon(EPSILON_PER_RELEASE * released as f64, EPSILON_PER_RELEASE);
        let mut c = ContributionEntry {
            v: RECORD_VERSION,
            record_type: CONTRIBUTION_TYPE.into(),
            federation: ORIGIN.into(),
            round: n,
            participant: keys::public_key_hex(k),
            name: name.clone(),
            examples: 500 + i as u64,
            update_sha256: format!("{:064x}", n * 1000 + i as u64),
            privacy,
            signature: String::new(),
            value_nano: 1_000_000 * (i as i64 + 1),
            value_se_nano: self.settled().then_some(400_000 * (i as u64 + 1)),
            reward,
            flags: vec![],
        };
        c.signature =
            fedledger_ledger::note::b64_encode(k.sign(c.signing_message().as_bytes()).as_ref());
        c
    }

    /// Round `n`'s entries when the log holds `first` entries before them: the contributions,
    /// a decline in even rounds, then the summary.
    pub fn round(&self, n: u64, first: u64) -> Vec<Vec<u8>> {
        let pool = if self.settled() { 0 } else { 1_000_000u64 };
        let contributors: Vec<usize> = (0..self.participants.len())
            .filter(|&i| self.decliner(n) != Some(i))
            .collect();
        let np = contributors.len() as u64;
        let mut out = Vec::new();
        for (j, &i) in contributors.iter().enumerate() {
            let reward = if pool == 0 {
                0
            } else if j == 0 {
                pool - (pool / np) * (np - 1)
            } else {
                pool / np
            };
            out.push(encode_canonical(&self.contribution(n, i, reward)).unwrap());
        }
        if let Some(i) = self.decliner(n) {
            let (name, k) = &self.participants[i];
            let mut d = DeclineEntry {
                v: RECORD_VERSION,
                record_type: DECLINE_TYPE.into(),
                federation: ORIGIN.into(),
                round: n,
                participant: keys::public_key_hex(k),
                name: name.clone(),
                reason: "privacy budget exhausted".into(),
                signature: String::new(),
            };
            d.signature =
                fedledger_ledger::note::b64_encode(k.sign(d.signing_message().as_bytes()).as_ref());
            out.push(encode_canonical(&d).unwrap());
        }
        let digest = |m: u64| format!("{:064x}", 0xfeed_0000 + m);
        let s = RoundSummary {
            v: RECORD_VERSION,
            record_type: ROUND_TYPE.into(),
            federation: ORIGIN.into(),
            round: n,
            status: RoundStatus::Completed,
            reason: None,
            opened_at: "2026-12-01T00:00:01Z".into(),
            closed_at: "2026-12-01T00:00:02Z".into(),
            model: ModelDigestsRecord {
                before: digest(n - 1),
                after: digest(n),
                params: 1058,
            },
            validation: ValidationRecord {
                sha256: "ab".repeat(32),
                metric: "neg_log_loss".into(),
                score_before_nano: -700_000_000,
                // Under the settled rule every third round makes the model worse.
                score_after_nano: if self.settled() && n.is_multiple_of(3) {
                    -710_000_000
                } else {
                    -690_000_000
                },
            },
            valuation: ValuationRecord {
                estimator: "exact".into(),
                seed: n,
                evaluations: 8,
                uncertainty: self.settled().then(|| UncertaintyRecord {
                    method: UNCERTAINTY_BOOTSTRAP.into(),
                    resamples: 200,
                }),
                validators: None,
            },
            reward_pool: pool,
            server_dp: None,
            entries: EntryRange {
                first,
                count: out.len() as u64,
            },
            rules_sha256: None,
        };
        out.push(encode_canonical(&s).unwrap());
        out
    }

    /// Cosigns the log's latest checkpoint with every witness.
    pub fn cosign_latest(&self, log: &Log, timestamp: u64) {
        let cp = log.latest_checkpoint().unwrap().unwrap();
        for w in &self.witnesses {
            log.add_cosignature(
                cp.checkpoint.size,
                w.verifier_key(),
                w.cosign(&cp.note.text, timestamp),
            )
            .unwrap();
        }
    }

    /// A log with the genesis and `rounds` rounds, each appended in one batch with one
    /// checkpoint, all cosigned.
    pub fn build_log(&self, dir: &std::path::Path, rounds: u64) -> Log {
        let log = Log::open(dir, ORIGIN, self.log_signer.clone()).unwrap();
        log.append_batch(&self.genesis()).unwrap();
        log.checkpoint().unwrap();
        self.cosign_latest(&log, 1_700_000_000);
        for n in 1..=rounds {
            log.append_batch(&self.round(n, log.size())).unwrap();
            log.checkpoint().unwrap();
            self.cosign_latest(&log, 1_700_000_000 + n);
        }
        log
    }

    /// The first `count` entries after the genesis, rounds one after another (the last round
    /// may be cut short): for benchmarks that append or sync a given number of entries.
    pub fn entries_after_genesis(&self, count: u64) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut index = self.genesis().len() as u64;
        let mut n = 1;
        while (out.len() as u64) < count {
            let batch = self.round(n, index);
            index += batch.len() as u64;
            out.extend(batch);
            n += 1;
        }
        out.truncate(count as usize);
        out
    }

    /// The genesis with `validators` (keys sorted) enrolled after the contributors.
    pub fn genesis_with_validators(&self, validators: &[Ed25519KeyPair]) -> Vec<Vec<u8>> {
        let mut genesis = self.genesis();
        let mut g: FederationEntry = serde_json::from_slice(&genesis[0]).unwrap();
        g.enrolments += validators.len() as u64;
        genesis[0] = encode_canonical(&g).unwrap();
        for (j, k) in validators.iter().enumerate() {
            genesis.push(
                encode_canonical(&EnrolmentEntry {
                    v: RECORD_VERSION,
                    record_type: ENROLMENT_TYPE.into(),
                    federation: ORIGIN.into(),
                    participant: keys::public_key_hex(k),
                    name: format!("lab-{j}"),
                    role: ROLE_VALIDATOR.into(),
                })
                .unwrap(),
            );
        }
        genesis
    }

    /// Round `n` valued by `validators` (keys sorted) when the log holds `first` entries
    /// before it: [`Self::round`]'s contributions and decline, then each validator's signed
    /// utility vector over the exact design of the round's contributors (one part while the
    /// design has at most [`MAX_UTILITIES_PER_PART`] coalitions), then the summary with its
    /// validators record. Every entry passes [`validate_entry`]; the values are not the
    /// consensus of the vectors (what `verify` recomputes), only their shape is real.
    pub fn validated_round(
        &self,
        n: u64,
        first: u64,
        validators: &[Ed25519KeyPair],
    ) -> Vec<Vec<u8>> {
        let mut batch = self.round(n, first);
        let mut summary: RoundSummary = serde_json::from_slice(&batch.pop().unwrap()).unwrap();
        let players = (0..self.participants.len())
            .filter(|&i| self.decliner(n) != Some(i))
            .count();
        let coalitions = 1u64 << players;
        let coalitions_sha256 = format!("{:064x}", 0xc0a1_0000 + players as u64);
        let pool = 90_001u64;
        let mut lines = Vec::new();
        for (j, k) in validators.iter().enumerate() {
            let utilities: Vec<i64> = (0..coalitions)
                .map(|mask| {
                    let gain: i64 = (0..players)
                        .filter(|i| mask & (1 << i) != 0)
                        .map(|i| 1_000_000 * (i as i64 + 1) + 7_919 * n as i64)
                        .sum();
                    -600_000_000 - 7_000_000 * j as i64 + gain
                })
                .collect();
            let validator = keys::public_key_hex(k);
            let message = utilities_signing_message(
                ORIGIN,
                n,
                &coalitions_sha256,
                &utility_vector_sha256(&utilities),
            );
            let signature = fedledger_ledger::note::b64_encode(k.sign(message.as_bytes()).as_ref());
            let parts = UtilitiesClaim {
                federation: ORIGIN,
                round: n,
                validator: &validator,
                name: &format!("lab-{j}"),
                coalitions_sha256: &coalitions_sha256,
                utilities: &utilities,
                signature: &signature,
            }
            .entries();
            batch.extend(parts.iter().map(|p| encode_canonical(p).unwrap()));
            let reward = if j == 0 {
                pool - (pool / validators.len() as u64) * (validators.len() as u64 - 1)
            } else {
                pool / validators.len() as u64
            };
            lines.push(ValidatorLine {
                validator,
                distance_milli: 10 * j as u64,
                reward,
            });
        }
        summary.valuation.validators = Some(ValidatorsRecord {
            seed: n,
            exact_max: 12,
            permutations: 0,
            coalitions,
            coalitions_sha256,
            max_distance_milli: 500,
            quality_k: Some(2),
            pool,
            fallback: None,
            lines,
        });
        summary.valuation.evaluations = coalitions * validators.len() as u64;
        summary.entries = EntryRange {
            first,
            count: batch.len() as u64,
        };
        batch.push(encode_canonical(&summary).unwrap());
        batch
    }

    /// The first `count` entries after [`Self::genesis_with_validators`], rounds valued by
    /// `validators` one after another (the last round may be cut short).
    pub fn validated_entries_after_genesis(
        &self,
        count: u64,
        validators: &[Ed25519KeyPair],
    ) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut index = self.genesis_with_validators(validators).len() as u64;
        let mut n = 1;
        while (out.len() as u64) < count {
            let batch = self.validated_round(n, index, validators);
            index += batch.len() as u64;
            out.extend(batch);
            n += 1;
        }
        out.truncate(count as usize);
        out
    }

    /// Entries in a log of `rounds` rounds.
    pub fn entries(&self, rounds: u64) -> u64 {
        let p = self.participants.len() as u64;
        1 + p + rounds * (p + 1)
    }
}

/// True when a failure of `r` names `file` (as its file, or in its message).
pub fn names(r: &fedledger_ledger::verify::VerifyReport, file: &str) -> bool {
    r.failures.iter().any(|f| {
        f.file == file
            || f.what.contains(&format!("{file} "))
            || f.what.contains(&format!("{file}:"))
    })
}

/// Flip one bit at `per_file` evenly spread bytes of every file of an export, one at a time,
/// and require `verify` to fail naming the file (the log key breaks everything and is not
/// named); restores every file. Returns how many changes were tried.
pub fn tamper_every_file(
    out: &std::path::Path,
    per_file: usize,
    verify: impl Fn(&std::path::Path) -> fedledger_ledger::verify::VerifyReport,
) -> usize {
    let mut files = vec![
        "checkpoint".to_owned(),
        "log.vkey".to_owned(),
        "witnesses.vkeys".to_owned(),
    ];
    for sub in ["entries", "proofs", "checkpoints"] {
        for e in std::fs::read_dir(out.join(sub)).unwrap() {
            files.push(format!(
                "{sub}/{}",
                e.unwrap().file_name().to_string_lossy()
            ));
        }
    }
    let mut checked = 0;
    for rel in &files {
        let path = out.join(rel);
        let original = std::fs::read(&path).unwrap();
        let step = (original.len() / per_file).max(1);
        for i in (0..original.len()).step_by(step) {
            let mut bad = original.clone();
            bad[i] ^= 0x01;
            std::fs::write(&path, &bad).unwrap();
            let r = verify(out);
            assert!(!r.ok(), "{rel} byte {i} changed yet verify passed");
            if rel != "log.vkey" {
                assert!(names(&r, rel), "{rel} byte {i} not named:\n{r}");
            }
            checked += 1;
        }
        std::fs::write(&path, &original).unwrap();
    }
    assert!(verify(out).ok());
    checked
}

/// The genesis of `fed` with `governors` (keys sorted) and threshold `k`: the entries and the
/// federation entry.
pub fn governed_genesis(
    fed: &Federation,
    governors: &[Ed25519KeyPair],
    k: u64,
) -> (Vec<Vec<u8>>, FederationEntry) {
    let mut genesis = fed.genesis();
    let mut g: FederationEntry = serde_json::from_slice(&genesis[0]).unwrap();
    let mut keys_hex: Vec<String> = governors.iter().map(keys::public_key_hex).collect();
    keys_hex.sort();
    g.governance = GovernanceRecord {
        governors: keys_hex,
        threshold: k,
    };
    genesis[0] = encode_canonical(&g).unwrap();
    (genesis, g)
}

/// A governance entry of `changes` from `from_round`, chained from `previous` and signed by
/// `signers`: its bytes and record.
pub fn governance_entry(
    previous: &str,
    from_round: u64,
    changes: Vec<Change>,
    signers: &[&Ed25519KeyPair],
) -> (Vec<u8>, GovernanceEntry) {
    let p = Proposal {
        record_type: PROPOSAL_TYPE.into(),
        federation: ORIGIN.into(),
        previous: previous.to_owned(),
        from_round,
        expires_at: "2099-01-01T00:00:00Z".into(),
        changes,
    };
    let msg = p.signing_message().unwrap();
    let sigs = signers
        .iter()
        .map(|k| GovernorSignature {
            governor: keys::public_key_hex(k),
            signature: fedledger_ledger::note::b64_encode(k.sign(msg.as_bytes()).as_ref()),
        })
        .collect();
    let e = GovernanceEntry::new(p, sigs);
    (encode_canonical(&e).unwrap(), e)
}

/// The governance state of `genesis` (its federation entry `g`, then its enrolments): the
/// verifier's own reading of the rules, to record honest digests in the summaries.
pub fn governance_of(genesis: &[Vec<u8>], g: &FederationEntry) -> Governance {
    let enrolments: Vec<EnrolmentEntry> = genesis[1..]
        .iter()
        .map(|e| serde_json::from_slice(e).unwrap())
        .collect();
    let refs: Vec<&EnrolmentEntry> = enrolments.iter().collect();
    Governance::new(&genesis[0], g, &refs)
}

/// Round `n` of `fed` when the log holds `first` entries before it, its summary recording the
/// digest of the rules `gov` puts in force for it.
pub fn governed_round(fed: &Federation, n: u64, first: u64, gov: &Governance) -> Vec<Vec<u8>> {
    let mut batch = fed.round(n, first);
    let last = batch.len() - 1;
    let mut s: RoundSummary = serde_json::from_slice(&batch[last]).unwrap();
    s.rules_sha256 = Some(gov.rules_for(n).sha256_hex());
    batch[last] = encode_canonical(&s).unwrap();
    batch
}
