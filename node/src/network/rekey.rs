//! A node that takes a new key takes a new libp2p identity with it (the identity is the node key):
//! the swarm is built again with the new key, on the same addresses, without stopping the node.

use libp2p::{Multiaddr, PeerId, Swarm, identity};

use super::behaviour::Behaviour;
use super::{EventLoop, NetworkConfig, NetworkEvent, transport};

/// A swarm with identity `keypair`, listening on `listen`.
pub(super) fn build_swarm(keypair: identity::Keypair, cfg: &NetworkConfig, listen: &[Multiaddr]) -> anyhow::Result<Swarm<Behaviour>> {
    let tcp = transport::build(&keypair, cfg.link_timeout)?;
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_other_transport(|_| tcp)?
        .with_behaviour(|_| Behaviour::new(&cfg.bounds))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(cfg.idle_timeout))
        // A dial stuck on a link that is down (SYNs retransmitted at 1, 3, 7 s …) would otherwise
        // hold off the next attempt long after the link is back.
        .with_connection_timeout(cfg.link_timeout)
        .build();
    for address in listen {
        swarm.listen_on(address.clone()).map_err(|e| anyhow::anyhow!("cannot listen on {address}: {e}"))?;
    }
    Ok(swarm)
}

impl EventLoop {
    /// Replaces the swarm by one with identity `keypair` on the addresses bound now (a port chosen
    /// by the system stays the same). The old swarm goes first, so its listeners free the ports and
    /// its connections close; whoever waits for an answer from it sees the network as unreachable.
    pub(super) fn rekey(&mut self, keypair: identity::Keypair) -> anyhow::Result<()> {
        let listen: Vec<Multiaddr> = self.swarm.listeners().cloned().collect();
        let allowed: Vec<PeerId> = self.swarm.behaviour().allowed.allowed_peers().iter().copied().collect();
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        self.pending.clear();
        self.pending_traces.clear();
        self.pending_pushes.clear();
        self.pending_attachments.clear();
        self.pending_reconciles.clear();
        self.pending_checkpoints.clear();
        self.dialing.clear();
        // A placeholder while the old swarm is dropped: binding the same port needs it gone.
        let placeholder = build_swarm(identity::Keypair::generate_ed25519(), &self.cfg, &[])?;
        drop(std::mem::replace(&mut self.swarm, placeholder));
        for peer in peers {
            let _ = self.events.try_send(NetworkEvent::PeerDown(peer));
        }
        let mut swarm = build_swarm(keypair, &self.cfg, &listen)?;
        for p in allowed {
            swarm.behaviour_mut().allowed.allow_peer(p);
        }
        for n in &self.neighbours {
            for a in &n.addresses {
                swarm.add_peer_address(n.peer, a.clone());
            }
        }
        self.swarm = swarm;
        tracing::info!(peer_id = %self.swarm.local_peer_id(), "links restarted with the new node key");
        self.dial_neighbours();
        Ok(())
    }
}
