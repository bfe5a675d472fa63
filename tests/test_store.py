"""The store on a real PostgreSQL: write-forward upserts and key aliases."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from service.model import Assignee, Issue, Source
from service.storage import inbox
from service.storage import issues as store
from tests.factory import DONE, make_issue

Write = Callable[[asyncpg.Pool, Issue], Awaitable[store.Outcome]]
_deliveries = itertools.count()


async def bulk(db: asyncpg.Pool, issue: Issue) -> store.Outcome:
    return (await store.upsert_issues(db, [issue], "webhook"))[issue.id]


async def hook(db: asyncpg.Pool, issue: Issue) -> store.Outcome:
    delivery = f"d-{next(_deliveries)}"
    (outcome,) = await inbox.record_and_write(
        db, [inbox.Update(delivery, "jira:issue_updated", issue)]
    )
    assert outcome is not None
    return outcome


@pytest.fixture(params=[bulk, hook], ids=["bulk", "webhook"])
def write(request: pytest.FixtureRequest) -> Write:
    """Every write path of an issue: the bulk upsert and the webhook's one statement."""
    return request.param  # type: ignore[no-any-return]


async def test_upsert_creates_then_reads_back_every_field(db: asyncpg.Pool, write: Write) -> None:
    """A written issue reads back whole, with its source and state ok."""
    issue = make_issue(assignee=Assignee("5b10a2844c20165700ede21g", "Mia Krystof"))
    outcome = await write(db, issue)
    cached = await store.select_by_key(db, "PRJ-7")
    assert outcome == "created"
    assert cached is not None
    assert cached.issue == issue
    assert (cached.source, cached.state, cached.error, cached.failures) == (
        "webhook",
        "ok",
        None,
        0,
    )


async def test_older_update_is_ignored_and_newer_applied(db: asyncpg.Pool, write: Write) -> None:
    """Whatever arrives last, the issue with the newest Jira `updated` time wins."""
    await store.upsert_issues(db, [make_issue(minutes=10, summary="newest")], "poll")
    stale = await write(db, make_issue(minutes=5, summary="older"))
    cached = await store.select_by_key(db, "PRJ-7")
    assert stale == "stale"
    assert cached is not None and cached.issue.summary == "newest"
    newer = await write(db, make_issue(minutes=11, status=DONE))
    cached = await store.select_by_key(db, "PRJ-7")
    assert newer == "updated"
    assert cached is not None and cached.issue.status == DONE and cached.source == "webhook"


async def test_same_updated_time_is_unchanged_but_refreshes_fetched_at(
    db: asyncpg.Pool, write: Write
) -> None:
    """Re-reading an issue Jira has not changed marks it fresh, keeping who delivered it."""
    await store.upsert_issues(db, [make_issue()], "poll")
    before = await store.select_by_key(db, "PRJ-7")
    outcome = await write(db, make_issue())
    after = await store.select_by_key(db, "PRJ-7")
    assert outcome == "unchanged"
    assert before is not None and after is not None
    assert after.fetched_at > before.fetched_at and after.source == "poll"


@pytest.mark.parametrize("rereader", ["sync", "poll", "refresh"])
async def test_reread_of_a_delivered_version_keeps_its_source(
    db: asyncpg.Pool, rereader: Source
) -> None:
    """A webhook's version re-read by sync, poll or refresh still says it came by webhook."""
    await hook(db, make_issue())
    await store.upsert_issues(db, [make_issue()], rereader)
    cached = await store.select_by_key(db, "PRJ-7")
    assert cached is not None and cached.source == "webhook"
    await store.upsert_issues(db, [make_issue(minutes=1)], rereader)
    newer = await store.select_by_key(db, "PRJ-7")
    assert newer is not None and newer.source == rereader


async def test_same_time_with_other_data_takes_the_new_source(db: asyncpg.Pool) -> None:
    """A read that serves something new under the same `updated` names its own source."""
    await hook(db, make_issue())
    await store.mark_not_found(db, ["PRJ-7"], "poll")
    await store.mark_not_found(db, ["PRJ-7"], "refresh")
    gone = await store.select_by_key(db, "PRJ-7")
    await store.upsert_issues(db, [make_issue()], "sync")
    back = await store.select_by_key(db, "PRJ-7")
    assert gone is not None and (gone.state, gone.source) == ("not_found", "poll")
    assert back is not None and (back.state, back.source) == ("ok", "sync")


async def test_duplicates_in_one_call_keep_the_newest(db: asyncpg.Pool) -> None:
    """Two versions of one issue in one batch write the newer one."""
    batch = [make_issue(minutes=3, summary="new"), make_issue(minutes=1, summary="old")]
    await store.upsert_issues(db, batch, "poll")
    cached = await store.select_by_key(db, "PRJ-7")
    assert cached is not None and cached.issue.summary == "new"


async def test_ten_thousand_issues_in_one_call(db: asyncpg.Pool) -> None:
    """One call writes 10,000 issues, and a second pass reports them unchanged."""
    issues = [make_issue(id=20000 + n, key=f"BIG-{n + 1}") for n in range(10_000)]
    created = await store.upsert_issues(db, issues, "poll")
    again = await store.upsert_issues(db, issues, "poll")
    assert list(created.values()).count("created") == 10_000
    assert set(again.values()) == {"unchanged"}
    assert await db.fetchval("SELECT count(*) FROM issues") == 10_000


async def test_moved_issue_answers_to_old_and_new_key(db: asyncpg.Pool, write: Write) -> None:
    """After a move, the old key still resolves to the same issue under its new key."""
    await store.upsert_issues(db, [make_issue(key="OLD-7")], "poll")
    await write(db, make_issue(key="NEW-1", minutes=1))
    found = await store.select_by_keys(db, ["OLD-7", "NEW-1", "NONE-1"])
    assert set(found) == {"OLD-7", "NEW-1"}
    assert found["OLD-7"].issue.key == "NEW-1" and found["OLD-7"].issue.id == 10007
    assert await db.fetchval("SELECT count(*) FROM issues") == 1


async def test_concurrent_writers_leave_the_newest(db: asyncpg.Pool, write: Write) -> None:
    """Many racing writes of one issue end with the newest version, whatever the order."""
    versions = [make_issue(minutes=m, summary=f"v{m}") for m in range(40)]
    await asyncio.gather(*(write(db, v) for v in reversed(versions)))
    cached = await store.select_by_key(db, "PRJ-7")
    assert cached is not None and cached.issue.summary == "v39"


async def test_update_older_than_a_deletion_stays_out(db: asyncpg.Pool, write: Write) -> None:
    """A deleted issue is not revived by an older update, and is by a newer one."""
    deleted_at = make_issue(minutes=5).updated
    await store.mark_deleted(db, 10007, "PRJ-7", deleted_at)
    older = await write(db, make_issue(minutes=4, summary="late"))
    newer = await write(db, make_issue(minutes=6, summary="recreated"))
    cached = await store.select_by_key(db, "PRJ-7")
    assert (older, newer) == ("stale", "updated")
    assert cached is not None and cached.state == "ok" and cached.issue.summary == "recreated"


async def test_a_write_forgets_that_jira_had_no_such_key(db: asyncpg.Pool, write: Write) -> None:
    """Writing an issue clears the negative cache for its key."""
    await store.mark_not_found(db, ["PRJ-7"], "poll")
    await write(db, make_issue())
    assert await store.recently_missing(db, ["PRJ-7"], 3600) == set()
