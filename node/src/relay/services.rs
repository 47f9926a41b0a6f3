//! The services every part of the engine shares, and nothing else.
//!
//! A part (webhooks, queries, directory sync, data sharing, ...) owns its state in a handle type of
//! its own; what it needs beyond that is here: where to read ([`Services::store`]), the one way to
//! write ([`Services::committer`]), where signatures are checked ([`Services::verifier`]), whom to
//! tell ([`Services::metrics`], [`Services::inbox_changes`]), how to reach a neighbour
//! ([`Services::net`]), what the network looks like ([`Services::dir`]), how to sign
//! ([`Services::keys`]) and where background work runs ([`Services::tasks`]). A part given
//! `&Services` (or holding an `Arc<Services>`) can do its work without the whole engine, so it can
//! be read, and tested, alone.
//!
//! What is *not* here, on purpose: another part's state (a part that needs one asks for exactly
//! that), what follows a commit beyond the inbox wake-up (forwarders are woken by the forwarders
//! part, the pipeline's `CommitDone`, which knows the links), and the storage health and start
//! time (the API, the admin status and the door, which is lent them).
//!
//! This file names no part's work and not `Engine`, so every part's file may import it.

use std::sync::Arc;

use ed25519_dalek::SigningKey;
use exchange_wire::{NodeId, PublicKey};
use tokio::sync::watch;

use super::committer::Committer;
use super::handover::Context;
use super::node_key_state::NodeKeys;
use super::verifier::Verifier;
use crate::config::{Limits, RelayConfig};
use crate::directory::{Directory, DirectoryHandle};
use crate::metrics::Metrics;
use crate::network::{self, PeerId};
use crate::storage::Store;
use crate::tasks::Tasks;

/// The services the engine's parts share (one per node, behind an `Arc`).
pub struct Services {
    /// This node: every rule asks "is it here?".
    pub here: NodeId,
    /// The directory snapshot in force: every check reads it; only directory sync replaces it.
    pub dir: DirectoryHandle,
    /// Reads. Writes go through [`Services::committer`], never here.
    pub store: Arc<dyn Store>,
    /// The one write path (group commit): a part's change is durable when its commit returns.
    pub committer: Committer,
    /// Group verification: signature checks batched across requests, on a bounded share of the
    /// blocking pool. Its task runs on [`Services::tasks`] and stops with them.
    pub verifier: Verifier,
    pub metrics: Arc<Metrics>,
    /// The network client: asks and answers of neighbours.
    pub net: network::Client,
    /// The node key (signs reports, receipts, webhook pushes, segments) and the root key trusted.
    /// Shared because every part signs or verifies; changed only by the node-keys part.
    pub keys: NodeKeys,
    /// Where every background task runs, so shutdown stops them together.
    pub tasks: Tasks,
    /// The limits the parts enforce (sizes, pages, query deadlines).
    pub limits: Limits,
    /// Retry timings and batch sizes.
    pub relay_cfg: RelayConfig,
    /// Upper bound on a long-poll (inbox, query status, shared data).
    pub api_max_wait_ms: u64,
    /// Bumped after every commit that changed an inbox or a query's outcome: wakes the long-polls,
    /// the webhook pushers and the query-status waiters. Shared because the parts that change an
    /// inbox (custody, queries' timeouts) are not those that wait on it.
    pub inbox_changes: watch::Sender<u64>,
}

impl Services {
    /// The key this node signs with now.
    pub fn node_key(&self) -> SigningKey {
        self.keys.node_key.read().expect("node key lock").clone()
    }

    /// This node's libp2p identity now.
    pub fn peer_id(&self) -> PeerId {
        *self.keys.peer_id.read().expect("peer id lock")
    }

    /// The root key pinned now (the trust anchor after every handover taken).
    pub fn root_key(&self) -> PublicKey {
        *self.keys.pinned_root_key.read().expect("root key lock")
    }

    /// Whether this node is the root: its key is the root key pinned now. Only the root signs the
    /// node tree and the catalog.
    pub fn is_root(&self) -> bool {
        self.root_key().0 == self.node_key().verifying_key()
    }

    /// Wakes everyone waiting on an inbox or a query's outcome.
    pub fn inbox_changed(&self) {
        self.inbox_changes.send_modify(|v| *v += 1);
    }

    /// What the custody rules need to know of this node, now.
    pub(crate) fn context<'a>(&'a self, dir: &'a Directory) -> Context<'a> {
        Context { here: &self.here, dir, node_key: self.node_key(), now_ms: exchange_wire::now_ms() }
    }
}
