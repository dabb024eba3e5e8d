-- The newest event of every corrective action (issue 10), so the overview's action tiles read
-- one narrow row per action instead of seeking each action's newest event among all events.
-- Derived from `action_events` alone and kept by a trigger, like `rule_result_heads`.

-- A count as of a moment reads this row when it is not newer than the moment, and otherwise
-- seeks the action's newest event by then in `action_events_by_action`.
CREATE TABLE action_heads (
    action_id INTEGER PRIMARY KEY REFERENCES actions (id),
    event_id  INTEGER NOT NULL REFERENCES action_events (id),
    at_ms     INTEGER NOT NULL,
    state     TEXT    NOT NULL,
    due_at_ms INTEGER
) STRICT;

INSERT INTO action_heads (action_id, event_id, at_ms, state, due_at_ms)
SELECT action_id, max(id), at_ms, state, due_at_ms FROM action_events GROUP BY action_id;

CREATE TRIGGER action_events_head AFTER INSERT ON action_events
BEGIN
    INSERT INTO action_heads (action_id, event_id, at_ms, state, due_at_ms)
    VALUES (NEW.action_id, NEW.id, NEW.at_ms, NEW.state, NEW.due_at_ms)
    ON CONFLICT (action_id) DO UPDATE
        SET event_id = excluded.event_id, at_ms = excluded.at_ms, state = excluded.state,
            due_at_ms = excluded.due_at_ms
        WHERE excluded.event_id > action_heads.event_id;
END;
