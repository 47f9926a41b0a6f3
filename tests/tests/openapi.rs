//! docs/openapi.yaml against the code: it is valid YAML (a client generator must be able to read
//! it), every route the node serves is documented and every documented path is served, and the
//! enumerations a client switches on (envelope kinds, recipient states) list exactly what the wire
//! crate has.

use std::collections::BTreeSet;
use std::path::Path;

use exchange_wire::Kind;
use exchange_wire::api::RecipientState;
use yaml_rust2::{Yaml, YamlLoader};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn spec() -> Yaml {
    let text = std::fs::read_to_string(Path::new(ROOT).join("docs/openapi.yaml")).unwrap();
    let mut docs = YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("docs/openapi.yaml is not valid YAML: {e} (quote descriptions holding ': ' or use a block scalar)"));
    assert_eq!(docs.len(), 1, "docs/openapi.yaml holds one document");
    docs.remove(0)
}

fn enum_of(spec: &Yaml, schema: &str) -> BTreeSet<String> {
    spec["components"]["schemas"][schema]["enum"]
        .as_vec()
        .unwrap_or_else(|| panic!("schema {schema} has an enum"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// Every envelope kind; the match makes a new variant fail to compile here until it is listed.
fn all_kinds() -> Vec<Kind> {
    use Kind::*;
    let all = vec![
        Document, Receipt, DeliveryReport, DirectorySegment, Recall, Query, Answer, DataRecord, DataDelivery,
        SubscriptionRequest, SubscriptionDecision,
    ];
    for k in &all {
        match k {
            Document | Receipt | DeliveryReport | DirectorySegment | Recall | Query | Answer | DataRecord
            | DataDelivery | SubscriptionRequest | SubscriptionDecision => {}
        }
    }
    all
}

fn all_states() -> Vec<RecipientState> {
    use RecipientState::*;
    let all = vec![Accepted, InTransit, Delivered, SignedFor, Returned, Recalled, Failed, Answered, TimedOut];
    for s in &all {
        match s {
            Accepted | InTransit | Delivered | SignedFor | Returned | Recalled | Failed | Answered | TimedOut => {}
        }
    }
    all
}

#[test]
fn the_spec_parses_and_its_enumerations_match_the_wire_crate() {
    let spec = spec();
    assert!(spec["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "an OpenAPI 3 document");
    let kinds: BTreeSet<String> = all_kinds().iter().map(|k| k.as_str().to_owned()).collect();
    assert_eq!(enum_of(&spec, "Kind"), kinds, "schema Kind lists every envelope kind");
    let states: BTreeSet<String> = all_states().iter().map(|s| s.as_str().to_owned()).collect();
    assert_eq!(enum_of(&spec, "RecipientState"), states, "schema RecipientState lists every state");
}

/// The paths given to axum's `.route(...)` in node/src/api.
fn served_routes() -> BTreeSet<String> {
    let mut routes = BTreeSet::new();
    let dir = Path::new(ROOT).join("node/src/api");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for piece in text.split(".route(\"").skip(1) {
            routes.insert(piece.split('"').next().unwrap().to_owned());
        }
    }
    assert!(routes.len() > 40, "found the routers in {}: {routes:?}", dir.display());
    routes
}

#[test]
fn every_route_is_documented_and_every_documented_path_is_served() {
    let spec = spec();
    let documented: BTreeSet<String> =
        spec["paths"].as_hash().unwrap().keys().map(|k| k.as_str().unwrap().to_owned()).collect();
    let served = served_routes();
    // `/x/{id}:action` paths are served by one route `/x/{id}` that dispatches on the action.
    let served_as = |path: &str| {
        served.contains(path)
            || path.rsplit_once(':').is_some_and(|(base, _)| base.ends_with('}') && served.contains(base))
    };
    let undocumented: Vec<&String> = served
        .iter()
        .filter(|r| !documented.contains(*r) && !documented.iter().any(|d| d.starts_with(&format!("{r}:"))))
        .collect();
    assert!(undocumented.is_empty(), "routes the node serves that docs/openapi.yaml does not document: {undocumented:?}");
    let unserved: Vec<&String> = documented.iter().filter(|d| !served_as(d)).collect();
    assert!(unserved.is_empty(), "paths docs/openapi.yaml documents that the node does not serve: {unserved:?}");
}
