//! HTTP interfaces: the agency API (documents, inboxes, receipts, status; also `/metrics` and
//! `/healthz`) and the admin API on its own listener, loopback by default. `docs/openapi.yaml`
//! describes both.
//!
//! Bodies are parsed by hand rather than with axum's `Json` extractor, so that a malformed or
//! oversized body gets the same error shape, metric and audit entry as any other refusal.

pub mod admin;
pub mod admin_doors;
pub mod agency;
pub mod asking;
pub mod attachments;
pub mod recovery;
pub mod listener;
pub mod refusal_tally;
pub mod sharing;
pub mod tls;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use exchange_wire::api::Health;
use exchange_wire::{MessageId, UnitAddress};
use serde::de::DeserializeOwned;

use crate::relay::{Engine, Refusal};

pub(crate) type AppState = Arc<Engine>;

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        (status, axum::Json(self.body())).into_response()
    }
}

pub(crate) fn json<T: serde::Serialize>(status: StatusCode, body: &T) -> Response {
    (status, axum::Json(body)).into_response()
}

/// The answer to something taken into custody: 202, or 200 when the node already held it.
pub(crate) fn taken<T: serde::Serialize>(duplicate: bool, body: &T) -> Response {
    json(if duplicate { StatusCode::OK } else { StatusCode::ACCEPTED }, body)
}

/// The parts of a call on one message in a unit's inbox (`/v1/units/{node}/{unit}/inbox/{id}/…`):
/// the unit, the message id and the signed body, each refused as other bad input is.
pub(crate) async fn parse_inbox_call(
    engine: &Engine,
    node: &str,
    unit: &str,
    id: &str,
    body: Result<Bytes, BytesRejection>,
) -> Result<(UnitAddress, MessageId, exchange_wire::api::SignedMessage), Refusal> {
    let unit = parse_unit(engine, node, unit).await?;
    let id = parse_id(engine, id).await?;
    let body = parse_body(engine, body).await?;
    Ok((unit, id, body))
}

/// Parses a JSON body; refusals are counted and audited like any other bad input.
/// serde's messages quote offending values (`invalid type: string "…"`, ``unknown field `…` ``);
/// those may be document content, which must not reach logs or the audit log. Keeps the shape of the
/// message and our own field names (``missing field `envelope` ``), drops the values.
fn redact_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                // A Debug-quoted string: skip to the closing quote, honouring backslash escapes.
                while let Some(d) = chars.next() {
                    match d {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
                out.push_str("\"…\"");
            }
            '`' => {
                // Names after "expected" and in "missing field" are ours; others came from the input.
                let ours = out.ends_with("missing field ") || out.contains("expected");
                let name: String = chars.by_ref().take_while(|&d| d != '`').collect();
                out.push('`');
                out.push_str(if ours { &name } else { "…" });
                out.push('`');
            }
            _ => out.push(c),
        }
    }
    out
}

pub(crate) async fn parse_body<T: DeserializeOwned>(engine: &Engine, body: Result<Bytes, BytesRejection>) -> Result<T, Refusal> {
    let refusal = match body {
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Refusal::new(
            "payload-too-large",
            413,
            format!(
                "request body is larger than this node accepts (payloads up to {} bytes, base64-encoded); see limits.max_payload_bytes",
                engine.services.limits.max_payload_bytes
            ),
        ),
        Err(e) => Refusal::malformed(format!("cannot read the request body: {e}")),
        Ok(bytes) => match serde_json::from_slice::<T>(&bytes) {
            Ok(v) => return Ok(v),
            Err(e) => Refusal::malformed(format!("request body is not the expected JSON: {}", redact_values(&e.to_string()))),
        },
    };
    engine.services.refused_input(&refusal).await;
    Err(refusal)
}

/// Parses a message id from a path; a bad one is counted and audited like any refused input.
pub(crate) async fn parse_id(engine: &Engine, s: &str) -> Result<MessageId, Refusal> {
    match s.parse() {
        Ok(id) => Ok(id),
        Err(e) => Err(refuse(engine, Refusal::malformed(e)).await),
    }
}

/// Parses a unit address from the `{node}/{unit}` path segments.
pub(crate) async fn parse_unit(engine: &Engine, node: &str, unit: &str) -> Result<UnitAddress, Refusal> {
    match format!("{node}/{unit}").parse() {
        Ok(u) => Ok(u),
        Err(e) => Err(refuse(engine, Refusal::malformed(format!("{e}"))).await),
    }
}

pub(crate) async fn refuse(engine: &Engine, r: Refusal) -> Refusal {
    engine.services.refused_input(&r).await;
    r
}

async fn livez(State(engine): State<AppState>) -> Response {
    json(StatusCode::OK, &Health { node: engine.services.here.clone(), status: "ok".into(), peer_id: engine.services.peer_id().to_string() })
}

async fn readyz(State(engine): State<AppState>) -> Response {
    let r = engine.operations().readiness().await;
    json(if r.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, &r)
}

async fn metrics(State(engine): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], engine.services.metrics.render()).into_response()
}

async fn not_found() -> Response {
    Refusal::new("not-found", 404, "no such endpoint; see docs/openapi.yaml").into_response()
}

async fn method_not_allowed() -> Response {
    Refusal::new("method-not-allowed", 405, "this endpoint does not take that HTTP method; see docs/openapi.yaml").into_response()
}

/// Adds what both listeners serve: `/livez` (alias `/healthz`), `/readyz`, `/metrics`, and JSON
/// answers for unknown paths and methods.
pub(crate) fn with_health(router: Router<AppState>) -> Router<AppState> {
    router
        .route("/livez", get(livez))
        .route("/healthz", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

#[cfg(test)]
mod tests {
    #[test]
    fn json_errors_keep_their_shape_but_not_the_values() {
        let e = serde_json::from_str::<exchange_wire::api::SignedMessage>(r#"{"envelope": "机密内容", "signature": "", "payload": ""}"#)
            .unwrap_err()
            .to_string();
        let r = super::redact_values(&e);
        assert!(!r.contains("机密内容"), "{r}");
        assert!(r.contains("invalid type"), "{r}");
        let missing = super::redact_values(&serde_json::from_str::<exchange_wire::api::SignedMessage>("{}").unwrap_err().to_string());
        assert!(missing.contains("missing field `envelope`"), "{missing}");
        // Escaped quotes inside a value, and values shown in backticks, are dropped too.
        let r = super::redact_values(r#"invalid type: string "a\"秘密\"b", expected struct"#);
        assert!(!r.contains("秘密"), "{r}");
        let r = super::redact_values("unknown field `秘密字段`, expected one of `envelope`, `signature`");
        assert!(!r.contains("秘密字段") && r.contains("`envelope`"), "{r}");
    }
}
