-- The newest item of each check kind per agent (issue 10), in place of the index
-- evidence_by_kind (agent_id, check_kind, sequence). That index kept an agent's kinds in as many
-- places as it has kinds, so every batch of a full check cycle dirtied four scattered index
-- leaves, each written to the WAL and again at the checkpoint. An agent's rows here sit side by
-- side: one leaf per batch. Items of a kind before its head are found by walking the agent's
-- sequence (the UNIQUE (agent_id, sequence) index) back from the head.
-- Kept by the append path in the transaction that stores the items (store::write_append), the
-- only place evidence is inserted; it changes in place, like rule_result_heads.
CREATE TABLE evidence_kind_heads (
    agent_id       TEXT    NOT NULL REFERENCES agents (agent_id),
    check_kind     INTEGER NOT NULL,
    sequence       INTEGER NOT NULL,
    received_at_ms INTEGER NOT NULL,
    PRIMARY KEY (agent_id, check_kind)
) STRICT, WITHOUT ROWID;

-- The bare received_at_ms is taken from the row max(sequence) picks.
INSERT INTO evidence_kind_heads (agent_id, check_kind, sequence, received_at_ms)
SELECT agent_id, check_kind, max(sequence), received_at_ms
FROM evidence GROUP BY agent_id, check_kind;

DROP INDEX evidence_by_kind;
