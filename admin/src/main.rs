//! `exchange-admin`: the command line for agency systems and network operators.
//!
//! This file holds only the command-line definitions and the mapping from outcomes to exit codes; the
//! agency commands live in `agency`, the operator commands in `ops`, the choice of node API and the
//! meaning of its errors in `endpoint`, formatting in `output`, value parsing in `parse`.

mod agency;
mod endpoint;
mod ops;
mod output;
mod parse;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use exchange_wire::{MessageId, Priority, UnitAddress};

use agency::MAX_WAIT_SECS;
use endpoint::{Ctx, NoAnswer};

const LONG_ABOUT: &str = "\
Command line for agency systems and operators of the exchange network.

Agency commands (keygen, pubkey, send, inbox, sign-for, status MESSAGE_ID) talk to a node's agency
API, given by --node URL or EXCHANGE_NODE (default http://127.0.0.1:8080). Unit keys never leave this
machine: documents and receipts are signed here and the node only receives signed envelopes.

Operator commands (status, peers, queues, trace, dead-letters, retry, purge, audit, ready) talk to
the node's admin API, given by --admin URL or EXCHANGE_ADMIN (default http://127.0.0.1:9080). The
admin API listens on loopback by default (admin.listen): run them on the node's host.

`status` is both: `status MESSAGE_ID` shows where a message is, per recipient (agency API; ask the
sender's node), and `status` alone shows the node itself (admin API).

Output is a table for people; --json prints the node's answer as JSON for scripts (`audit export`
always prints JSON lines). Times are UTC. Message ids and receipt ids are printed on stdout alone,
notes and warnings go to stderr, so `id=$(exchange-admin send ...)` works.

Exit codes:
  0  success; also `trace` when some nodes could not be asked (the trace may then be partial: a
     warning on stderr names them)
  1  the node refused the request, a command-line value or local file is wrong, or a destructive
     command was given without --yes
  2  the node could not be reached or gave no usable answer (is exchange-node running? check --node
     for agency commands, --admin for operator commands)
  4  audit verify: the audit chain is broken (the first broken entry is printed)
  5  ready: the node answered that it is not ready (each failing check is printed)";

#[derive(Parser)]
#[command(name = "exchange-admin", version, about = "Command line for the exchange network", long_about = LONG_ABOUT)]
struct Cli {
    /// Base URL of the node's agency API (agency commands).
    #[arg(
        long,
        global = true,
        env = "EXCHANGE_NODE",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL",
        help_heading = "Global options"
    )]
    node: String,

    /// Base URL of the node's admin API (operator commands).
    #[arg(
        long,
        global = true,
        env = "EXCHANGE_ADMIN",
        default_value = "http://127.0.0.1:9080",
        value_name = "URL",
        help_heading = "Global options"
    )]
    admin: String,

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
    /// With MESSAGE_ID: a message's status per recipient; without: the node's own status.
    #[command(
        long_about = "With MESSAGE_ID: where a message is, per recipient, and the hops it took. This asks the agency \
API (--node) of the sender's node.\n\nWithout MESSAGE_ID: the node's own status from its admin API (--admin): its \
name and tier, parent and children, directory version, uptime and build."
    )]
    Status(StatusArgs),
    /// The node's links to its parent and children: connected, last seen, round-trip time.
    Peers,
    /// The outbox toward each next hop: depth, bytes, age of the oldest entry, dead letters.
    Queues,
    /// A message's custody events from every node it crossed, as one timeline.
    #[command(
        long_about = "A message's custody events from every node it crossed, as one timeline sorted by time. The node \
asked (--admin) gathers them from its neighbours along the message's path.\n\nIf some nodes the message reached \
could not be asked (a link is down), their events are missing: a warning on stderr names them, and the exit code \
is still 0. With --json, they are listed in `unreachable`."
    )]
    Trace(TraceArgs),
    /// List, resend or purge the messages a neighbour refused for good.
    #[command(subcommand)]
    DeadLetters(DeadLettersCommand),
    /// Wake every forwarder to retry now instead of waiting out its back-off.
    Retry,
    /// Drop payloads and inbox entries of settled messages older than DAYS (needs --yes).
    Purge(RetentionArgs),
    /// Verify or export the node's hash-chained audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The node's readiness checks; exit code 5 when it is not ready.
    Ready,
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
    /// The message id (64 hex characters); leave out for the node's own status.
    #[arg(value_name = "MESSAGE_ID", value_parser = parse::full_id)]
    pub message: Option<MessageId>,
}

#[derive(Args)]
pub struct TraceArgs {
    /// The message id (64 hex characters).
    #[arg(value_name = "MESSAGE_ID", value_parser = parse::full_id)]
    pub message: MessageId,
}

#[derive(Subcommand)]
pub enum DeadLettersCommand {
    /// List the dead letters: seq, message, peer, recipients, attempts, reason.
    List,
    /// Queue dead letters for another attempt (after fixing what made the peer refuse them).
    Resend(DeadLetterSelectionArgs),
    /// Delete dead letters for good: they will never be delivered. Needs --yes.
    Purge(DeadLetterPurgeArgs),
}

/// Which dead letters to act on: every one, or those with the given seq numbers (as `list` shows).
#[derive(Args)]
#[group(id = "selection", required = true, multiple = false)]
pub struct DeadLetterSelectionArgs {
    /// Every dead letter.
    #[arg(long)]
    pub all: bool,
    /// The seq numbers of the dead letters, as `dead-letters list` shows them.
    #[arg(value_name = "SEQ", value_parser = clap::value_parser!(i64).range(1..))]
    pub seqs: Vec<i64>,
}

#[derive(Args)]
pub struct DeadLetterPurgeArgs {
    #[command(flatten)]
    pub selection: DeadLetterSelectionArgs,
    /// Confirm: purged dead letters are gone for good and will never be delivered.
    #[arg(long)]
    pub yes: bool,
}

#[derive(Args)]
pub struct RetentionArgs {
    /// Settled messages older than this many days lose their payloads and inbox entries; their ids
    /// and the audit log are kept, so a late re-send is still recognised.
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub older_than: u32,
    /// Confirm: purged payloads cannot be recovered.
    #[arg(long)]
    pub yes: bool,
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Re-compute the audit log's hash chain on the node; exit code 4 when it is broken.
    Verify,
    /// Print audit entries as JSON lines, one entry per line, from the start or after --after.
    Export(AuditExportArgs),
}

#[derive(Args)]
pub struct AuditExportArgs {
    /// Export the entries after this seq (the last seq of an earlier export); 0 exports everything.
    #[arg(long, value_name = "SEQ", default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..))]
    pub after: i64,
}

/// How a command ended, beyond success or error: each maps to its own exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    AuditBroken,
    NotReady,
}

impl Outcome {
    fn exit_code(self) -> ExitCode {
        match self {
            Outcome::Done => ExitCode::SUCCESS,
            Outcome::AuditBroken => ExitCode::from(4),
            Outcome::NotReady => ExitCode::from(5),
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<Outcome> {
    let ctx = Ctx {
        node: cli.node,
        admin: cli.admin,
        json: cli.json,
    };
    let done = |r: anyhow::Result<()>| r.map(|()| Outcome::Done);
    match &cli.command {
        Command::Keygen(a) => done(agency::keygen(&ctx, a)),
        Command::Pubkey(a) => done(agency::pubkey(&ctx, a)),
        Command::Send(a) => done(agency::send(&ctx, a)),
        Command::Inbox(a) => done(agency::inbox(&ctx, a)),
        Command::SignFor(a) => done(agency::sign_for(&ctx, a)),
        Command::Status(StatusArgs { message: Some(id) }) => done(agency::status(&ctx, id)),
        Command::Status(StatusArgs { message: None }) => done(ops::node_status(&ctx)),
        Command::Peers => done(ops::peers(&ctx)),
        Command::Queues => done(ops::queues(&ctx)),
        Command::Trace(a) => done(ops::trace(&ctx, &a.message)),
        Command::DeadLetters(DeadLettersCommand::List) => done(ops::dead_letters(&ctx)),
        Command::DeadLetters(DeadLettersCommand::Resend(a)) => {
            done(ops::resend_dead_letters(&ctx, a))
        }
        Command::DeadLetters(DeadLettersCommand::Purge(a)) => {
            done(ops::purge_dead_letters(&ctx, a))
        }
        Command::Retry => done(ops::retry(&ctx)),
        Command::Purge(a) => done(ops::retention_purge(&ctx, a)),
        Command::Audit(AuditCommand::Verify) => ops::audit_verify(&ctx),
        Command::Audit(AuditCommand::Export(a)) => done(ops::audit_export(&ctx, a)),
        Command::Ready => ops::ready(&ctx),
    }
}

/// Exit codes: 0 ok, 1 refused or wrong input (clap's own default for usage errors is 2, which here
/// means "node unreachable", so usage errors are remapped), 2 no usable answer from the node, 4 audit
/// chain broken, 5 node not ready. The long --help lists them for users.
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
        Ok(outcome) => outcome.exit_code(),
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<NoAnswer>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("exchange-admin").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn status_with_and_without_a_message_id() {
        let id = "ab".repeat(32);
        let cli = parse(&["status", &id]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Status(StatusArgs { message: Some(_) })
        ));
        let cli = parse(&["status"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Status(StatusArgs { message: None })
        ));
        assert!(
            parse(&["status", "abababab"]).is_err(),
            "a shortened id is refused"
        );
    }

    #[test]
    fn admin_url_is_global_with_a_loopback_default() {
        let cli =
            Cli::try_parse_from(["exchange-admin", "--admin", "http://10.0.0.1:9080", "peers"])
                .unwrap();
        assert_eq!(cli.admin, "http://10.0.0.1:9080");
        let cli = parse(&["queues", "--admin", "http://h:1", "--json"]).unwrap();
        assert_eq!(cli.admin, "http://h:1");
        assert!(cli.json);
        let default = Cli::command()
            .get_arguments()
            .find(|a| a.get_id() == "admin")
            .map(|a| a.get_default_values().to_vec())
            .unwrap();
        assert_eq!(default, ["http://127.0.0.1:9080"]);
    }

    #[test]
    fn dead_letter_selection_is_all_or_seqs() {
        let cli = parse(&["dead-letters", "resend", "--all"]).unwrap();
        let Command::DeadLetters(DeadLettersCommand::Resend(a)) = cli.command else {
            panic!("resend")
        };
        assert!(a.all && a.seqs.is_empty());
        let cli = parse(&["dead-letters", "purge", "3", "5", "--yes"]).unwrap();
        let Command::DeadLetters(DeadLettersCommand::Purge(a)) = cli.command else {
            panic!("purge")
        };
        assert_eq!(a.selection.seqs, [3, 5]);
        assert!(a.yes);
        assert!(
            parse(&["dead-letters", "resend"]).is_err(),
            "nothing selected"
        );
        assert!(
            parse(&["dead-letters", "resend", "--all", "3"]).is_err(),
            "both --all and seqs"
        );
        assert!(
            parse(&["dead-letters", "resend", "0"]).is_err(),
            "seqs start at 1"
        );
        assert!(parse(&["dead-letters", "resend", "x"]).is_err());
        assert!(
            parse(&["dead-letters", "purge", "--all"]).is_ok(),
            "--yes is checked by the command, with an explanation"
        );
    }

    #[test]
    fn retention_purge_needs_a_positive_age() {
        assert!(parse(&["purge", "--older-than", "30", "--yes"]).is_ok());
        assert!(parse(&["purge", "--older-than", "0", "--yes"]).is_err());
        assert!(parse(&["purge", "--yes"]).is_err());
        assert!(parse(&["purge", "--older-than", "-3"]).is_err());
    }

    #[test]
    fn audit_export_starts_after_a_seq() {
        let cli = parse(&["audit", "export"]).unwrap();
        let Command::Audit(AuditCommand::Export(a)) = cli.command else {
            panic!("export")
        };
        assert_eq!(a.after, 0);
        let cli = parse(&["audit", "export", "--after", "120"]).unwrap();
        let Command::Audit(AuditCommand::Export(a)) = cli.command else {
            panic!("export")
        };
        assert_eq!(a.after, 120);
        assert!(parse(&["audit"]).is_err());
        assert!(parse(&["trace"]).is_err());
    }

    #[test]
    fn long_help_documents_the_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        for line in [
            "0  success",
            "1  the node refused",
            "2  the node could not be reached",
            "4  audit verify",
            "5  ready",
        ] {
            assert!(help.contains(line), "missing {line:?} in:\n{help}");
        }
        assert!(help.contains("EXCHANGE_ADMIN"));
    }
}
