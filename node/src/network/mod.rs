//! The libp2p side of the node, after rust-libp2p's file-sharing example: [`new`] returns a cloneable
//! [`Client`], a stream of [`NetworkEvent`]s and an [`EventLoop`] that alone owns the swarm. Nothing
//! here awaits storage or verifies signatures: the event loop only moves bytes, so a slow disk can
//! never stall the links.

pub mod behaviour;
pub mod checkpoint;
pub mod codec;
pub mod identity_and_addresses;
pub mod protocol;
pub mod reconcile;
pub mod transport;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::SwarmEvent;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::{Swarm, identity, ping};
use tokio::sync::{mpsc, oneshot};

use behaviour::{Behaviour, BehaviourEvent};
use protocol::{
    AttachmentRequest, AttachmentResponse, DirectoryAck, DirectoryPush, RelayRequest, TraceRequest, TraceResponse, TransferRequest, TransferResponse,
};
use checkpoint::{CheckpointRequest, CheckpointResponse};
use reconcile::{ReconcileRequest, ReconcileResponse};

/// A transfer that did not get an answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NetError {
    #[error("no answer from {peer}: {reason}")]
    Failed { peer: PeerId, reason: String, cause: FailureCause },
    #[error("the network task has stopped")]
    Stopped,
}

/// How a request failed, as far as the request itself is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureCause {
    /// The peer could not be reached (dial failed, protocol not spoken): nothing was sent.
    Unreachable,
    /// The request went out and then the exchange broke off (the stream ended early, the
    /// connection closed, no answer in time): the request itself may be the trouble, say too large
    /// for the peer to read or to commit in time.
    BrokenOff,
}

impl NetError {
    /// Whether the request reached the peer and the exchange broke off (see [`FailureCause`]).
    pub fn broke_off(&self) -> bool {
        matches!(self, NetError::Failed { cause: FailureCause::BrokenOff, .. })
    }
}

/// A neighbour to keep a link with.
#[derive(Debug, Clone)]
pub struct Neighbour {
    pub peer: PeerId,
    pub addresses: Vec<Multiaddr>,
}

/// Where the answer to one request from a neighbour goes. The relay holds it while it works and
/// gives it back to [`Client`] with the answer; libp2p's response channel stays inside `network/`.
pub struct Reply<T>(ResponseChannel<T>);

/// A neighbour's identity on the links and a link address, as the rest of the node names them.
pub use libp2p::{Multiaddr, PeerId};

pub use identity_and_addresses::{keypair_of, peer_id_of, split_peer_address, split_peer_addresses};

/// What the network reports to the node.
pub enum NetworkEvent {
    /// A neighbour handed over a batch; answer it with [`Client::respond`] after committing.
    Inbound { peer: PeerId, request: TransferRequest, channel: Reply<TransferResponse> },
    /// A neighbour pushes directory segments; answer with [`Client::respond_directory`].
    Directory { peer: PeerId, request: DirectoryPush, channel: Reply<DirectoryAck> },
    /// A neighbour offers or sends attachment bytes; answer with [`Client::respond_attachment`].
    Attachment { peer: PeerId, request: AttachmentRequest, channel: Reply<AttachmentResponse> },
    /// A connection was refused because the peer is not in the directory.
    Refused { peer: Option<PeerId>, inbound: bool },
    /// A neighbour asks for this node's custody events about a message.
    Trace { peer: PeerId, request: TraceRequest, channel: Reply<TraceResponse> },
    /// A neighbour restored from a backup asks what was exchanged with it; answer with
    /// [`Client::respond_reconcile`].
    Reconcile { peer: PeerId, request: ReconcileRequest, channel: Reply<ReconcileResponse> },
    /// A child hands or asks for its audit checkpoint; answer with [`Client::respond_checkpoint`].
    Checkpoint { peer: PeerId, request: CheckpointRequest, channel: Reply<CheckpointResponse> },
    PeerUp(PeerId),
    PeerDown(PeerId),
    /// A ping answered: the link works and this is its round-trip time.
    PeerRtt(PeerId, Duration),
}

enum Command {
    Transfer { peer: PeerId, request: RelayRequest, reply: oneshot::Sender<Result<TransferResponse, NetError>> },
    Respond { channel: ResponseChannel<TransferResponse>, response: TransferResponse },
    Trace { peer: PeerId, request: TraceRequest, reply: oneshot::Sender<Result<TraceResponse, NetError>> },
    RespondTrace { channel: ResponseChannel<TraceResponse>, response: TraceResponse },
    PushDirectory { peer: PeerId, request: DirectoryPush, reply: oneshot::Sender<Result<DirectoryAck, NetError>> },
    RespondDirectory { channel: ResponseChannel<DirectoryAck>, response: DirectoryAck },
    Attachment { peer: PeerId, request: AttachmentRequest, reply: oneshot::Sender<Result<AttachmentResponse, NetError>> },
    RespondAttachment { channel: ResponseChannel<AttachmentResponse>, response: AttachmentResponse },
    Reconcile { peer: PeerId, request: ReconcileRequest, reply: oneshot::Sender<Result<ReconcileResponse, NetError>> },
    RespondReconcile { channel: ResponseChannel<ReconcileResponse>, response: ReconcileResponse },
    Checkpoint { peer: PeerId, request: CheckpointRequest, reply: oneshot::Sender<Result<CheckpointResponse, NetError>> },
    RespondCheckpoint { channel: ResponseChannel<CheckpointResponse>, response: CheckpointResponse },
    SetPeers { allowed: Vec<PeerId>, neighbours: Vec<Neighbour> },
    Connected { reply: oneshot::Sender<Vec<PeerId>> },
}

/// Cloneable handle to the network task.
#[derive(Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
}

impl Client {
    /// Hands a batch to `peer` and waits for its answer (sent after the peer committed).
    pub async fn transfer(&self, peer: PeerId, request: TransferRequest) -> Result<TransferResponse, NetError> {
        let (reply, rx) = oneshot::channel();
        let request = RelayRequest::Batch(request);
        self.commands.send(Command::Transfer { peer, request, reply }).await.map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)?
    }

    /// Answers an inbound batch.
    pub async fn respond(&self, channel: Reply<TransferResponse>, response: TransferResponse) {
        let _ = self.commands.send(Command::Respond { channel: channel.0, response }).await;
    }

    /// Asks `peer` for its custody events about a message.
    pub async fn trace(&self, peer: PeerId, request: TraceRequest) -> Result<TraceResponse, NetError> {
        let (reply, rx) = oneshot::channel();
        self.commands.send(Command::Trace { peer, request, reply }).await.map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)?
    }

    /// Answers a trace request.
    pub async fn respond_trace(&self, channel: Reply<TraceResponse>, response: TraceResponse) {
        let _ = self.commands.send(Command::RespondTrace { channel: channel.0, response }).await;
    }

    /// Pushes directory segments to `peer`.
    pub async fn push_directory(&self, peer: PeerId, request: DirectoryPush) -> Result<DirectoryAck, NetError> {
        let (reply, rx) = oneshot::channel();
        self.commands.send(Command::PushDirectory { peer, request, reply }).await.map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)?
    }

    /// Answers a directory push.
    pub async fn respond_directory(&self, channel: Reply<DirectoryAck>, response: DirectoryAck) {
        let _ = self.commands.send(Command::RespondDirectory { channel: channel.0, response }).await;
    }

    /// Sends an attachment offer or chunk to `peer` and waits for its answer (after its commit).
    pub async fn attachment(&self, peer: PeerId, request: AttachmentRequest) -> Result<AttachmentResponse, NetError> {
        let (reply, rx) = oneshot::channel();
        self.commands.send(Command::Attachment { peer, request, reply }).await.map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)?
    }

    /// Answers an attachment offer or chunk.
    pub async fn respond_attachment(&self, channel: Reply<AttachmentResponse>, response: AttachmentResponse) {
        let _ = self.commands.send(Command::RespondAttachment { channel: channel.0, response }).await;
    }

    /// Asks neighbour `peer` about what it exchanged with this node (after a restore).
    pub async fn reconcile(&self, peer: PeerId, request: ReconcileRequest) -> Result<ReconcileResponse, NetError> {
        let (reply, rx) = oneshot::channel();
        self.commands.send(Command::Reconcile { peer, request, reply }).await.map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)?
    }

    /// Answers a restored neighbour's question.
    pub async fn respond_reconcile(&self, channel: Reply<ReconcileResponse>, response: ReconcileResponse) {
        let _ = self.commands.send(Command::RespondReconcile { channel: channel.0, response }).await;
    }

    /// Hands an audit checkpoint to, or asks one back from, the parent `peer`.
    pub async fn checkpoint(&self, peer: PeerId, request: CheckpointRequest) -> Result<CheckpointResponse, NetError> {
        let (reply, rx) = oneshot::channel();
        self.commands.send(Command::Checkpoint { peer, request, reply }).await.map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)?
    }

    /// Answers a child's checkpoint request.
    pub async fn respond_checkpoint(&self, channel: Reply<CheckpointResponse>, response: CheckpointResponse) {
        let _ = self.commands.send(Command::RespondCheckpoint { channel: channel.0, response }).await;
    }

    /// Sets which peers may connect (directory nodes) and which neighbours to keep dialled.
    pub async fn set_peers(&self, allowed: Vec<PeerId>, neighbours: Vec<Neighbour>) {
        let _ = self.commands.send(Command::SetPeers { allowed, neighbours }).await;
    }

    /// Peers connected now.
    pub async fn connected(&self) -> Vec<PeerId> {
        let (reply, rx) = oneshot::channel();
        if self.commands.send(Command::Connected { reply }).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }
}

/// Network settings.
pub struct NetworkConfig {
    pub listen: Multiaddr,
    pub idle_timeout: Duration,
    /// Data a neighbour's host leaves unacknowledged this long ends the connection, and a dial with
    /// its handshake must finish within it (see [`transport`]).
    pub link_timeout: Duration,
    /// Connection caps, request sizes and timeouts (see [`behaviour::Bounds`]).
    pub bounds: behaviour::Bounds,
}

/// Builds the swarm and starts listening.
pub fn new(
    keypair: identity::Keypair,
    cfg: NetworkConfig,
) -> anyhow::Result<(Client, mpsc::Receiver<NetworkEvent>, EventLoop)> {
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
    swarm
        .listen_on(cfg.listen.clone())
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", cfg.listen))?;
    let (commands, command_rx) = mpsc::channel(256);
    let (event_tx, events) = mpsc::channel(1024);
    let lp = EventLoop {
        swarm,
        commands: command_rx,
        events: event_tx,
        pending: HashMap::new(),
        pending_traces: HashMap::new(),
        pending_pushes: HashMap::new(),
        pending_attachments: HashMap::new(),
        pending_reconciles: HashMap::new(),
        pending_checkpoints: HashMap::new(),
        neighbours: Vec::new(),
        dialing: HashSet::new(),
        peers_known: false,
    };
    Ok((Client { commands }, events, lp))
}

/// Owns the swarm; run it with [`EventLoop::run`].
pub struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<NetworkEvent>,
    pending: HashMap<OutboundRequestId, oneshot::Sender<Result<TransferResponse, NetError>>>,
    pending_traces: HashMap<OutboundRequestId, oneshot::Sender<Result<TraceResponse, NetError>>>,
    pending_pushes: HashMap<OutboundRequestId, oneshot::Sender<Result<DirectoryAck, NetError>>>,
    pending_attachments: HashMap<OutboundRequestId, oneshot::Sender<Result<AttachmentResponse, NetError>>>,
    pending_reconciles: HashMap<OutboundRequestId, oneshot::Sender<Result<ReconcileResponse, NetError>>>,
    pending_checkpoints: HashMap<OutboundRequestId, oneshot::Sender<Result<CheckpointResponse, NetError>>>,
    neighbours: Vec<Neighbour>,
    dialing: HashSet<PeerId>,
    /// Whether the node has said who may connect ([`Command::SetPeers`]); see [`EventLoop::run`].
    peers_known: bool,
}

impl EventLoop {
    /// Runs until every [`Client`] is dropped.
    pub async fn run(mut self) {
        // A failed dial makes libp2p forget the peer: re-dial neighbours ourselves, on a timer.
        // Cheap while a link is down (a dial to an unreachable address fails at once or within
        // the link timeout), and bounds how long a healed link waits for its next dial.
        let mut redial = tokio::time::interval(Duration::from_millis(250));
        redial.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Until the node has loaded its directory and said who its peers are, the allow list is
        // empty and every neighbour would be refused (when a whole network restarts at once, each
        // node refused the others for some milliseconds, with a warning each). Take commands only:
        // incoming connections wait in the listen backlog meanwhile. Bounded, so a node that never
        // sends its peers still runs.
        let peers_due = tokio::time::sleep(Duration::from_secs(5));
        tokio::pin!(peers_due);
        while !self.peers_known {
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(c) => self.on_command(c),
                    None => return,
                },
                _ = &mut peers_due => break,
            }
        }
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(c) => self.on_command(c),
                    None => return,
                },
                _ = redial.tick() => self.dial_neighbours(),
            }
        }
    }

    fn dial_neighbours(&mut self) {
        for n in &self.neighbours {
            if n.addresses.is_empty() || self.swarm.is_connected(&n.peer) || self.dialing.contains(&n.peer) {
                continue;
            }
            let opts = DialOpts::peer_id(n.peer).addresses(n.addresses.clone()).build();
            if self.swarm.dial(opts).is_ok() {
                self.dialing.insert(n.peer);
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Transfer { peer, request, reply } => {
                let id = self.swarm.behaviour_mut().relay.send_request(&peer, request);
                self.pending.insert(id, reply);
            }
            Command::Respond { channel, response } => {
                // Fails only if the connection closed; the sender will retry and see a duplicate.
                let _ = self.swarm.behaviour_mut().relay.send_response(channel, response);
            }
            Command::Trace { peer, request, reply } => {
                let id = self.swarm.behaviour_mut().trace.send_request(&peer, request);
                self.pending_traces.insert(id, reply);
            }
            Command::RespondTrace { channel, response } => {
                let _ = self.swarm.behaviour_mut().trace.send_response(channel, response);
            }
            Command::PushDirectory { peer, request, reply } => {
                let id = self.swarm.behaviour_mut().directory.send_request(&peer, request);
                self.pending_pushes.insert(id, reply);
            }
            Command::RespondDirectory { channel, response } => {
                let _ = self.swarm.behaviour_mut().directory.send_response(channel, response);
            }
            Command::Attachment { peer, request, reply } => {
                let id = self.swarm.behaviour_mut().attachment.send_request(&peer, request);
                self.pending_attachments.insert(id, reply);
            }
            Command::RespondAttachment { channel, response } => {
                let _ = self.swarm.behaviour_mut().attachment.send_response(channel, response);
            }
            Command::Reconcile { peer, request, reply } => {
                let id = self.swarm.behaviour_mut().reconcile.send_request(&peer, request);
                self.pending_reconciles.insert(id, reply);
            }
            Command::Checkpoint { peer, request, reply } => {
                let id = self.swarm.behaviour_mut().checkpoint.send_request(&peer, request);
                self.pending_checkpoints.insert(id, reply);
            }
            Command::RespondCheckpoint { channel, response } => {
                let _ = self.swarm.behaviour_mut().checkpoint.send_response(channel, response);
            }
            Command::RespondReconcile { channel, response } => {
                let _ = self.swarm.behaviour_mut().reconcile.send_response(channel, response);
            }
            Command::SetPeers { allowed, neighbours } => {
                self.peers_known = true;
                let keep: HashSet<PeerId> = allowed.iter().copied().collect();
                let old: Vec<PeerId> = self.swarm.behaviour().allowed.allowed_peers().iter().copied().collect();
                for p in old.into_iter().filter(|p| !keep.contains(p)) {
                    self.swarm.behaviour_mut().allowed.disallow_peer(p);
                }
                for p in allowed {
                    self.swarm.behaviour_mut().allowed.allow_peer(p);
                }
                for n in &neighbours {
                    for a in &n.addresses {
                        self.swarm.add_peer_address(n.peer, a.clone());
                    }
                }
                self.neighbours = neighbours;
                self.dial_neighbours();
            }
            Command::Connected { reply } => {
                let _ = reply.send(self.swarm.connected_peers().copied().collect());
            }
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Relay(e)) => self.on_relay_event(e),
            SwarmEvent::Behaviour(BehaviourEvent::Trace(e)) => self.on_trace_event(e),
            SwarmEvent::Behaviour(BehaviourEvent::Directory(e)) => self.on_directory_event(e),
            SwarmEvent::Behaviour(BehaviourEvent::Attachment(e)) => self.on_attachment_event(e),
            SwarmEvent::Behaviour(BehaviourEvent::Reconcile(e)) => self.on_reconcile_event(e),
            SwarmEvent::Behaviour(BehaviourEvent::Checkpoint(e)) => {
                let events = self.events.clone();
                answer_or_deliver(e, &mut self.pending_checkpoints, |peer, request, channel| {
                    // Unanswered when the node is saturated: the child tries again next interval.
                    let _ = events.try_send(NetworkEvent::Checkpoint { peer, request, channel: Reply(channel) });
                });
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event { peer, result: Ok(rtt), .. })) => {
                let _ = self.events.try_send(NetworkEvent::PeerRtt(peer, rtt));
            }
            SwarmEvent::ConnectionEstablished { peer_id, num_established, endpoint, .. } => {
                self.dialing.remove(&peer_id);
                if num_established.get() == 1 {
                    tracing::info!(peer = %peer_id, address = %endpoint.get_remote_address(), "link up");
                    let _ = self.events.try_send(NetworkEvent::PeerUp(peer_id));
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established: 0, cause, .. } => {
                tracing::info!(peer = %peer_id, cause = ?cause, "link down");
                let _ = self.events.try_send(NetworkEvent::PeerDown(peer_id));
                // Try again at once: the link may be back already, or the other end just restarted.
                self.dial_neighbours();
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                if let Some(peer) = peer_id {
                    self.dialing.remove(&peer);
                }
                if matches!(error, libp2p::swarm::DialError::Denied { .. }) {
                    let _ = self.events.try_send(NetworkEvent::Refused { peer: peer_id, inbound: false });
                }
                tracing::debug!(peer = ?peer_id, %error, "dial failed");
            }
            SwarmEvent::NewListenAddr { address, .. } => tracing::info!(%address, "listening for nodes"),
            SwarmEvent::IncomingConnectionError { send_back_addr, error, peer_id, .. } => {
                if matches!(error, libp2p::swarm::ListenError::Denied { .. }) {
                    let _ = self.events.try_send(NetworkEvent::Refused { peer: peer_id, inbound: true });
                }
                tracing::warn!(from = %send_back_addr, peer = ?peer_id, %error, "refused an incoming connection");
            }
            _ => {}
        }
    }

    fn on_directory_event(&mut self, event: request_response::Event<DirectoryPush, DirectoryAck>) {
        let events = self.events.clone();
        answer_or_deliver(event, &mut self.pending_pushes, |peer, request, channel| {
            let _ = events.try_send(NetworkEvent::Directory { peer, request, channel: Reply(channel) });
        });
    }

    fn on_attachment_event(&mut self, event: request_response::Event<AttachmentRequest, AttachmentResponse>) {
        let events = self.events.clone();
        answer_or_deliver(event, &mut self.pending_attachments, |peer, request, channel| {
            // Unanswered when the node is saturated: the sender times out and offers again.
            let _ = events.try_send(NetworkEvent::Attachment { peer, request, channel: Reply(channel) });
        });
    }

    fn on_reconcile_event(&mut self, event: request_response::Event<ReconcileRequest, ReconcileResponse>) {
        let events = self.events.clone();
        answer_or_deliver(event, &mut self.pending_reconciles, |peer, request, channel| {
            // Unanswered when the node is saturated: the restored neighbour asks again.
            let _ = events.try_send(NetworkEvent::Reconcile { peer, request, channel: Reply(channel) });
        });
    }

    fn on_trace_event(&mut self, event: request_response::Event<TraceRequest, TraceResponse>) {
        let events = self.events.clone();
        answer_or_deliver(event, &mut self.pending_traces, |peer, request, channel| {
            let _ = events.try_send(NetworkEvent::Trace { peer, request, channel: Reply(channel) });
        });
    }

    fn on_relay_event(&mut self, event: request_response::Event<RelayRequest, TransferResponse>) {
        let events = self.events.clone();
        let mut too_large = None;
        answer_or_deliver(event, &mut self.pending, |peer, request, channel| match request {
            RelayRequest::Batch(request) => {
                // Back-pressure: when the node is saturated the request goes unanswered and the
                // sender retries later; nothing is lost because nothing was acknowledged.
                if events.try_send(NetworkEvent::Inbound { peer, request, channel: Reply(channel) }).is_err() {
                    tracing::warn!(%peer, "inbound queue full; the batch will be retried by the sender");
                }
            }
            RelayRequest::Oversized { limit } => too_large = Some((peer, limit, channel)),
        });
        if let Some((peer, limit, channel)) = too_large {
            // Nothing of it was kept: tell the sender, which splits the batch.
            tracing::warn!(%peer, limit_bytes = limit, "a batch was larger than this node reads (see relay.batch_max_bytes); answered too_large");
            let _ = self.swarm.behaviour_mut().relay.send_response(channel, TransferResponse { results: Vec::new(), too_large: Some(limit) });
        }
    }
}

/// The common handling of a request/response event: an incoming request goes to `on_request`; an
/// answer or a failure goes to whoever waits for it in `pending`.
fn answer_or_deliver<Req, Resp>(
    event: request_response::Event<Req, Resp>,
    pending: &mut HashMap<OutboundRequestId, oneshot::Sender<Result<Resp, NetError>>>,
    on_request: impl FnOnce(PeerId, Req, ResponseChannel<Resp>),
) {
    match event {
        request_response::Event::Message { peer, message, .. } => match message {
            request_response::Message::Request { request, channel, .. } => on_request(peer, request, channel),
            request_response::Message::Response { request_id, response } => {
                if let Some(reply) = pending.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
            }
        },
        request_response::Event::OutboundFailure { request_id, error, peer, .. } => {
            if let Some(reply) = pending.remove(&request_id) {
                let cause = match error {
                    request_response::OutboundFailure::DialFailure | request_response::OutboundFailure::UnsupportedProtocols => {
                        FailureCause::Unreachable
                    }
                    _ => FailureCause::BrokenOff,
                };
                let _ = reply.send(Err(NetError::Failed { peer, reason: error.to_string(), cause }));
            }
        }
        request_response::Event::InboundFailure { peer, error, .. } => {
            tracing::debug!(%peer, %error, "an inbound request failed");
        }
        request_response::Event::ResponseSent { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(port: u16) -> NetworkConfig {
        NetworkConfig {
            listen: format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap(),
            idle_timeout: Duration::from_secs(60),
            link_timeout: Duration::from_secs(5),
            bounds: behaviour::Bounds {
                request_timeout: Duration::from_secs(30),
                max_batch_bytes: 1 << 20,
                max_directory_bytes: 1 << 20,
                max_pending_connections: 16,
                max_established_connections: 16,
                max_connections_per_peer: 4,
            },
        }
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    /// A neighbour that dials a node before the node has said who its peers are (a node starting
    /// while its neighbours run) is kept waiting, not refused, and gets in once the peers are set.
    #[tokio::test]
    async fn a_neighbour_dialing_before_the_peers_are_known_waits_instead_of_being_refused() {
        let (node_key, neighbour_key) = (identity::Keypair::generate_ed25519(), identity::Keypair::generate_ed25519());
        let (node_peer, neighbour_peer) = (node_key.public().to_peer_id(), neighbour_key.public().to_peer_id());
        let port = free_port();
        let (node, mut node_events, node_loop) = new(node_key, config(port)).unwrap();
        tokio::spawn(node_loop.run());
        let (neighbour, mut neighbour_events, neighbour_loop) = new(neighbour_key, config(0)).unwrap();
        tokio::spawn(neighbour_loop.run());
        tokio::spawn(async move { while neighbour_events.recv().await.is_some() {} });
        let address: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
        neighbour.set_peers(vec![node_peer], vec![Neighbour { peer: node_peer, addresses: vec![address] }]).await;

        // Several redials (every 250 ms) while the node does not know its peers yet.
        let quiet = tokio::time::timeout(Duration::from_millis(800), async {
            loop {
                if let Some(NetworkEvent::Refused { peer, inbound }) = node_events.recv().await {
                    return (peer, inbound);
                }
            }
        })
        .await;
        assert!(quiet.is_err(), "the node refused its neighbour before it knew its peers: {quiet:?}");

        node.set_peers(vec![neighbour_peer], vec![]).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !neighbour.connected().await.contains(&node_peer) {
            assert!(tokio::time::Instant::now() < deadline, "the neighbour never got in");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(node.connected().await.contains(&neighbour_peer));
    }
}
