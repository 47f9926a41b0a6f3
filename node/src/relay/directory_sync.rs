//! The engine's side of the signed directory: load the segments held, sign seeds and operators'
//! changes, check and take segments from neighbours, pass new ones on along the tree, and rebuild the
//! directory snapshot (and the links and allow list that follow from it) after every change.

use std::sync::Arc;

use exchange_wire::directory::Segment;
use exchange_wire::{NodeId, SignedEnvelope};
use crate::network::PeerId;
use crate::network::Reply;

use super::directory_state::DirectorySync;
use super::signals::peer_for;
use super::signals::Links;
use super::services::Services;
use super::{Engine, Refusal};
use tokio::sync::MutexGuard;
use crate::directory::segments::{self, Held, SegmentRefusal, SegmentSet, Verdict};
use crate::network::Neighbour;
use crate::network::protocol::{DirectoryAck, DirectoryPush, SegmentParcel};
use crate::storage::{AdminOp, EventRow, SegmentRow, WriteJob};

fn parcel(h: &Held) -> SegmentParcel {
    SegmentParcel { header: h.signed.bytes.clone(), signature: h.signed.signature.to_vec(), payload: h.payload.clone() }
}

fn unparcel(p: SegmentParcel) -> Result<(SignedEnvelope, Vec<u8>), SegmentRefusal> {
    let bad = |reason: String| SegmentRefusal { code: "malformed-segment", reason };
    let sig: [u8; 64] = p.signature.as_slice().try_into().map_err(|_| bad("signature is not 64 bytes".into()))?;
    let signed = SignedEnvelope::from_canonical(p.header, sig).map_err(|e| bad(e.to_string()))?;
    Ok((signed, p.payload))
}

impl Engine {
    /// Loads the segments held in storage (re-checking each), signs this node's seeds if it holds no
    /// segment of its own yet, and builds the directory.
    pub(crate) async fn load_directory(self: &Arc<Self>) -> anyhow::Result<()> {
        let set = self.directory_sync.load(&self.services).await?;
        self.services.keys.pin_root(&set);
        self.apply_directory(&set).await;
        *self.directory_sync.segments().await = set;

        if let Some(path) = &self.directory_sync.seeds().tree_seed
            && self.directory_sync.segments().await.tree.is_none() {
                if !self.services.is_root() {
                    anyhow::bail!("directory.tree_seed is for the root node only: this node's key is not the pinned root_key");
                }
                let tree = segments::tree_from_seed(path).map_err(anyhow::Error::msg)?;
                let results = self.publish(Segment::Tree(tree)).await;
                if let Some(Err(e)) = results.first() {
                    anyhow::bail!("cannot sign the tree seed {}: {}", path.display(), e.reason);
                }
            }
        self.publish_units_seed().await?;
        self.publish_catalog_seed().await?;
        Ok(())
    }

    /// Signs this node's units seed as version 1 once the tree is known and no own segment exists.
    async fn publish_units_seed(self: &Arc<Self>) -> anyhow::Result<()> {
        let Some(path) = &self.directory_sync.seeds().units_seed else { return Ok(()) };
        {
            let set = self.directory_sync.segments().await;
            if set.tree.is_none() || set.units.contains_key(&self.services.here) {
                return Ok(());
            }
        }
        let units = segments::units_from_seed(path, &self.services.here).map_err(anyhow::Error::msg)?;
        if let Some(Err(e)) = self.publish(Segment::Units(units)).await.first() {
            anyhow::bail!("cannot sign the units seed {}: {}", path.display(), e.reason);
        }
        Ok(())
    }

    /// Signs a segment made here and takes it like any other.
    pub(super) async fn publish(self: &Arc<Self>, segment: Segment) -> Vec<Result<Verdict, SegmentRefusal>> {
        let held = segments::sign(segment, &self.services.here, &self.services.node_key());
        self.accept_segments(None, vec![(held.signed, held.payload)]).await
    }

    /// Checks segments (from neighbour `from`, or made here), stores and applies the newer ones, and
    /// passes them on to the other neighbours. One result per segment.
    pub(crate) async fn accept_segments(
        self: &Arc<Self>,
        from: Option<NodeId>,
        incoming: Vec<(SignedEnvelope, Vec<u8>)>,
    ) -> Vec<Result<Verdict, SegmentRefusal>> {
        let (set, results, taken) = self.directory_sync.take(&self.services, from.as_ref(), incoming).await;
        if !taken.is_empty() {
            self.apply_directory(&set).await;
            let tree_came = taken.iter().any(|h| matches!(h.segment, Segment::Tree(_)));
            drop(set);
            self.directory_sync.push_segments(&self.services, &self.links, taken, from.as_ref());
            if tree_came {
                if let Err(e) = Box::pin(self.publish_units_seed()).await {
                    tracing::error!(error = %e, "cannot publish this node's units");
                }
                // The tree may list a new key for this node (a rotation): take it if it is staged.
                self.services.keys.check_now();
            }
        }
        results
    }

    /// Puts the directory of `set` in force, then what follows from it in the other parts: the
    /// catalog, and the links (the allow list, the links to keep, their forwarders).
    pub(super) async fn apply_directory(self: &Arc<Self>, set: &SegmentSet) {
        let Some(links) = self.directory_sync.rebuild(&self.services, set) else { return };
        // A newer catalog in force: requests that waited for it can be decided now.
        if self.sharing.apply_catalog(&self.services, set) {
            self.start_deciding_requests();
        }
        self.update_links(links).await;
    }

    /// Keeps a link and a forwarder to every neighbour the directory names, and gives the network
    /// the identities it admits and the neighbours to dial.
    async fn update_links(self: &Arc<Self>, links: LinkPlan) {
        // A link may have come up before the tree said whose it is (the parent, at start-up).
        let connected = self.services.net.connected().await;
        for (id, n) in &links.neighbours {
            if let Some(id) = id {
                self.watch_neighbour(id);
                if connected.contains(&n.peer) {
                    self.mark_link(id, true);
                    self.forwarder(id).link_up.notify_one();
                }
            }
        }
        self.services.net.set_peers(links.allowed, links.neighbours.into_iter().map(|(_, n)| n).collect()).await;
    }

    /// A link came up: give the neighbour everything held.
    pub(crate) async fn push_all_segments(self: &Arc<Self>, peer: PeerId) {
        self.directory_sync.push_all(&self.services, peer).await;
    }

    /// A neighbour pushed segments.
    pub(crate) async fn answer_directory(self: Arc<Self>, peer: PeerId, request: DirectoryPush, channel: Reply<DirectoryAck>) {
        let from = self.services.dir.current().node_by_peer(&peer).map(|n| n.id.clone());
        let mut decoded = Vec::new();
        let mut results: Vec<Option<String>> = Vec::new();
        for p in request.segments {
            match unparcel(p) {
                Ok(d) => {
                    decoded.push(d);
                    results.push(None);
                }
                Err(e) => results.push(Some(format!("refused: {}: {}", e.code, e.reason))),
            }
        }
        let mut taken = self.accept_segments(from, decoded).await.into_iter();
        let results = results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| match taken.next() {
                    Some(Ok(Verdict::Newer)) => "new".into(),
                    Some(Ok(Verdict::Known)) => "known".into(),
                    Some(Err(e)) => format!("refused: {}: {}", e.code, e.reason),
                    None => "refused: internal".into(),
                })
            })
            .collect();
        self.services.net.respond_directory(channel, DirectoryAck { results }).await;
    }
}

/// What a new directory asks of the links: the libp2p identities admitted (every node's current
/// one, an earlier one while its overlap lasts, the configured parent's until the tree names it),
/// and the neighbours to keep a link with (with their id once the tree names them).
pub(super) struct LinkPlan {
    allowed: Vec<PeerId>,
    neighbours: Vec<(Option<NodeId>, Neighbour)>,
}

/// The directory part's work on the snapshot and with the neighbours: building the directory from
/// the segments held, passing segments on and resynchronising, with the shared services and the
/// links (to find a neighbour's identity) only.
impl DirectorySync {
    /// Builds the directory of `set` and puts it in force (the snapshot every part reads); returns
    /// what it asks of the links, or nothing when `set` does not form a directory (the previous one
    /// stays).
    pub(super) fn rebuild(&self, s: &Services, set: &SegmentSet) -> Option<LinkPlan> {
        let dir = match set.directory() {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "the directory segments held do not form a directory; keeping the previous one");
                return None;
            }
        };
        if let Some(me) = dir.node(&s.here)
            && me.public_key.0 != s.node_key().verifying_key() {
                tracing::warn!(node = %s.here, key = %me.public_key, staged = %s.keys.next_key_file().display(),
                    "the node tree lists another key for this node: it takes the key staged for it, else check key_file");
            }
        s.metrics.directory_version.set(dir.version() as i64);
        let now = exchange_wire::now_ms();
        // Every node's current identity, and an earlier one while its overlap lasts.
        let mut allowed: Vec<PeerId> = dir.nodes().filter(|n| n.id != s.here).flat_map(|n| n.peer_ids_at(now)).collect();
        let mut neighbours: Vec<(Option<NodeId>, Neighbour)> = dir
            .neighbours(&s.here)
            .into_iter()
            .map(|n| (Some(n.id.clone()), Neighbour { peer: n.peer_id, addresses: n.addresses.clone() }))
            .collect();
        // A configured parent whose key the tree has since rotated (or revoked) is not the way in.
        if let Some((peer, addresses)) = self.parent_hint().filter(|(p, _)| dir.node_by_earlier_key(p).is_none()) {
            // Until the tree says otherwise, the configured parent is the way into the network.
            if !allowed.contains(peer) {
                allowed.push(*peer);
            }
            match neighbours.iter_mut().find(|(_, n)| n.peer == *peer) {
                Some((_, n)) => {
                    for a in addresses {
                        if !n.addresses.contains(a) {
                            n.addresses.push(a.clone());
                        }
                    }
                }
                None => neighbours.push((None, Neighbour { peer: *peer, addresses: addresses.clone() })),
            }
        }
        s.dir.replace(dir);
        Some(LinkPlan { allowed, neighbours })
    }

    /// Sends segments to every neighbour except `except`; a neighbour that misses them gets all
    /// segments when its link comes up again.
    pub(super) fn push_segments(&self, s: &Services, links: &Links, held: Vec<Held>, except: Option<&NodeId>) {
        let dir = s.dir.current();
        let mut peers: Vec<PeerId> =
            dir.neighbours(&s.here).into_iter().filter(|n| Some(&n.id) != except).filter_map(|n| peer_for(&dir, links, &n.id)).collect();
        if let Some((peer, _)) = self.parent_hint()
            && !peers.contains(peer) && dir.node_by_peer(peer).map(|n| &n.id) != except {
                peers.push(*peer);
            }
        let segments: Vec<SegmentParcel> = held.iter().map(parcel).collect();
        for peer in peers {
            let (net, request) = (s.net.clone(), DirectoryPush { segments: segments.clone() });
            s.tasks.spawn(async move {
                // A few quick retries for a hiccup; beyond that the link-up push and the periodic
                // resynchronisation catch the neighbour up.
                for delay_ms in [500, 1000, 2000, 0] {
                    match net.push_directory(peer, request.clone()).await {
                        Ok(_) => return,
                        Err(e) if delay_ms > 0 => {
                            tracing::debug!(%peer, error = %e, "directory push not delivered; retrying");
                            tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
                        }
                        Err(e) => tracing::debug!(%peer, error = %e, "directory push not delivered; the next resynchronisation carries it"),
                    }
                }
            });
        }
    }

    /// Anti-entropy: every `every`, give each neighbour everything held (it answers `known` for
    /// what it has), so no change can stay behind for long, whatever was lost on the way.
    pub(crate) async fn resynchronise(&self, s: &Services, links: &Links, every: std::time::Duration) {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            let dir = s.dir.current();
            let peers: Vec<PeerId> = dir.neighbours(&s.here).into_iter().filter_map(|n| peer_for(&dir, links, &n.id)).collect();
            for peer in peers {
                self.push_all(s, peer).await;
            }
        }
    }

    /// Gives neighbour `peer` everything held (a link came up, or the resynchronisation's turn).
    pub(crate) async fn push_all(&self, s: &Services, peer: PeerId) {
        let segments: Vec<SegmentParcel> = self.segments().await.all().map(parcel).collect();
        if segments.is_empty() {
            return;
        }
        if let Err(e) = s.net.push_directory(peer, DirectoryPush { segments }).await {
            tracing::debug!(%peer, error = %e, "directory push on link-up failed");
        }
    }
}

/// The directory part's own work: reading, checking and storing segments, with the shared services
/// only. What a change sets off (the snapshot and the links rebuilt, the catalog, passing segments
/// on, a staged key taken) touches other parts, so the engine does it with what `take` returns.
impl DirectorySync {
    /// The segments held in storage, each checked again; one that does not verify is left out.
    async fn load(&self, s: &Services) -> anyhow::Result<SegmentSet> {
        let mut rows = s.store.segments().await?;
        // Root handovers first, in order (they say which root key signs the tree), then the tree:
        // unit segments are checked against it.
        rows.sort_by_key(|r| (!r.owner.starts_with("root-handover-"), r.owner != "tree", r.owner.starts_with("root-handover-").then_some(r.version)));
        let mut set = SegmentSet::default();
        for r in rows {
            let checked = unparcel(SegmentParcel { header: r.header, signature: r.signature, payload: r.payload }).and_then(|(signed, payload)| {
                set.check(&set.root_key(s.keys.configured_root_key()), &signed, &payload).map(|(segment, _)| Held { segment, signed, payload })
            });
            match checked {
                Ok(held) => set.insert(held),
                Err(e) => tracing::error!(owner = %r.owner, code = e.code, reason = %e.reason, "a stored directory segment does not verify; ignored"),
            }
        }
        Ok(set)
    }

    /// Checks segments (from neighbour `from`, or made here) and stores the newer ones, under the
    /// segment lock. Returns the lock still held (the engine applies the change before anyone else
    /// changes the set), one result per segment, and the segments taken.
    async fn take(
        &self,
        s: &Services,
        from: Option<&NodeId>,
        incoming: Vec<(SignedEnvelope, Vec<u8>)>,
    ) -> (MutexGuard<'_, SegmentSet>, Vec<Result<Verdict, SegmentRefusal>>, Vec<Held>) {
        let mut set = self.segments().await;
        let mut results = Vec::with_capacity(incoming.len());
        let mut taken = Vec::new();
        let source = from.map(|f| f.to_string());
        for (signed, payload) in incoming {
            match set.check(&s.root_key(), &signed, &payload) {
                Ok((segment, Verdict::Newer)) => {
                    let row = SegmentRow {
                        owner: segment.owner(),
                        version: segment.version() as i64,
                        header: signed.bytes.clone(),
                        signature: signed.signature.to_vec(),
                        payload: payload.clone(),
                    };
                    let event = EventRow {
                        at_ms: exchange_wire::now_ms() as i64,
                        category: "directory",
                        message_id: Some(signed.id.0),
                        event: "segment-accepted",
                        unit: None,
                        peer: source.clone(),
                        detail: Some(format!("{} version {}", segment.owner(), segment.version())),
                    };
                    if let Err(e) = s.committer.commit(vec![WriteJob::Admin { op: AdminOp::PutSegment(row), events: vec![event] }]).await {
                        s.metrics.storage_errors.with_label_values(&["commit"]).inc();
                        results.push(Err(SegmentRefusal { code: "storage", reason: format!("cannot store the segment: {e}") }));
                        continue;
                    }
                    tracing::info!(owner = %segment.owner(), version = segment.version(), from = ?source, "directory segment accepted");
                    let handover = matches!(segment, Segment::RootHandover(_));
                    let held = Held { segment, signed, payload };
                    set.insert(held.clone());
                    if handover {
                        // What follows in this batch (the tree the new key signed) is checked against it.
                        s.keys.pin_root(&set);
                    }
                    taken.push(held);
                    results.push(Ok(Verdict::Newer));
                }
                Ok((_, Verdict::Known)) => results.push(Ok(Verdict::Known)),
                Err(refusal) => {
                    s.metrics.directory_rejections.with_label_values(&[refusal.code]).inc();
                    tracing::warn!(from = ?source, code = refusal.code, reason = %refusal.reason, "directory segment refused");
                    let r = Refusal::new(refusal.code, 403, refusal.reason.clone());
                    s.refused(source.as_deref().unwrap_or("this node"), &[super::refused::Refused { id: Some(signed.id), kind: Some(signed.envelope.kind), refusal: &r }])
                        .await;
                    results.push(Err(refusal));
                }
            }
        }
        (set, results, taken)
    }
}
