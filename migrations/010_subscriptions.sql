-- Subscriptions: a URL the service POSTs each matching change-log entry to, signed with the
-- subscription's secret. Each has its own cursor, advanced only past delivered entries, and
-- a lease, so that one replica at a time delivers it (like the poller's claims on `tracked`).
CREATE TABLE subscriptions (
    id              bigserial PRIMARY KEY,
    url             text NOT NULL,
    -- Needed in clear to sign; shown once, at creation, never again.
    secret          text NOT NULL,
    project_id      text,
    keys            text[],
    fields          text[],
    created_at      timestamptz NOT NULL DEFAULT now(),
    cursor_txid     xid8 NOT NULL,
    cursor_position bigint NOT NULL,
    lease_owner     text,
    lease_until     timestamptz,
    delivered       bigint NOT NULL DEFAULT 0,
    last_success_at timestamptz,
    last_error      text,
    last_error_at   timestamptz,
    -- When the current run of failures began: past SUBSCRIPTION_PAUSE_AFTER it pauses.
    failing_since   timestamptz,
    paused_at       timestamptz,
    paused_reason   text
);
CREATE INDEX subscriptions_claimable ON subscriptions (lease_until) WHERE paused_at IS NULL;
