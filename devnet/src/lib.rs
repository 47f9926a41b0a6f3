//! Local networks of real `exchange-node run` processes on loopback, kept out of the node library
//! (`exchange-node-core`) so that a production node carries none of it:
//!
//! * [`launcher`]: lays out keys, seeds and configurations from the Guangzhou topology, starts, stops
//!   and kills node processes, waits for the directory and issues unit tokens (also used by the
//!   end-to-end tests).
//! * [`demo`]: `exchange-node demo`, the README's first command.
//! * [`deploy_kit`]: `exchange-node deploy-kit`, every node's installation files for real machines.
//! * [`bench`], [`bench_attachment`]: `exchange-node bench`; [`bench_urgent`]: its `--urgent-behind`; [`bench_compare`]: its `--peer`
//!   ([`peer_nats`]: NATS JetStream in the same run) and `--sweep`; [`bench_plots`]: its SVG plots.
//! * [`failover`]: killing the active replica of a node and timing the takeover.
//! * [`devnet`]: `exchange-node devnet`, the whole Guangzhou network (13 nodes, 209 units);
//!   [`scenario`]: its `--scenario` traffic and reconciliation; [`process_stats`]: the nodes'
//!   memory, CPU and descriptors from `/proc`.

pub mod bench;
pub mod bench_attachment;
pub mod bench_failover;
pub mod bench_compare;
pub mod bench_plots;
pub mod bench_urgent;
pub mod demo;
pub mod deploy_kit;
pub mod devnet;
pub mod directory_cost;
pub mod failover;
pub mod launcher;
pub mod peer_nats;
pub mod process_stats;
pub mod scenario;
