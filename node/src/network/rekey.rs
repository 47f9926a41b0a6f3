//! A node that takes a new key takes a new libp2p identity with it (the identity is the node key):
//! the swarm is built again with the new key, on the same addresses, without stopping the node.

use std::time::Duration;

use libp2p::{Multiaddr, PeerId, Swarm, identity};

use super::behaviour::{Behaviour, Bounds};
use super::transport;

/// What a swarm is built with, besides its identity and addresses.
#[derive(Clone)]
pub(super) struct SwarmSettings {
    pub idle_timeout: Duration,
    pub link_timeout: Duration,
    pub bounds: Bounds,
}

/// A swarm with identity `keypair`, listening on `listen`.
pub(super) fn build_swarm(keypair: identity::Keypair, s: &SwarmSettings, listen: &[Multiaddr]) -> anyhow::Result<Swarm<Behaviour>> {
    let tcp = transport::build(&keypair, s.link_timeout)?;
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_other_transport(|_| tcp)?
        .with_behaviour(|_| Behaviour::new(&s.bounds))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(s.idle_timeout))
        // A dial stuck on a link that is down (SYNs retransmitted at 1, 3, 7 s …) would otherwise
        // hold off the next attempt long after the link is back.
        .with_connection_timeout(s.link_timeout)
        .build();
    for address in listen {
        swarm.listen_on(address.clone()).map_err(|e| anyhow::anyhow!("cannot listen on {address}: {e}"))?;
    }
    Ok(swarm)
}

/// Replaces `swarm` by one with identity `keypair` on the addresses bound now (a port chosen by the
/// system stays the same), with the same allowed peers and the neighbours' addresses. The old swarm
/// goes first, so its listeners free the ports and its connections close. Returns the peers that
/// were connected.
pub(super) fn rebuild(
    swarm: &mut Swarm<Behaviour>,
    keypair: identity::Keypair,
    s: &SwarmSettings,
    neighbours: &[(PeerId, Vec<Multiaddr>)],
) -> anyhow::Result<Vec<PeerId>> {
    let listen: Vec<Multiaddr> = swarm.listeners().cloned().collect();
    let allowed: Vec<PeerId> = swarm.behaviour().allowed.allowed_peers().iter().copied().collect();
    let connected: Vec<PeerId> = swarm.connected_peers().copied().collect();
    // A placeholder while the old swarm is dropped: binding the same port needs it gone.
    drop(std::mem::replace(swarm, build_swarm(identity::Keypair::generate_ed25519(), s, &[])?));
    let mut fresh = build_swarm(keypair, s, &listen)?;
    for p in allowed {
        fresh.behaviour_mut().allowed.allow_peer(p);
    }
    for (peer, addresses) in neighbours {
        for a in addresses {
            fresh.add_peer_address(*peer, a.clone());
        }
    }
    *swarm = fresh;
    Ok(connected)
}
