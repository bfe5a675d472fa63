-- Named clients of the API (`jira-status-cache client add`), each with its scopes. Only a
-- SHA-256 of each token is kept: tokens are 256-bit random, so no slow hash is needed, and
-- a stolen table opens nothing. A revoked client keeps its row, so that its name (which
-- owns subscriptions) is never given to another.
CREATE TABLE clients (
    name              text PRIMARY KEY,
    token_sha256      bytea NOT NULL UNIQUE,
    scopes            text[] NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    revoked_at        timestamptz,
    -- NULL: the setting's default (CLIENT_MAX_SUBSCRIPTIONS, CLIENT_MAX_STREAMS, CLIENT_RATE).
    max_subscriptions integer,
    max_streams       integer,
    rate              double precision
);

-- A subscription belongs to the client that made it. NULL: made before clients existed, or
-- while the API was open (no tokens at all).
ALTER TABLE subscriptions
    ADD COLUMN client text,
    -- During a rotation the old secret still signs, until previous_secret_until.
    ADD COLUMN previous_secret text,
    ADD COLUMN previous_secret_until timestamptz;
CREATE INDEX subscriptions_client ON subscriptions (client);
