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
use axum::extract::rejection::{BytesRejection, QueryRejection};
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

/// Parses a message id from a path; a bad one is counted and audited like any refused input.
async fn parse_id(engine: &Engine, s: &str) -> Result<MessageId, Refusal> {
    match s.parse() {
        Ok(id) => Ok(id),
        Err(e) => Err(refuse(engine, Refusal::malformed(e)).await),
    }
}

/// Parses a unit address from the `{node}/{unit}` path segments.
async fn parse_unit(engine: &Engine, node: &str, unit: &str) -> Result<UnitAddress, Refusal> {
    match format!("{node}/{unit}").parse() {
        Ok(u) => Ok(u),
        Err(e) => Err(refuse(engine, Refusal::malformed(format!("{e}"))).await),
    }
}

async fn refuse(engine: &Engine, r: Refusal) -> Refusal {
    engine.refused_input(&r).await;
    r
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
    match parse_id(&engine, &id).await {
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
    query: Result<Query<InboxQuery>, QueryRejection>,
) -> Response {
    let unit = match parse_unit(&engine, &node, &unit).await {
        Ok(u) => u,
        Err(r) => return r.into_response(),
    };
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => {
            let r = Refusal::malformed(format!("query parameters are invalid ({}): use after=<seq>, limit=1..1000, wait_ms=<ms>", e.body_text()));
            return refuse(&engine, r).await.into_response();
        }
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
    let unit = match parse_unit(&engine, &node, &unit).await {
        Ok(u) => u,
        Err(r) => return r.into_response(),
    };
    let id = match parse_id(&engine, &id).await {
        Ok(i) => i,
        Err(r) => return r.into_response(),
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
    let id = match parse_id(&engine, &id).await {
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

async fn method_not_allowed() -> Response {
    Refusal::new("method-not-allowed", 405, "this endpoint does not take that HTTP method; see docs/openapi.yaml").into_response()
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
        .method_not_allowed_fallback(method_not_allowed)
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
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(engine)
}
