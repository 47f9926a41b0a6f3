//! A small blocking client for the agency API, used by `exchange-admin`, the demo, the benchmark and
//! the tests, so all of them drive the real HTTP interface.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::*;
use crate::address::UnitAddress;
use crate::envelope::{MessageId, SignedEnvelope};

/// Why a call failed: the node's own error answer, or no answer at all.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("node refused the request ({status} {}): {}", body.error, body.message)]
    Refused { status: u16, body: ErrorBody },
    #[error("cannot reach the node at {url}: {reason}")]
    Transport { url: String, reason: String },
}

impl ClientError {
    /// The node's error code, if it answered.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Refused { body, .. } => Some(&body.error),
            ClientError::Transport { .. } => None,
        }
    }
}

/// A client for one node's agency API (`http://host:port`).
#[derive(Clone)]
pub struct ApiClient {
    base: String,
    agent: ureq::Agent,
}

impl ApiClient {
    pub fn new(base_url: &str) -> ApiClient {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        ApiClient { base: base_url.trim_end_matches('/').to_owned(), agent }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn finish<T: DeserializeOwned>(
        &self,
        url: &str,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<T, ClientError> {
        let transport = |reason: String| ClientError::Transport { url: url.to_owned(), reason };
        let mut resp = r.map_err(|e| transport(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = resp.body_mut().with_config().limit(1 << 30).read_to_vec().map_err(|e| transport(e.to_string()))?;
        if (200..300).contains(&status) {
            serde_json::from_slice(&body).map_err(|e| transport(format!("unexpected answer: {e}")))
        } else {
            let body = serde_json::from_slice(&body).unwrap_or_else(|_| ErrorBody {
                error: "http".into(),
                message: String::from_utf8_lossy(&body).into_owned(),
            });
            Err(ClientError::Refused { status, body })
        }
    }

    fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, ClientError> {
        let url = format!("{}{}", self.base, path);
        let r = self.agent.post(&url).send_json(body);
        self.finish(&url, r)
    }

    /// GET with query parameters.
    pub fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> Result<T, ClientError> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.agent.get(&url);
        for (k, v) in query {
            req = req.query(*k, v);
        }
        let r = req.call();
        self.finish(&url, r)
    }

    /// Submits a signed message.
    pub fn submit(&self, signed: &SignedEnvelope, payload: &[u8]) -> Result<SubmitResponse, ClientError> {
        self.post("/v1/messages", &SignedMessage::new(signed, payload))
    }

    /// Submits several signed messages in one request.
    pub fn submit_batch(&self, messages: Vec<SignedMessage>) -> Result<BatchSubmitResponse, ClientError> {
        self.post("/v1/messages:batch", &BatchSubmitRequest { messages })
    }

    /// The per-recipient status of a message sent from this node.
    pub fn status(&self, id: &MessageId) -> Result<StatusResponse, ClientError> {
        self.get(&format!("/v1/messages/{id}"), &[])
    }

    /// Reads a unit's inbox after `after`, waiting up to `wait` for something new (long-poll).
    pub fn inbox(
        &self,
        unit: &UnitAddress,
        after: i64,
        limit: u32,
        wait: Duration,
    ) -> Result<InboxResponse, ClientError> {
        self.get(
            &format!("/v1/units/{unit}/inbox"),
            &[("after", after.to_string()), ("limit", limit.to_string()), ("wait_ms", wait.as_millis().to_string())],
        )
    }

    /// Signs for (签收) a message in `unit`'s inbox with a receipt the unit signed.
    pub fn sign_for(
        &self,
        unit: &UnitAddress,
        message: &MessageId,
        receipt: &SignedEnvelope,
    ) -> Result<SignForResponse, ClientError> {
        self.post(&format!("/v1/units/{unit}/inbox/{message}/sign-for"), &SignedMessage::new(receipt, b""))
    }

    /// The node's health answer.
    pub fn health(&self) -> Result<Health, ClientError> {
        self.get("/healthz", &[])
    }

    /// The Prometheus text exposition.
    pub fn metrics_text(&self) -> Result<String, ClientError> {
        let url = format!("{}/metrics", self.base);
        let mut resp = self.agent.get(&url).call().map_err(|e| ClientError::Transport { url: url.clone(), reason: e.to_string() })?;
        resp.body_mut().read_to_string().map_err(|e| ClientError::Transport { url, reason: e.to_string() })
    }

    /// A node's custody events for a message (admin API: use a client on the admin address).
    pub fn events(&self, id: &MessageId) -> Result<EventsResponse, ClientError> {
        self.get(&format!("/admin/v1/messages/{id}/events"), &[])
    }
}
