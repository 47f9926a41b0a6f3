//! HTTP endpoints of base-data sharing: the catalog, publishing, subscriptions, subscribers'
//! streams (agency API), and the catalog and subscription decisions for operators (admin API).

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use exchange_wire::api::SignedMessage;
use exchange_wire::sharing::{AckRequest, BatchPublishRequest, BatchPublishResponse, Catalog, DecideRequest, PublishResult, check_topic_name};
use serde::Deserialize;

use super::{AppState, json, parse_body, parse_unit, refuse};
use crate::relay::Refusal;
use crate::relay::access::Caller;

/// 200 (or `created`) with the answer; a refusal is counted and audited unless it is storage
/// trouble or was audited already (`audited`).
async fn answer<T: serde::Serialize>(engine: &AppState, r: Result<T, Refusal>, ok: StatusCode, audited: bool) -> Response {
    match r {
        Ok(v) => json(ok, &v),
        Err(r) if r.transient || audited => r.into_response(),
        Err(r) => refuse(engine, r).await.into_response(),
    }
}

async fn topic_name(engine: &AppState, topic: &str) -> Result<(), Refusal> {
    match check_topic_name(topic) {
        Ok(()) => Ok(()),
        Err(e) => Err(refuse(engine, Refusal::malformed(e)).await),
    }
}

async fn catalog(State(engine): State<AppState>, _caller: Caller) -> Response {
    match engine.sharing.catalog_view() {
        Ok(c) => json(StatusCode::OK, &c),
        Err(r) => r.into_response(),
    }
}

async fn publish(State(engine): State<AppState>, caller: Caller, body: Result<Bytes, BytesRejection>) -> Response {
    let m: SignedMessage = match parse_body(&engine, body).await {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    match engine.sharing.publish_record(&engine.services, &engine.health, &engine.forwarders, &caller, m).await {
        Ok(ok) => super::taken(ok.duplicate, &ok),
        Err(r) => r.into_response(),
    }
}

async fn publish_batch(State(engine): State<AppState>, caller: Caller, body: Result<Bytes, BytesRejection>) -> Response {
    let req: BatchPublishRequest = match parse_body(&engine, body).await {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    if req.records.len() > 1000 {
        let r = Refusal::malformed(format!("a batch holds at most 1000 records, not {}", req.records.len()));
        return refuse(&engine, r).await.into_response();
    }
    let results = engine
        .sharing
        .publish_records(&engine.services, &engine.health, &engine.forwarders, &caller, req.records)
        .await
        .into_iter()
        .map(|r| match r {
            Ok(ok) => PublishResult::Published(ok),
            Err(e) => PublishResult::Refused(e.body()),
        })
        .collect();
    json(StatusCode::OK, &BatchPublishResponse { results })
}

async fn subscribe(State(engine): State<AppState>, caller: Caller, body: Result<Bytes, BytesRejection>) -> Response {
    let m: SignedMessage = match parse_body(&engine, body).await {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    let r = engine.sharing.request_subscription(&engine.services, &engine.forwarders, &caller, m).await;
    answer(&engine, r, StatusCode::ACCEPTED, true).await
}

async fn subscriptions(State(engine): State<AppState>, caller: Caller, Path((node, unit)): Path<(String, String)>) -> Response {
    let unit = match parse_unit(&engine, &node, &unit).await {
        Ok(u) => u,
        Err(r) => return r.into_response(),
    };
    let r = engine.sharing.subscriptions(&engine.services, &caller, &unit).await;
    answer(&engine, r, StatusCode::OK, false).await
}

async fn subscribers(State(engine): State<AppState>, caller: Caller, Path((node, unit)): Path<(String, String)>) -> Response {
    let unit = match parse_unit(&engine, &node, &unit).await {
        Ok(u) => u,
        Err(r) => return r.into_response(),
    };
    let r = engine.sharing.subscribers(&engine.services, Some(&caller), Some(&unit)).await;
    answer(&engine, r, StatusCode::OK, false).await
}

async fn decide(State(engine): State<AppState>, caller: Caller, Path((node, unit)): Path<(String, String)>, body: Result<Bytes, BytesRejection>) -> Response {
    let unit = match parse_unit(&engine, &node, &unit).await {
        Ok(u) => u,
        Err(r) => return r.into_response(),
    };
    let req: DecideRequest = match parse_body(&engine, body).await {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    let r = engine.sharing.decide_subscription(&engine.services, &engine.forwarders, &caller, &unit, req).await;
    answer(&engine, r, StatusCode::OK, false).await
}

#[derive(Deserialize)]
struct RecordsQuery {
    after: Option<u64>,
    #[serde(default = "super::agency::default_limit")]
    limit: u32,
    #[serde(default)]
    wait_ms: u64,
}

async fn records(
    State(engine): State<AppState>,
    caller: Caller,
    Path((node, unit, topic)): Path<(String, String, String)>,
    query: Result<Query<RecordsQuery>, QueryRejection>,
) -> Response {
    let unit = match parse_unit(&engine, &node, &unit).await {
        Ok(u) => u,
        Err(r) => return r.into_response(),
    };
    if let Err(r) = topic_name(&engine, &topic).await {
        return r.into_response();
    }
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => {
            let r = Refusal::malformed(format!("query parameters are invalid ({}): use after=<seq>, limit=1..1000, wait_ms=<ms>", e.body_text()));
            return refuse(&engine, r).await.into_response();
        }
    };
    let wait = Duration::from_millis(q.wait_ms.min(engine.services.api_max_wait_ms));
    let r = engine.sharing.records(&engine.services, &caller, &unit, &topic, q.after, q.limit, wait).await;
    answer(&engine, r, StatusCode::OK, false).await
}

async fn ack(
    State(engine): State<AppState>,
    caller: Caller,
    Path((node, unit, topic)): Path<(String, String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let unit = match parse_unit(&engine, &node, &unit).await {
        Ok(u) => u,
        Err(r) => return r.into_response(),
    };
    if let Err(r) = topic_name(&engine, &topic).await {
        return r.into_response();
    }
    let req: AckRequest = match parse_body(&engine, body).await {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    let r = engine.sharing.ack(&engine.services, &caller, &unit, &topic, req.seq).await;
    answer(&engine, r, StatusCode::OK, false).await
}

/// The agency endpoints, merged into the agency router.
pub fn agency_routes() -> Router<AppState> {
    Router::new()
        .route("/v1/catalog", get(catalog))
        .route("/v1/records", post(publish))
        .route("/v1/records:batch", post(publish_batch))
        .route("/v1/subscriptions", post(subscribe))
        .route("/v1/units/{node}/{unit}/subscriptions", get(subscriptions))
        .route("/v1/units/{node}/{unit}/subscriptions/{topic}/records", get(records))
        .route("/v1/units/{node}/{unit}/subscriptions/{topic}/ack", post(ack))
        .route("/v1/units/{node}/{unit}/subscribers", get(subscribers))
        .route("/v1/units/{node}/{unit}/subscribers:decide", post(decide))
}

async fn admin_catalog(State(engine): State<AppState>) -> Response {
    match engine.sharing.catalog_view() {
        Ok(c) => json(StatusCode::OK, &c),
        Err(r) => r.into_response(),
    }
}

async fn admin_publish_catalog(State(engine): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    let catalog: Catalog = match parse_body(&engine, body).await {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    let r = engine.admin_publish_catalog(catalog).await;
    answer(&engine, r, StatusCode::OK, false).await
}

async fn admin_subscriptions(State(engine): State<AppState>) -> Response {
    let r = engine.sharing.subscribers(&engine.services, None, None).await;
    answer(&engine, r, StatusCode::OK, false).await
}

async fn admin_decide(State(engine): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    let req: DecideRequest = match parse_body(&engine, body).await {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    let r = engine.sharing.admin_decide_subscription(&engine.services, &engine.forwarders, req).await;
    answer(&engine, r, StatusCode::OK, false).await
}

/// The admin endpoints, merged into the admin router.
pub fn admin_routes() -> Router<AppState> {
    Router::new()
        .route("/admin/v1/catalog", get(admin_catalog).post(admin_publish_catalog))
        .route("/admin/v1/subscriptions", get(admin_subscriptions))
        .route("/admin/v1/subscriptions:decide", post(admin_decide))
}
