-- The PostgreSQL custody store: the same tables as the SQLite store (node/migrations/sqlite, read its
-- comments for what each one means), in PostgreSQL's types. Differences, and why:
--
-- * Every integer is BIGINT: the store reads them as i64, and sqlx does not widen INT4 silently.
-- * messages, outbox and inbox take their positions from identity sequences. A sequence value taken by
--   a transaction that then rolls back is never reused, so positions can have gaps; and without care,
--   a transaction that took a lower position could commit after one that took a higher one, and a
--   reader paging "after position N" would skip it. Every write transaction of the store therefore
--   holds one transaction-scoped advisory lock from before its first write to its commit (see
--   storage/postgres.rs): positions are taken and made visible in the same order, gaps are harmless.
-- * audit_log.seq is not a sequence: the writer numbers entries itself under that lock (previous
--   head + 1), so the chain has no gaps and a gap always means an entry was deleted.
-- * Payloads are stored EXTERNAL (out of line, uncompressed): they are signed, mostly compressed files
--   already, and their octet_length() is then read without loading them, which is how batches and
--   pages are cut to size before any payload is loaded.

CREATE TABLE messages (
    seq            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id             BYTEA NOT NULL UNIQUE,
    header         BYTEA NOT NULL,
    signature      BYTEA NOT NULL,
    payload        BYTEA NOT NULL,
    kind           TEXT NOT NULL,
    sender         TEXT NOT NULL,
    priority       BIGINT NOT NULL,
    created_at_ms  BIGINT NOT NULL,
    received_at_ms BIGINT NOT NULL,
    received_from  TEXT,
    hops           TEXT NOT NULL
);
ALTER TABLE messages ALTER COLUMN payload SET STORAGE EXTERNAL;

CREATE TABLE outbox (
    seq            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id     BYTEA NOT NULL,
    next_hop       TEXT NOT NULL,
    recipients     TEXT NOT NULL,
    priority       BIGINT NOT NULL,
    enqueued_at_ms BIGINT NOT NULL,
    attempts       BIGINT NOT NULL DEFAULT 0,
    dead_reason    TEXT,
    UNIQUE (message_id, next_hop)
);
CREATE INDEX outbox_by_hop ON outbox (next_hop, priority, seq) WHERE dead_reason IS NULL;

CREATE TABLE inbox (
    seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    unit            TEXT NOT NULL,
    message_id      BYTEA NOT NULL,
    delivered_at_ms BIGINT NOT NULL,
    state           TEXT NOT NULL,
    receipt_id      BYTEA,
    UNIQUE (unit, message_id)
);
CREATE INDEX inbox_by_unit ON inbox (unit, seq);
CREATE INDEX inbox_by_message ON inbox (message_id);

CREATE TABLE tracking (
    message_id  BYTEA NOT NULL,
    recipient   TEXT NOT NULL,
    state_rank  BIGINT NOT NULL,
    state       TEXT NOT NULL,
    node        TEXT NOT NULL,
    at_ms       BIGINT NOT NULL,
    detail      TEXT,
    receipt_id  BYTEA,
    PRIMARY KEY (message_id, recipient)
);

CREATE TABLE audit_log (
    seq        BIGINT PRIMARY KEY,
    at_ms      BIGINT NOT NULL,
    category   TEXT NOT NULL,
    message_id BYTEA,
    event      TEXT NOT NULL,
    unit       TEXT,
    peer       TEXT,
    detail     TEXT,
    hash       BYTEA NOT NULL
);
CREATE INDEX audit_log_by_message ON audit_log (message_id, seq) WHERE message_id IS NOT NULL;

CREATE TABLE directory_segments (
    owner        TEXT PRIMARY KEY,
    version      BIGINT NOT NULL,
    header       BYTEA NOT NULL,
    signature    BYTEA NOT NULL,
    payload      BYTEA NOT NULL,
    stored_at_ms BIGINT NOT NULL
);

CREATE TABLE unit_tokens (
    id            TEXT PRIMARY KEY,
    hash          BYTEA NOT NULL UNIQUE,
    unit          TEXT NOT NULL,
    label         TEXT NOT NULL,
    issued_at_ms  BIGINT NOT NULL,
    revoked_at_ms BIGINT
);

CREATE TABLE recall_outcomes (
    recall_id       BYTEA NOT NULL,
    message_id      BYTEA NOT NULL,
    unit            TEXT NOT NULL,
    outcome         TEXT NOT NULL,
    original_sender TEXT NOT NULL,
    priority        BIGINT NOT NULL,
    reported        BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (recall_id, unit)
);

CREATE TABLE webhooks (
    unit             TEXT PRIMARY KEY,
    url              TEXT NOT NULL,
    registered_at_ms BIGINT NOT NULL,
    pushed_seq       BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE topic_log (
    topic           TEXT NOT NULL,
    seq             BIGINT NOT NULL,
    record_id       BYTEA NOT NULL UNIQUE,
    subject         TEXT NOT NULL,
    publisher       TEXT NOT NULL,
    published_at_ms BIGINT NOT NULL,
    header          BYTEA NOT NULL,
    signature       BYTEA NOT NULL,
    payload         BYTEA NOT NULL,
    PRIMARY KEY (topic, seq)
);
CREATE INDEX topic_log_by_time ON topic_log (topic, published_at_ms);

CREATE TABLE sharing_subscriptions (
    topic           TEXT NOT NULL,
    subscriber      TEXT NOT NULL,
    owner           TEXT NOT NULL,
    state           TEXT NOT NULL,
    start           TEXT NOT NULL,
    first_seq       BIGINT,
    request_id      BYTEA NOT NULL,
    requested_at_ms BIGINT NOT NULL,
    decided_at_ms   BIGINT,
    decided_by      TEXT,
    reason          TEXT,
    backfill_next   BIGINT,
    backfill_end    BIGINT,
    PRIMARY KEY (topic, subscriber)
);

CREATE TABLE data_subscriptions (
    unit            TEXT NOT NULL,
    topic           TEXT NOT NULL,
    owner           TEXT NOT NULL,
    state           TEXT NOT NULL,
    start           TEXT NOT NULL,
    first_seq       BIGINT,
    cursor          BIGINT NOT NULL DEFAULT 0,
    request_id      BYTEA NOT NULL,
    requested_at_ms BIGINT NOT NULL,
    decided_at_ms   BIGINT,
    decided_by      TEXT,
    reason          TEXT,
    PRIMARY KEY (unit, topic)
);

CREATE TABLE data_inbox (
    unit            TEXT NOT NULL,
    topic           TEXT NOT NULL,
    seq             BIGINT NOT NULL,
    delivery_id     BYTEA NOT NULL,
    record_id       BYTEA NOT NULL,
    subject         TEXT NOT NULL,
    published_at_ms BIGINT NOT NULL,
    delivered_at_ms BIGINT NOT NULL,
    header          BYTEA NOT NULL,
    signature       BYTEA NOT NULL,
    payload         BYTEA NOT NULL,
    PRIMARY KEY (unit, topic, seq)
);

CREATE TABLE cited_attachments (
    sha256     BYTEA NOT NULL,
    message_id BYTEA NOT NULL,
    PRIMARY KEY (sha256, message_id)
);

CREATE TABLE node_state (
    key   TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO node_state (key, value) VALUES ('commits', 0), ('probe', 0);
