//! A federation whose valuation could never run is refused when its configuration is
//! validated, naming what to change, instead of failing every round's close.

mod common;

use common::*;
use fedledger_coordinator::config::ConfigError;

fn keys(n: usize) -> Vec<ring::signature::Ed25519KeyPair> {
    (0..n).map(|_| keypair()).collect()
}

fn invalid(r: Result<fedledger_coordinator::config::FederationConfig, ConfigError>) -> String {
    match r {
        Err(ConfigError::Invalid(what)) => what,
        Err(other) => panic!("another error: {other}"),
        Ok(_) => panic!("accepted"),
    }
}

#[test]
fn valuation_settings_that_cannot_value_the_federation_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ks = keys(100);
    let refs: Vec<_> = ks.iter().collect();

    // A hundred participants: gtg (the default above 12) values them.
    let cfg = config_file(dir.path(), &refs, 3, 2, 1, 1);
    assert_eq!(cfg.valuation.estimator, "auto");
    assert!(cfg.validate().is_ok());

    let mut cfg = config_file(dir.path(), &refs, 3, 2, 1, 1);
    cfg.valuation.estimator = "kernelshap".into();
    let what = invalid(cfg.validate());
    assert!(
        what.contains("kernelshap") && what.contains("100"),
        "{what}"
    );

    let mut cfg = config_file(dir.path(), &refs, 3, 2, 1, 1);
    cfg.valuation.max_evaluations = 50;
    let what = invalid(cfg.validate());
    assert!(
        what.contains("max_evaluations = 50") && what.contains("298"),
        "{what}"
    );

    // Exact values enumerate every coalition: 12 participants at most by default.
    let mut cfg = config_file(dir.path(), &refs[..13], 3, 2, 1, 1);
    cfg.valuation.estimator = "exact".into();
    let what = invalid(cfg.validate());
    assert!(
        what.contains("\"exact\" values at most 12") && what.contains("13"),
        "{what}"
    );

    let mut cfg = config_file(dir.path(), &refs[..4], 3, 2, 1, 1);
    cfg.valuation.max_evaluations = 15;
    let what = invalid(cfg.validate());
    assert!(what.contains("16 coalitions"), "{what}");
    let mut cfg = config_file(dir.path(), &refs[..4], 3, 2, 1, 1);
    cfg.valuation.max_evaluations = 16;
    assert!(cfg.validate().is_ok());
}
