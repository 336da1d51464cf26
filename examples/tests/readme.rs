//! The README's configuration blocks are a contract: each `toml` block named `participant.toml`
//! or `coordinator.toml` is parsed here with the binaries' own types (unknown fields refused),
//! and the participant's is loaded and validated as `run` would, TLS trust and links included.

use fedledger_coordinator::config::{LedgerSection, TlsSection};
use fedledger_participant::ParticipantConfig;

/// The README's `toml` block whose first line is `# <name>`.
fn block(name: &str) -> String {
    let readme = include_str!("../../README.md");
    let mut blocks = readme.split("```toml\n").skip(1).map(|b| {
        b.split("```")
            .next()
            .expect("a closed code block")
            .to_owned()
    });
    blocks
        .find(|b| b.lines().next() == Some(&format!("# {name}")))
        .unwrap_or_else(|| panic!("the README has no {name} block"))
}

#[test]
fn the_readme_participant_toml_loads_with_its_tls_trust_and_links() {
    let dir = tempfile::tempdir().unwrap();
    let text = block("participant.toml");
    let cfg: ParticipantConfig = toml::from_str(&text).unwrap();
    assert!(cfg.coordinator.starts_with("https://"));
    assert!(!cfg.allow_plaintext);
    // What the operator hands over: the CA (`tls init`) and the keys file.
    let tls = dir.path().join("tls");
    let issued =
        fedledger_coordinator::tls::init(&tls, &["coordinator.example.org".into()]).unwrap();
    std::fs::copy(&issued.ca_cert, dir.path().join("federation-ca.pem")).unwrap();
    let signer = fedledger_ledger::note::NoteSigner::log(
        "breast-cancer-2026",
        fedledger_ledger::keys::generate_key_file(&dir.path().join("log.key")).unwrap(),
    )
    .unwrap();
    // As `fedledger-coordinator keys` prints it.
    let keys = fedledger_coordinator::Identity {
        log_key: signer.verifier_key().to_string(),
        peer_id: None,
        genesis_sha256: Some("ab".repeat(32)),
    };
    std::fs::write(dir.path().join("federation.keys"), keys.to_string()).unwrap();
    let path = dir.path().join("participant.toml");
    std::fs::write(&path, &text).unwrap();
    let cfg = ParticipantConfig::load(&path).unwrap();
    let link = cfg.coordinator_link().unwrap();
    assert!(link.is_tls());
    assert!(cfg.ledger_link().unwrap().unwrap().is_tls());

    // The same file with plaintext to that host is refused, naming the setting.
    std::fs::write(&path, text.replace("https://", "http://")).unwrap();
    let e = ParticipantConfig::load(&path).unwrap_err().to_string();
    assert!(e.contains("allow_plaintext"), "{e}");
}

#[test]
fn the_readme_coordinator_toml_tls_and_ledger_sections_parse() {
    let value: toml::Table = toml::from_str(&block("coordinator.toml")).unwrap();
    let tls: TlsSection = value["tls"].clone().try_into().unwrap();
    assert_eq!(tls.cert, std::path::PathBuf::from("tls/server.pem"));
    assert_eq!(tls.key, std::path::PathBuf::from("tls/server.key"));
    let ledger: LedgerSection = value["ledger"].clone().try_into().unwrap();
    assert!(ledger.allow_witnesses.is_empty() && ledger.allow_replicas.is_empty());
}

/// Every `toml` block of the README, with the file name its first line gives.
fn every_block() -> Vec<(String, String)> {
    let readme = include_str!("../../README.md");
    readme
        .split("```toml\n")
        .skip(1)
        .map(|b| {
            let b = b
                .split("```")
                .next()
                .expect("a closed code block")
                .to_owned();
            let first = b.lines().next().unwrap_or_default();
            let name = first
                .strip_prefix("# ")
                .and_then(|n| n.split([':', ' ']).next())
                .unwrap_or_else(|| panic!("a README toml block does not name its file: {first}"))
                .to_owned();
            (name, b)
        })
        .collect()
}

#[test]
fn every_readme_toml_block_parses_as_the_file_it_names() {
    let blocks = every_block();
    assert!(blocks.len() >= 8, "{} blocks", blocks.len());
    for (name, text) in &blocks {
        let file = name.rsplit('/').next().unwrap();
        let parsed = if file == "coordinator.toml" {
            toml::from_str::<fedledger_coordinator::ConfigFile>(text).map(drop)
        } else if file == "participant.toml"
            || file.starts_with("hospital-")
            || file.starts_with("lab-")
        {
            toml::from_str::<ParticipantConfig>(text).map(drop)
        } else if file == "ledger.toml" {
            toml::from_str::<fedledger_ledger_cli::node::NodeFileConfig>(text).map(drop)
        } else {
            panic!("the README shows {name}, which no test knows how to parse")
        };
        if let Err(e) = parsed {
            panic!("the README's {name} does not parse: {e}");
        }
    }
}

#[test]
fn the_readme_configuration_reference_is_what_the_binaries_print() {
    let readme = include_str!("../../README.md");
    for (binary, text) in [
        (
            "fedledger-coordinator",
            fedledger_coordinator::config::DEFAULT_CONFIG,
        ),
        (
            "fedledger-participant",
            fedledger_participant::config::DEFAULT_CONFIG,
        ),
        (
            "fedledger-ledger",
            fedledger_ledger_cli::node::DEFAULT_CONFIG,
        ),
    ] {
        assert!(
            readme.contains(&format!("```toml\n{text}```")),
            "the README's reference differs from `{binary} --print-default-config`"
        );
    }
}

#[test]
fn the_readme_coordinator_toml_metrics_section_parses() {
    let value: toml::Table = toml::from_str(&block("coordinator.toml")).unwrap();
    let metrics: fedledger_coordinator::config::MetricsSection =
        value["metrics"].clone().try_into().unwrap();
    assert!(metrics.enabled);
    assert_eq!(
        metrics.listen,
        Some(fedledger_coordinator::config::DEFAULT_METRICS_LISTEN)
    );
}

#[test]
fn the_readme_proposal_parses_as_a_proposal_and_its_coordinator_toml_governance_section_too() {
    let readme = include_str!("../../README.md");
    let json = readme
        .split("```json\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the README's proposal block");
    let p: fedledger_ledger::records::Proposal = serde_json::from_str(json).unwrap();
    assert_eq!(p.record_type, fedledger_ledger::records::PROPOSAL_TYPE);
    assert_eq!(p.changes.len(), 2);
    // With real keys in place of the placeholders, it passes the proposal's checks.
    let real = json.replace("<64 hex>", &"ab".repeat(32)).replace(
        "<sha256 of the latest governance entry, or of the genesis entry>",
        &"cd".repeat(32),
    );
    let p: fedledger_ledger::records::Proposal = serde_json::from_str(&real).unwrap();
    fedledger_ledger::records::check_proposal(&p).unwrap();
    // The reward rule's change, a second block.
    let json = readme
        .split("```json\n")
        .nth(2)
        .and_then(|b| b.split("```").next())
        .expect("the README's reward rule change");
    let change: fedledger_ledger::records::Change = serde_json::from_str(json).unwrap();
    let mut with_rule = p.clone();
    with_rule.changes = vec![change];
    fedledger_ledger::records::check_proposal(&with_rule).unwrap();
    let value: toml::Table = toml::from_str(&block("coordinator.toml")).unwrap();
    let g: fedledger_coordinator::config::GovernanceSection =
        value["governance"].clone().try_into().unwrap();
    assert_eq!((g.governors.len(), g.threshold), (3, 2));
}

#[test]
fn the_readme_validator_files_load_as_a_validator_and_a_federation_with_validators() {
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path().join("lab-1.toml");
    let readme = include_str!("../../README.md");
    let blocks: Vec<&str> = readme
        .split("```toml\n")
        .map(|b| b.split("```").next().unwrap())
        .collect();
    let lab_text = blocks
        .iter()
        .find(|b| b.starts_with("# lab-1.toml"))
        .expect("the README's validator file");
    std::fs::write(&lab, lab_text).unwrap();
    let cfg = ParticipantConfig::load(&lab).unwrap();
    assert!(cfg.data.is_none(), "a validator only");
    assert_eq!(
        cfg.validator.as_ref().unwrap().data,
        dir.path().join("holdout.csv")
    );
    let text = blocks
        .iter()
        .find(|b| b.starts_with("# coordinator.toml: a federation with validators"))
        .expect("the README's federation with validators");
    let file: fedledger_coordinator::ConfigFile = toml::from_str(text).unwrap();
    let v = file.validators.as_ref().expect("[validators]");
    assert_eq!((v.quorum, v.exact_max, v.quality_k), (2, 8, Some(2)));
    assert_eq!(file.validator_entries.len(), 2);
    // It validates once its files exist, with DP-SGD as [validators] requires.
    for name in ["lab-1", "lab-2", "hospital-a", "hospital-b", "hospital-c"] {
        std::fs::write(
            dir.path().join(format!("{name}.pub")),
            fedledger_ledger::keys::public_key_hex(
                &fedledger_ledger::keys::generate_key_file(&dir.path().join(name)).unwrap(),
            ),
        )
        .unwrap();
    }
    let coordinator = dir.path().join("coordinator.toml");
    std::fs::write(&coordinator, text).unwrap();
    let mut f = fedledger_coordinator::ConfigFile::load(&coordinator).unwrap();
    f.data.validation = dir.path().join("validation.csv");
    std::fs::write(&f.data.validation, fedledger_examples::BREAST_CANCER_CSV).unwrap();
    f.validate().unwrap();
}
