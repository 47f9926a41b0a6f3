//! Admin routes of backup and reconciliation: `POST /admin/v1/backup` (an online backup into a
//! folder on the node's host) and `GET /admin/v1/reconciliation` (the report of the reconciliation
//! after a restore, with its entries a page at a time).

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use exchange_wire::backup::{BackupRequest, ReconciliationPage};
use serde::Deserialize;

use super::{AppState, json, parse_body, refuse};
use crate::backup::report;
use crate::relay::Refusal;

async fn backup(State(engine): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    let request = match parse_body::<BackupRequest>(&engine, body).await {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    match engine.backup(&request.out).await {
        Ok(manifest) => json(StatusCode::OK, &manifest),
        // A failed backup is the node's trouble, not bad input: not counted as a refusal.
        Err(r) if r.transient => r.into_response(),
        Err(r) => refuse(&engine, r).await.into_response(),
    }
}

#[derive(Deserialize)]
struct PageQuery {
    #[serde(default)]
    after: u64,
    #[serde(default = "default_page")]
    limit: u32,
}

fn default_page() -> u32 {
    1000
}

async fn reconciliation(State(engine): State<AppState>, query: Result<Query<PageQuery>, QueryRejection>) -> Response {
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => {
            let r = Refusal::malformed(format!("query parameters are invalid ({}): use after=<n>, limit=<n>", e.body_text()));
            return refuse(&engine, r).await.into_response();
        }
    };
    let data_dir = engine.recovery.data_dir.clone();
    let read = tokio::task::spawn_blocking(move || -> std::io::Result<ReconciliationPage> {
        let report = match report::read_report(&data_dir)? {
            Some(r) => Some(r),
            None => report::due(&data_dir)?.map(|due| pending_report(&due)),
        };
        let (entries, next_after) = report::read_entries(&data_dir, q.after, q.limit.clamp(1, 10_000))?;
        Ok(ReconciliationPage { report, entries, next_after })
    })
    .await;
    match read {
        Ok(Ok(page)) => json(StatusCode::OK, &page),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot read the reconciliation report");
            Refusal::new("storage", 503, format!("the reconciliation report cannot be read: {e}")).into_response()
        }
        Err(e) => Refusal::new("storage", 503, format!("the reconciliation report cannot be read: {e}")).into_response(),
    }
}

/// The report of a reconciliation that is due but has not started (the node is starting).
fn pending_report(due: &report::Due) -> exchange_wire::backup::ReconciliationReport {
    exchange_wire::backup::ReconciliationReport {
        node: due.node.clone(),
        state: exchange_wire::backup::ReconcileState::Due,
        backup_folder: due.backup_folder.clone(),
        backup_taken_at_ms: due.backup_taken_at_ms,
        restored_at_ms: due.restored_at_ms,
        previous_data: due.previous_data.clone(),
        since_ms: due.backup_taken_at_ms,
        until_ms: due.first_start_ms,
        started_at_ms: None,
        finished_at_ms: None,
        neighbours: Vec::new(),
        counts: Default::default(),
        entries: 0,
        unknowable: String::new(),
    }
}

/// The routes, merged into the admin API.
pub fn admin_routes() -> Router<AppState> {
    Router::new().route("/admin/v1/backup", post(backup)).route("/admin/v1/reconciliation", get(reconciliation))
}
