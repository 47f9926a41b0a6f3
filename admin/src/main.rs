//! `exchange-admin`: the command line for agency systems and network operators.
//!
//! This file holds only the command-line definitions and the mapping from outcomes to exit codes; the
//! commands live in `agency`, formatting in `output`, value parsing in `parse`.

mod agency;
mod output;
mod parse;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use exchange_wire::{MessageId, Priority, UnitAddress};

use agency::{Ctx, MAX_WAIT_SECS, NodeUnreachable};

const LONG_ABOUT: &str = "\
Command line for agency systems and operators of the exchange network.

Agency commands talk to a node's agency API, given by --node URL or EXCHANGE_NODE (default
http://127.0.0.1:8080). Unit keys never leave this machine: documents and receipts are signed here
and the node only receives signed envelopes.

Output is a table for people; --json prints the node's answer as JSON for scripts. Times are UTC.
Message ids and receipt ids are printed on stdout alone, notes go to stderr, so
`id=$(exchange-admin send ...)` works.

Exit codes:
  0  success
  1  the node refused the request, or a command-line value or local file is wrong
  2  the node could not be reached or gave no usable answer (is exchange-node running? check --node)";

#[derive(Parser)]
#[command(name = "exchange-admin", version, about = "Command line for the exchange network", long_about = LONG_ABOUT)]
struct Cli {
    /// Base URL of the node's agency API.
    #[arg(
        long,
        global = true,
        env = "EXCHANGE_NODE",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL",
        help_heading = "Global options"
    )]
    node: String,

    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true, help_heading = "Global options")]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new unit key file (mode 0600) and print its public key for the directory.
    Keygen(KeygenArgs),
    /// Print the public key of a key file.
    Pubkey(PubkeyArgs),
    /// Sign a file as an official document and hand it to the node.
    Send(SendArgs),
    /// List a unit's inbox, optionally waiting for new messages and saving their payloads.
    Inbox(InboxArgs),
    /// Sign for (签收) a document in a unit's inbox with a receipt signed by the unit's key.
    SignFor(SignForArgs),
    /// Show where a message is, per recipient, and the hops it took (ask the sender's node).
    Status(StatusArgs),
}

#[derive(Args)]
pub struct KeygenArgs {
    /// The key file to create; an existing file is never overwritten.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// A comment written into the key file, such as the unit address.
    #[arg(long, value_name = "TEXT", default_value = "unit key")]
    pub label: String,
}

#[derive(Args)]
pub struct PubkeyArgs {
    /// The key file.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
}

#[derive(Args)]
pub struct SendArgs {
    /// The sending unit's key file.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// The sending unit (发文机关), such as gz.yuexiu/liurong-street.
    #[arg(long, value_name = "UNIT")]
    pub from: UnitAddress,
    /// Main recipients (主送), comma-separated; may be repeated.
    #[arg(long, value_name = "UNIT[,UNIT...]", required = true)]
    pub to: Vec<String>,
    /// Copy recipients (抄送), comma-separated; may be repeated.
    #[arg(long, value_name = "UNIT[,UNIT...]")]
    pub cc: Vec<String>,
    /// Urgency: urgent (特急), express (加急) or routine (平件).
    #[arg(long, value_name = "LEVEL", default_value = "routine", value_parser = parse::priority)]
    pub priority: Priority,
    /// The document title (标题).
    #[arg(long, value_name = "T")]
    pub title: Option<String>,
    /// The document number (发文字号), such as 越府〔2025〕12号.
    #[arg(long, value_name = "NUMBER")]
    pub doc_number: Option<String>,
    /// Further metadata as key=value; may be repeated.
    #[arg(long, value_name = "KEY=VALUE")]
    pub meta: Vec<String>,
    /// The file to send as the payload; its base name is recorded as file-name.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

#[derive(Args)]
pub struct InboxArgs {
    /// The unit whose inbox to read.
    #[arg(long, value_name = "UNIT")]
    pub unit: UnitAddress,
    /// Show messages after this inbox position (the seq column); 0 reads from the start.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub after: i64,
    /// At most this many messages.
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// When there is nothing new, wait up to this many seconds for a message to arrive.
    #[arg(long, value_name = "SECONDS", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=MAX_WAIT_SECS))]
    pub wait: u64,
    /// Write each payload, checked against its signed digest, to DIR/<message id>.
    #[arg(long, value_name = "DIR")]
    pub save: Option<PathBuf>,
}

#[derive(Args)]
pub struct SignForArgs {
    /// The signing unit's key file.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// The unit signing for the message (a recipient).
    #[arg(long, value_name = "UNIT")]
    pub unit: UnitAddress,
    /// The message id, or at least its first 8 hex characters.
    #[arg(value_name = "MESSAGE_ID")]
    pub message: parse::IdPattern,
}

#[derive(Args)]
pub struct StatusArgs {
    /// The message id (64 hex characters).
    #[arg(value_name = "MESSAGE_ID", value_parser = parse::full_id)]
    pub message: MessageId,
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let ctx = Ctx {
        node: cli.node,
        json: cli.json,
    };
    match &cli.command {
        Command::Keygen(a) => agency::keygen(&ctx, a),
        Command::Pubkey(a) => agency::pubkey(&ctx, a),
        Command::Send(a) => agency::send(&ctx, a),
        Command::Inbox(a) => agency::inbox(&ctx, a),
        Command::SignFor(a) => agency::sign_for(&ctx, a),
        Command::Status(a) => agency::status(&ctx, a),
    }
}

/// Exit codes: 0 ok, 1 refused or wrong input (clap's own default for usage errors is 2, which here
/// means "node unreachable", so usage errors are remapped), 2 no usable answer from the node.
fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<NodeUnreachable>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
