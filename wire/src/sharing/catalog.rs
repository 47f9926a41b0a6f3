//! The catalog (目录) of shared topics, signed by the root and carried as a directory segment, and
//! the seed file it is made from. Below the rest of `sharing`: the directory holds a catalog, and the
//! API shapes of records and subscriptions lean on the API, so the catalog leans on neither.

use serde::{Deserialize, Serialize};

use crate::address::UnitAddress;

/// Who may subscribe to a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sharing {
    /// Any unit; granted at once.
    Open,
    /// Granted or refused by the owner unit or an operator of the owner's node.
    Approval,
    /// Never shared: requests are refused with the reason.
    NotShared,
}

impl Sharing {
    pub fn as_str(&self) -> &'static str {
        match self {
            Sharing::Open => "open",
            Sharing::Approval => "approval",
            Sharing::NotShared => "not-shared",
        }
    }
}

/// One topic of the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topic {
    /// `person.death`, `legal-person.registered`, ...
    pub name: String,
    #[serde(default)]
    pub title: String,
    /// The one unit that may publish records of this topic (一数一源).
    pub owner: UnitAddress,
    pub sharing: Sharing,
    /// The field of the record that holds the subject key; when set, it must equal `data.subject`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_field: Option<String>,
    /// The JSON Schema (draft 2020-12) every record of the topic must satisfy.
    pub schema: serde_json::Value,
}

/// The catalog (目录), signed by the root node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    pub version: u64,
    #[serde(default, rename = "topic")]
    pub topics: Vec<Topic>,
}

impl Catalog {
    pub fn topic(&self, name: &str) -> Option<&Topic> {
        self.topics.iter().find(|t| t.name == name)
    }

    /// Checks what does not need a schema compiler: topic names well formed and unique.
    pub fn check_shape(&self) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        for t in &self.topics {
            check_topic_name(&t.name)?;
            if !seen.insert(&t.name) {
                return Err(format!("topic {} is listed twice", t.name));
            }
            if t.owner.is_node() {
                return Err(format!("topic {}: the owner must be a unit, not the node address {}", t.name, t.owner));
            }
            if !t.schema.is_object() {
                return Err(format!("topic {}: schema must be a JSON object (a JSON Schema)", t.name));
            }
        }
        Ok(())
    }
}

/// The catalog seed file (`configs/catalog.toml`, read with any serde format): `version`, then
/// `[[topic]]` entries whose `schema` is a JSON Schema written as JSON text, or `schema_file`, a JSON
/// file beside the seed. Shared by the root node (`directory.catalog_seed`) and `exchange-admin
/// catalog publish`, so both read the file the same way.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogSeed {
    pub version: u64,
    #[serde(rename = "topic", default)]
    pub topics: Vec<SeedTopic>,
}

/// A topic of a catalog seed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedTopic {
    pub name: String,
    #[serde(default)]
    pub title: String,
    pub owner: UnitAddress,
    pub sharing: Sharing,
    #[serde(default)]
    pub subject_field: Option<String>,
    #[serde(default)]
    pub schema: Option<String>,
    #[serde(default)]
    pub schema_file: Option<String>,
}

impl CatalogSeed {
    /// The catalog, reading `schema_file`s relative to `base` and parsing every schema as JSON.
    /// Whether the schemas compile is the node's to check.
    pub fn into_catalog(self, base: &std::path::Path) -> Result<Catalog, String> {
        let mut topics = Vec::with_capacity(self.topics.len());
        for t in self.topics {
            let raw = match (t.schema, t.schema_file) {
                (Some(s), None) => s,
                (None, Some(f)) => std::fs::read_to_string(base.join(&f)).map_err(|e| format!("topic {}: cannot read schema_file {f}: {e}", t.name))?,
                _ => return Err(format!("topic {}: give exactly one of schema (JSON text) or schema_file", t.name)),
            };
            let schema: serde_json::Value = serde_json::from_str(&raw).map_err(|e| format!("topic {}: the schema is not JSON: {e}", t.name))?;
            topics.push(Topic { name: t.name, title: t.title, owner: t.owner, sharing: t.sharing, subject_field: t.subject_field, schema });
        }
        let catalog = Catalog { version: self.version, topics };
        catalog.check_shape()?;
        Ok(catalog)
    }
}

/// A topic name: lowercase letters, digits, `-` and `.`, 1 to 64 characters, used in URLs as is.
pub fn check_topic_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !name.starts_with('.')
        && !name.ends_with('.');
    if ok { Ok(()) } else { Err(format!("{name:?} is not a topic name: use lowercase letters, digits, '-' and '.' (at most 64)")) }
}
