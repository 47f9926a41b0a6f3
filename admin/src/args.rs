//! The arguments of each subcommand (clap `Args` and `Subcommand` types), apart from `main.rs`,
//! which holds the command tree itself and the dispatch.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use exchange_wire::{MessageId, NodeId, Priority, PublicKey, UnitAddress};

use crate::{MAX_WAIT_SECS, parse, pending};

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
    #[command(flatten)]
    pub doc: DocumentFields,
    /// Where the signed document is kept until the node answers (default
    /// $XDG_STATE_HOME/exchange-admin/pending or ~/.local/state/exchange-admin/pending).
    #[arg(long, value_name = "DIR", env = pending::PENDING_DIR_ENV)]
    pub pending_dir: Option<PathBuf>,
    /// The file to send as the payload; its base name is recorded as file-name.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// The urgency and GB/T 9704 fields of a document, as `send` and `resend` take them.
#[derive(Args)]
pub struct DocumentFields {
    /// Urgency: urgent (特急), express (加急) or routine (平件).
    #[arg(long, value_name = "LEVEL", default_value = "routine", value_parser = parse::priority)]
    pub priority: Priority,
    /// The document title (标题).
    #[arg(long, value_name = "T")]
    pub title: Option<String>,
    /// The document number (发文字号), such as 越府〔2025〕12号.
    #[arg(long, value_name = "NUMBER")]
    pub doc_number: Option<String>,
    /// The issuing organ as printed (发文机关署名), such as 越秀区六榕街道办事处.
    #[arg(long, value_name = "NAME")]
    pub issuer: Option<String>,
    /// Who signed the document off (签发人).
    #[arg(long, value_name = "NAME")]
    pub signer: Option<String>,
    /// The date of the document (成文日期), YYYY-MM-DD.
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse::date)]
    pub doc_date: Option<String>,
    /// The kind of document (文种): 通知, 通报, 请示, 批复, 函, 意见, 决定, 报告, 纪要, ...
    #[arg(long, value_name = "TYPE")]
    pub doc_type: Option<String>,
    /// action (办件: to be handled) or information (阅件: to be read).
    #[arg(long, value_name = "action|information", value_parser = parse::handling)]
    pub handling: Option<parse::Handling>,
    /// The date by which recipients are to have handled it (办理时限), YYYY-MM-DD.
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse::date)]
    pub deadline: Option<String>,
    /// Further metadata as key=value, such as classification=内部 (密级); may be repeated.
    #[arg(long, value_name = "KEY=VALUE")]
    pub meta: Vec<String>,
    /// A file to attach (附件), such as a scan of any size: uploaded in chunks, resumed after an
    /// interruption, its SHA-256 signed with the document; may be repeated.
    #[arg(long, value_name = "FILE")]
    pub attach: Vec<PathBuf>,
}

#[derive(Args)]
pub struct RecallArgs {
    /// The sending unit's key file: the document's sender signs the recall.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Recall from these recipients only, comma-separated; may be repeated. Default: every recipient
    /// that has not yet settled the document.
    #[arg(long, value_name = "UNIT[,UNIT...]")]
    pub to: Vec<String>,
    /// Why the document is withdrawn (撤回理由); required, signed into the recall.
    #[arg(long, value_name = "TEXT", value_parser = parse::recall_reason)]
    pub reason: String,
    /// Urgency of the recall: urgent (特急, the default, so it overtakes queued documents), express
    /// (加急) or routine (平件).
    #[arg(long, value_name = "LEVEL", default_value = "urgent", value_parser = parse::priority)]
    pub priority: Priority,
    /// The document's id (64 hex characters), as `send` printed it.
    #[arg(value_name = "MESSAGE_ID", value_parser = parse::full_id)]
    pub message: MessageId,
}

#[derive(Args)]
pub struct ResendArgs {
    /// The sending unit's key file: the original document's sender signs the 补发.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Main recipients (主送) the document missed, comma-separated; may be repeated.
    #[arg(long, value_name = "UNIT[,UNIT...]", required = true)]
    pub to: Vec<String>,
    /// Copy recipients (抄送) the document missed, comma-separated; may be repeated.
    #[arg(long, value_name = "UNIT[,UNIT...]")]
    pub cc: Vec<String>,
    #[command(flatten)]
    pub doc: DocumentFields,
    /// The original document's id (64 hex characters), as `send` printed it.
    #[arg(value_name = "MESSAGE_ID", value_parser = parse::full_id)]
    pub message: MessageId,
    /// The original document's file: the same body, byte for byte (the node compares its digest).
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
    /// Verify each message's signature here against the sender's keys valid when it was created
    /// (asked of the node's directory): a VERIFIED column, exit code 1 if any fails.
    #[arg(long)]
    pub verify: bool,
}

#[derive(Args)]
pub struct OverdueArgs {
    /// The unit whose overdue 办件 to list.
    #[arg(long, value_name = "UNIT")]
    pub unit: UnitAddress,
}

#[derive(Args)]
pub struct AskArgs {
    /// The asking unit's key file.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// The asking unit.
    #[arg(long, value_name = "UNIT")]
    pub from: UnitAddress,
    /// The authoritative unit asked.
    #[arg(long, value_name = "UNIT")]
    pub to: UnitAddress,
    /// What is asked, such as person.alive or legal-person.registered.
    #[arg(long, value_name = "TOPIC")]
    pub topic: String,
    /// Seconds from now until the deadline (at most the node's limits.max_query_secs).
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub within: u64,
    /// The question, such as '{"id_number":"440104198001011234"}', or @FILE for a file's contents.
    #[arg(value_name = "QUESTION")]
    pub question: String,
}

#[derive(Args)]
pub struct AnswerArgs {
    /// The answering unit's key file.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// The unit asked (the query is in its inbox).
    #[arg(long, value_name = "UNIT")]
    pub unit: UnitAddress,
    /// The query's id, or at least its first 8 hex characters.
    #[arg(value_name = "QUERY_ID")]
    pub query: parse::IdPattern,
    /// The answer, such as '{"alive":false,"death_date":"2026-11-20"}', or @FILE for a file's contents.
    #[arg(value_name = "ANSWER")]
    pub answer: String,
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
pub struct ReturnArgs {
    /// The returning unit's key file.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// The unit returning the message (a recipient).
    #[arg(long, value_name = "UNIT")]
    pub unit: UnitAddress,
    /// Why the document is returned (退回理由), for the sender; required.
    #[arg(long, value_name = "TEXT", value_parser = parse::reason)]
    pub reason: String,
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

#[derive(Subcommand)]
pub enum DirectoryCommand {
    /// The directory version, the pinned root key and each signed segment: owner, version, signer.
    Show,
    /// Re-verify every stored segment against the root key on the node; exit code 4 when one fails.
    Verify,
    /// Hand the root key over (on the root node) to the key staged in its `<key_file>.next`: the old
    /// root key signs the handover, every node pins the new key.
    HandOverRoot(HandOverRootArgs),
    /// Make this node take the key staged in its `<key_file>.next` now, before the tree lists it: for
    /// a node whose old key the root revoked, which no neighbour admits any more.
    TakeKey,
}

#[derive(Args)]
pub struct HandOverRootArgs {
    /// The new root key (64 hex characters), as `exchange-node keygen` printed it for the staged file.
    #[arg(long, value_name = "HEX")]
    pub public_key: PublicKey,
    /// Keep the old root key as the root node's key this many seconds beside the new one (default 600).
    #[arg(long, value_name = "N", default_value_t = 600)]
    pub overlap_secs: u64,
}

#[derive(Args)]
pub struct NodeRotateKeyArgs {
    /// The node whose key changes, such as gz.yuexiu.
    #[arg(value_name = "NODE")]
    pub id: NodeId,
    /// The node's new public key (64 hex characters), as `exchange-node keygen` printed it on that node.
    #[arg(long, value_name = "HEX")]
    pub public_key: PublicKey,
    /// Keep the old key valid this many seconds beside the new one (default 600).
    #[arg(long, value_name = "N")]
    pub overlap_secs: Option<u64>,
    /// Revoke the old key (and any earlier one) now: it was stolen. Nothing signed with it verifies
    /// any more and no node accepts its libp2p identity.
    #[arg(long, conflicts_with = "overlap_secs")]
    pub revoke_old: bool,
}

#[derive(Subcommand)]
pub enum NodesCommand {
    /// List the nodes of the tree: id, name, tier, parent, public key, addresses.
    List,
    /// Add a node to the tree. Only the root node signs the tree: point
    /// --admin at the root node's admin API.
    Add(Box<NodeAddArgs>),
    /// Remove a node from the tree (on the root node). Needs --yes.
    Remove(NodeRemoveArgs),
    /// Give a node a new key (on the root node), after its operator staged it in the node's
    /// `<key_file>.next`; the node takes it as soon as the tree reaches it.
    RotateKey(NodeRotateKeyArgs),
}

#[derive(Args)]
pub struct NodeAddArgs {
    /// The node's id, such as gz.baiyun.
    #[arg(long, value_name = "ID")]
    pub id: NodeId,
    /// The parent node's id, such as gz.
    #[arg(long, value_name = "ID")]
    pub parent: NodeId,
    /// The node's tier: city, district, province, ...
    #[arg(long, value_name = "TIER", value_parser = parse::word)]
    pub tier: String,
    /// The node's name, such as 白云区交换平台.
    #[arg(long, value_name = "NAME", value_parser = parse::name)]
    pub name: String,
    /// The node's public key (64 hex characters), as `exchange-node keygen` printed it.
    #[arg(long, value_name = "HEX")]
    pub public_key: PublicKey,
    /// A libp2p multiaddress where the node listens, such as /ip4/198.51.100.13/tcp/7403; may be
    /// repeated.
    #[arg(long = "address", value_name = "MULTIADDR", value_parser = parse::multiaddr)]
    pub addresses: Vec<String>,
}

#[derive(Args)]
pub struct NodeRemoveArgs {
    /// The node's id.
    #[arg(value_name = "ID")]
    pub id: NodeId,
    /// Confirm: the removal is signed and spreads to every node; messages for its units can no
    /// longer be routed.
    #[arg(long)]
    pub yes: bool,
}

#[derive(Subcommand)]
pub enum UnitsCommand {
    /// List the units (all, or those of NODE): address, name, kind, credit code, status, valid keys.
    List(UnitsListArgs),
    /// One unit: name, kind, credit code, status, and each key with its validity window.
    Show(UnitArg),
    /// Add a unit to the node asked (its home node, which signs its units).
    Add(UnitAddArgs),
    /// Bar a unit for now: its submissions and new messages to it are refused.
    Suspend(UnitArg),
    /// Lift a suspension.
    Activate(UnitArg),
    /// Revoke a unit for good, with its keys. Needs --yes.
    Revoke(UnitRevokeArgs),
    /// Give a unit a new public key, keeping the old one for an overlap or revoking it now.
    RotateKey(RotateKeyArgs),
}

#[derive(Args)]
pub struct UnitsListArgs {
    /// Only the units of this node, such as gz.haizhu. (A positional argument: --node is the global
    /// agency API address.)
    #[arg(value_name = "NODE")]
    pub node_id: Option<NodeId>,
}

#[derive(Args)]
pub struct UnitArg {
    /// The unit's address, such as gz.yuexiu/liurong-street.
    #[arg(value_name = "ADDRESS")]
    pub address: UnitAddress,
}

/// Where a unit's public key comes from: typed in hex, or read from its key file.
#[derive(Args)]
#[group(id = "key_source", required = true, multiple = false)]
pub struct KeySourceArgs {
    /// The unit's public key (64 hex characters), as `exchange-admin keygen` or `pubkey` printed it.
    #[arg(long, value_name = "HEX")]
    pub public_key: Option<PublicKey>,
    /// Read the public key from the unit's key file (only the public half is sent).
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
}

#[derive(Args)]
pub struct UnitAddArgs {
    /// The unit's address, <node-id>/<unit-id>; the node part must be the node asked.
    #[arg(long, value_name = "ADDRESS")]
    pub address: UnitAddress,
    /// The unit's name, such as 越秀区六榕街道办事处.
    #[arg(long, value_name = "NAME", value_parser = parse::name)]
    pub name: String,
    /// The unit's kind: department, bureau, street-office, ...
    #[arg(long, value_name = "KIND", value_parser = parse::word)]
    pub kind: String,
    /// The unit's unified social credit code (统一社会信用代码, 18 characters); its check character
    /// is verified.
    #[arg(long, value_name = "CODE", value_parser = parse::uscc)]
    pub uscc: Option<String>,
    #[command(flatten)]
    pub key: KeySourceArgs,
}

#[derive(Args)]
pub struct UnitRevokeArgs {
    /// The unit's address.
    #[arg(value_name = "ADDRESS")]
    pub address: UnitAddress,
    /// Confirm: a revoked unit cannot send or receive again, and nothing signed with its keys from
    /// now on verifies.
    #[arg(long)]
    pub yes: bool,
}

#[derive(Args)]
pub struct RotateKeyArgs {
    /// The unit's address.
    #[arg(value_name = "ADDRESS")]
    pub address: UnitAddress,
    #[command(flatten)]
    pub key: KeySourceArgs,
    /// Keep the old key valid this many seconds beside the new one (default 0: it ends now).
    #[arg(long, value_name = "N")]
    pub overlap_secs: Option<u64>,
    /// Revoke the old key now (it was stolen or lost): nothing signed with it from now on verifies.
    #[arg(long, conflicts_with = "overlap_secs")]
    pub revoke_old: bool,
}

#[derive(Subcommand)]
pub enum TokensCommand {
    /// Issue an API token for a unit of this node. The token alone is printed on stdout, this once.
    Issue(TokenIssueArgs),
    /// List the tokens this node issued (their ids, never the tokens).
    List(TokensListArgs),
    /// Revoke a token by its id: agency calls with it are refused from now on.
    Revoke(TokenRevokeArgs),
}

#[derive(Args)]
pub struct TokenIssueArgs {
    /// The unit the token acts for.
    #[arg(long, value_name = "UNIT")]
    pub unit: UnitAddress,
    /// A note to tell the unit's tokens apart, such as the system or host that uses it.
    #[arg(long, value_name = "L")]
    pub label: Option<String>,
}

#[derive(Args)]
pub struct TokensListArgs {
    /// Only the tokens of this unit.
    #[arg(long, value_name = "UNIT")]
    pub unit: Option<UnitAddress>,
}

#[derive(Args)]
pub struct TokenRevokeArgs {
    /// The token's id, as `tokens list` and `tokens issue --json` show it.
    #[arg(value_name = "ID", value_parser = parse::token_id)]
    pub id: String,
}
