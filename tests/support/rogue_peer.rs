//! A node identity driven from the test: the real libp2p stack of the node (TCP, Noise, Yamux, the
//! custody protocol), run in-process with a directory node's key, so a test can hand a real node
//! what a compromised or misconfigured node would: a batch from a node that is not its neighbour, a
//! report forged for another node's units.

use std::path::Path;
use std::time::{Duration, Instant};

use exchange_node_core::network::protocol::{Parcel, TransferRequest, TransferResponse};
use exchange_node_core::network::{self, Client, NetworkConfig, Neighbour};
use exchange_wire::SignedEnvelope;
use libp2p::{Multiaddr, PeerId};

/// A node identity (its key file) speaking the custody protocol from the test process.
pub struct RoguePeer {
    rt: tokio::runtime::Runtime,
    client: Client,
}

impl RoguePeer {
    /// Starts the network stack with the node key in `key_file` (listening on a free loopback port).
    pub fn start(key_file: &Path) -> RoguePeer {
        let key = exchange_wire::keys::read(key_file).expect("read the node key");
        let keypair = libp2p::identity::Keypair::ed25519_from_bytes(key.to_bytes()).expect("ed25519 key");
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let client = rt.block_on(async {
            let cfg = NetworkConfig {
                listen: "/ip4/127.0.0.1/tcp/0".parse().unwrap(),
                idle_timeout: Duration::from_secs(60),
                link_timeout: Duration::from_secs(5),
                bounds: network::behaviour::Bounds {
                    request_timeout: Duration::from_secs(30),
                    max_batch_bytes: 64 << 20,
                    max_directory_bytes: 16 << 20,
                    max_pending_connections: 16,
                    max_established_connections: 16,
                    max_connections_per_peer: 4,
                },
            };
            let (client, mut events, event_loop) = network::new(keypair, cfg).expect("build the swarm");
            tokio::spawn(event_loop.run());
            // Nothing is served here: inbound events are dropped.
            tokio::spawn(async move { while events.recv().await.is_some() {} });
            client
        });
        RoguePeer { rt, client }
    }

    /// Connects to the node whose key file is `key_file`, listening on loopback port `port`.
    pub fn connect(&self, key_file: &Path, port: u16) -> PeerId {
        let key = exchange_wire::keys::read(key_file).expect("read the target's node key");
        let peer = exchange_node_core::directory::peer_id_of(&exchange_wire::PublicKey(key.verifying_key()));
        let address: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
        self.rt.block_on(async {
            self.client.set_peers(vec![peer], vec![Neighbour { peer, addresses: vec![address] }]).await;
            let deadline = Instant::now() + Duration::from_secs(20);
            while !self.client.connected().await.contains(&peer) {
                assert!(Instant::now() < deadline, "could not connect to {peer} on port {port}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        peer
    }

    /// Tries for `within` to reach `peer` on loopback port `port`: whether it answered a request (an
    /// empty directory push). A node that refuses the identity closes every connection at once, so
    /// no request gets through.
    pub fn try_connect(&self, peer: PeerId, port: u16, within: Duration) -> bool {
        let address: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
        self.rt.block_on(async {
            self.client.set_peers(vec![peer], vec![Neighbour { peer, addresses: vec![address] }]).await;
            let deadline = Instant::now() + within;
            while Instant::now() < deadline {
                let push = exchange_node_core::network::protocol::DirectoryPush { segments: vec![] };
                if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), self.client.push_directory(peer, push)).await {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        })
    }

    /// Pushes directory segments to `peer` and returns its answer (one result per segment).
    pub fn push_directory(&self, peer: PeerId, segments: Vec<exchange_node_core::network::protocol::SegmentParcel>) -> Vec<String> {
        self.rt
            .block_on(self.client.push_directory(peer, exchange_node_core::network::protocol::DirectoryPush { segments }))
            .expect("the push got an answer")
            .results
    }

    /// Hands `parcels` to `peer` as one custody batch and returns its answer.
    pub fn hand_over(&self, peer: PeerId, parcels: Vec<Parcel>) -> TransferResponse {
        self.rt.block_on(self.client.transfer(peer, TransferRequest { parcels })).expect("the batch got an answer")
    }
}

/// A parcel for a signed envelope, for the given recipients.
pub fn parcel(signed: &SignedEnvelope, payload: &[u8], recipients: Vec<exchange_wire::UnitAddress>) -> Parcel {
    Parcel {
        header: signed.bytes.clone(),
        signature: signed.signature.to_vec(),
        payload: payload.to_vec(),
        recipients,
        hops: vec![],
        sender_segment_version: 0,
    }
}
