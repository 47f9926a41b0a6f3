-- Base-data sharing (数据共享交换).

-- Owner side: every record published by units of this node, numbered within its topic. The
-- sequence is assigned here, once, so every subscriber sees the same order.
CREATE TABLE topic_log (
    topic           TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    record_id       BLOB NOT NULL UNIQUE,  -- the record envelope's content-derived id
    subject         TEXT NOT NULL,
    publisher       TEXT NOT NULL,
    published_at_ms INTEGER NOT NULL,
    header          BLOB NOT NULL,         -- canonical bytes, exactly as the publisher signed
    signature       BLOB NOT NULL,
    payload         BLOB NOT NULL,
    PRIMARY KEY (topic, seq)
);
CREATE INDEX topic_log_by_time ON topic_log (topic, published_at_ms);

-- Owner side: subscriptions to topics owned by units of this node.
CREATE TABLE sharing_subscriptions (
    topic           TEXT NOT NULL,
    subscriber      TEXT NOT NULL,
    owner           TEXT NOT NULL,
    state           TEXT NOT NULL,         -- pending | granted | refused
    start           TEXT NOT NULL,         -- beginning | now | seq:N | time:MS
    first_seq       INTEGER,
    request_id      BLOB NOT NULL,
    requested_at_ms INTEGER NOT NULL,
    decided_at_ms   INTEGER,
    decided_by      TEXT,
    reason          TEXT,
    -- A granted backlog still being sent, a page per commit: the next record and the last one.
    backfill_next   INTEGER,
    backfill_end    INTEGER,
    PRIMARY KEY (topic, subscriber)
);

-- Subscriber side: the subscriptions of units of this node, with their durable cursors.
CREATE TABLE data_subscriptions (
    unit            TEXT NOT NULL,
    topic           TEXT NOT NULL,
    owner           TEXT NOT NULL,
    state           TEXT NOT NULL,         -- requested | pending | granted | refused
    start           TEXT NOT NULL,
    first_seq       INTEGER,
    cursor          INTEGER NOT NULL DEFAULT 0,
    request_id      BLOB NOT NULL,
    requested_at_ms INTEGER NOT NULL,
    decided_at_ms   INTEGER,
    decided_by      TEXT,
    reason          TEXT,
    PRIMARY KEY (unit, topic)
);

-- Subscriber side: records delivered to units of this node, one row per unit and sequence number.
CREATE TABLE data_inbox (
    unit            TEXT NOT NULL,
    topic           TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    delivery_id     BLOB NOT NULL,
    record_id       BLOB NOT NULL,
    subject         TEXT NOT NULL,
    published_at_ms INTEGER NOT NULL,
    delivered_at_ms INTEGER NOT NULL,
    header          BLOB NOT NULL,
    signature       BLOB NOT NULL,
    payload         BLOB NOT NULL,
    PRIMARY KEY (unit, topic, seq)
);
