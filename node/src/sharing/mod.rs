//! Base-data sharing, the parts that are not engine work: the catalog compiled for validation, and
//! the catalog seed file.
//!
//! Schemas are compiled when a catalog is taken (signed at the root, or received from a
//! neighbour), never first at publish time: a catalog with a schema that does not compile is refused
//! as a whole, so no node ever holds a topic it cannot check.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use exchange_wire::sharing::{Catalog, CatalogSeed, Topic};

/// How many schema violations a refusal lists (the rest are counted).
const MAX_VIOLATIONS: usize = 5;

/// A catalog whose schemas are compiled.
pub struct CompiledCatalog {
    pub catalog: Catalog,
    validators: HashMap<String, jsonschema::Validator>,
}

/// A record that does not satisfy its topic's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaViolation {
    /// For the publisher: each failing field's path, its value and the rule it broke.
    pub message: String,
    /// For logs and the audit log: the same without the values (records are personal data).
    pub masked: String,
}

impl std::fmt::Debug for CompiledCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledCatalog").field("version", &self.catalog.version).finish()
    }
}

impl CompiledCatalog {
    /// Checks the catalog's shape and compiles every topic's schema (formats are asserted, so
    /// `"format": "date"` means a real calendar date).
    pub fn compile(catalog: &Catalog) -> Result<CompiledCatalog, String> {
        catalog.check_shape()?;
        let mut validators = HashMap::new();
        for t in &catalog.topics {
            let v = jsonschema::options()
                .should_validate_formats(true)
                .build(&t.schema)
                .map_err(|e| format!("topic {}: the schema does not compile: {e}", t.name))?;
            validators.insert(t.name.clone(), v);
        }
        Ok(CompiledCatalog { catalog: catalog.clone(), validators })
    }

    pub fn topic(&self, name: &str) -> Option<&Topic> {
        self.catalog.topic(name)
    }

    /// Validates a record against its topic's schema.
    pub fn validate(&self, topic: &str, record: &serde_json::Value) -> Result<(), SchemaViolation> {
        let Some(v) = self.validators.get(topic) else {
            return Err(SchemaViolation { message: format!("topic {topic} is not in the catalog"), masked: format!("topic {topic} is not in the catalog") });
        };
        let mut message = Vec::new();
        let mut masked = Vec::new();
        let mut total = 0;
        for e in v.iter_errors(record) {
            total += 1;
            if message.len() < MAX_VIOLATIONS {
                let path = e.instance_path().to_string();
                let path = if path.is_empty() { "/".to_string() } else { path };
                message.push(format!("{path}: {e}"));
                masked.push(format!("{path}: {}", e.masked()));
            }
        }
        if total == 0 {
            return Ok(());
        }
        let more = if total > MAX_VIOLATIONS { format!(" (and {} more)", total - MAX_VIOLATIONS) } else { String::new() };
        let hint = format!("; fix the record to match the {topic} schema (GET /v1/catalog) and sign it again");
        Err(SchemaViolation { message: format!("{}{more}{hint}", message.join("; ")), masked: format!("{}{more}{hint}", masked.join("; ")) })
    }
}

/// A handle to the current compiled catalog, swapped whenever a newer catalog is taken.
#[derive(Debug, Default)]
pub struct CatalogHandle(std::sync::RwLock<Option<Arc<CompiledCatalog>>>);

impl CatalogHandle {
    pub fn current(&self) -> Option<Arc<CompiledCatalog>> {
        self.0.read().expect("catalog lock").clone()
    }

    pub fn replace(&self, c: Arc<CompiledCatalog>) {
        *self.0.write().expect("catalog lock") = Some(c);
    }
}

/// Reads a catalog seed file and compiles it (so a bad schema is reported at load, naming the topic).
pub fn catalog_from_file(path: &Path) -> Result<Catalog, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read catalog {}: {e}", path.display()))?;
    catalog_from_toml(&text, path.parent().unwrap_or(Path::new("."))).map_err(|e| format!("catalog {}: {e}", path.display()))
}

/// Parses catalog seed text; `schema_file` paths are relative to `base`.
pub fn catalog_from_toml(text: &str, base: &Path) -> Result<Catalog, String> {
    let seed: CatalogSeed = toml::from_str(text).map_err(|e| e.to_string())?;
    let catalog = seed.into_catalog(base)?;
    CompiledCatalog::compile(&catalog)?;
    Ok(catalog)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../configs/catalog.toml");

    #[test]
    fn the_example_catalog_compiles_and_validates() {
        let catalog = catalog_from_toml(EXAMPLE, Path::new("../configs")).expect("configs/catalog.toml");
        let compiled = CompiledCatalog::compile(&catalog).unwrap();
        for name in [
            "person.birth",
            "person.death",
            "person.marriage",
            "person.divorce",
            "person.move-in",
            "person.move-out",
            "legal-person.registered",
            "legal-person.changed",
            "legal-person.deregistered",
        ] {
            assert!(compiled.topic(name).is_some(), "{name} is in the example catalog");
        }
        let good = serde_json::json!({"id_number": "44010419300101001X", "name": "张三", "death_date": "2026-11-20", "place": "广州市越秀区"});
        compiled.validate("person.death", &good).unwrap();
        let bad = serde_json::json!({"id_number": "44010419300101001X", "name": "张三", "death_date": "2026-13-01", "place": "广州市越秀区"});
        let err = compiled.validate("person.death", &bad).unwrap_err();
        assert!(err.message.contains("/death_date: \"2026-13-01\" is not a \"date\""), "{}", err.message);
        assert!(!err.masked.contains("2026-13-01"), "values stay out of logs: {}", err.masked);
        let missing = serde_json::json!({"id_number": "44010419300101001X"});
        assert!(compiled.validate("person.death", &missing).unwrap_err().message.contains("death_date"));
    }

    #[test]
    fn a_schema_that_does_not_compile_is_refused_at_load() {
        let text = "version = 1\n[[topic]]\nname = \"t\"\nowner = \"gz/civil-affairs\"\nsharing = \"open\"\nschema = '{\"type\": \"no-such-type\"}'\n";
        let err = catalog_from_toml(text, Path::new(".")).unwrap_err();
        assert!(err.contains("topic t"), "{err}");
    }
}
