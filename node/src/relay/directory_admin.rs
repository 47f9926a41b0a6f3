//! Operators' changes to the signed directory (`exchange-admin nodes|units|catalog|directory`): the
//! root signs the node tree and the catalog, each node signs its own units; every change is
//! signed here and taken like a segment from a neighbour (`directory_sync`), then recorded in the
//! audit log. Also the operators' reads of the segments held.

use std::sync::Arc;

use exchange_wire::api::{AdminActionResponse, DirectoryVerification, DirectoryView, NewUnit, RotateKey, SegmentCheck, SegmentInfo};
use exchange_wire::directory::{KeyRecord, NodeRecord, NodeTree, Segment, UnitRecord, UnitSegment, UnitStatus};
use exchange_wire::sharing::Catalog;
use exchange_wire::{NodeId, UnitAddress};

use super::directory_state::DirectorySync;
use super::services::Services;
use super::sharing::catalog;
use super::{Engine, Refusal};
use crate::directory::segments::SegmentSet;

impl Engine {
    /// Root only: signs the catalog seed file if no catalog, or an older one, is held.
    pub(super) async fn publish_catalog_seed(self: &Arc<Self>) -> anyhow::Result<()> {
        let seed = {
            let held = self.directory_sync.segments().await;
            catalog::seed_to_sign(&self.services, self.directory_sync.seeds(), &held)?
        };
        let Some(seed) = seed else { return Ok(()) };
        if let Some(Err(e)) = self.publish(Segment::Catalog(seed)).await.first() {
            let path = self.directory_sync.seeds().catalog_seed.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
            anyhow::bail!("cannot sign the catalog seed {path}: {}", e.reason);
        }
        Ok(())
    }

    /// `exchange-admin catalog publish`: the root signs a new version of the catalog.
    pub async fn admin_publish_catalog(self: &Arc<Self>, catalog: Catalog) -> Result<AdminActionResponse, Refusal> {
        let held = self.directory_sync.segments().await.catalog().map(|c| c.version);
        catalog::check_to_sign(&self.services, held, &catalog)?;
        let (version, topics) = (catalog.version, catalog.topics.len());
        match self.publish(Segment::Catalog(catalog)).await.pop() {
            Some(Ok(_)) => {
                self.services.admin_record("catalog-publish", format!("catalog version {version} with {topics} topics")).await?;
                Ok(AdminActionResponse { affected: topics as u64, message: format!("catalog version {version} signed and passed on to the network") })
            }
            Some(Err(e)) => Err(Refusal::new(if e.code == "storage" { "storage" } else { "conflict" }, 409, e.reason)),
            None => Err(Refusal::new("storage", 503, "nothing was signed")),
        }
    }

    /// Signs an operator's change of a segment, takes it like any other (the directory, links and
    /// catalog follow; it is passed on) and records it in the audit log.
    pub(super) async fn admin_segment_change(self: &Arc<Self>, segment: Segment, event: &'static str, detail: String) -> Result<AdminActionResponse, Refusal> {
        let version = segment.version();
        let owner = segment.owner();
        match self.publish(segment).await.pop() {
            Some(Ok(_)) => {
                self.services.admin_record(event, detail.clone()).await?;
                Ok(AdminActionResponse { affected: 1, message: format!("{detail}: {owner} is now at version {version}, passed on to the network") })
            }
            Some(Err(e)) => Err(Refusal::new(if e.code == "storage" { "storage" } else { "conflict" }, 409, e.reason)),
            None => Err(Refusal::new("storage", 503, "nothing was signed")),
        }
    }

    /// `exchange-admin nodes add` (root only).
    pub async fn add_node(self: &Arc<Self>, record: NodeRecord) -> Result<AdminActionResponse, Refusal> {
        let (tree, detail) = self.directory_sync.node_added(&self.services, record).await?;
        self.admin_segment_change(tree, "nodes-add", detail).await
    }

    /// `exchange-admin nodes remove` (root only; a node with children stays).
    pub async fn remove_node(self: &Arc<Self>, id: &NodeId) -> Result<AdminActionResponse, Refusal> {
        let tree = self.directory_sync.node_removed(&self.services, id).await?;
        self.admin_segment_change(tree, "nodes-remove", format!("node {id} removed")).await
    }

    /// `exchange-admin units add`.
    pub async fn add_unit(self: &Arc<Self>, u: NewUnit) -> Result<AdminActionResponse, Refusal> {
        let detail = format!("unit {} added", u.address);
        let units = self.directory_sync.unit_added(&self.services, u).await?;
        self.admin_segment_change(units, "units-add", detail).await
    }

    /// Changes one unit of this node with `change`.
    async fn change_unit(
        self: &Arc<Self>,
        address: &UnitAddress,
        event: &'static str,
        detail: String,
        change: impl FnOnce(&mut UnitRecord) -> Result<(), Refusal>,
    ) -> Result<AdminActionResponse, Refusal> {
        let seg = self.directory_sync.unit_changed(&self.services, address, change).await?;
        self.admin_segment_change(seg, event, detail).await
    }

    /// `exchange-admin units suspend|activate|revoke`.
    pub async fn set_unit_status(self: &Arc<Self>, address: &UnitAddress, status: UnitStatus) -> Result<AdminActionResponse, Refusal> {
        let (event, word) = match status {
            UnitStatus::Active => ("units-activate", "activated"),
            UnitStatus::Suspended => ("units-suspend", "suspended"),
            UnitStatus::Revoked => ("units-revoke", "revoked"),
        };
        let now = exchange_wire::now_ms();
        let answer = self.change_unit(address, event, format!("unit {address} {word}"), |u| {
            if u.status == UnitStatus::Revoked && status != UnitStatus::Revoked {
                return Err(Refusal::new("conflict", 409, format!("unit {} is revoked for good; register a new unit instead", u.address)));
            }
            u.status = status;
            if status == UnitStatus::Revoked {
                for k in u.keys.iter_mut().filter(|k| k.revoked_at_ms.is_none()) {
                    k.revoked_at_ms = Some(now);
                }
            }
            Ok(())
        })
        .await?;
        // Its tokens and webhook go with it (see `access`); a suspension only pauses them.
        if status == UnitStatus::Revoked {
            self.access.retire_unit_credentials(&self.services, address).await?;
        }
        Ok(answer)
    }

    /// `exchange-admin units rotate-key`.
    pub async fn rotate_key(self: &Arc<Self>, address: &UnitAddress, r: RotateKey) -> Result<AdminActionResponse, Refusal> {
        let now = exchange_wire::now_ms();
        let detail = format!(
            "unit {address}: new key {}{}",
            r.public_key,
            if r.revoke_old { ", old keys revoked".to_string() } else { format!(", old keys valid {} s more", r.overlap_secs) }
        );
        self.change_unit(address, "units-rotate-key", detail, |u| {
            if u.keys.iter().any(|k| k.public_key == r.public_key) {
                return Err(Refusal::new("conflict", 409, "that key is already one of the unit's keys"));
            }
            for k in u.keys.iter_mut().filter(|k| k.valid_at(now)) {
                if r.revoke_old {
                    k.revoked_at_ms = Some(now);
                } else {
                    let end = now + r.overlap_secs * 1000;
                    k.not_after_ms = Some(k.not_after_ms.map_or(end, |e| e.min(end)));
                }
            }
            u.keys.push(KeyRecord { public_key: r.public_key, not_before_ms: now, not_after_ms: None, revoked_at_ms: None });
            Ok(())
        })
        .await
    }
}

/// The directory part's side of the operators' changes: each change is read from the segments held
/// and checked with the shared services; signing and taking it is the engine's (it sets off other
/// parts). Also the operators' reads of the segments held.
impl DirectorySync {
    /// The node tree to change: the root's alone.
    fn current_tree(s: &Services, set: &SegmentSet) -> Result<NodeTree, Refusal> {
        if !s.is_root() {
            return Err(Refusal::new("not-root", 403, "only the root node signs the node tree; run this on the root node"));
        }
        Ok(set.tree().cloned().unwrap_or(NodeTree { version: 0, nodes: vec![] }))
    }

    /// The tree with node `record` added (`exchange-admin nodes add`, root only), and what to audit.
    async fn node_added(&self, s: &Services, mut record: NodeRecord) -> Result<(Segment, String), Refusal> {
        // A new node has no earlier keys: they come only from rotations.
        record.previous_keys.clear();
        let mut tree = Self::current_tree(s, &*self.segments().await)?;
        if tree.nodes.iter().any(|n| n.id == record.id) {
            return Err(Refusal::new("conflict", 409, format!("node {} is already in the tree", record.id)));
        }
        if record.parent.as_ref().is_none_or(|p| !tree.nodes.iter().any(|n| &n.id == p)) {
            return Err(Refusal::malformed(format!("node {} needs a parent that is in the tree", record.id)));
        }
        for a in &record.addresses {
            a.parse::<crate::network::Multiaddr>().map_err(|e| Refusal::malformed(format!("address {a:?} is not a multiaddress: {e}")))?;
        }
        let detail = format!("node {} added under {}", record.id, record.parent.as_ref().map(|p| p.as_str()).unwrap_or(""));
        tree.nodes.push(record);
        tree.version += 1;
        Ok((Segment::Tree(tree), detail))
    }

    /// The tree without node `id` (`exchange-admin nodes remove`, root only; a node with children
    /// stays).
    async fn node_removed(&self, s: &Services, id: &NodeId) -> Result<Segment, Refusal> {
        let mut tree = Self::current_tree(s, &*self.segments().await)?;
        if tree.nodes.iter().any(|n| n.parent.as_ref() == Some(id)) {
            return Err(Refusal::new("conflict", 409, format!("node {id} still has children; remove or move them first")));
        }
        if tree.nodes.iter().any(|n| &n.id == id && n.parent.is_none()) {
            return Err(Refusal::new("conflict", 409, "the root node cannot be removed"));
        }
        let before = tree.nodes.len();
        tree.nodes.retain(|n| &n.id != id);
        if tree.nodes.len() == before {
            return Err(Refusal::new("not-found", 404, format!("node {id} is not in the tree")));
        }
        tree.version += 1;
        Ok(Segment::Tree(tree))
    }

    /// This node's unit segment, to change; refuses units of other nodes.
    async fn own_units(&self, s: &Services, address: Option<&UnitAddress>) -> Result<UnitSegment, Refusal> {
        if let Some(a) = address
            && a.node_part() != s.here.as_str() {
                return Err(Refusal::new(
                    "wrong-node",
                    403,
                    format!("unit {a} is hosted by node {}; change it there", a.node_part()),
                ));
            }
        let set = self.segments().await;
        if set.tree().is_none_or(|t| !t.nodes.iter().any(|n| n.id == s.here)) {
            return Err(Refusal::new("not-ready", 503, "this node is not in the node tree yet; it cannot sign units"));
        }
        Ok(set.unit_segment(&s.here).cloned().unwrap_or(UnitSegment { node: s.here.clone(), version: 0, units: vec![] }))
    }

    /// This node's units with `u` added (`exchange-admin units add`).
    async fn unit_added(&self, s: &Services, u: NewUnit) -> Result<Segment, Refusal> {
        let mut seg = self.own_units(s, Some(&u.address)).await?;
        if seg.units.iter().any(|x| x.address == u.address) {
            return Err(Refusal::new("conflict", 409, format!("unit {} is already registered", u.address)));
        }
        seg.units.push(UnitRecord {
            address: u.address.clone(),
            name: u.name,
            kind: u.kind,
            uscc: u.uscc,
            status: UnitStatus::Active,
            keys: vec![KeyRecord { public_key: u.public_key, not_before_ms: 0, not_after_ms: None, revoked_at_ms: None }],
        });
        seg.version += 1;
        Ok(Segment::Units(seg))
    }

    /// This node's units with unit `address` changed by `change`.
    async fn unit_changed(
        &self,
        s: &Services,
        address: &UnitAddress,
        change: impl FnOnce(&mut UnitRecord) -> Result<(), Refusal>,
    ) -> Result<Segment, Refusal> {
        let mut seg = self.own_units(s, Some(address)).await?;
        let unit = seg
            .units
            .iter_mut()
            .find(|x| &x.address == address)
            .ok_or_else(|| Refusal::new("not-found", 404, format!("unit {address} is not registered on node {}", s.here)))?;
        change(unit)?;
        seg.version += 1;
        Ok(Segment::Units(seg))
    }

    /// `exchange-admin nodes list`.
    pub async fn node_records(&self) -> Vec<NodeRecord> {
        self.segments().await.tree().map(|t| t.nodes.clone()).unwrap_or_default()
    }

    /// `exchange-admin units list|show`.
    pub async fn unit_records(&self, node: Option<&NodeId>) -> Vec<UnitRecord> {
        let set = self.segments().await;
        let mut out: Vec<UnitRecord> = set
            .units
            .values()
            .filter_map(|h| match &h.segment {
                Segment::Units(u) if node.is_none_or(|n| n == &u.node) => Some(u.units.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        out.sort_by(|a, b| a.address.cmp(&b.address));
        out
    }

    /// `exchange-admin directory show`.
    pub async fn view(&self, s: &Services) -> DirectoryView {
        let set = self.segments().await;
        let segments = set
            .all()
            .map(|h| SegmentInfo {
                owner: h.segment.owner(),
                kind: h.signed.envelope.metadata.get(exchange_wire::directory::META_SEGMENT_TYPE).cloned().unwrap_or_default(),
                version: h.segment.version(),
                signer: h.signed.envelope.sender.node_part().parse().unwrap_or_else(|_| s.here.clone()),
                signed_at_ms: h.signed.envelope.created_at_ms,
                entries: match &h.segment {
                    Segment::Tree(t) => t.nodes.len() as u64,
                    Segment::Units(u) => u.units.len() as u64,
                    Segment::Catalog(c) => c.topics.len() as u64,
                    Segment::RootHandover(_) => 1,
                },
            })
            .collect();
        DirectoryView { version: s.dir.current().version(), root_key: s.root_key().to_hex(), segments }
    }

    /// `exchange-admin directory verify`: every segment held, re-checked from scratch.
    pub async fn verify(&self, s: &Services) -> DirectoryVerification {
        let set = self.segments().await;
        let mut fresh = SegmentSet::default();
        let mut checks = Vec::new();
        for h in set.all() {
            let result = fresh.check(&fresh.root_key(s.keys.configured_root_key()), &h.signed, &h.payload);
            checks.push(SegmentCheck {
                owner: h.segment.owner(),
                version: h.segment.version(),
                ok: result.is_ok(),
                detail: match &result {
                    Ok(_) => format!("signed by {}; signature verifies", h.signed.envelope.sender.node_part()),
                    Err(e) => format!("{}: {}", e.code, e.reason),
                },
            });
            if result.is_ok() {
                fresh.insert(h.clone());
            }
        }
        DirectoryVerification { ok: checks.iter().all(|c| c.ok), checks }
    }
}
