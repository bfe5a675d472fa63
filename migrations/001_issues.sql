-- Issues are keyed by Jira's stable numeric id; the key is an attribute that moves.
CREATE TABLE issues (
    id                    bigint PRIMARY KEY,
    key                   text NOT NULL,
    status_id             text,
    status_name           text,
    status_category       text CHECK (status_category IN ('new', 'indeterminate', 'done', 'unknown')),
    summary               text,
    assignee_account_id   text,
    assignee_display_name text,
    priority              text,
    jira_updated_at       timestamptz NOT NULL,
    fetched_at            timestamptz NOT NULL DEFAULT now(),
    source                text NOT NULL CHECK (source IN ('webhook', 'poll', 'refresh')),
    state                 text NOT NULL DEFAULT 'ok'
                          CHECK (state IN ('ok', 'not_found', 'deleted', 'error')),
    error                 text,
    failures              integer NOT NULL DEFAULT 0,
    -- A tombstone: updates older than this never bring a deleted issue back.
    deleted_at            timestamptz
);

-- Every key an issue ever had, the current one included, so that old keys keep resolving.
CREATE TABLE issue_keys (
    key      text PRIMARY KEY,
    issue_id bigint NOT NULL REFERENCES issues (id) ON DELETE CASCADE,
    seen_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX issue_keys_issue_id ON issue_keys (issue_id);

-- Projects of the calling services link to issue keys; the issue is cached once.
CREATE TABLE links (
    project_id text NOT NULL,
    key        text NOT NULL,
    linked_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, key)
);
CREATE INDEX links_key ON links (key);

-- The poller's work list. A claim pushes next_due_at to the lease's end, so that
-- "due" is one index range whether 1,000 or 1,000,000 keys are tracked, and an
-- expired lease makes the key due again without any sweeper.
CREATE TABLE tracked (
    key          text PRIMARY KEY,
    next_due_at  timestamptz NOT NULL DEFAULT now(),
    lease_owner  text,
    lease_until  timestamptz,
    failures     integer NOT NULL DEFAULT 0,
    error        text
);
CREATE INDEX tracked_due ON tracked (next_due_at);

-- Keys Jira answered 404 for (no such issue, or no permission): a negative cache
-- for reads, and what makes a tracked key report state not_found.
CREATE TABLE missing_keys (
    key        text PRIMARY KEY,
    checked_at timestamptz NOT NULL DEFAULT now()
);
