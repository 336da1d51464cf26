//! The README's quickstart is a contract: its commands and config files, taken from the README
//! itself, run here as separate processes on loopback (a coordinator, three hospitals, an
//! auditor's replica), ending with an export and `verify` of both copies of the ledger. A
//! README command that changes changes this run.
//!
//! The commands are run by a small interpreter of the README's shell: `cd`, `export` and
//! comments are skipped (the binaries are this build's); `cmd > file` and `cmd &` redirect and
//! start in the background as a shell does, `wait %N`, `kill -INT %N` likewise; `sleep` after a
//! background start waits until that process says it is `listening on` instead of for a time.
//! The README's ports are replaced by free ones.

mod common;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::binaries::{free_port, ledger_bin, participant_bin};

const README: &str = include_str!("../../README.md");
const QUICKSTART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/quickstart");

/// The README's fenced blocks of `lang` whose first line starts with `prefix`.
fn blocks(lang: &str, prefix: &str) -> Vec<String> {
    README
        .split(&format!("```{lang}\n"))
        .skip(1)
        .map(|b| b.split("```").next().expect("a closed block").to_owned())
        .filter(|b| b.starts_with(prefix))
        .collect()
}

fn bin(program: &str) -> PathBuf {
    match program {
        "fedledger-coordinator" => PathBuf::from(env!("CARGO_BIN_EXE_fedledger-coordinator")),
        "fedledger-participant" => participant_bin().to_owned(),
        "fedledger-ledger" => ledger_bin().to_owned(),
        other => panic!("the quickstart runs {other:?}, which this test does not know"),
    }
}

/// A process the script started, and where its output goes.
struct Job {
    line: String,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Job {
    fn output(&self) -> String {
        format!(
            "$ {}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.line,
            std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }

    /// Waits for the process to exit; panics unless it succeeds.
    fn succeeds(&mut self, patience: Duration) {
        let until = Instant::now() + patience;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "failed ({status}):\n{}", self.output());
                return;
            }
            assert!(
                Instant::now() < until,
                "did not finish in time:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Runs the README's shell lines in `dir`; returns every job by its number (background jobs
/// count from 1, as in a shell) and the foreground ones under their line.
struct Shell {
    dir: PathBuf,
    jobs: BTreeMap<usize, Job>,
    background: usize,
    foreground: Vec<Job>,
}

impl Drop for Shell {
    fn drop(&mut self) {
        for j in self.jobs.values_mut().chain(&mut self.foreground) {
            let _ = j.child.kill();
            let _ = j.child.wait();
        }
    }
}

impl Shell {
    fn job(&mut self, spec: &str) -> &mut Job {
        let n: usize = spec
            .strip_prefix('%')
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("job spec {spec:?}"));
        self.jobs
            .get_mut(&n)
            .unwrap_or_else(|| panic!("no job %{n}"))
    }

    fn run(&mut self, line: &str) {
        let line = match line.find(" #") {
            Some(i) => line[..i].trim(),
            None => line.trim(),
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [] => {}
            [w, ..] if w.starts_with('#') => {}
            ["cd" | "export", ..] => {}
            ["sleep", _] => {
                // Until the last background process listens, not for a time.
                let job = self
                    .jobs
                    .get(&self.background)
                    .expect("sleep after a start");
                let until = Instant::now() + Duration::from_secs(120);
                while !std::fs::read_to_string(&job.stdout)
                    .unwrap_or_default()
                    .contains("listening on")
                {
                    assert!(Instant::now() < until, "never listened:\n{}", job.output());
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            ["wait", specs @ ..] => {
                for s in specs {
                    self.job(s).succeeds(Duration::from_secs(300));
                }
            }
            ["kill", "-INT", spec] => {
                let pid = self.job(spec).child.id().to_string();
                let status = Command::new("kill").args(["-INT", &pid]).status().unwrap();
                assert!(status.success(), "kill -INT {pid}");
            }
            [program, args @ ..] => {
                let (args, background) = match args {
                    [rest @ .., "&"] => (rest, true),
                    _ => (args, false),
                };
                let (args, out) = match args {
                    [rest @ .., ">", file] => (rest, Some(*file)),
                    _ => (args, None),
                };
                let n = self.jobs.len() + self.foreground.len() + 1;
                let stdout = self
                    .dir
                    .join(out.map_or_else(|| format!("job-{n}.stdout"), str::to_owned));
                let stderr = self.dir.join(format!("job-{n}.stderr"));
                let child = Command::new(bin(program))
                    .args(args)
                    .current_dir(&self.dir)
                    .env("RUST_LOG", "info")
                    .stdin(Stdio::null())
                    .stdout(std::fs::File::create(&stdout).unwrap())
                    .stderr(std::fs::File::create(&stderr).unwrap())
                    .spawn()
                    .unwrap_or_else(|e| panic!("start {line}: {e}"));
                let mut job = Job {
                    line: line.to_owned(),
                    child,
                    stdout,
                    stderr,
                };
                if background {
                    self.background += 1;
                    self.jobs.insert(self.background, job);
                } else {
                    job.succeeds(Duration::from_secs(300));
                    self.foreground.push(job);
                }
            }
        }
    }
}

/// The README's quickstart config files are the ones in `examples/quickstart/`.
fn quickstart_files() -> Vec<(String, String)> {
    let mut files = Vec::new();
    for b in blocks("toml", "# examples/quickstart/") {
        let name = b.lines().next().unwrap()["# examples/quickstart/".len()..].to_owned();
        let committed = std::fs::read_to_string(Path::new(QUICKSTART).join(&name)).unwrap();
        assert_eq!(
            b, committed,
            "the README's {name} differs from examples/quickstart/{name}"
        );
        files.push((name, b));
    }
    let a = files
        .iter()
        .find(|(n, _)| n == "hospital-a.toml")
        .expect("the README shows hospital-a.toml")
        .1
        .clone();
    for h in ["b", "c"] {
        let name = format!("hospital-{h}.toml");
        let committed = std::fs::read_to_string(Path::new(QUICKSTART).join(&name)).unwrap();
        assert_eq!(
            committed,
            a.replace("hospital-a", &format!("hospital-{h}")),
            "{name} is hospital-a.toml with its own letter, as the README says"
        );
        files.push((name, committed));
    }
    files
}

#[test]
fn the_readme_quickstart_runs_and_both_copies_of_the_ledger_verify() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<(String, String)> = ["50051", "8080", "4001"]
        .into_iter()
        .map(|p| (p.to_owned(), free_port().to_string()))
        .collect();
    let local = |text: &str| {
        ports.iter().fold(text.to_owned(), |t, (from, to)| {
            t.replace(from.as_str(), to)
        })
    };
    for (name, text) in quickstart_files() {
        std::fs::write(dir.path().join(name), local(&text)).unwrap();
    }
    for csv in ["validation", "hospital-a", "hospital-b", "hospital-c"] {
        std::fs::copy(
            Path::new(QUICKSTART).join(format!("{csv}.csv")),
            dir.path().join(format!("{csv}.csv")),
        )
        .unwrap();
    }
    let script = blocks("sh", "# quickstart");
    assert_eq!(
        script.len(),
        2,
        "the README's quickstart has two command blocks"
    );
    let mut shell = Shell {
        dir: dir.path().to_owned(),
        jobs: BTreeMap::new(),
        background: 0,
        foreground: Vec::new(),
    };
    for line in script.iter().flat_map(|b| b.lines()) {
        shell.run(&local(line));
    }

    // Every hospital took part to the end and says so.
    let hospital_c = shell
        .foreground
        .iter()
        .find(|j| j.line.contains("hospital-c.toml"))
        .unwrap();
    let summaries = [
        std::fs::read_to_string(dir.path().join("hospital-a.out")).unwrap(),
        std::fs::read_to_string(dir.path().join("hospital-b.out")).unwrap(),
        std::fs::read_to_string(&hospital_c.stdout).unwrap(),
    ];
    for s in &summaries {
        assert!(
            s.contains("federation quickstart finished; sent 3 updates, declined 0 rounds"),
            "{s}"
        );
        assert!(s.contains("3 receipts checked"), "{s}");
    }
    // The auditor's copy is the coordinator's: the same latest checkpoint body.
    let body = |d: &str| {
        let cp = std::fs::read_to_string(dir.path().join(d).join("checkpoint")).unwrap();
        cp.split("\n\n").next().unwrap().to_owned()
    };
    assert_eq!(body("auditor-export"), body("coordinator-export"));
}

#[test]
fn every_printed_default_config_is_valid_once_keys_and_data_are_there() {
    let dir = tempfile::tempdir().unwrap();
    let run = |program: &str, args: &[&str]| {
        let out = Command::new(bin(program))
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let coordinator = run("fedledger-coordinator", &["--print-default-config"]);
    std::fs::write(dir.path().join("coordinator.toml"), &coordinator).unwrap();
    // Refused until the files it names exist, naming what is missing.
    let refused = Command::new(bin("fedledger-coordinator"))
        .args(["check-config", "--config", "coordinator.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("validation.csv"), "{said}");
    // The data path and the hospitals' keys filled in: it passes.
    std::fs::copy(
        Path::new(QUICKSTART).join("validation.csv"),
        dir.path().join("validation.csv"),
    )
    .unwrap();
    for h in ["hospital-a", "hospital-b"] {
        let public = run(
            "fedledger-participant",
            &["keygen", "--out", &format!("{h}.key")],
        );
        std::fs::write(dir.path().join(format!("{h}.pub")), public).unwrap();
    }
    let ok = run(
        "fedledger-coordinator",
        &["check-config", "--config", "coordinator.toml"],
    );
    assert!(
        ok.starts_with("ok: federation my-federation with 2 participants"),
        "{ok}"
    );

    // The participant's, with its key, data and the operator's keys file: `budget` loads it.
    let participant = run("fedledger-participant", &["--print-default-config"]);
    std::fs::write(dir.path().join("participant.toml"), participant).unwrap();
    std::fs::copy(
        Path::new(QUICKSTART).join("hospital-a.csv"),
        dir.path().join("hospital-a.csv"),
    )
    .unwrap();
    let log_key = run(
        "fedledger-ledger",
        &["keygen", "--out", "log.key", "--name", "my-federation"],
    );
    // As `fedledger-coordinator keys` prints it.
    let keys = fedledger_coordinator::Identity {
        log_key: log_key.trim().to_owned(),
        peer_id: None,
        genesis_sha256: Some("ab".repeat(32)),
    };
    std::fs::write(dir.path().join("federation.keys"), keys.to_string()).unwrap();
    let budget = run(
        "fedledger-participant",
        &["budget", "--config", "participant.toml"],
    );
    assert!(
        budget.starts_with("epsilon spent 0.0000 of 8.0000"),
        "{budget}"
    );

    // The ledger node's loads with the same keys file (checked by `node` at start; here the
    // file must at least parse and name the log key).
    let ledger = run("fedledger-ledger", &["--print-default-config"]);
    let cfg: toml::Table = toml::from_str(&ledger).unwrap();
    assert_eq!(cfg["keys_file"].as_str(), Some("federation.keys"));
}

/// The `text` blocks of a section of `docs/troubleshooting.md`.
fn troubleshooting(section: &str) -> Vec<String> {
    let doc = include_str!("../../docs/troubleshooting.md");
    let body = doc
        .split("\n## ")
        .find(|s| s.starts_with(section))
        .expect("the section");
    body.split("```text\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap().trim_end().to_owned())
        .collect()
}

#[test]
fn the_troubleshooting_guide_quotes_the_configuration_errors_the_binaries_print() {
    let blocks = troubleshooting("Configuration");
    // Each block's situation, made from the quickstart's files.
    type Setup = fn(&Path);
    let cases: [(Setup, &str, &str); 7] = [
        (
            |d| edit_file(d, "coordinator.toml", "quorum = 3", "quorom = 3"),
            "fedledger-coordinator",
            "coordinator.toml",
        ),
        (
            |d| remove_pubs(d),
            "fedledger-coordinator",
            "coordinator.toml",
        ),
        (
            |d| edit_file(d, "coordinator.toml", "quorum = 3", "quorum = 4"),
            "fedledger-coordinator",
            "coordinator.toml",
        ),
        (
            |d| std::fs::remove_file(d.join("validation.csv")).unwrap(),
            "fedledger-coordinator",
            "coordinator.toml",
        ),
        (
            |d| edit_file(d, "coordinator.toml", "features = 30", "features = 20"),
            "fedledger-coordinator",
            "coordinator.toml",
        ),
        (
            |d| {
                edit_file(
                    d,
                    "hospital-a.toml",
                    "http://127.0.0.1:50051",
                    "http://coordinator.example.org:50051",
                )
            },
            "fedledger-participant",
            "hospital-a.toml",
        ),
        (|_| {}, "fedledger-participant", "hospital-a.toml"),
    ];
    assert_eq!(
        blocks.len(),
        cases.len(),
        "one case per quoted configuration error"
    );
    for (block, (setup, program, config)) in blocks.iter().zip(cases) {
        let dir = tempfile::tempdir().unwrap();
        for f in std::fs::read_dir(QUICKSTART).unwrap() {
            let f = f.unwrap().path();
            if matches!(f.extension().and_then(|e| e.to_str()), Some("csv" | "toml")) {
                std::fs::copy(&f, dir.path().join(f.file_name().unwrap())).unwrap();
            }
        }
        // Distinct keys, as real hospitals' would be.
        for (i, h) in ["hospital-a", "hospital-b", "hospital-c"]
            .iter()
            .enumerate()
        {
            let key = format!("{i}{}\n", "c".repeat(63));
            std::fs::write(dir.path().join(format!("{h}.pub")), key).unwrap();
        }
        setup(dir.path());
        let command = if program == "fedledger-coordinator" {
            "check-config"
        } else {
            "budget"
        };
        let out = Command::new(bin(program))
            .args([command, "--config", config])
            .current_dir(dir.path())
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "{program} {command} accepted the case of:\n{block}"
        );
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(said.trim_end(), block, "the guide quotes another message");
    }
}

fn edit_file(dir: &Path, file: &str, from: &str, to: &str) {
    let p = dir.join(file);
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(text.contains(from), "{file} has no {from:?}");
    std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
}

fn remove_pubs(dir: &Path) {
    for h in ["hospital-a", "hospital-b", "hospital-c"] {
        std::fs::remove_file(dir.join(format!("{h}.pub"))).unwrap();
    }
}

#[test]
fn the_troubleshooting_guide_quotes_the_node_error_for_an_unpinned_dial_address() {
    let blocks = troubleshooting("Ledger");
    let unpinned = blocks
        .iter()
        .find(|b| b.contains("does not pin its peer"))
        .expect("the guide quotes it");
    let dir = tempfile::tempdir().unwrap();
    let log_key = Command::new(bin("fedledger-ledger"))
        .args(["keygen", "--out", "log.key", "--name", "quickstart"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let log_key = String::from_utf8(log_key.stdout).unwrap();
    std::fs::write(
        dir.path().join("ledger.toml"),
        format!(
            "store = \"auditor-store\"\nlog_key = \"{}\"\ndial = [\"/ip4/127.0.0.1/tcp/4001\"]\n",
            log_key.trim()
        ),
    )
    .unwrap();
    let out = Command::new(bin("fedledger-ledger"))
        .args(["node", "--config", "ledger.toml"])
        .current_dir(dir.path())
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains(unpinned.as_str()), "{said}");
}
