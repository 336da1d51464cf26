//! `fedledger-coordinator tls init`, run as the README says: it writes a CA and a server
//! certificate, prints the `[tls]` block for coordinator.toml (which then loads and serves) and
//! what hospitals need; run again with the same folder, it keeps the CA and issues a new
//! certificate.

use std::process::Command;

use fedledger_coordinator::config::TlsSection;

fn tls_init(dir: &std::path::Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_fedledger-coordinator"))
        .current_dir(dir)
        .args([
            "tls",
            "init",
            "--out",
            "tls",
            "--name",
            "coordinator.example.org",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn tls_init_prints_a_working_tls_block_and_reissues_from_the_same_ca() {
    let dir = tempfile::tempdir().unwrap();
    let first = tls_init(dir.path());
    assert!(first.contains("created a private CA"), "{first}");
    assert!(first.contains("CA certificate SHA-256: "), "{first}");
    assert!(
        first.contains("coordinator = \"https://coordinator.example.org:50051\""),
        "{first}"
    );
    // The printed [tls] block, as an operator pastes it into coordinator.toml.
    let block: String = first
        .lines()
        .skip_while(|l| *l != "[tls]")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    let tls: TlsSection = toml::from_str(&block).unwrap();
    let (cert, key) = (dir.path().join(&tls.cert), dir.path().join(&tls.key));
    fedledger_coordinator::tls::load_certified_key(&cert, &key).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for k in [key.clone(), dir.path().join("tls/ca.key")] {
            let mode = std::fs::metadata(&k).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{} is private", k.display());
        }
    }
    let ca = std::fs::read(dir.path().join("tls/ca.pem")).unwrap();
    let leaf = std::fs::read(&cert).unwrap();

    let second = tls_init(dir.path());
    assert!(second.contains("kept the CA"), "{second}");
    assert_eq!(std::fs::read(dir.path().join("tls/ca.pem")).unwrap(), ca);
    assert_ne!(std::fs::read(&cert).unwrap(), leaf, "a new certificate");
    let fingerprint = |s: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix("CA certificate SHA-256: "))
            .unwrap()
            .to_owned()
    };
    assert_eq!(fingerprint(&first), fingerprint(&second));
}
