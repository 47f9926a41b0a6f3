//! A node run as several replicas over one PostgreSQL database (an active city node and its
//! standby): which one is active, and what a standby answers while it waits.
//!
//! The replicas share the node's key file, so its libp2p identity (one peer id); the node tree
//! lists every replica's address under the node, and its children's `parent_address` lists them
//! too. Only the active replica listens for other nodes: a neighbour dials all the addresses every
//! quarter second and reaches whichever replica is active, without operator action.
//!
//! The active one is the replica holding the database's lease ([`Lease`]). A standby waits for it
//! with its HTTP listeners open: `/livez` and `/metrics` answer (so monitoring sees the standby and
//! `exchange_replica_active` 0), `/readyz` and every other route answer 503 `standby`. When it takes
//! the lease, the same listeners switch to the node's full routers ([`Switch`]).

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use exchange_wire::NodeId;
use exchange_wire::api::{Check, Health, Readiness};
use tower::ServiceExt as _;

use crate::metrics::Metrics;
use crate::relay::Refusal;
use crate::storage::StorageError;
use crate::storage::health::StorageHealth;
use crate::storage::postgres::lease::Lease;

/// A listener's router that answers as a standby until the node's full router is set.
#[derive(Clone)]
pub struct Switch {
    active: Arc<OnceLock<Router>>,
}

impl Switch {
    /// The router to serve: the standby's answers, then (once [`Switch::activate`] ran) `full`.
    pub fn router(&self, standby: Router) -> Router {
        let active = self.active.clone();
        Router::new().fallback_service(tower::service_fn(move |req: Request| {
            let router = active.get().cloned().unwrap_or_else(|| standby.clone());
            async move { router.oneshot(req).await }
        }))
    }

    /// From now on, every request goes to `full`.
    pub fn activate(&self, full: Router) {
        let _ = self.active.set(full);
    }

    pub fn new() -> Switch {
        Switch { active: Arc::new(OnceLock::new()) }
    }
}

impl Default for Switch {
    fn default() -> Self {
        Switch::new()
    }
}

/// What a standby answers on both listeners.
pub fn standby_router(node: NodeId, peer_id: String, metrics: Arc<Metrics>) -> Router {
    let why = format!(
        "standby: another replica of node {node} holds the lease on the database; this one takes over when that one goes"
    );
    let health = Health { node, status: "standby".into(), peer_id };
    let livez = move || {
        let health = health.clone();
        async move { axum::Json(health).into_response() }
    };
    let ready = Readiness { ready: false, checks: vec![Check { name: "replica".into(), ok: false, detail: why.clone() }] };
    let readyz = move || {
        let ready = ready.clone();
        async move { (StatusCode::SERVICE_UNAVAILABLE, axum::Json(ready)).into_response() }
    };
    let render = move || {
        let text = metrics.render();
        async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response() }
    };
    let refuse = move || {
        let why = why.clone();
        async move {
            let mut r: Response = Refusal::new("standby", 503, why).into_response();
            r.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            r
        }
    };
    Router::new()
        .route("/livez", get(livez.clone()))
        .route("/healthz", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render))
        .fallback(refuse)
}

/// Takes the database's lease, calling `waiting` once if another replica holds it; keeps
/// `exchange_replica_active` and `exchange_lease_changes_total` current, now and when the lease
/// is lost later.
pub async fn take_lease(url: &str, health: Arc<StorageHealth>, metrics: Arc<Metrics>, waiting: impl FnOnce()) -> Result<Lease, StorageError> {
    metrics.replica_active.set(0);
    let lease = Lease::acquire_or_wait(url, health, waiting).await?;
    metrics.replica_active.set(1);
    metrics.lease_changes.with_label_values(&["acquired"]).inc();
    let lost = lease.lost.clone();
    tokio::spawn(async move {
        lost.cancelled().await;
        metrics.replica_active.set(0);
        metrics.lease_changes.with_label_values(&["lost"]).inc();
    });
    Ok(lease)
}
