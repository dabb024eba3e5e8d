-- Revocation (`evident-collector agent revoke`): when and why. A revoked agent's streams and
-- batches are refused at once; its stored evidence stays as it was.
ALTER TABLE agents ADD COLUMN revoked_at_ms INTEGER;
ALTER TABLE agents ADD COLUMN revoked_reason TEXT;

-- Last contact per agent is the newest batch it sent.
CREATE INDEX batches_by_agent ON batches (agent_id, received_at_ms);
