-- Indexes keyed by the local position of a message (messages.seq), not by its id: the audit log,
-- the outbox and the per-recipient status.
--
-- A message id is a SHA-256: an index keyed by it takes each new entry on a random page, so every
-- document rewrote one more random page of each such index at every commit (about 4 KiB of WAL per
-- index per document, most of what a node wrote). messages.seq grows with arrival: an index keyed by
-- it takes new entries at its end, a few pages per commit. Only messages.id itself (the dedupe) stays
-- keyed by the id. The message_id columns stay (the audit chain covers them; reads return them).

-- The audit log: entries about a message held here are found by its position; entries about one not
-- held (a refused envelope, an id an operator asked about) by its id, in a small index of their own.
ALTER TABLE audit_log ADD COLUMN message_seq INTEGER;   -- messages.seq when the entry was written, else NULL
UPDATE audit_log SET message_seq = (SELECT seq FROM messages WHERE id = audit_log.message_id) WHERE message_id IS NOT NULL;
DROP INDEX audit_log_by_message;
CREATE INDEX audit_log_by_held_message ON audit_log (message_seq, seq) WHERE message_seq IS NOT NULL;
CREATE INDEX audit_log_by_other_message ON audit_log (message_id, seq) WHERE message_id IS NOT NULL AND message_seq IS NULL;

-- The outbox: one entry per message and next hop, now unique by (message_seq, next_hop). SQLite cannot
-- drop a table's UNIQUE constraint, so the table is rebuilt; an entry whose message is not held (none
-- should exist: it could never be sent, since sending reads the message) is not carried over.
CREATE TABLE outbox_new (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    message_seq    INTEGER NOT NULL,      -- messages.seq of the message to hand over
    message_id     BLOB NOT NULL,
    next_hop       TEXT NOT NULL,
    recipients     TEXT NOT NULL,         -- JSON list of the recipients this hop carries
    priority       INTEGER NOT NULL,
    enqueued_at_ms INTEGER NOT NULL,
    attempts       INTEGER NOT NULL DEFAULT 0,
    dead_reason    TEXT,
    UNIQUE (message_seq, next_hop)
);
INSERT INTO outbox_new (seq, message_seq, message_id, next_hop, recipients, priority, enqueued_at_ms, attempts, dead_reason)
    SELECT o.seq, m.seq, o.message_id, o.next_hop, o.recipients, o.priority, o.enqueued_at_ms, o.attempts, o.dead_reason
    FROM outbox o JOIN messages m ON m.id = o.message_id;
-- Positions are never reused: the new table goes on from the old one's high-water mark.
DELETE FROM sqlite_sequence WHERE name = 'outbox_new';
INSERT INTO sqlite_sequence (name, seq) SELECT 'outbox_new', seq FROM sqlite_sequence WHERE name = 'outbox';
DROP TABLE outbox;
ALTER TABLE outbox_new RENAME TO outbox;
CREATE INDEX outbox_by_hop ON outbox (next_hop, priority, seq) WHERE dead_reason IS NULL;

-- Per-recipient status, kept at the sender's node for what its units sent: keyed by (message_seq,
-- recipient) now. A row about a message not held here has no status to show and is not carried over.
CREATE TABLE tracking_new (
    message_seq INTEGER NOT NULL,         -- messages.seq of the message sent
    recipient   TEXT NOT NULL,
    message_id  BLOB NOT NULL,
    state_rank  INTEGER NOT NULL,         -- accepted 0, in-transit 1, failed 2, delivered 3, settled 4
    state       TEXT NOT NULL,
    node        TEXT NOT NULL,
    at_ms       INTEGER NOT NULL,
    detail      TEXT,
    receipt_id  BLOB,
    PRIMARY KEY (message_seq, recipient)
) WITHOUT ROWID;
INSERT INTO tracking_new (message_seq, recipient, message_id, state_rank, state, node, at_ms, detail, receipt_id)
    SELECT m.seq, t.recipient, t.message_id, t.state_rank, t.state, t.node, t.at_ms, t.detail, t.receipt_id
    FROM tracking t JOIN messages m ON m.id = t.message_id;
DROP TABLE tracking;
ALTER TABLE tracking_new RENAME TO tracking;
