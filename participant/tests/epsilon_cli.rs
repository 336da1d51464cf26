//! The `epsilon` command as a user runs it: the real binary, its JSON output, both accountants.

use std::process::Command;

use fedledger_privacy::accountant::{AccountantKind, epsilon_for};
use serde_json::Value;

fn epsilon_command(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_fedledger-participant"))
        .arg("epsilon")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run fedledger-participant");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

#[test]
fn pld_json_reports_the_privacy_crate_epsilon_without_an_order() {
    let v = epsilon_command(&[
        "--noise-multiplier",
        "1.1",
        "--sampling-rate",
        "0.01",
        "--steps",
        "100",
        "--delta",
        "1e-5",
        "--accountant",
        "pld",
        "--json",
    ]);
    let want = epsilon_for(AccountantKind::Pld, 1.1, 0.01, 100, 1e-5).unwrap();
    assert_eq!(v["accountant"], "pld");
    assert!(v["order"].is_null(), "{v}");
    assert_eq!(v["delta"].as_f64(), Some(1e-5));
    assert_eq!(v["epsilon"].as_f64(), Some(want.epsilon));
    // Tighter than RDP on the same parameters; the RDP report keeps its order.
    let rdp = epsilon_command(&[
        "--noise-multiplier",
        "1.1",
        "--sampling-rate",
        "0.01",
        "--steps",
        "100",
        "--json",
    ]);
    assert_eq!(rdp["accountant"], "rdp");
    assert!(rdp["order"].as_f64().is_some(), "{rdp}");
    assert!(want.epsilon < rdp["epsilon"].as_f64().unwrap());
}

#[test]
fn pld_target_epsilon_plans_a_noise_multiplier_that_meets_it() {
    let v = epsilon_command(&[
        "--target-epsilon",
        "1.5",
        "--sampling-rate",
        "0.02",
        "--steps",
        "50",
        "--accountant",
        "pld",
        "--json",
    ]);
    let sigma = v["noise_multiplier"].as_f64().expect("noise_multiplier");
    let eps = v["epsilon"].as_f64().unwrap();
    assert_eq!(v["accountant"], "pld");
    assert!(v["order"].is_null(), "{v}");
    assert!(eps <= 1.5, "{v}");
    // Nearly the smallest: one percent less noise misses the target.
    let below = epsilon_for(AccountantKind::Pld, sigma * 0.99, 0.02, 50, 1e-5).unwrap();
    assert!(
        below.epsilon > 1.5,
        "{} at sigma {}",
        below.epsilon,
        sigma * 0.99
    );
}

#[test]
fn invalid_parameters_are_refused_with_the_parameter_named() {
    let cases: [(&[&str], &str); 5] = [
        (
            &["--noise-multiplier", "1.1", "--sampling-rate", "1.5"],
            "sampling_rate",
        ),
        (
            &["--noise-multiplier", "0", "--sampling-rate", "0.1"],
            "noise_multiplier",
        ),
        (
            &["--target-epsilon=-1", "--sampling-rate", "0.1"],
            "target_epsilon",
        ),
        (
            &[
                "--noise-multiplier",
                "1",
                "--sampling-rate",
                "0.1",
                "--delta",
                "0",
            ],
            "delta",
        ),
        (
            &[
                "--noise-multiplier",
                "1",
                "--sampling-rate",
                "0.1",
                "--accountant",
                "gdp",
            ],
            "pld",
        ),
    ];
    for (args, needle) in cases {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fedledger-participant"));
        cmd.arg("epsilon").args(args).args(["--steps", "10"]);
        if !args.contains(&"--accountant") {
            cmd.args(["--accountant", "pld"]);
        }
        let out = cmd.output().expect("run fedledger-participant");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}
