//! A node's libp2p identity (derived from its node key, so the directory's key names the peer) and
//! the parent addresses an operator writes (`.../p2p/<peer id>`, one per replica of the parent).

use libp2p::{Multiaddr, PeerId};

/// The libp2p identity of a node key.
pub fn peer_id_of(key: &exchange_wire::PublicKey) -> PeerId {
    let pk = libp2p::identity::ed25519::PublicKey::try_from_bytes(key.0.as_bytes()).expect("valid ed25519 key");
    libp2p::identity::PublicKey::from(pk).to_peer_id()
}

/// The link keypair of a node key.
pub fn keypair_of(node_key: &ed25519_dalek::SigningKey) -> Result<libp2p::identity::Keypair, libp2p::identity::DecodingError> {
    libp2p::identity::Keypair::ed25519_from_bytes(node_key.to_bytes())
}

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
