//! Validators, with real processes: the coordinator binary, four hospitals and three validators
//! (`fedledger-participant` with a `[validator]` section and no training data) on loopback, on
//! real data (breast cancer split into the coordinator's validation file, four hospitals' rows
//! and three disjoint holdouts). One hospital's labels are all flipped and the quality rule is
//! on.
//!
//! What must hold: every process ends cleanly; each round's game was announced in the task
//! header before any upload (the seed the summary records is the one every task carried);
//! each completed round records the three validators' signed vectors and their consensus; the
//! ledger export verifies with `fedledger-ledger verify` (which recomputes consensus values,
//! distances, validators' pay and the quality rule's verdicts from the vectors); and
//! `fedledger-coordinator replay` recomputes every round's model from the kept updates alone.

mod common;

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::binaries::{
    Watched, breast_cancer_split, coordinator_bin, free_port, ledger_bin, participant_bin,
};
use fedledger_ledger::{
    keys,
    records::{FLAG_EXCLUDED_BY_QUALITY, Record, validate_entry},
};

const FEDERATION: &str = "validators-test";
const ROUNDS: u64 = 3;
const HOSPITALS: usize = 4;
const VALIDATORS: usize = 3;

/// Every label of a CSV whose last column is the 0/1 label, flipped.
fn flip_labels(csv: &str) -> String {
    let mut out = String::new();
    for (i, line) in csv.lines().enumerate() {
        if i == 0 {
            out.push_str(line);
        } else {
            let (row, label) = line.rsplit_once(',').unwrap();
            out.push_str(row);
            out.push(',');
            out.push_str(if label.trim() == "0" { "1" } else { "0" });
        }
        out.push('\n');
    }
    out
}

struct Agent {
    name: String,
    config: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Agent {
    fn start(&mut self) {
        self.child = Some(
            Command::new(participant_bin())
                .args(["run", "--config"])
                .arg(&self.config)
                .env("RUST_LOG", "info")
                .stdout(std::fs::File::create(self.dir.join(format!("{}.out", self.name))).unwrap())
                .stderr(std::fs::File::create(self.dir.join(format!("{}.err", self.name))).unwrap())
                .spawn()
                .expect("start fedledger-participant"),
        );
    }

    fn output(&self) -> String {
        let read = |ext: &str| {
            std::fs::read_to_string(self.dir.join(format!("{}.{ext}", self.name)))
                .unwrap_or_default()
        };
        format!(
            "--- {} stdout:\n{}\n--- stderr:\n{}",
            self.name,
            read("out"),
            read("err")
        )
    }

    async fn wait(&mut self, patience: Duration) -> i32 {
        let child = self.child.as_mut().expect("started");
        let until = Instant::now() + patience;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < until,
                "{} did not exit in time\n{}",
                self.name,
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Runs a binary to completion; its stdout, or a panic with both outputs.
fn run(bin: &Path, args: &[&OsStr], dir: &Path) -> String {
    let out = Command::new(bin)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run a binary");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{} {args:?} failed:\n{stdout}\n{}",
        bin.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_validators_value_every_round_and_the_ledger_verifies_and_replays() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let files = breast_cancer_split(1 + HOSPITALS + VALIDATORS);
    std::fs::write(dir.join("validation.csv"), &files[0]).unwrap();
    let port = free_port();
    let mut coordinator = format!(
        "federation = \"{FEDERATION}\"\nlisten = \"127.0.0.1:{port}\"\nstate_dir = \"state\"\n\
         [model]\nkind = \"logreg\"\nfeatures = 30\nclasses = 2\n\
         [data]\nlabel_column = \"malignant\"\nvalidation = \"validation.csv\"\n\
         standardisation = \"reference\"\n\
         [rounds]\ntotal = {ROUNDS}\nquorum = 3\ndeadline_secs = 60\ngrace_secs = 10\n\
         [training]\nlocal_epochs = 1\nbatch_size = 16\nlearning_rate = 0.5\nclip_norm = 1.0\n\
         noise_multiplier = 0.8\n\
         [valuation]\nestimator = \"exact\"\nbootstrap_resamples = 0\nreward_pool_per_round = 1000\n\
         [rewards]\nrule = \"per-round\"\n\
         [limits]\nmax_connections_per_ip = 64\n\
         [validators]\ndeadline_secs = 60\nquorum = 2\nexact_max = 8\npool_per_round = 300\n\
         max_distance_milli = 500\nquality_k = 2\n"
    );
    let mut agents = Vec::new();
    for h in 0..HOSPITALS {
        let name = format!("h{h}");
        let data = if h == 0 {
            flip_labels(&files[1 + h])
        } else {
            files[1 + h].clone()
        };
        std::fs::write(dir.join(format!("{name}.csv")), data).unwrap();
        let key = keys::generate_key_file(&dir.join(format!("{name}.key"))).unwrap();
        coordinator.push_str(&format!(
            "[[participant]]\nname = \"{name}\"\npublic_key = \"{}\"\n",
            keys::public_key_hex(&key)
        ));
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "coordinator = \"http://127.0.0.1:{port}\"\nkey = \"{name}.key\"\n\
                 data = \"{name}.csv\"\nstate_dir = \"{name}-state\"\nreconnect_patience_secs = 30\n\
                 [privacy]\nepsilon_budget = 100.0\n"
            ),
        )
        .unwrap();
        agents.push(Agent {
            name,
            config,
            dir: dir.to_owned(),
            child: None,
        });
    }
    for v in 0..VALIDATORS {
        let name = format!("lab{v}");
        std::fs::write(dir.join(format!("{name}.csv")), &files[1 + HOSPITALS + v]).unwrap();
        let key = keys::generate_key_file(&dir.join(format!("{name}.key"))).unwrap();
        std::fs::write(dir.join(format!("{name}.pub")), keys::public_key_hex(&key)).unwrap();
        coordinator.push_str(&format!(
            "[[validator]]\nname = \"{name}\"\npublic_key_file = \"{name}.pub\"\n"
        ));
        let config = dir.join(format!("{name}.toml"));
        // A validator only: no training data, its holdout in [validator].
        std::fs::write(
            &config,
            format!(
                "coordinator = \"http://127.0.0.1:{port}\"\nkey = \"{name}.key\"\n\
                 state_dir = \"{name}-state\"\nreconnect_patience_secs = 30\n\
                 [validator]\ndata = \"{name}.csv\"\n"
            ),
        )
        .unwrap();
        agents.push(Agent {
            name,
            config,
            dir: dir.to_owned(),
            child: None,
        });
    }
    let config = dir.join("coordinator.toml");
    std::fs::write(&config, coordinator).unwrap();
    let c = Watched::spawn_logged(
        coordinator_bin(),
        &[
            OsStr::new("serve"),
            OsStr::new("--config"),
            config.as_os_str(),
        ],
        dir.join("coordinator.stderr"),
    );
    c.line(Duration::from_secs(60), |l| l.starts_with("listening on "))
        .await;
    for a in &mut agents {
        a.start();
    }
    for a in &mut agents {
        let code = a.wait(Duration::from_secs(300)).await;
        assert_eq!(code, 0, "{} exited with {code}\n{}", a.name, a.output());
    }
    let out = agents[HOSPITALS].output();
    assert!(
        out.contains(&format!(
            "validated {ROUNDS} round(s) of federation {FEDERATION}"
        )),
        "{out}"
    );
    drop(c);

    // The ledger: every round valued by the three validators' consensus.
    let export = dir.join("export");
    run(
        ledger_bin(),
        &[
            OsStr::new("export"),
            OsStr::new("--store"),
            dir.join("state/ledger").as_os_str(),
            OsStr::new("--out"),
            export.as_os_str(),
        ],
        dir,
    );
    let verified = run(
        ledger_bin(),
        &[OsStr::new("verify"), export.as_os_str()],
        dir,
    );
    println!("{verified}");
    assert!(
        verified.contains("validators: 3 round(s) with validators (0 fell back"),
        "{verified}"
    );
    assert!(
        verified.contains("consensus recomputed in 3 round(s)"),
        "{verified}"
    );
    let log = fedledger_ledger::Log::open_existing(&dir.join("state/ledger")).unwrap();
    let mut vectors = 0;
    let mut excluded = 0;
    for i in 0..log.size() {
        match validate_entry(i, FEDERATION, &log.entry(i).unwrap()).unwrap() {
            Record::Utilities(u) => {
                vectors += 1;
                assert_eq!(u.count, 16, "an exact game of 4 hospitals");
            }
            Record::Contribution(c) => {
                excluded += usize::from(c.flags.iter().any(|f| f == FLAG_EXCLUDED_BY_QUALITY));
            }
            Record::Round(s) => {
                let v = s.valuation.validators.expect("valued by validators");
                assert!(v.fallback.is_none(), "{v:?}");
                assert_eq!(v.lines.len(), VALIDATORS);
                assert_eq!(v.quality_k, Some(2));
                // The validators near consensus share the pool.
                assert_eq!(v.lines.iter().map(|l| l.reward).sum::<u64>(), 300);
                assert_eq!(s.valuation.estimator, "validators-median");
            }
            _ => {}
        }
    }
    assert_eq!(vectors, VALIDATORS * ROUNDS as usize);
    println!("updates left out by the quality rule over {ROUNDS} rounds: {excluded}");

    // Every round's model is the aggregate of its kept updates; values and pay follow from the
    // recorded vectors.
    for round in 1..=ROUNDS {
        let replayed = run(
            coordinator_bin(),
            &[
                OsStr::new("replay"),
                OsStr::new("--config"),
                config.as_os_str(),
                OsStr::new("--round"),
                OsStr::new(&round.to_string()),
            ],
            dir,
        );
        println!("{replayed}");
        assert!(replayed.contains("aggregate hashes to"), "{replayed}");
        assert!(!replayed.contains("differ"), "{replayed}");
        assert!(
            replayed.contains("value_nano (validators' consensus) of h1"),
            "{replayed}"
        );
    }
}
