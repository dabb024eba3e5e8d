-- What the fleet pages read instead of every recorded result (issue 10): the newest result of
-- every (policy version, agent, rule), and per ended UTC day the per-rule counts of the trend.
-- Both are derived from `rule_results` alone and kept by triggers, so any way a result is
-- appended keeps them true; they are the only tables here that change in place.

-- The newest result per key, as `max(at_ms)` picks it (the first row recorded at that moment).
-- A page as of a moment reads this row when it is not newer than the moment, and otherwise
-- seeks the key's newest result by then in `rule_results_by_key`.
CREATE TABLE rule_result_heads (
    policy_version INTEGER NOT NULL,
    agent_id       TEXT    NOT NULL,
    rule_id        TEXT    NOT NULL,
    result_id      INTEGER NOT NULL REFERENCES rule_results (id),
    at_ms          INTEGER NOT NULL,
    outcome        TEXT    NOT NULL,
    PRIMARY KEY (policy_version, agent_id, rule_id)
) STRICT, WITHOUT ROWID;

INSERT INTO rule_result_heads (policy_version, agent_id, rule_id, result_id, at_ms, outcome)
SELECT policy_version, agent_id, rule_id, id, max(at_ms), outcome
FROM rule_results GROUP BY policy_version, agent_id, rule_id;

-- The trend's point at the end of a UTC day under one policy version: per rule, the (agent,
-- rule) results passing and in scope as recorded by then, as JSON {"rule": [passing, in
-- scope]}. Written by the evaluator once the day has ended and its results are all recorded.
CREATE TABLE trend_days (
    policy_version INTEGER NOT NULL,
    day_end_ms     INTEGER NOT NULL,
    counts         TEXT    NOT NULL,
    PRIMARY KEY (policy_version, day_end_ms)
) STRICT, WITHOUT ROWID;

CREATE TRIGGER rule_results_head AFTER INSERT ON rule_results
BEGIN
    INSERT INTO rule_result_heads (policy_version, agent_id, rule_id, result_id, at_ms, outcome)
    VALUES (NEW.policy_version, NEW.agent_id, NEW.rule_id, NEW.id, NEW.at_ms, NEW.outcome)
    ON CONFLICT (policy_version, agent_id, rule_id) DO UPDATE
        SET result_id = excluded.result_id, at_ms = excluded.at_ms, outcome = excluded.outcome
        WHERE excluded.at_ms > rule_result_heads.at_ms;
    -- A result recorded at or before a day's end (only a replayed or simulated history does
    -- that) makes the counts of that day and every later one stale: they are counted again.
    DELETE FROM trend_days WHERE policy_version = NEW.policy_version AND day_end_ms >= NEW.at_ms;
END;
