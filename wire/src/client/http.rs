//! The HTTP side of the client: the blocking agent, and sending a GET again when a kept-alive
//! connection was reset under it.

use std::time::Duration;

/// Sends a GET, and once more if the node reset the connection. A kept-alive connection that the node
/// closes as idle (after its header timeout) at the moment a request is written on it answers with a
/// reset; a GET changes nothing, so sending it again on a fresh connection is safe.
pub(super) fn call_again_if_reset(
    request: impl Fn() -> ureq::RequestBuilder<ureq::typestate::WithoutBody>,
) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
    match request().call() {
        Err(ureq::Error::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::UnexpectedEof
            ) =>
        {
            request().call()
        }
        r => r,
    }
}

/// A blocking HTTP agent that returns error statuses as answers (the node's error bodies are read).
pub(super) fn agent(timeout: Option<Duration>, tls: Option<ureq::tls::TlsConfig>) -> ureq::Agent {
    let mut config = ureq::Agent::config_builder().http_status_as_error(false).timeout_global(timeout);
    if let Some(tls) = tls {
        config = config.tls_config(tls);
    }
    config.build().into()
}
