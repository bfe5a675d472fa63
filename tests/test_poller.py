"""The poller's failure handling and the scheduler's jobs, called directly (never by clock)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from datetime import timedelta

import asyncpg
import httpx

from jira_simulator import Simulator
from service.config import Settings
from service.jira.client import JiraClient, open_session
from service.storage import gauges, inbox, tracking
from service.storage import issues as store
from service.sync.poller import Poller
from service.sync.refresh import Refresher
from service.sync.schedule import poll_job, prune_job, start_scheduler
from service.sync.wiring import jira_parts
from tests.factory import make_issue
from tests.live import jira_settings, serve, wait_until


async def poll_with(pool: asyncpg.Pool, settings: Settings):
    async with open_session(settings.jira) as session:
        client = JiraClient(session, settings.jira)
        poller = Poller(pool, Refresher(pool, client, settings.cache_ttl), settings)
        return await poller.poll()


async def test_auth_failure_marks_error_and_logs_once(sim, settings, db, caplog) -> None:
    """Refused credentials mark the claimed issues error, log one line, and stop the run.

    Asking again with credentials Jira refuses only risks locking the account (CAPTCHA).
    """
    keys = sim.seed(250, ["ALPHA"])
    await store.upsert_issues(db, [make_issue(id=n, key=k) for n, k in enumerate(keys, 1)], "poll")
    await db.execute("UPDATE issues SET fetched_at = now() - interval '2 hours'")  # stale
    await tracking.track(db, keys)
    wrong = jira_settings(settings, sim, jira_api_token="wrong-token", poll_batch_size=100)
    with caplog.at_level(logging.WARNING, logger="service"):
        report = await poll_with(db, wrong)
    failed = await db.fetch("SELECT DISTINCT error FROM issues WHERE state = 'error'")
    count = await db.fetchval("SELECT count(*) FROM issues WHERE state = 'error'")
    credential_lines = [r for r in caplog.records if "credentials" in r.getMessage()]
    assert report.results == {} and count == 100
    assert "credentials refused" in failed[0]["error"] and "wrong-token" not in failed[0]["error"]
    assert len(credential_lines) == 1 and sum(sim.counters.values()) == 1


async def test_unknown_keys_are_rechecked_daily(sim, settings, db) -> None:
    """A tracked key Jira does not know is due again only after JIRA_NOT_FOUND_RECHECK."""
    (key,) = sim.seed(1, ["ALPHA"])
    await tracking.track(db, [key, "NOPE-1"])
    report = await poll_with(db, jira_settings(settings, sim))
    due = dict(await db.fetch("SELECT key, next_due_at - now() FROM tracked"))
    assert report.results["NOPE-1"].outcome == "not_found"
    assert timedelta(hours=19) < due["NOPE-1"] <= timedelta(hours=24)  # up to 20% earlier
    assert timedelta(minutes=47) < due[key] <= timedelta(minutes=60)


async def test_found_keys_spread_their_next_due_time(sim, settings, db) -> None:
    """Keys read together come due again spread over the TTL's last fifth, not at once."""
    keys = sim.seed(200, ["ALPHA"])
    await tracking.track(db, keys)
    await poll_with(db, jira_settings(settings, sim))
    spread = await db.fetchval(
        "SELECT extract(epoch FROM max(next_due_at) - min(next_due_at)) FROM tracked"
    )
    assert 60 < spread <= 720


async def test_poll_job_survives_any_failure(settings, db, caplog) -> None:
    """The job at the top of the scheduler logs a failure and returns, so the next run happens."""

    class Broken:
        async def poll(self) -> None:
            raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR):
        await poll_job(Broken())  # type: ignore[arg-type]
    assert "poll run failed" in caplog.text


async def test_prune_removes_only_old_deliveries(db) -> None:
    """The pruning job deletes delivery records older than the retention, keeps the rest."""
    await inbox.record_delivery(db, "old", "jira:issue_updated")
    await inbox.record_delivery(db, "new", "jira:issue_updated")
    await db.execute(
        "UPDATE webhook_deliveries SET received_at = now() - interval '8 days' WHERE id = 'old'"
    )
    await prune_job(db, 7.0)
    assert [row["id"] for row in await db.fetch("SELECT id FROM webhook_deliveries")] == ["new"]


async def test_scheduler_runs_one_poll_at_a_time(sim, settings, db) -> None:
    """The poll job is registered with max_instances=1 and coalescing; interval 0 disables it."""
    wired = jira_settings(settings, sim, poll_interval=30.0)
    async with open_session(wired.jira) as session:
        poller = Poller(db, Refresher(db, JiraClient(session, wired.jira), 3600), wired)
        scheduler = start_scheduler(poller, db, wired)
        job = scheduler.get_job("poll")
        scheduler.shutdown(wait=False)
        quiet = start_scheduler(poller, db, jira_settings(settings, sim, poll_interval=0.0))
        jobs = [j.id for j in quiet.get_jobs()]
        quiet.shutdown(wait=False)
    assert job.max_instances == 1 and job.coalesce is True
    assert job.trigger.interval.total_seconds() == 30
    assert set(jobs) == {"prune", "forget", "prune_changes", "webhook_filter"}


async def test_healthz_reports_jira_degraded_but_stays_ready(settings, db) -> None:
    """With Jira failing, /healthz says degraded while /readyz stays ready."""
    async with Simulator() as sim:
        sim.fail_next(100, status=503)
        wired = jira_settings(settings, sim, jira_max_retries=0, jira_breaker_threshold=1)
        async with serve(wired) as url, httpx.AsyncClient(base_url=url) as http:
            ok = (await http.get("/healthz")).json()
            await http.get("/api/v1/issues/ALPHA-1")
            degraded = (await http.get("/healthz")).json()
            ready = await http.get("/readyz")
    assert ok["jira"] == "ok" and degraded["jira"] == "degraded"
    assert ready.status_code == 200


async def test_stop_hands_back_keys_of_a_batch_stuck_on_jira(sim, settings, db) -> None:
    """Stopping while Jira hangs cancels the batch after the grace and leaves no lease."""
    keys = sim.seed(20, ["ALPHA"])
    await tracking.track(db, keys)
    sim.hang_next(10, seconds=60.0)
    wired = jira_settings(settings, sim)
    async with open_session(wired.jira) as session:
        poller = Poller(db, Refresher(db, JiraClient(session, wired.jira), 3600), wired)
        running = asyncio.ensure_future(poller.poll())

        async def stuck() -> bool:  # the batch is claimed and a read of it hangs in Jira
            return sum(hang.count for hang in sim.faults.hangs) < 10

        await wait_until(stuck, 60)
        started = time.monotonic()
        await poller.stop(grace=0.3)
        stopped_in = time.monotonic() - started
        await asyncio.gather(running, return_exceptions=True)
    leased = await db.fetchval("SELECT count(*) FROM tracked WHERE lease_owner IS NOT NULL")
    due = (await gauges.cache_gauges(db, settings.cache_ttl)).due
    # Well before the 60 s hang ends, however loaded the machine: the batch was not awaited.
    assert stopped_in < 30 and leased == 0 and due == 20


async def test_a_poll_stops_claiming_past_its_budget(sim, settings, db) -> None:
    """Past JIRA_POLL_BUDGET a run claims no more batches; the rest stay due."""
    keys = sim.seed(20, ["ALPHA"])
    await tracking.track(db, keys)
    ticks = itertools.count(0, 0.6)  # the budget of 1 s is spent after the first batch
    wired = jira_settings(settings, sim, poll_batch_size=5, poll_budget=1.0)
    async with jira_parts(wired, db) as parts:
        assert parts.poller is not None
        parts.poller.clock = lambda: next(ticks)
        report = await parts.poller.poll()
    due = (await gauges.cache_gauges(db, settings.cache_ttl)).due
    assert len(report.results) == 5 and due == 15
