//! Queries (查询核验) over HTTP: `POST /v1/queries` asks, `GET /v1/queries/{id}?wait_ms=` waits for
//! the outcome (the signed answer, or `timed-out` at the deadline), and the asked unit answers from
//! its inbox with `POST /v1/units/{node}/{unit}/inbox/{id}/answer`.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use exchange_wire::api::SignedMessage;
use serde::Deserialize;

use super::{AppState, json, parse_body, parse_id, parse_inbox_call, refuse, taken};
use crate::relay::Refusal;
use crate::relay::access::Caller;

/// The query routes (bodies are bounded by the agency router's limit).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/queries", post(ask))
        .route("/v1/queries/{id}", get(status))
        .route("/v1/units/{node}/{unit}/inbox/{id}/answer", post(answer))
}

fn accepted(r: Result<exchange_wire::api::SubmitResponse, Refusal>) -> Response {
    match r {
        Ok(ok) => taken(ok.duplicate, &ok),
        Err(r) => r.into_response(),
    }
}

async fn ask(State(engine): State<AppState>, caller: Caller, body: Result<Bytes, BytesRejection>) -> Response {
    match parse_body::<SignedMessage>(&engine, body).await {
        Ok(m) => accepted(engine.ingress().ask(&caller, m).await),
        Err(r) => r.into_response(),
    }
}

#[derive(Deserialize)]
struct WaitQuery {
    #[serde(default)]
    wait_ms: u64,
}

async fn status(
    State(engine): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<WaitQuery>, QueryRejection>,
) -> Response {
    let id = match parse_id(&engine, &id).await {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    let Ok(Query(q)) = query else {
        return refuse(&engine, Refusal::malformed("use wait_ms=<milliseconds> to wait for the outcome")).await.into_response();
    };
    match engine.queries.query_status(&caller, &id, Duration::from_millis(q.wait_ms)).await {
        Ok(s) => json(StatusCode::OK, &s),
        Err(r) => r.into_response(),
    }
}

async fn answer(
    State(engine): State<AppState>,
    caller: Caller,
    Path((node, unit, id)): Path<(String, String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match parse_inbox_call(&engine, &node, &unit, &id, body).await {
        Ok((unit, id, m)) => accepted(engine.ingress().answer(&caller, &unit, &id, m).await),
        Err(r) => r.into_response(),
    }
}
