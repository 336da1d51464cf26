//! Crashes of real processes, anywhere: the coordinator binary and five participant binaries run
//! as separate processes for 20 rounds on real data (breast cancer, DP-SGD), and the coordinator
//! is killed at least ten times: aborted at each named point (after an update's blob fsync,
//! after its sled flush, inside the close's flush, after it, before and after the ledger append,
//! inside the ledger's own flush) and SIGKILLed at seeded random moments; participants are
//! aborted after their spend is durable and just before sending, and SIGKILLed at random moments
//! (mid-training, mid-upload). Everything is restarted on the same state directories.
//!
//! What must hold at the end: the run completes; every update a participant got a receipt for
//! is recorded in its round; the ledger holds exactly one summary per round; the export verifies
//! (signatures, epsilon with the real accountant); no participant spent twice for a round, and no
//! round holds two different updates of one participant.
//!
//! The seed is `FEDLEDGER_KILL_SEED` (default fixed); the schedule is printed, so a failure can be
//! replayed. The participant binary is the one `cargo test --workspace` builds beside the
//! coordinator's (built here if it is missing).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

mod common;

use chacha20::ChaCha20Rng;
use fedledger_ledger::records::{Record, validate_entry};
use rand::{RngExt, SeedableRng};

const ROUNDS: u64 = 20;
const HOSPITALS: usize = 5;
const FEDERATION: &str = "kill-test";

fn coordinator_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fedledger-coordinator"))
}

/// The participant binary beside the coordinator's (same profile, same build).
fn participant_bin() -> PathBuf {
    let path = coordinator_bin().with_file_name("fedledger-participant");
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "-p",
                "fedledger-participant",
                "--features",
                "failpoints",
                "--bin",
                "fedledger-participant",
            ])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .status()
            .expect("build the participant binary");
        assert!(status.success(), "could not build fedledger-participant");
    }
    path
}

struct Layout {
    dir: PathBuf,
    coordinator_toml: PathBuf,
    state: PathBuf,
    participants: Vec<PathBuf>,
}

/// Real data split into a validation file and five hospitals' files; keys; config files.
fn layout(dir: &Path) -> Layout {
    let files = common::binaries::breast_cancer_split(HOSPITALS + 1);
    std::fs::write(dir.join("validation.csv"), &files[HOSPITALS]).unwrap();
    let mut enrolled = String::new();
    let mut participants = Vec::new();
    let addr_placeholder = "COORDINATOR";
    for (h, data) in files.iter().take(HOSPITALS).enumerate() {
        let name = format!("h{h}");
        std::fs::write(dir.join(format!("{name}.csv")), data).unwrap();
        let key =
            fedledger_ledger::keys::generate_key_file(&dir.join(format!("{name}.key"))).unwrap();
        enrolled.push_str(&format!(
            "[[participant]]\nname = \"{name}\"\npublic_key = \"{}\"\n\n",
            fedledger_ledger::keys::public_key_hex(&key)
        ));
        let toml = dir.join(format!("{name}.toml"));
        std::fs::write(
            &toml,
            format!(
                "coordinator = \"{addr_placeholder}\"\nkey = \"{name}.key\"\ndata = \"{name}.csv\"\n\
                 state_dir = \"{name}-state\"\nreconnect_patience_secs = 300\n\n\
                 [privacy]\nepsilon_budget = 1000.0\ndelta = 1e-5\n"
            ),
        )
        .unwrap();
        participants.push(toml);
    }
    let coordinator_toml = dir.join("coordinator.toml");
    std::fs::write(
        &coordinator_toml,
        format!(
            "federation = \"{FEDERATION}\"\nlisten = \"127.0.0.1:0\"\nstate_dir = \"state\"\n\n\
             [model]\nkind = \"logreg\"\nfeatures = 30\nclasses = 2\n\n\
             [data]\nlabel_column = \"malignant\"\nvalidation = \"validation.csv\"\n\
             standardisation = \"reference\"\n\n\
             [rounds]\ntotal = {ROUNDS}\nquorum = 3\ndeadline_secs = 4\n\n\
             [training]\nlocal_epochs = 1\nbatch_size = 16\nlearning_rate = 0.1\n\
             clip_norm = 1.0\nnoise_multiplier = 1.0\ninit_seed = 1\n\n\
             [valuation]\nestimator = \"exact\"\nmax_evaluations = 0\nutility = \"neg_log_loss\"\n\
             reward_pool_per_round = 1000000\nseed = 0\ncopy_cosine = 0.999\n\n\
             [limits]\nmax_connections_per_ip = 64\n\n{enrolled}"
        ),
    )
    .unwrap();
    Layout {
        dir: dir.to_owned(),
        coordinator_toml,
        state: dir.join("state"),
        participants,
    }
}

/// A coordinator process listening on a fixed port (so participants find it again after a
/// restart); `crash_at` arms one crash point.
fn start_coordinator(l: &Layout, port: u16, crash_at: Option<&str>) -> Child {
    let text = std::fs::read_to_string(&l.coordinator_toml).unwrap();
    let text = text.replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    std::fs::write(&l.coordinator_toml, text).unwrap();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(l.dir.join("coordinator.log"))
        .unwrap();
    let mut cmd = Command::new(coordinator_bin());
    cmd.args(["serve", "--stay", "--config"])
        .arg(&l.coordinator_toml)
        .current_dir(&l.dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log);
    if let Some(c) = crash_at {
        cmd.env("FEDLEDGER_CRASH_AT", c);
    }
    cmd.spawn().expect("start the coordinator")
}

fn start_participant(l: &Layout, h: usize, port: u16, crash_at: Option<&str>) -> Child {
    let toml = &l.participants[h];
    let text = std::fs::read_to_string(toml).unwrap();
    let text = text.replace("COORDINATOR", &format!("http://127.0.0.1:{port}"));
    std::fs::write(toml, text).unwrap();
    let mut cmd = Command::new(participant_bin());
    cmd.args(["run", "--config"])
        .arg(toml)
        .current_dir(&l.dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(participant_log(l, h));
    if let Some(c) = crash_at {
        cmd.env("FEDLEDGER_CRASH_AT", c);
    }
    cmd.spawn().expect("start a participant")
}

/// The last lines of every participant's log.
fn log_tails(l: &Layout) -> String {
    let mut out = String::new();
    for h in 0..l.participants.len() {
        let text =
            std::fs::read_to_string(l.dir.join(format!("participant-{h}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        out.push_str(&format!("--- participant {h}\n"));
        // Its last panic or error, if any, then its last lines.
        if let Some(i) = lines
            .iter()
            .rposition(|l| l.contains("panicked at") || l.starts_with("Error"))
        {
            for line in &lines[i..(i + 8).min(lines.len())] {
                out.push_str(line);
                out.push('\n');
            }
            out.push_str("...\n");
        }
        for line in &lines[lines.len().saturating_sub(4)..] {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Participant `h`'s log (appended across restarts), kept for a failure's message.
fn participant_log(l: &Layout, h: usize) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(l.dir.join(format!("participant-{h}.log")))
        .unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Rounds finished, read from a copy of the coordinator's ledger (the process holds the store).
fn rounds_anchored(state: &Path) -> u64 {
    let tmp = tempfile::tempdir().unwrap();
    if copy_dir(&state.join("ledger"), &tmp.path().join("ledger")).is_err() {
        return 0;
    }
    let Ok(log) = fedledger_ledger::Log::open_existing(&tmp.path().join("ledger")) else {
        return 0;
    };
    summaries(&log).len() as u64
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()))?;
        } else {
            std::fs::copy(e.path(), to.join(e.file_name()))?;
        }
    }
    Ok(())
}

/// Round number -> how many summaries record it.
fn summaries(log: &fedledger_ledger::Log) -> BTreeMap<u64, usize> {
    let mut out = BTreeMap::new();
    for i in 0..log.size() {
        let Ok(e) = log.entry(i) else { continue };
        if let Ok(Record::Round(s)) = validate_entry(i, log.origin(), &e) {
            *out.entry(s.round).or_insert(0) += 1;
        }
    }
    out
}

#[test]
fn killed_anywhere_the_federation_completes_and_loses_nothing() {
    let seed: u64 = std::env::var("FEDLEDGER_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261201);
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let l = layout(dir.path());
    let port = free_port();
    // Named crash points first, then seeded random SIGKILLs.
    let named = [
        format!(
            "coordinator::blob::after_fsync@{}",
            rng.random_range(1..8u32)
        ),
        format!(
            "coordinator::update::after_flush@{}",
            rng.random_range(1..8u32)
        ),
        "coordinator::close::before_flush@1".to_owned(),
        "coordinator::close::after_flush@1".to_owned(),
        "coordinator::ledger::before_append@1".to_owned(),
        "coordinator::ledger::after_append@1".to_owned(),
        format!("ledger::store::before_flush@{}", rng.random_range(1..3u32)),
    ];
    let mut schedule: Vec<Option<String>> = named.iter().cloned().map(Some).collect();
    for _ in 0..4 {
        schedule.push(None); // a SIGKILL after a random delay
    }
    let participant_points = ["participant::after_spend_flush", "participant::before_send"];
    println!("kill test: seed {seed}; coordinator schedule {schedule:?}");

    let started = Instant::now();
    let mut participants: Vec<Child> = (0..HOSPITALS)
        .map(|h| start_participant(&l, h, port, None))
        .collect();
    let mut kills = 0;
    let mut participant_kills = 0;
    let mut restarts: BTreeMap<usize, u32> = BTreeMap::new();
    let mut step = 0usize;
    let mut coordinator =
        start_coordinator(&l, port, schedule.first().cloned().flatten().as_deref());
    let mut armed_since = Instant::now();
    // Short enough that the whole schedule fits in the run's 20 rounds however fast they go
    // (a run that finished before its tenth kill would prove less than the test claims).
    let mut sigkill_after = Duration::from_millis(rng.random_range(500..2500u64));
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the run did not complete in 10 minutes (seed {seed}, step {step})"
        );
        std::thread::sleep(Duration::from_millis(100));
        let done = rounds_anchored(&l.state) >= ROUNDS;
        // The coordinator: aborted at its crash point, or due for a SIGKILL.
        let status = coordinator.try_wait().unwrap();
        if let Some(st) = status {
            // Only an abort at its armed crash point may end a coordinator early.
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(
                st.signal(),
                Some(6),
                "the coordinator exited ({st}) instead of aborting at {:?}; its log:\n{}",
                schedule.get(step),
                std::fs::read_to_string(l.dir.join("coordinator.log")).unwrap_or_default()
            );
        }
        let exited = status.is_some();
        let sigkill_due = step < schedule.len()
            && schedule[step].is_none()
            && armed_since.elapsed() >= sigkill_after;
        if (exited || sigkill_due) && !done {
            if sigkill_due {
                coordinator.kill().unwrap();
            }
            coordinator.wait().unwrap();
            kills += 1;
            println!(
                "  coordinator killed ({}) after {:?}; restarting",
                schedule
                    .get(step)
                    .cloned()
                    .flatten()
                    .unwrap_or("SIGKILL".into()),
                started.elapsed()
            );
            step += 1;
            let next = schedule.get(step).cloned().flatten();
            coordinator = start_coordinator(&l, port, next.as_deref());
            armed_since = Instant::now();
            sigkill_after = Duration::from_millis(rng.random_range(500..2500u64));
        } else if exited {
            panic!("the coordinator exited after the last round without being stopped");
        }
        // Participants: restart whoever died before the end; now and then kill one.
        for (h, p) in participants.iter_mut().enumerate() {
            if let Some(status) = p.try_wait().unwrap() {
                if status.success() {
                    continue; // finished: it heard the federation is done
                }
                *restarts.entry(h).or_default() += 1;
                *p = start_participant(&l, h, port, None);
            }
        }
        if !done && participant_kills < 6 && rng.random_range(0..40u32) == 0 {
            let h = rng.random_range(0..HOSPITALS);
            if participants[h].try_wait().unwrap().is_none() {
                participant_kills += 1;
                if participant_kills % 2 == 0 {
                    participants[h].kill().unwrap();
                    participants[h].wait().unwrap();
                    println!("  participant h{h} SIGKILLed");
                    participants[h] = start_participant(&l, h, port, None);
                } else {
                    // Restart it armed: it aborts at its next spend flush or send.
                    let point = participant_points[participant_kills % 2];
                    participants[h].kill().unwrap();
                    participants[h].wait().unwrap();
                    println!("  participant h{h} restarted armed at {point}");
                    participants[h] = start_participant(&l, h, port, Some(point));
                }
            }
        }
        if done
            && participants
                .iter_mut()
                .all(|p| p.try_wait().unwrap().is_some())
        {
            break;
        }
    }
    coordinator.kill().unwrap();
    coordinator.wait().unwrap();
    println!(
        "kill test: {kills} coordinator kills, {participant_kills} participant kills, restarts {restarts:?}, {:?} in all",
        started.elapsed()
    );
    assert!(
        kills >= 10,
        "only {kills} coordinator kills; the participants' logs end:\n{}",
        log_tails(&l)
    );
    let log = std::fs::read_to_string(l.dir.join("coordinator.log")).unwrap_or_default();
    // The abort lines only: the coordinator's logs (on stderr too, with "crash points armed")
    // are in the same file.
    let reached = log
        .lines()
        .filter(|l| l.starts_with("crash point ") && l.ends_with(": aborting"))
        .count();
    assert_eq!(
        reached,
        named.len(),
        "every named crash point was reached and aborted the coordinator:\n{log}"
    );
    for (h, p) in participants.iter_mut().enumerate() {
        assert!(p.wait().unwrap().success(), "h{h} did not finish cleanly");
    }

    // The ledger: exactly one summary per round, and it verifies with the real accountant.
    let log = fedledger_ledger::Log::open_existing(&l.state.join("ledger")).unwrap();
    let per_round = summaries(&log);
    assert_eq!(
        per_round,
        (1..=ROUNDS).map(|r| (r, 1)).collect::<BTreeMap<_, _>>(),
        "one summary per round"
    );
    let export = dir.path().join("export");
    fedledger_ledger::export::export(&log, &export).unwrap();
    let report = fedledger_ledger::verify::verify_dir(
        &export,
        fedledger_ledger::verify::VerifyOptions {
            quorum: None,
            accountant: Some(&fedledger_ledger_cli::PrivacyAccountant),
            rewards: None,
        },
    );
    assert!(report.ok(), "{report}");
    // What each round recorded, by participant key.
    let mut recorded: BTreeMap<(u64, String), String> = BTreeMap::new();
    for i in 0..log.size() {
        if let Ok(Record::Contribution(c)) = validate_entry(i, log.origin(), &log.entry(i).unwrap())
        {
            let dup = recorded.insert((c.round, c.name.clone()), c.update_sha256.clone());
            assert!(
                dup.is_none(),
                "{} recorded twice in round {}",
                c.name,
                c.round
            );
        }
    }
    drop(log);
    for h in 0..HOSPITALS {
        let name = format!("h{h}");
        let store = fedledger_participant_store(&l.dir.join(format!("{name}-state")));
        // Every update it got a receipt for is in its round, with the digest it sent.
        for (round, sha) in &store.sent {
            assert_eq!(
                recorded.get(&(*round, name.clone())),
                Some(sha),
                "{name}'s acknowledged update of round {round} is not recorded as sent"
            );
        }
        // No round spent twice.
        let mut seen = BTreeSet::new();
        for round in &store.spent_rounds {
            assert!(seen.insert(*round), "{name} spent twice in round {round}");
        }
    }
}

/// What a participant's local store says it did (read as JSON from its sled store's copy).
struct ParticipantLog {
    sent: Vec<(u64, String)>,
    spent_rounds: Vec<u64>,
}

fn fedledger_participant_store(state: &Path) -> ParticipantLog {
    // The coordinator crate does not depend on the participant's; its store is sled with JSON
    // values in the trees `rounds` and `spends`.
    let db = sled::open(state.join("participant.sled")).unwrap();
    let mut sent = Vec::new();
    for kv in db.open_tree("rounds").unwrap().iter() {
        let (_, v) = kv.unwrap();
        let r: serde_json::Value = serde_json::from_slice(&v).unwrap();
        if r["action"] == "sent" {
            sent.push((
                r["round"].as_u64().unwrap(),
                r["update_sha256"].as_str().unwrap().to_owned(),
            ));
        }
    }
    let mut spent_rounds = Vec::new();
    for kv in db.open_tree("spends").unwrap().iter() {
        let (_, v) = kv.unwrap();
        let s: serde_json::Value = serde_json::from_slice(&v).unwrap();
        if s["federation"] == FEDERATION {
            spent_rounds.push(s["round"].as_u64().unwrap());
        }
    }
    ParticipantLog { sent, spent_rounds }
}
