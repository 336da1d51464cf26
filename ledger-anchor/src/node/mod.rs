//! Replication and witnessing over libp2p: gossipsub pushes new entries with their checkpoint
//! and consistency proof, a request-response protocol serves catch-up (checkpoint, entry
//! ranges, proofs) and the witness add-checkpoint exchange, and evidence of equivocation is
//! gossiped on its own topic.
//!
//! One task owns the swarm ([`spawn`]); the rest of the program talks to it through a cloneable
//! [`NodeHandle`] that sends commands over a bounded channel and gets answers on oneshot
//! channels. Every message is checked before it is trusted: gossip validation is on (strict
//! mode, signed messages) and invalid messages are rejected, which lowers the sender's peer
//! score. The store is never touched on the event loop: reads, appends and flushes run on the
//! blocking pool, bounded, and come back to the loop as messages.
//!
//! Submodules, in reading order:
//!
//! - `allow`: who may dial in ([`AllowList`] by [`Role`]); a peer not on a configured list is
//!   denied at connection, before the other behaviours see it, and logged once.
//! - `protocol`: the wire types ([`Announcement`], [`SyncRequest`], [`SyncResponse`]), topics,
//!   size limits, and the checks that need no store.
//! - `storage`: what a gossip message or a sync request does to the [`Log`] and the witness
//!   (blocking functions, run off the loop).
//! - `handle`: the cloneable [`NodeHandle`] and the commands it sends.
//! - `event_loop`: [`spawn`], the swarm, and the loop that dispatches events and store work.

mod allow;
mod event_loop;
mod handle;
mod protocol;
mod storage;

pub use allow::{AllowList, Role};
pub use event_loop::{NodeConfig, spawn};
pub use handle::{NodeHandle, NodeStats};
pub use protocol::{Announcement, CHUNK, SyncRequest, SyncResponse};

use crate::error::LedgerError;

/// The node identity kept in the key file at `path` (created on first use), so that a node's
/// peer id survives restarts and peers can pin it.
pub fn load_or_generate_identity(
    path: &std::path::Path,
) -> Result<libp2p::identity::Keypair, LedgerError> {
    let seed = crate::keys::load_or_generate_seed(path)?;
    libp2p::identity::Keypair::ed25519_from_bytes(seed)
        .map_err(|e| LedgerError::Key(format!("{}: {e}", path.display())))
}
