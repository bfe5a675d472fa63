-- Tell every replica which issues changed, so that in-process read caches drop them.
-- One notification per statement (not per row); a payload over NOTIFY's 8000 bytes, or a
-- TRUNCATE, says '*': drop everything.
CREATE FUNCTION notify_issues_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    ids text;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify('jsc_issues', '*');
        RETURN NULL;
    END IF;
    SELECT string_agg(DISTINCT changed.id::text, ',') INTO ids FROM changed;
    IF ids IS NOT NULL THEN
        PERFORM pg_notify('jsc_issues', CASE WHEN length(ids) > 7000 THEN '*' ELSE ids END);
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION notify_keys_moved() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    ids text;
BEGIN
    -- A key that now resolves to another issue: drop what was cached under the old one.
    SELECT string_agg(DISTINCT moved.issue_id::text, ',') INTO ids FROM moved;
    IF ids IS NOT NULL THEN
        PERFORM pg_notify('jsc_issues', CASE WHEN length(ids) > 7000 THEN '*' ELSE ids END);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER issues_inserted AFTER INSERT ON issues
    REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION notify_issues_changed();
CREATE TRIGGER issues_updated AFTER UPDATE ON issues
    REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION notify_issues_changed();
CREATE TRIGGER issues_truncated AFTER TRUNCATE ON issues
    FOR EACH STATEMENT EXECUTE FUNCTION notify_issues_changed();
CREATE TRIGGER issue_keys_moved AFTER UPDATE ON issue_keys
    REFERENCING OLD TABLE AS moved
    FOR EACH STATEMENT EXECUTE FUNCTION notify_keys_moved();
