-- Indexes keyed by the local position of a message (messages.seq), not by its random id: a B-tree
-- keyed by a SHA-256 takes each new entry on a random page, which costs a page write (and, after a
-- checkpoint, a full-page image in the WAL) per document and index. See
-- migrations/sqlite/0012_local_keys.sql for the same change, and why, in the SQLite store.

ALTER TABLE audit_log ADD COLUMN message_seq BIGINT;
UPDATE audit_log a SET message_seq = m.seq FROM messages m WHERE m.id = a.message_id;
DROP INDEX audit_log_by_message;
CREATE INDEX audit_log_by_held_message ON audit_log (message_seq, seq) WHERE message_seq IS NOT NULL;
CREATE INDEX audit_log_by_other_message ON audit_log (message_id, seq) WHERE message_id IS NOT NULL AND message_seq IS NULL;

-- An entry whose message is not held could never be sent (sending reads the message): not kept.
ALTER TABLE outbox ADD COLUMN message_seq BIGINT;
UPDATE outbox o SET message_seq = m.seq FROM messages m WHERE m.id = o.message_id;
DELETE FROM outbox WHERE message_seq IS NULL;
ALTER TABLE outbox ALTER COLUMN message_seq SET NOT NULL;
ALTER TABLE outbox DROP CONSTRAINT outbox_message_id_next_hop_key;
ALTER TABLE outbox ADD CONSTRAINT outbox_message_seq_next_hop_key UNIQUE (message_seq, next_hop);

-- Per-recipient status, kept at the sender's node for what its units sent: keyed by (message_seq,
-- recipient). A row about a message not held here has no status to show and is not kept.
ALTER TABLE tracking ADD COLUMN message_seq BIGINT;
UPDATE tracking t SET message_seq = m.seq FROM messages m WHERE m.id = t.message_id;
DELETE FROM tracking WHERE message_seq IS NULL;
ALTER TABLE tracking ALTER COLUMN message_seq SET NOT NULL;
ALTER TABLE tracking DROP CONSTRAINT tracking_pkey;
ALTER TABLE tracking ADD PRIMARY KEY (message_seq, recipient);
