//! `fedledger-ledger node`: a replica (and optionally a witness) of one log, configured by
//! `ledger.toml`, that catches up from the peers it dials, follows gossip and reports
//! equivocation loudly until Ctrl-C.
//!
//! ```toml
//! store = "ledger-store"                       # replica's sled directory
//! log_key = "fed.example+1a2b3c4d+AUx..."      # the log's verifier key (origin = its name)
//! listen = ["/ip4/0.0.0.0/tcp/4001"]           # empty for a dial-out-only node (hospitals)
//! dial = ["/ip4/127.0.0.1/tcp/4000/p2p/12D3KooWNgW59BxXwMsZJT86Xmz6XnYS3P5i95gjqqmLDa1DSWPH"]  # pinned: /p2p/<peer id>
//! node_key = "node.key"                         # libp2p identity (stable peer id); default <store>.node.key
//! allow_witnesses = ["12D3KooWNLs4aRK3243g2NqQtyqoH2L2d7qJVQ4dBUGCtoTX5rW8"]  # peer ids that may dial in as witnesses ...
//! allow_replicas = []                           # ... or replicas; both empty: any peer may
//! tiles_listen = "127.0.0.1:8081"               # optional: serve the replica over C2SP tlog-tiles (HTTP)
//!
//! [witness]                                     # optional: also cosign as a witness
//! name = "witness.hospital-a.example"
//! key = "witness.key"                           # PKCS#8 file from `fedledger-ledger keygen`
//! state = "witness-state"                       # sled directory of the witness's state
//! http_listen = "127.0.0.1:7380"                # optional: C2SP tlog-witness over HTTP (add-checkpoint, monitoring)
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use fedledger_ledger::node::{self, NodeConfig};
use fedledger_ledger::note::{NoteSigner, VerifierKey};
use fedledger_ledger::witness::Witness;
use fedledger_ledger::{Log, keys};
use libp2p::Multiaddr;
use serde::Deserialize;

/// `ledger.toml`: configuration of `fedledger-ledger node` (see the module docs).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFileConfig {
    /// Replica store directory.
    pub store: PathBuf,
    /// The log's verifier key.
    pub log_key: String,
    /// Listen addresses.
    #[serde(default)]
    pub listen: Vec<String>,
    /// Peers to dial.
    #[serde(default)]
    pub dial: Vec<String>,
    /// The node's libp2p identity key file, created on first start (default: `<store>.node.key`
    /// beside the store). Not the witness's signing key: it only names the node on the network.
    #[serde(default)]
    pub node_key: Option<PathBuf>,
    /// Peer ids allowed to dial in as witnesses.
    #[serde(default)]
    pub allow_witnesses: Vec<String>,
    /// Peer ids allowed to dial in as replicas. With both lists empty any peer may dial in.
    #[serde(default)]
    pub allow_replicas: Vec<String>,
    /// Serve the replica in the C2SP tlog-tiles layout over HTTP at this address (off when
    /// absent: hospitals' nodes do not listen).
    #[serde(default)]
    pub tiles_listen: Option<std::net::SocketAddr>,
    /// Witness settings.
    pub witness: Option<WitnessFileConfig>,
}

/// The `[witness]` table of `ledger.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessFileConfig {
    /// Witness key name.
    pub name: String,
    /// PKCS#8 key file (generated if missing).
    pub key: PathBuf,
    /// Witness state directory.
    pub state: PathBuf,
    /// Serve the C2SP tlog-witness HTTP API (`POST /add-checkpoint`, `GET /<origin
    /// hash>/checkpoint`) at this address, beside the libp2p request (off when absent).
    #[serde(default)]
    pub http_listen: Option<std::net::SocketAddr>,
}

impl NodeFileConfig {
    /// Reads and parses `ledger.toml`.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parse {}", path.display()))
    }

    /// The log's verifier key, parsed.
    pub fn log_key(&self) -> anyhow::Result<VerifierKey> {
        VerifierKey::parse(&self.log_key).context("parse log_key")
    }

    /// The network settings, with every address parsed. Every address dialled must pin the
    /// peer (`.../p2p/<peer id>`): libp2p then refuses a peer that proves another id.
    pub fn network(&self) -> anyhow::Result<NodeConfig> {
        let parse = |v: &[String]| {
            v.iter()
                .map(|a| {
                    a.parse::<Multiaddr>()
                        .with_context(|| format!("parse address {a}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()
        };
        let dial = parse(&self.dial)?;
        for a in &dial {
            if !matches!(a.iter().last(), Some(libp2p::multiaddr::Protocol::P2p(_))) {
                anyhow::bail!(
                    "dial address {a} does not pin its peer: append /p2p/<peer id> (the peer id \
                     the node prints at start, or `fedledger-coordinator keys`)"
                );
            }
        }
        let mut allow = node::AllowList::default();
        for (ids, role) in [
            (&self.allow_witnesses, node::Role::Witness),
            (&self.allow_replicas, node::Role::Replica),
        ] {
            for id in ids {
                let peer = id
                    .parse::<libp2p::PeerId>()
                    .with_context(|| format!("allow_{role}s: {id:?} is not a peer id"))?;
                allow.allow(peer, role);
            }
        }
        Ok(NodeConfig {
            listen: parse(&self.listen)?,
            dial,
            allow,
            ..NodeConfig::default()
        })
    }

    /// The node key file: the configured one, or `<store>.node.key`.
    pub fn node_key(&self) -> PathBuf {
        self.node_key.clone().unwrap_or_else(|| {
            let mut name = self.store.as_os_str().to_owned();
            name.push(".node.key");
            PathBuf::from(name)
        })
    }
}

/// Runs `fedledger-ledger node --config FILE` until Ctrl-C: a replica (and witness) that
/// catches up from the peers it dials, follows gossip and reports equivocation loudly. Fails
/// when evidence of equivocation is held at exit.
pub fn run(path: &Path) -> anyhow::Result<()> {
    let cfg = NodeFileConfig::load(path)?;
    let log_key = cfg.log_key()?;
    let net_cfg = cfg.network()?;
    let log = Log::open_replica(&cfg.store, log_key.clone()).context("open replica store")?;
    let witness = match &cfg.witness {
        Some(w) => {
            let key = keys::load_or_generate_key(&w.key).context("load witness key")?;
            let signer = NoteSigner::witness(&w.name, key).context("witness key")?;
            println!("witness key: {}", signer.verifier_key());
            Some(Witness::open(&w.state, signer, log_key).context("open witness state")?)
        }
        None => None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start runtime")?;
    let node_key = cfg.node_key();
    if let Some(w) = &cfg.witness
        && w.key == node_key
    {
        anyhow::bail!(
            "node_key and witness.key are the same file: the node's network identity and the \
             witness's signing key must be separate keys"
        );
    }
    let identity = node::load_or_generate_identity(&node_key)
        .with_context(|| format!("load node key {}", node_key.display()))?;
    println!(
        "peer id: {} (node key {})",
        identity.public().to_peer_id(),
        node_key.display()
    );
    if net_cfg.allow.is_open() && !net_cfg.listen.is_empty() {
        println!("allow-list: none (any peer may dial in)");
    }
    let witness_http = witness.clone();
    rt.block_on(async move {
        let node = node::spawn(net_cfg, identity, log.clone(), witness)
            .await
            .context("start node")?;
        let witness_http = match (
            &witness_http,
            cfg.witness.as_ref().and_then(|w| w.http_listen),
        ) {
            (Some(w), Some(at)) => {
                let l = tokio::net::TcpListener::bind(at)
                    .await
                    .with_context(|| format!("bind {at}"))?;
                let s = fedledger_ledger::http::serve_witness(l, vec![w.clone()]).await?;
                println!("serving tlog-witness at {}", s.url());
                Some(s)
            }
            _ => None,
        };
        let tiles = match cfg.tiles_listen {
            Some(at) => {
                let l = tokio::net::TcpListener::bind(at)
                    .await
                    .with_context(|| format!("bind {at}"))?;
                let t = fedledger_ledger::http::serve_tiles(l, log.clone()).await?;
                println!("serving tlog-tiles at {}", t.url());
                Some(t)
            }
            None => None,
        };
        println!(
            "node {} listening on {:?}",
            node.peer_id(),
            node.listen_addrs(Duration::from_secs(2)).await?
        );
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        // What the node reports: a line whenever its size, peers, last verified and cosigned
        // checkpoint or evidence change (gossip counters alone do not make a new line).
        let mut reported: Option<crate::node_status::NodeStatus> = None;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = tick.tick() => {
                    let evidence = log.evidence()?;
                    for e in &evidence {
                        eprintln!("{e}");
                    }
                    let peers = node.peers().await.map(|p| p.len()).unwrap_or(0);
                    let status = crate::node_status::NodeStatus::read(&log, peers, node.stats())?;
                    let changed = reported.as_ref().is_none_or(|r| {
                        (r.size, r.peers, &r.witnessed, r.latest, r.evidence)
                            != (status.size, status.peers, &status.witnessed, status.latest, status.evidence)
                    });
                    if changed {
                        println!("{status}");
                    }
                    tracing::info!(
                        size = status.size,
                        peers = status.peers,
                        witnessed = status.witnessed.as_ref().map_or(0, |w| w.0),
                        evidence = status.evidence,
                        "status"
                    );
                    reported = Some(status);
                }
            }
        }
        node.shutdown().await;
        if let Some(w) = witness_http {
            w.shutdown().await;
        }
        if let Some(t) = tiles {
            t.shutdown().await;
        }
        let evidence = log.evidence()?;
        if !evidence.is_empty() {
            anyhow::bail!(
                "{} piece(s) of evidence of equivocation held",
                evidence.len()
            );
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_ledger_toml_parses_and_unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let doc = include_str!("node.rs")
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| l.trim_start_matches("//!").trim_start_matches(' '))
            .collect::<Vec<_>>()
            .join("\n");
        let path = dir.path().join("ledger.toml");
        std::fs::write(&path, &doc).unwrap();
        let cfg = NodeFileConfig::load(&path).unwrap();
        assert_eq!(cfg.store, PathBuf::from("ledger-store"));
        assert_eq!(
            cfg.witness.as_ref().unwrap().name,
            "witness.hospital-a.example"
        );
        let net = cfg.network().unwrap();
        assert_eq!((net.listen.len(), net.dial.len()), (1, 1));
        assert!(
            cfg.log_key().is_err(),
            "the documented key is a placeholder"
        );

        std::fs::write(&path, format!("{doc}\ncolour = \"blue\"\n")).unwrap();
        assert!(NodeFileConfig::load(&path).is_err());
        std::fs::write(
            &path,
            "store = \"s\"\nlog_key = \"k\"\nlisten = [\"nonsense\"]\n",
        )
        .unwrap();
        let err = NodeFileConfig::load(&path).unwrap().network().unwrap_err();
        assert!(
            format!("{err:#}").contains("parse address nonsense"),
            "{err:#}"
        );
    }

    mod fuzz {
        //! `ledger.toml` under arbitrary edits (fuzzing on stable Rust; `PROPTEST_CASES` for
        //! a long run): parsed, keyed and addressed, or refused, never a panic.

        use super::*;
        use proptest::prelude::*;

        const VALID: &str = "store = \"s\"\nlog_key = \"fed.example+1a2b3c4d+AUxA\"\n\
            listen = [\"/ip4/0.0.0.0/tcp/4001\"]\ndial = [\"/ip4/127.0.0.1/tcp/4000\"]\n\
            [witness]\nname = \"w\"\nkey = \"w.key\"\nstate = \"ws\"\n";

        fn check(text: &str) {
            if let Ok(cfg) = toml::from_str::<NodeFileConfig>(text) {
                let _ = cfg.log_key();
                let _ = cfg.network();
            }
        }

        proptest! {
            #[test]
            fn an_edited_ledger_toml_is_refused_or_parsed_never_a_panic(
                edits in prop::collection::vec(
                    (any::<prop::sample::Index>(), any::<u8>(), 0u8..3),
                    1..8,
                ),
            ) {
                let mut b = VALID.as_bytes().to_vec();
                for (at, byte, op) in edits {
                    let i = at.index(b.len() + 1);
                    match op {
                        0 if i < b.len() => b[i] = byte,
                        1 => b.insert(i, byte),
                        _ if i < b.len() => {
                            b.remove(i);
                        }
                        _ => {}
                    }
                }
                check(&String::from_utf8_lossy(&b));
            }

            #[test]
            fn any_address_or_key_is_refused_or_parsed(s in ".{0,80}") {
                check(&format!("store = \"s\"\nlog_key = {s:?}\nlisten = [{s:?}]\n"));
            }
        }

        #[test]
        fn corpus() {
            check(VALID);
            check("store = \"s\"\nlog_key = \"+++\"\ndial = [\"/ip4/1.2.3.4/tcp/99999999\"]\n");
            check("store = \"s\"\nlog_key = \"a+00000000+\"\nlisten = [\"/dns/\"]\n");
        }
    }
}
