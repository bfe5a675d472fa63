"""The operator commands check, refresh and dead-letters, run as real processes."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass

import asyncpg

from jira_simulator import Simulator
from service.cli.commands import check_migrations
from service.storage import inbox, links, tracking
from tests.live import EMAIL, SECRET, TOKEN, free_port

COMMAND = [sys.executable, "-m", "service"]
# Settings a developer may have exported must not leak into the commands under test.
_SETTINGS = ("JIRA_", "DATABASE_URL", "DATA_DIR", "API_TOKENS", "ALLOW_ANONYMOUS", "HOST", "PORT")


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def line(self, name: str) -> str:
        return next(line for line in self.out.splitlines() if line.startswith(name))


async def run(*args: str, **env: str) -> Result:
    """Run the command in a subprocess while this loop keeps serving the simulator."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(_SETTINGS)}
    process = await asyncio.create_subprocess_exec(
        *COMMAND,
        *args,
        env={**base, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())


def wired(database_url: str, sim: Simulator, **changes: str) -> dict[str, str]:
    env = {
        "DATABASE_URL": database_url,
        "JIRA_BASE_URL": sim.base_url,
        "JIRA_EMAIL": EMAIL,
        "JIRA_API_TOKEN": TOKEN,
        "JIRA_WEBHOOK_SECRET": SECRET,
        "LOG_LEVEL": "WARNING",
    }
    return env | changes


async def test_help_lists_the_tools() -> None:
    """--help names check, refresh, dead-letters and demo; refresh wants --project or --all."""
    top = await run("--help")
    bare = await run("refresh")
    assert top.code == 0
    assert all(name in top.out for name in ("check", "refresh", "dead-letters", "demo"))
    assert bare.code == 2 and "--project" in bare.err and "--all" in bare.err


async def test_check_passes_when_all_is_well(db: asyncpg.Pool, database_url: str, sim) -> None:
    """check says ok for the settings, Jira's user, the database, its migrations and our
    webhook, and exits 0."""
    sim.options.webhook_url = "http://127.0.0.1:8000/api/v1/webhooks/jira"  # registered in Jira
    result = await run("check", **wired(database_url, sim))
    assert result.code == 0, result.out + result.err
    assert result.line("settings").split()[1] == "ok"
    assert "ok" in result.line("jira") and sim.site.users[0].display_name in result.line("jira")
    assert "ok" in result.line("database") and "PostgreSQL" in result.line("database")
    assert result.line("migrations").split()[1:3] == ["ok", "all"]
    assert result.line("webhook").split()[1] == "ok"


async def test_check_names_every_failure(database_url: str, sim) -> None:
    """Unsafe settings, refused credentials and an unreachable database each get a FAIL line."""
    nowhere = f"postgresql://nobody@127.0.0.1:{free_port()}/none"
    env = wired(database_url, sim, JIRA_API_TOKEN="wrong", DATABASE_URL=nowhere, HOST="0.0.0.0")
    result = await run("check", **env)
    assert result.code == 1
    assert "FAIL" in result.line("settings") and "API_TOKENS" in result.line("settings")
    assert "FAIL" in result.line("jira") and "credentials refused" in result.line("jira")
    assert "FAIL" in result.line("database") and "cannot connect" in result.line("database")
    assert "skip" in result.line("migrations")
    assert "Traceback" not in result.err


async def test_check_reports_a_malformed_setting(sim) -> None:
    """A malformed variable is named on the settings line; what needs settings is skipped."""
    result = await run("check", PORT="eighty", JIRA_BASE_URL=sim.base_url)
    assert result.code == 1
    assert "FAIL" in result.line("settings") and "PORT" in result.line("settings")
    assert "skip" in result.line("jira") and "skip" in result.line("database")


async def test_check_migrations_pending_and_unknown(pool: asyncpg.Pool) -> None:
    """A schema behind the code fails check, naming what is pending; an unknown version fails."""
    async with pool.acquire() as connection:
        transaction = connection.transaction()
        await transaction.start()
        try:
            await connection.execute("DELETE FROM schema_migrations WHERE version = '002_webhooks'")
            pending = await check_migrations(connection)
            await connection.execute("INSERT INTO schema_migrations VALUES ('999_future')")
            unknown = await check_migrations(connection)
        finally:
            await transaction.rollback()
    assert not pending.ok and "1 pending (002_webhooks)" in pending.detail
    assert not unknown.ok and "999_future" in unknown.detail


async def test_refresh_project(db: asyncpg.Pool, database_url: str, sim) -> None:
    """refresh --project reads the project's links from Jira, stores them, and sums up."""
    keys = sim.seed(3)
    for key in [*keys, "ALPHA-999"]:
        await links.link(db, "checkout", key)
    result = await run("refresh", "--project", "checkout", **wired(database_url, sim))
    assert result.code == 0, result.out + result.err
    assert "4/4 keys" in result.out
    assert "4 keys in" in result.out and "3 refreshed" in result.out
    assert "1 not found in Jira" in result.out
    sources = await db.fetch("SELECT source FROM issues")
    assert [row["source"] for row in sources] == ["refresh"] * 3


async def test_refresh_all_in_batches(db: asyncpg.Pool, database_url: str, sim) -> None:
    """refresh --all reads every tracked key, a batch at a time, and puts off their next poll."""
    keys = sim.seed(25)
    await tracking.track(db, keys)
    env = wired(database_url, sim, JIRA_BATCH_SIZE="5", JIRA_MAX_CONCURRENCY="2")
    result = await run("refresh", "--all", **env)
    assert result.code == 0, result.out + result.err
    assert [line for line in result.out.splitlines() if line.endswith("keys")] == [
        "10/25 keys",
        "20/25 keys",
        "25/25 keys",
    ]
    assert await db.fetchval("SELECT count(*) FROM issues") == 25
    claimed, _ = await tracking.claim_due(db, "poller", 100, 60, 3600)
    assert claimed == []  # just read: a poll moves them a TTL on without asking Jira


async def test_refresh_stops_when_jira_refuses(db: asyncpg.Pool, database_url: str, sim) -> None:
    """Refused credentials stop refresh with the reason, no empty summary, and exit 1."""
    await tracking.track(db, sim.seed(2))
    result = await run("refresh", "--all", **wired(database_url, sim, JIRA_API_TOKEN="wrong"))
    assert result.code == 1
    assert "stopped:" in result.out and "credentials refused" in result.out
    assert "0 keys in" not in result.out


async def test_dead_letters_newest_first(db: asyncpg.Pool, database_url: str, sim) -> None:
    """dead-letters lists the newest first, up to --limit; --json gives each whole."""
    for number in range(3):
        await inbox.add_dead_letter(db, f"d-{number}", f"problem {number}", '{"x": 1}')
    listed = await run("dead-letters", "--limit", "2", **wired(database_url, sim))
    as_json = await run("dead-letters", "--json", **wired(database_url, sim))
    assert listed.code == 0, listed.err
    assert "delivery d-2" in listed.out and "delivery d-1" in listed.out
    assert "d-0" not in listed.out and "error: problem 2" in listed.out
    letters = [json.loads(line) for line in as_json.out.splitlines()]
    assert [letter["delivery_id"] for letter in letters] == ["d-2", "d-1", "d-0"]
    assert letters[0]["body"] == '{"x": 1}'


async def test_dead_letters_escapes_terminal_control_characters(
    db: asyncpg.Pool, database_url: str, sim
) -> None:
    """A body, error or delivery id holding terminal escapes is printed with them escaped."""
    clear = "\x1b[2J\x1b]0;pwned\x07"
    await inbox.add_dead_letter(db, f"d{clear}", f"bad {clear}", f'{{"x": "{clear}"}}')
    listed = await run("dead-letters", **wired(database_url, sim))
    assert listed.code == 0, listed.err
    assert "\x1b" not in listed.out and "\x07" not in listed.out
    assert listed.out.count("\\x1b[2J\\x1b]0;pwned\\x07") == 3


async def test_dead_letters_when_none(db: asyncpg.Pool, database_url: str, sim) -> None:
    """With no dead letters, dead-letters says so and exits 0."""
    result = await run("dead-letters", **wired(database_url, sim))
    assert result.code == 0 and result.out.strip() == "no dead letters"
