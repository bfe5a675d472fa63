-- Changed-since sync: issues may come from a search round, and each issue remembers who
-- saw its current version first (for webhook health); a watermark and a lease per project.
ALTER TABLE issues DROP CONSTRAINT issues_source_check;
ALTER TABLE issues ADD CONSTRAINT issues_source_check
    CHECK (source IN ('webhook', 'poll', 'refresh', 'sync'));
-- Set only when a write moves jira_updated_at forward: the first writer of that version.
ALTER TABLE issues ADD COLUMN changed_by text, ADD COLUMN changed_at timestamptz;

-- One row per Jira project of the tracked keys. `verified_at` is the watermark: every
-- change up to it has been read, so the next round searches from it. `covered_since` is
-- where unbroken coverage began: an issue fetched since then is current as of verified_at.
CREATE TABLE sync_projects (
    project       text PRIMARY KEY,
    verified_at   timestamptz,
    covered_since timestamptz,
    lease_owner   text,
    lease_until   timestamptz,
    error         text,
    failed_at     timestamptz
);
