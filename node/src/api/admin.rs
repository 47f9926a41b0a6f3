//! The admin API, on its own listener (loopback by default): what `exchange-admin`'s operator verbs
//! call.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use exchange_wire::api::{DeadLetterSelection, DeadLettersResponse, EventsResponse, PeersResponse, QueuesResponse, RetentionRequest};
use serde::Deserialize;

use super::{AppState, json, parse_body, parse_id, refuse, with_health};
use crate::relay::Refusal;

/// The answer to an admin call; a refused request is counted and audited like any bad input.
async fn answer<T: serde::Serialize>(engine: &AppState, r: Result<T, Refusal>) -> Response {
    match r {
        Ok(v) => json(StatusCode::OK, &v),
        Err(r) if r.transient => r.into_response(),
        Err(r) => refuse(engine, r).await.into_response(),
    }
}

async fn status(State(engine): State<AppState>) -> Response {
    json(StatusCode::OK, &engine.node_status())
}

async fn peers(State(engine): State<AppState>) -> Response {
    json(StatusCode::OK, &PeersResponse { peers: engine.peer_infos() })
}

async fn queues(State(engine): State<AppState>) -> Response {
    answer(&engine, engine.queues().await.map(|queues| QueuesResponse { queues })).await
}

async fn events(State(engine): State<AppState>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&engine, &id).await {
        Ok(i) => i,
        Err(r) => return r.into_response(),
    };
    answer(&engine, engine.events(&id).await.map(|events| EventsResponse { id, events })).await
}

async fn trace(State(engine): State<AppState>, Path(id): Path<String>) -> Response {
    match parse_id(&engine, &id).await {
        Ok(id) => answer(&engine, engine.trace(&id).await).await,
        Err(r) => r.into_response(),
    }
}

async fn dead_letters(State(engine): State<AppState>) -> Response {
    answer(&engine, engine.dead_letters().await.map(|dead_letters| DeadLettersResponse { dead_letters })).await
}

async fn resend(State(engine): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    match parse_body::<DeadLetterSelection>(&engine, body).await {
        Ok(sel) => answer(&engine, engine.resend_dead_letters(&sel).await).await,
        Err(r) => r.into_response(),
    }
}

async fn purge(State(engine): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    match parse_body::<DeadLetterSelection>(&engine, body).await {
        Ok(sel) => answer(&engine, engine.purge_dead_letters(&sel).await).await,
        Err(r) => r.into_response(),
    }
}

async fn retry(State(engine): State<AppState>) -> Response {
    answer(&engine, engine.retry_now().await).await
}

async fn retention(State(engine): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    match parse_body::<RetentionRequest>(&engine, body).await {
        Ok(req) => answer(&engine, engine.retention_purge(req.older_than_days).await).await,
        Err(r) => r.into_response(),
    }
}

#[derive(Deserialize)]
struct AuditQuery {
    #[serde(default)]
    after: i64,
    #[serde(default = "default_page")]
    limit: u32,
}

fn default_page() -> u32 {
    1000
}

async fn audit(State(engine): State<AppState>, query: Result<Query<AuditQuery>, QueryRejection>) -> Response {
    match query {
        Ok(Query(q)) => answer(&engine, engine.audit_page(q.after, q.limit).await).await,
        Err(e) => refuse(&engine, Refusal::malformed(format!("query parameters are invalid ({}): use after=<seq>, limit=<n>", e.body_text())))
            .await
            .into_response(),
    }
}

async fn audit_verify(State(engine): State<AppState>) -> Response {
    answer(&engine, engine.audit_verify().await).await
}

/// The admin API.
pub fn router(engine: AppState) -> Router {
    with_health(
        Router::new()
            .route("/admin/v1/status", get(status))
            .route("/admin/v1/peers", get(peers))
            .route("/admin/v1/queues", get(queues))
            .route("/admin/v1/messages/{id}/events", get(events))
            .route("/admin/v1/messages/{id}/trace", get(trace))
            .route("/admin/v1/dead-letters", get(dead_letters))
            .route("/admin/v1/dead-letters:resend", post(resend))
            .route("/admin/v1/dead-letters:purge", post(purge))
            .route("/admin/v1/retry", post(retry))
            .route("/admin/v1/retention:purge", post(retention))
            .route("/admin/v1/audit", get(audit))
            .route("/admin/v1/audit:verify", get(audit_verify)),
    )
    .with_state(engine)
}
