//! The composed libp2p behaviour: an allow list that admits only directory nodes, custody transfer and
//! message tracing and attachment chunks as request/response, and ping for round-trip times (which also keeps links warm).

use std::time::Duration;

use libp2p::swarm::NetworkBehaviour;
use libp2p::{StreamProtocol, allow_block_list, ping, request_response};

use super::protocol::{
    ATTACHMENT_PROTOCOL, AttachmentRequest, AttachmentResponse, DIRECTORY_PROTOCOL, DirectoryAck, DirectoryPush, RELAY_PROTOCOL, TRACE_PROTOCOL, TraceRequest, TraceResponse,
};
use super::reconcile::{RECONCILE_PROTOCOL, ReconcileRequest, ReconcileResponse};

/// Everything the node speaks to other nodes.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Connections from or to peers not on the list are refused before any protocol runs.
    pub allowed: allow_block_list::Behaviour<allow_block_list::AllowedPeers>,
    pub relay: request_response::Behaviour<super::codec::RelayCodec>,
    pub trace: request_response::cbor::Behaviour<TraceRequest, TraceResponse>,
    pub directory: request_response::cbor::Behaviour<DirectoryPush, DirectoryAck>,
    pub attachment: request_response::cbor::Behaviour<AttachmentRequest, AttachmentResponse>,
    /// Asked by a neighbour restored from a backup (see `network::reconcile`).
    pub reconcile: request_response::cbor::Behaviour<ReconcileRequest, ReconcileResponse>,
    pub ping: ping::Behaviour,
}

impl Behaviour {
    /// `max_request_bytes` bounds an incoming batch; a larger one is answered `too_large`.
    pub fn new(max_request_bytes: u64, request_timeout: Duration) -> Behaviour {
        let codec = super::codec::RelayCodec::new(max_request_bytes, 16 * 1024 * 1024);
        let relay = request_response::Behaviour::with_codec(
            codec,
            [(StreamProtocol::new(RELAY_PROTOCOL), request_response::ProtocolSupport::Full)],
            request_response::Config::default().with_request_timeout(request_timeout).with_max_concurrent_streams(64),
        );
        let trace = request_response::cbor::Behaviour::new(
            [(StreamProtocol::new(TRACE_PROTOCOL), request_response::ProtocolSupport::Full)],
            request_response::Config::default().with_request_timeout(Duration::from_secs(10)),
        );
        let directory = request_response::Behaviour::with_codec(
            request_response::cbor::codec::Codec::default()
                .set_request_size_maximum(64 * 1024 * 1024)
                .set_response_size_maximum(1024 * 1024),
            [(StreamProtocol::new(DIRECTORY_PROTOCOL), request_response::ProtocolSupport::Full)],
            request_response::Config::default().with_request_timeout(Duration::from_secs(30)),
        );
        // One chunk per request, so a request is bounded by the chunk size, whatever the attachment's.
        let attachment = request_response::Behaviour::with_codec(
            request_response::cbor::codec::Codec::default()
                .set_request_size_maximum(crate::storage::attachments::CHUNK_BYTES + 64 * 1024)
                .set_response_size_maximum(64 * 1024),
            [(StreamProtocol::new(ATTACHMENT_PROTOCOL), request_response::ProtocolSupport::Full)],
            request_response::Config::default().with_request_timeout(Duration::from_secs(60)),
        );
        // Pages of ids: well within the codec's default limits.
        let reconcile = request_response::cbor::Behaviour::new(
            [(StreamProtocol::new(RECONCILE_PROTOCOL), request_response::ProtocolSupport::Full)],
            request_response::Config::default().with_request_timeout(Duration::from_secs(60)),
        );
        let ping = ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_secs(5)));
        Behaviour { allowed: allow_block_list::Behaviour::default(), relay, trace, directory, attachment, reconcile, ping }
    }
}
