//! The data-sharing catalog in force at this node: applied when the directory brings a newer one,
//! signed and published by the root from its seed or from an operator, and compiled for the checks.

use std::sync::Arc;

use exchange_wire::api::AdminActionResponse;
use exchange_wire::sharing::Catalog;

use crate::relay::services::Services;
use crate::relay::{Engine, Refusal};
use super::Sharing;
use crate::directory::segments::SegmentSet;
use crate::sharing::CompiledCatalog;

impl Engine {

    /// Puts the catalog of `set` in force if it is newer than the one in force (called whenever the
    /// directory changes). Requests that waited for the catalog can be decided then: deciding takes
    /// custody, so the engine starts it.
    pub(crate) fn apply_catalog(self: &Arc<Self>, set: &SegmentSet) {
        if self.sharing.apply_catalog(&self.services, set) {
            let engine = self.clone();
            self.tasks.spawn(async move { engine.process_subscription_requests().await });
        }
    }

    /// Root only: signs the catalog seed file if no catalog, or an older one, is held.
    pub(crate) async fn publish_catalog_seed(self: &Arc<Self>) -> anyhow::Result<()> {
        let Some(path) = &self.directory_sync.seeds().catalog_seed else { return Ok(()) };
        if !self.is_root() {
            anyhow::bail!("directory.catalog_seed is for the root node only: this node's key is not the pinned root_key");
        }
        let catalog = crate::sharing::catalog_from_file(path).map_err(anyhow::Error::msg)?;
        if self.directory_sync.segments().await.catalog().is_some_and(|c| c.version >= catalog.version) {
            return Ok(());
        }
        if let Some(Err(e)) = self.publish(exchange_wire::directory::Segment::Catalog(catalog)).await.first() {
            anyhow::bail!("cannot sign the catalog seed {}: {}", path.display(), e.reason);
        }
        Ok(())
    }

    /// `exchange-admin catalog publish`: the root signs a new version of the catalog.
    pub async fn admin_publish_catalog(self: &Arc<Self>, catalog: Catalog) -> Result<AdminActionResponse, Refusal> {
        if !self.is_root() {
            return Err(Refusal::new("conflict", 409, "only the root node signs the catalog: run this against the root node's admin API"));
        }
        CompiledCatalog::compile(&catalog).map_err(|e| Refusal::malformed(format!("the catalog is refused: {e}")))?;
        if let Some(held) = self.directory_sync.segments().await.catalog()
            && held.version >= catalog.version
        {
            return Err(Refusal::new(
                "conflict",
                409,
                format!("the catalog held is at version {}; publish version {} or higher", held.version, held.version + 1),
            ));
        }
        let (version, topics) = (catalog.version, catalog.topics.len());
        match self.publish(exchange_wire::directory::Segment::Catalog(catalog)).await.pop() {
            Some(Ok(_)) => {
                self.admin_record("catalog-publish", format!("catalog version {version} with {topics} topics")).await?;
                Ok(AdminActionResponse { affected: topics as u64, message: format!("catalog version {version} signed and passed on to the network") })
            }
            Some(Err(e)) => Err(Refusal::new(if e.code == "storage" { "storage" } else { "conflict" }, 409, e.reason)),
            None => Err(Refusal::new("storage", 503, "nothing was signed")),
        }
    }
}

/// The sharing part's own catalog work: only its own state and the metrics.
impl Sharing {
    /// Puts the catalog of `set` in force if it is newer than the one in force; true when it did.
    fn apply_catalog(&self, s: &Services, set: &SegmentSet) -> bool {
        let Some(catalog) = set.catalog() else { return false };
        if self.catalog().is_some_and(|c| c.catalog.version >= catalog.version) {
            return false;
        }
        match CompiledCatalog::compile(catalog) {
            Ok(compiled) => {
                for t in &catalog.topics {
                    s.metrics.data_published.with_label_values(&[t.name.as_str()]).inc_by(0);
                    s.metrics.data_delivered.with_label_values(&[t.name.as_str()]).inc_by(0);
                }
                s.metrics.catalog_version.set(catalog.version as i64);
                self.put_in_force(Arc::new(compiled));
                tracing::info!(version = catalog.version, topics = catalog.topics.len(), "data-sharing catalog in force");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "the catalog held does not compile; keeping the previous one");
                false
            }
        }
    }

    /// The catalog in force, if any.
    pub fn catalog_view(&self) -> Result<Catalog, Refusal> {
        self.catalog()
            .map(|c| c.catalog.clone())
            .ok_or_else(|| Refusal::new("not-found", 404, "this node holds no data-sharing catalog yet; the root publishes it (exchange-admin catalog publish)"))
    }

    pub(super) fn compiled_catalog(&self) -> Result<Arc<CompiledCatalog>, Refusal> {
        self.catalog().ok_or_else(|| {
            Refusal::new("unknown-topic", 422, "this node holds no data-sharing catalog yet; try again once the root has published it")
        })
    }
}
