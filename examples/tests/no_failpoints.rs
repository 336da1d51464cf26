//! The fault-injection points are for tests only: `cargo test` turns the `failpoints` features
//! on through dev-dependencies, while the three binaries and `cargo run --release --example
//! hospitals` resolve without them. Cargo's own feature resolution says so, for exactly the
//! package sets those commands build.

use std::process::Command;

/// `cargo tree` inverted on `fail`, with feature edges, for `packages` and `edges`.
fn who_enables_fail(packages: &[&str], edges: &str) -> String {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args([
            "tree",
            "--offline",
            "--color",
            "never",
            "-e",
            edges,
            "-i",
            "fail",
        ]);
    for p in packages {
        cmd.args(["-p", p]);
    }
    let out = cmd.output().expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn release_binaries_and_the_example_carry_no_failpoints() {
    // The binaries: normal and build dependencies only.
    let bins = who_enables_fail(
        &[
            "fedledger-coordinator",
            "fedledger-participant",
            "fedledger-ledger-cli",
        ],
        "normal,build,features",
    );
    assert!(
        bins.contains("fail v0.5"),
        "the points are compiled in: {bins}"
    );
    assert!(!bins.contains("feature \"failpoints\""), "{bins}");
    // The example is built with the examples package's dev-dependencies too.
    let example = who_enables_fail(&["fedledger-examples"], "features");
    assert!(!example.contains("feature \"failpoints\""), "{example}");
    // And the coordinator's tests do get them (the check above can tell the difference).
    let tests = who_enables_fail(&["fedledger-coordinator"], "features");
    assert!(tests.contains("feature \"failpoints\""), "{tests}");
}
