-- Facts about the database itself. `commits` counts committed write transactions: the same count is
-- kept in a small file beside the database (node.db.mark), written after each commit. If the database
-- ever holds fewer commits than the file says, committed transactions were lost (a damaged or truncated
-- WAL, a file restored without the node knowing) and the node refuses to start instead of serving a
-- past it has forgotten. `probe` is what readiness writes to prove the write path works.
CREATE TABLE node_state (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO node_state (key, value) VALUES ('commits', 0), ('probe', 0);
