-- The change log: one entry per change to what we serve about an issue, written by a row
-- trigger on `issues`, so that every write path (webhook, poll, refresh, sync, tombstones,
-- not_found marking, key moves, or a write by hand) records it without code of its own.
-- Entries are read in (txid, position) order, and only below the snapshot's xmin: see
-- service/storage/changes.py for why that order never lets a reader skip an entry.
CREATE TABLE changes (
    -- The ordering key: the writing transaction's id, or the issue's previous entry's if
    -- that is higher (a transaction with a lower id may write an issue after one with a
    -- higher id committed its write; the issue's entries stay in the order they happened).
    txid                      xid8 NOT NULL,
    position                  bigserial,
    at                        timestamptz NOT NULL DEFAULT now(),
    issue_id                  bigint NOT NULL,
    source                    text NOT NULL,
    -- The issue as it was written, rendered at read time as GET renders it.
    key                       text NOT NULL,
    status_id                 text,
    status_name               text,
    status_category           text,
    summary                   text,
    assignee_account_id       text,
    assignee_display_name     text,
    priority                  text,
    jira_updated_at           timestamptz NOT NULL,
    fetched_at                timestamptz NOT NULL,
    state                     text NOT NULL,
    error                     text,
    -- The served fields before the write (all null for a newly cached issue): the changed
    -- fields are worked out when read, which keeps the trigger cheap (building the JSON
    -- here cost the webhook write 150 us of PostgreSQL time, measured).
    old_key                   text,
    old_status_id             text,
    old_status_name           text,
    old_status_category       text,
    old_summary               text,
    old_assignee_account_id   text,
    old_assignee_display_name text,
    old_priority              text,
    old_state                 text,
    PRIMARY KEY (txid, position)
);
CREATE INDEX changes_issue ON changes (issue_id, txid);

-- Everything up to this cursor was pruned: a reader behind it answers 410 and resyncs.
CREATE TABLE changes_pruned (
    one      boolean PRIMARY KEY DEFAULT true CHECK (one),
    txid     xid8 NOT NULL,
    position bigint NOT NULL
);
INSERT INTO changes_pruned (txid, position) VALUES ('0', 0);

-- A failed read (state 'error') keeps the data: it is not a change of what we serve.
CREATE FUNCTION served_state(state text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT CASE WHEN state = 'error' THEN 'ok' ELSE state END $$;

CREATE FUNCTION record_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    ordering xid8;
BEGIN
    -- Row locks serialize the writers of one issue, so its previous entry is committed
    -- and visible to this (READ COMMITTED) statement.
    SELECT max(c.txid) INTO ordering FROM changes c WHERE c.issue_id = NEW.id;
    -- OLD is NULL on INSERT: a newly cached issue.
    INSERT INTO changes (
        txid, issue_id, source, key, status_id, status_name, status_category, summary,
        assignee_account_id, assignee_display_name, priority, jira_updated_at, fetched_at,
        state, error, old_key, old_status_id, old_status_name, old_status_category,
        old_summary, old_assignee_account_id, old_assignee_display_name, old_priority,
        old_state)
    VALUES (
        GREATEST(pg_current_xact_id(), ordering), NEW.id, NEW.source, NEW.key,
        NEW.status_id, NEW.status_name, NEW.status_category, NEW.summary,
        NEW.assignee_account_id, NEW.assignee_display_name, NEW.priority,
        NEW.jira_updated_at, NEW.fetched_at, NEW.state, NEW.error, OLD.key, OLD.status_id,
        OLD.status_name, OLD.status_category, OLD.summary, OLD.assignee_account_id,
        OLD.assignee_display_name, OLD.priority, OLD.state);
    -- Identical payloads fold into one notification per transaction, sent at commit.
    PERFORM pg_notify('jsc_changes', '');
    RETURN NULL;
END $$;

CREATE TRIGGER issues_changed_insert AFTER INSERT ON issues
    FOR EACH ROW EXECUTE FUNCTION record_change();
-- PostgreSQL skips the function for a write that changes none of the served columns.
CREATE TRIGGER issues_changed_update AFTER UPDATE ON issues
    FOR EACH ROW WHEN (
        (OLD.key, OLD.status_id, OLD.status_name, OLD.status_category, OLD.summary,
         OLD.assignee_account_id, OLD.assignee_display_name, OLD.priority,
         served_state(OLD.state))
        IS DISTINCT FROM
        (NEW.key, NEW.status_id, NEW.status_name, NEW.status_category, NEW.summary,
         NEW.assignee_account_id, NEW.assignee_display_name, NEW.priority,
         served_state(NEW.state)))
    EXECUTE FUNCTION record_change();
