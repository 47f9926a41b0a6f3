//! `exchange-admin`: the command line for agency systems and network operators.
//!
//! This file holds only the command-line definitions and the mapping from outcomes to exit codes; the
//! agency commands live in `agency`, the operator commands in `ops`, the signed directory (nodes and
//! units) in `directory`, unit API tokens in `tokens`, the choice of node API and the meaning of its
//! errors in `endpoint`, formatting in `output`, value parsing in `parse`.

mod agency;
mod args;
mod asking;
mod directory;
mod endpoint;
mod names;
mod node_keys;
mod ops;
mod output;
mod parse;
mod pending;
mod recovery;
mod sharing;
mod tokens;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use agency::MAX_WAIT_SECS;
pub use args::*;
use endpoint::{Ctx, NoAnswer};

const LONG_ABOUT: &str = "\
Command line for agency systems and operators of the exchange network.

Agency commands (keygen, pubkey, send, inbox, overdue, sign-for, return, recall, resend, ask, answer,
status MESSAGE_ID) talk to a node's agency API, given by --node URL or EXCHANGE_NODE (default
http://127.0.0.1:8080). Unit keys never leave this machine: documents, receipts (签收 with sign-for,
退回 with return), recalls (撤回 with recall), re-sends (补发 with resend), queries (ask) and answers
(answer) are signed here and the
node only receives signed envelopes. `inbox --verify` checks each message's signature
here too, against the sender's keys that the node's directory lists.

The node requires a unit token on agency calls: give it with --token TOKEN or EXCHANGE_TOKEN (prefer
the variable: command lines are visible to other users of the machine). An operator of the unit's
node issues it with `exchange-admin tokens issue --unit UNIT`. A token acts for its own unit only: the
node answers 401 (unauthenticated) without a valid token, and 403 (forbidden) when the token's unit is
not the unit acted for (send --from, inbox --unit, overdue --unit, sign-for --unit, return --unit, the
sender for status, recall and resend).

Operator commands (status, peers, queues, trace, dead-letters, retry, purge, audit, ready, backup,
reconcile, directory, nodes, units, tokens) talk to the node's admin API, given by --admin URL or EXCHANGE_ADMIN (default
http://127.0.0.1:9080). The admin API listens on loopback by default (admin.listen): run them on the
node's host, as the node's user, with --admin-token-file PATH or EXCHANGE_ADMIN_TOKEN_FILE naming the
operator token the node wrote at first start (admin.token in its data_dir, mode 0600). The root node alone signs the node tree (nodes add/remove); each node signs its own units
(units add/suspend/activate/revoke/rotate-key) and issues their tokens.

`status` is both: `status MESSAGE_ID` shows where a message is, per recipient (agency API; ask the
sender's node), and `status` alone shows the node itself (admin API).

Output is a table for people; --json prints the node's answer as JSON for scripts (`audit export`
always prints JSON lines). Times are UTC. Message ids and receipt ids are printed on stdout alone,
notes and warnings go to stderr, so `id=$(exchange-admin send ...)` works.

Exit codes:
  0  success; also `trace` when some nodes could not be asked (the trace may then be partial: a
     warning on stderr names them), and `overdue` whether or not anything is overdue
  1  the node refused the request (including a missing or wrong --token or operator token), a command-line value or
     local file is wrong (send: a document field, or a classified document), a destructive command
     was given without --yes, inbox --verify: a message's signature does not verify, or recall and
     resend refused what the node would refuse (checked against the document's status and the
     sender's directory record before signing: nobody left to recall, a recipient already reached,
     a key that is not the sender's)
  2  the node could not be reached or gave no usable answer (is exchange-node running? check --node
     for agency commands, --admin for operator commands)
  3  ask: no answer reached the asking unit's node by the query's deadline (the query timed out);
     reconcile: the reconciliation after a restore is still running
  4  audit verify: the audit chain is broken (the first broken entry is printed); directory
     verify: a directory segment fails verification (each failing segment is printed)
  5  ready: the node answered that it is not ready (each failing check is printed)";

const SEND_ABOUT: &str = "\
Sign a file as an official document (公文) and hand it to the node.

The GB/T 9704 fields given as options (--title, --doc-number, --issuer, --signer, --doc-date,
--doc-type, --handling, --deadline) become envelope metadata: they are signed with the envelope and
every recipient reads them without opening the payload. Other fields go in with --meta KEY=VALUE, such
as --meta classification=内部 (密级). The fields are checked here before anything is signed, as the
node checks them: dates as YYYY-MM-DD, handling as action (办件) or information (阅件), and documents
marked 秘密, 机密 or 绝密 are refused: classified documents do not travel on this network.

Exactly once, also when the answer is lost: the signed document is written to --pending-dir before it
is handed over and removed once the node has answered. Running the same command again (same file,
recipients and fields) while it is there re-sends the very same signed bytes, so the node answers
\"duplicate\" instead of delivering a second document. A document sent again after the node answered
is a new document.

The message id is printed on stdout; follow the message with `exchange-admin status ID`.";

const INBOX_ABOUT: &str = "\
List a unit's inbox: documents and the receipts for documents it sent. STATE is delivered, signed-for
(签收), returned (退回) or recalled (撤回 by the sender before the unit settled it).

With --verify, each message's signature is checked here: the sender's directory record is asked of
the node once per sender (GET /v1/directory/units/...), and the signature must verify against one of
the sender's keys that was valid when the message was created (not before its start, not after its
end or revocation). A VERIFIED column shows yes or NO, each failure is explained on stderr, and the
exit code is 1 when any message fails. With --save, only messages that verified are saved.

The keys come from the node's directory, so --verify catches a message altered after it was signed
or signed with a key that was not the sender's at the time; it trusts the node for the directory
itself (`exchange-admin directory verify` re-checks that on the node).";

const OVERDUE_ABOUT: &str = "\
List a unit's overdue 办件: documents to be handled (handling action) whose deadline (办理时限, a
date in China Standard Time) has passed and that the unit has neither signed for (签收) nor returned
(退回), earliest deadline first. The node picks and orders them (GET /v1/units/{node}/{unit}/overdue).

DAYS OVERDUE counts whole days since the deadline, from today in China Standard Time (UTC+8) on this
machine: 1 the day after the deadline. --json prints the node's answer as it is.

The exit code is 0 whether or not anything is overdue; when nothing is, \"nothing overdue\" is
printed on stderr and the table is left out (with --json, the answer has no items). Exit codes 1 and
2 mean as for every agency command: refused (such as a token of another unit), or no usable answer.";

const RECALL_ABOUT: &str = "\
Recall (撤回) a document you sent from recipients who have not settled it yet.

The document's status is asked of the sender's node (--node, with the sender's --token, as for
`status MESSAGE_ID`). The recall goes to every recipient whose state is still open (accepted,
in-transit or delivered), or with --to to the recipients named, each of which must be an open
recipient of the document itself. Recipients that signed for it (签收), returned it (退回), were
already recalled, or that a node refused it for good are left out: nothing is left to withdraw there.
Recipients reached by a 补发 got another message: recall that one by its own id.

The recall names the document and the reason (--reason, required) and is signed here with the unit
key (--key), which is first checked against the sender's keys in the directory (GET
/v1/directory/units/...). The recall id is printed on stdout.

Each recipient's home node decides in order with any 签收 or 退回 it received, and reports back:
`exchange-admin status MESSAGE_ID` then shows each recipient as recalled, or as signed-for or returned
when the recipient settled it first. Both sides always agree on which happened.

Exit code 1 when the node refuses the recall or it is refused here (no recipient left to recall, a
--to unit that is not an open recipient, an empty reason, a key that is not the sender's); 2 when the
node gives no usable answer.";

const RESEND_ABOUT: &str = "\
Re-send (补发) a document you sent to recipients it missed, with the same body.

The 补发 is a document of its own, signed here with the sender's key, whose metadata resend.of names
the original. Its fields are given as for `send` (--title, --doc-number, ..., --meta; they are not
copied from the original, which the node does not hand back), and FILE must be the original's body,
byte for byte: the node compares the payload digest and refuses a different body. The sender is the
original's, read from its status (no --from): the status is asked of the sender's node (--node, with
the sender's --token), and --to/--cc recipients it already lists are refused here, as the node would.
The key is checked against the sender's keys in the directory before anything is signed.

The new message's id is printed on stdout. `exchange-admin status MESSAGE_ID` of the original lists
the 补发's recipients too, each with the detail \"补发 as message ID\"; `status` of the new id follows
the 补发 alone. To withdraw a 补发, recall it by its own id.

Exit codes as for `send`: 1 refused (here or by the node), 2 no usable answer.";

const RETURN_ABOUT: &str = "\
Return (退回) a document in a unit's inbox to its sender, with a reason, instead of signing for it.

The message is looked up in the unit's inbox by its id or a unique prefix of it (as `inbox` shows
it). A 退回 receipt naming the reason is signed here with the unit's key and handed to the node,
which sends it back to the sender's node: there `status MESSAGE_ID` shows the recipient as returned,
with the reason as its detail and the signed receipt. A document is settled once: one already signed
for or returned is refused (the node answers 409 conflict). The receipt id is printed on stdout.";

const ASK_ABOUT: &str = "\
Ask an authoritative unit a question (查询核验), such as whether a person is alive or a company
registered, and wait for the answer. The query is signed with the asking unit's key and carried hop by
hop to the asked unit, which answers from its inbox (`answer`) with an answer signed by its own key. The
answer's signature is verified here against the answering unit's keys from the directory before it is
printed. If no answer reaches the asking unit's node by the deadline (--within seconds from now), the
node records the query as timed out and this command says so with exit code 3: never silence.";

const DATA_ABOUT: &str = "\
Base-data sharing (数据共享交换). Each topic of the catalog (`exchange-admin catalog show`) has one owner
unit, the only one that may publish it (一数一源), a JSON Schema every record must match, and a sharing
condition: open (granted at once), approval (the owner or an operator of its node decides), not-shared
(refused).

As the owner: `data publish` signs a JSON record with the unit key (--key) and hands it to the owner's
node, which checks it, numbers it within its topic and sends it to every subscriber; `data subscribers`
lists requests, `data grant` and `data refuse --reason` decide them (--operator: through the admin API).

As a subscriber: `data subscribe --from beginning|now|seq:N|time:MS` sends a request signed with the
unit key; `data subscriptions` shows its state; `data records` reads records in sequence order, from
the durable cursor or --after N to replay; `data ack --seq N` moves the cursor. A record whose
predecessor has not arrived yet is held back, never skipped.";

const BACKUP_ABOUT: &str = "\
Back the running node up while it keeps working (POST /admin/v1/backup). The node writes, into DIR on
its own host (new or empty; a relative DIR is taken from the current folder): node.db, a consistent
copy of its database taken in one read transaction (SQLite VACUUM INTO) while commits go on;
attachments/, the complete attachment files, hard-linked when DIR is on the node's file system
(complete attachments never change) and copied otherwise; and manifest.json, written last, with the
node id, the time the copy began, the database's SHA-256 and its high-water marks. Files are private
(0600) and fsynced. Restore it on the stopped node with `exchange-node restore --config C --from DIR`.";

const RECONCILE_ABOUT: &str = "\
After `exchange-node restore`, the node asks its parent and children, at its next start, which messages
they exchanged with it since the backup. What they had handed to it and it lost is queued again there
and carried again (recovered); what it had handed on before the loss is listed as passed on; what the
restored database holds is only counted (held). The report lists every message the node had
acknowledged after the backup that a neighbour knows of, and says what no neighbour can know:
documents its own units submitted after the backup that it had not passed on.

--wait SECS waits for every neighbour to answer (a neighbour that is down is asked again until it
does); exit code 3 if the reconciliation is still running.";

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

    /// The unit's API token for agency commands (send, inbox, overdue, sign-for, return, recall,
    /// resend, status MESSAGE_ID).
    ///
    /// Issued on the unit's node with `exchange-admin tokens issue --unit UNIT`. The node answers 401
    /// without a valid token and 403 when the token is of another unit than the one acted for. Prefer
    /// EXCHANGE_TOKEN to --token: command lines are visible to other users of the machine.
    #[arg(
        long,
        global = true,
        env = "EXCHANGE_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        help_heading = "Global options"
    )]
    token: Option<String>,

    /// File holding the node's operator token, for operator commands (admin API).
    ///
    /// The node writes it with mode 0600 at first start to admin.token in its data_dir (admin.token_file
    /// in its configuration); only its user can read it. Without it the admin API answers 401.
    #[arg(long, global = true, env = "EXCHANGE_ADMIN_TOKEN_FILE", value_name = "PATH", help_heading = "Global options")]
    admin_token_file: Option<std::path::PathBuf>,
    /// PEM file of the certificate authority (or the self-signed certificate) to trust for
    /// `https://` node addresses (`--node`, `--admin`). Without it, https addresses are checked
    /// against the public web roots.
    #[arg(long, global = true, env = "EXCHANGE_CA_FILE", value_name = "FILE", help_heading = "Global options")]
    ca_file: Option<std::path::PathBuf>,

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
    /// Sign a file as an official document (公文) and hand it to the node.
    #[command(long_about = SEND_ABOUT)]
    Send(SendArgs),
    /// List a unit's inbox, optionally waiting for new messages, verifying signatures, saving payloads.
    #[command(long_about = INBOX_ABOUT)]
    Inbox(InboxArgs),
    /// A unit's overdue 办件: past their deadline, not signed for nor returned, earliest first.
    #[command(long_about = OVERDUE_ABOUT)]
    Overdue(OverdueArgs),
    /// Sign for (签收) a document in a unit's inbox with a receipt signed by the unit's key.
    SignFor(SignForArgs),
    /// Return (退回) a document in a unit's inbox to its sender, with a signed reason.
    #[command(long_about = RETURN_ABOUT)]
    Return(ReturnArgs),
    /// Recall (撤回) a document you sent from recipients who have not settled it, with a reason.
    #[command(long_about = RECALL_ABOUT)]
    Recall(RecallArgs),
    /// Re-send (补发) a document you sent, same body, to recipients it missed.
    #[command(long_about = RESEND_ABOUT)]
    Resend(ResendArgs),
    /// Ask an authoritative unit a question (查询核验) and wait for its signed answer or the deadline.
    #[command(long_about = ASK_ABOUT)]
    Ask(AskArgs),
    /// Answer a query in a unit's inbox, signed with the unit's key.
    Answer(AnswerArgs),
    /// With MESSAGE_ID: a message's status per recipient; without: the node's own status.
    #[command(
        long_about = "With MESSAGE_ID: where a message is, per recipient, and the hops it took. This asks the agency \
API (--node) of the sender's node. STATE per recipient is accepted, in-transit, delivered, signed-for (签收), \
returned (退回), recalled (撤回) or failed. A DETAIL column appears when any recipient has one: a return's reason, \
why a node refused it for good, or \"补发 as message ID\" for recipients reached by a 补发 (`resend`).\n\n\
Without MESSAGE_ID: the node's own status from its admin API (--admin): its name and tier, parent and children, \
directory version, uptime and build."
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
    /// Back the running node up into a folder on its host: database, attachments, manifest.
    #[command(long_about = BACKUP_ABOUT)]
    Backup(recovery::BackupArgs),
    /// The reconciliation with the neighbours after a restore: what the node had acknowledged after
    /// the backup; exit code 3 while it is still running.
    #[command(long_about = RECONCILE_ABOUT)]
    Reconcile(recovery::ReconcileArgs),
    /// The signed directory this node routes by: its segments, or their verification.
    #[command(subcommand)]
    Directory(DirectoryCommand),
    /// The node tree: list nodes, or add and remove them (on the root node, which signs the tree).
    #[command(subcommand)]
    Nodes(NodesCommand),
    /// The units of the directory: list, show, add, suspend, activate, revoke, rotate keys.
    #[command(subcommand)]
    Units(UnitsCommand),
    /// Unit API tokens, with which agency systems authenticate: issue, list, revoke.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// The data-sharing catalog (目录): show it, or publish a new version on the root node.
    #[command(subcommand)]
    Catalog(sharing::CatalogCommand),
    /// Base-data sharing (数据共享): publish records, subscribe, decide requests, read and acknowledge.
    #[command(subcommand, long_about = DATA_ABOUT)]
    Data(sharing::DataCommand),
}

/// How a command ended, beyond success or error: each maps to its own exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// `ask`: no answer by the deadline.
    TimedOut,
    AuditBroken,
    DirectoryBroken,
    NotReady,
}

impl Outcome {
    fn exit_code(self) -> ExitCode {
        match self {
            Outcome::Done => ExitCode::SUCCESS,
            Outcome::TimedOut => ExitCode::from(3),
            Outcome::AuditBroken | Outcome::DirectoryBroken => ExitCode::from(4),
            Outcome::NotReady => ExitCode::from(5),
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<Outcome> {
    let ctx = Ctx {
        node: cli.node,
        admin: cli.admin,
        token: cli.token,
        admin_token_file: cli.admin_token_file,
        ca_file: cli.ca_file,
        json: cli.json,
    };
    let done = |r: anyhow::Result<()>| r.map(|()| Outcome::Done);
    match &cli.command {
        Command::Keygen(a) => done(agency::keygen(&ctx, a)),
        Command::Pubkey(a) => done(agency::pubkey(&ctx, a)),
        Command::Send(a) => done(agency::send(&ctx, a)),
        Command::Inbox(a) => done(agency::inbox(&ctx, a)),
        Command::Overdue(a) => done(agency::overdue(&ctx, a)),
        Command::SignFor(a) => done(agency::sign_for(&ctx, a)),
        Command::Ask(a) => asking::ask(&ctx, a),
        Command::Answer(a) => done(asking::answer(&ctx, a)),
        Command::Return(a) => done(agency::return_message(&ctx, a)),
        Command::Recall(a) => done(agency::recall(&ctx, a)),
        Command::Resend(a) => done(agency::resend(&ctx, a)),
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
        Command::Backup(a) => done(recovery::backup(&ctx, a)),
        Command::Reconcile(a) => recovery::reconcile(&ctx, a),
        Command::Directory(DirectoryCommand::Show) => done(directory::show(&ctx)),
        Command::Directory(DirectoryCommand::Verify) => directory::verify(&ctx),
        Command::Nodes(NodesCommand::List) => done(directory::nodes_list(&ctx)),
        Command::Nodes(NodesCommand::Add(a)) => done(directory::nodes_add(&ctx, a)),
        Command::Nodes(NodesCommand::Remove(a)) => done(directory::nodes_remove(&ctx, a)),
        Command::Nodes(NodesCommand::RotateKey(a)) => done(node_keys::nodes_rotate_key(&ctx, a)),
        Command::Directory(DirectoryCommand::HandOverRoot(a)) => done(node_keys::hand_over_root(&ctx, a)),
        Command::Directory(DirectoryCommand::TakeKey) => done(node_keys::take_key(&ctx)),
        Command::Units(UnitsCommand::List(a)) => done(directory::units_list(&ctx, a)),
        Command::Units(UnitsCommand::Show(a)) => done(directory::units_show(&ctx, &a.address)),
        Command::Units(UnitsCommand::Add(a)) => done(directory::units_add(&ctx, a)),
        Command::Units(UnitsCommand::Suspend(a)) => {
            done(directory::units_suspend(&ctx, &a.address))
        }
        Command::Units(UnitsCommand::Activate(a)) => {
            done(directory::units_activate(&ctx, &a.address))
        }
        Command::Units(UnitsCommand::Revoke(a)) => done(directory::units_revoke(&ctx, a)),
        Command::Units(UnitsCommand::RotateKey(a)) => done(directory::units_rotate_key(&ctx, a)),
        Command::Tokens(TokensCommand::Issue(a)) => done(tokens::issue(&ctx, a)),
        Command::Tokens(TokensCommand::List(a)) => done(tokens::list(&ctx, a)),
        Command::Tokens(TokensCommand::Revoke(a)) => done(tokens::revoke(&ctx, a)),
        Command::Catalog(c) => done(sharing::catalog(&ctx, c)),
        Command::Data(c) => done(sharing::data(&ctx, c)),
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
    use exchange_wire::Priority;
    use std::path::PathBuf;

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

    #[test]
    fn token_is_global_and_hidden_from_help() {
        let cli = parse(&["inbox", "--unit", "gz/a", "--token", "t0k"]).unwrap();
        assert_eq!(cli.token.as_deref(), Some("t0k"));
        let cli = parse(&["--token", "t0k", "units", "list"]).unwrap();
        assert_eq!(cli.token.as_deref(), Some("t0k"));
        let arg = Cli::command()
            .get_arguments()
            .find(|a| a.get_id() == "token")
            .cloned()
            .unwrap();
        assert_eq!(arg.get_env(), Some(std::ffi::OsStr::new("EXCHANGE_TOKEN")));
        assert!(
            arg.is_hide_env_values_set(),
            "the token must not be printed by --help"
        );
        let help = Cli::command().render_long_help().to_string();
        assert!(
            help.contains("exchange-admin tokens issue --unit UNIT"),
            "{help}"
        );
        assert!(help.contains("401") && help.contains("403"), "{help}");
    }

    #[test]
    fn directory_and_nodes_verbs() {
        assert!(matches!(
            parse(&["directory", "show"]).unwrap().command,
            Command::Directory(DirectoryCommand::Show)
        ));
        assert!(matches!(
            parse(&["directory", "verify", "--json"]).unwrap().command,
            Command::Directory(DirectoryCommand::Verify)
        ));
        assert!(parse(&["directory"]).is_err());
        let key =
            exchange_wire::PublicKey(exchange_wire::keys::generate().verifying_key()).to_hex();
        let cli = parse(&[
            "nodes",
            "add",
            "--id",
            "gz.baiyun",
            "--parent",
            "gz",
            "--tier",
            "district",
            "--name",
            "白云区交换平台",
            "--public-key",
            &key,
            "--address",
            "/ip4/198.51.100.13/tcp/7403",
            "--address",
            "/dns4/baiyun.example/tcp/7403",
        ])
        .unwrap();
        let Command::Nodes(NodesCommand::Add(a)) = cli.command else {
            panic!("nodes add")
        };
        assert_eq!(a.addresses.len(), 2);
        assert_eq!(a.public_key.to_hex(), key);
        let without = |flag: &str| {
            let mut args = vec![
                "nodes",
                "add",
                "--id",
                "gz.baiyun",
                "--parent",
                "gz",
                "--tier",
                "district",
                "--name",
                "白云",
                "--public-key",
                &key,
            ];
            let at = args.iter().position(|a| *a == flag).unwrap();
            args.drain(at..at + 2);
            parse(&args)
        };
        for flag in ["--id", "--parent", "--tier", "--name", "--public-key"] {
            assert!(without(flag).is_err(), "{flag} is required");
        }
        assert!(
            parse(&[
                "nodes",
                "add",
                "--id",
                "gz.baiyun",
                "--parent",
                "gz",
                "--tier",
                "District",
                "--name",
                "x",
                "--public-key",
                &key
            ])
            .is_err()
        );
        assert!(
            parse(&[
                "nodes",
                "add",
                "--id",
                "gz.baiyun",
                "--parent",
                "gz",
                "--tier",
                "district",
                "--name",
                "x",
                "--public-key",
                "abcd"
            ])
            .is_err()
        );
        let cli = parse(&["nodes", "remove", "gz.baiyun", "--yes"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Nodes(NodesCommand::Remove(NodeRemoveArgs { yes: true, .. }))
        ));
        assert!(parse(&["nodes", "remove", "GZ"]).is_err());
    }

    #[test]
    fn units_verbs_take_one_key_source() {
        let key =
            exchange_wire::PublicKey(exchange_wire::keys::generate().verifying_key()).to_hex();
        let base = [
            "units",
            "add",
            "--address",
            "gz.yuexiu/liurong-street",
            "--name",
            "越秀区六榕街道办事处",
            "--kind",
            "street-office",
        ];
        let with = |extra: &[&str]| {
            parse(
                &base
                    .iter()
                    .copied()
                    .chain(extra.iter().copied())
                    .collect::<Vec<_>>(),
            )
        };
        let cli = with(&["--public-key", &key, "--uscc", "9144030071526726xg"]).unwrap();
        let Command::Units(UnitsCommand::Add(a)) = cli.command else {
            panic!("units add")
        };
        assert_eq!(a.uscc.as_deref(), Some("9144030071526726XG"));
        assert!(a.key.public_key.is_some() && a.key.key_file.is_none());
        assert!(with(&["--key-file", "unit.key"]).is_ok());
        assert!(with(&[]).is_err(), "a key is required");
        assert!(
            with(&["--public-key", &key, "--key-file", "unit.key"]).is_err(),
            "only one key source"
        );
        assert!(
            with(&["--public-key", &key, "--uscc", "9144030071526726XA"]).is_err(),
            "bad check character"
        );

        let cli = parse(&["units", "list", "gz.haizhu"]).unwrap();
        let Command::Units(UnitsCommand::List(a)) = cli.command else {
            panic!("units list")
        };
        assert_eq!(a.node_id.unwrap().as_str(), "gz.haizhu");
        let cli = parse(&["units", "list", "--node", "http://h:8080"]).unwrap();
        assert_eq!(
            cli.node, "http://h:8080",
            "--node stays the global agency address"
        );
        for verb in ["show", "suspend", "activate", "revoke"] {
            assert!(
                parse(&["units", verb, "gz/civil-affairs"]).is_ok(),
                "{verb}"
            );
            assert!(parse(&["units", verb, "civil-affairs"]).is_err(), "{verb}");
        }

        let rotate = |extra: &[&str]| {
            parse(
                &["units", "rotate-key", "gz/civil-affairs"]
                    .iter()
                    .copied()
                    .chain(extra.iter().copied())
                    .collect::<Vec<_>>(),
            )
        };
        let cli = rotate(&["--key-file", "new.key", "--overlap-secs", "3600"]).unwrap();
        let Command::Units(UnitsCommand::RotateKey(a)) = cli.command else {
            panic!("rotate-key")
        };
        assert_eq!((a.overlap_secs, a.revoke_old), (Some(3600), false));
        assert!(rotate(&["--public-key", &key, "--revoke-old"]).is_ok());
        assert!(rotate(&["--public-key", &key, "--revoke-old", "--overlap-secs", "60"]).is_err());
        assert!(
            rotate(&["--overlap-secs", "60"]).is_err(),
            "a new key is required"
        );
    }

    #[test]
    fn tokens_verbs() {
        let cli = parse(&[
            "tokens",
            "issue",
            "--unit",
            "gz/civil-affairs",
            "--label",
            "民政业务系统",
        ])
        .unwrap();
        let Command::Tokens(TokensCommand::Issue(a)) = cli.command else {
            panic!("tokens issue")
        };
        assert_eq!(a.unit.as_str(), "gz/civil-affairs");
        assert_eq!(a.label.as_deref(), Some("民政业务系统"));
        assert!(parse(&["tokens", "issue"]).is_err());
        let cli = parse(&["tokens", "list", "--unit", "gz/civil-affairs"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Tokens(TokensCommand::List(TokensListArgs { unit: Some(_) }))
        ));
        let cli = parse(&["tokens", "revoke", "0123456789ABCDEF"]).unwrap();
        let Command::Tokens(TokensCommand::Revoke(a)) = cli.command else {
            panic!("tokens revoke")
        };
        assert_eq!(a.id, "0123456789abcdef");
        assert!(parse(&["tokens", "revoke", "../nodes"]).is_err());
    }

    #[test]
    fn return_needs_a_reason() {
        let id = "ab".repeat(32);
        let cli = parse(&[
            "return",
            "--key",
            "unit.key",
            "--unit",
            "gz.haizhu/civil-affairs",
            "--reason",
            " 发文字号有误 ",
            "abababab",
        ])
        .unwrap();
        let Command::Return(a) = cli.command else {
            panic!("return")
        };
        assert_eq!(a.reason, "发文字号有误");
        assert_eq!(a.unit.as_str(), "gz.haizhu/civil-affairs");
        assert!(matches!(a.message, parse::IdPattern::Prefix(_)));
        let base = ["return", "--key", "k", "--unit", "gz/a"];
        let with = |extra: &[&str]| {
            parse(
                &base
                    .iter()
                    .copied()
                    .chain(extra.iter().copied())
                    .collect::<Vec<_>>(),
            )
        };
        assert!(with(&[&id]).is_err(), "--reason is required");
        let e = with(&["--reason", "  ", &id]).err().unwrap().to_string();
        assert!(e.contains("empty"), "{e}");
        assert!(
            with(&["--reason", "x", "abab"]).is_err(),
            "prefix too short"
        );
        assert!(with(&["--reason", "x", &id]).is_ok());
    }

    #[test]
    fn send_takes_the_document_fields() {
        let base = [
            "send",
            "--key",
            "k",
            "--from",
            "gz.yuexiu/liurong-street",
            "--to",
            "gz/civil-affairs",
        ];
        let with = |extra: &[&str]| {
            parse(
                &base
                    .iter()
                    .copied()
                    .chain(extra.iter().copied())
                    .chain(["doc.pdf"])
                    .collect::<Vec<_>>(),
            )
        };
        let cli = with(&[
            "--issuer",
            "越秀区六榕街道办事处",
            "--signer",
            "张三",
            "--doc-date",
            "2025-05-20",
            "--doc-type",
            "通知",
            "--handling",
            "办件",
            "--deadline",
            "2025-06-01",
        ])
        .unwrap();
        let Command::Send(a) = cli.command else {
            panic!("send")
        };
        assert_eq!(a.doc.handling, Some(parse::Handling::Action));
        assert_eq!(a.doc.doc_date.as_deref(), Some("2025-05-20"));
        assert_eq!(a.doc.deadline.as_deref(), Some("2025-06-01"));
        assert_eq!(a.doc.doc_type.as_deref(), Some("通知"));
        let Command::Send(a) = with(&["--handling", "阅件"]).unwrap().command else {
            panic!("send")
        };
        assert_eq!(a.doc.handling, Some(parse::Handling::Information));
        assert!(with(&["--handling", "urgent"]).is_err());
        assert!(with(&["--doc-date", "2025/05/20"]).is_err());
        assert!(with(&["--deadline", "2025-02-30"]).is_err());
    }

    #[test]
    fn inbox_verify_flag() {
        let cli = parse(&["inbox", "--unit", "gz/a", "--verify"]).unwrap();
        let Command::Inbox(a) = cli.command else {
            panic!("inbox")
        };
        assert!(a.verify);
        let Command::Inbox(a) = parse(&["inbox", "--unit", "gz/a"]).unwrap().command else {
            panic!("inbox")
        };
        assert!(!a.verify);
    }

    #[test]
    fn help_describes_return_and_verify() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("return --unit"), "{help}");
        assert!(help.contains("inbox --verify"), "{help}");
        let mut cmd = Cli::command();
        let ret = cmd.find_subcommand_mut("return").unwrap();
        let text = ret.render_long_help().to_string();
        assert!(text.contains("退回") && text.contains("--reason"), "{text}");
    }

    #[test]
    fn overdue_takes_a_unit() {
        let cli = parse(&["overdue", "--unit", "gz.haizhu/civil-affairs", "--json"]).unwrap();
        assert!(cli.json);
        let Command::Overdue(a) = cli.command else {
            panic!("overdue")
        };
        assert_eq!(a.unit.as_str(), "gz.haizhu/civil-affairs");
        assert!(parse(&["overdue"]).is_err(), "--unit is required");
        assert!(parse(&["overdue", "--unit", "civil-affairs"]).is_err());
        let cli = parse(&[
            "--node",
            "http://h:8082",
            "--token",
            "t0k",
            "overdue",
            "--unit",
            "gz/a",
        ])
        .unwrap();
        assert_eq!(
            (cli.node.as_str(), cli.token.as_deref()),
            ("http://h:8082", Some("t0k"))
        );
        let mut cmd = Cli::command();
        let text = cmd
            .find_subcommand_mut("overdue")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(text.contains("China Standard Time"), "{text}");
        assert!(text.contains("exit code is 0 whether or not"), "{text}");
        assert!(text.contains("nothing overdue"), "{text}");
        let help = Cli::command().render_long_help().to_string();
        assert!(
            help.contains("`overdue` whether or not anything is overdue"),
            "{help}"
        );
    }

    #[test]
    fn recall_takes_a_reason_and_a_full_id() {
        let id = "ab".repeat(32);
        let cli = parse(&[
            "recall",
            "--key",
            "liurong.key",
            "--reason",
            " 发文字号有误，重新印发 ",
            &id,
        ])
        .unwrap();
        let Command::Recall(a) = cli.command else {
            panic!("recall")
        };
        assert_eq!(a.reason, "发文字号有误，重新印发");
        assert_eq!(a.message.to_hex(), id);
        assert!(a.to.is_empty(), "default: every open recipient");
        assert_eq!(a.priority, Priority::Urgent);
        let cli = parse(&[
            "recall",
            "--key",
            "k",
            "--reason",
            "x",
            "--to",
            "gz/a,gz/b",
            "--to",
            "gz/c",
            "--priority",
            "平件",
            &id,
        ])
        .unwrap();
        let Command::Recall(a) = cli.command else {
            panic!("recall")
        };
        assert_eq!(a.to.len(), 2);
        assert_eq!(a.priority, Priority::Routine);
        let e = parse(&["recall", "--key", "k", "--reason", " ", &id])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("empty") && e.contains("撤回"), "{e}");
        assert!(
            parse(&["recall", "--key", "k", &id]).is_err(),
            "--reason is required"
        );
        assert!(
            parse(&["recall", "--reason", "x", &id]).is_err(),
            "--key is required"
        );
        assert!(
            parse(&["recall", "--key", "k", "--reason", "x", "abababab"]).is_err(),
            "a shortened id is refused"
        );
    }

    #[test]
    fn resend_takes_the_original_id_then_the_file() {
        let id = "ab".repeat(32);
        let cli = parse(&[
            "resend",
            "--key",
            "liurong.key",
            "--to",
            "gz/planning",
            "--cc",
            "gz/finance",
            "--title",
            "关于做好防汛工作的通知",
            "--priority",
            "加急",
            &id,
            "notice.pdf",
        ])
        .unwrap();
        let Command::Resend(a) = cli.command else {
            panic!("resend")
        };
        assert_eq!(a.message.to_hex(), id);
        assert_eq!(a.file, PathBuf::from("notice.pdf"));
        assert_eq!((a.to.len(), a.cc.len()), (1, 1));
        assert_eq!(a.doc.priority, Priority::Express);
        assert_eq!(a.doc.title.as_deref(), Some("关于做好防汛工作的通知"));
        let base = ["resend", "--key", "k", "--to", "gz/a"];
        let with = |extra: &[&str]| {
            parse(
                &base
                    .iter()
                    .copied()
                    .chain(extra.iter().copied())
                    .collect::<Vec<_>>(),
            )
        };
        assert!(with(&[&id]).is_err(), "FILE is required");
        assert!(
            with(&["notice.pdf", &id]).is_err(),
            "MESSAGE_ID comes first"
        );
        assert!(
            with(&["--from", "gz/b", &id, "f"]).is_err(),
            "the sender is the original's"
        );
        assert!(with(&["--deadline", "2025-02-30", &id, "f"]).is_err());
        assert!(
            parse(&["resend", "--key", "k", &id, "f"]).is_err(),
            "--to is required"
        );
    }

    #[test]
    fn help_describes_recall_and_resend() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("recalls (撤回 with recall)"), "{help}");
        assert!(help.contains("re-sends (补发 with resend)"), "{help}");
        assert!(help.contains("nobody left to recall"), "{help}");
        let mut cmd = Cli::command();
        let text = cmd
            .find_subcommand_mut("recall")
            .unwrap()
            .render_long_help()
            .to_string();
        for s in [
            "撤回",
            "--reason",
            "recalled",
            "signed-for or returned",
            "status MESSAGE_ID",
            "Exit code 1",
        ] {
            assert!(text.contains(s), "missing {s:?} in:\n{text}");
        }
        let text = cmd
            .find_subcommand_mut("resend")
            .unwrap()
            .render_long_help()
            .to_string();
        for s in [
            "补发",
            "resend.of",
            "byte for byte",
            "补发 as message ID",
            "<MESSAGE_ID> <FILE>",
        ] {
            assert!(text.contains(s), "missing {s:?} in:\n{text}");
        }
        let text = cmd
            .find_subcommand_mut("status")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(
            text.contains("recalled (撤回)") && text.contains("DETAIL"),
            "{text}"
        );
    }

    #[test]
    fn broken_directory_exits_4() {
        assert_eq!(Outcome::DirectoryBroken.exit_code(), ExitCode::from(4));
    }
}
