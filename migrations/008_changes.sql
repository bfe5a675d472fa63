-- The change log: one entry per change to what we serve about an issue, written by a row
-- trigger on `issues`, so that every write path (webhook, poll, refresh, sync, tombstones,
-- not_found marking, key moves, or a write by hand) records it without code of its own.
-- Entries are read in (txid, position) order, and only below the snapshot's xmin: see
-- service/storage/changes.py for why that order never lets a reader skip an entry.
CREATE TABLE changes (
    -- The ordering key: the writing transaction's id, or the issue's previous entry's if
    -- that is higher (a transaction with a lower id may write an issue after one with a
    -- higher id committed its write; the issue's entries stay in the order they happened).
    txid                  xid8 NOT NULL,
    position              bigserial,
    at                    timestamptz NOT NULL DEFAULT now(),
    issue_id              bigint NOT NULL,
    source                text NOT NULL,
    -- {"field": [old, new]} over the served fields that changed.
    fields                jsonb NOT NULL,
    -- The issue as it was written, rendered at read time as GET renders it.
    key                   text NOT NULL,
    status_id             text,
    status_name           text,
    status_category       text,
    summary               text,
    assignee_account_id   text,
    assignee_display_name text,
    priority              text,
    jira_updated_at       timestamptz NOT NULL,
    fetched_at            timestamptz NOT NULL,
    state                 text NOT NULL,
    error                 text,
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

CREATE FUNCTION served_status(s_id text, s_name text, s_category text) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN s_id IS NOT NULL
                THEN jsonb_build_object('id', s_id, 'name', s_name, 'category', s_category) END
$$;

CREATE FUNCTION served_assignee(account_id text, display_name text) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN account_id IS NOT NULL
                THEN jsonb_build_object('account_id', account_id, 'display_name', display_name) END
$$;

-- A failed read (state 'error') keeps the data: it is not a change of what we serve.
CREATE FUNCTION served_state(state text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT CASE WHEN state = 'error' THEN 'ok' ELSE state END $$;

CREATE FUNCTION record_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    fields jsonb := '{}';
    old_status jsonb := served_status(OLD.status_id, OLD.status_name, OLD.status_category);
    new_status jsonb := served_status(NEW.status_id, NEW.status_name, NEW.status_category);
    old_assignee jsonb := served_assignee(OLD.assignee_account_id, OLD.assignee_display_name);
    new_assignee jsonb := served_assignee(NEW.assignee_account_id, NEW.assignee_display_name);
    ordering xid8;
BEGIN
    -- OLD is NULL on INSERT: a newly cached issue lists every field it has, from null.
    IF OLD.key IS DISTINCT FROM NEW.key THEN
        fields := fields || jsonb_build_object('key', jsonb_build_array(OLD.key, NEW.key));
    END IF;
    IF old_status IS DISTINCT FROM new_status THEN
        fields := fields || jsonb_build_object('status', jsonb_build_array(old_status, new_status));
    END IF;
    IF OLD.summary IS DISTINCT FROM NEW.summary THEN
        fields := fields
            || jsonb_build_object('summary', jsonb_build_array(OLD.summary, NEW.summary));
    END IF;
    IF old_assignee IS DISTINCT FROM new_assignee THEN
        fields := fields
            || jsonb_build_object('assignee', jsonb_build_array(old_assignee, new_assignee));
    END IF;
    IF OLD.priority IS DISTINCT FROM NEW.priority THEN
        fields := fields
            || jsonb_build_object('priority', jsonb_build_array(OLD.priority, NEW.priority));
    END IF;
    IF served_state(OLD.state) IS DISTINCT FROM served_state(NEW.state) THEN
        fields := fields || jsonb_build_object('state', jsonb_build_array(OLD.state, NEW.state));
    END IF;
    IF fields = '{}' THEN
        RETURN NULL;
    END IF;
    -- Row locks serialize the writers of one issue, so its previous entry is committed
    -- and visible to this (READ COMMITTED) statement.
    SELECT max(c.txid) INTO ordering FROM changes c WHERE c.issue_id = NEW.id;
    INSERT INTO changes (
        txid, issue_id, source, fields, key, status_id, status_name, status_category,
        summary, assignee_account_id, assignee_display_name, priority, jira_updated_at,
        fetched_at, state, error)
    VALUES (
        GREATEST(pg_current_xact_id(), ordering), NEW.id, NEW.source, fields, NEW.key,
        NEW.status_id, NEW.status_name, NEW.status_category, NEW.summary,
        NEW.assignee_account_id, NEW.assignee_display_name, NEW.priority,
        NEW.jira_updated_at, NEW.fetched_at, NEW.state, NEW.error);
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
