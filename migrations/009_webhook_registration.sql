-- Our webhook in Jira as `webhook install` registered it, and the filter last set on it, so
-- that JIRA_WEBHOOK_MANAGE knows which webhook to keep on the tracked projects, calls Jira
-- only when they change, and runs on one replica a minute (a row lock and checked_at).
-- One row at most; the URL is kept without any ?secret=.
CREATE TABLE webhook_registration (
    singleton    boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    webhook_id   text NOT NULL,
    url          text NOT NULL,
    all_projects boolean NOT NULL,
    jql          text NOT NULL,
    set_at       timestamptz NOT NULL,
    checked_at   timestamptz NOT NULL
);
