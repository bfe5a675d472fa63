"""Webhook setup from the command line against the simulator's admin API, Cloud and Data Center."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg
import pytest

from jira_simulator import Simulator
from service.cli import webhook as cli
from service.cli.commands import run_checks
from service.config import Settings
from service.jira.client import JiraClient, open_session
from service.jira.webhooks import EVENTS, read_webhook
from service.storage import links, registration, tracking
from service.sync.health import WebhookHealth
from service.sync.poller import Poller
from service.sync.refresh import Refresher
from service.sync.registrar import manage_filter
from service.sync.schedule import start_scheduler
from tests.live import EMAIL, SECRET, TOKEN, jira_settings, serve, sim_options
from tests.test_tools import run, wired

URL = "https://cache.example.com/api/v1/webhooks/jira"
PLACEHOLDER = "<JIRA_WEBHOOK_SECRET>"


@pytest.fixture(params=["cloud", "dc"])
async def jira(request: pytest.FixtureRequest) -> AsyncIterator[Simulator]:
    """A simulator of either flavour, with issues in ALPHA, BETA and GAMMA."""
    async with Simulator(sim_options(flavor=request.param, pat=TOKEN)) as simulator:
        simulator.seed(6, ("ALPHA", "BETA", "GAMMA"))
        yield simulator


@pytest.fixture
async def setup(db: asyncpg.Pool, settings: Settings, jira: Simulator) -> Settings:
    """Settings wired to the simulator, over empty tables and no registration."""
    await db.execute("TRUNCATE webhook_registration")
    return jira_settings(settings, jira)


@pytest.fixture
async def client(setup: Settings) -> AsyncIterator[JiraClient]:
    assert setup.jira is not None
    async with open_session(setup.jira) as session:
        yield JiraClient(session, setup.jira)


async def link(db: asyncpg.Pool, *keys: str) -> None:
    for key in keys:
        await links.link(db, "web", key)


async def install(
    settings: Settings, url: str = URL, all_projects: bool = False, show: bool = False
) -> tuple[int, str]:
    out = io.StringIO()
    code = await cli.install(settings, url, all_projects, show, out)
    return code, out.getvalue()


async def status(settings: Settings) -> tuple[int, str]:
    out = io.StringIO()
    return await cli.status(settings, None, False, out), out.getvalue()


def hooks(sim: Simulator) -> list:
    return list(sim.registry.webhooks.values())


def expected_url(sim: Simulator, url: str = URL) -> str:
    return f"{url}?secret={SECRET}" if sim.options.flavor == "dc" else url


async def test_install_registers_our_events_filter_and_secret(setup, db, jira) -> None:
    """install creates one webhook: our events, the tracked projects, the secret never printed."""
    await link(db, "ALPHA-1", "BETA-2")
    await tracking.track(db, ["10001"])  # an issue read by id names no project
    code, out = await install(setup)
    (hook,) = hooks(jira)
    assert code == 0 and "created webhook" in out
    assert hook.events == set(EVENTS) and hook.secret == SECRET
    assert hook.jql == 'project in ("ALPHA", "BETA")'
    assert hook.url == expected_url(jira)
    assert SECRET not in out


async def test_install_again_updates_the_same_webhook(setup, db, jira) -> None:
    """A second install, after a new project is linked, updates ours, enabled: still one."""
    await link(db, "ALPHA-1")
    await install(setup)
    await link(db, "GAMMA-3")
    hooks(jira)[0].enabled = False
    code, out = await install(setup)
    (hook,) = hooks(jira)
    assert code == 0 and "updated webhook" in out
    assert hook.jql == 'project in ("ALPHA", "GAMMA")' and hook.enabled


async def test_a_project_jira_lacks_is_left_out_of_the_filter(setup, db, jira, client) -> None:
    """A linked key of a project Jira does not have is left out, named, and not retried."""
    await link(db, "ALPHA-1", "NOPE-1")
    code, out = await install(setup)
    later = datetime.now(UTC) + timedelta(minutes=2)
    jira.reset_counters()
    again = await manage_filter(db, client, setup, later)
    (hook,) = hooks(jira)
    assert code == 0 and "unknown to Jira: NOPE" in out
    assert hook.jql == 'project in ("ALPHA")'
    assert again == "unchanged" and jira.counters.get("webhooks", 0) == 0


async def test_install_every_project_or_nothing_to_filter(setup, db, jira) -> None:
    """--all-projects sets no filter; with nothing tracked and no flag, nothing is created."""
    code, out = await install(setup)
    assert code == 1 and "link issues first" in out and hooks(jira) == []
    code, out = await install(setup, all_projects=True)
    (hook,) = hooks(jira)
    assert code == 0 and hook.jql == "" and "every project" in out


async def test_uninstall_removes_it(setup, db, jira) -> None:
    """uninstall deletes ours from Jira and forgets it; a second one finds nothing to do."""
    await link(db, "ALPHA-1")
    await install(setup)
    out, again, unknown = io.StringIO(), io.StringIO(), io.StringIO()
    assert await cli.uninstall(setup, None, False, out) == 0
    assert await cli.uninstall(setup, URL, False, again) == 0
    assert await cli.uninstall(setup, None, False, unknown) == 1
    assert hooks(jira) == [] and await registration.load(db) is None
    assert "removed webhook" in out.getvalue() and SECRET not in out.getvalue()
    assert "no webhook of ours" in again.getvalue() and "give --url" in unknown.getvalue()


async def test_status_shows_registration_and_last_delivery(setup, db, jira) -> None:
    """status shows ours enabled with events and filter, and when a delivery last arrived."""
    async with serve(setup) as base:
        url = f"{base}/api/v1/webhooks/jira"
        key = jira.seed(1, ["ALPHA"])[0]
        await link(db, key)
        await install(setup, url)
        _, before = await status(setup)
        jira.transition(key)
        await jira.drain_webhooks()
    code, after = await status(setup)
    assert [attempt.status for attempt in jira.attempts] == [200]
    assert code == 0 and "enabled  yes" in after and all(event in after for event in EVENTS)
    assert 'filter   project in ("ALPHA")' in after and "the 1 tracked project(s)" in after
    assert "last delivery: none kept" in before
    assert f"last delivery: {datetime.now(UTC):%Y-%m-%d}" in after
    assert SECRET not in after


async def test_status_when_nothing_is_registered(setup, db, jira) -> None:
    """status says none of ours is registered, and exits 1."""
    code, out = await status(setup)
    assert code == 1 and "none of ours is registered" in out


async def test_without_admin_rights_prints_the_steps_by_hand(setup, db, jira) -> None:
    """A 403 prints the admin page, the exact URL, the events and the filter, with no secret."""
    await link(db, "BETA-2")
    jira.registry.admin = False
    code, out = await install(setup)
    _, shown = await install(setup, show=True)
    url = f"{URL}?secret={PLACEHOLDER}" if jira.options.flavor == "dc" else URL
    assert code == 1 and hooks(jira) == []
    assert "403" in out and f"{jira.base_url}/plugins/servlet/webhooks" in out
    assert f"URL:    {url}\n" in out and 'JQL:    project in ("BETA")' in out
    assert all(event in out for event in EVENTS)
    assert SECRET not in out and SECRET in shown


async def test_status_without_admin_rights_still_shows_the_last_delivery(setup, db, jira) -> None:
    """Without admin rights status says why it cannot list, and when a delivery last came."""
    jira.registry.admin = False
    code, out = await status(setup)
    assert code == 1 and "only a Jira administrator may manage webhooks" in out
    assert "last delivery: none kept" in out


async def test_delivers_only_where_the_filter_matches(setup, db, jira) -> None:
    """A change in a project outside our filter is not delivered; one inside is, and applied."""
    async with serve(setup) as base:
        inside, outside = jira.seed(2, ["ALPHA", "BETA"])
        await link(db, inside)
        await install(setup, f"{base}/api/v1/webhooks/jira")
        jira.transition(outside)
        jira.transition(inside)
        await jira.drain_webhooks()
    assert [(a.key, a.status) for a in jira.attempts] == [(inside, 200)]
    assert await db.fetchval("SELECT source FROM issues WHERE key = $1", inside) == "webhook"
    assert await db.fetchval("SELECT count(*) FROM issues WHERE key = $1", outside) == 0


@pytest.mark.parametrize("jira", ["dc"], indirect=True)
async def test_data_center_that_cannot_sign_proves_itself_by_url(setup, db, jira) -> None:
    """A Data Center that keeps the secret but never signs is let in by ?secret= in its URL."""
    jira.registry.signs = False
    async with serve(setup) as base:
        key = jira.seed(1, ["ALPHA"])[0]
        await link(db, key)
        await install(setup, f"{base}/api/v1/webhooks/jira")
        jira.transition(key)
        await jira.drain_webhooks()
    assert [attempt.status for attempt in jira.attempts] == [200]


async def test_manage_updates_the_filter_at_most_once_a_minute(setup, db, jira, client) -> None:
    """With a new project linked, the job sets the filter, then waits a minute before the next."""
    await link(db, "ALPHA-1")
    await install(setup)
    start = datetime.now(UTC) + timedelta(minutes=1)
    await link(db, "BETA-2")
    first = await manage_filter(db, client, setup, start)
    await link(db, "GAMMA-3")
    jira.reset_counters()
    soon = await manage_filter(db, client, setup, start + timedelta(seconds=30))
    calls_soon = jira.counters.get("webhooks", 0)
    later = await manage_filter(db, client, setup, start + timedelta(seconds=61))
    jira.reset_counters()
    same = await manage_filter(db, client, setup, start + timedelta(seconds=122))
    assert (first, soon, later, same) == ("updated", "waiting", "updated", "unchanged")
    assert calls_soon == 0 and jira.counters.get("webhooks", 0) == 0
    (hook,) = hooks(jira)
    assert hook.jql == 'project in ("ALPHA", "BETA", "GAMMA")' and hook.secret == SECRET
    assert hook.url == expected_url(jira)


async def test_manage_runs_on_one_replica_at_a_time(setup, db, jira, client) -> None:
    """Two replicas running the job at once: one updates, the other skips."""
    await link(db, "ALPHA-1")
    await install(setup)
    await link(db, "BETA-2")
    later = datetime.now(UTC) + timedelta(minutes=2)
    jira.reset_counters()
    outcomes = await asyncio.gather(*(manage_filter(db, client, setup, later) for _ in range(2)))
    assert sorted(outcomes) == ["updated", "waiting"]
    assert jira.counters["webhooks"] == 2  # one GET and one PUT


async def test_manage_leaves_every_project_alone(setup, db, jira, client) -> None:
    """A webhook installed for every project is never narrowed to the tracked ones."""
    await install(setup, all_projects=True)
    await link(db, "ALPHA-1")
    later = datetime.now(UTC) + timedelta(minutes=2)
    assert await manage_filter(db, client, setup, later) == "all_projects"
    assert hooks(jira)[0].jql == ""


async def test_manage_keeps_a_webhook_disabled_in_jira_disabled(setup, db, jira, client) -> None:
    """An administrator's choice to disable ours stands when the job updates its filter."""
    await link(db, "ALPHA-1")
    await install(setup)
    hooks(jira)[0].enabled = False
    await link(db, "BETA-2")
    later = datetime.now(UTC) + timedelta(minutes=2)
    assert await manage_filter(db, client, setup, later) == "updated"
    assert not hooks(jira)[0].enabled and "BETA" in hooks(jira)[0].jql


@pytest.mark.parametrize("jira", ["cloud"], indirect=True)
async def test_manage_is_scheduled_only_when_asked(setup, db, client) -> None:
    """JIRA_WEBHOOK_MANAGE=true (the default) adds the filter job to the scheduler; false, not."""
    poller = Poller(db, Refresher(db, client, setup.cache_ttl), setup)
    jobs = {}
    for manage in ("true", "false"):
        read = Settings.from_env({"JIRA_WEBHOOK_MANAGE": manage}).webhook_manage
        scheduler = start_scheduler(poller, db, replace(setup, webhook_manage=read))
        jobs[manage] = scheduler.get_job("webhook_filter") is not None
        scheduler.shutdown(wait=False)
    assert jobs == {"true": True, "false": False}


async def test_check_has_a_webhook_line(setup, db, jira, database_url) -> None:
    """check: a FAIL when none is registered or it lacks events, ok with ours, no admin."""
    env = {
        "DATABASE_URL": database_url,
        "JIRA_BASE_URL": jira.base_url,
        "JIRA_FLAVOR": jira.options.flavor,
        "JIRA_EMAIL": EMAIL,
        "JIRA_API_TOKEN": TOKEN,
        "JIRA_PAT": TOKEN,
        "JIRA_WEBHOOK_SECRET": SECRET,
    }
    before = (await run_checks(env))[-1]
    await link(db, "ALPHA-1")
    await install(setup)
    after = (await run_checks(env))[-1]
    hooks(jira)[0].events = frozenset(EVENTS[:2])
    lacking = (await run_checks(env))[-1]
    jira.registry.admin = False
    hidden = (await run_checks(env))[-1]
    assert before.name == "webhook" and before.ok is False and "none of ours" in before.detail
    assert after.ok and 'filter project in ("ALPHA")' in after.detail
    assert not lacking.ok and "lacks jira:issue_deleted" in lacking.detail
    assert hidden.ok and "admin rights" in hidden.detail


@pytest.mark.parametrize("jira", ["cloud"], indirect=True)
async def test_webhook_commands_run_as_a_process(setup, db, database_url, jira) -> None:
    """`webhook install` and `webhook status` work as real commands."""
    await link(db, "ALPHA-1")
    installed = await run("webhook", "install", "--url", URL, **wired(database_url, jira))
    shown = await run("webhook", "status", **wired(database_url, jira))
    bad = await run("webhook", "install", "--url", URL + "?secret=x", **wired(database_url, jira))
    assert installed.code == 0 and "created webhook" in installed.out, installed.err
    assert shown.code == 0 and "enabled  yes" in shown.out
    assert bad.code == 2 and "without a query" in bad.err


async def test_admin_routes_refuse_anonymous_and_bad_bodies(jira) -> None:
    """The simulator's admin API: 401 without credentials, 400 naming a bad field, 404."""
    base = f"{jira.base_url}/rest/webhooks/1.0/webhook"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    if jira.options.flavor == "cloud":
        pair = base64.b64encode(f"{EMAIL}:{TOKEN}".encode()).decode()
        headers = {"Authorization": f"Basic {pair}"}
    async with aiohttp.ClientSession() as session:
        async with session.get(base) as anonymous:
            assert anonymous.status == 401
        async with session.post(base, json={"name": "x", "url": "ftp://x"}, headers=headers) as bad:
            assert bad.status == 400 and "url" in (await bad.json())["errors"]
        async with session.get(f"{base}/99", headers=headers) as missing:
            assert missing.status == 404


def test_legacy_field_names_are_read() -> None:
    """A Jira before 7 answers jqlFilter and excludeIssueDetails; both are understood."""
    raw = {
        "self": "https://jira.test/rest/webhooks/1.0/webhook/7",
        "name": "old",
        "url": URL,
        "events": ["jira:issue_updated"],
        "jqlFilter": "project = ALPHA",
        "excludeIssueDetails": True,
    }
    hook = read_webhook("GET /rest/webhooks/1.0/webhook", raw)
    assert (hook.id, hook.jql, hook.sends_body, hook.enabled) == (
        "7",
        "project = ALPHA",
        False,
        True,
    )


async def test_manage_forgets_a_webhook_deleted_in_jira(setup, db, jira, client) -> None:
    """When ours was deleted in Jira, the job says so once and stops, rather than re-creating."""
    await link(db, "ALPHA-1")
    await install(setup)
    jira.registry.webhooks.clear()
    await link(db, "BETA-2")
    later = datetime.now(UTC) + timedelta(minutes=2)
    gone = await manage_filter(db, client, setup, later)
    after = await manage_filter(db, client, setup, later + timedelta(minutes=2))
    assert (gone, after) == ("gone", "waiting")
    assert hooks(jira) == [] and await registration.load(db) is None


@pytest.mark.parametrize("jira", ["cloud"], indirect=True)
async def test_install_takes_over_the_configured_webhook(setup, db, jira) -> None:
    """The simulator's --webhook-url shows as webhook 1; install updates it, and Jira posts once."""
    async with serve(setup) as base:
        url = f"{base}/api/v1/webhooks/jira"
        jira.options.webhook_url = url
        key = jira.seed(1, ["ALPHA"])[0]
        await link(db, key)
        code, out = await install(setup, url)
        jira.transition(key)
        await jira.drain_webhooks()
    assert code == 0 and "updated webhook 1" in out
    assert [hook.id for hook in hooks(jira)] == [1] and jira.options.webhook_url is None
    assert [attempt.status for attempt in jira.attempts] == [200]


async def test_uncovered_project_is_reported_by_status_check_and_healthz(setup, db, jira) -> None:
    """A tracked project outside our webhook's filter is named: status and check exit 1,
    the webhook health says `partial` with `uncovered_projects`."""
    await link(db, "ALPHA-1")
    await install(setup)
    await link(db, "BETA-2")  # linked after the install: the filter still says ALPHA only
    code, out = await status(setup)
    checks = {finding.name: finding for finding in await run_checks(wired_env(setup))}
    verdict = await WebhookHealth(True, 120.0).evaluate(db)
    assert code == 1 and "leaves out tracked project(s) BETA" in out
    assert checks["webhook"].ok is False and "BETA" in checks["webhook"].detail
    assert verdict.state == "partial" and verdict.uncovered_projects == ("BETA",)
    assert verdict.as_json()["uncovered_projects"] == ["BETA"]


async def test_install_leaves_the_filter_managed_unless_told(setup, db, jira, client) -> None:
    """By default (no JIRA_WEBHOOK_MANAGE set) the filter `install` set follows new projects;
    `--no-manage` leaves it as it was."""
    assert Settings.from_env({}).webhook_manage is True
    await link(db, "ALPHA-1")
    await install(setup)
    await link(db, "BETA-2")
    later = datetime.now(UTC) + timedelta(minutes=2)
    managed = await manage_filter(db, client, setup, later)
    (hook,) = hooks(jira)
    await cli.install(setup, URL, False, False, io.StringIO(), manage=False)
    await link(db, "GAMMA-3")
    left = await manage_filter(db, client, setup, later + timedelta(minutes=2))
    (kept,) = hooks(jira)
    assert managed == "updated" and hook.jql == 'project in ("ALPHA", "BETA")'
    assert left == "unmanaged" and kept.jql == 'project in ("ALPHA", "BETA")'


def wired_env(settings: Settings) -> dict[str, str]:
    assert settings.jira is not None and settings.database_url is not None
    flavor = {"JIRA_FLAVOR": settings.jira.flavor, "JIRA_PAT": TOKEN}
    return {
        "DATABASE_URL": settings.database_url,
        "JIRA_BASE_URL": settings.jira.base_url,
        "JIRA_EMAIL": EMAIL,
        "JIRA_API_TOKEN": TOKEN,
        "JIRA_WEBHOOK_SECRET": SECRET,
        **flavor,
    }
