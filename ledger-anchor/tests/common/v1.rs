//! A format v1 sample federation (ledgers written before v2), to check that `verify` still
//! verifies them.
#![allow(dead_code)]

use fedledger_ledger::Log;
use fedledger_ledger::keys;
use fedledger_ledger::note::NoteSigner;
use fedledger_ledger::records::v1::*;
use fedledger_ledger::records::{
    DigestRecord, ModelDigestsRecord, ModelSpecRecord, REWARD_RULE, RewardRecord, RoundStatus,
    TrainingRecord, ValidationRecord, ValuationRecord, WitnessesRecord, encode_canonical,
};
use ring::signature::Ed25519KeyPair;

use super::{ORIGIN, key};

pub struct Federation {
    pub log_signer: NoteSigner,
    pub participants: Vec<(String, Ed25519KeyPair)>,
    pub witnesses: Vec<NoteSigner>,
}

impl Federation {
    pub fn new(participants: usize, witnesses: usize) -> Self {
        let mut ps: Vec<(String, Ed25519KeyPair)> = (0..participants)
            .map(|i| (format!("hospital-{i}"), key(10 + i as u8)))
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
        }
    }

    pub fn genesis(&self) -> Vec<u8> {
        let g = FederationRecord {
            v: 1,
            record_type: FEDERATION_TYPE.into(),
            federation: ORIGIN.into(),
            created_at: "2026-11-25T00:00:00Z".into(),
            participants: self
                .participants
                .iter()
                .map(|(n, k)| ParticipantRecord {
                    name: n.clone(),
                    public_key: keys::public_key_hex(k),
                })
                .collect(),
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
            privacy: PrivacyRecord {
                epsilon_budget: "8".into(),
                delta: "1e-5".into(),
                clip_norm: "1.0".into(),
                noise_multiplier: "1.1".into(),
                accountant: "rdp".into(),
            },
            witnesses: WitnessesRecord {
                keys: self
                    .witnesses
                    .iter()
                    .map(|w| w.verifier_key().to_string())
                    .collect(),
                quorum: (self.witnesses.len() as u64).div_ceil(2),
            },
            reward: RewardRecord {
                rule: REWARD_RULE.into(),
                pool_per_round: 1_000_000,
                period_rounds: None,
                z_milli: None,
            },
            validation: DigestRecord {
                sha256: "ab".repeat(32),
            },
        };
        encode_canonical(&g).unwrap()
    }

    /// Round `n`'s record; the accountant used by tests gives epsilon = 0.001 * total steps.
    pub fn round(&self, n: u64) -> Vec<u8> {
        let np = self.participants.len() as u64;
        let pool = 1_000_000u64;
        let contributions = self
            .participants
            .iter()
            .enumerate()
            .map(|(i, (name, k))| {
                let update = format!("{:064x}", n * 1000 + i as u64);
                let sig = k.sign(update_signing_message(ORIGIN, n, &update).as_bytes());
                let reward = if i == 0 {
                    pool - (pool / np) * (np - 1)
                } else {
                    pool / np
                };
                ContributionRecord {
                    participant: keys::public_key_hex(k),
                    name: name.clone(),
                    examples: 500 + i as u64,
                    update_sha256: update,
                    signature: fedledger_ledger::note::b64_encode(sig.as_ref()),
                    value_nano: 1_000_000 * (i as i64 + 1),
                    reward,
                    epsilon_micro: 100_000,
                    epsilon_total_micro: 100_000 * n,
                    dp: DpRecord {
                        noise_multiplier: "1.1".into(),
                        sampling_rate: "0.01".into(),
                        steps: 100,
                        delta: "1e-5".into(),
                        accountant: "rdp".into(),
                    },
                    flags: vec![],
                }
            })
            .collect();
        let digest = |m: u64| format!("{:064x}", 0xfeed_0000 + m);
        let r = RoundRecord {
            v: 1,
            record_type: ROUND_TYPE.into(),
            federation: ORIGIN.into(),
            round: n,
            status: RoundStatus::Completed,
            reason: None,
            opened_at: "2026-11-25T00:00:01Z".into(),
            closed_at: "2026-11-25T00:00:02Z".into(),
            model: ModelDigestsRecord {
                before: digest(n - 1),
                after: digest(n),
                params: 1058,
            },
            validation: ValidationRecord {
                sha256: "ab".repeat(32),
                metric: "accuracy".into(),
                score_before_nano: 700_000_000,
                score_after_nano: 710_000_000,
            },
            valuation: ValuationRecord {
                estimator: "gtg-shapley".into(),
                seed: n,
                evaluations: 64,
                uncertainty: None,
                validators: None,
            },
            reward_pool: pool,
            contributions,
            declined: vec![],
        };
        encode_canonical(&r).unwrap()
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

    /// A log with genesis and `rounds` rounds, one checkpoint per round, all cosigned.
    pub fn build_log(&self, dir: &std::path::Path, rounds: u64) -> Log {
        let log = Log::open(dir, ORIGIN, self.log_signer.clone()).unwrap();
        log.append(&self.genesis()).unwrap();
        log.checkpoint().unwrap();
        self.cosign_latest(&log, 1_700_000_000);
        for n in 1..=rounds {
            log.append(&self.round(n)).unwrap();
            log.checkpoint().unwrap();
            self.cosign_latest(&log, 1_700_000_000 + n);
        }
        log
    }
}
