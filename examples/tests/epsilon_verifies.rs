//! The epsilon a hospital reports verifies in every federation it serves: it reports its
//! cumulative spend *in that federation* (every release it made for it, including one the
//! coordinator refused as late), its budget gate counts every federation, and an auditor's
//! `verify`, recomputing from each ledger alone with the real accountant, passes both.

mod common;

use std::time::Duration;

use common::{federation, serve};
use fedledger_ledger::records::Record;
use fedledger_ledger_cli::PrivacyAccountant;
use fedledger_participant::{
    LocalTrainer, UpdateSource, Work, client::Task, store::SpendRecord, work::SourceError,
};

/// The hospital's real trainer, slow in one round: it answers after that round's deadline, so
/// its update (whose privacy was spent) is refused as late.
struct LateIn {
    inner: LocalTrainer,
    round: u64,
}

impl UpdateSource for LateIn {
    fn work(&mut self, task: &Task, spent: &[SpendRecord]) -> Result<Work, SourceError> {
        let w = self.inner.work(task, spent)?;
        if task.header.round == self.round {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64;
            let wait = task.header.deadline_unix_ms.saturating_sub(now) + 1500;
            std::thread::sleep(Duration::from_millis(wait));
        }
        Ok(w)
    }
}

fn verify_ledger(log: &fedledger_ledger::Log) -> fedledger_ledger::verify::VerifyReport {
    let out = tempfile::tempdir().unwrap();
    fedledger_ledger::export::export(log, out.path()).unwrap();
    fedledger_ledger::verify::verify_dir(
        out.path(),
        fedledger_ledger::verify::VerifyOptions {
            quorum: None,
            accountant: Some(&PrivacyAccountant),
            rewards: None,
        },
    )
}

/// h0's recorded cumulative epsilon (micro) in each of its contributions, in ledger order.
fn recorded(log: &fedledger_ledger::Log, who: &str) -> Vec<u64> {
    (0..log.size())
        .filter_map(|i| {
            match fedledger_ledger::records::validate_entry(i, log.origin(), &log.entry(i).unwrap())
                .unwrap()
            {
                Record::Contribution(c) if c.name == who => Some(c.privacy.epsilon_micro),
                _ => None,
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_hospital_verifies_in_two_federations_with_a_refused_update() {
    // Federation A: two rounds.
    let mut a = federation(2, 2, Some((8.0, 1.0)));
    a.coordinator.federation = "e2e-a".into();
    let (running_a, cfgs_a) = serve(&a).await;
    let agents: Vec<_> = cfgs_a
        .iter()
        .cloned()
        .map(|p| tokio::spawn(fedledger_participant::run(p, false)))
        .collect();
    for agent in agents {
        assert_eq!(agent.await.unwrap().unwrap().rounds_sent, vec![1, 2]);
    }
    let report_a = verify_ledger(running_a.coordinator.ledger());
    let recorded_a = recorded(running_a.coordinator.ledger(), "h0");
    running_a.shutdown().await.unwrap();
    assert!(report_a.ok(), "federation A:\n{report_a}");
    assert_eq!(recorded_a.len(), 2);

    // Federation B: the same hospital, the same key and state directory; its round-1 update is
    // refused as late (the round closes at its deadline with h1's update alone).
    let mut b = federation(2, 2, Some((8.0, 1.0)));
    b.coordinator.federation = "e2e-b".into();
    b.coordinator.rounds.quorum = 1;
    b.coordinator.rounds.deadline_secs = 2;
    b.participants[0].key = a.participants[0].key.clone();
    b.participants[0].state_dir = a.participants[0].state_dir.clone();
    b.coordinator.participants[0].public_key = a.coordinator.participants[0].public_key.clone();
    let (running_b, cfgs_b) = serve(&b).await;
    let h0 = cfgs_b[0].clone();
    let late = LateIn {
        inner: LocalTrainer::new(
            h0.data.clone().unwrap(),
            h0.label_column.clone(),
            h0.privacy.clone(),
        ),
        round: 1,
    };
    let slow = tokio::spawn(fedledger_participant::run_with_source(
        h0.clone(),
        false,
        Box::new(late),
    ));
    let fast = tokio::spawn(fedledger_participant::run(cfgs_b[1].clone(), false));
    let slow = slow.await.unwrap().unwrap();
    fast.await.unwrap().unwrap();
    assert_eq!(
        slow.rounds_sent,
        vec![2],
        "round 1's update was refused as late"
    );
    let o1 = running_b.coordinator.outcome(1).unwrap();
    assert!(o1.contributions.iter().all(|c| c.name != "h0"));
    let report_b = verify_ledger(running_b.coordinator.ledger());
    let recorded_b = recorded(running_b.coordinator.ledger(), "h0");
    running_b.shutdown().await.unwrap();
    assert!(report_b.ok(), "federation B:\n{report_b}");

    // The store holds four releases: two for A, two for B (one refused).
    let store = fedledger_participant::store::LocalStore::open(&h0.state_dir).unwrap();
    let spends = store.spends().unwrap();
    assert_eq!(spends.len(), 4);
    let in_b: Vec<_> = spends.iter().filter(|s| s.federation == "e2e-b").collect();
    assert_eq!(in_b.len(), 2);
    // B's record counts B's two releases (the refused one included), not A's.
    let one_release = in_b[0].spend.epsilon_total;
    assert_eq!(recorded_b.len(), 1);
    let b_reported = recorded_b[0] as f64 / 1e6;
    assert!(
        b_reported > one_release * 1.2,
        "the refused release is counted: {b_reported} vs one release {one_release}"
    );
    assert_eq!(
        recorded_b[0],
        fedledger_ledger::records::micro_up(in_b[1].spend.epsilon_total)
    );
    // ... and the same hospital's lifetime spend, which its budget gate counts, is larger.
    let lifetime = fedledger_participant::dp::cumulative_epsilon(
        &spends,
        None,
        in_b[0].spend.delta,
        fedledger_privacy::AccountantKind::Rdp,
    )
    .unwrap();
    assert!(lifetime > b_reported + 1e-6, "{lifetime} vs {b_reported}");
}
