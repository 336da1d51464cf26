//! What `fedledger-ledger node` reports: the replica's size, its peers, and the last checkpoint
//! it verified that carries the genesis quorum of cosignatures, which does not move past a
//! checkpoint still waiting for its cosignatures.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::Federation;
use fedledger_ledger::node::NodeStats;
use fedledger_ledger_cli::node_status::NodeStatus;

const STATS: NodeStats = NodeStats {
    accepted: 3,
    rejected: 0,
    ignored: 1,
    refused_peers: 0,
};

#[test]
fn the_node_reports_its_size_peers_and_last_cosigned_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let fed = Federation::new(2, 1);
    let log = fed.build_log(&dir.path().join("log"), 2);
    let s = NodeStatus::read(&log, 3, STATS).unwrap();
    assert_eq!(s.size, fed.entries(2));
    assert_eq!(s.peers, 3);
    let (size, cosigned, quorum, _) = s.witnessed.clone().unwrap();
    assert_eq!((size, cosigned, quorum), (log.size(), 1, 1));
    assert_eq!(s.latest, None);
    let line = s.to_string();
    assert!(
        line.contains(&format!("{} entries, 3 peer(s)", log.size()))
            && line.contains(&format!(
                "last verified, cosigned checkpoint: size {size} (1 cosignature(s), quorum 1)"
            )),
        "{line}"
    );

    // A third round, checkpointed but not yet cosigned: the cosigned one stays where it was.
    log.append_batch(&fed.round(3, log.size())).unwrap();
    log.checkpoint().unwrap();
    let s = NodeStatus::read(&log, 0, STATS).unwrap();
    assert_eq!(s.witnessed.as_ref().unwrap().0, size);
    assert_eq!(s.latest, Some(log.size()));
    assert!(
        s.to_string()
            .contains(&format!("awaiting cosignatures: size {}", log.size()))
    );
}
