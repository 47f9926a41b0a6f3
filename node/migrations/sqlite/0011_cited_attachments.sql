-- Which attachments each stored message cites (attachment.<n>.sha256 in its header), written in the
-- same transaction as the message (see storage::citations). Asked by digest: is this file still
-- needed, and which documents citing it may a unit read; without it both searched every header.
CREATE TABLE cited_attachments (
    sha256     BLOB NOT NULL,             -- the attachment's SHA-256 (32 bytes)
    message_id BLOB NOT NULL,
    PRIMARY KEY (sha256, message_id)
) WITHOUT ROWID;

-- "Is a message citing it still in an inbox": looked up by message, not by unit.
CREATE INDEX inbox_by_message ON inbox (message_id);

-- Messages stored before this table existed are recorded when the node opens the database, in Rust
-- (the header is binary and is decoded there): `citations_backfill` is the last messages.seq done,
-- -1 once every older message is recorded.
INSERT INTO node_state (key, value) VALUES ('citations_backfill', 0);
