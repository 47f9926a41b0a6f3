//! The composed libp2p behaviour: an allow list that admits only directory nodes, custody transfer and
//! message tracing and attachment chunks as request/response, and ping for round-trip times (which also keeps links warm).

use std::time::Duration;

use libp2p::swarm::NetworkBehaviour;
use libp2p::{StreamProtocol, allow_block_list, connection_limits, ping, request_response};

use super::protocol::{
    ATTACHMENT_PROTOCOL, AttachmentRequest, AttachmentResponse, DIRECTORY_PROTOCOL, DirectoryAck, DirectoryPush, RELAY_PROTOCOL, TRACE_PROTOCOL, TraceRequest, TraceResponse,
};
use super::checkpoint::{CHECKPOINT_PROTOCOL, CheckpointRequest, CheckpointResponse, MAX_MESSAGE_BYTES};
use super::reconcile::{RECONCILE_PROTOCOL, ReconcileRequest, ReconcileResponse};

/// Everything the node speaks to other nodes.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Connections from or to peers not on the list are refused before any protocol runs.
    pub allowed: allow_block_list::Behaviour<allow_block_list::AllowedPeers>,
    /// Caps on pending (handshaking) and established connections, overall and per peer: a flood of
    /// connections, even from a directory node, cannot use up the node's descriptors or memory.
    pub limits: connection_limits::Behaviour,
    pub relay: request_response::Behaviour<super::codec::RelayCodec>,
    pub trace: request_response::cbor::Behaviour<TraceRequest, TraceResponse>,
    pub directory: request_response::cbor::Behaviour<DirectoryPush, DirectoryAck>,
    pub attachment: request_response::cbor::Behaviour<AttachmentRequest, AttachmentResponse>,
    /// Asked by a neighbour restored from a backup (see `network::reconcile`).
    pub reconcile: request_response::cbor::Behaviour<ReconcileRequest, ReconcileResponse>,
    pub checkpoint: request_response::cbor::Behaviour<CheckpointRequest, CheckpointResponse>,
    pub ping: ping::Behaviour,
}

/// Bounds of the swarm: connections, and request sizes and streams per protocol. Memory held for one
/// connection's requests is at most the sum over protocols of streams × request size.
#[derive(Debug, Clone)]
pub struct Bounds {
    pub request_timeout: Duration,
    /// Largest custody batch (relay protocol) accepted.
    pub max_batch_bytes: u64,
    /// Largest directory push accepted.
    pub max_directory_bytes: u64,
    pub max_pending_connections: u32,
    pub max_established_connections: u32,
    pub max_connections_per_peer: u32,
}

/// Concurrent requests (inbound and outbound together: libp2p counts both against one limit) per
/// connection, per protocol. On a link each side's forwarder keeps up to
/// [`MAX_WINDOW_BATCHES`] batches in flight and beside them up to [`URGENT_WINDOW_BATCHES`] of urgent
/// entries, so the custody protocol needs twice their sum, and two more for a batch whose answer was
/// lost while its retry goes out (a request over the limit is dropped, and its handover fails and
/// backs off); an attachment transfer keeps 4 chunks
/// in flight (`relay::attachments`; a routine and an urgent transfer may run at once) and directory changes are pushed as they come (a burst makes
/// several pushes). These leave room for retries while bounding what a misbehaving neighbour can
/// make the node buffer.
const RELAY_STREAMS: usize = 2 * (MAX_WINDOW_BATCHES + URGENT_WINDOW_BATCHES) + 2;

/// Most custody batches a forwarder keeps in flight on one link (`relay.window_batches` is
/// checked against it).
pub const MAX_WINDOW_BATCHES: usize = 4;
/// Most batches of urgent entries (特急, 加急) a forwarder keeps in flight on one link beside its
/// window (`relay::window`): they never wait behind the routine batches on the link.
pub const URGENT_WINDOW_BATCHES: usize = 2;
/// Attachments: 4 chunks in flight per transfer, a routine and an urgent transfer per direction.
const ATTACHMENT_STREAMS: usize = 2 * 2 * 4 + 2;
const DIRECTORY_STREAMS: usize = 8;
const TRACE_STREAMS: usize = 8;
const RECONCILE_STREAMS: usize = 4;
const CHECKPOINT_STREAMS: usize = 2;

impl Behaviour {
    /// A custody batch larger than `bounds.max_batch_bytes` is answered `too_large`.
    pub fn new(bounds: &Bounds) -> Behaviour {
        let codec = super::codec::RelayCodec::new(bounds.max_batch_bytes, 16 * 1024 * 1024);
        let relay = request_response::Behaviour::with_codec(
            codec,
            [(StreamProtocol::new(RELAY_PROTOCOL), request_response::ProtocolSupport::Full)],
            request_response::Config::default().with_request_timeout(bounds.request_timeout).with_max_concurrent_streams(RELAY_STREAMS),
        );
        let trace = request_response::Behaviour::with_codec(
            request_response::cbor::codec::Codec::default().set_request_size_maximum(64 * 1024),
            [(StreamProtocol::new(TRACE_PROTOCOL), request_response::ProtocolSupport::Full)],
            request_response::Config::default().with_request_timeout(Duration::from_secs(10)).with_max_concurrent_streams(TRACE_STREAMS),
        );
        let directory = request_response::Behaviour::with_codec(
            request_response::cbor::codec::Codec::default()
                .set_request_size_maximum(bounds.max_directory_bytes)
                .set_response_size_maximum(1024 * 1024),
            [(StreamProtocol::new(DIRECTORY_PROTOCOL), request_response::ProtocolSupport::Full)],
            request_response::Config::default().with_request_timeout(Duration::from_secs(30)).with_max_concurrent_streams(DIRECTORY_STREAMS),
        );
        // One chunk per request, so a request is bounded by the chunk size, whatever the attachment's.
        let attachment = request_response::Behaviour::with_codec(
            request_response::cbor::codec::Codec::default()
                .set_request_size_maximum(crate::storage::attachments::CHUNK_BYTES + 64 * 1024)
                .set_response_size_maximum(64 * 1024),
            [(StreamProtocol::new(ATTACHMENT_PROTOCOL), request_response::ProtocolSupport::Full)],
            request_response::Config::default().with_request_timeout(Duration::from_secs(60)).with_max_concurrent_streams(ATTACHMENT_STREAMS),
        );
        // Pages of ids (a re-send request names at most `reconcile::PAGE` ids, about 200 KiB).
        let reconcile = request_response::Behaviour::with_codec(
            request_response::cbor::codec::Codec::default().set_request_size_maximum(1024 * 1024),
            [(StreamProtocol::new(RECONCILE_PROTOCOL), request_response::ProtocolSupport::Full)],
            request_response::Config::default().with_request_timeout(Duration::from_secs(60)).with_max_concurrent_streams(RECONCILE_STREAMS),
        );
        // A few hundred bytes each way; a child hands one per interval.
        let checkpoint = request_response::Behaviour::with_codec(
            request_response::cbor::codec::Codec::default().set_request_size_maximum(MAX_MESSAGE_BYTES).set_response_size_maximum(MAX_MESSAGE_BYTES),
            [(StreamProtocol::new(CHECKPOINT_PROTOCOL), request_response::ProtocolSupport::Full)],
            request_response::Config::default().with_request_timeout(Duration::from_secs(10)).with_max_concurrent_streams(CHECKPOINT_STREAMS),
        );
        let ping = ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_secs(5)));
        let limits = connection_limits::Behaviour::new(
            connection_limits::ConnectionLimits::default()
                .with_max_pending_incoming(Some(bounds.max_pending_connections))
                .with_max_pending_outgoing(Some(bounds.max_pending_connections))
                .with_max_established(Some(bounds.max_established_connections))
                .with_max_established_per_peer(Some(bounds.max_connections_per_peer)),
        );
        Behaviour { allowed: allow_block_list::Behaviour::default(), limits, relay, trace, directory, attachment, reconcile, checkpoint, ping }
    }
}
