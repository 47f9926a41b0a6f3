//! Wiring: load the configuration, key and directory, open storage, start the network, the engine and
//! the HTTP listeners, and stop cleanly on SIGTERM or Ctrl-C.
//!
//! Shutdown, within [`SHUTDOWN_BOUND`]: the listeners stop taking requests and answer those under
//! way, and the refusal tallies go to the audit log; the engine's background tasks are told to stop
//! ([`crate::tasks`]); the last audit checkpoint goes to the parent; the group committer commits
//! what is queued and refuses the rest. What
//! does not finish in time is abandoned: it was never acknowledged, so a neighbour or an agency
//! sends it again. The network's event loop runs to the end, so the checkpoint can still leave.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::config::NodeConfig;
use crate::metrics::Metrics;
use crate::network::{self, NetworkConfig};
use crate::relay::Engine;
use crate::replica;
use crate::storage::health::{Fault, StorageHealth};
use crate::storage::sqlite::OpenCheck;
use crate::storage::{PgStore, SqliteStore, Store};
use crate::tasks::Tasks;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a shutdown may take before what is left is abandoned.
pub const SHUTDOWN_BOUND: Duration = Duration::from_secs(10);

/// Sets up logging as configured (`RUST_LOG` overrides the level).
pub fn init_logging(cfg: &NodeConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if cfg.log.format == "json" { builder.json().try_init() } else { builder.try_init() };
}

/// Runs a node until it is told to stop.
pub async fn run(cfg: NodeConfig) -> anyhow::Result<()> {
    let (agency_tls, admin_tls) = listener_tls(&cfg)?;
    let node_key = exchange_wire::keys::read(&cfg.key_file)?;
    let parent_hint = cfg.parent_address.as_deref().map(parse_parent_address).transpose()?;
    std::fs::create_dir_all(&cfg.data_dir).with_context(|| format!("cannot create data_dir {}", cfg.data_dir.display()))?;
    crate::backup::refuse_interrupted_restore(&cfg.data_dir)?;
    let metrics = Arc::new(Metrics::new(cfg.node_id.as_str()));
    metrics.replica_active.set(1);
    let health = Arc::new(StorageHealth::new(&cfg.data_dir, cfg.storage.reserve_bytes, metrics.storage_health()));
    // Storage's own task (the rest of the database check, when the check at open ran out of time).
    let storage_tasks = Tasks::new();
    let check = OpenCheck { budget: Duration::from_secs(cfg.storage.open_check_secs), tasks: storage_tasks.clone() };
    if cfg.storage.url.is_none() {
        crate::storage::move_to_postgres::refuse_moved(&cfg.database_path())?;
    }
    let stop = CancellationToken::new();
    // The node's own tasks (beside the engine's): they all end when `stop` is cancelled.
    let node_tasks = TaskTracker::new();
    // Bound now, served from the start by a standby (see `replica`), else once the engine runs.
    let mut listeners = Some(bind_listeners(&cfg).await?);
    let (agency_switch, admin_switch) = (replica::Switch::new(), replica::Switch::new());
    let peer_id = crate::directory::peer_id_of(&exchange_wire::PublicKey(node_key.verifying_key())).to_string();
    let standby = replica::standby_router(cfg.node_id.clone(), peer_id, metrics.clone());
    let serve = |name, listener, router, limits, tls| {
        node_tasks.spawn(crate::api::listener::serve(name, listener, router, limits, tls, metrics.clone(), stop.clone()))
    };
    let waiting = || {
        if let Some((agency, admin)) = listeners.take() {
            serve("agency", agency, agency_switch.router(standby.clone()), cfg.api.http_limits(), agency_tls.clone());
            serve("admin", admin, admin_switch.router(standby.clone()), cfg.admin.http_limits(), admin_tls.clone());
        }
    };
    let Some(store) = open_store(&cfg, &health, &metrics, check, waiting).await? else {
        tracing::info!("stopped while waiting as a standby");
        stop.cancel();
        return Ok(());
    };
    node_tasks.spawn(health.clone().run(stop.clone()));

    let keypair = network::keypair_of(&node_key).context("node key")?;
    let (net, mut net_events, event_loop) = network::new(keypair, network_config(&cfg)?)?;
    tokio::spawn(event_loop.run());

    let engine = Engine::new(&cfg, store, health, metrics.clone(), net, node_key, parent_hint)?;
    engine.start().await?;
    engine.start_reconciliation_if_due()?;
    check_listed_key(&cfg, &engine)?;
    {
        let engine2 = engine.clone();
        engine.services.tasks.spawn(async move {
            while let Some(event) = net_events.recv().await {
                engine2.on_network_event(event).await;
            }
        });
    }

    // Before any listener: whoever waits for the node to answer may then read the token file.
    let admin_doors = crate::api::admin_doors::Doors::open(&cfg, engine.clone())?;
    node_tasks.spawn(admin_doors.clone().audit_refusals(stop.clone()));
    let agency_refusals = crate::api::agency::refusal_tally(&cfg, &engine);
    node_tasks.spawn(agency_refusals.clone().audit(engine.clone(), stop.clone()));
    // Its own token: the last checkpoint is signed after the refusal audits are written.
    let checkpoint_stop = CancellationToken::new();
    let checkpoints = tokio::spawn(engine.clone().run_audit_checkpoints(checkpoint_stop.clone()));

    tracing::info!(node = %cfg.node_id, peer_id = %engine.services.peer_id(), api = %cfg.api.listen, admin = %cfg.admin.listen,
        api_tls = agency_tls.is_some(), admin_tls = admin_tls.is_some(), "node started");

    agency_switch.activate(crate::api::agency::router(engine.clone(), agency_refusals));
    admin_switch.activate(crate::api::admin::router(engine.clone(), admin_doors));
    if let Some((agency, admin)) = listeners.take() {
        serve("agency", agency, agency_switch.router(standby.clone()), cfg.api.http_limits(), agency_tls);
        serve("admin", admin, admin_switch.router(standby), cfg.admin.http_limits(), admin_tls);
    }

    shutdown_signal().await;
    shutdown(&engine, stop, (node_tasks, storage_tasks), (checkpoint_stop, checkpoints)).await;
    Ok(())
}

/// The agency and admin listeners, bound.
async fn bind_listeners(cfg: &NodeConfig) -> anyhow::Result<(tokio::net::TcpListener, tokio::net::TcpListener)> {
    let agency = tokio::net::TcpListener::bind(cfg.api.listen)
        .await
        .with_context(|| format!("cannot listen on api.listen {}", cfg.api.listen))?;
    let admin = tokio::net::TcpListener::bind(cfg.admin.listen)
        .await
        .with_context(|| format!("cannot listen on admin.listen {}", cfg.admin.listen))?;
    Ok((agency, admin))
}

/// Opens the storage: the PostgreSQL database named by `storage.url` once this replica holds its
/// lease (`waiting` runs if it must wait as a standby), else the SQLite file. `None`: told to stop
/// while waiting.
async fn open_store(
    cfg: &NodeConfig,
    health: &Arc<StorageHealth>,
    metrics: &Arc<Metrics>,
    check: OpenCheck,
    waiting: impl FnOnce(),
) -> anyhow::Result<Option<Arc<dyn Store>>> {
    let store: Arc<dyn Store> = match cfg.storage.url.as_deref() {
        Some(url) => {
            let lease = tokio::select! {
                lease = replica::take_lease(url, health.clone(), metrics.clone(), waiting) => lease.context("cannot take the lease on the PostgreSQL database named by storage.url")?,
                _ = shutdown_signal() => return Ok(None),
            };
            Arc::new(PgStore::open_leased(url, health.clone(), lease).await.context("cannot open the PostgreSQL database named by storage.url")?)
        }
        None => match SqliteStore::open(&cfg.database_path(), health.clone(), check).await {
            Ok(store) => Arc::new(store),
            Err(e) if Fault::of(&e) == Fault::Corrupt => anyhow::bail!(damaged_database(&cfg.database_path(), &e)),
            Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot open the database {}", cfg.database_path().display()))),
        },
    };
    Ok(Some(store))
}

/// The network's settings from the `p2p` section.
fn network_config(cfg: &NodeConfig) -> anyhow::Result<NetworkConfig> {
    let listen = cfg.p2p.listen.parse().with_context(|| format!("p2p.listen {:?} is not a multiaddress", cfg.p2p.listen))?;
    Ok(NetworkConfig {
        listen,
        idle_timeout: Duration::from_secs(cfg.p2p.idle_timeout_secs),
        link_timeout: Duration::from_millis(cfg.p2p.link_timeout_ms),
        bounds: network::behaviour::Bounds {
            request_timeout: Duration::from_secs(cfg.p2p.request_timeout_secs),
            max_batch_bytes: cfg.max_request_bytes(),
            max_directory_bytes: cfg.p2p.max_directory_bytes,
            max_pending_connections: cfg.p2p.max_pending_connections,
            max_established_connections: cfg.p2p.max_established_connections,
            max_connections_per_peer: cfg.p2p.max_connections_per_peer,
        },
    })
}

/// At start: whether this node signs with the key the node tree lists for it; if not, whether it
/// may go on (the staged key is the one listed, or the old key's overlap still runs).
fn check_listed_key(cfg: &NodeConfig, engine: &Engine) -> anyhow::Result<()> {
    match engine.services.dir.current().node(&cfg.node_id) {
        Some(me) if me.public_key.0 != engine.services.node_key().verifying_key() => {
            // The root rotated this node's key while it was down: take the staged key, or keep
            // going with the old one while its overlap lasts.
            let mine = exchange_wire::PublicKey(engine.services.node_key().verifying_key());
            let staged = exchange_wire::keys::read(&engine.services.keys.next_key_file()).is_ok_and(|k| k.verifying_key() == me.public_key.0);
            let in_overlap = me.previous_keys.iter().any(|k| k.public_key == mine && k.revoked_at_ms.is_none() && k.valid_at(exchange_wire::now_ms()));
            if staged {
                tracing::info!(node = %cfg.node_id, key = %me.public_key, "the node tree lists the staged key for this node: taking it");
            } else if in_overlap {
                tracing::warn!(node = %cfg.node_id, key = %me.public_key, staged = %engine.services.keys.next_key_file().display(),
                    "the node tree lists a new key for this node and the overlap of the old one is running out: stage the new key");
            } else {
                anyhow::bail!(
                    "the key in {} is not the key the node tree lists for node {} (expected public key {}); \
                     if the root rotated this node's key, put the new key in {}",
                    cfg.key_file.display(),
                    cfg.node_id,
                    me.public_key,
                    engine.services.keys.next_key_file().display()
                )
            }
        }
        Some(_) => {}
        None => tracing::warn!(node = %cfg.node_id, "this node is not in the node tree yet: it waits for the tree from its parent"),
    }
    Ok(())
}

/// Stops the node within [`SHUTDOWN_BOUND`] (see the module's documentation for the order), and
/// logs how it went: `stopped cleanly`, or what was abandoned.
async fn shutdown(
    engine: &Arc<Engine>,
    stop: CancellationToken,
    (node_tasks, storage_tasks): (TaskTracker, Tasks),
    (checkpoint_stop, checkpoints): (CancellationToken, tokio::task::JoinHandle<()>),
) {
    let began = Instant::now();
    tracing::info!("stopping: no new requests; what is committed stays committed");
    stop.cancel();
    node_tasks.close();
    let steps = async {
        // Requests under way are answered (after their commit) or fail unacknowledged; the refusal
        // tallies are written to the audit log.
        node_tasks.wait().await;
        let left = engine.services.tasks.stop(Duration::from_secs(4)).await + storage_tasks.stop(Duration::from_secs(1)).await;
        // The last checkpoint, handed at a clean shutdown, covers every audit entry written.
        checkpoint_stop.cancel();
        let _ = checkpoints.await;
        let drained = engine.services.committer.stop(Duration::from_secs(3)).await;
        (left, drained)
    };
    match tokio::time::timeout(SHUTDOWN_BOUND, steps).await {
        Ok((0, true)) => tracing::info!(elapsed_ms = began.elapsed().as_millis() as u64, "stopped cleanly"),
        Ok((left, drained)) => tracing::warn!(
            elapsed_ms = began.elapsed().as_millis() as u64,
            tasks_abandoned = left,
            commit_queue_drained = drained,
            "stopped, abandoning unacknowledged work (it is sent again)"
        ),
        Err(_) => tracing::warn!(bound_secs = SHUTDOWN_BOUND.as_secs(), "shutdown took too long: abandoning what is left (nothing of it was acknowledged)"),
    }
}

/// The listeners' TLS acceptors; refuses plain HTTP off loopback unless the configuration allows it.
fn listener_tls(cfg: &NodeConfig) -> anyhow::Result<(Option<tokio_rustls::TlsAcceptor>, Option<tokio_rustls::TlsAcceptor>)> {
    use crate::api::tls::{TlsFiles, acceptor};
    let api = acceptor(&TlsFiles {
        section: "api",
        listen: cfg.api.listen,
        cert: cfg.api.tls_cert.as_deref(),
        key: cfg.api.tls_key.as_deref(),
        allow_plain_http: cfg.api.allow_plain_http,
    })?;
    let admin = acceptor(&TlsFiles {
        section: "admin",
        listen: cfg.admin.listen,
        cert: cfg.admin.tls_cert.as_deref(),
        key: cfg.admin.tls_key.as_deref(),
        allow_plain_http: cfg.admin.allow_plain_http,
    })?;
    Ok((api, admin))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// The refusal to start on a damaged database: what was found, and what the operator does next.
fn damaged_database(db: &std::path::Path, e: &crate::storage::StorageError) -> String {
    format!(
        "refusing to start: the database {} is damaged: {e}.\n\
         Nothing was changed. To recover (docs/operations.md, 'Recovering a damaged database'):\n  \
         1. keep the damaged file for investigation (the node never deletes it);\n  \
         2. restore the latest backup: exchange-node restore --config <this config> --from <backup folder>;\n  \
         3. start the node: it reconciles with its neighbours, which send again what they handed over since the backup,\n     \
         and lists what it had acknowledged since then (exchange-admin reconcile).",
        db.display()
    )
}

/// Splits `parent_address` into the parent's peer id and the addresses of its replicas to dial.
fn parse_parent_address(text: &str) -> anyhow::Result<(network::PeerId, Vec<network::Multiaddr>)> {
    network::split_peer_addresses(text).map_err(|e| anyhow::anyhow!("parent_address {e}"))
}
