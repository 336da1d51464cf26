//! Who may dial in: with an allow-list configured, an inbound connection from a peer id that
//! is on no role's list (witness, replica) is denied as soon as the peer has proved its id (the
//! noise handshake), before any other behaviour sees it, and logged once per peer. Outbound
//! connections are not gated here: a node dials only the addresses it is given, and an
//! address ending in `/p2p/<peer id>` is checked by libp2p against the id the peer proves.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use libp2p::core::{Endpoint, transport::PortUse};
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId};

/// A role a peer may dial in as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A witness: cosigns checkpoints.
    Witness,
    /// A replica: follows and serves the log (an auditor's node).
    Replica,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Witness => "witness",
            Role::Replica => "replica",
        })
    }
}

/// The peers allowed to dial in, by role. Empty: any peer may.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    peers: HashMap<PeerId, Role>,
}

impl AllowList {
    /// Allows `peer` to dial in as `role`.
    pub fn allow(&mut self, peer: PeerId, role: Role) -> &mut Self {
        self.peers.insert(peer, role);
        self
    }

    /// Whether the list restricts anything.
    pub fn is_open(&self) -> bool {
        self.peers.is_empty()
    }

    /// The role of `peer` if it may dial in (`None` also when the list is open).
    pub fn role(&self, peer: &PeerId) -> Option<Role> {
        self.peers.get(peer).copied()
    }
}

/// Most distinct refused peers remembered for log-once; past it, refusals are still counted
/// but no longer logged.
const MAX_REMEMBERED: usize = 4096;

#[derive(Debug)]
struct NotAllowed(PeerId);

impl std::fmt::Display for NotAllowed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "peer {} is not on this node's allow-list", self.0)
    }
}

impl std::error::Error for NotAllowed {}

/// The behaviour that enforces an [`AllowList`] on inbound connections.
pub(crate) struct Gate {
    list: AllowList,
    refused: Arc<AtomicU64>,
    logged: HashSet<PeerId>,
}

impl Gate {
    pub(crate) fn new(list: AllowList, refused: Arc<AtomicU64>) -> Self {
        Self {
            list,
            refused,
            logged: HashSet::new(),
        }
    }
}

impl NetworkBehaviour for Gate {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if self.list.is_open() {
            return Ok(dummy::ConnectionHandler);
        }
        match self.list.role(&peer) {
            Some(role) => {
                tracing::debug!(%peer, %role, "allowed peer connected");
                Ok(dummy::ConnectionHandler)
            }
            None => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                if self.logged.len() < MAX_REMEMBERED && self.logged.insert(peer) {
                    tracing::warn!(
                        %peer,
                        %remote,
                        "refused an inbound connection: peer not on the allow-list (logged once \
                         per peer)"
                    );
                }
                Err(ConnectionDenied::new(NotAllowed(peer)))
            }
        }
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, _: FromSwarm<'_>) {}

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}
