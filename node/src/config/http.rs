//! `[api]` and `[admin]`: the two HTTP listeners and the bounds every listener applies.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The agency HTTP API (also serves `/metrics` and `/healthz`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    /// Upper bound on a long-poll wait.
    pub max_wait_ms: u64,
    /// Every agency request must carry a unit token (`Authorization: Bearer …`). Turn off only on a
    /// closed test bench.
    pub require_auth: bool,
    /// Let webhooks point at loopback addresses (`localhost`, 127.0.0.0/8, ::1). Off by default: a
    /// webhook must never reach the node's own admin API or other local services.
    pub webhooks_to_loopback: bool,
    /// Requests refused for want of a valid unit token are audited as one entry per source and
    /// reason per this many seconds, not one synced entry each.
    pub refusal_audit_secs: u64,
    /// Connection and request bounds of this listener (see [`HttpLimits`] for each key).
    pub header_timeout_secs: u64,
    pub request_timeout_secs: u64,
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    pub max_concurrent_requests: usize,
    /// TLS certificate chain and private key (PEM files; relative paths against the config file's
    /// folder). Both or neither; without them the listener speaks plain HTTP.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP on an address other than loopback (bearer tokens in clear text). Off by
    /// default: set it only when a TLS proxy in front of the node encrypts the traffic.
    pub allow_plain_http: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        let h = HttpLimits::default();
        ApiConfig {
            listen: "127.0.0.1:8080".parse().unwrap(),
            max_wait_ms: 60_000,
            require_auth: true,
            webhooks_to_loopback: false,
            refusal_audit_secs: 60,
            header_timeout_secs: h.header_timeout_secs,
            request_timeout_secs: h.request_timeout_secs,
            max_connections: h.max_connections,
            max_connections_per_client: h.max_connections_per_client,
            max_concurrent_requests: h.max_concurrent_requests,
            tls_cert: None,
            tls_key: None,
            allow_plain_http: false,
        }
    }
}

/// The admin API used by `exchange-admin` (loopback by default).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// The operator token every admin call must carry (`Authorization: Bearer …`). Created with mode
    /// 0600 at first start; default `<data_dir>/admin.token`. See docs/security.md.
    pub token_file: Option<PathBuf>,
    /// Host names accepted in the `Host` header besides IP addresses and `localhost` (a name
    /// anyone's DNS can point here is how a web page would reach this API: DNS rebinding).
    pub allowed_hosts: Vec<String>,
    /// Refused admin requests are audited as one entry per source and reason per this many seconds,
    /// not one synced entry each.
    pub refusal_audit_secs: u64,
    /// Connection and request bounds of this listener (see [`HttpLimits`]); the admin API serves
    /// operators, so its caps are smaller than the agency API's.
    pub header_timeout_secs: u64,
    pub request_timeout_secs: u64,
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    pub max_concurrent_requests: usize,
    /// TLS certificate chain and private key (PEM files; relative paths against the config file's
    /// folder). Both or neither; without them the listener speaks plain HTTP.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP on an address other than loopback (bearer tokens in clear text). Off by
    /// default: set it only when a TLS proxy in front of the node encrypts the traffic.
    pub allow_plain_http: bool,
}

impl Default for AdminConfig {
    fn default() -> Self {
        let h = HttpLimits::default();
        AdminConfig {
            listen: "127.0.0.1:9080".parse().unwrap(),
            header_timeout_secs: h.header_timeout_secs,
            request_timeout_secs: 300,
            max_connections: 64,
            max_connections_per_client: 32,
            max_concurrent_requests: 32,
            tls_cert: None,
            tls_key: None,
            allow_plain_http: false,
            token_file: None,
            allowed_hosts: Vec::new(),
            refusal_audit_secs: 60,
        }
    }
}

impl ApiConfig {
    pub fn http_limits(&self) -> HttpLimits {
        HttpLimits {
            header_timeout_secs: self.header_timeout_secs,
            request_timeout_secs: self.request_timeout_secs,
            max_connections: self.max_connections,
            max_connections_per_client: self.max_connections_per_client,
            max_concurrent_requests: self.max_concurrent_requests,
        }
    }
}

impl AdminConfig {
    pub fn http_limits(&self) -> HttpLimits {
        HttpLimits {
            header_timeout_secs: self.header_timeout_secs,
            request_timeout_secs: self.request_timeout_secs,
            max_connections: self.max_connections,
            max_connections_per_client: self.max_connections_per_client,
            max_concurrent_requests: self.max_concurrent_requests,
        }
    }
}

/// Bounds of an HTTP listener, so that idle, slow or numerous clients cannot use up the node's file
/// descriptors or tasks (`[api]` and `[admin]` take the same keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// A request's headers must arrive in full within this time of the connection opening or of the
    /// previous answer; otherwise the connection is closed. This is also the keep-alive idle timeout.
    pub header_timeout_secs: u64,
    /// Longest a request may take, body included, before it is answered 408 (must exceed
    /// `api.max_wait_ms`, the longest inbox long-poll).
    pub request_timeout_secs: u64,
    /// Open connections at most; further connections are closed as soon as they are accepted. Keep
    /// well below the process's descriptor limit (`ulimit -n`).
    pub max_connections: usize,
    /// Open connections at most from one client IP address.
    pub max_connections_per_client: usize,
    /// Requests in progress at most; further requests are answered 503 with `Retry-After`.
    pub max_concurrent_requests: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout_secs: 10,
            request_timeout_secs: 120,
            max_connections: 512,
            max_connections_per_client: 64,
            max_concurrent_requests: 256,
        }
    }
}
