"""What every command shares: running its coroutine, the database it needs, a check's
finding, a progress bar, and the parsing of a project id."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any, TextIO

import asyncpg

from service.config import Settings
from service.model import InvalidProjectIdError, check_project_id
from service.storage import migrate
from service.storage.embedded import resolve_dsn
from service.storage.pool import UNREACHABLE as DATABASE_DOWN
from service.storage.pool import open_pool

SubParsers = argparse._SubParsersAction  # argparse names no public type for it
# Besides a server that is down: refused credentials, no such database, a malformed DSN,
# or an embedded server that would not start.
CONNECT_FAILED: tuple[type[BaseException], ...] = (
    *DATABASE_DOWN,
    asyncpg.PostgresError,
    ValueError,
    subprocess.SubprocessError,
)


class NotMigratedError(RuntimeError):
    def __init__(self, pending: list[str]) -> None:
        super().__init__(
            f"the database lacks migration(s) {', '.join(pending)}: "
            "run `jira-status-cache migrate` (or start serve) first"
        )


def project_id(text: str) -> str:
    try:
        return check_project_id(text)
    except InvalidProjectIdError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run(work: Coroutine[Any, Any, int]) -> int:
    """Run a command's coroutine; a database that is down or behind ends it with exit 1."""
    try:
        return asyncio.run(work)
    except NotMigratedError as exc:
        print(f"jira-status-cache: {exc}", file=sys.stderr)
    except DATABASE_DOWN as exc:
        print(f"jira-status-cache: cannot reach the database: {exc}", file=sys.stderr)
    return 1


@contextlib.asynccontextmanager
async def database(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """A small pool over a database whose migrations are all applied."""
    dsn = await asyncio.to_thread(resolve_dsn, settings.database_url, settings.data_dir)
    pool = await open_pool(dsn, 1, 2, pooled=settings.database_pooler == "transaction")
    try:
        async with pool.acquire() as connection:
            if pending := await migrate.pending_versions(connection):
                raise NotMigratedError(pending)
        yield pool
    finally:
        await pool.close()


@dataclass(frozen=True, slots=True)
class Finding:
    name: str
    ok: bool | None  # None: not checked, since an earlier check failed
    detail: str

    def line(self) -> str:
        verdict = {True: "ok", False: "FAIL", None: "skip"}[self.ok]
        return f"{self.name:<11}{verdict:<6}{self.detail}"


class Progress:
    """A bar redrawn in place on a terminal; elsewhere, a plain line per batch."""

    WIDTH = 30

    def __init__(self, total: int, out: TextIO, unit: str = "keys") -> None:
        self.total = total
        self.unit = unit
        self.done = 0
        self.out = out
        self.live = out.isatty()

    def advance(self, count: int) -> None:
        self.done += count
        if self.live:
            filled = self.WIDTH * self.done // self.total
            bar = "#" * filled + "." * (self.WIDTH - filled)
            self.out.write(f"\r[{bar}] {self.done}/{self.total} {self.unit}")
        else:
            self.out.write(f"{self.done}/{self.total} {self.unit}\n")
        self.out.flush()

    def close(self) -> None:
        if self.live:
            self.out.write("\n")
