//! The data-sharing catalog in force at this node: applied when the directory brings a newer one,
//! signed and published by the root from its seed or from an operator, and compiled for the checks.

use std::sync::Arc;

use exchange_wire::sharing::Catalog;

use crate::config::DirectoryConfig;
use crate::relay::services::Services;
use crate::relay::Refusal;
use super::Sharing;
use crate::directory::segments::SegmentSet;
use crate::sharing::CompiledCatalog;

/// The catalog seed the root signs at start, if it has one and holds no catalog, or an older one
/// (`held`): an error when a node other than the root is given one. Signing it is the directory's.
pub(crate) fn seed_to_sign(s: &Services, seeds: &DirectoryConfig, held: &SegmentSet) -> anyhow::Result<Option<Catalog>> {
    let Some(path) = &seeds.catalog_seed else { return Ok(None) };
    if !s.is_root() {
        anyhow::bail!("directory.catalog_seed is for the root node only: this node's key is not the pinned root_key");
    }
    let catalog = crate::sharing::catalog_from_file(path).map_err(anyhow::Error::msg)?;
    Ok((!held.catalog().is_some_and(|c| c.version >= catalog.version)).then_some(catalog))
}

/// Whether an operator's `catalog` may be signed here: this node is the root, the catalog compiles
/// and it is newer than the version `held`. Signing it is the directory's.
pub(crate) fn check_to_sign(s: &Services, held: Option<u64>, catalog: &Catalog) -> Result<(), Refusal> {
    if !s.is_root() {
        return Err(Refusal::new("conflict", 409, "only the root node signs the catalog: run this against the root node's admin API"));
    }
    CompiledCatalog::compile(catalog).map_err(|e| Refusal::malformed(format!("the catalog is refused: {e}")))?;
    if let Some(held) = held
        && held >= catalog.version
    {
        return Err(Refusal::new("conflict", 409, format!("the catalog held is at version {held}; publish version {} or higher", held + 1)));
    }
    Ok(())
}


/// The sharing part's own catalog work: only its own state and the metrics.
impl Sharing {
    /// Puts the catalog of `set` in force if it is newer than the one in force; true when it did.
    pub(crate) fn apply_catalog(&self, s: &Services, set: &SegmentSet) -> bool {
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
