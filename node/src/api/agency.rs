//! The agency API: documents in, inboxes out, receipts, status.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::{Extension, Router};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use exchange_wire::api::{
    WebhookRequest,
    BatchItemResult, BatchSignForRequest, BatchSignForResponse, BatchSubmitRequest, BatchSubmitResponse, InboxResponse,
    SignForResult, SignedMessage,
};
use serde::Deserialize;

use super::refusal_tally::RefusalTally;
use super::{AppState, json, parse_body, parse_id, parse_inbox_call, parse_unit, refuse, taken, with_health};
use crate::config::NodeConfig;
use crate::relay::Refusal;
use crate::relay::access::Caller;
use exchange_wire::receipt::ReceiptType;

/// A refused read: `forbidden` is counted and audited like a refused write; a plain miss or storage
/// trouble is answered without.
async fn audited(engine: &AppState, r: Refusal) -> Response {
    if r.code == "forbidden" { refuse(engine, r).await.into_response() } else { r.into_response() }
}

/// 200 with the answer, or the refusal (counted and audited unless it is storage trouble).
async fn answered<T: serde::Serialize>(engine: &AppState, result: Result<T, Refusal>) -> Response {
    match result {
        Ok(v) => json(StatusCode::OK, &v),
        Err(r) if r.transient => r.into_response(),
        Err(r) => refuse(engine, r).await.into_response(),
    }
}

/// The agency API's tally of requests refused for want of a valid unit token.
#[derive(Clone)]
pub struct AgencyRefusals(Arc<RefusalTally>);

/// The tally for [`router`], audited every `api.refusal_audit_secs` once its `audit` task runs.
pub fn refusal_tally(cfg: &NodeConfig, engine: &AppState) -> Arc<RefusalTally> {
    RefusalTally::new(
        "agency API",
        "agency-refused",
        engine.services.metrics.agency_refusals.clone(),
        &["no-token", "bad-token"],
        Duration::from_secs(cfg.api.refusal_audit_secs),
    )
}

/// A suspended unit may read (GET) but not change anything: every other method is refused for an
/// authenticated caller of a suspended unit, for every route, before its body is read (and audited:
/// the caller is known).
async fn may_change(engine: &AppState, parts: &Parts, caller: Caller) -> Result<Caller, Response> {
    let changes = !matches!(parts.method, axum::http::Method::GET | axum::http::Method::HEAD);
    match if changes { engine.access.may_change(&engine.services.dir.current(), &engine.services.here, &caller) } else { Ok(()) } {
        Ok(()) => Ok(caller),
        Err(r) => Err(refuse(engine, r).await.into_response()),
    }
}

/// The unit calling, from its token (`Authorization: Bearer …`); an unauthenticated call is
/// refused before its body is even read, counted, and audited in aggregate (one entry per source
/// and reason per `api.refusal_audit_secs`): a flood of bad tokens costs no synced write each.
impl FromRequestParts<AppState> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, engine: &AppState) -> Result<Caller, Response> {
        let authorization = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let r = match engine.access.authenticate(&engine.services.dir.current(), &engine.services.here, authorization) {
            Ok(c) => return may_change(engine, parts, c).await,
            Err(r) => r,
        };
        let Some(AgencyRefusals(tally)) = parts.extensions.get::<AgencyRefusals>() else {
            return Err(refuse(engine, r).await.into_response());
        };
        let source = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string()).unwrap_or_else(|| "unknown".into());
        // A header that names no bearer token at all, or one that names a token this node does not
        // accept (unknown or revoked).
        let named = authorization.and_then(|h| h.trim().split_once(char::is_whitespace)).is_some_and(|(_, t)| !t.trim().is_empty());
        let reason = if named { "bad-token" } else { "no-token" };
        engine.services.metrics.rejected.with_label_values(&[r.code, "unknown"]).inc();
        tracing::debug!(%source, reason, "agency request refused before authentication");
        tally.note(source, reason);
        Err(r.into_response())
    }
}

async fn submit(State(engine): State<AppState>, caller: Caller, body: Result<Bytes, BytesRejection>) -> Response {
    let msg: SignedMessage = match parse_body(&engine, body).await {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    match engine.ingress().submit(&caller, vec![msg]).await.pop() {
        Some(BatchItemResult::Accepted(ok)) => taken(ok.duplicate, &ok),
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
        "bad-signature" | "unknown-sender" | "wrong-node" | "wrong-signer" | "forbidden" | "policy-denied" | "key-not-valid"
        | "unit-suspended" | "classified" | "webhook-target-refused" => StatusCode::FORBIDDEN,
        "unauthenticated" | "unit-revoked" => StatusCode::UNAUTHORIZED,
        "unknown-unit" | "no-route" | "recipient-unavailable" | "reserved-recipient" => StatusCode::UNPROCESSABLE_ENTITY,
        "payload-too-large" => StatusCode::PAYLOAD_TOO_LARGE,
        "not-found" => StatusCode::NOT_FOUND,
        "conflict" | "attachment-missing" | "deadline-passed" => StatusCode::CONFLICT,
        "storage" | "storage-full" | "storage-damaged" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    }
}

async fn submit_batch(State(engine): State<AppState>, caller: Caller, body: Result<Bytes, BytesRejection>) -> Response {
    let req: BatchSubmitRequest = match parse_body(&engine, body).await {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    if req.messages.len() > 1000 {
        let r = Refusal::malformed(format!("a batch holds at most 1000 messages, not {}", req.messages.len()));
        engine.services.refused_input(&r).await;
        return r.into_response();
    }
    let results = engine.ingress().submit(&caller, req.messages).await;
    json(StatusCode::OK, &BatchSubmitResponse { results })
}

async fn status(State(engine): State<AppState>, caller: Caller, Path(id): Path<String>) -> Response {
    match parse_id(&engine, &id).await {
        Ok(id) => match engine.services.status(&caller, &id).await {
            Ok(s) => json(StatusCode::OK, &s),
            Err(r) => audited(&engine, r).await,
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

/// Page size of inbox and record reads when the query gives none.
pub(super) fn default_limit() -> u32 {
    100
}

async fn inbox(
    State(engine): State<AppState>,
    caller: Caller,
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
    let wait = Duration::from_millis(q.wait_ms.min(engine.services.api_max_wait_ms));
    let result = engine.services.inbox(&caller, &unit, q.after, q.limit, wait).await;
    match result {
        Ok(items) => {
            let next_after = items.last().map(|i| i.seq).unwrap_or(q.after);
            json(StatusCode::OK, &InboxResponse { unit, items, next_after })
        }
        Err(r) => audited(&engine, r).await,
    }
}

async fn sign_for(state: State<AppState>, caller: Caller, path: Path<(String, String, String)>, body: Result<Bytes, BytesRejection>) -> Response {
    settle(state, caller, path, body, ReceiptType::SignedFor).await
}

async fn return_message(
    state: State<AppState>,
    caller: Caller,
    path: Path<(String, String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    settle(state, caller, path, body, ReceiptType::Returned).await
}

/// 签收 or 退回 of one message.
async fn settle(
    State(engine): State<AppState>,
    caller: Caller,
    Path((node, unit, id)): Path<(String, String, String)>,
    body: Result<Bytes, BytesRejection>,
    kind: ReceiptType,
) -> Response {
    let (unit, id, receipt) = match parse_inbox_call(&engine, &node, &unit, &id, body).await {
        Ok(parts) => parts,
        Err(r) => return r.into_response(),
    };
    match engine.ingress().settle(&caller, &unit, &id, receipt, kind).await {
        Ok(ok) => taken(ok.duplicate, &ok),
        Err(r) => r.into_response(),
    }
}

async fn set_webhook(State(engine): State<AppState>, caller: Caller, Path((node, unit)): Path<(String, String)>, body: Result<Bytes, BytesRejection>) -> Response {
    let unit = match parse_unit(&engine, &node, &unit).await {
        Ok(u) => u,
        Err(r) => return r.into_response(),
    };
    let req: WebhookRequest = match parse_body(&engine, body).await {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    answered(&engine, engine.webhooks.set(&caller, &unit, req).await).await
}

async fn get_webhook(State(engine): State<AppState>, caller: Caller, Path((node, unit)): Path<(String, String)>) -> Response {
    let unit = match parse_unit(&engine, &node, &unit).await {
        Ok(u) => u,
        Err(r) => return r.into_response(),
    };
    answered(&engine, engine.webhooks.get(&caller, &unit).await).await
}

async fn remove_webhook(State(engine): State<AppState>, caller: Caller, Path((node, unit)): Path<(String, String)>) -> Response {
    let unit = match parse_unit(&engine, &node, &unit).await {
        Ok(u) => u,
        Err(r) => return r.into_response(),
    };
    answered(&engine, engine.webhooks.remove(&caller, &unit).await).await
}

/// `POST /v1/messages/{id}/recall`: 撤回, signed by the document's sender.
async fn recall(state: State<AppState>, caller: Caller, id: Path<String>, body: Result<Bytes, BytesRejection>) -> Response {
    sender_action(state, caller, id, body, false).await
}

/// `POST /v1/messages/{id}/resend`: 补发, the same document to recipients it missed.
async fn resend(state: State<AppState>, caller: Caller, id: Path<String>, body: Result<Bytes, BytesRejection>) -> Response {
    sender_action(state, caller, id, body, true).await
}

/// A sender's follow-up on its document `id`: a recall, or (`resend`) a 补发.
async fn sender_action(
    State(engine): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
    resend: bool,
) -> Response {
    let id = match parse_id(&engine, &id).await {
        Ok(i) => i,
        Err(r) => return r.into_response(),
    };
    let msg: SignedMessage = match parse_body(&engine, body).await {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    let result = if resend { engine.ingress().resend(&caller, &id, msg).await } else { engine.ingress().recall(&caller, &id, msg).await };
    match result {
        Ok(ok) => taken(ok.duplicate, &ok),
        Err(r) => r.into_response(),
    }
}

/// `GET /v1/units/{node}/{unit}/overdue`: the unit's 办件 past their deadline, earliest first.
async fn overdue(State(engine): State<AppState>, caller: Caller, Path((node, unit)): Path<(String, String)>) -> Response {
    let unit = match parse_unit(&engine, &node, &unit).await {
        Ok(u) => u,
        Err(r) => return r.into_response(),
    };
    match engine.services.overdue(&caller, &unit).await {
        Ok(ids) => streamed_overdue(engine, unit, ids),
        Err(r) => audited(&engine, r).await,
    }
}

/// The overdue list as one `InboxResponse`, written item by item: each item is loaded when its turn
/// comes, so the node holds one document at a time however long the list. An item settled in the
/// meantime is left out. A storage failure half way cuts the answer off (the client sees a broken
/// body, never a shorter list that looks whole).
fn streamed_overdue(engine: AppState, unit: exchange_wire::UnitAddress, ids: Vec<exchange_wire::MessageId>) -> Response {
    use futures::StreamExt as _;
    let unit_json = serde_json::to_string(&unit).expect("serialises");
    let head = futures::stream::once(async move { Ok(Bytes::from(format!("{{\"unit\":{unit_json},\"items\":["))) });
    let mut first = true;
    let items = futures::stream::iter(ids)
        .then(move |id| {
            let (engine, unit) = (engine.clone(), unit.clone());
            async move { (id, engine.services.overdue_item(&unit, &id).await) }
        })
        .filter_map(move |(id, item)| {
            let chunk = match item {
                Ok(None) => None,
                Ok(Some(item)) => {
                    let mut bytes = if first { Vec::new() } else { vec![b','] };
                    first = false;
                    serde_json::to_writer(&mut bytes, &item).expect("serialises");
                    Some(Ok(Bytes::from(bytes)))
                }
                Err(r) => {
                    tracing::error!(message = %id, reason = %r.message, "cannot read an overdue item; the answer is cut off");
                    Some(Err(std::io::Error::other(r.message)))
                }
            };
            std::future::ready(chunk)
        });
    let tail = futures::stream::once(async { Ok(Bytes::from_static(b"],\"next_after\":0}")) });
    let body = axum::body::Body::from_stream(head.chain(items).chain(tail));
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `GET /v1/directory/units/{node}/{unit}`: a unit's directory record (name, status, public keys with
/// their validity), so an agency can verify signatures offline.
async fn directory_unit(State(engine): State<AppState>, _caller: Caller, Path((node, unit)): Path<(String, String)>) -> Response {
    let address = match parse_unit(&engine, &node, &unit).await {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    match engine.directory_sync.unit_records(None).await.into_iter().find(|u| u.address == address) {
        Some(record) => json(StatusCode::OK, &record),
        None => Refusal::new("not-found", 404, format!("unit {address} is not in the directory")).into_response(),
    }
}

async fn sign_for_batch(
    State(engine): State<AppState>,
    caller: Caller,
    Path((node, unit)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let unit = match parse_unit(&engine, &node, &unit).await {
        Ok(u) => u,
        Err(r) => return r.into_response(),
    };
    let req: BatchSignForRequest = match parse_body(&engine, body).await {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    if req.receipts.len() > 1000 {
        let r = Refusal::malformed(format!("a batch holds at most 1000 receipts, not {}", req.receipts.len()));
        return refuse(&engine, r).await.into_response();
    }
    let items = req.receipts.into_iter().map(|i| (i.message_id, i.receipt)).collect();
    let results = engine
        .ingress()
        .sign_for_many(&caller, &unit, items)
        .await
        .into_iter()
        .map(|r| match r {
            Ok(ok) => SignForResult::SignedFor(ok),
            Err(e) => SignForResult::Refused(e.body()),
        })
        .collect();
    json(StatusCode::OK, &BatchSignForResponse { results })
}

/// The agency API.
/// The agency API's routes; refusals for want of a token are tallied in `refusals`.
pub fn router(engine: AppState, refusals: Arc<RefusalTally>) -> Router {
    // Base64 inflates payloads by 4/3; leave room for the envelope and a batch of small messages.
    let body_limit = (engine.services.limits.max_payload_bytes as usize) / 3 * 4 + 1024 * 1024;
    with_health(Router::new()
        .route("/v1/messages", post(submit))
        .route("/v1/messages:batch", post(submit_batch))
        .route("/v1/messages/{id}", get(status))
        .route("/v1/units/{node}/{unit}/inbox", get(inbox))
        .route("/v1/units/{node}/{unit}/inbox/{id}/sign-for", post(sign_for))
        .route("/v1/units/{node}/{unit}/inbox:sign-for", post(sign_for_batch))
        .route("/v1/units/{node}/{unit}/inbox/{id}/return", post(return_message))
        .route("/v1/directory/units/{node}/{unit}", get(directory_unit))
        .route("/v1/units/{node}/{unit}/overdue", get(overdue))
        .route("/v1/messages/{id}/recall", post(recall))
        .route("/v1/messages/{id}/resend", post(resend))
        .route("/v1/units/{node}/{unit}/webhook", get(get_webhook).put(set_webhook).delete(remove_webhook))
        .merge(super::asking::routes())
        .merge(super::sharing::agency_routes())
        .layer(DefaultBodyLimit::max(body_limit.max(16 * 1024 * 1024)))
        .merge(super::attachments::routes())
        )
        .layer(Extension(AgencyRefusals(refusals)))
        .with_state(engine)
}

