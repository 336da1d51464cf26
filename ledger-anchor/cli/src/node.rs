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
use serde::{Deserialize, Serialize};

/// A complete `ledger.toml`: every field with its default, commented
/// (`fedledger-ledger --print-default-config`). Valid once `log_key` is filled in.
pub const DEFAULT_CONFIG: &str = include_str!("../config/ledger.toml");

/// `ledger.toml`: configuration of `fedledger-ledger node` (see the module docs).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFileConfig {
    /// Replica store directory.
    pub store: PathBuf,
    /// The log's verifier key. Give this or `keys_file`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub log_key: String,
    /// The federation's keys file, as the operator hands it out (`fedledger-coordinator keys`
    /// output): the log's verifier key, and the coordinator node's peer id, which pins every
    /// `dial` address that does not end in `/p2p/<peer id>` itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys_file: Option<PathBuf>,
    /// Listen addresses.
    #[serde(default)]
    pub listen: Vec<String>,
    /// Peers to dial.
    #[serde(default)]
    pub dial: Vec<String>,
    /// The node's libp2p identity key file, created on first start (default: `<store>.node.key`
    /// beside the store). Not the witness's signing key: it only names the node on the network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_key: Option<PathBuf>,
    /// Peer ids allowed to dial in as witnesses.
    #[serde(default)]
    pub allow_witnesses: Vec<String>,
    /// Peer ids allowed to dial in as replicas. With both lists empty any peer may dial in.
    #[serde(default)]
    pub allow_replicas: Vec<String>,
    /// Serve the replica in the C2SP tlog-tiles layout over HTTP at this address (off when
    /// absent: hospitals' nodes do not listen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiles_listen: Option<std::net::SocketAddr>,
    /// Witness settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness: Option<WitnessFileConfig>,
}

/// The `[witness]` table of `ledger.toml`.
#[derive(Debug, Clone, Deserialize, Serialize)]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_listen: Option<std::net::SocketAddr>,
}

impl NodeFileConfig {
    /// Reads and parses `ledger.toml`; relative paths in it are resolved against its folder.
    /// A parse error is said once, naming the file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let mut cfg: Self = toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "{}: {e}(every field, with its default: `fedledger-ledger --print-default-config`)",
                path.display()
            )
        })?;
        if let Some(base) = path.parent() {
            let fix = |p: &mut PathBuf| {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            };
            fix(&mut cfg.store);
            if let Some(k) = cfg.keys_file.as_mut() {
                fix(k);
            }
            if let Some(k) = cfg.node_key.as_mut() {
                fix(k);
            }
            if let Some(w) = cfg.witness.as_mut() {
                fix(&mut w.key);
                fix(&mut w.state);
            }
        }
        Ok(cfg)
    }

    /// The log's verifier key, parsed.
    pub fn log_key(&self) -> anyhow::Result<VerifierKey> {
        let key = match (
            self.log_key.is_empty(),
            self.keys_file_line("log verifier key:")?,
        ) {
            (false, None) => self.log_key.clone(),
            (true, Some(k)) => k,
            (false, Some(_)) => anyhow::bail!("give log_key or keys_file, not both"),
            (true, None) => anyhow::bail!(
                "no log_key: set keys_file to the operator's `fedledger-coordinator keys` output, \
                 or log_key to the log verifier key it names"
            ),
        };
        VerifierKey::parse(&key).context("parse log_key")
    }

    /// The value of the keys file's line starting `label`, when there is a keys file.
    fn keys_file_line(&self, label: &str) -> anyhow::Result<Option<String>> {
        let Some(path) = &self.keys_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read keys_file {}", path.display()))?;
        let value = text
            .lines()
            .find_map(|l| l.strip_prefix(label))
            .map(|v| v.trim().to_owned())
            .with_context(|| format!("keys_file {} has no {label:?} line", path.display()))?;
        Ok(Some(value))
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
        let mut dial = parse(&self.dial)?;
        let pinned =
            |a: &Multiaddr| matches!(a.iter().last(), Some(libp2p::multiaddr::Protocol::P2p(_)));
        if dial.iter().any(|a| !pinned(a))
            && let Some(id) = self.keys_file_line("ledger peer id:")?
        {
            let peer = id
                .parse::<libp2p::PeerId>()
                .with_context(|| format!("keys_file: ledger peer id {id:?}"))?;
            for a in dial.iter_mut().filter(|a| !pinned(a)) {
                a.push(libp2p::multiaddr::Protocol::P2p(peer));
            }
        }
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

/// Runs `fedledger-ledger node --config FILE [--store DIR]` until Ctrl-C: a replica (and witness) that
/// catches up from the peers it dials, follows gossip and reports equivocation loudly. Fails
/// when evidence of equivocation is held at exit.
pub fn run(path: &Path, store: Option<PathBuf>) -> anyhow::Result<()> {
    let mut cfg = NodeFileConfig::load(path)?;
    if let Some(s) = store {
        cfg.store = s;
    }
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
        assert_eq!(cfg.store, dir.path().join("ledger-store"));
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

    #[test]
    fn the_default_ledger_toml_names_every_field_and_loads_once_the_log_key_is_in() {
        fn key_paths(v: &toml::Value, prefix: &str, out: &mut Vec<String>) {
            if let toml::Value::Table(t) = v {
                for (k, v) in t {
                    out.push(format!("{prefix}{k}"));
                    key_paths(v, &format!("{prefix}{k}."), out);
                }
            }
        }
        // Uncommented, every optional field is there too.
        let full: String = DEFAULT_CONFIG
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if rest.contains(" = ") || rest.starts_with('[') => rest,
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        for text in [DEFAULT_CONFIG, full.as_str()] {
            let cfg: NodeFileConfig = toml::from_str(text).unwrap();
            let (mut a, mut b) = (Vec::new(), Vec::new());
            key_paths(&toml::Value::try_from(&cfg).unwrap(), "", &mut a);
            key_paths(&toml::from_str(text).unwrap(), "", &mut b);
            a.sort();
            b.sort();
            assert_eq!(a, b);
        }
        let full: NodeFileConfig = toml::from_str(&full).unwrap();
        assert!(full.witness.is_some_and(|w| w.http_listen.is_some()));

        let dir = tempfile::tempdir().unwrap();
        let signer = NoteSigner::log(
            "fed.example",
            keys::generate_key_file(&dir.path().join("log.key")).unwrap(),
        )
        .unwrap();
        // What `fedledger-coordinator keys` prints.
        let peer = libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        std::fs::write(
            dir.path().join("federation.keys"),
            format!(
                "log verifier key: {}\nledger peer id:   {peer}\ngenesis sha256:   {}\n",
                signer.verifier_key(),
                "ab".repeat(32)
            ),
        )
        .unwrap();
        let text = DEFAULT_CONFIG.replace("dial = []", "dial = [\"/ip4/127.0.0.1/tcp/4001\"]");
        let path = dir.path().join("ledger.toml");
        std::fs::write(&path, &text).unwrap();
        let cfg = NodeFileConfig::load(&path).unwrap();
        assert_eq!(&cfg.log_key().unwrap(), signer.verifier_key());
        // The address is pinned to the keys file's peer id.
        let dial = cfg.network().unwrap().dial;
        assert_eq!(
            dial[0].to_string(),
            format!("/ip4/127.0.0.1/tcp/4001/p2p/{peer}")
        );

        std::fs::write(&path, format!("colour = 1\n{text}")).unwrap();
        let said = format!("{:#}", NodeFileConfig::load(&path).unwrap_err());
        assert!(said.contains("unknown field `colour`"), "{said}");
        assert!(said.contains("ledger.toml"), "{said}");
        assert_eq!(said.matches("unknown field").count(), 1, "{said}");
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
