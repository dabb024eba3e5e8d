-- Signed checkpoints over all evidence (docs/transparency.md). Each row is a Merkle tree head
-- over the first `tree_size` evidence rows in id order, signed with the collector's CA key.
-- `last_leaf_*` (which row was newest, so a change to it can be named) and `frontier` (the right-edge subtree hashes, 32 bytes
-- each, largest first) let the next checkpoint hash only the rows added since.
CREATE TABLE checkpoints (
    id             INTEGER PRIMARY KEY,
    tree_size      INTEGER NOT NULL UNIQUE CHECK (tree_size > 0),
    root_hash      BLOB    NOT NULL,
    signed_at_ms   INTEGER NOT NULL,
    ca_fingerprint BLOB    NOT NULL,
    signature      BLOB    NOT NULL,
    last_leaf_id   INTEGER NOT NULL,
    last_leaf_agent_id TEXT NOT NULL,
    last_leaf_sequence INTEGER NOT NULL,
    last_leaf_hash BLOB    NOT NULL,
    frontier       BLOB    NOT NULL
) STRICT;

CREATE TRIGGER checkpoints_no_update BEFORE UPDATE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END;
CREATE TRIGGER checkpoints_no_delete BEFORE DELETE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END;

-- Bundles select evidence by arrival time.
CREATE INDEX evidence_by_arrival ON evidence (received_at_ms);
