-- Enrolment tokens: only the SHA-256 of the secret is kept.
CREATE TABLE tokens (
    id             INTEGER PRIMARY KEY,
    token_hash     BLOB    NOT NULL UNIQUE,
    created_at_ms  INTEGER NOT NULL,
    expires_at_ms  INTEGER NOT NULL,
    max_uses       INTEGER NOT NULL CHECK (max_uses > 0),
    uses           INTEGER NOT NULL DEFAULT 0
) STRICT;

-- One row per enrolled agent; the id is also the common name of its certificates.
CREATE TABLE agents (
    agent_id       TEXT    PRIMARY KEY,
    enrolled_at_ms INTEGER NOT NULL,
    token_id       INTEGER NOT NULL REFERENCES tokens (id),
    state          TEXT    NOT NULL DEFAULT 'active',
    hostname       TEXT    NOT NULL,
    os_family      TEXT    NOT NULL,
    os_name        TEXT    NOT NULL,
    os_version     TEXT    NOT NULL,
    architecture   TEXT    NOT NULL,
    machine_id     TEXT    NOT NULL,
    agent_version  TEXT    NOT NULL
) STRICT;

-- Every certificate issued to an agent; batches name the one whose key signed them.
CREATE TABLE certificates (
    id             INTEGER PRIMARY KEY,
    agent_id       TEXT    NOT NULL REFERENCES agents (agent_id),
    fingerprint    BLOB    NOT NULL UNIQUE,
    der            BLOB    NOT NULL,
    not_before_ms  INTEGER NOT NULL,
    not_after_ms   INTEGER NOT NULL
) STRICT;

-- Batches exactly as the agent signed them: `items` is the encoded ItemList, `signature` the
-- agent's signature over "evident.v1.batch\0" || items.
CREATE TABLE batches (
    id                  INTEGER PRIMARY KEY,
    agent_id            TEXT    NOT NULL REFERENCES agents (agent_id),
    certificate_id      INTEGER NOT NULL REFERENCES certificates (id),
    received_at_ms      INTEGER NOT NULL,
    items               BLOB    NOT NULL,
    signature           BLOB    NOT NULL,
    signature_algorithm INTEGER NOT NULL
) STRICT;

-- One row per evidence item. Its content is item `item_index` of its batch; the columns beside it
-- are copies for queries, checked against the signed batch by `verify`. `hash` chains the items of
-- one agent in sequence order (see ARCHITECTURE.md for the exact encoding).
CREATE TABLE evidence (
    id             INTEGER PRIMARY KEY,
    agent_id       TEXT    NOT NULL REFERENCES agents (agent_id),
    sequence       INTEGER NOT NULL,
    batch_id       INTEGER NOT NULL REFERENCES batches (id),
    item_index     INTEGER NOT NULL,
    check_kind     INTEGER NOT NULL,
    observed_at_ms INTEGER NOT NULL,
    received_at_ms INTEGER NOT NULL,
    prev_hash      BLOB    NOT NULL,
    hash           BLOB    NOT NULL,
    UNIQUE (agent_id, sequence)
) STRICT;

-- Append-only: evidence and batches are never updated or deleted through the collector.
CREATE TRIGGER evidence_no_update BEFORE UPDATE ON evidence
BEGIN SELECT RAISE(ABORT, 'evidence is append-only'); END;
CREATE TRIGGER evidence_no_delete BEFORE DELETE ON evidence
BEGIN SELECT RAISE(ABORT, 'evidence is append-only'); END;
CREATE TRIGGER batches_no_update BEFORE UPDATE ON batches
BEGIN SELECT RAISE(ABORT, 'batches are append-only'); END;
CREATE TRIGGER batches_no_delete BEFORE DELETE ON batches
BEGIN SELECT RAISE(ABORT, 'batches are append-only'); END;
