-- The agent's clock minus the collector's when a batch arrived (positive: the agent is ahead),
-- so observation times can be judged; NULL for batches from agents that do not send their time.
ALTER TABLE batches ADD COLUMN agent_clock_skew_ms INTEGER;
