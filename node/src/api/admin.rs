//! The admin API, on its own listener (loopback by default): what `exchange-admin`'s operator verbs
//! call.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use exchange_wire::api::{
    DeadLetterSelection, DeadLettersResponse, EventsResponse, IssueToken, NewUnit, NodesResponse, PeersResponse, QueuesResponse,
    RetentionRequest, RootHandoverRequest, RotateKey, TokensResponse, UnitsResponse,
};
use exchange_wire::directory::{NodeRecord, UnitStatus};
use exchange_wire::{NodeId, UnitAddress};
use serde::Deserialize;

use super::{AppState, json, parse_body, parse_id, parse_unit, refuse, with_health};
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
    json(StatusCode::OK, &engine.operations().node_status())
}

async fn peers(State(engine): State<AppState>) -> Response {
    json(StatusCode::OK, &PeersResponse { peers: engine.operations().peer_infos() })
}

async fn queues(State(engine): State<AppState>) -> Response {
    answer(&engine, engine.operations().queues().await.map(|queues| QueuesResponse { queues })).await
}

async fn events(State(engine): State<AppState>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&engine, &id).await {
        Ok(i) => i,
        Err(r) => return r.into_response(),
    };
    answer(&engine, engine.services.events(&id).await.map(|events| EventsResponse { id, events })).await
}

async fn trace(State(engine): State<AppState>, Path(id): Path<String>) -> Response {
    match parse_id(&engine, &id).await {
        Ok(id) => answer(&engine, engine.operations().trace(&id).await).await,
        Err(r) => r.into_response(),
    }
}

async fn dead_letters(State(engine): State<AppState>) -> Response {
    answer(&engine, engine.operations().dead_letters().await.map(|dead_letters| DeadLettersResponse { dead_letters })).await
}

async fn resend(State(engine): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    match parse_body::<DeadLetterSelection>(&engine, body).await {
        Ok(sel) => answer(&engine, engine.operations().resend_dead_letters(&sel).await).await,
        Err(r) => r.into_response(),
    }
}

async fn purge(State(engine): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    match parse_body::<DeadLetterSelection>(&engine, body).await {
        Ok(sel) => answer(&engine, engine.operations().purge_dead_letters(&sel).await).await,
        Err(r) => r.into_response(),
    }
}

async fn retry(State(engine): State<AppState>) -> Response {
    answer(&engine, engine.operations().retry_now().await).await
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
        Ok(Query(q)) => answer(&engine, engine.operations().audit_page(q.after, q.limit).await).await,
        Err(e) => refuse(&engine, Refusal::malformed(format!("query parameters are invalid ({}): use after=<seq>, limit=<n>", e.body_text())))
            .await
            .into_response(),
    }
}

async fn audit_verify(State(engine): State<AppState>) -> Response {
    answer(&engine, engine.audit_verify().await).await
}

async fn directory(State(engine): State<AppState>) -> Response {
    json(StatusCode::OK, &engine.directory_sync.view(&engine.services).await)
}

async fn directory_verify(State(engine): State<AppState>) -> Response {
    json(StatusCode::OK, &engine.directory_sync.verify(&engine.services).await)
}

async fn nodes(State(engine): State<AppState>) -> Response {
    json(StatusCode::OK, &NodesResponse { nodes: engine.directory_sync.node_records().await })
}

async fn add_node(State(engine): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    match parse_body::<NodeRecord>(&engine, body).await {
        Ok(n) => answer(&engine, engine.add_node(n).await).await,
        Err(r) => r.into_response(),
    }
}

/// `POST /admin/v1/nodes/{id}:remove` and `POST /admin/v1/nodes/{id}:rotate-key` (axum takes one
/// parameter per path segment, so the action is split off here).
async fn node_action(State(engine): State<AppState>, Path(id_action): Path<String>, body: Result<Bytes, BytesRejection>) -> Response {
    let Some((id, action)) = id_action.split_once(':') else {
        return refuse(&engine, Refusal::new("not-found", 404, "use POST /admin/v1/nodes/{id}:remove or :rotate-key")).await.into_response();
    };
    let id = match id.parse::<NodeId>() {
        Ok(id) => id,
        Err(e) => return refuse(&engine, Refusal::malformed(e.to_string())).await.into_response(),
    };
    let result = match action {
        "remove" => engine.remove_node(&id).await,
        "rotate-key" => match parse_body::<RotateKey>(&engine, body).await {
            Ok(r) => engine.rotate_node_key(&id, r).await,
            Err(r) => return r.into_response(),
        },
        other => Err(Refusal::new("not-found", 404, format!("unknown node action {other:?}: use remove or rotate-key"))),
    };
    answer(&engine, result).await
}

/// `POST /admin/v1/directory:take-key`: this node takes its staged key now.
async fn take_key(State(engine): State<AppState>) -> Response {
    answer(&engine, engine.take_staged_key().await).await
}

/// `POST /admin/v1/directory:hand-over-root`, at the root node.
async fn hand_over_root(State(engine): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    match parse_body::<RootHandoverRequest>(&engine, body).await {
        Ok(h) => answer(&engine, engine.hand_over_root(h).await).await,
        Err(r) => r.into_response(),
    }
}

#[derive(Deserialize)]
struct UnitsQuery {
    node: Option<NodeId>,
}

async fn units(State(engine): State<AppState>, query: Result<Query<UnitsQuery>, QueryRejection>) -> Response {
    match query {
        Ok(Query(q)) => json(StatusCode::OK, &UnitsResponse { units: engine.directory_sync.unit_records(q.node.as_ref()).await }),
        Err(e) => refuse(&engine, Refusal::malformed(format!("query parameters are invalid ({}): use node=<node-id>", e.body_text())))
            .await
            .into_response(),
    }
}

async fn unit(State(engine): State<AppState>, Path((node, unit)): Path<(String, String)>) -> Response {
    let address = match parse_unit(&engine, &node, &unit).await {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    let found = engine.directory_sync.unit_records(None).await.into_iter().find(|u| u.address == address);
    answer(&engine, found.ok_or_else(|| Refusal::new("not-found", 404, format!("unit {address} is not in the directory")))).await
}

async fn add_unit(State(engine): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    match parse_body::<NewUnit>(&engine, body).await {
        Ok(u) => answer(&engine, engine.add_unit(u).await).await,
        Err(r) => r.into_response(),
    }
}

/// `POST /admin/v1/units/{node}/{unit_action}` where the last segment is `<unit>:<action>`.
async fn unit_action(
    State(engine): State<AppState>,
    Path((node, unit_action)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some((unit, action)) = unit_action.split_once(':') else {
        return refuse(&engine, Refusal::new("not-found", 404, "use /admin/v1/units/{node}/{unit}:suspend, :activate, :revoke or :rotate-key"))
            .await
            .into_response();
    };
    let address = match parse_unit(&engine, &node, unit).await {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    let result = match action {
        "suspend" => engine.set_unit_status(&address, UnitStatus::Suspended).await,
        "activate" => engine.set_unit_status(&address, UnitStatus::Active).await,
        "revoke" => engine.set_unit_status(&address, UnitStatus::Revoked).await,
        "rotate-key" => match parse_body::<RotateKey>(&engine, body).await {
            Ok(r) => engine.rotate_key(&address, r).await,
            Err(r) => return r.into_response(),
        },
        other => Err(Refusal::new("not-found", 404, format!("unknown unit action {other:?}: use suspend, activate, revoke or rotate-key"))),
    };
    answer(&engine, result).await
}

async fn issue_token(State(engine): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    match parse_body::<IssueToken>(&engine, body).await {
        Ok(req) => answer(&engine, engine.access.issue_token(&engine.services, req).await).await,
        Err(r) => r.into_response(),
    }
}

#[derive(Deserialize)]
struct TokensQuery {
    unit: Option<UnitAddress>,
}

async fn tokens(State(engine): State<AppState>, query: Result<Query<TokensQuery>, QueryRejection>) -> Response {
    match query {
        Ok(Query(q)) => answer(&engine, engine.access.token_infos(&engine.services, q.unit.as_ref()).await.map(|tokens| TokensResponse { tokens })).await,
        Err(e) => refuse(&engine, Refusal::malformed(format!("query parameters are invalid ({}): use unit=<address>", e.body_text())))
            .await
            .into_response(),
    }
}

async fn revoke_token(State(engine): State<AppState>, Path(id_action): Path<String>) -> Response {
    match id_action.strip_suffix(":revoke") {
        Some(id) => answer(&engine, engine.access.revoke_token(&engine.services, id).await).await,
        None => refuse(&engine, Refusal::new("not-found", 404, "use POST /admin/v1/tokens/{id}:revoke")).await.into_response(),
    }
}

/// The admin API. Every route but the health checks and `/metrics` is behind `doors` (operator
/// token, no browsers, JSON bodies: see `admin_doors`).
pub fn router(engine: AppState, doors: super::admin_doors::AdminDoors) -> Router {
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
            .route("/admin/v1/audit:verify", get(audit_verify))
            .route("/admin/v1/directory", get(directory))
            .route("/admin/v1/directory:verify", get(directory_verify))
            .route("/admin/v1/nodes", get(nodes).post(add_node))
            .route("/admin/v1/nodes/{id}", post(node_action))
            .route("/admin/v1/directory:hand-over-root", post(hand_over_root))
            .route("/admin/v1/directory:take-key", post(take_key))
            .route("/admin/v1/units", get(units).post(add_unit))
            .route("/admin/v1/units/{node}/{unit}", get(unit).post(unit_action))
            .route("/admin/v1/tokens", get(tokens).post(issue_token))
            .route("/admin/v1/tokens/{id}", post(revoke_token))
            .merge(super::sharing::admin_routes())
            .merge(super::recovery::admin_routes())
            .route_layer(axum::middleware::from_fn_with_state(doors, super::admin_doors::guard)),
    )
    .with_state(engine)
}
