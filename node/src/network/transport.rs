//! The node-to-node transport: TCP + Noise + Yamux, with dead links given up quickly.
//!
//! A link that goes down silently (a cable pulled, a route withdrawn, an interface taken down: no
//! reset reaches either end) leaves both ends holding an "established" TCP connection. Left to
//! itself, Linux keeps retransmitting on it with exponential backoff (0.2, 0.6, 1.4, 3, 6.2, 12.6 s
//! … after the first loss) for about 15 minutes, and nothing at the libp2p level closes it (ping
//! failures are only reported). When the link comes back the queued bytes wait for the next
//! retransmission, which after a cut of T seconds can be up to about T seconds away: a backlog that
//! starts moving seconds after the heal (11.7 s was seen).
//!
//! So every connection carries `TCP_USER_TIMEOUT`: data its peer's host has not acknowledged within
//! the link timeout aborts the connection. The libp2p connection then fails at once (no graceful
//! close waiting on a dead socket), outstanding requests fail and are retried, the node re-dials, and
//! the new connection carries the backlog as soon as the link is back. The acknowledgement comes from
//! the peer's kernel, not its process, so a busy or paused node is not taken for a dead link.

use std::time::Duration;

use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::Boxed;
use libp2p::core::upgrade::Version;
use libp2p::{PeerId, Transport, identity, noise, tcp, yamux};

/// TCP (no delay) with the link timeout on every connection, Noise with the node key, Yamux.
pub fn build(key: &identity::Keypair, link_timeout: Duration) -> Result<Boxed<(PeerId, StreamMuxerBox)>, noise::Error> {
    Ok(tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
        .map(move |stream, _| {
            give_up_after(&stream, link_timeout);
            stream
        })
        .upgrade(Version::V1Lazy)
        .authenticate(noise::Config::new(key)?)
        .multiplex(yamux::Config::default())
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
        .boxed())
}

/// Sets `TCP_USER_TIMEOUT` (Linux): unacknowledged data older than `timeout` aborts the connection.
fn give_up_after(stream: &tcp::tokio::TcpStream, timeout: Duration) {
    #[cfg(target_os = "linux")]
    if let Err(e) = socket2::SockRef::from(&stream.0).set_tcp_user_timeout(Some(timeout)) {
        tracing::warn!(error = %e, "cannot set TCP_USER_TIMEOUT: a link that dies silently will be noticed only after minutes");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (stream, timeout);
}
