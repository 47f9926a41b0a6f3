//! A parent's address from the configuration (`parent_address`): its peer id and the addresses to
//! dial, several when the parent runs as replicas (an active city node and its standby, one peer id).

use libp2p::{Multiaddr, PeerId};

/// Splits a parent address (`.../p2p/<peer id>`) into the peer id and the address to dial.
pub fn split_peer_address(text: &str) -> Result<(PeerId, Multiaddr), String> {
    use libp2p::multiaddr::Protocol;
    let mut addr: Multiaddr = text.parse().map_err(|e| format!("{text:?} is not a multiaddress: {e}"))?;
    match addr.pop() {
        Some(Protocol::P2p(peer)) => Ok((peer, addr)),
        _ => Err(format!("{text:?} must end in /p2p/<peer-id> (the parent's peer id, printed by its exchange-node keygen)")),
    }
}

/// Splits a list of parent addresses, separated by commas, into the parent's peer id and the
/// addresses to dial: the addresses of the replicas of one node (an active city node and its
/// standby), which share the node's key and so its peer id. All must name the same peer id.
pub fn split_peer_addresses(text: &str) -> Result<(PeerId, Vec<Multiaddr>), String> {
    let mut peer = None;
    let mut addresses = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (p, a) = split_peer_address(part)?;
        match peer {
            Some(first) if first != p => {
                return Err(format!(
                    "lists two peer ids ({first} and {p}): the addresses are the replicas of one node, which share its key and peer id"
                ));
            }
            _ => peer = Some(p),
        }
        addresses.push(a);
    }
    let peer = peer.ok_or_else(|| "is empty: give the parent's address, ending in /p2p/<peer-id>".to_string())?;
    Ok((peer, addresses))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerId {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).expect("random bytes");
        libp2p::identity::Keypair::ed25519_from_bytes(seed).expect("an ed25519 key").public().to_peer_id()
    }

    #[test]
    fn the_replicas_of_one_parent_share_its_peer_id() {
        let (p, q) = (peer(), peer());
        let (got, addresses) = split_peer_addresses(&format!("/ip4/10.0.0.5/tcp/7000/p2p/{p}, /ip4/10.0.0.6/tcp/7000/p2p/{p}")).unwrap();
        assert_eq!(got, p);
        assert_eq!(addresses, vec!["/ip4/10.0.0.5/tcp/7000".parse::<Multiaddr>().unwrap(), "/ip4/10.0.0.6/tcp/7000".parse().unwrap()]);
        let one = split_peer_addresses(&format!("/ip4/10.0.0.5/tcp/7000/p2p/{p}")).unwrap();
        assert_eq!(one.1.len(), 1);
        let e = split_peer_addresses(&format!("/ip4/10.0.0.5/tcp/7000/p2p/{p},/ip4/10.0.0.6/tcp/7000/p2p/{q}")).unwrap_err();
        assert!(e.contains("two peer ids"), "{e}");
        assert!(split_peer_addresses(" , ").unwrap_err().contains("is empty"));
        assert!(split_peer_addresses("/ip4/10.0.0.5/tcp/7000").unwrap_err().contains("/p2p/"));
    }
}
