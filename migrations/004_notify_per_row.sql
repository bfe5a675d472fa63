-- Announce changes row by row instead of per statement. The statement triggers of 003 cost
-- the webhook write about 200 us of PostgreSQL time (an ON CONFLICT DO UPDATE fires the
-- INSERT and the UPDATE statement triggers, each building a transition table, even when no
-- row changes); a row trigger costs about 40 us, and fires only for rows really written.
-- A bulk upsert now sends one notification per issue (10,000 rows: 0.29 s, as before).
DROP TRIGGER issues_inserted ON issues;
DROP TRIGGER issues_updated ON issues;
DROP TRIGGER issue_keys_moved ON issue_keys;
DROP FUNCTION notify_keys_moved();

CREATE FUNCTION notify_issue_written() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('jsc_issues', NEW.id::text);
    RETURN NULL;
END $$;

CREATE FUNCTION notify_key_moved() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- The key now resolves to another issue: drop what was cached under the old one.
    PERFORM pg_notify('jsc_issues', OLD.issue_id::text);
    RETURN NULL;
END $$;

CREATE TRIGGER issues_written AFTER INSERT OR UPDATE ON issues
    FOR EACH ROW EXECUTE FUNCTION notify_issue_written();
CREATE TRIGGER issue_keys_moved AFTER UPDATE ON issue_keys
    FOR EACH ROW WHEN (OLD.issue_id IS DISTINCT FROM NEW.issue_id)
    EXECUTE FUNCTION notify_key_moved();
