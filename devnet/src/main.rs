//! `exchange-node`: runs a node, generates node keys, runs the demo, the benchmark and the devnet, and
//! writes deployment kits.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exchange node for the government exchange network (city and district nodes run this same binary).
#[derive(Parser)]
#[command(name = "exchange-node", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node from its configuration file (environment EXCHANGE__SECTION__KEY overrides it).
    Run {
        #[arg(long, short, env = "EXCHANGE_CONFIG")]
        config: PathBuf,
    },
    /// Restore a stopped node from a backup folder written by `exchange-admin backup`: check it, move
    /// the data it replaces aside (never deleting it), install it, and leave a reconciliation with the
    /// neighbours due at the next start.
    Restore {
        #[arg(long, short, env = "EXCHANGE_CONFIG")]
        config: PathBuf,
        /// The backup folder.
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
    },
    /// Move a stopped node's custody from its SQLite file into a new, empty PostgreSQL database
    /// (verified table by table before it is committed); then set `storage.url` and start the node.
    MoveToPostgres {
        #[arg(long, short, env = "EXCHANGE_CONFIG")]
        config: PathBuf,
        /// The PostgreSQL database to move into, e.g. postgres://exchange@db:5432/exchange_gz.
        #[arg(long, value_name = "URL")]
        to: String,
    },
    /// Generate a node key file (mode 0600) and print its public key and libp2p peer id.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Start a city node and two district nodes on loopback, send a document across the tiers, and
    /// print the hop-by-hop timeline and the verified receipts.
    Demo(exchange_devnet::demo::DemoArgs),
    /// Measure throughput and latency district → city → district with real node processes.
    Bench(exchange_devnet::bench::BenchArgs),
    /// Start the whole Guangzhou network (city node, 12 district nodes, 209 units) on loopback, write
    /// every unit's key and token and a Prometheus configuration to a folder, and run until Ctrl-C;
    /// or, with --scenario SECS, drive mixed traffic and exit 0 only if everything reconciles.
    Devnet(exchange_devnet::devnet::DevnetArgs),
    /// Write every node's installation files (configuration, node key, units seed, the root's tree
    /// seed, the agencies' unit keys) from the topology and the hosts file, one folder per machine.
    DeployKit(exchange_devnet::deploy_kit::DeployKitArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => run(config),
        Command::Restore { config, from } => exchange_node_core::backup::restore::run(&config, &from),
        Command::MoveToPostgres { config, to } => exchange_node_core::storage::move_to_postgres::run(&config, &to),
        Command::Keygen { out } => keygen(out),
        Command::Demo(args) => exchange_devnet::demo::run(args),
        Command::Bench(args) => exchange_devnet::bench::run(args),
        Command::Devnet(args) => exchange_devnet::devnet::run(args),
        Command::DeployKit(args) => exchange_devnet::deploy_kit::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: PathBuf) -> anyhow::Result<()> {
    let cfg = exchange_node_core::config::NodeConfig::load(&config)?;
    exchange_node_core::node::init_logging(&cfg);
    exchange_node_core::memory::return_large_buffers_to_the_system();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(exchange_node_core::node::run(cfg))
}

fn keygen(out: PathBuf) -> anyhow::Result<()> {
    let key = exchange_wire::keys::generate();
    exchange_wire::keys::write_new(&out, &key, "node key")?;
    let public = exchange_wire::PublicKey(key.verifying_key());
    println!("public_key = \"{public}\"");
    println!("peer_id    = \"{}\"", exchange_node_core::directory::peer_id_of(&public));
    Ok(())
}
