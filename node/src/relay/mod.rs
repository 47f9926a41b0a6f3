//! The relay engine: custody of messages from agencies and neighbours, delivery into inboxes,
//! receipts, and the forwarders that carry the outbox to neighbours.
//!
//! Every path follows one rule: verify, decide (plain functions in [`custody`]), commit through the
//! group committer, and only then acknowledge, wake forwarders and count. The engine's work is split
//! by who asks: [`ingress`] (agencies and neighbours handing messages over), [`reads`] (status,
//! inboxes, events) and [`operations`] (operators). Beside documents: [`attachments`] (large files
//! in chunks), [`asking`] (queries, 查询核验, answered by a deadline) and [`sharing`] (base-data
//! publish/subscribe).
//!
//! This file holds the engine itself: the parts (each part's state is a handle type in a file that
//! does not name `Engine`: [`tokens::Access`], [`attachment_state::Attachments`],
//! [`webhook_target::Webhooks`], [`directory_state::DirectorySync`], [`sharing::Sharing`],
//! [`signals::Links`], [`deadlines::Queries`], [`forwarder::Forwarders`]), the services they share
//! ([`services::Services`], which a part that needs nothing else takes instead of the engine), and
//! start-up. What the network reports is handled in `neighbours.rs`; what follows a commit is the
//! forwarders' (`after_commit.rs`: every part that commits is given them as its
//! [`commit_done::CommitDone`]), and the engine runs the follow-ups a commit leaves for other parts;
//! the door of the custody pipeline is [`ingress::Ingress`], lent by `Engine::ingress()`; refused
//! input is recorded by [`refused`].

pub mod access;
mod after_commit;
pub mod asking;
pub mod attachment_state;
pub mod attachments;
pub mod backoff;
pub mod batching;
pub mod checkpoint_files;
pub mod checkpoints;
pub mod commit_done;
pub mod committer;
pub mod custody;
mod cut_through;
pub mod deadlines;
pub mod directory_admin;
pub mod directory_state;
pub mod directory_sync;
pub mod forwarder;
pub mod handover;
pub mod node_key_state;
pub mod node_keys;
pub mod ingress;
mod neighbours;
pub mod operations;
pub mod push;
pub mod reads;
pub mod reconcile;
pub mod reconcile_answer;
pub mod services;
pub mod refusal;
pub mod refused;
pub mod signals;
pub mod sharing;
pub mod tokens;
pub mod verifier;
pub mod webhook_target;
pub mod window;

use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use crate::network::{Multiaddr, PeerId};
use tokio::sync::watch;

use crate::config::NodeConfig;
use crate::directory::{Directory, DirectoryHandle};
use crate::metrics::Metrics;
use crate::network;
use crate::storage::health::StorageHealth;
use crate::storage::Store;
use committer::Committer;
use services::Services;
pub use refusal::Refusal;
pub use signals::PeerState;

/// The engine: the shared services and the parts. It routes what the API and the network hand it
/// to the part whose work it is (orchestration); the parts do the work.
pub struct Engine {
    /// What every part shares (see [`services`]): `engine.services.store`, ...; parts that do not
    /// need the engine take `&Services` or hold the `Arc`.
    pub services: Arc<Services>,
    /// Free space, intake and damage of the storage (see `storage::health`).
    pub health: Arc<StorageHealth>,
    pub started_at_ms: u64,
    /// The directory segments held, the configured parent, the seeds (see [`directory_sync`]).
    pub directory_sync: directory_state::DirectorySync,
    /// Unit tokens and the access policy (see [`access`]).
    pub access: tokens::Access,
    /// Webhooks: where they may point, the pushers running, and their work (see [`push`]).
    pub webhooks: webhook_target::Webhooks,
    /// The forwarders (one per neighbour) and the state of each link (see [`forwarder`]).
    pub links: Arc<signals::Links>,
    /// Queries asked here: the deadlines without an outcome, and the work (see [`asking`]).
    pub queries: deadlines::Queries,
    /// Attachment files and their transfers (see [`attachments`]).
    pub attachments: Arc<attachment_state::Attachments>,
    /// Audit checkpoints held here (this node's at the root, its children's) (see [`checkpoints`]).
    pub checkpoints: checkpoint_files::CheckpointFiles,
    /// The forwarders, one per neighbour, and what follows every commit (see [`forwarder`],
    /// `after_commit.rs`).
    pub forwarders: Arc<forwarder::Forwarders>,
    /// Serialises recall reporting, so each decided recall is reported once.
    recall_reports: tokio::sync::Mutex<()>,
    /// Data sharing: the catalog in force, the numbering lock (see [`sharing`]).
    pub sharing: sharing::Sharing,
    /// Backups and the reconciliation after a restore (see `backup`).
    pub(crate) recovery: crate::backup::Recovery,
}

impl Engine {
    /// `parent_hint` is the configured parent's peer id and addresses (`parent_address`).
    pub fn new(
        cfg: &NodeConfig,
        store: Arc<dyn Store>,
        health: Arc<StorageHealth>,
        metrics: Arc<Metrics>,
        net: network::Client,
        node_key: SigningKey,
        parent_hint: Option<(PeerId, Vec<Multiaddr>)>,
    ) -> anyhow::Result<Arc<Engine>> {
        let attachments = crate::storage::attachments::AttachmentStore::open(&cfg.attachments_dir(), cfg.attachments.upload_limits()).map_err(|e| {
            anyhow::anyhow!("cannot open the attachment store {}: {e}", cfg.attachments_dir().display())
        })?;
        let committer = Committer::spawn(store.clone(), metrics.clone(), cfg.relay.commit_max_requests, cfg.relay.commit_max_jobs.unwrap_or(usize::MAX));
        let tasks = crate::tasks::Tasks::new();
        let verifier = verifier::Verifier::spawn(&tasks, verifier::MAX_SIGNATURES, verifier::in_flight());
        let services = Arc::new(Services {
            here: cfg.node_id.clone(),
            dir: DirectoryHandle::new(Directory::default()),
            store,
            committer,
            verifier,
            metrics,
            net,
            keys: node_key_state::NodeKeys::new(node_key, cfg.root_key, cfg.key_file.clone()),
            tasks,
            limits: cfg.limits.clone(),
            relay_cfg: cfg.relay.clone(),
            api_max_wait_ms: cfg.api.max_wait_ms,
            inbox_changes: watch::channel(0).0,
        });
        let targets = webhook_target::WebhookTargets::new(cfg.api.webhooks_to_loopback, &cfg.push)?;
        let links = Arc::new(signals::Links::default());
        let attachments = Arc::new(attachment_state::Attachments::new(attachments, services.clone(), health.clone(), links.clone()));
        let forwarders = Arc::new(forwarder::Forwarders::new(services.clone(), links.clone(), attachments.clone()));
        Ok(Arc::new(Engine {
            health,
            started_at_ms: exchange_wire::now_ms(),
            directory_sync: directory_state::DirectorySync::new(cfg.directory.clone(), parent_hint),
            access: tokens::Access::new(cfg.api.require_auth, cfg.policy.clone()),
            webhooks: webhook_target::Webhooks::new(services.clone(), targets),
            links,
            forwarders,
            recall_reports: tokio::sync::Mutex::new(()),
            attachments,
            checkpoints: checkpoint_files::CheckpointFiles::new(&cfg.data_dir, std::time::Duration::from_secs(cfg.audit.checkpoint_secs)),
            queries: deadlines::Queries::new(services.clone()),
            sharing: sharing::Sharing::default(),
            recovery: crate::backup::Recovery::new(&cfg.data_dir),
            services,
        }))
    }

    /// Loads the directory and tokens, starts forwarders for every neighbour and every hop with
    /// queued work, and starts refreshing the queue gauges.
    pub async fn start(self: &Arc<Self>) -> anyhow::Result<()> {
        let m = &self.services.metrics;
        for op in ["commit", "read"] {
            m.storage_errors.with_label_values(&[op]).inc_by(0);
        }
        for source in ["agency", "peer"] {
            m.signature_failures.with_label_values(&[source]).inc_by(0);
        }
        for outcome in ["ok", "failed"] {
            m.webhook_pushes.with_label_values(&[outcome]).inc_by(0);
        }
        for outcome in ["answered", "timed-out"] {
            m.queries.with_label_values(&[outcome]).inc_by(0);
        }
        for direction in ["inbound", "outbound"] {
            m.connections_refused.with_label_values(&[direction]).inc_by(0);
        }
        for decision in ["granted", "refused"] {
            m.subscription_decisions.with_label_values(&[decision]).inc_by(0);
        }
        self.access.load_tokens(&self.services).await?;
        self.load_directory().await?;
        for q in self.services.store.queue_stats().await? {
            if let Ok(id) = q.hop.parse() {
                self.forwarders.forwarder(&id).work.notify_one();
            }
        }
        self.services.tasks.spawn(forwarder::refresh_queue_gauges(self.services.clone()));
        self.services.tasks.spawn(self.clone().run_follow_ups());
        let engine = self.clone();
        self.services.tasks.spawn(async move { engine.report_recalls().await });
        self.webhooks.start_pushers().await?;
        self.start_deciding_requests();
        self.start_backlogs();
        let engine = self.clone();
        self.services.tasks.spawn(async move { engine.directory_sync.resynchronise(&engine.services, &engine.links, Duration::from_secs(30)).await });
        self.services.tasks.spawn(self.clone().watch_node_keys(Duration::from_secs(1)));
        self.services.tasks.spawn(self.queries.clone().watch_deadlines());
        self.services.tasks.spawn(self.attachments.clone().sweep_uploads_forever());
        Ok(())
    }
}
