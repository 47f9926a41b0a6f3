//! The exchange node. One binary runs at every level of the tree; configuration and the directory
//! give it its place. The modules follow the architecture:
//!
//! * [`config`]: the TOML configuration and its environment overrides.
//! * [`directory`]: nodes, units and keys; [`routing`]: where a message goes next; [`settlement`]:
//!   签收, 退回 and 撤回 of an inbox entry, decided once; [`retention`]: what a purge may drop
//!   (pure functions).
//! * [`storage`]: durable custody behind one trait (SQLite by default).
//! * [`network`]: libp2p links to parent and children, owned by one task.
//! * [`relay`]: the engine: verification, custody, delivery, receipts, forwarders, group commit.
//! * [`api`]: the agency and admin HTTP interfaces; [`metrics`]: Prometheus; [`memory`]: how the
//!   process takes memory from the allocator.
//! * [`backup`]: online backups, restores, and the reconciliation with the neighbours after one.
//! * [`node`]: wiring it all together.
//!
//! The `exchange-node` binary, the demo, the benchmark and the local-network launcher live in the
//! `exchange-node` package (`devnet/`), outside this library.

pub mod api;
pub mod backup;
pub mod config;
pub mod directory;
pub mod memory;
pub mod metrics;
pub mod network;
pub mod node;
pub mod relay;
pub mod replica;
pub mod retention;
pub mod routing;
pub mod settlement;
pub mod sharing;
pub mod storage;
pub mod tasks;
