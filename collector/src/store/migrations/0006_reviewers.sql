-- Reviewers (issue 9): local accounts, their sessions and API tokens, and the audit log of
-- everything a person did through the web page or the API.

CREATE TABLE users (
    id             INTEGER PRIMARY KEY,
    name           TEXT    NOT NULL UNIQUE,
    role           TEXT    NOT NULL CHECK (role IN ('viewer', 'reviewer', 'admin')),
    -- An argon2id hash in PHC string form; never the password.
    password_hash  TEXT    NOT NULL,
    created_at_ms  INTEGER NOT NULL,
    disabled_at_ms INTEGER
) STRICT;

-- A signed-in browser. The cookie holds a random secret; only its SHA-256 is stored, so a
-- copy of the database cannot be used to sign in. Sessions are deleted at logout and expiry.
CREATE TABLE sessions (
    token_sha256   BLOB    PRIMARY KEY,
    user_id        INTEGER NOT NULL REFERENCES users (id),
    -- The synchronizer token every form of this session must carry.
    csrf_token     TEXT    NOT NULL,
    created_at_ms  INTEGER NOT NULL,
    last_seen_ms   INTEGER NOT NULL,
    expires_at_ms  INTEGER NOT NULL
) STRICT;

-- Bearer tokens for scripts using the JSON API; they act as their user with that user's role.
CREATE TABLE api_tokens (
    id             INTEGER PRIMARY KEY,
    token_sha256   BLOB    NOT NULL UNIQUE,
    user_id        INTEGER NOT NULL REFERENCES users (id),
    label          TEXT    NOT NULL,
    created_at_ms  INTEGER NOT NULL,
    expires_at_ms  INTEGER NOT NULL
) STRICT;

-- What people did: sign-ins (also refused ones), action transitions, enrolment tokens,
-- exports. Append-only like the evidence.
CREATE TABLE audit_log (
    id             INTEGER PRIMARY KEY,
    at_ms          INTEGER NOT NULL,
    actor          TEXT    NOT NULL,
    role           TEXT,
    -- 'web' or 'api' or 'cli'.
    channel        TEXT    NOT NULL,
    action         TEXT    NOT NULL,
    target         TEXT    NOT NULL,
    outcome        TEXT    NOT NULL CHECK (outcome IN ('ok', 'refused')),
    detail         TEXT    NOT NULL,
    remote_addr    TEXT
) STRICT;
CREATE INDEX audit_log_by_time ON audit_log (at_ms);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;

-- Rule results as of a moment: the newest row per (agent, rule) under one policy version.
CREATE INDEX rule_results_by_version_time ON rule_results (policy_version, at_ms);
