-- Batches are stored compressed against a dictionary: the start of an earlier batch of the same
-- agent, kept here as a zstd frame (see store/batch_blobs.rs). A batch with `items_dictionary`
-- keeps in `items` a zstd frame compressed with that dictionary's bytes as its prefix; one
-- without (stored before this migration) keeps the ItemList as signed.
CREATE TABLE batch_dictionaries (
    id            INTEGER PRIMARY KEY,
    agent_id      TEXT    NOT NULL REFERENCES agents (agent_id),
    created_at_ms INTEGER NOT NULL,
    content       BLOB    NOT NULL
) STRICT;
CREATE INDEX batch_dictionaries_by_agent ON batch_dictionaries (agent_id, id);

CREATE TRIGGER batch_dictionaries_no_update BEFORE UPDATE ON batch_dictionaries
BEGIN SELECT RAISE(ABORT, 'batch dictionaries are append-only'); END;
CREATE TRIGGER batch_dictionaries_no_delete BEFORE DELETE ON batch_dictionaries
BEGIN SELECT RAISE(ABORT, 'batch dictionaries are append-only'); END;

ALTER TABLE batches ADD COLUMN items_dictionary INTEGER REFERENCES batch_dictionaries (id);
