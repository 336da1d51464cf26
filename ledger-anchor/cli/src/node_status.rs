//! What `fedledger-ledger node` reports while it runs: the replica's size, its peers, the last
//! checkpoint it verified that carries the genesis quorum of witness cosignatures (what a
//! hospital or monitor would accept), gossip counters and any evidence of equivocation. Read
//! from the store and the node's handle; a line is printed whenever it changes.

use fedledger_ledger::Log;
use fedledger_ledger::node::NodeStats;

/// A node's state at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    /// Entries in the replica.
    pub size: u64,
    /// Peers connected.
    pub peers: usize,
    /// The largest verified checkpoint with the quorum of cosignatures: (size, cosignatures
    /// on it, quorum, root in base64).
    pub witnessed: Option<(u64, usize, u64, String)>,
    /// The largest verified checkpoint at all, when larger than the witnessed one.
    pub latest: Option<u64>,
    pub stats: NodeStats,
    /// Pieces of evidence of equivocation held.
    pub evidence: usize,
}

impl NodeStatus {
    /// Reads the state of `log` (a replica) with the node's `peers` and gossip `stats`.
    pub fn read(
        log: &Log,
        peers: usize,
        stats: NodeStats,
    ) -> Result<Self, fedledger_ledger::LedgerError> {
        let size = log.size();
        let witnessed = match log.latest_witnessed_in_force()? {
            // Before the genesis is replicated nothing can be said to be witnessed.
            Some(cp) if size > 0 => {
                let (witnesses, quorum) = log.witness_policy(cp.checkpoint.size);
                Some((
                    cp.checkpoint.size,
                    cp.note.valid_cosigners(&witnesses).len(),
                    quorum,
                    fedledger_ledger::note::b64_encode(&cp.checkpoint.root),
                ))
            }
            _ => None,
        };
        let latest = log
            .latest_checkpoint()?
            .map(|cp| cp.checkpoint.size)
            .filter(|s| witnessed.as_ref().is_none_or(|w| *s > w.0));
        Ok(Self {
            size,
            peers,
            witnessed,
            latest,
            stats,
            evidence: log.evidence()?.len(),
        })
    }
}

impl std::fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "status: {} entries, {} peer(s); ", self.size, self.peers)?;
        match &self.witnessed {
            Some((size, cosigned, quorum, root)) => write!(
                f,
                "last verified, cosigned checkpoint: size {size} ({cosigned} cosignature(s), \
                 quorum {quorum}) root {root}"
            )?,
            None => write!(f, "no verified, cosigned checkpoint yet")?,
        }
        if let Some(s) = self.latest {
            write!(f, "; verified, awaiting cosignatures: size {s}")?;
        }
        write!(
            f,
            "; gossip accepted {}, rejected {}, ignored {}; refused peers {}",
            self.stats.accepted, self.stats.rejected, self.stats.ignored, self.stats.refused_peers
        )?;
        if self.evidence > 0 {
            write!(f, "; EVIDENCE OF EQUIVOCATION HELD: {}", self.evidence)?;
        }
        Ok(())
    }
}
