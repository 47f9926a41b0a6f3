//! Keys that change without stopping the network (see docs/operations.md, "Keys"):
//!
//! * **A node takes a new key.** Its operator stages the new key beside the key file
//!   (`<key_file>.next`, written by `exchange-node keygen`); the root lists its public key for the
//!   node (`exchange-admin nodes rotate-key`). When the tree that lists it arrives, the node takes
//!   the staged key on the spot: it replaces the key file, signs with the new key from then on,
//!   restarts its links with the new libp2p identity and signs its unit segment again. The tree
//!   keeps the old key among the node's `previous_keys` for the overlap, so what the node signed
//!   just before still verifies and its neighbours accept either identity meanwhile.
//! * **The root revokes a compromised node key** by rotating the node with `revoke_old`: the
//!   revoked key verifies nothing any more, and its libp2p identity is refused on every link.
//! * **The root key is handed over** by a statement the old root key signs (a `root-handover`
//!   segment); every node checks it against the key it pins and pins the new one. The root signs it
//!   and the tree with its new key in one step, so they travel together.

use std::sync::Arc;

use ed25519_dalek::SigningKey;
use exchange_wire::api::{AdminActionResponse, RootHandoverRequest, RotateKey};
use exchange_wire::directory::{KeyRecord, NodeTree, RootHandover, Segment};
use exchange_wire::{NodeId, PublicKey};

use super::node_key_state::NodeKeys;
use super::services::Services;
use super::{Engine, Refusal};
use crate::directory::segments::{self, SegmentSet};
use crate::network::PeerId;

impl Engine {
    /// Takes the staged key if the node tree lists it for this node (and this node still signs with
    /// another); signs this node's units again if they are signed with another key than its own.
    /// Called after every new tree and every second.
    pub(crate) async fn adopt_listed_key(self: Arc<Self>) {
        let _one = self.services.keys.key_change.lock().await;
        let Some(listed) = self.services.dir.current().node(&self.services.here).map(|n| n.public_key) else { return };
        if listed.0 == self.services.node_key().verifying_key() {
            self.sign_units_again_if_needed().await;
            return;
        }
        match self.services.keys.staged_key() {
            Ok(Some(next)) if next.verifying_key() == listed.0 => {
                if let Err(e) = self.take_key(next).await {
                    tracing::error!(error = %e, "cannot take the new node key");
                }
            }
            Ok(_) => tracing::debug!(key = %listed, file = %self.services.keys.next_key_file().display(),
                "the node tree lists a new key for this node; stage it there (exchange-node keygen --out) and the node takes it"),
            Err(e) => tracing::error!(error = %e, "the staged node key cannot be read"),
        }
    }

    /// `exchange-admin directory take-key`: takes the staged key now, whether or not the tree this node
    /// holds lists it yet. For a node the root revoked: its old identity is refused everywhere, so the
    /// tree that lists its new key cannot reach it until it presents the new identity.
    pub async fn take_staged_key(self: &Arc<Self>) -> Result<AdminActionResponse, Refusal> {
        let _one = self.services.keys.key_change.lock().await;
        let next = self
            .services
            .keys
            .staged_key()
            .map_err(|e| Refusal::new("bad-key", 400, e))?
            .ok_or_else(|| Refusal::new("not-ready", 409, format!("no key is staged in {}; write one there with exchange-node keygen --out", self.services.keys.next_key_file().display())))?;
        let new = PublicKey(next.verifying_key());
        let listed = self.services.dir.current().node(&self.services.here).is_some_and(|n| n.public_key == new);
        self.take_key(next).await.map_err(|e| Refusal::new("storage", 503, e))?;
        let note = if listed { "the node tree lists it" } else { "the node tree held here does not list it yet: neighbours admit it once the root's rotation reaches them" };
        Ok(AdminActionResponse { affected: 1, message: format!("node {} now signs with key {new}; {note}", self.services.here) })
    }

    /// Signs this node's unit segment again (next version) if the one held is not signed with the
    /// node's key now (it took a key before the tree listed it, say).
    async fn sign_units_again_if_needed(self: &Arc<Self>) {
        let key = self.services.node_key().verifying_key();
        let own = {
            let set = self.directory_sync.segments().await;
            set.units.get(&self.services.here).filter(|h| h.signed.verify(&key).is_err()).and_then(|_| set.unit_segment(&self.services.here).cloned())
        };
        if let Some(mut units) = own {
            units.version += 1;
            if let Some(Err(e)) = self.publish(Segment::Units(units)).await.pop() {
                tracing::error!(code = e.code, reason = %e.reason, "cannot sign this node's units with its key");
            }
        }
    }

    /// Makes `next` this node's key: the key file, the signing key, the links, the unit segment.
    async fn take_key(self: &Arc<Self>, next: SigningKey) -> Result<(), String> {
        let old = PublicKey(self.services.node_key().verifying_key());
        let new = PublicKey(next.verifying_key());
        // The file first: a node that restarts from here on starts with the new key.
        self.services.keys.put_staged_in_place()?;
        let keypair = crate::network::keypair_of(&next).map_err(|e| format!("the new key is not a libp2p key: {e}"))?;
        // Every neighbour must hold the tree that lists the new key before the links restart with
        // it, or it would refuse the new identity (and a child could learn the tree only from here).
        let neighbours: Vec<NodeId> = self.services.dir.current().neighbours(&self.services.here).into_iter().map(|n| n.id.clone()).collect();
        for id in neighbours {
            if let Some(peer) = self.peer_for(&id) {
                let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.push_all_segments(peer)).await;
            }
        }
        self.services.keys.sign_with(next);
        self.services.net.rekey(keypair).await.map_err(|e| format!("cannot restart the links with the new key: {e}"))?;
        tracing::info!(%old, %new, peer_id = %self.services.peer_id(), "this node now signs with its new key");
        let _ = self.services.admin_record("node-key-taken", format!("node {}: key {old} replaced by {new}", self.services.here)).await;
        // The unit segment signed again with the new key, so it never depends on the old one (once
        // the tree lists the new key: until then the signature would not verify).
        if self.services.dir.current().node(&self.services.here).is_some_and(|n| n.public_key == new) {
            self.sign_units_again_if_needed().await;
        }
        Ok(())
    }

    /// After every new tree ([`NodeKeys::check_now`]) and every `every`: take a staged key the tree
    /// lists, and rebuild the allow list when an earlier node key's overlap has ended (its libp2p
    /// identity is then refused).
    pub(crate) async fn watch_node_keys(self: Arc<Self>, every: std::time::Duration) {
        let mut tick = tokio::time::interval(every);
        let mut last = exchange_wire::now_ms();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.services.keys.key_check.notified() => {}
            }
            self.clone().adopt_listed_key().await;
            let now = exchange_wire::now_ms();
            if self.services.dir.current().next_key_expiry(last).is_some_and(|t| t <= now) {
                let set = self.directory_sync.segments().await;
                self.apply_directory(&set).await;
            }
            last = now;
        }
    }

    // ---- Operators' changes (root only) ----

    /// `exchange-admin nodes rotate-key ID`: the tree lists `r.public_key` as the node's key and keeps
    /// the old one for `r.overlap_secs`, or revokes it (and every earlier key) with `r.revoke_old`.
    pub async fn rotate_node_key(self: &Arc<Self>, id: &NodeId, r: RotateKey) -> Result<AdminActionResponse, Refusal> {
        let mut tree = self.root_tree().await?;
        if tree.nodes.iter().any(|n| n.all_keys().any(|k| *k == r.public_key)) {
            return Err(Refusal::new("conflict", 409, format!("key {} is already a key of a node; generate a fresh one", r.public_key)));
        }
        let node = tree.nodes.iter_mut().find(|n| &n.id == id).ok_or_else(|| Refusal::new("not-found", 404, format!("node {id} is not in the tree")))?;
        if node.parent.is_none() {
            return Err(Refusal::new("conflict", 409, "the root's key is the trust anchor: hand it over with exchange-admin directory hand-over-root"));
        }
        let now = exchange_wire::now_ms();
        retire(&mut node.previous_keys, node.public_key, now, &r);
        node.public_key = r.public_key;
        tree.version += 1;
        let detail = format!("node {id}: new key {}{}", r.public_key, old_key_note(&r));
        self.admin_segment_change(Segment::Tree(tree), "nodes-rotate-key", detail).await
    }

    /// `exchange-admin directory hand-over-root`: the root signs, with its current key, the handover
    /// to the key staged in `<key_file>.next` (which must be `h.public_key`), signs the tree that
    /// lists that key for the root with the new key, publishes both together, then takes the key.
    pub async fn hand_over_root(self: &Arc<Self>, h: RootHandoverRequest) -> Result<AdminActionResponse, Refusal> {
        let _one = self.services.keys.key_change.lock().await;
        let mut tree = self.root_tree().await?;
        let next = self
            .services
            .keys
            .staged_key()
            .map_err(|e| Refusal::new("bad-key", 400, e))?
            .ok_or_else(|| Refusal::new("not-ready", 409, format!("no key is staged in {}; write one there with exchange-node keygen --out", self.services.keys.next_key_file().display())))?;
        if next.verifying_key() != h.public_key.0 {
            return Err(Refusal::new("conflict", 409, format!("the key staged in {} is not {}", self.services.keys.next_key_file().display(), h.public_key)));
        }
        if tree.nodes.iter().any(|n| n.all_keys().any(|k| *k == h.public_key)) {
            return Err(Refusal::new("conflict", 409, format!("key {} is already a key of a node; generate a fresh one", h.public_key)));
        }
        let old_key = self.services.root_key();
        let version = self.directory_sync.segments().await.handovers.keys().next_back().copied().unwrap_or(0) + 1;
        let handover = segments::sign(Segment::RootHandover(RootHandover { version, old_key, new_key: h.public_key }), &self.services.here, &self.services.node_key());
        let now = exchange_wire::now_ms();
        let rotation = RotateKey { public_key: h.public_key, overlap_secs: h.overlap_secs, revoke_old: false };
        let root = tree.nodes.iter_mut().find(|n| n.parent.is_none()).ok_or_else(|| Refusal::new("not-ready", 409, "the tree has no root"))?;
        retire(&mut root.previous_keys, root.public_key, now, &rotation);
        root.public_key = h.public_key;
        tree.version += 1;
        let signed_tree = segments::sign(Segment::Tree(tree), &self.services.here, &next);
        let results = self.accept_segments(None, vec![(handover.signed, handover.payload), (signed_tree.signed, signed_tree.payload)]).await;
        if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
            return Err(Refusal::new(if e.code == "storage" { "storage" } else { "conflict" }, 409, e.reason));
        }
        self.take_key(next).await.map_err(|e| Refusal::new("storage", 503, e))?;
        let detail = format!("root key {old_key} handed over to {} (handover {version}){}", h.public_key, old_key_note(&rotation));
        self.services.admin_record("root-handover", detail.clone()).await?;
        Ok(AdminActionResponse { affected: 1, message: format!("{detail}: passed on to the network") })
    }

    /// The tree to change, here at the root.
    async fn root_tree(&self) -> Result<NodeTree, Refusal> {
        if !self.services.is_root() {
            return Err(Refusal::new("not-root", 403, "only the root node signs the node tree; run this on the root node"));
        }
        self.directory_sync.segments().await.tree().cloned().ok_or_else(|| Refusal::new("not-ready", 409, "no node tree yet"))
    }
}

/// Moves `current` into `previous` for a rotation `r` at `now`: valid `r.overlap_secs` more, or with
/// `r.revoke_old` revoked now together with every earlier key not yet revoked.
fn retire(previous: &mut Vec<KeyRecord>, current: PublicKey, now: u64, r: &RotateKey) {
    if r.revoke_old {
        for k in previous.iter_mut().filter(|k| k.revoked_at_ms.is_none()) {
            k.revoked_at_ms = Some(now);
        }
    }
    previous.push(KeyRecord {
        public_key: current,
        not_before_ms: 0,
        not_after_ms: Some(now + r.overlap_secs * 1000),
        revoked_at_ms: r.revoke_old.then_some(now),
    });
}

fn old_key_note(r: &RotateKey) -> String {
    if r.revoke_old { ", the old key revoked".into() } else { format!(", the old key valid {} s more", r.overlap_secs) }
}

/// The node-keys part's own work on its state (and, to audit a refused link, the services).
impl NodeKeys {
    /// The staged key, if there is one that reads.
    fn staged_key(&self) -> Result<Option<SigningKey>, String> {
        let path = self.next_key_file();
        if !path.exists() {
            return Ok(None);
        }
        exchange_wire::keys::read(&path).map(Some).map_err(|e| e.to_string())
    }

    /// Moves the staged key over the key file (and syncs the folder): a node that restarts from
    /// then on starts with the new key.
    fn put_staged_in_place(&self) -> Result<(), String> {
        std::fs::rename(self.next_key_file(), &self.key_file)
            .map_err(|e| format!("cannot move {} to {}: {e}", self.next_key_file().display(), self.key_file.display()))?;
        if let Some(dir) = self.key_file.parent()
            && let Ok(d) = std::fs::File::open(if dir.as_os_str().is_empty() { std::path::Path::new(".") } else { dir }) {
                let _ = d.sync_all();
            }
        Ok(())
    }

    /// Signs with `next` from now on, and gives its libp2p identity.
    fn sign_with(&self, next: SigningKey) {
        let peer_id = crate::directory::peer_id_of(&PublicKey(next.verifying_key()));
        *self.node_key.write().expect("node key lock") = next;
        *self.peer_id.write().expect("peer id lock") = peer_id;
    }

    /// Audits and counts a link refused because the peer is a node's revoked or expired key: once per
    /// identity every 10 seconds, however often it re-dials (the connection metric counts each).
    pub(crate) async fn refused_earlier_key(&self, s: &Services, peer: &PeerId) {
        let dir = s.dir.current();
        let Some(node) = dir.node_by_earlier_key(peer) else { return };
        let now = exchange_wire::now_ms();
        {
            let mut last = self.earlier_key_audits.lock().expect("audit lock");
            if last.get(peer).is_some_and(|t| now < t + 10_000) {
                return;
            }
            last.insert(*peer, now);
        }
        let revoked = dir.node(&node).is_some_and(|n| {
            n.previous_keys.iter().any(|k| k.revoked_at_ms.is_some() && crate::directory::peer_id_of(&k.public_key) == *peer)
        });
        let (code, what) = if revoked { ("key-revoked", "revoked") } else { ("key-expired", "whose overlap has ended") };
        let r = Refusal::new(code, 403, format!("a link from {peer}: the libp2p identity of a key of node {node} {what}"));
        s.refused(node.as_str(), &[super::refused::Refused { id: None, kind: None, refusal: &r }]).await;
    }

    /// Pins the root key `set` leads to from the configured one.
    pub(crate) fn pin_root(&self, set: &SegmentSet) {
        let key = set.root_key(&self.configured_root_key);
        let mut pinned = self.pinned_root_key.write().expect("root key lock");
        if *pinned != key {
            tracing::info!(old = %*pinned, new = %key, "root key handed over: the new key is pinned");
            *pinned = key;
        }
    }
}
