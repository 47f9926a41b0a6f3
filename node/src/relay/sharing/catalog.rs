//! The data-sharing catalog in force at this node: applied when the directory brings a newer one,
//! signed and published by the root from its seed or from an operator, and compiled for the checks.

use std::sync::Arc;

use exchange_wire::api::AdminActionResponse;
use exchange_wire::sharing::Catalog;

use crate::relay::{Engine, Refusal};
use crate::directory::segments::SegmentSet;
use crate::sharing::CompiledCatalog;

impl Engine {

    /// Puts the catalog of `set` in force if it is newer than the one in force (called whenever the
    /// directory changes).
    pub(crate) fn apply_catalog(self: &Arc<Self>, set: &SegmentSet) {
        let Some(catalog) = set.catalog() else { return };
        if self.sharing.catalog().is_some_and(|c| c.catalog.version >= catalog.version) {
            return;
        }
        match CompiledCatalog::compile(catalog) {
            Ok(compiled) => {
                for t in &catalog.topics {
                    self.metrics.data_published.with_label_values(&[t.name.as_str()]).inc_by(0);
                    self.metrics.data_delivered.with_label_values(&[t.name.as_str()]).inc_by(0);
                }
                self.metrics.catalog_version.set(catalog.version as i64);
                self.sharing.put_in_force(Arc::new(compiled));
                tracing::info!(version = catalog.version, topics = catalog.topics.len(), "data-sharing catalog in force");
                // Requests that waited for the catalog can be decided now.
                let engine = self.clone();
                self.tasks.spawn(async move { engine.process_subscription_requests().await });
            }
            Err(e) => tracing::error!(error = %e, "the catalog held does not compile; keeping the previous one"),
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

    /// The catalog in force, if any.
    pub fn catalog_view(&self) -> Result<Catalog, Refusal> {
        self.sharing
            .catalog()
            .map(|c| c.catalog.clone())
            .ok_or_else(|| Refusal::new("not-found", 404, "this node holds no data-sharing catalog yet; the root publishes it (exchange-admin catalog publish)"))
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

    pub(super) fn compiled_catalog(&self) -> Result<Arc<CompiledCatalog>, Refusal> {
        self.sharing.catalog().ok_or_else(|| {
            Refusal::new("unknown-topic", 422, "this node holds no data-sharing catalog yet; try again once the root has published it")
        })
    }
}
