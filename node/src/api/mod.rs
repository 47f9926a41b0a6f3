//! HTTP interfaces: the agency API (documents, inboxes, receipts, status; also `/metrics` and
//! `/healthz`) and the admin API on its own listener, loopback by default. `docs/openapi.yaml`
//! describes both.
//!
//! Bodies are parsed by hand rather than with axum's `Json` extractor, so that a malformed or
//! oversized body gets the same error shape, metric and audit entry as any other refusal.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use exchange_wire::api::{
    BatchItemResult, BatchSubmitRequest, BatchSubmitResponse, EventsResponse, Health, InboxResponse, SignedMessage,
};
use exchange_wire::{MessageId, UnitAddress};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::relay::{Engine, Refusal};

type AppState = Arc<Engine>;

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        (status, axum::Json(self.body())).into_response()
    }
}

fn json<T: serde::Serialize>(status: StatusCode, body: &T) -> Response {
    (status, axum::Json(body)).into_response()
}

/// Parses a JSON body; refusals are counted and audited like any other bad input.
async fn parse_body<T: DeserializeOwned>(engine: &Engine, body: Result<Bytes, BytesRejection>) -> Result<T, Refusal> {
    let refusal = match body {
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Refusal::new(
            "payload-too-large",
            413,
            format!(
                "request body is larger than this node accepts (payloads up to {} bytes, base64-encoded); see limits.max_payload_bytes",
                engine.limits.max_payload_bytes
            ),
        ),
        Err(e) => Refusal::malformed(format!("cannot read the request body: {e}")),
        Ok(bytes) => match serde_json::from_slice::<T>(&bytes) {
            Ok(v) => return Ok(v),
            Err(e) => Refusal::malformed(format!("request body is not the expected JSON: {e}")),
        },
    };
    engine.refused_input(&refusal).await;
    Err(refusal)
}

fn parse_id(s: &str) -> Result<MessageId, Refusal> {
    s.parse().map_err(|e: String| Refusal::malformed(e))
}

fn parse_unit(node: &str, unit: &str) -> Result<UnitAddress, Refusal> {
    format!("{node}/{unit}").parse().map_err(|e: exchange_wire::AddressError| Refusal::malformed(e.to_string()))
}

async fn submit(State(engine): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    let msg: SignedMessage = match parse_body(&engine, body).await {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    match engine.submit(vec![msg]).await.pop() {
        Some(BatchItemResult::Accepted(ok)) => {
            json(if ok.duplicate { StatusCode::OK } else { StatusCode::ACCEPTED }, &ok)
        }
        Some(BatchItemResult::Refused(body)) => {
            let status = refusal_status(&body.error);
            json(status, &body)
        }
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The HTTP status of a refusal code (used where only the body survived a batch).
fn refusal_status(code: &str) -> StatusCode {
    match code {
        "bad-signature" | "unknown-sender" | "wrong-node" | "wrong-signer" => StatusCode::FORBIDDEN,
        "unknown-unit" | "no-route" => StatusCode::UNPROCESSABLE_ENTITY,
        "payload-too-large" => StatusCode::PAYLOAD_TOO_LARGE,
        "not-found" => StatusCode::NOT_FOUND,
        "conflict" => StatusCode::CONFLICT,
        "storage" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    }
}

async fn submit_batch(State(engine): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    let req: BatchSubmitRequest = match parse_body(&engine, body).await {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    if req.messages.len() > 1000 {
        let r = Refusal::malformed(format!("a batch holds at most 1000 messages, not {}", req.messages.len()));
        engine.refused_input(&r).await;
        return r.into_response();
    }
    let results = engine.submit(req.messages).await;
    json(StatusCode::OK, &BatchSubmitResponse { results })
}

async fn status(State(engine): State<AppState>, Path(id): Path<String>) -> Response {
    match parse_id(&id) {
        Ok(id) => match engine.status(&id).await {
            Ok(s) => json(StatusCode::OK, &s),
            Err(r) => r.into_response(),
        },
        Err(r) => r.into_response(),
    }
}

#[derive(Deserialize)]
struct InboxQuery {
    #[serde(default)]
    after: i64,
    #[serde(default = "default_limit")]
    limit: u32,
    #[serde(default)]
    wait_ms: u64,
}

fn default_limit() -> u32 {
    100
}

async fn inbox(
    State(engine): State<AppState>,
    Path((node, unit)): Path<(String, String)>,
    Query(q): Query<InboxQuery>,
) -> Response {
    let unit = match parse_unit(&node, &unit) {
        Ok(u) => u,
        Err(r) => return r.into_response(),
    };
    let wait = Duration::from_millis(q.wait_ms.min(engine.api_max_wait_ms));
    match engine.inbox(&unit, q.after, q.limit, wait).await {
        Ok(items) => {
            let next_after = items.last().map(|i| i.seq).unwrap_or(q.after);
            json(StatusCode::OK, &InboxResponse { unit, items, next_after })
        }
        Err(r) => r.into_response(),
    }
}

async fn sign_for(
    State(engine): State<AppState>,
    Path((node, unit, id)): Path<(String, String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (unit, id) = match (parse_unit(&node, &unit), parse_id(&id)) {
        (Ok(u), Ok(i)) => (u, i),
        (Err(r), _) | (_, Err(r)) => return r.into_response(),
    };
    let receipt: SignedMessage = match parse_body(&engine, body).await {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    match engine.sign_for(&unit, &id, receipt).await {
        Ok(ok) => json(if ok.duplicate { StatusCode::OK } else { StatusCode::ACCEPTED }, &ok),
        Err(r) => r.into_response(),
    }
}

async fn healthz(State(engine): State<AppState>) -> Response {
    json(StatusCode::OK, &Health { node: engine.here.clone(), status: "ok".into(), peer_id: engine.peer_id.to_string() })
}

async fn metrics(State(engine): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], engine.metrics.render()).into_response()
}

async fn events(State(engine): State<AppState>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id) {
        Ok(i) => i,
        Err(r) => return r.into_response(),
    };
    match engine.events(&id).await {
        Ok(events) => json(StatusCode::OK, &EventsResponse { id, events }),
        Err(r) => r.into_response(),
    }
}

async fn not_found() -> Response {
    Refusal::new("not-found", 404, "no such endpoint; see docs/openapi.yaml").into_response()
}

/// The agency API.
pub fn agency_router(engine: AppState) -> Router {
    // Base64 inflates payloads by 4/3; leave room for the envelope and a batch of small messages.
    let body_limit = (engine.limits.max_payload_bytes as usize) / 3 * 4 + 1024 * 1024;
    Router::new()
        .route("/v1/messages", post(submit))
        .route("/v1/messages:batch", post(submit_batch))
        .route("/v1/messages/{id}", get(status))
        .route("/v1/units/{node}/{unit}/inbox", get(inbox))
        .route("/v1/units/{node}/{unit}/inbox/{id}/sign-for", post(sign_for))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit.max(16 * 1024 * 1024)))
        .with_state(engine)
}

/// The admin API (loopback by default).
pub fn admin_router(engine: AppState) -> Router {
    Router::new()
        .route("/admin/v1/messages/{id}/events", get(events))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(engine)
}
