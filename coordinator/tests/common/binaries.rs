//! The other binaries of the workspace run as separate processes: hospitals
//! (`fedledger-participant`) and the auditor's `fedledger-ledger` (monitor, witness node). The
//! coordinator crate may not depend on the participant crate, so these tests start the binaries
//! `cargo test --workspace` builds beside the coordinator's (built once with `cargo build` when
//! missing).

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

use fedledger_ledger::keys;

/// A workspace binary of this target directory, built when missing.
pub fn workspace_bin(package: &str, name: &str) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _one_build = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let dir = Path::new(env!("CARGO_BIN_EXE_fedledger-coordinator"))
        .parent()
        .unwrap()
        .to_owned();
    let bin = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", package, "--bin", name])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building {name} failed");
    }
    assert!(bin.exists(), "{} missing", bin.display());
    bin
}

/// `fedledger-coordinator`, this test's own build.
pub fn coordinator_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_fedledger-coordinator"))
}

/// A loopback port free at the moment of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Breast cancer split into `parts` files of the same header, row `i` to part `i % parts`.
pub fn breast_cancer_split(parts: usize) -> Vec<String> {
    let csv = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/data/breast_cancer.csv"
    ))
    .unwrap();
    let mut lines = csv.lines();
    let header = lines.next().unwrap().to_owned();
    let mut files = vec![format!("{header}\n"); parts];
    for (i, r) in lines.enumerate() {
        files[i % parts].push_str(r);
        files[i % parts].push('\n');
    }
    files
}

/// `fedledger-participant`.
pub fn participant_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| workspace_bin("fedledger-participant", "fedledger-participant"))
}

/// `fedledger-ledger`.
pub fn ledger_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| workspace_bin("fedledger-ledger-cli", "fedledger-ledger"))
}

/// A hospital: its files, and its process once started.
pub struct Hospital {
    pub name: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub child: Option<Child>,
}

impl Drop for Hospital {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Hospital {
    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    pub fn start(&mut self) {
        let err = std::fs::File::create(self.dir.join("stderr.log")).unwrap();
        self.child = Some(
            Command::new(participant_bin())
                .args(["run", "--config"])
                .arg(&self.config)
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(err)
                .spawn()
                .expect("start fedledger-participant"),
        );
    }

    /// Waits for the process to exit; its exit code.
    pub async fn wait(&mut self, patience: Duration) -> i32 {
        let child = self.child.as_mut().expect("started");
        let until = Instant::now() + patience;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            if Instant::now() > until {
                let _ = child.kill();
                panic!(
                    "{} did not exit in time; its log:\n{}",
                    self.name,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Rounds whose receipt it stored, ascending.
    pub fn receipts(&self, federation: &str) -> Vec<u64> {
        let dir = self
            .state()
            .join("receipts")
            .join(federation)
            .join("rounds");
        let mut v: Vec<u64> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| {
                    e.ok()?
                        .file_name()
                        .to_string_lossy()
                        .strip_suffix(".tlog-proof")?
                        .parse()
                        .ok()
                })
                .collect()
            })
            .unwrap_or_default();
        v.sort_unstable();
        v
    }

    /// Its evidence files, parsed.
    pub fn evidence(&self) -> Vec<serde_json::Value> {
        std::fs::read_dir(self.state().join("evidence"))
            .map(|rd| {
                rd.filter_map(|e| serde_json::from_slice(&std::fs::read(e.ok()?.path()).ok()?).ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Writes its `participant.toml` for a running coordinator.
    pub fn write_config(&self, running: &fedledger_coordinator::Running) {
        let id = &running.identity;
        let text = format!(
            "coordinator = \"http://{}\"\nkey = \"key\"\ndata = \"data.csv\"\nlabel_column = \"label\"\n\
             state_dir = \"state\"\nreconnect_patience_secs = 10\n\n[privacy]\nepsilon_budget = 8.0\n\
             delta = 1e-5\nrequire_dp = false\n\n[ledger]\nurl = \"{}\"\nlog_key = \"{}\"\n\
             genesis_sha256 = \"{}\"\nallow_no_witnesses = true\nreceipt_timeout_secs = 30\n",
            running.addr,
            running.tiles_url().unwrap(),
            id.log_key,
            id.genesis_sha256.as_deref().unwrap(),
        );
        std::fs::write(&self.config, text).unwrap();
    }
}

/// `n` hospitals' keys, data and folders under `root`.
pub fn hospitals(root: &Path, n: usize) -> (Vec<Hospital>, Vec<ring::signature::Ed25519KeyPair>) {
    let mut hs = Vec::new();
    let mut keys_ = Vec::new();
    for i in 0..n {
        let dir = root.join(format!("h{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let key = keys::generate_key_file(&dir.join("key")).unwrap();
        super::write_validation(&dir.join("data.csv"), 3, 40 + 7 * i, 2);
        keys_.push(key);
        hs.push(Hospital {
            name: format!("h{i}"),
            config: dir.join("participant.toml"),
            dir,
            child: None,
        });
    }
    (hs, keys_)
}

/// A process whose stdout lines are collected as they come; killed on drop.
pub struct Watched {
    pub child: Child,
    lines: std::sync::Arc<Mutex<Vec<String>>>,
    stderr: PathBuf,
}

impl Drop for Watched {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Watched {
    /// Starts `bin args...`, its stderr to `stderr`.
    pub fn spawn(bin: &Path, args: &[&std::ffi::OsStr], stderr: PathBuf) -> Self {
        Self::spawn_with(Command::new(bin).args(args), stderr)
    }

    /// Like [`Watched::spawn`], logging at `info` whatever `RUST_LOG` the tests run with.
    pub fn spawn_logged(bin: &Path, args: &[&std::ffi::OsStr], stderr: PathBuf) -> Self {
        Self::spawn_with(Command::new(bin).args(args).env("RUST_LOG", "info"), stderr)
    }

    fn spawn_with(command: &mut Command, stderr: PathBuf) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start the process");
        let out = BufReader::new(child.stdout.take().unwrap());
        let lines = std::sync::Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
        });
        Self {
            child,
            lines,
            stderr,
        }
    }

    pub fn stdout(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits (up to `patience`) for a stdout line satisfying `f`; returns it.
    pub async fn line(&self, patience: Duration, f: impl Fn(&str) -> bool) -> String {
        let until = Instant::now() + patience;
        loop {
            if let Some(l) = self.stdout().into_iter().find(|l| f(l)) {
                return l;
            }
            assert!(
                Instant::now() < until,
                "no such line in time; stdout:\n{}\nstderr:\n{}",
                self.stdout().join("\n"),
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (up to `patience`) for the process to exit; its exit code.
    pub async fn exit(&mut self, patience: Duration) -> i32 {
        let until = Instant::now() + patience;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < until,
                "did not exit in time; stdout:\n{}\nstderr:\n{}",
                self.stdout().join("\n"),
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
