//! A small blocking client for the agency API and the admin API, used by `exchange-admin`, the demo,
//! the benchmark and the tests, so all of them drive the real HTTP interface.
//!
//! One `ApiClient` talks to one listener: make one on the node's agency address for the agency calls
//! and one on its admin address (`admin.listen`) for the calls documented as admin API.

mod http;
mod sharing;

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::*;
use crate::address::{NodeId, UnitAddress};
use crate::directory::{NodeRecord, UnitRecord};
use crate::envelope::{MessageId, SignedEnvelope};
use http::{agent, call_again_if_reset};

/// Why a call failed: the node's own error answer, an answer that could not be decoded, or no answer
/// at all.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("node refused the request ({status} {}): {}", body.error, body.message)]
    Refused { status: u16, body: ErrorBody },
    /// Something answered, but not with what this API promises for that status: another service on
    /// that address, the wrong listener (agency instead of admin), or a node of another release.
    #[error("unexpected answer from {url} (HTTP {status}): {reason}")]
    Protocol { url: String, status: u16, reason: String },
    #[error("cannot reach the node at {url}: {reason}")]
    Transport { url: String, reason: String },
}

impl ClientError {
    /// The node's error code, if it answered.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Refused { body, .. } => Some(&body.error),
            ClientError::Protocol { .. } | ClientError::Transport { .. } => None,
        }
    }
}

/// A client for one node's agency API (`http://host:port`).
#[derive(Clone)]
pub struct ApiClient {
    base: String,
    agent: ureq::Agent,
    /// The unit's API token, sent as `Authorization: Bearer …` on every request.
    token: Option<String>,
    /// The certificate authorities trusted for `https://` (none: the public web roots), kept so that
    /// an agent rebuilt with another timeout trusts the same ones.
    tls: Option<ureq::tls::TlsConfig>,
}

impl ApiClient {
    pub fn new(base_url: &str) -> ApiClient {
        let agent = agent(Some(Duration::from_secs(120)), None);
        ApiClient { base: base_url.trim_end_matches('/').to_owned(), agent, token: None, tls: None }
    }

    /// The same client with another limit on each whole call (`None`: none), for long operations
    /// such as a backup of a large node. Keeps the certificate authorities it was made with.
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> ApiClient {
        self.agent = agent(timeout, self.tls.clone());
        self
    }

    /// A client that trusts the certificate authorities in `ca_pem` (PEM, one or more certificates)
    /// for `https://` addresses: the node's own CA, or its self-signed certificate. Without it,
    /// `https://` addresses are checked against the public web roots.
    pub fn with_ca_pem(base_url: &str, ca_pem: &[u8]) -> Result<ApiClient, ClientError> {
        use ureq::tls::{PemItem, RootCerts, TlsConfig};
        let bad = |reason: String| ClientError::Transport { url: base_url.to_owned(), reason };
        let mut roots = Vec::new();
        for item in ureq::tls::parse_pem(ca_pem) {
            if let PemItem::Certificate(cert) = item.map_err(|e| bad(format!("the CA file is not PEM: {e}")))? {
                roots.push(cert);
            }
        }
        if roots.is_empty() {
            return Err(bad("the CA file holds no PEM certificate".into()));
        }
        let tls = TlsConfig::builder().root_certs(RootCerts::new_with_certs(&roots)).build();
        let agent = agent(Some(Duration::from_secs(120)), Some(tls.clone()));
        Ok(ApiClient { base: base_url.trim_end_matches('/').to_owned(), agent, token: None, tls: Some(tls) })
    }

    /// [`ApiClient::with_ca_pem`] reading the PEM file at `ca_file`.
    pub fn with_ca_file(base_url: &str, ca_file: &std::path::Path) -> Result<ApiClient, ClientError> {
        let pem = std::fs::read(ca_file).map_err(|e| ClientError::Transport {
            url: base_url.to_owned(),
            reason: format!("cannot read the CA file {}: {e}", ca_file.display()),
        })?;
        ApiClient::with_ca_pem(base_url, &pem)
    }

    /// The same client, authenticating as the unit that owns `token` (issued with
    /// `exchange-admin tokens issue`).
    pub fn with_token(mut self, token: impl Into<String>) -> ApiClient {
        self.token = Some(token.into());
        self
    }

    fn authorised<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => req.header("Authorization", format!("Bearer {t}")),
            None => req,
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn finish<T: DeserializeOwned>(
        &self,
        url: &str,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<T, ClientError> {
        self.finish_accepting(url, r, &[])
    }

    /// Decodes a 2xx answer, or one of the `also_ok` statuses, as `T`; any other status as a refusal.
    fn finish_accepting<T: DeserializeOwned>(
        &self,
        url: &str,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        also_ok: &[u16],
    ) -> Result<T, ClientError> {
        let transport = |reason: String| ClientError::Transport { url: url.to_owned(), reason };
        let mut resp = r.map_err(|e| transport(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = resp.body_mut().with_config().limit(1 << 30).read_to_vec().map_err(|e| transport(e.to_string()))?;
        if (200..300).contains(&status) || also_ok.contains(&status) {
            serde_json::from_slice(&body).map_err(|e| ClientError::Protocol { url: url.to_owned(), status, reason: e.to_string() })
        } else {
            let body = serde_json::from_slice(&body).unwrap_or_else(|_| ErrorBody {
                error: "http".into(),
                message: String::from_utf8_lossy(&body).into_owned(),
            });
            Err(ClientError::Refused { status, body })
        }
    }

    /// POST with a JSON body.
    pub fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, ClientError> {
        let url = format!("{}{}", self.base, path);
        let r = self.authorised(self.agent.post(&url)).send_json(body);
        self.finish(&url, r)
    }

    /// GET with query parameters.
    pub fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> Result<T, ClientError> {
        let url = format!("{}{}", self.base, path);
        let r = call_again_if_reset(|| {
            let mut req = self.authorised(self.agent.get(&url));
            for (k, v) in query {
                req = req.query(*k, v);
            }
            req
        });
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

    /// Returns (退回) a message in `unit`'s inbox with a 退回 receipt the unit signed.
    pub fn return_message(&self, unit: &UnitAddress, message: &MessageId, receipt: &SignedEnvelope) -> Result<SignForResponse, ClientError> {
        self.post(&format!("/v1/units/{unit}/inbox/{message}/return"), &SignedMessage::new(receipt, b""))
    }

    /// 撤回: withdraws document `message` with a recall its sender signed (`receipt::recall`).
    pub fn recall(&self, message: &MessageId, recall: &SignedEnvelope) -> Result<SubmitResponse, ClientError> {
        self.post(&format!("/v1/messages/{message}/recall"), &SignedMessage::new(recall, b""))
    }

    /// 补发: re-sends document `message` to recipients it missed, as a new document whose metadata
    /// `resend.of` names the original (same sender, same payload).
    pub fn resend(&self, message: &MessageId, resend: &SignedEnvelope, payload: &[u8]) -> Result<SubmitResponse, ClientError> {
        self.post(&format!("/v1/messages/{message}/resend"), &SignedMessage::new(resend, payload))
    }

    /// Asks a query (`exchange_wire::query::question`, signed by the asking unit).
    pub fn ask(&self, query: &SignedEnvelope, payload: &[u8]) -> Result<SubmitResponse, ClientError> {
        self.post("/v1/queries", &SignedMessage::new(query, payload))
    }

    /// The state of a query asked from this node, waiting up to `wait` for its outcome (answered,
    /// timed out or failed).
    pub fn query_status(&self, id: &MessageId, wait: Duration) -> Result<QueryStatus, ClientError> {
        self.get(&format!("/v1/queries/{id}"), &[("wait_ms", wait.as_millis().to_string())])
    }

    /// Answers query `query` in `unit`'s inbox with an answer the unit signed
    /// (`exchange_wire::query::answer`).
    pub fn answer(&self, unit: &UnitAddress, query: &MessageId, answer: &SignedEnvelope, payload: &[u8]) -> Result<SubmitResponse, ClientError> {
        self.post(&format!("/v1/units/{unit}/inbox/{query}/answer"), &SignedMessage::new(answer, payload))
    }

    /// How much of attachment `sha256` the node holds for this unit: complete if the unit uploaded
    /// it or received it; otherwise how much of the unit's own upload is committed (0 when the node
    /// answers 404: nothing held for this unit, whatever other units hold).
    pub fn attachment_status(&self, sha256: &crate::Digest) -> Result<AttachmentStatus, ClientError> {
        match self.get(&format!("/v1/attachments/{sha256}"), &[]) {
            Err(ClientError::Refused { status: 404, body }) if body.error == "not-found" => {
                Ok(AttachmentStatus { sha256: *sha256, committed_bytes: 0, complete: false })
            }
            other => other,
        }
    }

    /// Uploads an attachment file, streamed, resuming from what the node already holds: after an
    /// interruption, calling this again sends only the bytes past the node's last committed chunk.
    /// The file must still have the attachment's size and digest (the node checks the digest when
    /// the last byte arrives).
    pub fn upload_attachment(&self, file: &std::path::Path, a: &crate::document::Attachment) -> Result<AttachmentStatus, ClientError> {
        use std::io::{Read, Seek};
        let url = format!("{}/v1/attachments/{}", self.base, a.sha256);
        let io = |e: std::io::Error| ClientError::Transport { url: url.clone(), reason: format!("cannot read {}: {e}", file.display()) };
        let status = self.attachment_status(&a.sha256)?;
        if status.complete {
            return Ok(status);
        }
        let mut f = std::fs::File::open(file).map_err(io)?;
        f.seek(std::io::SeekFrom::Start(status.committed_bytes)).map_err(io)?;
        let mut body = f.take(a.size - status.committed_bytes.min(a.size));
        let req = self
            .authorised(self.agent.put(&url))
            .query("size", a.size.to_string())
            .query("offset", status.committed_bytes.to_string())
            .header("Content-Type", "application/octet-stream")
            .config()
            .timeout_global(None)
            .build();
        let r = req.send(ureq::SendBody::from_reader(&mut body));
        self.finish(&url, r)
    }

    /// Downloads attachment `n` (from 1) of message `id` into `dest`, streamed, checking its SHA-256
    /// against `a` (the signed description). Bytes already in `dest.part` from an interrupted
    /// download are kept and the rest is asked for with `Range`; `dest` appears only when complete
    /// and verified.
    pub fn download_attachment(
        &self,
        id: &MessageId,
        n: usize,
        a: &crate::document::Attachment,
        dest: &std::path::Path,
    ) -> Result<(), ClientError> {
        use sha2::Digest as _;
        use std::io::{Read, Write};
        let url = format!("{}/v1/messages/{id}/attachments/{n}", self.base);
        let part = dest.with_file_name(format!("{}.part", dest.file_name().map(|f| f.to_string_lossy()).unwrap_or_default()));
        let io = |what: &str, e: std::io::Error| ClientError::Transport { url: url.clone(), reason: format!("{what}: {e}") };
        let mut hasher = sha2::Sha256::new();
        let mut have = 0u64;
        if let Ok(mut old) = std::fs::File::open(&part) {
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let k = old.read(&mut buf).map_err(|e| io("cannot read the partial download", e))?;
                if k == 0 {
                    break;
                }
                hasher.update(&buf[..k]);
                have += k as u64;
            }
        }
        if have > a.size {
            std::fs::remove_file(&part).map_err(|e| io("cannot remove a bad partial download", e))?;
            return self.download_attachment(id, n, a, dest);
        }
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&part)
            .map_err(|e| io(&format!("cannot write {}", part.display()), e))?;
        if have < a.size {
            let mut req = self.authorised(self.agent.get(&url)).config().timeout_global(None).build();
            if have > 0 {
                req = req.header("Range", format!("bytes={have}-"));
            }
            let mut resp = req.call().map_err(|e| ClientError::Transport { url: url.clone(), reason: e.to_string() })?;
            let status = resp.status().as_u16();
            if status != 200 && status != 206 {
                return self.finish::<serde::de::IgnoredAny>(&url, Ok(resp)).and_then(|_| {
                    Err(ClientError::Protocol { url: url.clone(), status, reason: "not an attachment".into() })
                });
            }
            if status == 200 && have > 0 {
                return Err(ClientError::Protocol { url: url.clone(), status, reason: "the node ignored the Range of a resumed download".into() });
            }
            let mut body = resp.body_mut().as_reader();
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let k = body.read(&mut buf).map_err(|e| io("the download was interrupted (run it again to resume)", e))?;
                if k == 0 {
                    break;
                }
                out.write_all(&buf[..k]).map_err(|e| io(&format!("cannot write {}", part.display()), e))?;
                hasher.update(&buf[..k]);
                have += k as u64;
            }
        }
        out.sync_all().map_err(|e| io(&format!("cannot write {}", part.display()), e))?;
        let digest = crate::Digest(hasher.finalize().into());
        if have != a.size || digest != a.sha256 {
            let _ = std::fs::remove_file(&part);
            return Err(ClientError::Protocol {
                url,
                status: 200,
                reason: format!(
                    "attachment {} arrived as {have} bytes with SHA-256 {digest}, but the signed document describes {} bytes with SHA-256 {}: discarded",
                    a.name, a.size, a.sha256
                ),
            });
        }
        std::fs::rename(&part, dest).map_err(|e| io(&format!("cannot write {}", dest.display()), e))?;
        Ok(())
    }

    /// Registers (or replaces) `unit`'s webhook.
    pub fn set_webhook(&self, unit: &UnitAddress, request: &WebhookRequest) -> Result<WebhookInfo, ClientError> {
        let url = format!("{}/v1/units/{unit}/webhook", self.base);
        let r = self.authorised(self.agent.put(&url)).send_json(request);
        self.finish(&url, r)
    }

    /// `unit`'s webhook, and how far its inbox has been pushed.
    pub fn webhook(&self, unit: &UnitAddress) -> Result<WebhookInfo, ClientError> {
        self.get(&format!("/v1/units/{unit}/webhook"), &[])
    }

    /// Removes `unit`'s webhook (the inbox keeps everything).
    pub fn remove_webhook(&self, unit: &UnitAddress) -> Result<AdminActionResponse, ClientError> {
        let url = format!("{}/v1/units/{unit}/webhook", self.base);
        let r = self.authorised(self.agent.delete(&url)).call();
        self.finish(&url, r)
    }

    /// The unit's 办件 past their deadline and not yet settled, earliest deadline first.
    pub fn overdue(&self, unit: &UnitAddress) -> Result<InboxResponse, ClientError> {
        self.get(&format!("/v1/units/{unit}/overdue"), &[])
    }

    /// A unit's directory record (status, public keys with validity), to verify its signatures
    /// offline.
    pub fn directory_unit(&self, unit: &UnitAddress) -> Result<crate::directory::UnitRecord, ClientError> {
        self.get(&format!("/v1/directory/units/{unit}"), &[])
    }

    /// Signs for several messages in `unit`'s inbox in one request (one result each, in order).
    pub fn sign_for_batch(&self, unit: &UnitAddress, receipts: &[SignedEnvelope]) -> Result<BatchSignForResponse, ClientError> {
        let receipts = receipts
            .iter()
            .filter_map(|r| {
                let for_message = crate::receipt::Receipt::from_envelope(&r.envelope).ok()?.for_message;
                Some(SignForItem { message_id: for_message, receipt: SignedMessage::new(r, b"") })
            })
            .collect();
        self.post(&format!("/v1/units/{unit}/inbox:sign-for"), &BatchSignForRequest { receipts })
    }

    /// The node's health answer.
    pub fn health(&self) -> Result<Health, ClientError> {
        self.get("/healthz", &[])
    }

    /// The Prometheus text exposition.
    pub fn metrics_text(&self) -> Result<String, ClientError> {
        let url = format!("{}/metrics", self.base);
        let mut resp = call_again_if_reset(|| self.agent.get(&url)).map_err(|e| ClientError::Transport { url: url.clone(), reason: e.to_string() })?;
        resp.body_mut().read_to_string().map_err(|e| ClientError::Transport { url, reason: e.to_string() })
    }

    // ---- Admin API: use a client on the node's admin address (`admin.listen`) ----

    /// A node's custody events for a message, as this node alone recorded them (admin API).
    pub fn events(&self, id: &MessageId) -> Result<EventsResponse, ClientError> {
        self.get(&format!("/admin/v1/messages/{id}/events"), &[])
    }

    /// What the node is and how it stands: tier, neighbours, directory version, uptime, build (admin API).
    /// (`status` is the agency call for a message's status.)
    pub fn node_status(&self) -> Result<NodeStatus, ClientError> {
        self.get("/admin/v1/status", &[])
    }

    /// The node's links to its parent and children (admin API).
    pub fn peers(&self) -> Result<PeersResponse, ClientError> {
        self.get("/admin/v1/peers", &[])
    }

    /// The outbox toward each next hop (admin API).
    pub fn queues(&self) -> Result<QueuesResponse, ClientError> {
        self.get("/admin/v1/queues", &[])
    }

    /// A message's custody events from every node it crossed, gathered by this node (admin API).
    pub fn trace(&self, id: &MessageId) -> Result<TraceResponse, ClientError> {
        self.get(&format!("/admin/v1/messages/{id}/trace"), &[])
    }

    /// Outbox entries the neighbours refused for good (admin API).
    pub fn dead_letters(&self) -> Result<DeadLettersResponse, ClientError> {
        self.get("/admin/v1/dead-letters", &[])
    }

    /// Queues the selected dead letters for another attempt (admin API).
    pub fn resend_dead_letters(&self, selection: &DeadLetterSelection) -> Result<AdminActionResponse, ClientError> {
        self.post("/admin/v1/dead-letters:resend", selection)
    }

    /// Deletes the selected dead letters for good (admin API). Irreversible.
    pub fn purge_dead_letters(&self, selection: &DeadLetterSelection) -> Result<AdminActionResponse, ClientError> {
        self.post("/admin/v1/dead-letters:purge", selection)
    }

    /// Wakes every forwarder to retry now instead of waiting out its back-off (admin API).
    pub fn retry_now(&self) -> Result<AdminActionResponse, ClientError> {
        self.post("/admin/v1/retry", &serde_json::Map::new())
    }

    /// Drops payloads and inbox entries of settled messages older than `older_than_days` (admin API).
    pub fn retention_purge(&self, older_than_days: u32) -> Result<AdminActionResponse, ClientError> {
        self.post("/admin/v1/retention:purge", &RetentionRequest { older_than_days })
    }

    /// A page of the audit log: up to `limit` entries after sequence number `after` (admin API).
    pub fn audit_page(&self, after: i64, limit: u32) -> Result<AuditPage, ClientError> {
        self.get("/admin/v1/audit", &[("after", after.to_string()), ("limit", limit.to_string())])
    }

    /// Re-computes the audit log's hash chain on the node (admin API).
    pub fn audit_verify(&self) -> Result<AuditVerification, ClientError> {
        self.get("/admin/v1/audit:verify", &[])
    }

    // ---- Admin API: the signed directory, nodes, units and unit tokens ----

    /// What the node routes by: the directory version, the pinned root key and each stored segment
    /// (admin API).
    pub fn directory(&self) -> Result<DirectoryView, ClientError> {
        self.get("/admin/v1/directory", &[])
    }

    /// Every stored directory segment re-verified against the pinned root key (admin API).
    pub fn directory_verify(&self) -> Result<DirectoryVerification, ClientError> {
        self.get("/admin/v1/directory:verify", &[])
    }

    /// The node tree as this node holds it (admin API).
    pub fn nodes(&self) -> Result<NodesResponse, ClientError> {
        self.get("/admin/v1/nodes", &[])
    }

    /// Adds a node to the tree, or replaces its record (admin API of the root node, which alone signs
    /// the tree).
    pub fn add_node(&self, node: &NodeRecord) -> Result<AdminActionResponse, ClientError> {
        self.post("/admin/v1/nodes", node)
    }

    /// Removes a node from the tree (admin API of the root node).
    pub fn remove_node(&self, node: &NodeId) -> Result<AdminActionResponse, ClientError> {
        self.post(&format!("/admin/v1/nodes/{node}:remove"), &serde_json::Map::new())
    }

    /// Gives a node a new key in the tree, the old one kept for an overlap or revoked (admin API of
    /// the root node).
    pub fn rotate_node_key(&self, node: &NodeId, rotate: &RotateKey) -> Result<AdminActionResponse, ClientError> {
        self.post(&format!("/admin/v1/nodes/{node}:rotate-key"), rotate)
    }

    /// Hands the root key over to the key staged on the root node (admin API of the root node).
    pub fn hand_over_root(&self, request: &crate::api::RootHandoverRequest) -> Result<AdminActionResponse, ClientError> {
        self.post("/admin/v1/directory:hand-over-root", request)
    }

    /// Makes the node take the key staged in its `<key_file>.next` now (admin API).
    pub fn take_staged_key(&self) -> Result<AdminActionResponse, ClientError> {
        self.post("/admin/v1/directory:take-key", &serde_json::Map::new())
    }

    /// The units in the directory, or only those of `node` (admin API).
    pub fn units(&self, node: Option<&NodeId>) -> Result<UnitsResponse, ClientError> {
        let query: Vec<(&str, String)> = node.map(|n| ("node", n.to_string())).into_iter().collect();
        self.get("/admin/v1/units", &query)
    }

    /// One unit's directory record: status and keys with their validity windows (admin API).
    pub fn unit(&self, unit: &UnitAddress) -> Result<UnitRecord, ClientError> {
        self.get(&format!("/admin/v1/units/{unit}"), &[])
    }

    /// Adds a unit to the segment of the node asked, which must be its home node (admin API).
    pub fn add_unit(&self, unit: &NewUnit) -> Result<AdminActionResponse, ClientError> {
        self.post("/admin/v1/units", unit)
    }

    /// Bars a unit for now: its submissions and new messages to it are refused (admin API of its node).
    pub fn suspend_unit(&self, unit: &UnitAddress) -> Result<AdminActionResponse, ClientError> {
        self.unit_action(unit, "suspend")
    }

    /// Lifts a suspension (admin API of the unit's node).
    pub fn activate_unit(&self, unit: &UnitAddress) -> Result<AdminActionResponse, ClientError> {
        self.unit_action(unit, "activate")
    }

    /// Revokes a unit for good, with its keys (admin API of the unit's node). Irreversible.
    pub fn revoke_unit(&self, unit: &UnitAddress) -> Result<AdminActionResponse, ClientError> {
        self.unit_action(unit, "revoke")
    }

    /// Gives a unit a new public key, keeping the old one valid for an overlap or revoking it now
    /// (admin API of the unit's node).
    pub fn rotate_unit_key(&self, unit: &UnitAddress, rotate: &RotateKey) -> Result<AdminActionResponse, ClientError> {
        self.post(&format!("/admin/v1/units/{unit}:rotate-key"), rotate)
    }

    fn unit_action(&self, unit: &UnitAddress, action: &str) -> Result<AdminActionResponse, ClientError> {
        self.post(&format!("/admin/v1/units/{unit}:{action}"), &serde_json::Map::new())
    }

    /// Issues an API token for a unit of this node; the answer holds the token, shown this once
    /// (admin API).
    pub fn issue_token(&self, request: &IssueToken) -> Result<IssuedToken, ClientError> {
        self.post("/admin/v1/tokens", request)
    }

    /// The tokens this node issued, or only those of `unit` (admin API). Never the tokens themselves.
    pub fn tokens(&self, unit: Option<&UnitAddress>) -> Result<TokensResponse, ClientError> {
        let query: Vec<(&str, String)> = unit.map(|u| ("unit", u.to_string())).into_iter().collect();
        self.get("/admin/v1/tokens", &query)
    }

    /// Revokes a token by its id, as `tokens` lists it (admin API).
    pub fn revoke_token(&self, id: &str) -> Result<AdminActionResponse, ClientError> {
        self.post(&format!("/admin/v1/tokens/{id}:revoke"), &serde_json::Map::new())
    }

    /// The node's readiness checks (admin listener). A node that is not ready answers 503 with the same
    /// body, which is returned here as `Ok` with `ready: false`, not as an error.
    pub fn readiness(&self) -> Result<Readiness, ClientError> {
        let url = format!("{}/readyz", self.base);
        let r = self.agent.get(&url).call();
        self.finish_accepting(&url, r, &[503])
    }

    /// The node's liveness answer (admin listener).
    pub fn liveness(&self) -> Result<Health, ClientError> {
        self.get("/livez", &[])
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use super::*;

    /// Reads one request head from `s` and answers it, keeping the connection open.
    fn answer(s: &mut std::net::TcpStream, body: &str) {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{body}", body.len()).unwrap();
    }

    #[test]
    fn a_get_meeting_a_reset_kept_alive_connection_is_sent_again() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let (mut kept, _) = listener.accept().unwrap();
            answer(&mut kept, "first 1\n");
            // The next request arrives on the kept-alive connection; closing it unread resets it, as a
            // node does that closes an idle connection just as a request is written on it.
            let mut peek = [0u8; 1];
            kept.peek(&mut peek).unwrap();
            drop(kept);
            let (mut fresh, _) = listener.accept().unwrap();
            answer(&mut fresh, "second 2\n");
        });
        let client = ApiClient::new(&base);
        assert_eq!(client.metrics_text().unwrap(), "first 1\n");
        assert_eq!(client.metrics_text().unwrap(), "second 2\n", "sent again on a fresh connection");
        server.join().unwrap();
    }
}
