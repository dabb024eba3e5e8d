-- Policy evaluation (issue 8). Evidence is judged by the collector, never by agents.

-- The newest item of one check kind per agent, for evaluation as of any moment.
CREATE INDEX evidence_by_kind ON evidence (agent_id, check_kind, sequence);

-- Every policy the collector has run under. A changed policy file is a new row, so results
-- judged under an older version keep naming the text they were judged by.
CREATE TABLE policies (
    version        INTEGER PRIMARY KEY,
    sha256         BLOB    NOT NULL,
    name           TEXT    NOT NULL,
    source         TEXT    NOT NULL,
    text           TEXT    NOT NULL,
    activated_at_ms INTEGER NOT NULL
) STRICT;

-- Rule results as they change: a row says that from `at_ms` on, `rule_id` on `agent_id` under
-- policy `policy_version` had this outcome, judged from these evidence sequences of that agent.
-- An evaluation that reaches the same outcome on the same offending items adds no row.
CREATE TABLE rule_results (
    id             INTEGER PRIMARY KEY,
    policy_version INTEGER NOT NULL REFERENCES policies (version),
    rule_id        TEXT    NOT NULL,
    agent_id       TEXT    NOT NULL REFERENCES agents (agent_id),
    at_ms          INTEGER NOT NULL,
    outcome        TEXT    NOT NULL CHECK (outcome IN ('pass', 'fail', 'not_applicable', 'no_evidence')),
    detail         TEXT    NOT NULL,
    -- JSON array of the offending items (packages, volumes, backup sources).
    offending      TEXT    NOT NULL,
    -- JSON array of the evidence sequences the judgement used.
    evidence       TEXT    NOT NULL
) STRICT;
CREATE INDEX rule_results_by_key ON rule_results (policy_version, agent_id, rule_id, at_ms);

-- One corrective action per (host, rule) deviation; it reopens rather than being duplicated.
CREATE TABLE actions (
    id             INTEGER PRIMARY KEY,
    agent_id       TEXT    NOT NULL REFERENCES agents (agent_id),
    rule_id        TEXT    NOT NULL,
    rule_title     TEXT    NOT NULL,
    severity       TEXT    NOT NULL CHECK (severity IN ('critical', 'high', 'medium', 'low')),
    opened_at_ms   INTEGER NOT NULL,
    UNIQUE (agent_id, rule_id)
) STRICT;

-- The action's whole life: its state is the `state` of its newest event.
CREATE TABLE action_events (
    id             INTEGER PRIMARY KEY,
    action_id      INTEGER NOT NULL REFERENCES actions (id),
    at_ms          INTEGER NOT NULL,
    kind           TEXT    NOT NULL,
    state          TEXT    NOT NULL CHECK (state IN ('open', 'acknowledged', 'resolved', 'verified', 'reopened', 'risk_accepted')),
    -- A person's name, or 'system' for transitions the collector makes from evidence.
    actor          TEXT    NOT NULL,
    reason         TEXT    NOT NULL,
    owner          TEXT,
    due_at_ms      INTEGER,
    root_cause     TEXT,
    risk_expires_at_ms INTEGER,
    policy_version INTEGER REFERENCES policies (version),
    -- JSON array of evidence sequences of the action's agent.
    evidence       TEXT    NOT NULL DEFAULT '[]'
) STRICT;
CREATE INDEX action_events_by_action ON action_events (action_id, id);

CREATE TRIGGER policies_no_update BEFORE UPDATE ON policies
BEGIN SELECT RAISE(ABORT, 'policies are append-only'); END;
CREATE TRIGGER policies_no_delete BEFORE DELETE ON policies
BEGIN SELECT RAISE(ABORT, 'policies are append-only'); END;
CREATE TRIGGER rule_results_no_update BEFORE UPDATE ON rule_results
BEGIN SELECT RAISE(ABORT, 'rule results are append-only'); END;
CREATE TRIGGER rule_results_no_delete BEFORE DELETE ON rule_results
BEGIN SELECT RAISE(ABORT, 'rule results are append-only'); END;
CREATE TRIGGER actions_no_update BEFORE UPDATE ON actions
BEGIN SELECT RAISE(ABORT, 'actions are append-only: record an event instead'); END;
CREATE TRIGGER actions_no_delete BEFORE DELETE ON actions
BEGIN SELECT RAISE(ABORT, 'actions are append-only'); END;
CREATE TRIGGER action_events_no_update BEFORE UPDATE ON action_events
BEGIN SELECT RAISE(ABORT, 'action events are append-only'); END;
CREATE TRIGGER action_events_no_delete BEFORE DELETE ON action_events
BEGIN SELECT RAISE(ABORT, 'action events are append-only'); END;
