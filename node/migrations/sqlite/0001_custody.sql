-- Custody store of one node. Every message this node has held is kept by id, so a re-sent message is
-- recognised and never delivered twice.
CREATE TABLE messages (
    seq            INTEGER PRIMARY KEY,   -- rows are appended in arrival order (a random key would
                                          -- scatter payloads across the file)
    id             BLOB NOT NULL UNIQUE,  -- SHA-256 of the canonical header
    header         BLOB NOT NULL,         -- canonical bytes, exactly as signed
    signature      BLOB NOT NULL,
    payload        BLOB NOT NULL,
    kind           TEXT NOT NULL,
    sender         TEXT NOT NULL,
    priority       INTEGER NOT NULL,      -- 0 urgent, 1 express, 2 routine
    created_at_ms  INTEGER NOT NULL,
    received_at_ms INTEGER NOT NULL,
    received_from  TEXT,                  -- peer node, or NULL when an agency handed it over
    hops           TEXT NOT NULL          -- JSON list of custody hops up to and including this node
);

-- What still has to be handed to a neighbour. A row leaves only when the neighbour acknowledged a
-- durable commit (or refused it for good: then dead_reason is set and the row stays for operators).
CREATE TABLE outbox (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id     BLOB NOT NULL,
    next_hop       TEXT NOT NULL,
    recipients     TEXT NOT NULL,         -- JSON list of the recipients this hop carries
    priority       INTEGER NOT NULL,
    enqueued_at_ms INTEGER NOT NULL,
    attempts       INTEGER NOT NULL DEFAULT 0,
    dead_reason    TEXT,
    UNIQUE (message_id, next_hop)
);
CREATE INDEX outbox_by_hop ON outbox (next_hop, priority, seq) WHERE dead_reason IS NULL;

-- Inboxes of the units this node hosts.
CREATE TABLE inbox (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    unit            TEXT NOT NULL,
    message_id      BLOB NOT NULL,
    delivered_at_ms INTEGER NOT NULL,
    state           TEXT NOT NULL,        -- delivered | signed-for
    receipt_id      BLOB,
    UNIQUE (unit, message_id)
);
CREATE INDEX inbox_by_unit ON inbox (unit, seq);

-- Per-recipient status of messages sent by units of this node.
CREATE TABLE tracking (
    message_id  BLOB NOT NULL,
    recipient   TEXT NOT NULL,
    state_rank  INTEGER NOT NULL,         -- accepted 0, in-transit 1, failed 2, delivered 3, settled 4
    state       TEXT NOT NULL,
    node        TEXT NOT NULL,
    at_ms       INTEGER NOT NULL,
    detail      TEXT,
    receipt_id  BLOB,
    PRIMARY KEY (message_id, recipient)
) WITHOUT ROWID;

-- The node's audit log: every custody event, every refused input and every administrative action,
-- append-only and hash-chained: each entry's hash covers the previous entry's hash and its own fields
-- (see docs/operations.md), so an edited or deleted entry breaks the chain from that point on.
CREATE TABLE audit_log (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms      INTEGER NOT NULL,
    category   TEXT NOT NULL,             -- custody | refusal | admin
    message_id BLOB,
    event      TEXT NOT NULL,
    unit       TEXT,
    peer       TEXT,
    detail     TEXT,
    hash       BLOB NOT NULL
);
CREATE INDEX audit_log_by_message ON audit_log (message_id, seq) WHERE message_id IS NOT NULL;

-- The directory segments this node holds: the newest version of the node tree ('tree') and of each
-- node's unit segment (owner = node id), exactly as signed.
CREATE TABLE directory_segments (
    owner        TEXT PRIMARY KEY,
    version      INTEGER NOT NULL,
    header       BLOB NOT NULL,
    signature    BLOB NOT NULL,
    payload      BLOB NOT NULL,
    stored_at_ms INTEGER NOT NULL
);

-- API tokens of the units hosted here. Only the SHA-256 of a token is kept.
CREATE TABLE unit_tokens (
    id            TEXT PRIMARY KEY,
    hash          BLOB NOT NULL UNIQUE,
    unit          TEXT NOT NULL,
    label         TEXT NOT NULL,
    issued_at_ms  INTEGER NOT NULL,
    revoked_at_ms INTEGER
);

-- 撤回 decided here, for the units hosted here: one row per recall and unit, kept until the node's
-- signed report on it has been committed (reported = 1), so a crash in between loses no report.
CREATE TABLE recall_outcomes (
    recall_id       BLOB NOT NULL,
    message_id      BLOB NOT NULL,
    unit            TEXT NOT NULL,
    outcome         TEXT NOT NULL,        -- recalled | signed-for | returned
    original_sender TEXT NOT NULL,
    priority        INTEGER NOT NULL,
    reported        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (recall_id, unit)
) WITHOUT ROWID;

-- Push delivery: a unit's webhook, and how far its inbox has been pushed (inbox seq). The inbox
-- keeps everything; the webhook is told of it, at least once, in order.
CREATE TABLE webhooks (
    unit             TEXT PRIMARY KEY,
    url              TEXT NOT NULL,
    registered_at_ms INTEGER NOT NULL,
    pushed_seq       INTEGER NOT NULL DEFAULT 0
);
